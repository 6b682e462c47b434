//! What an operator meets on the command line: error lines, log files,
//! defaults that fit together.

mod common;

use common::*;
use std::process::{Command, Output};

/// The error line of a failed command (the last `swiftgate: ` line).
#[track_caller]
fn error_line(o: &Output) -> String {
    assert!(!o.status.success(), "the command succeeded");
    let e = stderr(o);
    e.lines()
        .rfind(|l| l.starts_with("swiftgate: ") && !l.starts_with("swiftgate: warning"))
        .unwrap_or_else(|| panic!("no error line in: {e}"))
        .to_string()
}

/// No part of the message (split where causes are joined) comes twice.
#[track_caller]
fn assert_said_once(line: &str, expect: &str) {
    assert!(line.contains(expect), "{expect:?} not in: {line}");
    let parts: Vec<&str> = line
        .trim_start_matches("swiftgate: ")
        .split(": ")
        .map(str::trim)
        .filter(|p| p.len() > 3)
        .collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[..i].contains(p), "{p:?} said twice in: {line}");
    }
}

#[test]
fn errors_name_their_cause_once() {
    let t = TestFs::new(&["--passphrase", "the-right-one"]);
    let bad = t.root.join("bad-pass");
    std::fs::write(&bad, "not-it\n").unwrap();
    let bad = bad.display().to_string();
    // Wrong passphrase: mount and fsck.
    let o = t.try_mount_at(&t.mp, &t.cache, &["--passphrase-file", &bad]);
    assert_said_once(&error_line(&o), "wrong passphrase");
    let o = run(&["fsck", &t.store, "--passphrase-file", &bad]);
    assert_said_once(&error_line(&o), "wrong passphrase");
    // No passphrase for an encrypted filesystem.
    let (mp, cache) = (t.mp.display().to_string(), t.cache.display().to_string());
    let o = run(&["mount", &t.store, &mp, "--cache-dir", &cache]);
    assert_said_once(&error_line(&o), "encrypted");
    assert!(!is_mounted(&t.mp));
    // A missing config file.
    let missing = t.root.join("no-such.toml").display().to_string();
    for cmd in ["status", "serve"] {
        let o = run(&[cmd, "--config", &missing]);
        let line = error_line(&o);
        assert_said_once(&line, "no-such.toml");
        assert_said_once(&line, "No such file");
    }
}

/// Log files hold plain text: colour codes only on a terminal. The mount
/// is started from a terminal (under `script`) and goes to the background.
#[test]
fn log_files_have_no_colour_codes() {
    let t = TestFs::new(&[]);
    let cmd = format!(
        "SWIFTGATE_LOG=swiftgate=info {BIN} mount {} {} --cache-dir {}",
        t.store,
        t.mp.display(),
        t.cache.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(is_mounted(&t.mp));
    t.umount();
    let log = std::fs::read(t.cache.join("mount.log")).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("mounted"), "nothing logged: {text}");
    assert!(!log.contains(&0x1b), "colour codes in mount.log: {text:?}");
}

#[test]
fn the_default_dirty_limit_follows_a_small_cache() {
    let t = TestFs::new(&[]);
    t.mount(&["--cache-size", "1G"]);
    let s = t.stat();
    assert_eq!(s["cache"]["dirty_limit"], 512u64 << 20, "{s}");
    t.umount();
    // An explicit one larger than the cache is still an error.
    let o = t.try_mount_at(
        &t.mp,
        &t.cache,
        &["--cache-size", "1G", "--dirty-limit", "2G"],
    );
    assert_said_once(
        &error_line(&o),
        "--dirty-limit must not exceed --cache-size",
    );
    assert!(!is_mounted(&t.mp));
}

/// The standalone mount is a general filesystem: device nodes and set-uid
/// bits take effect (a gateway home's do not: see tests/gateway.rs), and
/// `--allow-other` lets other users in.
#[test]
fn standalone_mount_options() {
    let t = TestFs::new_mounted();
    let m = mount_entry(&t.mp).expect("mounted");
    assert!(m.fstype.starts_with("fuse"), "{m:?}");
    if !swift_mode() {
        assert_eq!(m.source, format!("swiftgate:{}", t.store), "{m:?}");
    }
    assert!(m.options.iter().any(|o| o == "noatime"), "{m:?}");
    assert!(
        !m.options.iter().any(|o| o == "nosuid" || o == "nodev"),
        "{m:?}"
    );
    for o in ["default_permissions", "allow_other"] {
        assert!(m.super_options.iter().any(|x| x == o), "{o}: {m:?}");
    }
    t.umount();
}
