//! Test harness: real swiftgate mounts through the real binary, each in its
//! own temp dir; everything is unmounted and removed on drop, also when the
//! test fails.
#![allow(dead_code)]

pub mod accounts;
pub mod browser;
pub mod gw;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_swiftgate");

pub fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = std::env::var_os("SWIFTGATE_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let p = base.join(format!(
        "sgt-{tag}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand_u32()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u32::from_le_bytes(b)
}

pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run swiftgate")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "swiftgate failed: {}\nstdout: {}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// `SWIFTGATE_TEST_STORE=swift`: run the same tests against the real Swift
/// whose credentials are in the environment (tests/swift/start, then
/// `. STATE_DIR/env`); every filesystem gets a container of its own.
pub fn swift_mode() -> bool {
    std::env::var("SWIFTGATE_TEST_STORE").as_deref() == Ok("swift")
}

/// A unique container name for a test.
pub fn unique_container(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "sgt-{tag}-{}-{}-{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand_u32()
    )
}

/// A filesystem in a local store (or a Swift container, see `swift_mode`)
/// plus a mountpoint and cache of its own.
pub struct TestFs {
    pub root: PathBuf,
    pub store: String,
    pub mp: PathBuf,
    pub cache: PathBuf,
    pub passfile: Option<PathBuf>,
    pub mount_env: Vec<(String, String)>,
}

impl TestFs {
    /// mkfs with `mkfs_args` (default: --plain, 64K blocks so multi-block
    /// paths are exercised by small files).
    pub fn new(mkfs_args: &[&str]) -> TestFs {
        let root = unique_dir("fs");
        let store = if swift_mode() {
            format!("swift://{}", unique_container("fs"))
        } else {
            format!("local://{}/store", root.display())
        };
        let mp = root.join("mp");
        std::fs::create_dir_all(&mp).unwrap();
        let mut t = TestFs {
            cache: root.join("cache"),
            root,
            store,
            mp,
            passfile: None,
            mount_env: Vec::new(),
        };
        let mut args = vec!["mkfs", &t.store];
        let mut owned: Vec<String> = Vec::new();
        if mkfs_args.is_empty() {
            args.extend(["--plain", "--block-size", "64K"]);
        } else {
            owned.extend(mkfs_args.iter().map(|s| s.to_string()));
        }
        if let Some(i) = owned.iter().position(|a| a == "--passphrase") {
            let pf = t.root.join("pass");
            std::fs::write(&pf, format!("{}\n", owned[i + 1])).unwrap();
            owned.splice(
                i..i + 2,
                ["--passphrase-file".to_string(), pf.display().to_string()],
            );
            t.passfile = Some(pf);
        }
        let refs: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
        args.extend(refs);
        ok(run(&args));
        t
    }

    pub fn new_mounted() -> TestFs {
        let t = TestFs::new(&[]);
        t.mount(&[]);
        t
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    pub fn try_mount_at(&self, mp: &Path, cache: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "mount".into(),
            self.store.clone(),
            mp.display().to_string(),
            "--cache-dir".into(),
            cache.display().to_string(),
            "--allow-other".into(),
        ];
        if !extra.contains(&"--upload-delay") {
            args.extend(["--upload-delay".into(), "200ms".into()]);
        }
        if let Some(p) = &self.passfile {
            if !extra.contains(&"--passphrase-file") {
                args.push("--passphrase-file".into());
                args.push(p.display().to_string());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let env: Vec<(&str, &str)> = self
            .mount_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        run_env(&refs, &env)
    }

    pub fn mount(&self, extra: &[&str]) {
        ok(self.try_mount_at(&self.mp, &self.cache, extra));
    }

    pub fn umount(&self) {
        ok(run(&["umount", &self.mp.display().to_string()]));
        wait_unmounted(&self.mp);
    }

    /// Stat JSON of the mount.
    pub fn stat(&self) -> serde_json::Value {
        let o = ok(run(&["stat", "--json", &self.mp.display().to_string()]));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Simulate a crash: SIGKILL the mount process, detach the dead mount.
    pub fn kill9(&self) {
        let pid = self.stat()["pid"].as_u64().unwrap() as i32;
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        // Dead once it exited (gone or a zombie: nobody may reap it here).
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(st) if !st.contains(") Z ") => std::thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
        ok(run(&["umount", &self.mp.display().to_string()]));
        wait_unmounted(&self.mp);
    }

    pub fn fsck(&self, extra: &[&str]) -> Output {
        let mut args = vec!["fsck".to_string(), self.store.clone()];
        if let Some(p) = &self.passfile {
            args.push("--passphrase-file".into());
            args.push(p.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        run(&refs)
    }

    /// The store itself, through the library (local or Swift alike).
    pub fn objects(&self) -> swiftgate::store::DynStore {
        swiftgate::store::open(&self.store).expect("open the test store")
    }

    pub fn obj_get(&self, key: &str) -> Vec<u8> {
        self.objects().get(key).unwrap()
    }

    pub fn obj_put(&self, key: &str, data: &[u8]) {
        self.objects().put(key, data).unwrap()
    }

    pub fn obj_exists(&self, key: &str) -> bool {
        self.objects().head(key).unwrap().is_some()
    }

    /// The newest metadata link (generation, key): a segment
    /// `meta/wal-N` or a full snapshot `meta/snap-N`.
    pub fn newest_link(&self) -> (u64, String) {
        swiftgate::meta::chain::newest_link(&self.objects())
            .expect("the store's newest metadata link")
    }

    /// Keys under `prefix`, sorted.
    pub fn obj_keys(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .objects()
            .list_all(prefix)
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        v.sort();
        v
    }

    /// All stored object bytes under data/.
    pub fn stored_data_bytes(&self) -> u64 {
        self.objects()
            .list_all("data/")
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum()
    }

    /// Whether any stored object contains `needle`.
    pub fn store_contains(&self, needle: &[u8]) -> bool {
        let st = self.objects();
        st.list_all("").unwrap().iter().any(|o| {
            let d = st.get(&o.key).unwrap();
            d.windows(needle.len()).any(|w| w == needle)
        })
    }
}

pub fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            // Files come and go while a mount runs.
            let Ok(m) = e.metadata() else { continue };
            n += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    n
}

pub fn is_mounted(mp: &Path) -> bool {
    let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mp.display().to_string();
    s.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A mount as /proc/self/mountinfo shows it.
#[derive(Debug)]
pub struct MountEntry {
    /// Per-mount options (`rw,nosuid,nodev,noatime`).
    pub options: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// The filesystem's own options (`default_permissions,allow_other`).
    pub super_options: Vec<String>,
}

pub fn mount_entry(mp: &Path) -> Option<MountEntry> {
    let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mp.display().to_string();
    let line = s
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(want.as_str()))?;
    let (head, tail) = line.split_once(" - ")?;
    let list = |o: &str| o.split(',').map(String::from).collect::<Vec<_>>();
    let mut t = tail.split(' ');
    Some(MountEntry {
        options: list(head.split(' ').nth(5)?),
        fstype: t.next()?.to_string(),
        source: t.next()?.to_string(),
        super_options: list(t.next()?),
    })
}

pub fn wait_unmounted(mp: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_mounted(mp) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestFs {
    fn drop(&mut self) {
        for mp in [self.mp.clone(), self.root.join("mp2")] {
            if is_mounted(&mp) {
                let _ = run(&["umount", &mp.display().to_string()]);
                if is_mounted(&mp) {
                    let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        if std::env::var_os("SWIFTGATE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
            if self.store.starts_with("swift://") {
                // Best effort: leave the fixture's account tidy.
                if let Ok(st) = swiftgate::store::open(&self.store) {
                    if let Ok(all) = st.list_all("") {
                        let keys: Vec<String> = all.into_iter().map(|o| o.key).collect();
                        let _ = st.delete_many(&keys);
                    }
                }
            }
        }
    }
}

/// Poll `cond` every 100 ms until it holds; after `secs` seconds fail
/// with `why()` (evaluated then: it may read a log).
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool, why: impl FnOnce() -> String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{}", why());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: reproducible, incompressible enough.
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let d = std::fs::read(p).unwrap();
    hex::encode(sha2::Sha256::digest(&d))
}

/// Run one of the Swift fixture's scripts (tests/swift/NAME STATE_DIR).
pub fn fixture_script(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/swift");
    let state = std::env::var("SWIFT_AIO_STATE_DIR").expect("the Swift fixture's environment");
    let o = Command::new("bash")
        .arg(dir.join(name))
        .arg(state)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The Swift proxy stopped for as long as this lives; started again on
/// drop, also when the test fails half-way.
pub struct ProxyDown;

impl ProxyDown {
    pub fn new() -> ProxyDown {
        fixture_script("proxy-stop");
        ProxyDown
    }
}

impl Drop for ProxyDown {
    fn drop(&mut self) {
        fixture_script("proxy-start");
    }
}

/// A Keystone v3 token scoped to a fixture user's project: `user` is the
/// env prefix after SWIFT_AIO_ ("" for gncu00000001, "ALICE_", "BOB_").
pub fn v3_token(user: &str) -> String {
    let p = |k: &str| {
        std::env::var(format!("SWIFT_AIO_{user}{k}")).expect("the Swift fixture's environment")
    };
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": p("USERNAME"), "domain": {"name": "Default"}, "password": p("PASSWORD")}}},
        "scope": {"project": {"name": p("PROJECT_NAME"), "domain": {"name": "Default"}}}}});
    let r = reqwest::blocking::Client::new()
        .post(format!(
            "{}/auth/tokens",
            std::env::var("SWIFT_AIO_AUTH_URL").unwrap()
        ))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.headers()["x-subject-token"].to_str().unwrap().to_string()
}
