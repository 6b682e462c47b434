//! `swiftgate doctor` against a real gateway (daemon + smbd on a private
//! port, console on its own port) and against broken setups: each must
//! fail the right check with a fix line.

mod common;

use common::gw::*;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

fn doctor(config: &Path, env: &[(&str, &str)]) -> (Output, Vec<serde_json::Value>) {
    let c = config.to_str().unwrap();
    let o = run_env(&["doctor", "--config", c, "--json"], env);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON list ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        )
    });
    for c in &v {
        assert!(
            c["check"].is_string()
                && ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap_or(""))
                && c["message"].is_string()
                && (c["fix"].is_null() || c["fix"].is_string()),
            "malformed check {c}"
        );
    }
    (o, v)
}

fn find<'a>(v: &'a [serde_json::Value], check: &str) -> &'a serde_json::Value {
    v.iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no check {check} in {v:?}"))
}

fn not_ok(v: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    v.iter().filter(|c| c["status"] != "ok").collect()
}

#[track_caller]
fn assert_fails(o: &Output, v: &[serde_json::Value], check: &str, fix_has: &str) {
    assert_eq!(o.status.code(), Some(1), "{v:?}");
    let c = find(v, check);
    assert_eq!(c["status"], "fail", "{c}");
    let fix = c["fix"].as_str().unwrap_or("");
    assert!(
        fix.contains(fix_has),
        "fix of {check} lacks {fix_has:?}: {c}"
    );
}

fn console_gw() -> Gw {
    let store = format!("local://{}/homes/{{user}}", unique_dir("drstore").display());
    let listen = format!("listen = \"127.0.0.1:{}\"", free_port());
    Gw::with_console(&store, "", &[], "service", &listen)
}

#[test]
fn a_working_gateway_passes_every_check() {
    let g = console_gw();
    let (o, v) = doctor(&g.config, &[]);
    assert!(not_ok(&v).is_empty(), "not ok: {:?}", not_ok(&v));
    assert_eq!(o.status.code(), Some(0));
    for check in [
        "config",
        "fuse-device",
        "fusermount3",
        "fuse-module",
        "smbd",
        "smb.conf",
        "smb.conf-include",
        "recycle",
        "smb-port",
        "store",
        "cache",
        "user-map-key",
        "daemon",
        "console",
    ] {
        find(&v, check);
    }
    // The text form: one line per check, a summary.
    let o = ok(run(&["doctor", "--config", g.config.to_str().unwrap()]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("ok    daemon: answers on"), "{text}");
    assert!(
        text.contains(&format!("port {} is listening", g.port)),
        "{text}"
    );
    assert!(text.trim_end().ends_with("checks passed"), "{text}");
}

#[test]
fn broken_setups_fail_the_right_check_with_a_fix() {
    let mut g = console_gw();
    let cache = g.root.join("cache");

    // A cache others can enter.
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o755)).unwrap();
    let (o, v) = doctor(&g.config, &[]);
    assert_fails(&o, &v, "cache", &format!("chmod 700 {}", cache.display()));
    let text =
        String::from_utf8_lossy(&run(&["doctor", "--config", g.config.to_str().unwrap()]).stdout)
            .into_owned();
    assert!(
        text.contains("FAIL  cache: ")
            && text.contains(&format!(
                "      fix: chown root:root {c} && chmod 700 {c}",
                c = cache.display()
            )),
        "{text}"
    );
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();

    // smb.conf without the team shares' include.
    let conf = fs::read_to_string(&g.smb_conf).unwrap();
    let without: String = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with("include ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(conf, without);
    fs::write(&g.smb_conf, &without).unwrap();
    let (o, v) = doctor(&g.config, &[]);
    assert_fails(&o, &v, "smb.conf-include", "include = ");
    assert_eq!(find(&v, "smb.conf")["status"], "ok");
    // The recycle bin on in the config, not in smb.conf: said, with the fix.
    fs::write(
        &g.smb_conf,
        conf.replace(
            "vfs objects = catia recycle fruit",
            "vfs objects = catia fruit",
        ),
    )
    .unwrap();
    let (_, v) = doctor(&g.config, &[]);
    let c = find(&v, "recycle");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("swiftgate samba-config"),
        "{c}"
    );
    fs::write(&g.smb_conf, &without).unwrap();
    assert_eq!(find(&doctor(&g.config, &[]).1, "recycle")["status"], "ok");
    // The home share gone too: the share check fails.
    let no_home = without.replace("[home]", "[other]");
    fs::write(&g.smb_conf, &no_home).unwrap();
    let (o, v) = doctor(&g.config, &[]);
    assert_fails(&o, &v, "smb.conf", "swiftgate samba-config");
    fs::write(&g.smb_conf, &conf).unwrap();

    // A user-map key others can read.
    let key = g.root.join("etc/secret.key");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    fs::write(&key, [7u8; 32]).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let (o, v) = doctor(&g.config, &[]);
    assert_fails(&o, &v, "user-map-key", "chmod 600");
    fs::remove_file(&key).unwrap();
    let (o, v) = doctor(&g.config, &[]);
    assert!(not_ok(&v).is_empty(), "after repairs: {:?}", not_ok(&v));
    assert_eq!(o.status.code(), Some(0));

    // The daemon stopped: the daemon and its console fail.
    g.stop_daemon(libc::SIGTERM);
    let (o, v) = doctor(&g.config, &[]);
    assert_fails(&o, &v, "daemon", "swiftgate");
    assert_eq!(find(&v, "console")["status"], "fail");
    // smbd itself is still fine.
    assert_eq!(find(&v, "smbd")["status"], "ok");
    g.start_daemon();
}

fn swift_config(
    dir: &Path,
    auth_url: &str,
    user: &str,
    password: &str,
    project: &str,
) -> std::path::PathBuf {
    let pw = dir.join("swift-password");
    fs::write(&pw, format!("{password}\n")).unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("gateway.toml");
    fs::write(
        &config,
        format!(
            r#"[store]
url = "swift://sgdoctor-{{user}}"
[store.swift]
auth_url = "{auth_url}"
username = "{user}"
password_file = "{pw}"
project_name = "{project}"
user_domain_name = "Default"
project_domain_name = "Default"
region_name = "tyo1"
[cache]
dir = "{d}/cache"
[users]
db = "{d}/users.json"
key_file = "{d}/secret.key"
[control]
socket = "{d}/gw.sock"
[console]
enabled = false
"#,
            pw = pw.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    config
}

/// No OS_* from the test's environment may stand in for the config's.
const NO_ENV: [(&str, &str); 3] = [("OS_AUTH_URL", ""), ("OS_CLOUD", ""), ("ST_AUTH", "")];

#[test]
fn an_unreachable_store_fails_the_store_check() {
    let dir = unique_dir("drswift");
    let closed = free_port(); // bound and released: nothing listens there
    let config = swift_config(
        &dir,
        &format!("http://127.0.0.1:{closed}/v3"),
        "u",
        "p",
        "proj",
    );
    let started = std::time::Instant::now();
    let (o, v) = doctor(&config, &NO_ENV);
    assert_fails(&o, &v, "store", "reaches it");
    let msg = find(&v, "store")["message"].as_str().unwrap().to_string();
    assert!(msg.contains(&format!("127.0.0.1:{closed}")), "{msg}");
    assert!(!msg.contains("\"p\""), "the password in a message: {msg}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "doctor took {:?}",
        started.elapsed()
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn wrong_swift_credentials_fail_and_right_ones_pass_with_the_clock() {
    let Ok(auth) = std::env::var("SWIFT_AIO_AUTH_URL") else {
        assert!(
            std::env::var("SWIFTGATE_REQUIRE_SWIFT").as_deref() != Ok("1"),
            "no Swift fixture: run `bash tests/swift/start DIR && . DIR/env` first"
        );
        eprintln!("skipped: no Swift fixture in the environment (tests/swift/start)");
        return;
    };
    let v_ = |k: &str| std::env::var(k).unwrap();
    let dir = unique_dir("drswift");
    let config = swift_config(
        &dir,
        &auth,
        &v_("SWIFT_AIO_ALICE_USERNAME"),
        "not-her-password",
        &v_("SWIFT_AIO_ALICE_PROJECT_NAME"),
    );
    let (o, v) = doctor(&config, &NO_ENV);
    assert_fails(&o, &v, "store", "correct the credentials");
    let msg = find(&v, "store")["message"].as_str().unwrap().to_string();
    assert!(msg.contains("401") && msg.contains("alice"), "{msg}");
    assert!(!msg.contains("not-her-password"), "{msg}");

    let config = swift_config(
        &dir,
        &auth,
        &v_("SWIFT_AIO_ALICE_USERNAME"),
        &v_("SWIFT_AIO_ALICE_PASSWORD"),
        &v_("SWIFT_AIO_ALICE_PROJECT_NAME"),
    );
    let (_, v) = doctor(&config, &NO_ENV);
    assert_eq!(find(&v, "store")["status"], "ok", "{v:?}");
    let clock = find(&v, "clock");
    assert_eq!(clock["status"], "ok", "{clock}");
    assert!(
        clock["message"].as_str().unwrap().contains("within"),
        "{clock}"
    );
    let _ = fs::remove_dir_all(&dir);
}
