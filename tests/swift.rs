//! The Swift store against a real Swift + Keystone on loopback
//! (`bash tests/swift/start DIR; . DIR/env`): every way of authenticating,
//! token expiry while mounted, and the errors a user sees.
//!
//! Without the fixture's environment these tests say so and pass, unless
//! SWIFTGATE_REQUIRE_SWIFT=1 (set by tests/run-all.sh), where they fail.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The fixture's variables, or None (test skipped) when it is not running.
fn fixture() -> Option<()> {
    if std::env::var_os("SWIFT_AIO_STATE_DIR").is_some() {
        return Some(());
    }
    if std::env::var("SWIFTGATE_REQUIRE_SWIFT").as_deref() == Ok("1") {
        panic!("no Swift fixture: run `bash tests/swift/start DIR && . DIR/env` first");
    }
    eprintln!(
        "skipped: no Swift fixture in the environment (bash tests/swift/start DIR; . DIR/env)"
    );
    None
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("fixture variable {k} is not set"))
}

/// Run swiftgate with no OS_*/ST_* from our environment, only `env`.
fn sg(args: &[&str], env: &[(&str, String)], cwd: Option<&Path>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") || k.starts_with("ST_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    c.output().expect("run swiftgate")
}

fn keystone_env(user: &str) -> Vec<(&'static str, String)> {
    let p = |k: &str| var(&format!("SWIFT_AIO_{user}{k}"));
    vec![
        ("OS_AUTH_URL", var("SWIFT_AIO_AUTH_URL")),
        ("OS_USERNAME", p("USERNAME")),
        ("OS_PASSWORD", p("PASSWORD")),
        ("OS_PROJECT_NAME", p("PROJECT_NAME")),
        ("OS_USER_DOMAIN_NAME", "Default".into()),
        ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
        ("OS_REGION_NAME", var("SWIFT_AIO_REGION")),
    ]
}

/// A mountpoint and cache; unmounted and removed on drop.
struct Place {
    root: PathBuf,
    mp: PathBuf,
}

impl Place {
    fn new() -> Place {
        let root = unique_dir("swift");
        let mp = root.join("mp");
        fs::create_dir_all(&mp).unwrap();
        Place { root, mp }
    }
    fn mp(&self) -> &str {
        self.mp.to_str().unwrap()
    }
    fn cache(&self, n: u32) -> String {
        self.root.join(format!("cache{n}")).display().to_string()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if is_mounted(&self.mp) {
            let _ = run(&["umount", self.mp()]);
            if is_mounted(&self.mp) {
                let _ = nix::mount::umount2(&self.mp, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[track_caller]
fn must(o: Output) -> Output {
    assert!(
        o.status.success(),
        "swiftgate failed: {}\nstdout: {}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// mkfs, mount, write, unmount, mount again from an empty cache, read back:
/// proves the credentials work for every operation, from Swift alone.
fn round_trip(url: &str, env: &[(&str, String)], extra: &[&str], cwd: Option<&Path>) {
    let p = Place::new();
    let mut mkfs = vec!["mkfs", url, "--plain", "--block-size", "64K"];
    mkfs.extend(extra);
    must(sg(&mkfs, env, cwd));
    let body = random_bytes(300_000, 7);
    for cache in [1, 2] {
        let c = p.cache(cache);
        let mut mount = vec!["mount", url, p.mp(), "--cache-dir", &c];
        mount.extend(extra);
        must(sg(&mount, env, cwd));
        if cache == 1 {
            fs::write(p.mp.join("f"), &body).unwrap();
            fs::write(p.mp.join("s"), b"small").unwrap();
        } else {
            assert_eq!(fs::read(p.mp.join("f")).unwrap(), body);
            assert_eq!(fs::read(p.mp.join("s")).unwrap(), b"small");
        }
        must(run(&["umount", p.mp()]));
        wait_unmounted(&p.mp);
    }
    // And the filesystem is clean as seen by fsck.
    let mut fsck = vec!["fsck", url];
    fsck.extend(extra);
    let o = sg(&fsck, env, cwd);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

#[test]
fn v3_password_by_name_and_by_id() {
    if fixture().is_none() {
        return;
    }
    let c = format!("swift://{}", unique_container("v3"));
    round_trip(&c, &keystone_env(""), &[], None);
    // Ids only: no names, no domains.
    let ids = vec![
        ("OS_AUTH_URL", var("SWIFT_AIO_AUTH_URL")),
        ("OS_USER_ID", var("SWIFT_AIO_USER_ID")),
        ("OS_PASSWORD", var("SWIFT_AIO_PASSWORD")),
        ("OS_PROJECT_ID", var("SWIFT_AIO_PROJECT_ID")),
    ];
    round_trip(
        &format!("swift://{}/with/prefix", unique_container("v3id")),
        &ids,
        &[],
        None,
    );
    // Flags win over the environment; the password comes from a file.
    let p = Place::new();
    let pw = p.root.join("pw");
    fs::write(&pw, "secret\n").unwrap();
    let mut env = keystone_env("");
    env.retain(|(k, _)| *k != "OS_PASSWORD" && *k != "OS_USERNAME");
    env.push(("OS_USERNAME", "nobody".into()));
    round_trip(
        &format!("swift://{}", unique_container("flags")),
        &env,
        &[
            "--os-username",
            "gncu00000001",
            "--os-password-file",
            pw.to_str().unwrap(),
        ],
        None,
    );
}

#[test]
fn v3_application_credential() {
    if fixture().is_none() {
        return;
    }
    let tok = v3_token("ALICE_");
    let name = unique_container("appcred");
    let r = http()
        .post(format!(
            "{}/users/{}/application_credentials",
            var("SWIFT_AIO_AUTH_URL"),
            var("SWIFT_AIO_ALICE_USER_ID")
        ))
        .header("X-Auth-Token", &tok)
        .json(&serde_json::json!({"application_credential": {"name": name}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let doc: serde_json::Value = r.json().unwrap();
    let id = doc["application_credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = doc["application_credential"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let by_id = vec![
        ("OS_AUTH_URL", var("SWIFT_AIO_AUTH_URL")),
        ("OS_AUTH_TYPE", "v3applicationcredential".to_string()),
        ("OS_APPLICATION_CREDENTIAL_ID", id.clone()),
        ("OS_APPLICATION_CREDENTIAL_SECRET", secret.clone()),
    ];
    round_trip(
        &format!("swift://{}", unique_container("ac")),
        &by_id,
        &[],
        None,
    );
    let by_name = vec![
        ("OS_AUTH_URL", var("SWIFT_AIO_AUTH_URL")),
        ("OS_AUTH_TYPE", "v3applicationcredential".to_string()),
        ("OS_APPLICATION_CREDENTIAL_NAME", name.clone()),
        ("OS_USERNAME", "alice".to_string()),
        ("OS_USER_DOMAIN_NAME", "Default".to_string()),
        ("OS_APPLICATION_CREDENTIAL_SECRET", secret),
    ];
    round_trip(
        &format!("swift://{}", unique_container("acn")),
        &by_name,
        &[],
        None,
    );
    let mut wrong = by_id.clone();
    wrong[3].1 = "not-the-secret".into();
    let o = sg(&["mkfs", "swift://whatever", "--plain"], &wrong, None);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains(&format!("application credential {id}")) && e.contains("401"),
        "{e}"
    );
    let _ = http()
        .delete(format!(
            "{}/users/{}/application_credentials/{id}",
            var("SWIFT_AIO_AUTH_URL"),
            var("SWIFT_AIO_ALICE_USER_ID")
        ))
        .header("X-Auth-Token", &tok)
        .send();
}

#[test]
fn tempauth_from_st_variables_and_s3ql_url() {
    if fixture().is_none() {
        return;
    }
    let st = vec![
        ("ST_AUTH", var("SWIFT_AIO_TEMPAUTH_AUTH_URL")),
        ("ST_USER", var("SWIFT_AIO_TEMPAUTH_USER")),
        ("ST_KEY", var("SWIFT_AIO_TEMPAUTH_KEY")),
    ];
    round_trip(
        &format!("swift://{}", unique_container("st")),
        &st,
        &[],
        None,
    );
    // S3QL's swift://HOST:PORT/CONTAINER/PREFIX: the auth host is in the URL.
    let s3ql = vec![st[1].clone(), st[2].clone()];
    let host = var("SWIFT_AIO_PROXY_URL")
        .trim_start_matches("http://")
        .to_string();
    round_trip(
        &format!("swift://{host}/{}/pre", unique_container("s3ql")),
        &s3ql,
        &["--no-ssl"],
        None,
    );
    let bad = vec![
        st[0].clone(),
        st[1].clone(),
        ("ST_KEY", "wrong".to_string()),
    ];
    let e = stderr(&sg(&["mkfs", "swift://x", "--plain"], &bad, None));
    assert!(
        e.contains("tempauth") && e.contains("test:tester") && e.contains("401"),
        "{e}"
    );
}

#[test]
fn pre_authenticated_token() {
    if fixture().is_none() {
        return;
    }
    let tok = v3_token("");
    let env = vec![
        ("OS_STORAGE_URL", var("SWIFT_AIO_STORAGE_URL")),
        ("OS_AUTH_TOKEN", tok),
    ];
    round_trip(
        &format!("swift://{}", unique_container("tok")),
        &env,
        &[],
        None,
    );
    let bad = vec![
        ("OS_STORAGE_URL", var("SWIFT_AIO_STORAGE_URL")),
        ("OS_AUTH_TOKEN", "gAAAAAbogus".to_string()),
    ];
    let e = stderr(&sg(&["mkfs", "swift://x", "--plain"], &bad, None));
    assert!(
        e.contains("pre-authenticated token") && e.contains("401"),
        "{e}"
    );
}

#[test]
fn clouds_yaml_with_secure_yaml() {
    if fixture().is_none() {
        return;
    }
    let dir = unique_dir("clouds");
    fs::write(
        dir.join("clouds.yaml"),
        format!(
            "clouds:\n  other:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n  aio:\n    region_name: {}\n    interface: public\n    identity_api_version: 3\n    auth:\n      auth_url: {}\n      username: {}\n      project_name: {}\n      user_domain_name: Default\n      project_domain_name: Default\n",
            var("SWIFT_AIO_REGION"),
            var("SWIFT_AIO_AUTH_URL"),
            var("SWIFT_AIO_USERNAME"),
            var("SWIFT_AIO_PROJECT_NAME")
        ),
    )
    .unwrap();
    fs::write(
        dir.join("secure.yaml"),
        format!(
            "clouds:\n  aio:\n    auth:\n      password: {}\n",
            var("SWIFT_AIO_PASSWORD")
        ),
    )
    .unwrap();
    // Found in the current directory, chosen by OS_CLOUD ...
    let env = vec![
        ("OS_CLOUD", "aio".to_string()),
        ("HOME", dir.display().to_string()),
    ];
    round_trip(
        &format!("swift://{}", unique_container("cy")),
        &env,
        &[],
        Some(&dir),
    );
    // ... or by --os-cloud.
    let env = vec![("HOME", dir.display().to_string())];
    round_trip(
        &format!("swift://{}", unique_container("cy2")),
        &env,
        &["--os-cloud", "aio"],
        Some(&dir),
    );
    let e = stderr(&sg(
        &["mkfs", "swift://x", "--plain", "--os-cloud", "nope"],
        &env,
        Some(&dir),
    ));
    assert!(e.contains("\"nope\"") && e.contains("aio, other"), "{e}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn openrc_file_works_after_source() {
    if fixture().is_none() {
        return;
    }
    let dir = unique_dir("openrc");
    // Shaped like the file Horizon's "Download OpenStack RC File" gives.
    let rc = format!(
        r#"#!/usr/bin/env bash
export OS_AUTH_URL={}
export OS_PROJECT_ID={}
export OS_PROJECT_NAME="{}"
export OS_USER_DOMAIN_NAME="Default"
if [ -z "$OS_USER_DOMAIN_NAME" ]; then unset OS_USER_DOMAIN_NAME; fi
export OS_PROJECT_DOMAIN_ID="default"
if [ -z "$OS_PROJECT_DOMAIN_ID" ]; then unset OS_PROJECT_DOMAIN_ID; fi
unset OS_TENANT_ID
unset OS_TENANT_NAME
export OS_USERNAME="{}"
export OS_PASSWORD="{}"
export OS_REGION_NAME="{}"
if [ -z "$OS_REGION_NAME" ]; then unset OS_REGION_NAME; fi
export OS_INTERFACE=public
export OS_IDENTITY_API_VERSION=3
"#,
        var("SWIFT_AIO_AUTH_URL"),
        var("SWIFT_AIO_PROJECT_ID"),
        var("SWIFT_AIO_PROJECT_NAME"),
        var("SWIFT_AIO_USERNAME"),
        var("SWIFT_AIO_PASSWORD"),
        var("SWIFT_AIO_REGION"),
    );
    fs::write(dir.join("openrc.sh"), rc).unwrap();
    let c = format!("swift://{}", unique_container("rc"));
    let p = Place::new();
    let script = format!(
        "set -e; . {rc}; {bin} mkfs {c} --plain; {bin} mount {c} {mp} --cache-dir {cache}; echo hello > {mp}/x; {bin} umount {mp}; {bin} mount {c} {mp} --cache-dir {cache2}; cat {mp}/x; {bin} umount {mp}",
        rc = dir.join("openrc.sh").display(),
        bin = BIN,
        mp = p.mp(),
        cache = p.cache(1),
        cache2 = p.cache(2),
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") || k.starts_with("ST_") {
            cmd.env_remove(k);
        }
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn token_expiry_while_mounted_is_invisible() {
    if fixture().is_none() {
        return;
    }
    // Keystone on the short port issues tokens that live 20 s.
    let mut env = keystone_env("");
    env[0].1 = var("SWIFT_AIO_SHORT_AUTH_URL");
    env.push(("SWIFTGATE_LOG", "swiftgate=info".into()));
    let c = format!("swift://{}", unique_container("exp"));
    let p = Place::new();
    must(sg(
        &["mkfs", &c, "--plain", "--block-size", "64K"],
        &env,
        None,
    ));
    let cache = p.cache(1);
    must(sg(
        &[
            "mount",
            &c,
            p.mp(),
            "--cache-dir",
            &cache,
            "--durability",
            "remote",
            "--metadata-interval",
            "3s",
            "--upload-delay",
            "100ms",
        ],
        &env,
        None,
    ));
    // Keep working through more than two token lifetimes; every fsync
    // waits for Swift, so an expired token would surface as an error.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(50) {
        let f = p.mp.join(format!("f{n}"));
        let data = random_bytes(100_000, n);
        let mut h = fs::File::create(&f).unwrap();
        std::io::Write::write_all(&mut h, &data).unwrap();
        h.sync_all().expect("fsync through an expiring token");
        drop(h);
        assert_eq!(fs::read(&f).unwrap(), data);
        n += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    must(run(&["umount", p.mp()]));
    wait_unmounted(&p.mp);
    let log = fs::read_to_string(Path::new(&cache).join("mount.log")).unwrap_or_default();
    let auths = log.matches("authenticated to Swift").count();
    assert!(
        auths >= 3,
        "expected re-authentication, log has {auths}:\n{log}"
    );
    // Everything reached Swift: a fresh cache sees all files.
    must(sg(
        &["mount", &c, p.mp(), "--cache-dir", &p.cache(2)],
        &env,
        None,
    ));
    for i in 0..n {
        assert_eq!(
            fs::read(p.mp.join(format!("f{i}"))).unwrap(),
            random_bytes(100_000, i)
        );
    }
    must(run(&["umount", p.mp()]));
}

#[test]
fn alice_cannot_use_bobs_container() {
    if fixture().is_none() {
        return;
    }
    let c = unique_container("bob");
    must(sg(
        &["mkfs", &format!("swift://{c}"), "--plain"],
        &keystone_env("BOB_"),
        None,
    ));
    let p = Place::new();
    let mut alice = keystone_env("ALICE_");
    alice.push(("OS_STORAGE_URL", var("SWIFT_AIO_BOB_STORAGE_URL")));
    let o = sg(
        &[
            "mount",
            &format!("swift://{c}"),
            p.mp(),
            "--cache-dir",
            &p.cache(1),
        ],
        &alice,
        None,
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "user alice in project alice-project may not access container {c}"
        )) && e.contains("403"),
        "{e}"
    );
    assert!(!is_mounted(&p.mp));
    // Nor create one in his account.
    let o = sg(
        &[
            "mkfs",
            &format!("swift://{}", unique_container("evil")),
            "--plain",
        ],
        &alice,
        None,
    );
    let e = stderr(&o);
    assert!(e.contains("user alice") && e.contains("403"), "{e}");
}

#[test]
fn bad_settings_are_explained() {
    if fixture().is_none() {
        return;
    }
    let mk = |env: &[(&str, String)]| stderr(&sg(&["mkfs", "swift://x", "--plain"], env, None));
    let mut env = keystone_env("");
    env[2].1 = "wrong".into();
    let e = mk(&env);
    assert!(
        e.contains(&format!(
            "Keystone at {} rejected the credentials of user gncu00000001 in project gnct00000001 (401)",
            var("SWIFT_AIO_AUTH_URL")
        )),
        "{e}"
    );
    assert!(!e.contains("wrong"), "the password leaked into: {e}");
    let mut env = keystone_env("");
    env[6].1 = "lon1".into();
    let e = mk(&env);
    assert!(
        e.contains("region lon1") && e.contains("region tyo1 interface public"),
        "{e}"
    );
    let mut env = keystone_env("");
    env[0].1 = "http://127.0.0.1:1/v3".into();
    let e = mk(&env);
    assert!(
        e.contains("http://127.0.0.1:1/v3") && e.contains("refused"),
        "{e}"
    );
    let mut env = keystone_env("");
    env[0].1 = format!("{}/", var("SWIFT_AIO_PROXY_URL"));
    let e = mk(&env);
    assert!(e.contains("does not look like a Keystone"), "{e}");
    // A missing container at mount time.
    let p = Place::new();
    let e = stderr(&sg(
        &[
            "mount",
            &format!("swift://{}", unique_container("none")),
            p.mp(),
            "--cache-dir",
            &p.cache(1),
        ],
        &keystone_env(""),
        None,
    ));
    assert!(
        e.contains("holds no swiftgate filesystem") && e.contains("mkfs"),
        "{e}"
    );
    // Nothing configured at all.
    let e = mk(&[]);
    assert!(e.contains("openrc") && e.contains("clouds.yaml"), "{e}");
}

/// The in-test Keystone v2.0 server (tests/swift/identity_v2.py).
struct V2Server {
    child: std::process::Child,
    port: u16,
}

impl V2Server {
    fn start() -> V2Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/swift/identity_v2.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args([
                "--port",
                "0",
                "--prefix",
                "/identity/v2.0",
                "--quiet",
                "--keystone",
            ])
            .arg(var("SWIFT_AIO_AUTH_URL").trim_end_matches("/v3"))
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start identity_v2.py");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let port = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("identity_v2.py said {line:?}"));
        V2Server { child, port }
    }
}

impl Drop for V2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keystone_v2_under_a_path_prefix() {
    if fixture().is_none() {
        return;
    }
    let srv = V2Server::start();
    let base = format!("http://127.0.0.1:{}", srv.port);
    let env = vec![
        ("OS_AUTH_URL", format!("{base}/identity/v2.0")),
        ("OS_USERNAME", var("SWIFT_AIO_USERNAME")),
        ("OS_PASSWORD", var("SWIFT_AIO_PASSWORD")),
        ("OS_TENANT_NAME", var("SWIFT_AIO_PROJECT_NAME")),
    ];
    round_trip(
        &format!("swift://{}", unique_container("v2")),
        &env,
        &[],
        None,
    );
    let by_id = vec![
        env[0].clone(),
        env[1].clone(),
        env[2].clone(),
        ("OS_TENANT_ID", var("SWIFT_AIO_PROJECT_ID")),
        ("OS_REGION_NAME", var("SWIFT_AIO_REGION")),
    ];
    round_trip(
        &format!("swift://{}", unique_container("v2id")),
        &by_id,
        &[],
        None,
    );
    // S3QL's swiftks://HOST:PORT/REGION:CONTAINER: the version is found
    // from the server's version document.
    let ks = vec![env[1].clone(), env[2].clone(), env[3].clone()];
    round_trip(
        &format!(
            "swiftks://127.0.0.1:{}/{}:{}",
            srv.port,
            var("SWIFT_AIO_REGION"),
            unique_container("ks")
        ),
        &ks,
        &["--no-ssl"],
        None,
    );
    let mut bad = env.clone();
    bad[2].1 = "wrong".into();
    let e = stderr(&sg(&["mkfs", "swift://x", "--plain"], &bad, None));
    assert!(
        e.contains("rejected the credentials of user gncu00000001") && e.contains("401"),
        "{e}"
    );
}

/// Sets an account quota with the reseller admin and takes it off again
/// when dropped (also when the test fails).
struct AccountQuota {
    url: String,
    token: String,
}

impl AccountQuota {
    fn set(account: &str, bytes: u64) -> AccountQuota {
        // tempauth's reseller admin (admin:admin, see tests/swift/README.md).
        let r = http()
            .get(var("SWIFT_AIO_TEMPAUTH_AUTH_URL"))
            .header("X-Auth-User", "admin:admin")
            .header("X-Auth-Key", "admin")
            .send()
            .unwrap();
        assert!(r.status().is_success(), "reseller login: {}", r.status());
        let token = r.headers()["x-auth-token"].to_str().unwrap().to_string();
        let url = format!("{}/v1/{account}", var("SWIFT_AIO_PROXY_URL"));
        let r = http()
            .post(&url)
            .header("X-Auth-Token", &token)
            .header("X-Account-Meta-Quota-Bytes", bytes.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "setting the quota: {}", r.status());
        AccountQuota { url, token }
    }
}

impl Drop for AccountQuota {
    fn drop(&mut self) {
        let _ = http()
            .post(&self.url)
            .header("X-Auth-Token", &self.token)
            .header("X-Remove-Account-Meta-Quota-Bytes", "x")
            .send();
    }
}

#[test]
fn statfs_shows_the_account_quota_without_one_of_its_own() {
    if fixture().is_none() {
        return;
    }
    // An account no other test writes to, and a quota far too large to
    // refuse anything, should another test use it after all.
    let quota: u64 = 7 << 40;
    let _q = AccountQuota::set("AUTH_test2", quota);
    let env = vec![
        ("ST_AUTH", var("SWIFT_AIO_TEMPAUTH_AUTH_URL")),
        ("ST_USER", "test2:tester2".to_string()),
        ("ST_KEY", "testing2".to_string()),
    ];
    let c = format!("swift://{}", unique_container("acq"));
    let p = Place::new();
    must(sg(
        &["mkfs", &c, "--plain", "--block-size", "64K"],
        &env,
        None,
    ));
    let cache = p.cache(1);
    must(sg(
        &["mount", &c, p.mp(), "--cache-dir", &cache],
        &env,
        None,
    ));
    // Read in the background right after the mount.
    let until = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = nix::sys::statvfs::statvfs(&p.mp).unwrap();
        if s.blocks() * s.fragment_size() == quota || Instant::now() > until {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(s.blocks() * s.fragment_size(), quota, "capacity");
    let free = s.blocks_available() * s.fragment_size();
    assert!(free <= quota && free > quota - (1 << 30), "free {free}");
    // A quota of the filesystem's own wins (tests/quota.rs); without the
    // account's, the large honest figure (tests/posix.rs).
    must(run(&["umount", p.mp()]));
    wait_unmounted(&p.mp);
}
