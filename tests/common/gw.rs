//! The gateway daemon + smbd harness: a private directory, config, smb.conf
//! on a private port; everything stopped, unmounted and removed on drop.
#![allow(dead_code)]

use super::*;
use std::fs;
use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn unique_user(tag: &str) -> String {
    // Short: Unix names are at most 32 bytes.
    format!("sg{tag}{:06x}", rand_u32() & 0xffffff)
}

pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u32::from_le_bytes(b)
}

/// A gateway daemon + smbd pair in a private directory; everything is
/// stopped, unmounted and removed on drop (users too).
pub struct Gw {
    pub root: PathBuf,
    pub config: PathBuf,
    pub smb_conf: PathBuf,
    pub port: u16,
    pub daemon: Option<Child>,
    pub smbd: Option<Child>,
    pub users: Vec<String>,
    /// Team shares (and their groups) to remove on drop.
    pub shares: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// The daemon's ready line (it names the console's URL).
    pub ready_line: String,
}

impl Gw {
    pub fn new(store_url: &str, extra_toml: &str, env: &[(&str, String)], mode: &str) -> Gw {
        Gw::with_console(store_url, extra_toml, env, mode, "")
    }

    /// Like `new`, with extra `[console]` lines (PAM service, admin group,
    /// TLS, metrics access, ...).
    pub fn with_console(
        store_url: &str,
        extra_toml: &str,
        env: &[(&str, String)],
        mode: &str,
        console_toml: &str,
    ) -> Gw {
        let root = unique_dir("gw");
        // smbd runs sessions as the users: they must reach their homes.
        Command::new("chmod")
            .arg("755")
            .arg(&root)
            .status()
            .unwrap();
        let port = free_port();
        let config = root.join("gateway.toml");
        let smb_conf = root.join("smb.conf");
        // Made first: whatever fails below, its Drop removes the directory.
        let mut g = Gw {
            root: root.clone(),
            config: config.clone(),
            smb_conf: smb_conf.clone(),
            port,
            daemon: None,
            smbd: None,
            users: Vec::new(),
            shares: Vec::new(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ready_line: String::new(),
        };
        fs::write(
            &config,
            format!(
                r#"[store]
url = "{store_url}"
{extra_toml}
[mounts]
root = "{r}/home"
idle_unmount = "3s"
[cache]
dir = "{r}/cache"
size = "2G"
dirty_limit = "512M"
[users]
mode = "{mode}"
db = "{r}/etc/users.json"
key_file = "{r}/etc/secret.key"
[control]
socket = "{r}/run/gw.sock"
[samba]
config = "{smb}"
[console]
{listen}
audit_log = "{r}/log/audit.log"
tokens_file = "{r}/etc/api-tokens.json"
{console_toml}
[shares]
root = "{r}/shares"
[recovery]
url = "local://{r}/state-store"
key_file = "{r}/etc/recovery.key"
check_interval = "1s"
"#,
                r = root.display(),
                smb = smb_conf.display(),
                listen = if console_toml.contains("listen") {
                    ""
                } else {
                    "listen = \"127.0.0.1:0\""
                },
            ),
        )
        .unwrap();
        let d = |n: &str| {
            let p = root.join("samba").join(n);
            fs::create_dir_all(&p).unwrap();
            p.display().to_string()
        };
        let globals = [
            format!("smb ports = {port}"),
            "interfaces = lo".into(),
            "bind interfaces only = yes".into(),
            "disable netbios = yes".into(),
            format!("private dir = {}", d("private")),
            format!("lock directory = {}", d("lock")),
            format!("state directory = {}", d("state")),
            format!("cache directory = {}", d("cache")),
            format!("pid directory = {}", d("pid")),
            format!("ncalrpc dir = {}", d("ncalrpc")),
            format!("log file = {}/log.%m", d("log")),
            "log level = 1".into(),
        ];
        let mut args = vec![
            "samba-config".to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        for g in &globals {
            args.push("--global".into());
            args.push(g.clone());
        }
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = ok(run(&refs));
        fs::write(&smb_conf, &o.stdout).unwrap();
        let t = Command::new("testparm")
            .args(["-s"])
            .arg(&smb_conf)
            .output()
            .unwrap();
        assert!(
            t.status.success(),
            "testparm: {}",
            String::from_utf8_lossy(&t.stderr)
        );
        g.start_daemon();
        g.start_smbd();
        g
    }

    pub fn start_daemon(&mut self) {
        let mut c = Command::new(BIN);
        c.args(["serve", "--config", self.config.to_str().unwrap()])
            .env("SWIFTGATE_LOG", "swiftgate=info")
            .stdout(Stdio::piped())
            .stderr(fs::File::create(self.root.join("daemon.log")).unwrap());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("ready"),
            "daemon did not start: {line}\n{}",
            self.daemon_log()
        );
        self.daemon = Some(child);
        self.ready_line = line;
    }

    /// The console's URL from the ready line (`... console URL)`).
    pub fn console_url(&self) -> String {
        let l = self.ready_line.trim().trim_end_matches(')');
        let url = l
            .rsplit("console ")
            .next()
            .filter(|u| u.starts_with("http"))
            .unwrap_or_else(|| panic!("no console URL in {:?}", self.ready_line));
        url.trim_end_matches('/').to_string()
    }

    pub fn stop_daemon(&mut self, signal: i32) {
        if let Some(mut c) = self.daemon.take() {
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
    }

    pub fn start_smbd(&mut self) {
        let child = Command::new("smbd")
            .args(["--foreground", "--no-process-group", "--debug-stdout", "-s"])
            .arg(&self.smb_conf)
            .stdout(fs::File::create(self.root.join("smbd.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("smbd (apt install samba)");
        self.smbd = Some(child);
        wait_until(
            30,
            || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            || "smbd did not listen".to_string(),
        );
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    pub fn sg(&self, args: &[&str], stdin: &str) -> Output {
        self.sg_env(args, stdin, &[])
    }

    pub fn sg_env(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(BIN);
        c.args(args)
            .args(["--config", self.config.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let mut ch = c.spawn().unwrap();
        ch.stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        ch.wait_with_output().unwrap()
    }

    pub fn add_user(&mut self, user: &str, password: &str, extra: &[&str]) -> Output {
        let mut args = vec!["user", "add", user];
        args.extend(extra);
        let o = self.sg(&args, &format!("{password}\n"));
        self.users.push(user.to_string());
        o
    }

    /// smbclient against the home share, commands separated by ';'.
    /// A file's bytes as the user fetches it from their share.
    pub fn smb_get(&self, user: &str, password: &str, remote: &str, work: &Path) -> Vec<u8> {
        let local = work.join("smb-get.tmp");
        let _ = fs::remove_file(&local);
        let cmd = format!("get \"{remote}\" smb-get.tmp");
        smb_ok(self.smbclient(user, password, &cmd, work));
        fs::read(&local).unwrap()
    }

    pub fn smbclient(&self, user: &str, password: &str, cmds: &str, cwd: &Path) -> Output {
        self.smbclient_on("home", user, password, cmds, cwd)
    }

    pub fn smbclient_on(
        &self,
        share: &str,
        user: &str,
        password: &str,
        cmds: &str,
        cwd: &Path,
    ) -> Output {
        Command::new("smbclient")
            .arg(format!("//127.0.0.1/{share}"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                &format!("{user}%{password}"),
                "-c",
                cmds,
            ])
            .args(["--option=client min protocol=SMB2"])
            // Windows waits 60 s for a response (SessTimeOut); smbclient's
            // own 20 s cut a 1 GiB put short on a busy CI disk while the
            // cache held writes back for uploads.
            .args(["--timeout", "60"])
            .current_dir(cwd)
            .output()
            .unwrap()
    }

    pub fn home(&self, user: &str) -> PathBuf {
        self.root.join("home").join(user)
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut s) = self.smbd.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for sh in self.shares.clone() {
            let _ = self.sg(&["share", "remove", &sh, "--purge"], "");
        }
        self.stop_daemon(libc::SIGTERM);
        for sh in self.shares.clone() {
            let _ = Command::new("groupdel").arg(format!("share-{sh}")).output();
        }
        for u in self.users.clone() {
            if u == "root" {
                continue; // never, whatever a test did
            }
            let _ = self.sg(&["user", "remove", &u, "--purge"], "");
            let _ = Command::new("userdel").arg(&u).output();
        }
        for dir in ["home", "shares"] {
            if let Ok(rd) = fs::read_dir(self.root.join(dir)) {
                for e in rd.flatten() {
                    if is_mounted(&e.path()) {
                        let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                    }
                }
            }
        }
        if let Ok(rd) = fs::read_dir(self.root.join("home")) {
            for e in rd.flatten() {
                if is_mounted(&e.path()) {
                    let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        if std::env::var_os("SWIFTGATE_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

#[track_caller]
pub fn smb_ok(o: Output) -> String {
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "smbclient failed: {out}");
    assert!(
        !out.contains("NT_STATUS_"),
        "smbclient reported an error: {out}"
    );
    out
}

/// The Python of the test venv that tests/setup.sh fills with smbprotocol.
pub fn test_python() -> PathBuf {
    let venv = std::env::var_os("SWIFTGATE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/swiftgate-test-venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run `bash tests/setup.sh` (it creates the venv with smbprotocol)",
        py.display()
    );
    py
}

/// Run a Python script with smbprotocol; its stdout and stderr together,
/// asserting it succeeded.
#[track_caller]
pub fn run_smbprotocol(script: &str) -> String {
    run_python(&test_python(), script)
}

/// Run `script` with the interpreter `py`: stdout and stderr together,
/// asserting it succeeded.
#[track_caller]
pub fn run_python(py: &Path, script: &str) -> String {
    let o = Command::new(py).arg("-c").arg(script).output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    out
}
