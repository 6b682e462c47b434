//! The gateway end to end: the daemon, real smbd on a private loopback
//! port with the generated smb.conf, real Unix and Samba accounts, and
//! smbclient (plus the PyPI smbprotocol package as a Windows-like client).

mod common;

use common::gw::*;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn local_gw() -> Gw {
    let store = format!("local://{}/homes/{{user}}", unique_dir("gwstore").display());
    Gw::new(&store, "", &[], "service")
}

#[test]
fn two_users_work_in_their_own_homes_through_samba() {
    let mut g = local_gw();
    let (alice, bob) = (unique_user("a"), unique_user("b"));
    ok(g.add_user(&alice, "alice-pw1", &[]));
    ok(g.add_user(&bob, "bob-pw1", &[]));
    // New accounts get ordinary uids: not 65535 (the 16-bit -1) next to
    // nobody, which a too-wide useradd range hands out.
    for u in [&alice, &bob] {
        let uid = nix::unistd::User::from_name(u)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        assert!((1000..60000).contains(&uid), "{u} got uid {uid}");
    }
    let work = unique_dir("smbwork");
    fs::write(work.join("a.txt"), b"from alice").unwrap();
    fs::write(work.join("b.txt"), b"from bob").unwrap();
    // Both at once.
    let (ga, gb) = (&g, &g);
    std::thread::scope(|s| {
        let w = work.clone();
        let (a, b) = (alice.clone(), bob.clone());
        let ta = s.spawn(move || smb_ok(ga.smbclient(&a, "alice-pw1", "mkdir docs; put a.txt docs/a.txt; rename docs/a.txt docs/renamed.txt; put a.txt gone.txt; del gone.txt", &w)));
        let w = work.clone();
        let tb = s.spawn(move || smb_ok(gb.smbclient(&b, "bob-pw1", "put b.txt secret.txt", &w)));
        ta.join().unwrap();
        tb.join().unwrap();
    });
    let out = smb_ok(g.smbclient(
        &alice,
        "alice-pw1",
        "get docs/renamed.txt back.txt; ls",
        &work,
    ));
    assert!(!out.contains("gone.txt"), "{out}");
    assert_eq!(fs::read(work.join("back.txt")).unwrap(), b"from alice");
    // Each home is its user's mount, closed to others.
    let home_b = g.home(&bob);
    assert!(is_mounted(&home_b));
    let o = Command::new("runuser")
        .args(["-u", &alice, "--", "cat"])
        .arg(home_b.join("secret.txt"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "alice read bob's file");
    // Alice's session only ever sees her own home.
    let out = smb_ok(g.smbclient(&alice, "alice-pw1", "ls", &work));
    assert!(!out.contains("secret.txt"), "{out}");
    // A wrong Samba password is refused.
    let o = g.smbclient(&alice, "wrong", "ls", &work);
    assert!(!o.status.success());
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn big_file_japanese_names_dos_attributes_and_streams_survive_remount() {
    let mut g = local_gw();
    let u = unique_user("c");
    ok(g.add_user(&u, "pw-c", &[]));
    let work = unique_dir("smbwork");
    let big = random_bytes(200 << 20, 11);
    fs::write(work.join("big.bin"), &big).unwrap();
    fs::write(work.join("ja.txt"), "日本語の内容".as_bytes()).unwrap();
    fs::write(work.join("ads.txt"), b"stream data").unwrap();
    smb_ok(g.smbclient(
        &u,
        "pw-c",
        "put big.bin; put ja.txt 報告書.txt; put ads.txt plain.txt; put ads.txt plain.txt:extra; setmode plain.txt +h; setmode 報告書.txt +r",
        &work,
    ));
    // Unmount the home (as the idle timer would) and connect again. The
    // unmount uploads 200 MiB first: on a busy 2-core CI machine that took
    // 40 s, so the wait is about correctness, not speed.
    ok(g.sg(&["status"], ""));
    wait_until(
        120,
        || !is_mounted(&g.home(&u)),
        || "idle home was not unmounted".to_string(),
    );
    let out = smb_ok(g.smbclient(&u, "pw-c", "allinfo plain.txt; allinfo 報告書.txt; get big.bin big.back; get 報告書.txt ja.back; get plain.txt:extra ads.back", &work));
    assert!(out.contains(":extra"), "stream lost: {out}");
    let attrs: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("attributes:"))
        .collect();
    assert!(
        attrs.len() == 2 && attrs[0].contains('H') && attrs[1].contains('R'),
        "{out}"
    );
    assert_eq!(
        sha256(&fs::read(work.join("big.back")).unwrap()),
        sha256(&big)
    );
    assert_eq!(
        fs::read(work.join("ja.back")).unwrap(),
        "日本語の内容".as_bytes()
    );
    assert_eq!(fs::read(work.join("ads.back")).unwrap(), b"stream data");
    let _ = fs::remove_dir_all(&work);
}

fn sha256(d: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(d))
}

/// The PyPI smbprotocol client (what a Windows client sends: SMB 3 with
/// signing/encryption negotiation, create dispositions, streams).
#[test]
fn windows_like_client_smbprotocol() {
    let mut g = local_gw();
    let u = unique_user("w");
    ok(g.add_user(&u, "pw-w", &[]));
    let script = format!(
        r#"
import smbclient, sys
kw = dict(username="{u}", password="pw-w", port={port})
smbclient.register_session("127.0.0.1", encrypt=False, **kw)
base = r"\\127.0.0.1\home"
smbclient.mkdir(base + r"\Documents", **kw)
with smbclient.open_file(base + r"\Documents\議事録.docx", mode="wb", **kw) as f:
    f.write(b"x" * 100000)
with smbclient.open_file(base + r"\Documents\議事録.docx:Zone.Identifier", mode="wb", **kw) as f:
    f.write(b"[ZoneTransfer]\r\nZoneId=3\r\n")
smbclient.rename(base + r"\Documents\議事録.docx", base + r"\Documents\minutes.docx", **kw)
names = smbclient.listdir(base + r"\Documents", **kw)
assert names == ["minutes.docx"], names
with smbclient.open_file(base + r"\Documents\minutes.docx", mode="rb", **kw) as f:
    assert f.read() == b"x" * 100000
with smbclient.open_file(base + r"\Documents\minutes.docx:Zone.Identifier", mode="rb", **kw) as f:
    assert b"ZoneId=3" in f.read()
smbclient.remove(base + r"\Documents\minutes.docx", **kw)
assert smbclient.listdir(base + r"\Documents", **kw) == []
print("smbprotocol OK")
"#,
        u = u,
        port = g.port
    );
    let o = Command::new(test_python())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && out.contains("smbprotocol OK"),
        "{out}"
    );
}

#[test]
fn daemon_restart_and_crash_keep_homes_and_fsynced_data() {
    let mut g = local_gw();
    let u = unique_user("r");
    ok(g.add_user(&u, "pw-r", &[]));
    let work = unique_dir("smbwork");
    fs::write(work.join("f.txt"), b"before restart").unwrap();
    smb_ok(g.smbclient(&u, "pw-r", "put f.txt", &work));
    // A session stays open (as a Windows client's would) while the
    // daemon restarts: its home must come back by itself.
    ok(g.sg(&["hook", "connect", &u], ""));
    g.stop_daemon(libc::SIGTERM);
    assert!(!is_mounted(&g.home(&u)), "SIGTERM must unmount");
    g.start_daemon();
    wait_until(
        30,
        || is_mounted(&g.home(&u)),
        || format!("home not re-established:\n{}", g.daemon_log()),
    );
    assert_eq!(
        fs::read(g.home(&u).join("f.txt")).unwrap(),
        b"before restart"
    );
    // A crash: data written and fsynced through the mount survives.
    {
        let mut f = fs::File::create(g.home(&u).join("synced.txt")).unwrap();
        f.write_all(b"fsynced before the crash").unwrap();
        f.sync_all().unwrap();
    }
    g.stop_daemon(libc::SIGKILL);
    g.start_daemon();
    wait_until(
        30,
        || g.home(&u).join("synced.txt").exists(),
        || format!("home not back after a crash:\n{}", g.daemon_log()),
    );
    // Found dead even though the kernel still held its attributes.
    assert!(
        g.daemon_log()
            .contains("detaching a dead mount left by a crash"),
        "{}",
        g.daemon_log()
    );
    assert_eq!(
        fs::read(g.home(&u).join("synced.txt")).unwrap(),
        b"fsynced before the crash"
    );
    assert_eq!(
        g.smb_get(&u, "pw-r", "synced.txt", &work),
        b"fsynced before the crash"
    );
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn bad_config_and_unknown_users_are_refused_clearly() {
    let g = local_gw();
    // The hook for a user not in the map fails, with the reason.
    let o = g.sg(&["hook", "connect", "nosuchuser"], "");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not in the user map"), "{}", stderr(&o));
    let o = g.sg(&["hook", "connect", "../etc"], "");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid user name"), "{}", stderr(&o));
    // A malformed config: file, line, expectation.
    let bad = g.root.join("bad.toml");
    fs::write(
        &bad,
        "[store]\nurl = \"local:///x/{user}\"\n[cache]\nsize = 12\n",
    )
    .unwrap();
    let o = run(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("bad.toml") && e.contains("line 4"), "{e}");
}

/// Swift gateway tests run one at a time: one of them stops the proxy.
static SWIFT_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn swift_lock() -> std::sync::MutexGuard<'static, ()> {
    SWIFT_SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per-user Keystone identities against the real Swift fixture.
fn swift_gw() -> Option<Gw> {
    if std::env::var_os("SWIFT_AIO_STATE_DIR").is_none() {
        assert!(
            std::env::var("SWIFTGATE_REQUIRE_SWIFT").as_deref() != Ok("1"),
            "no Swift fixture: run `bash tests/swift/start DIR && . DIR/env` first"
        );
        eprintln!("skipped: no Swift fixture in the environment");
        return None;
    }
    let v = |k: &str| std::env::var(k).unwrap();
    let toml = format!(
        "[store.swift]\nauth_url = \"{}\"\nregion_name = \"{}\"\nuser_domain_name = \"Default\"\nproject_domain_name = \"Default\"\n",
        v("SWIFT_AIO_AUTH_URL"),
        v("SWIFT_AIO_REGION")
    );
    let tag = format!("{:06x}", rand_u32() & 0xffffff);
    Some(Gw::new(
        &format!("swift://sgt-home-{tag}-{{user}}"),
        &toml,
        &[],
        "per-user",
    ))
}

fn pwfile(dir: &Path, name: &str, pw: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, format!("{pw}\n")).unwrap();
    p.display().to_string()
}

#[test]
fn swift_homes_with_per_user_keystone_identities() {
    let _serial = swift_lock();
    let Some(mut g) = swift_gw() else { return };
    let v = |k: &str| std::env::var(k).unwrap();
    let work = unique_dir("smbwork");
    let (alice, bob) = (unique_user("ka"), unique_user("kb"));
    let apw = pwfile(&work, "apw", &v("SWIFT_AIO_ALICE_PASSWORD"));
    let bpw = pwfile(&work, "bpw", &v("SWIFT_AIO_BOB_PASSWORD"));
    // Wrong Keystone password: refused before anything is created.
    let bad = pwfile(&work, "bad", "not-the-password");
    let o = g.add_user(
        &unique_user("kx"),
        "pw",
        &[
            "--os-username",
            "alice",
            "--os-password-file",
            &bad,
            "--os-project-name",
            "alice-project",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("rejected the credentials of user alice") && stderr(&o).contains("401"),
        "{}",
        stderr(&o)
    );
    ok(g.add_user(
        &alice,
        "smb-a",
        &[
            "--os-username",
            "alice",
            "--os-password-file",
            &apw,
            "--os-project-name",
            "alice-project",
        ],
    ));
    ok(g.add_user(
        &bob,
        "smb-b",
        &[
            "--os-username",
            "bob",
            "--os-password-file",
            &bpw,
            "--os-project-name",
            "bob-project",
        ],
    ));
    let show = ok(g.sg(&["user", "show", &alice], ""));
    let show = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(
        show.contains("alice-project") && !show.contains(&v("SWIFT_AIO_ALICE_PASSWORD")),
        "{show}"
    );
    fs::write(work.join("x.txt"), b"in swift").unwrap();
    smb_ok(g.smbclient(
        &alice,
        "smb-a",
        "put x.txt; mkdir 日本; put x.txt 日本/y.txt",
        &work,
    ));
    smb_ok(g.smbclient(&bob, "smb-b", "put x.txt bob.txt", &work));
    // The bytes are in alice's own Swift account (her project).
    let tok = v3_token("ALICE_");
    let list = reqwest::blocking::Client::new()
        .get(format!("{}?format=json", v("SWIFT_AIO_ALICE_STORAGE_URL")))
        .header("X-Auth-Token", &tok)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        list.contains(&format!("-{alice}\"")),
        "alice's container missing from her account: {list}"
    );
    assert!(
        !list.contains(&format!("-{bob}\"")),
        "bob's container in alice's account: {list}"
    );
    // Everything reaches Swift: unmount (idle), wipe the local cache, read back.
    wait_until(
        60,
        || !is_mounted(&g.home(&alice)),
        || "idle home was not unmounted".to_string(),
    );
    fs::remove_dir_all(g.root.join("cache").join(&alice)).unwrap();
    assert_eq!(g.smb_get(&alice, "smb-a", "日本/y.txt", &work), b"in swift");
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn revoked_keystone_credentials_refuse_the_connection() {
    let _serial = swift_lock();
    let Some(mut g) = swift_gw() else { return };
    let v = |k: &str| std::env::var(k).unwrap();
    let http = reqwest::blocking::Client::new();
    let tok = v3_token("ALICE_");
    let ac: serde_json::Value = http
        .post(format!(
            "{}/users/{}/application_credentials",
            v("SWIFT_AIO_AUTH_URL"),
            v("SWIFT_AIO_ALICE_USER_ID")
        ))
        .header("X-Auth-Token", &tok)
        .json(&serde_json::json!({"application_credential": {"name": unique_user("ac")}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = ac["application_credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let work = unique_dir("smbwork");
    let secret = pwfile(
        &work,
        "acs",
        ac["application_credential"]["secret"].as_str().unwrap(),
    );
    let u = unique_user("kr");
    ok(g.add_user(
        &u,
        "smb-r",
        &[
            "--os-application-credential-id",
            &id,
            "--os-application-credential-secret-file",
            &secret,
        ],
    ));
    smb_ok(g.smbclient(&u, "smb-r", "ls", &work));
    wait_until(
        60,
        || !is_mounted(&g.home(&u)),
        || "idle home was not unmounted".to_string(),
    );
    // The credential is deleted in Keystone: the next session is refused,
    // and the daemon log says why.
    http.delete(format!(
        "{}/users/{}/application_credentials/{id}",
        v("SWIFT_AIO_AUTH_URL"),
        v("SWIFT_AIO_ALICE_USER_ID")
    ))
    .header("X-Auth-Token", &tok)
    .send()
    .unwrap();
    let o = g.smbclient(&u, "smb-r", "ls", &work);
    assert!(
        !o.status.success(),
        "connection accepted with revoked credentials"
    );
    assert!(!is_mounted(&g.home(&u)));
    let log = g.daemon_log();
    assert!(
        log.contains("refusing the connection")
            && log.contains(&format!("application credential {id}")),
        "{log}"
    );
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn swift_down_refuses_a_first_mount_and_mounted_homes_keep_working() {
    let _serial = swift_lock();
    let Some(mut g) = swift_gw() else { return };
    let v = |k: &str| std::env::var(k).unwrap();
    let work = unique_dir("smbwork");
    let pw = pwfile(&work, "pw", &v("SWIFT_AIO_BOB_PASSWORD"));
    let (mounted, cold) = (unique_user("km"), unique_user("kc"));
    for u in [&mounted, &cold] {
        ok(g.add_user(
            u,
            "smb-pw",
            &[
                "--os-username",
                "bob",
                "--os-password-file",
                &pw,
                "--os-project-name",
                "bob-project",
            ],
        ));
    }
    fs::write(work.join("a.txt"), b"written while Swift is down").unwrap();
    // One home is mounted and stays mounted (a session is open).
    ok(g.sg(&["hook", "connect", &mounted], ""));
    let down = ProxyDown::new();
    // Its users keep working from the cache.
    smb_ok(g.smbclient(&mounted, "smb-pw", "put a.txt; get a.txt a.back", &work));
    assert_eq!(
        fs::read(work.join("a.back")).unwrap(),
        b"written while Swift is down"
    );
    // A home that is not mounted cannot be: the connection is refused and
    // the daemon log names the cause.
    let o = g.smbclient(&cold, "smb-pw", "ls", &work);
    assert!(!o.status.success(), "connected without Swift");
    let log = g.daemon_log();
    assert!(
        log.contains("refusing the connection")
            && log.contains(&cold)
            && log.contains("127.0.0.1:8080"),
        "{log}"
    );
    drop(down);
    // Swift is back: the pending upload completes and the file is in Swift.
    ok(g.sg(&["hook", "disconnect", &mounted], ""));
    wait_until(
        90,
        || !is_mounted(&g.home(&mounted)),
        || {
            format!(
                "home not flushed and unmounted after Swift returned:\n{}",
                g.daemon_log()
            )
        },
    );
    fs::remove_dir_all(g.root.join("cache").join(&mounted)).unwrap();
    assert_eq!(
        g.smb_get(&mounted, "smb-pw", "a.txt", &work),
        b"written while Swift is down"
    );
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn shipped_smb_conf_matches_the_generator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = ok(run(&[
        "samba-config",
        "--config",
        root.join("provisioning/gateway.toml").to_str().unwrap(),
    ]));
    let exe = std::fs::canonicalize(BIN).unwrap();
    let cfg = std::fs::canonicalize(root.join("provisioning/gateway.toml")).unwrap();
    let generated = String::from_utf8(o.stdout)
        .unwrap()
        .replace(exe.to_str().unwrap(), "/usr/local/bin/swiftgate")
        .replace(cfg.to_str().unwrap(), "/etc/swiftgate/gateway.toml");
    let shipped = fs::read_to_string(root.join("provisioning/smb.conf")).unwrap();
    assert_eq!(
        shipped, generated,
        "provisioning/smb.conf is stale: regenerate it with `swiftgate samba-config`"
    );
    let t = Command::new("testparm")
        .arg("-s")
        .arg(root.join("provisioning/smb.conf"))
        .output()
        .unwrap();
    assert!(
        t.status.success(),
        "testparm: {}",
        String::from_utf8_lossy(&t.stderr)
    );
}

/// Users write a home over SMB: a device node or set-uid program they
/// put there must not take effect on the gateway. smbd runs as the user,
/// so the mount lets other users in.
#[test]
fn homes_are_mounted_nosuid_nodev_for_smbd() {
    let mut g = local_gw();
    let u = unique_user("o");
    ok(g.add_user(&u, "pw-o", &[]));
    ok(g.sg(&["hook", "connect", &u], ""));
    let m = mount_entry(&g.home(&u)).expect("the home is mounted");
    assert!(m.fstype.starts_with("fuse"), "{m:?}");
    assert!(m.source.starts_with("swiftgate:"), "{m:?}");
    for o in ["nosuid", "nodev", "noatime"] {
        assert!(m.options.iter().any(|x| x == o), "{o}: {m:?}");
    }
    for o in ["default_permissions", "allow_other"] {
        assert!(m.super_options.iter().any(|x| x == o), "{o}: {m:?}");
    }
    ok(g.sg(&["hook", "disconnect", &u], ""));
}

#[test]
fn busy_idle_home_stays_mounted_until_released() {
    let mut g = local_gw();
    let u = unique_user("i");
    ok(g.add_user(&u, "pw-i", &[]));
    ok(g.sg(&["hook", "connect", &u], ""));
    // A local process keeps a file open in the home.
    let held = fs::File::create(g.home(&u).join("held.txt")).unwrap();
    ok(g.sg(&["hook", "disconnect", &u], ""));
    std::thread::sleep(Duration::from_secs(6));
    assert!(is_mounted(&g.home(&u)), "a busy home must not be detached");
    drop(held);
    wait_until(
        30,
        || !is_mounted(&g.home(&u)),
        || format!("idle home not unmounted once released:\n{}", g.daemon_log()),
    );
    // Nothing lost on the way.
    ok(g.sg(&["hook", "connect", &u], ""));
    assert!(g.home(&u).join("held.txt").exists());
}

/// A session whose smbd is killed (so `root postexec` never runs) is
/// dropped once that process is gone, and the home goes idle as usual.
#[test]
fn a_killed_smbd_does_not_keep_the_home_mounted() {
    let mut g = local_gw();
    let u = unique_user("k");
    ok(g.add_user(&u, "pw-k", &[]));
    // An interactive smbclient keeps its session open while stdin is.
    let mut client = Command::new("smbclient")
        .arg("//127.0.0.1/home")
        .args(["-p", &g.port.to_string(), "-U", &format!("{u}%pw-k")])
        .args(["--option=client min protocol=SMB2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pids = || -> Vec<u64> {
        let o = g.sg(&["status", "--json"], "");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["user"] == u.as_str())
            .flat_map(|h| h["smbd_pids"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_u64())
            .collect()
    };
    wait_until(
        30,
        || pids().len() == 1,
        || format!("no session with its smbd recorded:\n{}", g.daemon_log()),
    );
    let pid = pids()[0];
    std::thread::sleep(Duration::from_secs(5)); // past the idle timeout
    assert!(is_mounted(&g.home(&u)), "an open session keeps the home");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(
        30,
        || !is_mounted(&g.home(&u)),
        || format!("home kept after its smbd was killed:\n{}", g.daemon_log()),
    );
    assert!(g
        .daemon_log()
        .contains("smbd process ended without disconnecting"));
    let _ = client.kill();
    let _ = client.wait();
}

/// A home idle when the daemon stops is not mounted again at its start
/// (no session would ever end there, so it would never go idle).
#[test]
fn an_idle_home_is_not_brought_back_by_a_restart() {
    let mut g = local_gw();
    let u = unique_user("q");
    ok(g.add_user(&u, "pw-q", &[]));
    ok(g.sg(&["hook", "connect", &u], ""));
    ok(g.sg(&["hook", "disconnect", &u], ""));
    assert!(is_mounted(&g.home(&u)), "idle, not yet unmounted");
    g.stop_daemon(libc::SIGTERM);
    g.start_daemon();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !is_mounted(&g.home(&u)),
        "an idle home came back after the restart:\n{}",
        g.daemon_log()
    );
}

/// `user add` never hands a home to root, nor to an existing account that
/// swiftgate did not create unless told `--adopt`; smb.conf keeps root and
/// anonymous sessions out.
#[test]
fn root_and_foreign_accounts_are_not_taken_over() {
    let mut g = local_gw();
    // Not through add_user: the clean-up must never touch root.
    for extra in [&[][..], &["--adopt"][..]] {
        let mut args = vec!["user", "add", "root"];
        args.extend(extra);
        let o = g.sg(&args, "pw-root\n");
        assert!(!o.status.success(), "user add root {extra:?} succeeded");
        assert!(stderr(&o).contains("uid 0 (root)"), "{}", stderr(&o));
    }
    let list = String::from_utf8_lossy(&ok(g.sg(&["user", "list"], "")).stdout).to_string();
    assert!(!list.contains("root"), "{list}");
    assert!(
        !Command::new("pdbedit")
            .arg("-s")
            .arg(&g.smb_conf)
            .args(["-L", "-u", "root"])
            .output()
            .unwrap()
            .status
            .success(),
        "root got a Samba account"
    );
    // Someone's existing login, and a system account: refused, then
    // adopted on request (and it works through Samba).
    let work = unique_dir("smbwork");
    for (tag, extra) in [("p", &[][..]), ("y", &["--system"][..])] {
        let u = unique_user(tag);
        let mut c = Command::new("useradd");
        c.args(["--no-create-home", "--shell", "/usr/sbin/nologin"])
            .args(extra)
            .arg(&u);
        assert!(c.status().unwrap().success());
        g.users.push(u.clone());
        let o = g.add_user(&u, "pw-x", &[]);
        assert!(!o.status.success(), "{u}: taken over without --adopt");
        assert!(
            stderr(&o).contains("swiftgate did not create it") && stderr(&o).contains("--adopt"),
            "{}",
            stderr(&o)
        );
        ok(g.add_user(&u, "pw-x", &["--adopt"]));
        smb_ok(g.smbclient(&u, "pw-x", "ls", &work));
    }
    // The generated smb.conf, as Samba reads it.
    let t = Command::new("testparm")
        .args(["-s", "--suppress-prompt"])
        .arg(&g.smb_conf)
        .output()
        .unwrap();
    let parsed = String::from_utf8_lossy(&t.stdout);
    assert!(
        t.status.success()
            && parsed.contains("invalid users = root")
            && parsed.contains("restrict anonymous = 2"),
        "{parsed}"
    );
    // Even with a Samba password, root gets no session.
    let mut c = Command::new("smbpasswd")
        .arg("-c")
        .arg(&g.smb_conf)
        .args(["-s", "-a", "root"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"pw-root\npw-root\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let o = g.smbclient("root", "pw-root", "ls", &work);
    assert!(!o.status.success(), "a session as root");
    assert!(!is_mounted(&g.home("root")));
    let _ = fs::remove_dir_all(&work);
}

/// `user disable` and `user remove` (without --purge) stop new sessions:
/// the daemon refuses the hook and says why; `user enable` lets them in.
#[test]
fn disabled_and_removed_users_cannot_connect() {
    let mut g = local_gw();
    let u = unique_user("d");
    ok(g.add_user(&u, "pw-d", &[]));
    let work = unique_dir("smbwork");
    smb_ok(g.smbclient(&u, "pw-d", "ls", &work));
    ok(g.sg(&["user", "disable", &u], ""));
    let list = String::from_utf8_lossy(&ok(g.sg(&["user", "list"], "")).stdout).to_string();
    assert!(
        list.lines()
            .any(|l| l.starts_with(&u) && l.contains("disabled")),
        "{list}"
    );
    wait_until(
        30,
        || !is_mounted(&g.home(&u)),
        || "idle home was not unmounted".to_string(),
    );
    let o = g.smbclient(&u, "pw-d", "ls", &work);
    assert!(!o.status.success(), "a disabled user connected");
    let o = g.sg(&["hook", "connect", &u], "");
    assert!(!o.status.success(), "the hook accepted a disabled user");
    assert!(stderr(&o).contains("disabled"), "{}", stderr(&o));
    assert!(
        !is_mounted(&g.home(&u)),
        "a disabled user's home was mounted"
    );
    let log = g.daemon_log();
    assert!(
        log.contains("refusing the connection") && log.contains(&format!("user {u} is disabled")),
        "{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "colour codes in the daemon log: {log:?}"
    );
    // Enabled again: back in.
    ok(g.sg(&["user", "enable", &u], ""));
    smb_ok(g.smbclient(&u, "pw-d", "ls", &work));
    // Removed, data kept: no session either.
    ok(g.sg(&["user", "remove", &u], ""));
    assert!(!is_mounted(&g.home(&u)));
    let o = g.sg(&["hook", "connect", &u], "");
    assert!(!o.status.success(), "the hook accepted a removed user");
    assert!(stderr(&o).contains("was removed"), "{}", stderr(&o));
    assert!(
        !is_mounted(&g.home(&u)),
        "a removed user's home was mounted"
    );
    let o = g.smbclient(&u, "pw-d", "ls", &work);
    assert!(!o.status.success(), "a removed user connected");
    let _ = fs::remove_dir_all(&work);
}

/// Restart the daemon with an smbpasswd that fails when given `flag`
/// (the daemon carries out user commands: it is the one with the shim).
fn shim_smbpasswd(g: &mut Gw, flag: &str, message: &str) {
    let shim = g.root.join("shim");
    fs::create_dir_all(&shim).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v smbpasswd"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    fs::write(
        shim.join("smbpasswd"),
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = {flag} ] && {{ echo '{message}' >&2; exit 1; }}; done\nexec {} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(shim.join("smbpasswd"))
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    g.stop_daemon(libc::SIGTERM);
    g.extra_env.push(("PATH".into(), path));
    g.start_daemon();
}

/// A `user add` that fails at the Samba step applies nothing: no Unix
/// account, no map entry, no filesystem or directory in the store; the
/// same add succeeds once Samba works.
#[test]
fn a_failed_add_leaves_nothing_behind() {
    let stores = unique_dir("gwstore");
    let mut g = Gw::new(
        &format!("local://{}/homes/{{user}}", stores.display()),
        "",
        &[],
        "service",
    );
    shim_smbpasswd(&mut g, "-a", "passdb is read-only");
    let u = unique_user("f");
    let o = g.add_user(&u, "pw-f", &[]);
    assert!(!o.status.success(), "add exited 0 without a Samba account");
    let e = stderr(&o);
    assert!(e.contains("passdb is read-only"), "{e}");
    assert!(
        nix::unistd::User::from_name(&u).unwrap().is_none(),
        "the Unix account was left behind"
    );
    let list = String::from_utf8_lossy(&ok(g.sg(&["user", "list"], "")).stdout).to_string();
    assert!(!list.contains(&u), "the user is in the map: {list}");
    assert!(
        !stores.join("homes").join(&u).exists(),
        "a store directory was left behind"
    );
    // Samba working again: the same add goes through.
    g.stop_daemon(libc::SIGTERM);
    g.extra_env.retain(|(k, _)| k != "PATH");
    g.start_daemon();
    ok(g.add_user(&u, "pw-f", &[]));
    assert!(stores.join("homes").join(&u).join("params").exists());
    drop(g);
    let _ = fs::remove_dir_all(&stores);
}

/// `user remove --purge` that cannot delete the Samba account fails (the
/// password would keep working) and purges nothing; a retry completes.
#[test]
fn purge_that_leaves_the_samba_account_fails() {
    let mut g = local_gw();
    let u = unique_user("x");
    ok(g.add_user(&u, "pw-x", &[]));
    // smbpasswd that cannot delete (as with a read-only or broken passdb).
    shim_smbpasswd(&mut g, "-x", "Failed to delete entry for user");
    let o = g.sg(&["user", "remove", &u, "--purge"], "");
    assert!(
        !o.status.success(),
        "purge exited 0 leaving the Samba account"
    );
    let e = stderr(&o);
    assert!(
        e.contains("Samba account")
            && e.contains("password still works")
            && e.contains("Nothing was purged"),
        "{e}"
    );
    // Still listed, marked removed, and refused at connect.
    let list = String::from_utf8_lossy(&ok(g.sg(&["user", "list"], "")).stdout).to_string();
    assert!(
        list.lines()
            .any(|l| l.starts_with(&u) && l.contains("removed")),
        "{list}"
    );
    let work = unique_dir("smbwork");
    assert!(!g.smbclient(&u, "pw-x", "ls", &work).status.success());
    // Fixed: the retry purges.
    g.stop_daemon(libc::SIGTERM);
    g.extra_env.retain(|(k, _)| k != "PATH");
    g.start_daemon();
    ok(g.sg(&["user", "remove", &u, "--purge"], ""));
    let list = String::from_utf8_lossy(&ok(g.sg(&["user", "list"], "")).stdout).to_string();
    assert!(!list.contains(&u), "{list}");
    assert!(!Command::new("pdbedit")
        .arg("-s")
        .arg(&g.smb_conf)
        .args(["-L", "-u", &u])
        .output()
        .unwrap()
        .status
        .success());
    let _ = fs::remove_dir_all(&work);
}

/// The control socket is root-only, and a user who is not root is told
/// that, not that the daemon is not running.
#[test]
fn control_socket_is_root_only_and_says_so() {
    let g = local_gw();
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(g.root.join("run/gw.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "socket mode {mode:o}");
    let o = Command::new("runuser")
        .args(["-u", "nobody", "--", BIN, "status", "--config"])
        .arg(&g.config)
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("permission denied") && e.contains("root") && !e.contains("not running"),
        "{e}"
    );
}

/// `stat` and `ctl` work on gateway homes (asked of the daemon, whose
/// homes have no mount process of their own); `status` shows cache health.
#[test]
fn stat_and_ctl_work_on_gateway_homes() {
    let mut g = local_gw();
    let u = unique_user("s");
    ok(g.add_user(&u, "pw-s", &[]));
    ok(g.sg(&["hook", "connect", &u], ""));
    let home = g.home(&u);
    fs::write(home.join("data.bin"), random_bytes(5 << 20, 3)).unwrap();
    let hs = home.display().to_string();
    let o = ok(g.sg(&["stat", &hs, "--json"], ""));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["counts"]["inodes"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["store"].as_str().unwrap().contains(&u), "{v}");
    let o = ok(g.sg(&["stat", &hs], ""));
    let human = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(human.contains("dirty (pinned):"), "{human}");
    ok(g.sg(&["ctl", &hs, "flush"], ""));
    let o = ok(g.sg(&["stat", &hs, "--json"], ""));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cache"]["dirty_bytes"], 0, "flush left dirty data: {v}");
    assert_eq!(v["cache"]["upload_queue"], 0, "{v}");
    ok(g.sg(&["ctl", &hs, "backup-metadata"], ""));
    // status, without --json, shows cache use and dirty bytes.
    let o = ok(g.sg(&["status"], ""));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let line = out.lines().find(|l| l.starts_with(&u)).unwrap_or_default();
    assert!(
        out.contains("cache used/size") && out.contains("dirty/limit") && line.contains("MiB/"),
        "{out}"
    );
    // A directory that is not a home: said clearly.
    let o = g.sg(&["stat", g.root.to_str().unwrap()], "");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no swiftgate mount process answers")
            && stderr(&o).contains("not a home this gateway has mounted"),
        "{}",
        stderr(&o)
    );
    ok(g.sg(&["hook", "disconnect", &u], ""));
}

/// A second share on a plain directory of the local disk (ext4), with the
/// home share's VFS modules: what the same smbd does without swiftgate.
fn add_plain_share(g: &mut Gw, user: &str) -> PathBuf {
    let dir = g.root.join("plain");
    fs::create_dir_all(&dir).unwrap();
    ok_cmd(Command::new("chown").arg(user).arg(&dir));
    let conf = fs::read_to_string(&g.smb_conf).unwrap();
    let vfs = conf
        .lines()
        .find(|l| l.trim_start().starts_with("vfs objects"))
        .unwrap_or("vfs objects = catia fruit streams_xattr acl_xattr")
        .trim()
        // Without the bin: its parameters stay in the home's section.
        .replace(" recycle ", " ");
    fs::write(
        &g.smb_conf,
        format!(
            "{conf}\n[plain]\npath = {}\nread only = no\nvalid users = {user}\n{vfs}\nstore dos attributes = yes\n",
            dir.display()
        ),
    )
    .unwrap();
    if let Some(mut s) = g.smbd.take() {
        let _ = s.kill();
        let _ = s.wait();
    }
    g.start_smbd();
    dir
}

fn ok_cmd(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA and FSCTL_QUERY_ALLOCATED_RANGES
/// through smbd: a swiftgate home answers as the same smbd on ext4 does.
#[test]
fn sparse_files_through_samba_match_ext4() {
    let mut g = Gw::new(
        &format!("local://{}/homes/{{user}}", unique_dir("gwstore").display()),
        "[fs]\nblock_size = \"1M\"\n",
        &[],
        "service",
    );
    let u = unique_user("sp");
    ok(g.add_user(&u, "pw-s", &[]));
    add_plain_share(&mut g, &u);
    let script = format!(
        r#"
import smbclient, struct, hashlib, json, random
from smbclient._os import SMBFileTransaction, ioctl_request
from smbprotocol.ioctl import CtlCode, IOCTLFlags
kw = dict(username="{u}", password="pw-s", port={port})
smbclient.register_session("127.0.0.1", encrypt=False, **kw)
M = 1 << 20
data = random.Random(7).randbytes(8 * M)
def fsctl(f, code, inp=b"", out=0):
    with SMBFileTransaction(f) as t:
        ioctl_request(t, code, flags=IOCTLFlags.SMB2_0_IOCTL_IS_FSCTL, output_size=out, input_buffer=inp)
    return t.results[0]
def ranges(f):
    r = fsctl(f, CtlCode.FSCTL_QUERY_ALLOCATED_RANGES, struct.pack("<qq", 0, 8 * M), 4096)
    return [struct.unpack_from("<qq", r, i) for i in range(0, len(r), 16)]
res = {{}}
for share in ["home", "plain"]:
    p = r"\\127.0.0.1" + "\\" + share + r"\sparse.bin"
    out = {{}}
    # One handle throughout: the writes may still be in the kernel's cache.
    with smbclient.open_file(p, mode="w+b", buffering=0, **kw) as f:
        done = 0
        while done < len(data):  # a raw write may be short
            done += f.write(data[done:])
        out["not sparse"] = ranges(f)
        fsctl(f, CtlCode.FSCTL_SET_SPARSE)
        out["sparse"] = ranges(f)
        fsctl(f, CtlCode.FSCTL_SET_ZERO_DATA, struct.pack("<qq", 2 * M, 5 * M))
        fsctl(f, CtlCode.FSCTL_SET_ZERO_DATA, struct.pack("<qq", 6 * M + 100, 6 * M + 200))
        out["zeroed"] = ranges(f)
        f.seek(7 * M)
        f.write(b"y" * 10)
        out["written"] = ranges(f)
    with smbclient.open_file(p, mode="rb", **kw) as f:
        back = f.read()
    want = bytearray(data)
    want[2 * M:5 * M] = bytes(3 * M)
    want[6 * M + 100:6 * M + 200] = bytes(100)
    want[7 * M:7 * M + 10] = b"y" * 10
    out["content ok"] = back == bytes(want)
    out["attrs"] = smbclient.stat(p, **kw).st_file_attributes & 0x200
    res[share] = out
print("RESULT " + json.dumps(res))
"#,
        u = u,
        port = g.port
    );
    let out = run_smbprotocol(&script);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{out}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["home"]["content ok"], true, "{v}");
    assert_eq!(v["plain"]["content ok"], true, "{v}");
    // The punched range is a hole on ext4 (a sanity check of the baseline).
    let m = 1u64 << 20;
    assert_eq!(
        v["plain"]["zeroed"],
        serde_json::json!([[0, 2 * m], [5 * m, 3 * m]]),
        "{v}"
    );
    assert_eq!(v["home"], v["plain"], "swiftgate home vs ext4 share");
}

/// FSCTL_SRV_COPYCHUNK (what Explorer and robocopy send for a copy within
/// the share): Samba 4.17 turns each chunk into copy_file_range, and
/// swiftgate shares the blocks: 1 GiB copied in well under a second,
/// nothing new stored.
#[test]
fn server_side_copy_through_samba_shares_blocks() {
    let mut g = Gw::new(
        &format!("local://{}/homes/{{user}}", unique_dir("gwstore").display()),
        // The gateway's default block size (4 MiB): Samba copies in chunks
        // of at most 1 MiB (COPYCHUNK_MAX_CHUNK_LEN), none a whole block.
        "",
        &[],
        "service",
    );
    let u = unique_user("cc");
    ok(g.add_user(&u, "pw-c", &[]));
    let work = unique_dir("cc-work");
    // A GiB of incompressible data, written into the home through Samba.
    let src = work.join("big.bin");
    {
        let mut f = fs::File::create(&src).unwrap();
        for i in 0..64 {
            f.write_all(&random_bytes(16 << 20, i)).unwrap();
        }
    }
    let want = sha256_file(&src);
    smb_ok(g.smbclient(&u, "pw-c", "put big.bin", &work));
    // The home is flushed and unmounted once idle: then everything the
    // put stored is in the store.
    let home = g.home(&u);
    // Bounds, not expectations: a GiB goes up before the first unmount.
    let idle = || wait_until(240, || !is_mounted(&home), || "home stays mounted".into());
    idle();
    let cfg = fs::read_to_string(&g.config).unwrap();
    let store_root = cfg
        .lines()
        .find_map(|l| l.strip_prefix("url = \"local://"))
        .map(|s| PathBuf::from(s.trim_end_matches('"').replace("{user}", &u)))
        .unwrap();
    fn walk(d: &Path, v: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), v)
            } else {
                v.push(e.path())
            }
        }
    }
    let objects = || {
        let mut v = Vec::new();
        walk(&store_root.join("data"), &mut v);
        v.sort();
        v
    };
    let before = objects();
    assert!(before.len() > 10, "{before:?}");
    let py = |body: &str| {
        run_smbprotocol(&format!(
            r#"
import smbclient, time, hashlib
kw = dict(username="{u}", password="pw-c", port={port})
smbclient.register_session("127.0.0.1", encrypt=False, **kw)
b = r"\\127.0.0.1\home"
def sha(p):
    h = hashlib.sha256()
    with smbclient.open_file(b + p, mode="rb", **kw) as f:
        while True:
            d = f.read(16 << 20)
            if not d:
                return h.hexdigest()
            h.update(d)
{body}
"#,
            u = u,
            port = g.port
        ))
    };
    // Timed against reading the file through the same session, not against
    // a fixed bound (this VM's speed varies 2x from day to day): a copy
    // whose bytes went through the client would take the read and a write.
    let out = py(r#"
t = time.monotonic()
sha(r"\big.bin")
print("READ %.3f" % (time.monotonic() - t))
t = time.monotonic()
smbclient.copyfile(b + r"\big.bin", b + r"\copy.bin", **kw)
print("SECONDS %.3f" % (time.monotonic() - t))
"#);
    let field = |k: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{out}"))
            .parse()
            .unwrap()
    };
    let (read, secs) = (field("READ "), field("SECONDS "));
    idle();
    assert_eq!(objects(), before, "the copy stored new objects");
    assert!(
        secs < read,
        "1 GiB server-side copy took {secs} s, reading it {read} s"
    );
    // The copy reads right, and copy-on-write: a change to the copy leaves
    // the original alone.
    let out = py(r#"
print("COPY", sha(r"\copy.bin"))
with smbclient.open_file(b + r"\copy.bin", mode="r+b", **kw) as f:
    f.seek(5 << 20)
    f.write(b"changed")
print("ORIG", sha(r"\big.bin"))
print("CHANGED", sha(r"\copy.bin"))
"#);
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{out}"))
            .trim()
            .to_string()
    };
    assert_eq!(get("COPY"), want);
    assert_eq!(get("ORIG"), want);
    assert_ne!(get("CHANGED"), want);
    let _ = fs::remove_dir_all(&work);
}

/// What `nobody` finds when it greps everything under `dirs` for `needle`.
fn nobody_greps(dirs: &[&Path], needle: &str) -> String {
    let o = Command::new("runuser")
        .args(["-u", "nobody", "--", "grep", "-rla", needle])
        .args(dirs)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn files_put_through_samba_are_unreadable_by_other_local_users() {
    let store_dir = unique_dir("gwstore");
    fs::set_permissions(&store_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let mut g = Gw::new(
        &format!("local://{}/homes/{{user}}", store_dir.display()),
        "",
        &[],
        "service",
    );
    let bob = unique_user("b");
    ok(g.add_user(&bob, "bob-pw1", &[]));
    let work = unique_dir("smbwork");
    let secret = format!("PAYROLL{}X{}", std::process::id(), bob.len());
    let name = format!("NAME{}Y", std::process::id());
    fs::write(work.join("s.txt"), format!("{secret} salaries\n")).unwrap();
    smb_ok(g.smbclient(&bob, "bob-pw1", &format!("put s.txt {name}.txt"), &work));
    assert_eq!(
        g.smb_get(&bob, "bob-pw1", &format!("{name}.txt"), &work),
        format!("{secret} salaries\n").as_bytes()
    );
    // While mounted (the cache's WAL files and block rows hold it) ...
    let cache = g.root.join("cache");
    for needle in [&secret, &name] {
        let found = nobody_greps(&[&cache, &store_dir], needle);
        assert!(found.is_empty(), "nobody reads {needle} in: {found}");
    }
    let found = nobody_greps(&[&g.root], &secret);
    assert!(found.is_empty(), "nobody reads the content in: {found}");
    // ... and every file swiftgate made is root's alone.
    let mut open = Vec::new();
    let mut stack = vec![cache.clone(), store_dir.join("homes")];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
        if m.mode() & 0o077 != 0 {
            open.push(format!("{} {:o}", p.display(), m.mode() & 0o7777));
        }
    }
    assert!(open.is_empty(), "open to others:\n{}", open.join("\n"));
    let _ = fs::remove_dir_all(&work);
}

// ------------------------------------------------------- the typed API

use swiftgate::gateway::api::{
    ErrorKind, FsTarget, GatewayApi, GatewayApiExt, JobInfo, JobState, Request, Response, Secret,
    ShareSpec, UserAdd, UserQuery,
};
use swiftgate::gateway::control::ControlClient;

impl Gw {
    fn api(&self) -> ControlClient {
        ControlClient::new(&self.root.join("run/gw.sock"), Duration::from_secs(600))
    }

    fn wait_job(&self, j: JobInfo) -> JobInfo {
        let api = self.api();
        let mut j = j;
        let until = std::time::Instant::now() + Duration::from_secs(120);
        while j.state == JobState::Running {
            assert!(std::time::Instant::now() < until, "job stuck: {j:?}");
            std::thread::sleep(Duration::from_millis(100));
            j = api.job(j.id).unwrap();
        }
        j
    }

    fn share_conf(&self) -> String {
        fs::read_to_string(self.root.join("swiftgate-shares.conf")).unwrap_or_default()
    }
}

fn unique_share() -> String {
    format!("t{:06x}", rand_u32() & 0xffffff)
}

/// Every variant, by its wire name: the match is exhaustive, so a new
/// request cannot be added without this test asking it.
fn op_name(r: &Request) -> &'static str {
    match r {
        Request::Ping => "ping",
        Request::Connect { .. } => "connect",
        Request::Disconnect { .. } => "disconnect",
        Request::Overview => "overview",
        Request::Homes => "homes",
        Request::Users { .. } => "users",
        Request::User { .. } => "user",
        Request::UserAdd(_) => "user_add",
        Request::UserSetDisabled { .. } => "user_set_disabled",
        Request::UserRemove { .. } => "user_remove",
        Request::UserPasswd { .. } => "user_passwd",
        Request::Mount { .. } => "mount",
        Request::Unmount { .. } => "unmount",
        Request::Flush { .. } => "flush",
        Request::Fsck { .. } => "fsck",
        Request::HomeCommand { .. } => "home_command",
        Request::Shares => "shares",
        Request::ShareAdd(_) => "share_add",
        Request::ShareUpdate(_) => "share_update",
        Request::ShareRemove { .. } => "share_remove",
        Request::Cache => "cache",
        Request::CacheSetBudget { .. } => "cache_set_budget",
        Request::CacheEvict { .. } => "cache_evict",
        Request::Events { .. } => "events",
        Request::Jobs => "jobs",
        Request::Job { .. } => "job",
        Request::Metrics => "metrics",
        Request::StateBackup => "state_backup",
        Request::StateStatus => "state_status",
        Request::Snapshots { .. } => "snapshots",
        Request::SnapshotCreate { .. } => "snapshot_create",
        Request::SnapshotDelete { .. } => "snapshot_delete",
        Request::SnapshotRestore { .. } => "snapshot_restore",
        Request::QuotaSet { .. } => "quota_set",
        Request::RecyclePurge { .. } => "recycle_purge",
        Request::RecycleEmpty { .. } => "recycle_empty",
        Request::UserSetRecycle { .. } => "user_set_recycle",
    }
}

const ALL_OPS: usize = 37;

#[test]
fn every_request_is_answered_by_the_daemon_with_typed_errors() {
    let mut g = local_gw();
    let api = g.api();
    let mut asked = std::collections::BTreeSet::new();
    let mut call = |r: Request| -> Result<Response, swiftgate::gateway::api::ApiError> {
        asked.insert(op_name(&r));
        let res = api.call(r);
        if let Err(e) = &res {
            assert!(
                !e.message.to_lowercase().contains("not implemented"),
                "{e:?}"
            );
        }
        res
    };
    assert!(matches!(call(Request::Ping), Ok(Response::Pong { .. })));
    let u = unique_user("api");
    g.users.push(u.clone());
    // Typed errors name the field at fault.
    let e = call(Request::UserAdd(UserAdd {
        user: "../root".into(),
        password: Secret::new("pw"),
        credentials: None,
        adopt: false,
    }))
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Invalid, Some("user"))
    );
    let e = call(Request::UserAdd(UserAdd {
        user: u.clone(),
        password: Secret::new("pw\nsecond"),
        credentials: None,
        adopt: false,
    }))
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Invalid, Some("password"))
    );
    let m = call(Request::UserAdd(UserAdd {
        user: u.clone(),
        password: Secret::new("api-pw1"),
        credentials: None,
        adopt: false,
    }));
    assert!(matches!(m, Ok(Response::Done { .. })), "{m:?}");
    let e = call(Request::UserAdd(UserAdd {
        user: u.clone(),
        password: Secret::new("api-pw1"),
        credentials: None,
        adopt: false,
    }))
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Conflict, Some("user"))
    );
    let e = call(Request::User {
        user: "nobody-here".into(),
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::NotFound, Some("user"))
    );
    // The hook's requests: an unknown user is refused (and logged as an event).
    let e = call(Request::Connect {
        user: "nobody-here".into(),
        smbd: None,
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("user"));
    assert!(matches!(
        call(Request::Disconnect {
            user: "nobody-here".into(),
            smbd: None
        }),
        Ok(Response::Done { .. })
    ));
    assert!(matches!(
        call(Request::UserSetDisabled {
            user: u.clone(),
            disabled: true
        }),
        Ok(Response::Done { .. })
    ));
    let e = call(Request::Mount { user: u.clone() }).unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Conflict, Some("user"))
    );
    call(Request::UserSetDisabled {
        user: u.clone(),
        disabled: false,
    })
    .unwrap();
    assert!(matches!(
        call(Request::UserPasswd {
            user: u.clone(),
            password: Some(Secret::new("api-pw2")),
            credentials: None
        }),
        Ok(Response::Done { .. })
    ));
    // A session (as the hook opens it) keeps the home mounted throughout;
    // data written, then a flush job with progress.
    let t = call(Request::Connect {
        user: u.clone(),
        smbd: None,
    })
    .unwrap();
    assert!(matches!(t, Response::Connected { .. }), "{t:?}");
    assert!(is_mounted(&g.home(&u)));
    call(Request::Mount { user: u.clone() }).unwrap();
    let data = random_bytes(24 << 20, 5);
    fs::write(g.home(&u).join("big.bin"), &data).unwrap();
    let v = call(Request::HomeCommand {
        mountpoint: g.home(&u),
        command: swiftgate::fs::commands::MountCommand::Stat,
    })
    .unwrap();
    assert!(
        matches!(&v, Response::Value(v) if v["counts"]["file_bytes"] == 24 << 20),
        "{v:?}"
    );
    // Snapshots: taken, listed, restored over an overwrite, deleted; bad
    // names and paths refused with their field.
    let home = FsTarget::User(u.clone());
    let snap = match call(Request::SnapshotCreate {
        target: home.clone(),
    })
    .unwrap()
    {
        Response::Snapshot(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!((snap.files, snap.bytes), (1, 24 << 20), "{snap:?}");
    assert!(matches!(
        call(Request::Snapshots { target: home.clone() }),
        Ok(Response::Snapshots(l)) if l.snapshots == vec![snap.clone()]
    ));
    fs::write(g.home(&u).join("big.bin"), b"overwritten").unwrap();
    let r = call(Request::SnapshotRestore {
        target: home.clone(),
        name: snap.name.clone(),
        path: "big.bin".into(),
    });
    assert!(
        matches!(&r, Ok(Response::Done { message }) if message.contains("1 files")),
        "{r:?}"
    );
    assert!(fs::read(g.home(&u).join("big.bin")).unwrap() == data);
    for (req, kind, field) in [
        (
            Request::SnapshotDelete {
                target: home.clone(),
                name: "@GMT-2001.01.01-00.00.00".into(),
            },
            ErrorKind::NotFound,
            "name",
        ),
        (
            Request::SnapshotRestore {
                target: home.clone(),
                name: snap.name.clone(),
                path: "../../etc/passwd".into(),
            },
            ErrorKind::Invalid,
            "path",
        ),
        (
            Request::SnapshotRestore {
                target: home.clone(),
                name: snap.name.clone(),
                path: "not-there".into(),
            },
            ErrorKind::NotFound,
            "path",
        ),
        (
            Request::Snapshots {
                target: FsTarget::Share("nosuch".into()),
            },
            ErrorKind::NotFound,
            "name",
        ),
    ] {
        let e = call(req).unwrap_err();
        assert_eq!((e.kind, e.field.as_deref()), (kind, Some(field)), "{e:?}");
    }
    assert!(matches!(
        call(Request::SnapshotDelete { target: home.clone(), name: snap.name.clone() }),
        Ok(Response::Snapshot(s)) if s.name == snap.name
    ));
    // Listing, detail, overview, cache, metrics.
    let page = match call(Request::Users {
        query: UserQuery {
            search: u[2..6].to_uppercase(),
            offset: 0,
            limit: 10,
        },
    })
    .unwrap()
    {
        Response::Users(p) => p,
        other => panic!("{other:?}"),
    };
    let me = page
        .users
        .iter()
        .find(|x| x.name == u)
        .expect("found by search");
    assert!(me.mounted && me.usage.as_ref().unwrap().logical_bytes == 24 << 20);
    assert!(
        matches!(call(Request::User { user: u.clone() }), Ok(Response::User(d)) if d.home.is_some())
    );
    assert!(
        matches!(call(Request::Homes), Ok(Response::Homes(h)) if h.iter().any(|h| h.user == u))
    );
    let j = match call(Request::Flush { user: u.clone() }).unwrap() {
        Response::Job(j) => j,
        other => panic!("{other:?}"),
    };
    assert_eq!(j.kind, "flush");
    let j = g.wait_job(j);
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    assert!(j.total > 0 && j.done == j.total, "{j:?}");
    assert!(
        j.message.as_deref().unwrap_or("").contains("flushed"),
        "{j:?}"
    );
    let o = match call(Request::Overview).unwrap() {
        Response::Overview(o) => o,
        other => panic!("{other:?}"),
    };
    assert!(o.uploaded_bytes > 0, "{o:?}");
    assert_eq!(o.store.reachable, Some(true), "{:?}", o.store);
    assert!(
        matches!(call(Request::Cache), Ok(Response::Cache(c)) if c.homes.len() == 1 && c.disk.total_bytes > 0)
    );
    let e = call(Request::CacheSetBudget {
        size: 1 << 20,
        dirty_limit: None,
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Invalid, Some("size"))
    );
    let e = call(Request::CacheSetBudget {
        size: 1 << 30,
        dirty_limit: Some(2 << 30),
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("dirty_limit"));
    call(Request::CacheSetBudget {
        size: 1 << 30,
        dirty_limit: Some(256 << 20),
    })
    .unwrap();
    let c = api.cache().unwrap();
    assert_eq!((c.size, c.dirty_limit), (1 << 30, 256 << 20));
    assert_eq!(c.homes[0].stats.cache_size, 1 << 30, "rebalanced at once");
    assert!(matches!(
        call(Request::CacheEvict { user: None }),
        Ok(Response::Done { .. })
    ));
    let m = match call(Request::Metrics).unwrap() {
        Response::Metrics(m) => m,
        other => panic!("{other:?}"),
    };
    // No recovery key yet: the backup says how to make one; the status
    // keeps that error.
    let e = call(Request::StateBackup).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e:?}");
    assert!(e.message.contains("swiftgate recovery init"), "{e:?}");
    match call(Request::StateStatus).unwrap() {
        Response::StateStatus(s) => {
            assert!(
                s.url.ends_with("/state-store") && s.last_backup_unix.is_none(),
                "{s:?}"
            );
            assert!(s.last_error.is_some_and(|e| e.contains("recovery init")));
        }
        other => panic!("{other:?}"),
    }
    // Quotas: a known target; set on the mounted home at once.
    let q: swiftgate::gateway::api::Quota = "1G,1000".parse().unwrap();
    let e = call(Request::QuotaSet {
        target: FsTarget::User("nobody-here".into()),
        quota: q,
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::NotFound, Some("user"))
    );
    let e = call(Request::QuotaSet {
        target: FsTarget::Share("nosuchshare".into()),
        quota: q,
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::NotFound, Some("name"))
    );
    match call(Request::QuotaSet {
        target: FsTarget::User(u.clone()),
        quota: q,
    }) {
        Ok(Response::Done { message }) => assert!(message.contains("in force now"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(api.user(&u).unwrap().summary.quota, q);
    let put = m.store_ops.iter().find(|o| o.op == "put").unwrap();
    assert!(
        put.ok > 0 && put.bytes > 0 && *put.latency_buckets.last().unwrap() == put.ok + put.errors
    );
    // Fsck: refused while a session is open; the idle home is unmounted
    // for it and found clean.
    let e = call(Request::Fsck {
        user: u.clone(),
        verify_data: false,
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Conflict, Some("user"))
    );
    let e = call(Request::Unmount { user: u.clone() }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    call(Request::Disconnect {
        user: u.clone(),
        smbd: None,
    })
    .unwrap();
    call(Request::Unmount { user: u.clone() }).unwrap();
    assert!(!is_mounted(&g.home(&u)));
    let j = match call(Request::Fsck {
        user: u.clone(),
        verify_data: true,
    })
    .unwrap()
    {
        Response::Job(j) => j,
        other => panic!("{other:?}"),
    };
    let j = g.wait_job(j);
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    assert!(
        j.message.as_deref().unwrap().contains("fsck: clean"),
        "{j:?}"
    );
    // Shares, with hostile input refused with its field.
    let name = unique_share();
    g.shares.push(name.clone());
    for (bad_name, comment, field) in [
        ("global", "", "name"),
        ("a]b", "", "name"),
        ("x;y", "", "name"),
        ("<script>", "", "name"),
        (name.as_str(), "ok\n[evil]\npath = /", "comment"),
        (name.as_str(), "ends with \\", "comment"),
    ] {
        let e = call(Request::ShareAdd(ShareSpec {
            name: bad_name.into(),
            comment: comment.into(),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::Invalid, Some(field)),
            "{bad_name:?} {comment:?}: {e:?}"
        );
    }
    let e = call(Request::ShareAdd(ShareSpec {
        name: name.clone(),
        members: Some(vec!["nobody-here".into()]),
        ..Default::default()
    }))
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("members"));
    assert!(!g.share_conf().contains("evil"));
    let hostile = "<script>alert(1)</script> ; ] [x] %U";
    call(Request::ShareAdd(ShareSpec {
        name: name.clone(),
        comment: hostile.into(),
        members: Some(vec![u.clone()]),
        ..Default::default()
    }))
    .unwrap();
    call(Request::ShareUpdate(ShareSpec {
        name: name.clone(),
        comment: format!("{hostile}!"),
        ..Default::default()
    }))
    .unwrap();
    let shares = match call(Request::Shares).unwrap() {
        Response::Shares(s) => s,
        other => panic!("{other:?}"),
    };
    let sh = shares.iter().find(|s| s.spec.name == name).unwrap();
    assert!(sh.mounted && sh.members == vec![u.clone()], "{sh:?}");
    assert_eq!(sh.testparm.as_deref(), Some("ok"), "{sh:?}");
    // The comment stays one value on one line of the generated section.
    let conf = g.share_conf();
    let lines: Vec<&str> = conf.lines().filter(|l| l.contains("<script>")).collect();
    assert_eq!(
        lines,
        vec![format!("   comment = {hostile}!").as_str()],
        "{conf}"
    );
    assert!(matches!(
        call(Request::ShareRemove {
            name: name.clone(),
            purge: false
        }),
        Ok(Response::Done { .. })
    ));
    let j = match call(Request::ShareRemove {
        name: name.clone(),
        purge: true,
    })
    .unwrap()
    {
        Response::Job(j) => j,
        other => panic!("{other:?}"),
    };
    assert_eq!(g.wait_job(j).state, JobState::Succeeded);
    // Events and jobs keep the story.
    let ev = match call(Request::Events {
        user: None,
        limit: 500,
    })
    .unwrap()
    {
        Response::Events(e) => e,
        other => panic!("{other:?}"),
    };
    for want in [
        "connection refused",
        "user added",
        "home mounted",
        "flush finished",
        "fsck finished",
        "team share added",
    ] {
        assert!(
            ev.iter().any(|e| e.message.contains(want)),
            "no {want:?} in {ev:?}"
        );
    }
    assert!(matches!(call(Request::Jobs), Ok(Response::Jobs(j)) if j.len() >= 3));
    let e = call(Request::RecyclePurge {
        target: Some(swiftgate::gateway::api::FsTarget::User(
            "nobody-here".into(),
        )),
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Conflict, Some("target"))
    );
    let e = call(Request::RecycleEmpty {
        target: swiftgate::gateway::api::FsTarget::Share("nothere".into()),
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::NotFound, Some("target"))
    );
    let e = call(Request::UserSetRecycle {
        user: "nobody-here".into(),
        keep_days: Some(3),
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::NotFound, Some("user"))
    );
    let e = call(Request::UserSetRecycle {
        user: u.clone(),
        keep_days: Some(100_000),
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Invalid, Some("keep_days"))
    );
    let e = call(Request::Job { id: 999_999 }).unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::NotFound, Some("id"))
    );
    let j = match call(Request::UserRemove {
        user: u.clone(),
        purge: true,
    })
    .unwrap()
    {
        Response::Job(j) => j,
        other => panic!("{other:?}"),
    };
    assert_eq!(g.wait_job(j).state, JobState::Succeeded);
    assert_eq!(asked.len(), ALL_OPS, "asked only {asked:?}");
}

#[test]
fn team_share_for_a_group_end_to_end() {
    let mut g = local_gw();
    let (a, b, c, r) = (
        unique_user("ta"),
        unique_user("tb"),
        unique_user("tc"),
        unique_user("tr"),
    );
    for u in [&a, &b, &c, &r] {
        ok(g.add_user(u, "pw-team1", &[]));
    }
    let name = unique_share();
    g.shares.push(name.clone());
    let o = ok(g.sg(
        &[
            "share",
            "add",
            &name,
            "--comment",
            "Team files",
            "--member",
            &a,
            "--member",
            &b,
            "--read-only",
            &r,
        ],
        "",
    ));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("mounted") && out.contains("reloaded"), "{out}");
    let mp = g.root.join("shares").join(&name);
    assert!(is_mounted(&mp));
    let m = fs::metadata(&mp).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o2770, "share root mode");
    let listed = String::from_utf8_lossy(&ok(g.sg(&["share", "list"], "")).stdout).to_string();
    assert!(listed.contains(&name), "{listed}");
    let shown =
        String::from_utf8_lossy(&ok(g.sg(&["share", "show", &name], "")).stdout).to_string();
    assert!(
        shown.contains(&format!("valid users = @share-{name}"))
            && shown.contains("testparm:    ok"),
        "{shown}"
    );
    let work = unique_dir("smbwork");
    fs::write(work.join("plan.txt"), b"from a").unwrap();
    fs::write(work.join("more.txt"), b"from b").unwrap();
    smb_ok(g.smbclient_on(
        &name,
        &a,
        "pw-team1",
        "mkdir docs; put plan.txt docs/plan.txt",
        &work,
    ));
    // The other member reads it and writes next to it, in a's directory.
    smb_ok(g.smbclient_on(
        &name,
        &b,
        "pw-team1",
        "get docs/plan.txt got.txt; put more.txt docs/more.txt",
        &work,
    ));
    assert_eq!(fs::read(work.join("got.txt")).unwrap(), b"from a");
    // The read-only member reads, but cannot write.
    smb_ok(g.smbclient_on(&name, &r, "pw-team1", "get docs/more.txt ro.txt", &work));
    assert_eq!(fs::read(work.join("ro.txt")).unwrap(), b"from b");
    let o = g.smbclient_on(&name, &r, "pw-team1", "put plan.txt ro-write.txt", &work);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("NT_STATUS_ACCESS_DENIED")
            || text.contains("NT_STATUS_MEDIA_WRITE_PROTECTED"),
        "{text}"
    );
    assert!(!mp.join("ro-write.txt").exists());
    // A non-member is refused.
    let o = g.smbclient_on(&name, &c, "pw-team1", "ls", &work);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success() && text.contains("NT_STATUS_ACCESS_DENIED"),
        "{text}"
    );
    // Files belong to the group, usable by every member.
    let f = fs::metadata(mp.join("docs/plan.txt")).unwrap();
    let gid = nix::unistd::Group::from_name(&format!("share-{name}"))
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!((f.gid(), f.mode() & 0o060), (gid, 0o060));
    // The share survives a daemon restart.
    g.stop_daemon(libc::SIGTERM);
    assert!(!is_mounted(&mp));
    g.start_daemon();
    wait_until(
        30,
        || is_mounted(&mp),
        || format!("share not mounted again\n{}", g.daemon_log()),
    );
    smb_ok(g.smbclient_on(&name, &b, "pw-team1", "get docs/plan.txt again.txt", &work));
    assert_eq!(fs::read(work.join("again.txt")).unwrap(), b"from a");
    // Removal takes the section out of Samba.
    ok(g.sg(&["share", "remove", &name, "--purge"], ""));
    assert!(!is_mounted(&mp));
    assert!(!g.share_conf().contains(&format!("[{name}]")));
    let o = Command::new("smbclient")
        .args([
            "-L",
            "//127.0.0.1",
            "-p",
            &g.port.to_string(),
            "-U",
            &format!("{a}%pw-team1"),
        ])
        .args(["--option=client min protocol=SMB2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success() && !text.contains(&name), "{text}");
    let _ = fs::remove_dir_all(&work);
}

/// With the daemon running, the CLI's change is made by the daemon: a CLI
/// given another user map path (same socket) never touches it.
#[test]
fn cli_changes_go_through_the_daemon_or_the_state_lock() {
    let mut g = local_gw();
    let other = g.root.join("cli-copy.toml");
    let text = fs::read_to_string(&g.config)
        .unwrap()
        .replace("etc/users.json", "etc/cli-users.json");
    fs::write(&other, text).unwrap();
    let u = unique_user("cl");
    g.users.push(u.clone());
    let mut c = Command::new(BIN);
    let o = c
        .args(["user", "add", &u, "--config"])
        .arg(&other)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = {
        let mut o = o;
        o.stdin.take().unwrap().write_all(b"pw-cli1\n").unwrap();
        o.wait_with_output().unwrap()
    };
    ok(o);
    assert!(
        !g.root.join("etc/cli-users.json").exists(),
        "the CLI wrote a map itself"
    );
    let map = fs::read_to_string(g.root.join("etc/users.json")).unwrap();
    assert!(map.contains(&u), "the daemon's map lacks the user");
    let ev = g.api().events(Some(&u), 10).unwrap();
    assert!(
        ev.iter().any(|e| e.message.contains("user added")),
        "{ev:?}"
    );
    // Without the daemon: two CLI commands at once both land.
    g.stop_daemon(libc::SIGTERM);
    let (x, y) = (unique_user("cx"), unique_user("cy"));
    g.users.push(x.clone());
    g.users.push(y.clone());
    let gr = &g;
    std::thread::scope(|s| {
        let tx = s.spawn(|| gr.sg(&["user", "add", &x], "pw-x1\n"));
        let ty = s.spawn(|| gr.sg(&["user", "add", &y], "pw-y1\n"));
        ok(tx.join().unwrap());
        ok(ty.join().unwrap());
    });
    let list = String::from_utf8_lossy(&ok(g.sg(&["user", "list"], "")).stdout).to_string();
    assert!(
        list.contains(&x) && list.contains(&y) && list.contains(&u),
        "{list}"
    );
    // A lock holder that is not the daemon makes the daemon wait, and a CLI
    // command meanwhile says who holds it (here: this test).
    let lock = swiftgate::gateway::lock::StateLock::acquire(
        &g.root.join("etc/users.json.lock"),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(
        fs::metadata(g.root.join("etc/users.json.lock"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    drop(lock);
    g.start_daemon();
    ok(g.sg(&["user", "disable", &x], ""));
    let ev = g.api().events(Some(&x), 10).unwrap();
    assert!(ev.iter().any(|e| e.message.contains("disabled")), "{ev:?}");
}
