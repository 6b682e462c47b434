//! The recycle bin end to end: real smbd with the generated smb.conf
//! (Samba's vfs_recycle), smbclient deleting and restoring, the daemon
//! purging expired entries through the typed API and after a mount.

mod common;

use common::gw::*;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use swiftgate::gateway::api::{
    ErrorKind, FsTarget, GatewayApi, GatewayApiExt, JobInfo, JobState, Request, Response, ShareSpec,
};
use swiftgate::gateway::control::ControlClient;

/// A directory removed when the test ends, passed or not.
struct RmDir(std::path::PathBuf);

impl RmDir {
    fn new(tag: &str) -> RmDir {
        RmDir(unique_dir(tag))
    }
}

impl std::ops::Deref for RmDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The gateway, then (once it has stopped) its store directory.
struct LocalGw {
    gw: Gw,
    _store: RmDir,
}

impl std::ops::Deref for LocalGw {
    type Target = Gw;
    fn deref(&self) -> &Gw {
        &self.gw
    }
}

impl std::ops::DerefMut for LocalGw {
    fn deref_mut(&mut self) -> &mut Gw {
        &mut self.gw
    }
}

fn local_gw(extra_toml: &str) -> LocalGw {
    let store = RmDir::new("rcstore");
    let url = format!("local://{}/homes/{{user}}", store.display());
    LocalGw {
        gw: Gw::new(&url, extra_toml, &[], "service"),
        _store: store,
    }
}

fn api(g: &Gw) -> ControlClient {
    ControlClient::new(&g.root.join("run/gw.sock"), Duration::from_secs(600))
}

fn job(g: &Gw, r: Request) -> JobInfo {
    let a = api(g);
    let mut j = match a.call(r).unwrap() {
        Response::Job(j) => j,
        other => panic!("{other:?}"),
    };
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while j.state == JobState::Running {
        assert!(std::time::Instant::now() < until, "job stuck: {j:?}");
        std::thread::sleep(Duration::from_millis(100));
        j = a.job(j.id).unwrap();
    }
    j
}

/// Mount the home through the API and keep it mounted (an open directory
/// makes the idle unmount fail busy) while the handle lives.
fn hold_home(g: &Gw, user: &str) -> fs::File {
    api(g).done(Request::Mount { user: user.into() }).unwrap();
    let h = fs::File::open(g.home(user)).unwrap();
    assert!(is_mounted(&g.home(user)));
    h
}

fn smb_text(o: std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn touch_old(p: &Path, what: &str) {
    touch_ago(p, what, "40 days ago")
}

fn touch_ago(p: &Path, what: &str, ago: &str) {
    let o = Command::new("touch")
        .args([what, "-d", ago])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "touch {p:?}: {}", stderr(&o));
}

#[test]
fn a_delete_through_smb_lands_in_recycle_with_versions_and_restores() {
    let mut g = local_gw("");
    let conf = fs::read_to_string(&g.smb_conf).unwrap();
    assert!(
        conf.contains("vfs objects = catia recycle fruit streams_xattr shadow_copy2 acl_xattr"),
        "{conf}"
    );
    let u = unique_user("rb");
    ok(g.add_user(&u, "pw-rb1", &[]));
    let work = RmDir::new("rcwork");
    fs::write(work.join("v1.txt"), b"first version").unwrap();
    fs::write(work.join("v2.txt"), b"second version").unwrap();
    smb_ok(g.smbclient(
        &u,
        "pw-rb1",
        r"mkdir dir; put v1.txt dir\file.txt; del dir\file.txt; put v2.txt dir\file.txt; del dir\file.txt; put v1.txt scratch.tmp; del scratch.tmp",
        &work,
    ));
    // Gone from where it was, both versions in the bin with the tree kept.
    let o = g.smbclient(&u, "pw-rb1", r"ls dir\file.txt", &work);
    assert!(
        smb_text(o).contains("NT_STATUS_NO_SUCH_FILE"),
        "the file is still there"
    );
    assert_eq!(
        g.smb_get(&u, "pw-rb1", r"#recycle\dir\file.txt", &work),
        b"first version"
    );
    assert_eq!(
        g.smb_get(&u, "pw-rb1", r"#recycle\dir\Copy #1 of file.txt", &work),
        b"second version"
    );
    // Excluded names are deleted for real.
    let listing = smb_ok(g.smbclient(&u, "pw-rb1", r"ls #recycle\*", &work));
    assert!(!listing.contains("scratch.tmp"), "{listing}");
    // Restore: move it back.
    smb_ok(g.smbclient(
        &u,
        "pw-rb1",
        r##"rename "#recycle\dir\file.txt" dir\file.txt"##,
        &work,
    ));
    assert_eq!(
        g.smb_get(&u, "pw-rb1", r"dir\file.txt", &work),
        b"first version"
    );
    // Only the owner reaches the bin.
    let _hold = hold_home(&g, &u);
    let bin = g.home(&u).join("#recycle");
    assert_eq!(fs::metadata(&bin).unwrap().mode() & 0o777, 0o700);
    assert_eq!(fs::metadata(bin.join("dir")).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        fs::metadata(&bin).unwrap().uid(),
        fs::metadata(g.home(&u)).unwrap().uid()
    );
    // The API shows it: one file left (the second version).
    let d = api(&g).user(&u).unwrap();
    let r = d.recycle.expect("recycle info");
    assert!(
        r.enabled && r.keep_days == 30 && r.folder == "#recycle",
        "{r:?}"
    );
    assert_eq!(
        (r.files, r.bytes),
        (Some(1), Some(b"second version".len() as u64))
    );
}

#[test]
fn expired_entries_are_purged_fresh_ones_kept_nothing_outside_touched() {
    let mut g = local_gw("");
    let u = unique_user("rp");
    ok(g.add_user(&u, "pw-rp1", &[]));
    let work = RmDir::new("rcwork");
    fs::write(work.join("a.txt"), b"payload").unwrap();
    smb_ok(g.smbclient(
        &u,
        "pw-rp1",
        r"mkdir keep; put a.txt keep\outside-old.txt; put a.txt old.txt; put a.txt fresh.txt; mkdir sub; put a.txt sub\old2.txt; del old.txt; del fresh.txt; del sub\old2.txt",
        &work,
    ));
    let hold = hold_home(&g, &u);
    let home = g.home(&u);
    let bin = home.join("#recycle");
    assert!(bin.join("old.txt").exists() && bin.join("sub/old2.txt").exists());
    // A file last used long ago and deleted now is fresh in the bin: the
    // deletion stamps it (recycle:touch), its old times do not count.
    fs::write(home.join("ancient.txt"), b"payload").unwrap();
    touch_old(&home.join("ancient.txt"), "-am");
    smb_ok(g.smbclient(&u, "pw-rp1", "del ancient.txt", &work));
    touch_old(&bin.join("old.txt"), "-a");
    touch_old(&bin.join("sub/old2.txt"), "-a");
    // Old files outside the bin, and an old symlink in the bin pointing at
    // them: the purge removes the link, never what it points to.
    touch_old(&home.join("keep/outside-old.txt"), "-am");
    std::os::unix::fs::symlink(home.join("keep"), bin.join("link")).unwrap();
    let o = Command::new("touch")
        .args(["-h", "-a", "-d", "40 days ago"])
        .arg(bin.join("link"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // Purge now, through the API (what the daemon does every interval).
    let j = job(
        &g,
        Request::RecyclePurge {
            target: Some(FsTarget::User(u.clone())),
        },
    );
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    assert!(
        j.message
            .as_deref()
            .unwrap_or("")
            .contains("3 expired files"),
        "{j:?}"
    );
    assert!(!bin.join("old.txt").exists());
    assert!(!bin.join("sub").exists(), "the emptied folder is removed");
    assert!(fs::symlink_metadata(bin.join("link")).is_err());
    assert_eq!(fs::read(bin.join("fresh.txt")).unwrap(), b"payload");
    assert_eq!(fs::read(bin.join("ancient.txt")).unwrap(), b"payload");
    assert_eq!(
        fs::read(home.join("keep/outside-old.txt")).unwrap(),
        b"payload"
    );
    assert!(home.join("sub").is_dir());
    let d = api(&g).user(&u).unwrap();
    assert_eq!(d.recycle.unwrap().files, Some(2));
    let shown = String::from_utf8_lossy(&ok(g.sg(&["user", "show", &u], "")).stdout).to_string();
    assert!(
        shown.contains("recycle bin: on, #recycle kept 30 days; 2 files, 14 bytes"),
        "{shown}"
    );

    // A home that is not mounted is purged when it is mounted next.
    touch_old(&bin.join("fresh.txt"), "-a");
    drop(hold);
    wait_until(
        60,
        || !is_mounted(&home),
        || "the idle home was not unmounted".into(),
    );
    let e = api(&g)
        .call(Request::RecyclePurge {
            target: Some(FsTarget::User(u.clone())),
        })
        .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Conflict, Some("target"))
    );
    wait_until(
        30,
        || {
            let out = smb_text(g.smbclient(&u, "pw-rp1", r"ls #recycle\*", &work));
            !out.contains("fresh.txt") && out.contains("blocks")
        },
        || "the expired entry was not purged after the mount".into(),
    );
    smb_ok(g.smbclient(&u, "pw-rp1", r"get keep\outside-old.txt check.txt", &work));
    assert_eq!(fs::read(work.join("check.txt")).unwrap(), b"payload");

    // Emptying: everything in the bin goes, the home is mounted for it.
    smb_ok(g.smbclient(&u, "pw-rp1", r"put a.txt x.txt; del x.txt", &work));
    wait_until(
        60,
        || !is_mounted(&home),
        || "the idle home was not unmounted".into(),
    );
    let j = job(
        &g,
        Request::RecycleEmpty {
            target: FsTarget::User(u.clone()),
        },
    );
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    assert!(
        j.message.as_deref().unwrap_or("").contains("2 files"),
        "{j:?}"
    );
    let out = smb_text(g.smbclient(&u, "pw-rp1", r"ls #recycle\*", &work));
    assert!(!out.contains("x.txt"), "{out}");
    let e = api(&g)
        .call(Request::RecycleEmpty {
            target: FsTarget::User("nobody-here".into()),
        })
        .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::NotFound, Some("user"))
    );
}

#[test]
fn purge_rounds_run_on_their_own() {
    let mut g = local_gw("[recycle]\nkeep_days = 1\npurge_interval = \"1s\"\n");
    let u = unique_user("rr");
    ok(g.add_user(&u, "pw-rr1", &[]));
    let work = RmDir::new("rcwork");
    fs::write(work.join("a.txt"), b"payload").unwrap();
    smb_ok(g.smbclient(
        &u,
        "pw-rr1",
        "put a.txt old.txt; put a.txt new.txt; del old.txt; del new.txt",
        &work,
    ));
    let _hold = hold_home(&g, &u);
    let bin = g.home(&u).join("#recycle");
    touch_old(&bin.join("old.txt"), "-a");
    wait_until(
        30,
        || !bin.join("old.txt").exists(),
        || "no purge round removed the expired entry".into(),
    );
    assert!(bin.join("new.txt").exists());
    let d = api(&g).user(&u).unwrap();
    assert_eq!(d.recycle.unwrap().keep_days, 1);
}

#[test]
fn disabled_recycle_bin_deletes_for_real() {
    let mut g = local_gw("[recycle]\nenabled = false\n");
    let conf = fs::read_to_string(&g.smb_conf).unwrap();
    assert!(
        !conf.contains("recycle:")
            && conf.contains("vfs objects = catia fruit streams_xattr shadow_copy2 acl_xattr"),
        "{conf}"
    );
    let u = unique_user("rd");
    ok(g.add_user(&u, "pw-rd1", &[]));
    let work = RmDir::new("rcwork");
    fs::write(work.join("a.txt"), b"payload").unwrap();
    smb_ok(g.smbclient(&u, "pw-rd1", "put a.txt gone.txt; del gone.txt", &work));
    let out = smb_text(g.smbclient(&u, "pw-rd1", r"ls #recycle\*", &work));
    assert!(
        out.contains("NT_STATUS_OBJECT_NAME_NOT_FOUND") || out.contains("NT_STATUS_NO_SUCH_FILE"),
        "{out}"
    );
    let _hold = hold_home(&g, &u);
    assert!(!g.home(&u).join("#recycle").exists());
    assert!(!g.home(&u).join("gone.txt").exists());
    let r = api(&g).user(&u).unwrap().recycle.unwrap();
    assert!(!r.enabled, "{r:?}");
}

#[test]
fn team_shares_have_their_own_bin_and_setting() {
    let mut g = local_gw("");
    let u = unique_user("rs");
    ok(g.add_user(&u, "pw-rs1", &[]));
    let (on, off) = (
        format!("r{:06x}", rand_u32() & 0xffffff),
        format!("r{:06x}", rand_u32() & 0xffffff),
    );
    g.shares.push(on.clone());
    g.shares.push(off.clone());
    ok(g.sg(
        &[
            "share",
            "add",
            &on,
            "--member",
            &u,
            "--recycle-keep-days",
            "7",
        ],
        "",
    ));
    ok(g.sg(
        &["share", "add", &off, "--member", &u, "--recycle", "off"],
        "",
    ));
    let frag = fs::read_to_string(g.root.join("swiftgate-shares.conf")).unwrap();
    let section = |n: &str| {
        frag.split(&format!("[{n}]"))
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap()
            .to_string()
    };
    assert!(section(&on).contains("vfs objects = catia recycle fruit streams_xattr"));
    assert!(section(&on).contains("recycle:directory_mode = 0770"));
    assert!(!section(&off).contains("recycle:"), "{}", section(&off));
    assert!(section(&off).contains("vfs objects = catia fruit streams_xattr shadow_copy2\n"));
    let work = RmDir::new("rcwork");
    fs::write(work.join("a.txt"), b"team file").unwrap();
    for n in [&on, &off] {
        smb_ok(g.smbclient_on(
            n,
            &u,
            "pw-rs1",
            r"mkdir d; put a.txt d\f.txt; del d\f.txt",
            &work,
        ));
    }
    let mp_on = g.root.join("shares").join(&on);
    let mp_off = g.root.join("shares").join(&off);
    assert_eq!(
        fs::read(mp_on.join("#recycle/d/f.txt")).unwrap(),
        b"team file"
    );
    let m = fs::metadata(mp_on.join("#recycle")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o770);
    assert!(!mp_off.join("#recycle").exists());
    let shares = api(&g).shares().unwrap();
    let s_on = shares.iter().find(|s| s.spec.name == on).unwrap();
    let s_off = shares.iter().find(|s| s.spec.name == off).unwrap();
    let r = s_on.recycle.clone().unwrap();
    assert!(r.enabled && r.keep_days == 7 && r.files == Some(1), "{r:?}");
    assert!(!s_off.recycle.clone().unwrap().enabled);
    assert_eq!(s_on.testparm.as_deref(), Some("ok"));
    // The admin empties the share's bin (here from the command line).
    let o = ok(g.sg(&["recycle", "purge", "--share", &on], ""));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 expired files"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = ok(g.sg(&["recycle", "empty", "--share", &on], ""));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("recycle bin emptied: 1 files"), "{out}");
    assert!(!mp_on.join("#recycle/d/f.txt").exists());
    // `share update` keeps the override unless told otherwise.
    ok(g.sg(&["share", "update", &on, "--comment", "changed"], ""));
    let s = api(&g).shares().unwrap();
    let s_on = s.iter().find(|s| s.spec.name == on).unwrap();
    assert_eq!(s_on.spec.recycle_keep_days, Some(7));
    ok(g.sg(&["share", "update", &off, "--recycle", "default"], ""));
    let frag = fs::read_to_string(g.root.join("swiftgate-shares.conf")).unwrap();
    assert!(frag
        .split(&format!("[{off}]"))
        .nth(1)
        .unwrap()
        .contains("recycle:repository"));
    // A bad value is refused with the field named.
    let e = api(&g)
        .call(Request::ShareUpdate(ShareSpec {
            name: on.clone(),
            recycle_keep_days: Some(1_000_000),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Invalid, Some("recycle_keep_days"))
    );
}

#[test]
fn a_home_keeps_deleted_files_as_long_as_its_own_setting() {
    let mut g = local_gw("");
    let u = unique_user("rk");
    ok(g.add_user(&u, "pw-rk1", &[]));
    let o = ok(g.sg(&["recycle", "keep", &u, "1"], ""));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("keeps deleted files 1 days"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let work = RmDir::new("rcwork");
    fs::write(work.join("a.txt"), b"payload").unwrap();
    smb_ok(g.smbclient(
        &u,
        "pw-rk1",
        "put a.txt one.txt; put a.txt two.txt; del one.txt; del two.txt",
        &work,
    ));
    let _hold = hold_home(&g, &u);
    let bin = g.home(&u).join("#recycle");
    // Three days in the bin: past this home's day, well within the
    // config's 30.
    touch_ago(&bin.join("one.txt"), "-a", "3 days ago");
    let j = job(
        &g,
        Request::RecyclePurge {
            target: Some(FsTarget::User(u.clone())),
        },
    );
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    assert!(!bin.join("one.txt").exists());
    assert!(bin.join("two.txt").exists());
    let r = api(&g).user(&u).unwrap().recycle.unwrap();
    assert_eq!((r.keep_days, r.own_keep_days), (1, Some(1)), "{r:?}");
    // Back to the config's: the same age is kept.
    ok(g.sg(&["recycle", "keep", &u], ""));
    touch_ago(&bin.join("two.txt"), "-a", "3 days ago");
    let j = job(
        &g,
        Request::RecyclePurge {
            target: Some(FsTarget::User(u.clone())),
        },
    );
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    assert!(bin.join("two.txt").exists());
    let r = api(&g).user(&u).unwrap().recycle.unwrap();
    assert_eq!((r.keep_days, r.own_keep_days), (30, None), "{r:?}");
    // The setting lives in the user map (and so in the recovery bundle).
    ok(g.sg(&["recycle", "keep", &u, "0"], ""));
    let map = fs::read_to_string(g.root.join("etc/users.json")).unwrap();
    assert!(map.contains("\"recycle_keep_days\": 0"), "{map}");
    let shown = String::from_utf8_lossy(&ok(g.sg(&["user", "show", &u], "")).stdout).to_string();
    assert!(shown.contains("#recycle kept until emptied"), "{shown}");
}
