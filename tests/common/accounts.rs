//! Real Unix accounts and groups for PAM tests: unique names, random
//! passwords set through chpasswd's stdin (never argv), removed on drop,
//! also when the test fails. Names carry the test process's pid, so ones
//! left by a killed test run are swept by the next one.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::Duration;

/// The GECOS field of every test account: says who made it.
const MARK: &str = "swiftgate test account";

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b
}

/// `PREFIX` + 6 hex digits of our pid + 6 random ones (<= 16 bytes: Unix
/// names may be 32, but tools print fewer).
fn unique_name(prefix: &str) -> String {
    let r = rand_bytes::<3>();
    format!(
        "{prefix}{:06x}{:02x}{:02x}{:02x}",
        std::process::id() & 0xff_ffff,
        r[0],
        r[1],
        r[2]
    )
}

/// A random password of 24 letters and digits.
fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    rand_bytes::<24>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Runs an account tool, retrying while another one holds the lock on
/// /etc/passwd or /etc/group (tests run in parallel).
fn admin_tool(cmd: &str, args: &[&str]) -> Output {
    for _ in 0..120 {
        let o = Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() || !err.contains("lock") {
            return o;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{cmd} {args:?}: /etc/passwd or /etc/group stayed locked for 30 s");
}

#[track_caller]
fn admin_ok(cmd: &str, args: &[&str]) {
    let o = admin_tool(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn group_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["group", name])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Removes accounts and groups whose creating test process is gone
/// (killed before its drops ran). Once per test process.
fn sweep_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dead = |name: &str, prefix: &str| -> bool {
            let Some(rest) = name.strip_prefix(prefix) else {
                return false;
            };
            if rest.len() != 12 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return false;
            }
            let pid = u32::from_str_radix(&rest[..6], 16).unwrap();
            pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists()
        };
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 4 && f[4] == MARK && dead(f[0], "sgt") {
                let _ = admin_tool("userdel", &[f[0]]);
            }
        }
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        for line in group.lines() {
            let name = line.split(':').next().unwrap_or("");
            if dead(name, "sgtg") {
                let _ = admin_tool("groupdel", &[name]);
            }
        }
        for e in std::fs::read_dir("/etc/pam.d")
            .into_iter()
            .flatten()
            .flatten()
        {
            if dead(&e.file_name().to_string_lossy(), "sgt-pam-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    });
}

/// A Unix group of its own (`sgtg...`), removed on drop.
pub struct TestGroup {
    pub name: String,
}

impl TestGroup {
    pub fn new() -> TestGroup {
        sweep_stale();
        let name = unique_name("sgtg");
        admin_ok("groupadd", &[&name]);
        TestGroup { name }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = admin_tool("groupdel", &[&self.name]);
    }
}

/// A Unix account (`sgt...`) with a random password, no home directory
/// and no login shell (PAM authentication does not need either).
pub struct TestAccount {
    pub name: String,
    pub password: String,
    pub uid: u32,
    /// Groups created for this account, removed after it.
    own_groups: Vec<TestGroup>,
    /// Groups named in `with_groups` that did not exist: created for this
    /// account, removed after it.
    created_groups: Vec<String>,
}

impl TestAccount {
    pub fn new() -> TestAccount {
        TestAccount::with_groups(&[])
    }

    /// An account in a new group of its own (`account.group()`), e.g. the
    /// console's admin group configured for this test.
    pub fn in_new_group() -> TestAccount {
        let g = TestGroup::new();
        let mut a = TestAccount::with_groups(&[&g.name]);
        a.own_groups.push(g);
        a
    }

    /// An account in these supplementary groups; groups that do not exist
    /// are created and removed on drop. (A fixed group name shared by tests
    /// running in parallel is not safe to create this way: one test's drop
    /// would remove it under the other. Use `TestGroup` for those.)
    pub fn with_groups(groups: &[&str]) -> TestAccount {
        sweep_stale();
        let mut created_groups = Vec::new();
        for g in groups {
            if !group_exists(g) {
                admin_ok("groupadd", &[g]);
                created_groups.push(g.to_string());
            }
        }
        let name = unique_name("sgt");
        let mut args = vec![
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--no-user-group",
            "--comment",
            MARK,
        ];
        let list = groups.join(",");
        if !groups.is_empty() {
            args.extend(["--groups", &list]);
        }
        args.push(&name);
        admin_ok("useradd", &args);
        let mut a = TestAccount {
            uid: nix::unistd::User::from_name(&name)
                .unwrap()
                .expect("useradd made it")
                .uid
                .as_raw(),
            name,
            password: random_password(),
            own_groups: Vec::new(),
            created_groups,
        };
        a.set_password(&a.password.clone());
        a
    }

    /// The group made by `in_new_group`.
    pub fn group(&self) -> Option<&str> {
        self.own_groups.first().map(|g| g.name.as_str())
    }

    /// Sets the Unix password, through chpasswd's stdin.
    pub fn set_password(&mut self, password: &str) {
        for _ in 0..120 {
            let mut c = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("chpasswd");
            let mut stdin = c.stdin.take().unwrap();
            writeln!(stdin, "{}:{}", self.name, password).unwrap();
            drop(stdin);
            let o = c.wait_with_output().unwrap();
            if o.status.success() {
                self.password = password.to_string();
                return;
            }
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("lock"), "chpasswd {}: {err}", self.name);
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("chpasswd {}: /etc/shadow stayed locked", self.name);
    }
}

impl Drop for TestAccount {
    fn drop(&mut self) {
        let _ = admin_tool("userdel", &[&self.name]);
        for g in &self.created_groups {
            let _ = admin_tool("groupdel", &[g]);
        }
        // own_groups drop after this (field drop order), each a groupdel.
    }
}

/// A PAM service file of this test's own under /etc/pam.d (unique name,
/// removed on drop): a copy of the console's `provisioning/pam.d/swiftgate`,
/// or the given text.
pub struct PamService {
    pub name: String,
    path: PathBuf,
}

impl PamService {
    pub fn swiftgate() -> PamService {
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("provisioning/pam.d/swiftgate"),
        )
        .unwrap();
        PamService::with_text(&text)
    }

    pub fn with_text(text: &str) -> PamService {
        sweep_stale();
        let name = unique_name("sgt-pam-");
        let path = PathBuf::from("/etc/pam.d").join(&name);
        std::fs::write(&path, text).unwrap();
        PamService { name, path }
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
