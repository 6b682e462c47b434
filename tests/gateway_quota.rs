//! Quotas end to end: real smbd and smbclient against the daemon, the
//! quota set with the CLI and raised through the console's JSON API.

mod common;

use common::accounts::{PamService, TestGroup};
use common::gw::*;
use common::*;
use std::fs;
use swiftgate::gateway::api::{AlertCode, GatewayApiExt};

const MIB: u64 = 1 << 20;

/// smbclient's `du`: (total, available) in bytes, from "N blocks of size
/// B. M blocks available".
fn du(g: &Gw, user: &str, pw: &str, work: &std::path::Path) -> (u64, u64) {
    let out = smb_ok(g.smbclient(user, pw, "du", work));
    let line = out
        .lines()
        .find(|l| l.contains("blocks of size"))
        .unwrap_or_else(|| panic!("no size line in {out}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0] * nums[1], nums[2] * nums[1])
}

/// The kernel's id of the mount at `mp` (a remount gets a new one).
fn mount_id(mp: &std::path::Path) -> String {
    let want = mp.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .and_then(|l| l.split(' ').next().map(String::from))
        .unwrap_or_else(|| panic!("{want} is not mounted"))
}

#[test]
fn a_write_over_the_quota_is_disk_full_until_the_quota_is_raised() {
    let svc = PamService::swiftgate();
    let group = TestGroup::new();
    let store_dir = unique_dir("qstore");
    let mut g = Gw::with_console(
        &format!("local://{}/homes/{{user}}", store_dir.display()),
        "",
        &[],
        "service",
        &format!(
            "pam_service = \"{}\"\nadmin_group = \"{}\"\n",
            svc.name, group.name
        ),
    );
    let user = unique_user("q");
    ok(g.add_user(&user, "quota-pw1", &[]));
    // Set before the home is mounted: the mount brings it along.
    let o = ok(g.sg(&["user", "quota", &user, "8M"], ""));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("next mount"),
        "{o:?}"
    );
    let shown = String::from_utf8_lossy(&ok(g.sg(&["user", "show", &user], "")).stdout).to_string();
    assert!(shown.contains("quota:       8M"), "{shown}");
    let e = g.sg(&["user", "quota", &user, "8 furlongs"], "");
    assert!(!e.status.success());
    assert!(stderr(&e).contains("50G"), "{}", stderr(&e));

    let work = unique_dir("qwork");
    let keep = random_bytes(7 * MIB as usize, 1);
    fs::write(work.join("keep.bin"), &keep).unwrap();
    fs::write(work.join("big.bin"), random_bytes(4 * MIB as usize, 2)).unwrap();
    smb_ok(g.smbclient(&user, "quota-pw1", "put keep.bin", &work));
    // Explorer's figures: the quota as the size, what is left as free.
    let (total, avail) = du(&g, &user, "quota-pw1", &work);
    assert_eq!(total, 8 * MIB, "total");
    assert_eq!(avail, MIB, "available");
    // Over it: disk full, and what was written before is intact.
    let o = g.smbclient(&user, "quota-pw1", "put big.bin", &work);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("NT_STATUS_DISK_FULL"), "{out}");
    assert_eq!(g.smb_get(&user, "quota-pw1", "keep.bin", &work), keep);
    // `status` shows the use, flagged from 90 % on.
    let st = String::from_utf8_lossy(&ok(g.sg(&["status"], "")).stdout).to_string();
    assert!(
        st.contains(&format!("{user}: WARNING: quota 8M is")),
        "{st}"
    );
    let api = swiftgate::gateway::control::ControlClient::new(
        &g.root.join("run/gw.sock"),
        std::time::Duration::from_secs(60),
    );
    let ov = api.overview().unwrap();
    assert!(
        ov.alerts
            .iter()
            .any(|a| a.code == AlertCode::QuotaNearlyFull && a.subject.as_deref() == Some(&user)),
        "{:?}",
        ov.alerts
    );

    // Raised through the console's JSON API: the same put goes through,
    // on the same mount.
    let mp = g.home(&user);
    let before = mount_id(&mp);
    let token = String::from_utf8(ok(g.sg(&["token", "create", "quota-ci"], "")).stdout)
        .unwrap()
        .trim()
        .to_string();
    let c = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = c
        .put(format!("{}/api/v1/users/{user}/quota", g.console_url()))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "quota": "nonsense" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422, "a bad quota is refused");
    let r = c
        .put(format!("{}/api/v1/users/{user}/quota", g.console_url()))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "quota": { "bytes": 20 * MIB } }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text());
    smb_ok(g.smbclient(&user, "quota-pw1", "put big.bin", &work));
    assert_eq!(mount_id(&mp), before, "no remount");
    let (total, _) = du(&g, &user, "quota-pw1", &work);
    assert_eq!(total, 20 * MIB);
    // Lifted: the honest large figure again.
    ok(g.sg(&["user", "quota", &user, "none"], ""));
    let (total, _) = du(&g, &user, "quota-pw1", &work);
    assert!(total > 1 << 40, "{total}");
    drop(g);
    let _ = fs::remove_dir_all(&store_dir);
}

#[test]
fn a_team_share_quota_is_kept_and_applied_at_mount() {
    let store_dir = unique_dir("qsstore");
    let mut g = Gw::new(
        &format!("local://{}/homes/{{user}}", store_dir.display()),
        "",
        &[],
        "service",
    );
    let user = unique_user("qs");
    ok(g.add_user(&user, "quota-pw2", &[]));
    let name = format!("q{:06x}", rand_u32() & 0xffffff);
    g.shares.push(name.clone());
    let o = ok(g.sg(
        &[
            "share", "add", &name, "--member", &user, "--quota", "4M,100",
        ],
        "",
    ));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("in force now"),
        "{o:?}"
    );
    let e = g.sg(&["share", "quota", "nosuchshare", "4M"], "");
    assert!(!e.status.success());
    assert!(stderr(&e).contains("nosuchshare"), "{}", stderr(&e));
    // A restart mounts the share again with its quota from the share list.
    g.stop_daemon(libc::SIGTERM);
    g.start_daemon();
    let shown =
        String::from_utf8_lossy(&ok(g.sg(&["share", "show", &name], "")).stdout).to_string();
    assert!(shown.contains("quota:       4M,100"), "{shown}");
    let work = unique_dir("qswork");
    fs::write(work.join("small.bin"), random_bytes(3 * MIB as usize, 3)).unwrap();
    fs::write(work.join("big.bin"), random_bytes(2 * MIB as usize, 4)).unwrap();
    smb_ok(g.smbclient_on(&name, &user, "quota-pw2", "put small.bin", &work));
    let o = g.smbclient_on(&name, &user, "quota-pw2", "put big.bin", &work);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("NT_STATUS_DISK_FULL"), "{out}");
    let mp = g.root.join("shares").join(&name);
    let s = nix::sys::statvfs::statvfs(&mp).unwrap();
    assert_eq!(s.blocks() * s.fragment_size(), 4 * MIB);
    assert_eq!(s.files(), 100);
    drop(g);
    let _ = fs::remove_dir_all(&store_dir);
}

#[test]
fn a_file_open_before_the_quota_is_refused_with_enospc_not_eio() {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let store_dir = unique_dir("qwstore");
    let mut g = Gw::new(
        &format!("local://{}/homes/{{user}}", store_dir.display()),
        "",
        &[],
        "service",
    );
    let user = unique_user("qw");
    ok(g.add_user(&user, "quota-pw3", &[]));
    let api = swiftgate::gateway::control::ControlClient::new(
        &g.root.join("run/gw.sock"),
        std::time::Duration::from_secs(60),
    );
    use swiftgate::gateway::api::GatewayApi;
    api.call(swiftgate::gateway::api::Request::Mount { user: user.clone() })
        .unwrap();
    // Opened without a quota: through the page cache; the quota set then
    // is found only when the kernel hands the pages over.
    let mut f = fs::File::create(g.home(&user).join("big")).unwrap();
    f.write_all(&vec![1u8; MIB as usize]).unwrap();
    ok(g.sg(&["user", "quota", &user, "4M"], ""));
    let chunk = vec![2u8; MIB as usize];
    let mut err = None;
    for _ in 0..8 {
        if let Err(e) = f.write_all(&chunk) {
            err = e.raw_os_error();
            break;
        }
    }
    // close(2): the kernel keeps only ENOSPC or EIO for it (fsync would
    // see the exact errno); EIO would read as a failing disk.
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } != 0 {
        err = err.or(std::io::Error::last_os_error().raw_os_error());
    }
    assert!(
        matches!(err, Some(libc::ENOSPC) | Some(libc::EDQUOT)),
        "a write past the quota must end in ENOSPC/EDQUOT, got {err:?}"
    );
    drop(g);
    let _ = fs::remove_dir_all(&store_dir);
}
