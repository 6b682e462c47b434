//! `swiftgate setup`: the configuration it writes, merged into an existing
//! smb.conf, idempotent; bad input refused with nothing written.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

fn setup(dir: &Path, extra: &[&str]) -> std::process::Output {
    // One admin group per test: tests run in parallel.
    let group = if dir.to_string_lossy().contains("setupbad") {
        "sgsetupadm2"
    } else {
        "sgsetupadm1"
    };
    setup_with(dir, group, extra, "")
}

/// `setup --no-start` with every path in `dir`; `stdin` fed to it.
fn setup_with(dir: &Path, group: &str, extra: &[&str], stdin: &str) -> std::process::Output {
    let c = dir.join("gateway.toml");
    let etc = dir.join("etc");
    let cache = dir.join("cache");
    let smb = dir.join("smb.conf");
    let store = format!("local://{}/homes/{{user}}", dir.display());
    let mut args = vec!["setup", "--no-start"];
    // Defaults, unless the test gives the flag itself.
    for (flag, val) in [
        ("--config", c.to_str().unwrap()),
        ("--etc-dir", etc.to_str().unwrap()),
        ("--cache-dir", cache.to_str().unwrap()),
        ("--cache-size", "1G"),
        ("--smb-conf", smb.to_str().unwrap()),
        ("--admin-group", group),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, val]);
        }
    }
    if !extra.contains(&"--openrc") && !extra.contains(&"--store-url") {
        args.extend(["--store-url", &store]);
    }
    args.extend(extra);
    if args.contains(&"--start") {
        args.retain(|a| *a != "--start" && *a != "--no-start");
    }
    run_stdin(&args, stdin)
}

fn run_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut c = std::process::Command::new(BIN)
        .args(args)
        .env("OS_AUTH_URL", "")
        .env("OS_CLOUD", "")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = c.stdin.take().unwrap().write_all(stdin.as_bytes());
    c.wait_with_output().unwrap()
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, i64, i64)> {
    ["gateway.toml", "smb.conf", "etc/recovery.key"]
        .iter()
        .map(|f| {
            let p = dir.join(f);
            let m = fs::metadata(&p).unwrap();
            (
                f.to_string(),
                fs::read(&p).unwrap(),
                m.mtime(),
                m.mtime_nsec(),
            )
        })
        .collect()
}

#[test]
fn setup_merges_into_smb_conf_and_a_second_run_changes_nothing() {
    let dir = unique_dir("setupok");
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec!["sgsetupadm1".into()],
    };
    let admin =
        "[global]\n   workgroup = OFFICE\n\n[public]\n   path = /srv/public\n   read only = yes\n";
    fs::write(dir.join("smb.conf"), admin).unwrap();
    let o = ok(setup(&dir, &[]));
    // Not a terminal: the key is not printed (it would land in logs), only
    // where it is and how to print it.
    let text = String::from_utf8_lossy(&o.stdout);
    let key = fs::read_to_string(dir.join("etc/recovery.key")).unwrap();
    assert_eq!(key.trim().len(), 39);
    assert!(
        text.contains("recovery show-key") && !text.contains(key.trim()),
        "{text}"
    );
    let smb = fs::read_to_string(dir.join("smb.conf")).unwrap();
    assert!(smb.starts_with(admin.trim_end()) && smb.contains("# BEGIN swiftgate"));
    assert!(smb.contains("[home]") && smb.contains("# END swiftgate"));
    let t = std::process::Command::new("testparm")
        .args(["-s"])
        .arg(dir.join("smb.conf"))
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", stderr(&t));
    let tp = String::from_utf8_lossy(&t.stdout);
    assert!(tp.contains("[public]") && tp.contains("[home]"), "{tp}");
    let cfg = fs::read_to_string(dir.join("gateway.toml")).unwrap();
    swiftgate::gateway::GatewayConfig::parse(&cfg, Path::new("g.toml")).unwrap();
    for f in ["gateway.toml", "etc/recovery.key"] {
        let m = fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(m & 0o777, 0o600, "{f}");
    }
    let before = snapshot(&dir);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = ok(setup(&dir, &[]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("nothing to change"), "{out}");
    assert!(!out.contains(&*String::from_utf8_lossy(&before[2].1).trim().to_string()));
    assert_eq!(snapshot(&dir), before, "the second run changed a file");
    // Different input: the block is replaced, the admin's share kept.
    ok(setup(&dir, &["--smb-global", "smb ports = 4455"]));
    let smb = fs::read_to_string(dir.join("smb.conf")).unwrap();
    assert!(smb.contains("smb ports = 4455") && smb.contains("[public]"));
    assert_eq!(smb.matches("# BEGIN swiftgate").count(), 1);
    let _ = std::process::Command::new("groupdel")
        .arg("sgsetupadm1")
        .output();
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn setup_refuses_a_conflicting_homes_and_keeps_openrc_passwords_out_of_the_config() {
    let dir = unique_dir("setupbad");
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec!["sgsetupadm2".into()],
    };
    fs::write(dir.join("smb.conf"), "[homes]\n   browseable = no\n").unwrap();
    let before = listing(&dir);
    let o = setup(&dir, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("[homes]"), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing was written"), "{}", stderr(&o));
    // Not even the cache directory.
    assert_eq!(listing(&dir), before);
    assert_eq!(
        fs::read_to_string(dir.join("smb.conf")).unwrap(),
        "[homes]\n   browseable = no\n"
    );
    // An openrc: Keystone settings into the config, the password into a
    // root-only file.
    fs::remove_file(dir.join("smb.conf")).unwrap();
    // Keystone unreachable: one message, nothing written (not even the
    // password file).
    let bad_rc = dir.join("bad-openrc.sh");
    fs::write(
        &bad_rc,
        "export OS_AUTH_URL=http://127.0.0.1:9/v3\nexport OS_USERNAME=u\nexport OS_PASSWORD=pw\nexport OS_PROJECT_NAME=p\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_DOMAIN_NAME=Default\n",
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let o = setup(&dir, &["--openrc", bad_rc.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not accept these settings")
            && stderr(&o).contains("nothing was written"),
        "{}",
        stderr(&o)
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(120));
    assert!(!dir.join("cache").exists());
    assert!(!dir.join("gateway.toml").exists() && !dir.join("etc/keystone-password").exists());
    let rc = dir.join("openrc.sh");
    fs::write(
        &rc,
        "export OS_AUTH_URL=https://identity.tyo1.conoha.io/v3\nexport OS_USERNAME=gncu123\nexport OS_PASSWORD='s3cret-pw'\nexport OS_PROJECT_ID=abc123\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_REGION_NAME=tyo1\n",
    )
    .unwrap();
    // (Homes on the local store: the Keystone settings are written all the
    // same, and no Keystone is asked.)
    let local = format!("local://{}/homes/{{user}}", dir.display());
    ok(setup(
        &dir,
        &["--openrc", rc.to_str().unwrap(), "--store-url", &local],
    ));
    let cfg = fs::read_to_string(dir.join("gateway.toml")).unwrap();
    assert!(!cfg.contains("s3cret-pw"), "{cfg}");
    assert!(cfg.contains("auth_url = \"https://identity.tyo1.conoha.io/v3\""));
    assert!(cfg.contains("region_name = \"tyo1\"") && cfg.contains("project_id = \"abc123\""));
    let pw = dir.join("etc/keystone-password");
    assert_eq!(fs::read_to_string(&pw).unwrap(), "s3cret-pw");
    assert_eq!(
        fs::metadata(&pw).unwrap().permissions().mode() & 0o777,
        0o600
    );
    swiftgate::gateway::GatewayConfig::parse(&cfg, Path::new("g.toml")).unwrap();
    let _ = std::process::Command::new("groupdel")
        .arg("sgsetupadm2")
        .output();
    let _ = fs::remove_dir_all(&dir);
}

/// The Debian package installs a commented default config: setup replaces
/// that (a fresh install must configure), but never an edited copy.
#[test]
fn setup_replaces_the_packaged_default_config_but_not_an_edited_one() {
    let dir = unique_dir("setuppkg");
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec!["sgsetupadm3".into()],
    };
    let packaged =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("provisioning/gateway.toml"))
            .unwrap();
    let edited = format!("{packaged}\n# the admin's own line\n");
    fs::write(dir.join("gateway.toml"), &edited).unwrap();
    let o = setup_with(&dir, "sgsetupadm3", &[], "");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not written by setup"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read_to_string(dir.join("gateway.toml")).unwrap(),
        edited
    );
    fs::write(dir.join("gateway.toml"), &packaged).unwrap();
    ok(setup_with(&dir, "sgsetupadm3", &[], ""));
    let cfg = fs::read_to_string(dir.join("gateway.toml")).unwrap();
    assert!(cfg.starts_with("# Written by `swiftgate setup`"), "{cfg}");
}

/// The cloud-init user-data files: `#cloud-config`, valid YAML, and valid
/// for cloud-init's own schema (Debian's cloud-init package).
#[test]
fn cloud_init_user_data_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("cloud-init");
    for f in ["user-data.yaml", "user-data-restore.yaml"] {
        let p = root.join(f);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("#cloud-config\n"), "{f}");
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let cmds = format!("{:?}", v["runcmd"]);
        assert!(cmds.contains("setup"), "{f}: {cmds}");
        assert!(text.contains("<<"), "{f}: placeholders are marked");
        let o = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&p)
            .output()
            .expect("cloud-init (apt install cloud-init)");
        assert!(
            o.status.success(),
            "{f}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Every file under `dir` (and `also`): path, mode, contents (symlinks and
/// directories by their mode only).
fn listing(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let body = if m.is_file() {
            fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.push((p.display().to_string(), m.mode(), body));
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn groupdel(g: &str) {
    let _ = std::process::Command::new("groupdel").arg(g).output();
}

/// A tmpfs of its own, unmounted on drop (also when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(at: &Path, opts: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(o.status.success(), "mount: {}", stderr(&o));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Removes the test's group and directory on drop.
struct Cleanup {
    dir: std::path::PathBuf,
    groups: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for g in &self.groups {
            groupdel(g);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn setup_refuses_a_full_a_read_only_and_a_too_small_cache_disk_writing_nothing() {
    let dir = unique_dir("setupdisk");
    let group = format!("sgdisk{:06x}", gw::rand_u32() & 0xffffff);
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec![group.clone()],
    };
    fs::write(dir.join("smb.conf"), "[global]\n   workgroup = X\n").unwrap();
    // A full disk: filled up to the last page.
    let full = Tmpfs::new(&dir.join("full"), "size=1M");
    {
        use std::io::Write;
        let mut f = fs::File::create(full.0.join("filler")).unwrap();
        while f.write_all(&[7u8; 4096]).is_ok() {}
    }
    let before = listing(&dir);
    let cache = full.0.join("cache");
    let o = setup_with(&dir, &group, &["--cache-dir", cache.to_str().unwrap()], "");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("disk is full")
            && e.contains("--cache-dir")
            && e.contains("nothing was written"),
        "{e}"
    );
    assert_eq!(
        listing(&dir),
        before,
        "a full cache disk left something behind"
    );
    assert!(nix::unistd::Group::from_name(&group).unwrap().is_none());
    // A read-only disk.
    let ro = Tmpfs::new(&dir.join("ro"), "ro,size=4M");
    let before = listing(&dir);
    let cache = ro.0.join("cache");
    let o = setup_with(&dir, &group, &["--cache-dir", cache.to_str().unwrap()], "");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("read-only") && e.contains("--cache-dir") && e.contains("nothing was written"),
        "{e}"
    );
    assert_eq!(listing(&dir), before);
    // Room for less than the rule wants (1 GiB, or a smaller cache size):
    // refused, and the directory made for the probe removed again.
    let small = Tmpfs::new(&dir.join("small"), "size=16M");
    let cache = small.0.join("a/cache");
    let before = listing(&dir);
    let o = setup_with(&dir, &group, &["--cache-dir", cache.to_str().unwrap()], "");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("at least 1 GiB or the cache size") && e.contains("smaller --cache-size"),
        "{e}"
    );
    assert_eq!(listing(&dir), before);
    assert!(!small.0.join("a").exists());
    // The same disk holds a cache of 8M.
    ok(setup_with(
        &dir,
        &group,
        &["--cache-dir", cache.to_str().unwrap(), "--cache-size", "8M"],
        "",
    ));
    assert!(cache.is_dir());
}

#[test]
fn a_failing_write_step_is_undone_and_the_previous_files_come_back() {
    let dir = unique_dir("setupundo");
    let group = format!("sgundo{:06x}", gw::rand_u32() & 0xffffff);
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec![group.clone()],
    };
    fs::write(dir.join("smb.conf"), "[public]\n   path = /srv\n").unwrap();
    ok(setup_with(&dir, &group, &[], ""));
    let before = listing(&dir);
    // Other input, then groupadd refuses the group's name: the config and
    // smb.conf written before it get their previous contents back.
    let o = setup_with(
        &dir,
        "bad group!",
        &["--smb-global", "smb ports = 4455", "--cache-size", "2G"],
        "",
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("groupadd failed") && e.contains("setup undid what it had written"),
        "{e}"
    );
    assert_eq!(listing(&dir), before);
    // On a fresh machine: nothing left at all (the etc dir, the recovery
    // key, the config, the cache dir, the openrc's password file).
    let fresh = unique_dir("setupundo2");
    let _c2 = Cleanup {
        dir: fresh.clone(),
        groups: vec![],
    };
    let rc = fresh.join("openrc.sh");
    fs::write(
        &rc,
        "export OS_AUTH_URL=https://k.example/v3\nexport OS_USERNAME=u\nexport OS_PASSWORD=pw\n",
    )
    .unwrap();
    let before = listing(&fresh);
    let local = format!("local://{}/homes/{{user}}", fresh.display());
    let o = setup_with(
        &fresh,
        "bad group!",
        &["--openrc", rc.to_str().unwrap(), "--store-url", &local],
        "",
    );
    assert!(!o.status.success());
    assert_eq!(listing(&fresh), before, "{}", stderr(&o));
}

#[test]
fn setup_restore_with_a_wrong_key_writes_nothing() {
    use swiftgate::gateway::recovery::{self, RecoveryKey};
    let dir = unique_dir("setuprk");
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec![],
    };
    let url = format!("local://{}/state-store", dir.display());
    let store = recovery::open_store(&url, &Default::default()).unwrap();
    let right = RecoveryKey::generate();
    store
        .put(recovery::OBJECT, &recovery::seal(&right, b"{}"))
        .unwrap();
    fs::write(dir.join("smb.conf"), "[global]\n").unwrap();
    let before = listing(&dir);
    let wrong = RecoveryKey::generate();
    let o = run_stdin(
        &[
            "setup",
            "--restore",
            &url,
            "--config",
            dir.join("gateway.toml").to_str().unwrap(),
        ],
        &format!("{}\n", wrong.display().as_str()),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("does not open"), "{e}");
    assert!(
        !e.contains(wrong.display().as_str()),
        "the key was echoed: {e}"
    );
    assert_eq!(listing(&dir), before);
}

#[test]
fn setup_refuses_wrong_keystone_credentials_writing_nothing() {
    // The real Keystone of the test setup (tests/swift/start).
    let Ok(auth) = std::env::var("SWIFT_AIO_AUTH_URL") else {
        eprintln!("SKIP: no Keystone (source the Swift fixture's env)");
        return;
    };
    let dir = unique_dir("setupks");
    let group = format!("sgks{:06x}", gw::rand_u32() & 0xffffff);
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec![group.clone()],
    };
    let user = std::env::var("SWIFT_AIO_USERNAME").unwrap();
    let project = std::env::var("SWIFT_AIO_PROJECT_NAME").unwrap();
    let rc = dir.join("openrc.sh");
    fs::write(
        &rc,
        format!("export OS_AUTH_URL={auth}\nexport OS_USERNAME={user}\nexport OS_PASSWORD=not-the-password\nexport OS_PROJECT_NAME={project}\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_DOMAIN_NAME=Default\nexport OS_REGION_NAME=tyo1\n"),
    )
    .unwrap();
    fs::write(dir.join("smb.conf"), "[global]\n").unwrap();
    let before = listing(&dir);
    let o = setup_with(
        &dir,
        &group,
        &[
            "--openrc",
            rc.to_str().unwrap(),
            "--store-url",
            "swift://home-{user}",
        ],
        "",
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("does not accept these settings")
            && e.contains("Check the Keystone URL, user, password")
            && e.contains("nothing was written"),
        "{e}"
    );
    assert!(!e.contains("not-the-password"));
    assert_eq!(listing(&dir), before);
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is gone for our purposes (nobody may have reaped it yet).
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn ppid(pid: u32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Until `f` gives Some, at most `secs`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn signal(pid: u32, s: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s).unwrap();
}

fn owner(socket: &Path) -> Option<u32> {
    swiftgate::cli::supervise::socket_owner(socket)
}

/// Whatever a test's supervisor, daemon and smbd left running: stopped on
/// drop, also when the test fails.
struct Procs {
    pidfile: std::path::PathBuf,
    socket: std::path::PathBuf,
    smbd_pidfile: Option<std::path::PathBuf>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        let daemon = owner(&self.socket);
        if let Some(p) = fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..300 {
                if !pid_alive(p) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        let smbd = self.smbd_pidfile.as_ref().and_then(|f| {
            fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
        });
        for p in daemon.into_iter().chain(smbd) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn supervise_restarts_a_killed_daemon_restarts_on_sighup_and_stops_on_sigterm() {
    use nix::sys::signal::Signal;
    let dir = unique_dir("setupsup");
    let group = format!("sgsup{:06x}", gw::rand_u32() & 0xffffff);
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec![group.clone()],
    };
    let socket = dir.join("run/g.sock");
    let pidfile = dir.join("run/supervisor.pid");
    let log = dir.join("log/daemon.log");
    let _p = Procs {
        pidfile: pidfile.clone(),
        socket: socket.clone(),
        smbd_pidfile: None,
    };
    ok(setup_with(
        &dir,
        &group,
        &[
            "--control-socket",
            socket.to_str().unwrap(),
            "--console-listen",
            "127.0.0.1:0",
        ],
        "",
    ));
    let config = dir.join("gateway.toml");
    let supervise = || {
        run(&[
            "supervise",
            "--config",
            config.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ])
    };
    let o = ok(supervise());
    let sup: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("running (pid {sup})")),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    for (p, mode) in [(&pidfile, 0o600), (&dir.join("run"), 0o700), (&log, 0o600)] {
        assert_eq!(
            fs::metadata(p).unwrap().mode() & 0o777,
            mode,
            "{}",
            p.display()
        );
    }
    let d1 = wait_for(60, "the daemon", || owner(&socket));
    assert_eq!(
        ppid(d1),
        Some(sup),
        "the daemon is not the supervisor's child"
    );
    // One supervisor per pidfile.
    let o = supervise();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("a supervisor runs already (pid {sup}")),
        "{}",
        stderr(&o)
    );
    // A killed daemon comes back (a new process answers the socket).
    signal(d1, Signal::SIGKILL);
    let d2 = wait_for(30, "the restarted daemon", || {
        owner(&socket).filter(|p| *p != d1)
    });
    assert_eq!(ppid(d2), Some(sup));
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("SIGKILL") && text.contains("restarting it in 1s"),
        "{text}"
    );
    // SIGHUP: a clean restart.
    signal(sup, Signal::SIGHUP);
    let d3 = wait_for(30, "the daemon after SIGHUP", || {
        owner(&socket).filter(|p| *p != d2)
    });
    assert_eq!(ppid(d3), Some(sup));
    assert!(!pid_alive(d2));
    // SIGTERM: both stop, the pidfile goes.
    signal(sup, Signal::SIGTERM);
    wait_for(60, "the supervisor to exit", || {
        (!pid_alive(sup)).then_some(())
    });
    assert!(!pid_alive(d3) && !pidfile.exists() && owner(&socket).is_none());
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("SIGTERM: stopping the daemon"), "{text}");
    // A daemon that exits cleanly by itself (kill DAEMON) is not
    // restarted: the supervisor goes too.
    ok(supervise());
    let sup = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let d = wait_for(60, "the daemon", || owner(&socket));
    signal(d, Signal::SIGTERM);
    wait_for(60, "the supervisor to exit", || {
        (!pid_alive(sup)).then_some(())
    });
    assert!(!pidfile.exists() && owner(&socket).is_none());
}

/// `setup --demo` without systemd, end to end: config, the daemon under
/// `swiftgate supervise`, smbd started, the demo user (password from
/// stdin), doctor green, an SMB round trip; a second run changes and
/// restarts nothing; a changed config restarts the daemon only.
#[test]
fn setup_demo_starts_everything_and_a_second_run_restarts_nothing() {
    let dir = unique_dir("setupdemo");
    // smbd's sessions run as the user: they must reach the mountpoints.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let group = format!("sgdemo{:06x}", gw::rand_u32() & 0xffffff);
    let user = gw::unique_user("dm");
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec![group.clone()],
    };
    let socket = dir.join("run/g.sock");
    let config = dir.join("gateway.toml");
    struct User(String, std::path::PathBuf);
    impl Drop for User {
        fn drop(&mut self) {
            let _ = run(&[
                "user",
                "remove",
                &self.0,
                "--purge",
                "--config",
                self.1.to_str().unwrap(),
            ]);
            let _ = std::process::Command::new("userdel").arg(&self.0).output();
            // Its mountpoint under the default [mounts] root.
            let _ = fs::remove_dir(Path::new("/srv/swiftgate/home").join(&self.0));
        }
    }
    let _p = Procs {
        pidfile: dir.join("run/supervisor.pid"),
        socket: socket.clone(),
        smbd_pidfile: Some(dir.join("samba/pid/smbd.pid")),
    };
    // Declared after Procs: dropped first, while the daemon still runs.
    let _u = User(user.clone(), config.clone());
    let port = gw::free_port();
    let console = gw::free_port();
    let mut globals = vec![
        format!("smb ports = {port}"),
        "interfaces = lo".into(),
        "bind interfaces only = yes".into(),
        "disable netbios = yes".into(),
        "log level = 1".into(),
    ];
    for (opt, sub) in [
        ("private dir", "private"),
        ("lock directory", "lock"),
        ("state directory", "state"),
        ("cache directory", "cache"),
        ("pid directory", "pid"),
        ("ncalrpc dir", "ncalrpc"),
    ] {
        let p = dir.join("samba").join(sub);
        fs::create_dir_all(&p).unwrap();
        globals.push(format!("{opt} = {}", p.display()));
    }
    globals.push(format!("log file = {}/samba/log.%m", dir.display()));
    let store = format!("local://{}/homes/{{user}}", dir.display());
    let listen = format!("127.0.0.1:{console}");
    let log = dir.join("daemon.log");
    let demo = |extra: &[&str]| {
        let mut args = vec![
            "--start",
            "--demo",
            "--demo-user",
            &user,
            "--store-url",
            &store,
            "--console-listen",
            &listen,
            "--control-socket",
            socket.to_str().unwrap(),
            "--daemon-log",
            log.to_str().unwrap(),
        ];
        for g in &globals {
            args.extend(["--smb-global", g.as_str()]);
        }
        args.extend(extra);
        setup_with(&dir, &group, &args, "pw-from-stdin\n")
    };
    let o = demo(&[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}\n{}",
        stderr(&o),
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        out.contains("the daemon runs under `swiftgate supervise` (pid"),
        "{out}"
    );
    assert!(out.contains("started smbd (smbd --daemon)"), "{out}");
    assert!(out.contains("checks passed"), "doctor is not green: {out}");
    let sup = fs::read_to_string(dir.join("run/supervisor.pid")).unwrap();
    let daemon = owner(&socket).unwrap();
    // The demo user logs in with the password from stdin.
    let work = dir.join("work");
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("up.txt"), b"hello demo").unwrap();
    let smb = |cmds: &str| {
        let o = std::process::Command::new("smbclient")
            .arg("//127.0.0.1/home")
            .args(["-p", &port.to_string(), "-U"])
            .arg(format!("{user}%pw-from-stdin"))
            .args(["-c", cmds, "--option=client min protocol=SMB2"])
            .current_dir(&work)
            .output()
            .unwrap();
        gw::smb_ok(o)
    };
    smb("put up.txt; get up.txt down.txt");
    assert_eq!(fs::read(work.join("down.txt")).unwrap(), b"hello demo");
    // Again, the same input: nothing written, nothing restarted.
    let files = snapshot(&dir);
    let o = demo(&[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(
        out.contains("nothing to change") && !out.contains("restarted the daemon"),
        "{out}"
    );
    assert!(out.contains("setup: smbd runs\n"), "{out}");
    assert_eq!(snapshot(&dir), files);
    assert_eq!(owner(&socket), Some(daemon), "the daemon was restarted");
    assert_eq!(
        fs::read_to_string(dir.join("run/supervisor.pid")).unwrap(),
        sup
    );
    // A changed config: the daemon restarts (the supervisor stays), smbd
    // is left alone (its smb.conf did not change).
    let o = demo(&["--cache-size", "2G"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("restarted the daemon"), "{out}");
    let now = owner(&socket).unwrap();
    assert_ne!(now, daemon);
    assert_eq!(
        fs::read_to_string(dir.join("run/supervisor.pid")).unwrap(),
        sup
    );
    smb("get up.txt again.txt");
    assert_eq!(fs::read(work.join("again.txt")).unwrap(), b"hello demo");
}

/// `swiftgate` on a pseudo-terminal (stdin, stdout and stderr): what it
/// prints is collected, answers are typed; killed on drop.
struct Pty {
    master: fs::File,
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    seen: usize,
}

impl Pty {
    fn spawn(args: &[&str]) -> Pty {
        use std::os::unix::process::CommandExt as _;
        let p = nix::pty::openpty(None, None).unwrap();
        let io = || std::process::Stdio::from(p.slave.try_clone().unwrap());
        let mut c = std::process::Command::new(BIN);
        c.args(args)
            .env("OS_AUTH_URL", "")
            .env("OS_CLOUD", "")
            .stdin(io())
            .stdout(io())
            .stderr(io());
        // Its own session: the test's own terminal (if any) stays out.
        unsafe {
            c.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
        }
        let child = c.spawn().unwrap();
        drop(c);
        drop(p.slave);
        let master = fs::File::from(p.master);
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut r, o) = (master.try_clone().unwrap(), out.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut b = [0u8; 4096];
            // EIO once the child (the last holder of the slave) is gone.
            while let Ok(n) = r.read(&mut b) {
                if n == 0 {
                    break;
                }
                o.lock().unwrap().extend_from_slice(&b[..n]);
            }
        });
        Pty {
            master,
            child,
            out,
            seen: 0,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits for `s` after what was waited for before.
    fn expect(&mut self, s: &str) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let t = self.text();
            if let Some(i) = t[self.seen.min(t.len())..].find(s) {
                self.seen += i + s.len();
                return;
            }
            assert!(std::time::Instant::now() < until, "no {s:?} in:\n{t}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, s: &str) {
        use std::io::Write;
        self.master.write_all(format!("{s}\n").as_bytes()).unwrap();
    }

    fn ctrl_d(&mut self) {
        use std::io::Write;
        self.master.write_all(b"\x04").unwrap();
    }

    /// The exit code and everything printed.
    fn finish(mut self) -> (i32, String) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(180);
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < until,
                "still running:\n{}",
                self.text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // The reader's last bytes.
        std::thread::sleep(std::time::Duration::from_millis(200));
        (code, self.text())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `setup` flags for a test's paths, without the cache and admin flags
/// (those are what the prompts ask for).
fn pty_args(dir: &Path, group: &str) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    vec![
        "setup".into(),
        "--no-start".into(),
        "--config".into(),
        p("gateway.toml"),
        "--etc-dir".into(),
        p("etc"),
        "--smb-conf".into(),
        p("smb.conf"),
        "--admin-group".into(),
        group.into(),
    ]
}

#[test]
fn setup_on_a_terminal_asks_for_the_cache_and_admin_and_ctrl_d_aborts() {
    let dir = unique_dir("setuppty");
    let group = format!("sgpty{:06x}", gw::rand_u32() & 0xffffff);
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec![group.clone()],
    };
    fs::write(dir.join("smb.conf"), "[global]\n   workgroup = X\n").unwrap();
    let store = format!("local://{}/homes/{{user}}", dir.display());
    let mut args = pty_args(&dir, &group);
    args.extend(["--store-url".into(), store]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Ctrl-D at a question: nothing written.
    let before = listing(&dir);
    let mut t = Pty::spawn(&args);
    t.expect("setup: answering a few questions (or give them as flags: swiftgate setup --help)");
    t.expect("Cache directory [/var/cache/swiftgate] ");
    t.ctrl_d();
    let (code, out) = t.finish();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("setup: aborted, nothing was written"), "{out}");
    assert_eq!(listing(&dir), before);
    assert!(nix::unistd::Group::from_name(&group).unwrap().is_none());
    // Answered: as if given as flags; a wrong answer is asked again. The
    // cache's disk is small (2 GiB): the size offered fits it, and says so.
    let _small = Tmpfs::new(&dir.join("small"), "size=2G");
    let cache = dir.join("small/my-cache");
    let mut t = Pty::spawn(&args);
    t.expect("Cache directory [/var/cache/swiftgate] ");
    t.type_line(cache.to_str().unwrap());
    t.expect("the cache gets 1G, three quarters of the 2.0 GiB its disk can give it");
    t.expect("Cache size [1G] ");
    t.type_line("huge");
    t.expect("is not a size");
    t.expect("Cache size [1G] ");
    t.type_line("1G");
    t.expect("Unix account to make a console admin (empty: none) [] ");
    t.type_line("sgnosuchuser");
    t.expect("sgnosuchuser is not a Unix account here");
    t.expect("(empty: none) [] ");
    t.type_line("");
    let (code, out) = t.finish();
    assert_eq!(code, 0, "{out}");
    let cfg = fs::read_to_string(dir.join("gateway.toml")).unwrap();
    assert!(
        cfg.contains(&format!("dir = \"{}\"", cache.display())) && cfg.contains("size = \"1G\""),
        "{cfg}"
    );
    assert!(cache.is_dir());
    // A terminal: the recovery key is shown (once).
    let key = fs::read_to_string(dir.join("etc/recovery.key")).unwrap();
    assert!(out.contains(key.trim()), "{out}");
    // Given as flags, nothing is asked: the same config, nothing changed.
    let mut flags = args.clone();
    flags.extend([
        "--cache-dir",
        cache.to_str().unwrap(),
        "--cache-size",
        "1G",
        "--admin-user",
        "root",
    ]);
    let t = Pty::spawn(&flags);
    let (code, out) = t.finish();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("answering a few questions"), "{out}");
    assert!(
        !out.contains(&format!("wrote {}", dir.join("gateway.toml").display())),
        "{out}"
    );
}

#[test]
fn setup_on_a_terminal_asks_for_an_openrc_and_its_password_without_echo() {
    let dir = unique_dir("setuppty2");
    let group = format!("sgpty{:06x}", gw::rand_u32() & 0xffffff);
    let _c = Cleanup {
        dir: dir.clone(),
        groups: vec![group.clone()],
    };
    fs::write(dir.join("smb.conf"), "[global]\n   workgroup = X\n").unwrap();
    // Horizon's openrc: the password is read at `source` time. Keystone
    // at a closed port.
    let rc = dir.join("openrc.sh");
    fs::write(
        &rc,
        "export OS_AUTH_URL=http://127.0.0.1:9/v3\nexport OS_USERNAME=\"alice\"\nexport OS_PROJECT_NAME=p\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_DOMAIN_NAME=Default\necho \"Please enter your OpenStack Password: \"\nread -sr OS_PASSWORD_INPUT\nexport OS_PASSWORD=$OS_PASSWORD_INPUT\n",
    )
    .unwrap();
    let before = listing(&dir);
    let args = pty_args(&dir, &group);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut t = Pty::spawn(&args);
    t.expect("Object store: 1) OpenStack Swift (an openrc file from Horizon/ConoHa)  2) the local demo store [1] ");
    t.type_line("");
    t.expect("Path of the openrc file [] ");
    t.type_line(dir.join("missing.sh").to_str().unwrap());
    t.expect("does not exist");
    t.expect("Path of the openrc file [] ");
    t.type_line(rc.to_str().unwrap());
    t.expect("Keystone password of alice");
    t.type_line("typed-s3cret-pw");
    t.expect("Cache directory [/var/cache/swiftgate] ");
    t.type_line(dir.join("cache").to_str().unwrap());
    // 20G, or less on a smaller disk (see the test above).
    t.expect("Cache size [");
    t.expect("G] ");
    t.type_line("1G");
    t.expect("(empty: none) [] ");
    t.type_line("");
    let (code, out) = t.finish();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("does not accept these settings") && out.contains("nothing was written"),
        "{out}"
    );
    // Not echoed, not in the error.
    assert!(!out.contains("typed-s3cret-pw"), "{out}");
    assert_eq!(listing(&dir), before);
}
