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
    let c = dir.join("gateway.toml");
    let etc = dir.join("etc");
    let cache = dir.join("cache");
    let smb = dir.join("smb.conf");
    let store = format!("local://{}/homes/{{user}}", dir.display());
    let mut args = vec![
        "setup",
        "--no-start",
        "--config",
        c.to_str().unwrap(),
        "--etc-dir",
        etc.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--cache-size",
        "1G",
        "--smb-conf",
        smb.to_str().unwrap(),
        "--admin-group",
        group,
    ];
    if !extra.contains(&"--openrc") {
        args.extend(["--store-url", &store]);
    }
    args.extend(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_env(&refs, &[("OS_AUTH_URL", ""), ("OS_CLOUD", "")])
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
    fs::write(dir.join("smb.conf"), "[homes]\n   browseable = no\n").unwrap();
    let o = setup(&dir, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("[homes]"), "{}", stderr(&o));
    assert!(!dir.join("gateway.toml").exists() && !dir.join("etc").exists());
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
