//! Disaster recovery: a gateway rebuilt from its store and the recovery
//! key alone (real daemon, real smbd, real Unix and Samba accounts).

mod common;

use common::gw::*;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

/// A system command (not swiftgate).
fn sys(args: &[&str]) -> std::process::Output {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap()
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn uid_of(u: &str) -> Option<u32> {
    nix::unistd::User::from_name(u)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

#[test]
fn a_destroyed_gateway_comes_back_from_the_store_with_the_recovery_key() {
    let store = format!("local://{}/homes/{{user}}", unique_dir("rcstore").display());
    // The service identity's password file travels with the state too.
    let secrets = unique_dir("rcsecret");
    let pwfile = secrets.join("keystone-password");
    fs::write(&pwfile, "service-pw").unwrap();
    let mut g = Gw::new(
        &store,
        &format!("[store.swift]\npassword_file = \"{}\"\n", pwfile.display()),
        &[],
        "service",
    );
    let (alice, bob) = (unique_user("ra"), unique_user("rb"));
    ok(g.add_user(&alice, "alice-old-pw", &[]));
    ok(g.add_user(&bob, "bob-old-pw", &[]));
    let share = format!("t{:06x}", rand_u32() & 0xffffff);
    g.shares.push(share.clone());
    ok(g.sg(
        &["share", "add", &share, "--member", &alice, "--member", &bob],
        "",
    ));
    let work = unique_dir("rcwork");
    fs::write(work.join("a.txt"), b"alice's file").unwrap();
    fs::write(work.join("b.txt"), b"bob's file").unwrap();
    fs::write(work.join("t.txt"), b"team file").unwrap();
    smb_ok(g.smbclient(&alice, "alice-old-pw", "put a.txt a.txt", &work));
    smb_ok(g.smbclient(&bob, "bob-old-pw", "put b.txt b.txt", &work));
    smb_ok(g.smbclient_on(&share, &alice, "alice-old-pw", "put t.txt t.txt", &work));
    // Snapshots live in the store with the rest: they come back too.
    let snap_of = |args: &[&str]| -> String {
        let o = ok(g.sg(args, ""));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.split_whitespace()
            .find(|w| w.starts_with("@GMT-"))
            .unwrap_or_else(|| panic!("{text}"))
            .to_string()
    };
    let home_snap = snap_of(&["snapshot", "create", "--user", &alice]);
    let share_snap = snap_of(&["snapshot", "create", "--share", &share]);

    // The key: printed once, root-only on disk.
    let o = ok(g.sg(&["recovery", "init"], ""));
    let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!((key.len(), key.matches('-').count()), (39, 7), "{key}");
    let kf = g.root.join("etc/recovery.key");
    assert_eq!(
        fs::metadata(&kf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!g.daemon_log().contains(&key), "the key is in the log");
    let again = ok(g.sg(&["recovery", "show-key"], ""));
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), key);
    let e = g.sg(&["recovery", "init"], "");
    assert!(
        !e.status.success() && out(&e).contains("show-key"),
        "{}",
        out(&e)
    );

    // init made a backup; a change (a new API token) makes another by
    // itself, within the daemon's check interval.
    let state = g.root.join("state-store");
    let obj = find(&state, "gateway-state.sgs").expect("no backup after init");
    let first = fs::read(&obj).unwrap();
    assert!(!first.windows(12).any(|w| w == b"alice-old-pw"));
    ok(g.sg(&["token", "create", "ci"], ""));
    wait_until(
        30,
        || fs::read(&obj).is_ok_and(|b| b != first),
        || "no backup after a change".into(),
    );
    let st = ok(g.sg(&["recovery", "status"], ""));
    assert!(out(&st).contains("last backup:") && !out(&st).contains("none yet"));
    ok(g.sg(&["recovery", "backup"], ""));
    let uids = (uid_of(&alice).unwrap(), uid_of(&bob).unwrap());

    // Destroy the gateway: daemon and smbd gone (homes flushed to the
    // store), accounts, groups, Samba passdb, config, user map and its
    // key, share list, tokens, recovery key, cache.
    if let Some(mut s) = g.smbd.take() {
        let _ = s.kill();
        let _ = s.wait();
    }
    g.stop_daemon(libc::SIGTERM);
    for u in [&alice, &bob] {
        ok(sys(&["userdel", u.as_str()]));
        let _ = sys(&["groupdel", u.as_str()]);
    }
    ok(sys(&["groupdel", &format!("share-{share}")]));
    let passdb = find(&g.root.join("samba"), "passdb.tdb").expect("passdb.tdb");
    fs::remove_file(&passdb).unwrap();
    // A new machine has a new Samba domain SID, too.
    let _ = fs::remove_file(passdb.with_file_name("secrets.tdb"));
    for f in [
        "gateway.toml",
        "etc/users.json",
        "etc/secret.key",
        "etc/shares.json",
        "etc/api-tokens.json",
        "etc/recovery.key",
        "swiftgate-shares.conf",
    ] {
        fs::remove_file(g.root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    fs::remove_dir_all(g.root.join("cache")).unwrap();
    fs::remove_file(&pwfile).unwrap();
    // The new machine's smb.conf: its own [global] only (the test's port
    // and directories), no home share: `setup --restore` adds that.
    let old_smb = fs::read_to_string(&g.smb_conf).unwrap();
    let mut fresh = String::from("[global]\n");
    for l in old_smb.lines() {
        let t = l.trim();
        if [
            "smb ports",
            "interfaces",
            "bind interfaces",
            "disable netbios",
            "private dir",
            "lock directory",
            "state directory",
            "cache directory",
            "pid directory",
            "ncalrpc dir",
            "log file",
            "log level",
        ]
        .iter()
        .any(|k| t.starts_with(k))
        {
            fresh.push_str(&format!("   {t}\n"));
        }
    }
    fs::write(&g.smb_conf, &fresh).unwrap();
    // The old gateway died holding alice's lease (a live pid of its host,
    // expired): the restored gateway takes it over. Bob's is held by some
    // other host: left alone.
    let homes = PathBuf::from(store.trim_start_matches("local://").replace("/{user}", ""));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lease = |host: &str| {
        format!(
            r#"{{"host":"{host}","pid":1,"mount_id":"0011223344556677","acquired_unix":{},"expires_unix":{}}}"#,
            t - 300,
            t - 200
        )
    };
    let myhost = nix::unistd::gethostname().unwrap().into_string().unwrap();
    fs::write(homes.join(&alice).join("lease"), lease(&myhost)).unwrap();
    fs::write(homes.join(&bob).join("lease"), lease("elsewhere")).unwrap();
    let from = format!("local://{}", state.display());
    let restore = |g: &Gw, from: &str, key: &str| {
        g.sg(
            &["recovery", "restore", "--from", from],
            &format!("{key}\n"),
        )
    };

    // A wrong key: a clear error, nothing written.
    let o = restore(&g, &from, "0123-4567-89AB-CDEF-0123-4567-89AB-CDEF");
    assert!(!o.status.success());
    assert!(out(&o).contains("does not open"), "{}", out(&o));
    assert!(!g.config.exists() && uid_of(&alice).is_none());
    // Not a key at all: said so, and not echoed.
    let o = restore(&g, &from, "hunter2");
    assert!(!o.status.success() && out(&o).contains("not a recovery key"));
    assert!(!out(&o).contains("hunter2"));
    // A damaged object: a clear error, nothing written.
    let bad = unique_dir("rcbad");
    ok(sys(&[
        "cp",
        "-a",
        state.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]));
    let bad_obj = find(&bad, "gateway-state.sgs").unwrap();
    let mut b = fs::read(&bad_obj).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    fs::write(&bad_obj, &b).unwrap();
    let o = restore(&g, &format!("local://{}/state-store", bad.display()), &key);
    assert!(!o.status.success());
    assert!(out(&o).contains("damaged"), "{}", out(&o));
    assert!(!g.config.exists() && uid_of(&alice).is_none());
    let _ = fs::remove_dir_all(&bad);
    // Someone else's account under a user's name is never taken over.
    ok(sys(&[
        "useradd",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        &bob,
    ]));
    let o = restore(&g, &from, &key.to_lowercase());
    assert!(!o.status.success());
    assert!(
        out(&o).contains(&bob) && out(&o).contains("never taken over"),
        "{}",
        out(&o)
    );
    assert!(!g.config.exists() && uid_of(&alice).is_none());
    ok(sys(&["userdel", &bob]));
    let _ = sys(&["groupdel", &bob]);

    // A new VM has the package's commented default config: no gateway's,
    // so the restore replaces it.
    fs::write(&g.config, swiftgate::gateway::config::PACKAGED_DEFAULT).unwrap();
    // The restore (through setup, which also puts the home share into
    // smb.conf), key typed in any spelling.
    let o = g.sg(
        &["setup", "--restore", &from, "--no-start"],
        &format!("{}\n", key.replace('-', " ").to_lowercase()),
    );
    let report = out(&o);
    assert!(o.status.success(), "{report}");
    assert!(
        report.contains("Samba passwords of 2 users")
            && report.contains(&format!("group share-{share}")),
        "{report}"
    );
    // Same uids, unless another account took one meanwhile (this machine
    // is shared): then a new one, said so, and the user map follows.
    let map = fs::read_to_string(g.root.join("etc/users.json")).unwrap();
    for (u, old) in [(&alice, uids.0), (&bob, uids.1)] {
        let now = uid_of(u).unwrap();
        if now == old {
            assert!(
                report.contains(&format!("account {u} (uid {old})")),
                "{report}"
            );
        } else {
            assert!(
                report.contains(&format!("account {u} with uid {now} (uid {old} was taken)")),
                "{report}"
            );
            assert!(map.contains(&format!("\"uid\": {now}")), "{map}");
        }
    }
    assert_eq!(fs::read_to_string(&kf).unwrap().trim(), key);
    assert_eq!(fs::read_to_string(&pwfile).unwrap(), "service-pw");
    assert_eq!(
        fs::metadata(&pwfile).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for f in [
        "gateway.toml",
        "etc/users.json",
        "etc/secret.key",
        "etc/recovery.key",
    ] {
        let m = fs::metadata(g.root.join(f)).unwrap().permissions().mode();
        assert_eq!(m & 0o777, 0o600, "{f}");
    }
    let smb = fs::read_to_string(&g.smb_conf).unwrap();
    assert!(
        smb.starts_with(&fresh) && smb.contains("# BEGIN swiftgate"),
        "{smb}"
    );
    // A second restore changes nothing and refuses nothing.
    let m0 = fs::metadata(&g.smb_conf).unwrap().modified().unwrap();
    let o = g.sg(
        &["setup", "--restore", &from, "--no-start"],
        &format!("{key}\n"),
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(fs::metadata(&g.smb_conf).unwrap().modified().unwrap(), m0);

    // Back in service: old passwords, old files, the team share.
    g.start_daemon();
    g.start_smbd();
    assert_eq!(
        g.smb_get(&alice, "alice-old-pw", "a.txt", &work),
        b"alice's file"
    );
    let o = g.smbclient(&bob, "bob-old-pw", "ls", &work);
    assert!(!o.status.success(), "bob's foreign lease was taken over");
    assert!(g.daemon_log().contains("elsewhere"), "{}", g.daemon_log());
    fs::remove_file(homes.join(&bob).join("lease")).unwrap();
    assert_eq!(g.smb_get(&bob, "bob-old-pw", "b.txt", &work), b"bob's file");
    let o = g.smbclient(&alice, "bob-old-pw", "ls", &work);
    assert!(!o.status.success(), "a wrong password was accepted");
    smb_ok(g.smbclient_on(&share, &bob, "bob-old-pw", "get t.txt t2.txt", &work));
    assert_eq!(fs::read(work.join("t2.txt")).unwrap(), b"team file");
    // The snapshots too, as Previous Versions.
    smb_ok(g.smbclient(
        &alice,
        "alice-old-pw",
        &format!(r#"get "{home_snap}\a.txt" a-old.txt"#),
        &work,
    ));
    assert_eq!(fs::read(work.join("a-old.txt")).unwrap(), b"alice's file");
    smb_ok(g.smbclient_on(
        &share,
        &bob,
        "bob-old-pw",
        &format!(r#"get "{share_snap}\t.txt" t-old.txt"#),
        &work,
    ));
    assert_eq!(fs::read(work.join("t-old.txt")).unwrap(), b"team file");
    let tokens = String::from_utf8_lossy(&ok(g.sg(&["token", "list"], "")).stdout).to_string();
    assert!(tokens.contains("ci"), "{tokens}");
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(&secrets);
}
