//! Snapshots of a mounted filesystem: the read-only `/.snapshots` tree,
//! garbage collection that keeps what snapshots read, a new host, fsck,
//! and deletion that frees what only the snapshot held. Runs against the
//! local store, and against Swift in the second pass of run-all.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

fn sg_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&ok(run(args)).stdout).unwrap()
}

fn create(mp: &Path) -> serde_json::Value {
    let o = ok(run(&[
        "snapshot",
        "create",
        "--mountpoint",
        &mp.display().to_string(),
    ]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("snapshot @GMT-"), "{out}");
    let l = sg_json(&[
        "snapshot",
        "list",
        "--json",
        "--mountpoint",
        &mp.display().to_string(),
    ]);
    l["snapshots"].as_array().unwrap().last().unwrap().clone()
}

fn ctl(mp: &Path, action: &str) {
    ok(run(&["ctl", &mp.display().to_string(), action]));
}

#[test]
fn snapshots_keep_old_data_through_gc_new_host_and_fsck() {
    let t = TestFs::new(&["--passphrase", "snap-pass", "--block-size", "64K"]);
    t.mount(&[]);
    let big = random_bytes(300_000, 1);
    fs::write(t.path("a.bin"), &big).unwrap();
    for i in 0..20 {
        fs::write(t.path(&format!("s{i}.txt")), random_bytes(2000, 100 + i)).unwrap();
    }
    fs::create_dir(t.path("d")).unwrap();
    fs::write(t.path("d/b.txt"), b"inner").unwrap();
    std::os::unix::fs::symlink("a.bin", t.path("link")).unwrap();
    xattr_set(&t.path("a.bin"), "user.note", b"kept");
    let old = filetime(978_307_200); // 2001-01-01
    set_mtime(&t.path("a.bin"), old);
    let snap = create(&t.mp);
    let name = snap["name"].as_str().unwrap().to_string();
    assert_eq!(snap["files"], 22, "{snap}");
    let s = |rel: &str| t.mp.join(".snapshots").join(&name).join(rel);

    // The live tree moves on.
    fs::write(t.path("a.bin"), random_bytes(300_000, 2)).unwrap();
    for i in 0..20 {
        fs::remove_file(t.path(&format!("s{i}.txt"))).unwrap();
    }
    fs::remove_file(t.path("d/b.txt")).unwrap();

    // The snapshot's tree: old bytes, own inode numbers, original times,
    // xattrs and links; read-only.
    let check = |why: &str| {
        assert_eq!(fs::read(s("a.bin")).unwrap(), big, "{why}");
        for i in 0..20 {
            assert_eq!(
                fs::read(s(&format!("s{i}.txt"))).unwrap(),
                random_bytes(2000, 100 + i),
                "{why}"
            );
        }
        assert_eq!(fs::read(s("d/b.txt")).unwrap(), b"inner", "{why}");
        assert_eq!(fs::read_link(s("link")).unwrap(), Path::new("a.bin"));
        let m = fs::metadata(s("a.bin")).unwrap();
        assert_eq!(m.mtime(), 978_307_200, "{why}");
        assert_eq!(m.mode() & 0o222, 0, "{why}");
        assert_ne!(m.ino(), fs::metadata(t.path("a.bin")).unwrap().ino());
        assert_eq!(
            xattr_get(&s("a.bin"), "user.note").as_deref(),
            Some(&b"kept"[..])
        );
    };
    check("right after");
    let ls: Vec<String> = fs::read_dir(t.mp.join(".snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ls, vec![name.clone()]);
    // `.snapshots` is not in the root's listing, and nothing writes there.
    assert!(!fs::read_dir(&t.mp)
        .unwrap()
        .any(|e| e.unwrap().file_name() == ".snapshots"));
    for r in [
        fs::write(s("a.bin"), b"x"),
        fs::write(s("new.txt"), b"x"),
        fs::remove_file(s("a.bin")),
        fs::create_dir(t.mp.join(".snapshots/x")),
    ] {
        let e = r.unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)),
            "{e}"
        );
    }
    assert_eq!(
        fs::rename(t.path("a.bin"), s("a.bin"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );

    // GC and metadata generations that would delete dead objects: the
    // snapshot's stay, and the listing says what they cost.
    ctl(&t.mp, "gc");
    for _ in 0..3 {
        ctl(&t.mp, "backup-metadata");
    }
    ctl(&t.mp, "drop-cache");
    let clean = |t: &TestFs| t.stat()["cache"]["clean_bytes"].as_u64().unwrap();
    let before = clean(&t);
    check("after gc");
    // Reading the snapshot put nothing into the live cache.
    assert_eq!(clean(&t), before, "snapshot reads filled the cache");
    let l = sg_json(&[
        "snapshot",
        "list",
        "--json",
        "--mountpoint",
        &t.mp.display().to_string(),
    ]);
    assert!(l["cost"]["held_bytes"].as_u64().unwrap() > 0, "{l}");
    let with_snapshot = stored_bytes(&t);

    // Unmounted, fsck is clean; a new host (no cache) reads the snapshot.
    t.umount();
    let f = t.fsck(&[]);
    assert_eq!(
        f.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&f.stdout)
    );
    let fresh = t.root.join("cache-new-host");
    ok(t.try_mount_at(&t.mp, &fresh, &[]));
    check("on a new host");

    // Deleting it frees what only it held, two generations later.
    let o = ok(run(&[
        "snapshot",
        "delete",
        &name,
        "--mountpoint",
        &t.mp.display().to_string(),
    ]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("deleted"));
    assert!(!t.mp.join(".snapshots").join(&name).exists());
    // Packs it kept from being rewritten are rewritten now.
    ctl(&t.mp, "gc");
    for _ in 0..3 {
        fs::write(t.path("tick"), b"x").unwrap();
        ctl(&t.mp, "backup-metadata");
    }
    // The old 300 kB file and the small ones are gone from the store.
    let after = stored_bytes(&t);
    assert!(
        after + 250_000 < with_snapshot,
        "{after} bytes stored, {with_snapshot} before"
    );
    assert!(t.obj_keys("snapshots/").is_empty());
    t.umount();
    assert_eq!(t.fsck(&[]).status.code(), Some(0));
}

#[test]
fn a_damaged_snapshot_is_reported_and_the_rest_works() {
    let t = TestFs::new(&[]);
    t.mount(&[]);
    fs::write(t.path("f"), b"one").unwrap();
    let s1 = create(&t.mp);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(t.path("f"), b"two").unwrap();
    let s2 = create(&t.mp);
    let key = format!("snapshots/{:016x}", s1["id"].as_i64().unwrap());
    let mut rec = t.obj_get(&key);
    let n = rec.len();
    rec[n / 2] ^= 0xff;
    t.obj_put(&key, &rec);
    // A new host must fetch it: the damage shows as EIO, not as data.
    t.umount();
    let fresh = t.root.join("cache-2");
    ok(t.try_mount_at(&t.mp, &fresh, &[]));
    let snaps = t.mp.join(".snapshots");
    let e = fs::read(snaps.join(s1["name"].as_str().unwrap()).join("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(
        fs::read(snaps.join(s2["name"].as_str().unwrap()).join("f")).unwrap(),
        b"two"
    );
    assert_eq!(fs::read(t.path("f")).unwrap(), b"two");
    // A lost snapshot database is fsck's business: reported as a loss.
    t.objects().delete(&key).unwrap();
    t.umount();
    let f = t.fsck(&[]);
    let text = String::from_utf8_lossy(&f.stdout).into_owned();
    assert_eq!(f.status.code(), Some(2), "{text}");
    assert!(
        text.contains(s1["name"].as_str().unwrap()) && text.contains("lost its database"),
        "{text}"
    );
}

fn stored_bytes(t: &TestFs) -> u64 {
    t.objects()
        .list_all("data/")
        .unwrap()
        .iter()
        .map(|o| o.size)
        .sum()
}

fn filetime(secs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    }
}

fn set_mtime(p: &Path, t: libc::timespec) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        t,
    ];
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
}

fn xattr_set(p: &Path, name: &str, v: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let r = unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}
