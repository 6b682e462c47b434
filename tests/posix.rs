//! POSIX behaviour of a real FUSE mount: every operation Samba relies on,
//! with exact errno values, and persistence across remounts.

mod common;
use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn renameat2(a: &Path, b: &Path, flags: u32) -> i32 {
    let (a, b) = (cpath(a), cpath(b));
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        0
    } else {
        last_errno()
    }
}

fn setxattr(p: &Path, name: &str, v: &[u8], flags: i32) -> i32 {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), flags) };
    if r == 0 {
        0
    } else {
        last_errno()
    }
}

fn getxattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    let size = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(last_errno());
    }
    let mut buf = vec![0u8; size as usize];
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(last_errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn listxattr(p: &Path) -> Vec<String> {
    let p = cpath(p);
    let mut buf = vec![0u8; 65536];
    let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0, "listxattr: {}", last_errno());
    buf.truncate(r as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn read_write_across_blocks_and_remount() {
    let t = TestFs::new_mounted();
    let p = t.path("f");
    // 64 KiB blocks: cover partial first block, whole blocks, a tail.
    let data = random_bytes(300_000, 1);
    fs::write(&p, &data).unwrap();
    assert_eq!(fs::read(&p).unwrap(), data);
    // Overwrite in the middle across a block boundary.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(b"XXXXXXXXXXXXXXXX", 65536 - 8).unwrap();
    drop(f);
    let mut want = data.clone();
    want[65536 - 8..65536 + 8].copy_from_slice(b"XXXXXXXXXXXXXXXX");
    assert_eq!(fs::read(&p).unwrap(), want);
    // Append.
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    want.extend_from_slice(b"tail");
    assert_eq!(fs::read(&p).unwrap(), want);
    assert_eq!(fs::metadata(&p).unwrap().len(), want.len() as u64);
    // Survives unmount and a remount from an empty cache (a new host).
    t.umount();
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    assert_eq!(fs::read(&p).unwrap(), want);
}

#[test]
fn truncate_grow_and_shrink() {
    let t = TestFs::new_mounted();
    let p = t.path("t");
    fs::write(&p, random_bytes(200_000, 2)).unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(70_000).unwrap();
    f.set_len(300_000).unwrap();
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 300_000);
    assert_eq!(&got[..70_000], &random_bytes(200_000, 2)[..70_000]);
    let first_bad = got[70_000..]
        .iter()
        .position(|&b| b != 0)
        .map(|p| p + 70_000);
    let last_bad = got.iter().rposition(|&b| b != 0);
    assert!(
        first_bad.is_none(),
        "grown range must read as zeros: non-zero from {first_bad:?} to {last_bad:?}"
    );
    // Same after the blocks went through the store.
    t.umount();
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    let got2 = fs::read(&p).unwrap();
    assert_eq!(got, got2);
    // Shrink to zero frees the blocks.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(0).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    // O_TRUNC
    fs::write(&p, b"abc").unwrap();
    fs::write(&p, b"x").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"x");
}

#[test]
fn sparse_terabyte_file() {
    let t = TestFs::new_mounted();
    let p = t.path("sparse");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&p)
        .unwrap();
    let tib = 1u64 << 40;
    f.set_len(tib).unwrap();
    f.write_all_at(b"end", tib - 3).unwrap();
    f.write_all_at(b"mid", tib / 2).unwrap();
    let mut buf = [1u8; 6];
    f.read_exact_at(&mut buf, tib - 6).unwrap();
    assert_eq!(&buf, b"\0\0\0end");
    f.read_exact_at(&mut buf, 12345).unwrap();
    assert_eq!(buf, [0u8; 6]);
    assert_eq!(f.metadata().unwrap().len(), tib);
    drop(f);
    t.umount();
    t.mount(&[]);
    let f = File::open(&p).unwrap();
    let mut buf = [0u8; 3];
    f.read_exact_at(&mut buf, tib / 2).unwrap();
    assert_eq!(&buf, b"mid");
}

#[test]
fn namespace_errnos() {
    let t = TestFs::new_mounted();
    let d = t.path("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("f"), b"1").unwrap();
    assert_eq!(errno_of(File::open(t.path("missing"))), libc::ENOENT);
    assert_eq!(errno_of(fs::create_dir(&d)), libc::EEXIST);
    assert_eq!(errno_of(fs::remove_dir(&d)), libc::ENOTEMPTY);
    assert_eq!(errno_of(fs::remove_dir(d.join("f"))), libc::ENOTDIR);
    assert_eq!(errno_of(fs::remove_file(&d)), libc::EISDIR);
    assert_eq!(errno_of(File::open(d.join("f").join("x"))), libc::ENOTDIR);
    assert_eq!(
        errno_of(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(d.join("f"))
        ),
        libc::EEXIST
    );
    // Names: 255 bytes fine, 256 too long.
    let ok_name = "n".repeat(255);
    fs::write(t.path(&ok_name), b"").unwrap();
    assert_eq!(
        errno_of(fs::write(t.path(&"n".repeat(256)), b"")),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(fs::metadata(t.path(&"n".repeat(256)))),
        libc::ENAMETOOLONG
    );
    // Hard link to a directory.
    assert_eq!(errno_of(fs::hard_link(&d, t.path("dl"))), libc::EPERM);
    // rmdir of an empty dir works and frees the name.
    fs::create_dir(t.path("e")).unwrap();
    fs::remove_dir(t.path("e")).unwrap();
    assert_eq!(errno_of(fs::metadata(t.path("e"))), libc::ENOENT);
}

#[test]
fn rename_semantics() {
    let t = TestFs::new_mounted();
    let (a, b, d, e) = (t.path("a"), t.path("b"), t.path("d"), t.path("e"));
    fs::write(&a, b"A").unwrap();
    fs::write(&b, b"B").unwrap();
    fs::create_dir(&d).unwrap();
    fs::create_dir(&e).unwrap();
    fs::write(e.join("x"), b"x").unwrap();
    // Atomic replace of a file.
    fs::rename(&a, &b).unwrap();
    assert_eq!(fs::read(&b).unwrap(), b"A");
    assert_eq!(errno_of(fs::metadata(&a)), libc::ENOENT);
    // Type mismatches.
    assert_eq!(errno_of(fs::rename(&d, &b)), libc::ENOTDIR);
    assert_eq!(errno_of(fs::rename(&b, &d)), libc::EISDIR);
    assert_eq!(errno_of(fs::rename(&d, &e)), libc::ENOTEMPTY);
    // Into its own subtree.
    fs::create_dir(d.join("sub")).unwrap();
    assert_eq!(
        errno_of(fs::rename(&d, d.join("sub").join("d"))),
        libc::EINVAL
    );
    // Directory over an empty directory; nlink of parents stays right.
    fs::create_dir(t.path("empty")).unwrap();
    let root_links = fs::metadata(&t.mp).unwrap().nlink();
    fs::rename(&d, t.path("empty")).unwrap();
    assert_eq!(fs::metadata(&t.mp).unwrap().nlink(), root_links - 1);
    assert!(t.path("empty").join("sub").is_dir());
    // Move a directory between parents: '..' follows.
    fs::rename(t.path("empty"), e.join("moved")).unwrap();
    assert_eq!(
        fs::metadata(e.join("moved").join("sub").join(".."))
            .unwrap()
            .ino(),
        fs::metadata(e.join("moved")).unwrap().ino()
    );
    // RENAME_NOREPLACE / RENAME_EXCHANGE.
    fs::write(&a, b"A2").unwrap();
    assert_eq!(renameat2(&a, &b, libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(renameat2(&a, &b, libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(&a).unwrap(), b"A");
    assert_eq!(fs::read(&b).unwrap(), b"A2");
    assert_eq!(
        renameat2(&a, &t.path("nope"), libc::RENAME_EXCHANGE),
        libc::ENOENT
    );
    assert_eq!(renameat2(&a, &t.path("new"), libc::RENAME_NOREPLACE), 0);
    // Exchange a file and a directory across parents.
    assert_eq!(
        renameat2(&t.path("new"), &e.join("moved"), libc::RENAME_EXCHANGE),
        0
    );
    assert!(t.path("new").is_dir());
    assert_eq!(fs::read(e.join("moved")).unwrap(), b"A");
    // Renaming a name onto another name of the same inode is a no-op.
    fs::hard_link(&b, t.path("b2")).unwrap();
    fs::rename(&b, t.path("b2")).unwrap();
    assert!(b.exists() && t.path("b2").exists());
}

#[test]
fn hard_links_and_nlink() {
    let t = TestFs::new_mounted();
    let a = t.path("a");
    fs::write(&a, b"data").unwrap();
    fs::hard_link(&a, t.path("b")).unwrap();
    fs::create_dir(t.path("d")).unwrap();
    fs::hard_link(&a, t.path("d/c")).unwrap();
    assert_eq!(fs::metadata(&a).unwrap().nlink(), 3);
    assert_eq!(
        fs::metadata(t.path("d/c")).unwrap().ino(),
        fs::metadata(&a).unwrap().ino()
    );
    fs::remove_file(&a).unwrap();
    assert_eq!(fs::metadata(t.path("b")).unwrap().nlink(), 2);
    assert_eq!(fs::read(t.path("d/c")).unwrap(), b"data");
    // Directory link counts: 2 + subdirectories.
    assert_eq!(fs::metadata(t.path("d")).unwrap().nlink(), 2);
    fs::create_dir(t.path("d/s1")).unwrap();
    fs::create_dir(t.path("d/s2")).unwrap();
    assert_eq!(fs::metadata(t.path("d")).unwrap().nlink(), 4);
    t.umount();
    t.mount(&[]);
    assert_eq!(fs::metadata(t.path("b")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(t.path("d")).unwrap().nlink(), 4);
}

#[test]
fn unlink_while_open() {
    let t = TestFs::new_mounted();
    let p = t.path("open");
    let data = random_bytes(150_000, 3);
    fs::write(&p, &data).unwrap();
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert_eq!(errno_of(fs::metadata(&p)), libc::ENOENT);
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(got, data);
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"still writable").unwrap();
    drop(f);
    // Counted as gone once released: the kernel sends RELEASE after
    // close(2) returns, so give it a moment.
    let inodes = || t.stat()["counts"]["inodes"].as_u64().unwrap();
    wait_until(
        10,
        || inodes() == 1,
        || format!("only the root should be left, found {} inodes", inodes()),
    );
}

#[test]
fn symlinks_and_special_files() {
    let t = TestFs::new_mounted();
    std::os::unix::fs::symlink("target/with/ünïcode", t.path("l")).unwrap();
    assert_eq!(
        fs::read_link(t.path("l")).unwrap().to_str().unwrap(),
        "target/with/ünïcode"
    );
    assert!(fs::symlink_metadata(t.path("l"))
        .unwrap()
        .file_type()
        .is_symlink());
    let long = "x".repeat(4096);
    assert_eq!(
        errno_of(std::os::unix::fs::symlink(&long, t.path("l2"))),
        libc::ENAMETOOLONG
    );
    // FIFO and socket via mknod.
    let fifo = cpath(&t.path("fifo"));
    assert_eq!(
        unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o644, 0) },
        0
    );
    let sock = cpath(&t.path("sock"));
    assert_eq!(
        unsafe { libc::mknod(sock.as_ptr(), libc::S_IFSOCK | 0o644, 0) },
        0
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::metadata(t.path("fifo")).unwrap().file_type().is_fifo());
    assert!(fs::metadata(t.path("sock"))
        .unwrap()
        .file_type()
        .is_socket());
    t.umount();
    t.mount(&[]);
    assert!(fs::metadata(t.path("fifo")).unwrap().file_type().is_fifo());
    assert_eq!(
        fs::read_link(t.path("l")).unwrap().to_str().unwrap(),
        "target/with/ünïcode"
    );
}

#[test]
fn attributes_and_times() {
    let t = TestFs::new_mounted();
    let p = t.path("f");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o4751);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    let m = fs::metadata(&p).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    // As on ext4: chown clears set-user-ID of an executable.
    assert_eq!(m.mode() & 0o7777, 0o751);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    // Nanosecond timestamps.
    let ts = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    let c = cpath(&p);
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
        0
    );
    t.umount();
    t.mount(&[]);
    let m = fs::metadata(&p).unwrap();
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 987_654_321));
    assert_eq!(m.mode() & 0o7777, 0o4751);
    // Writing updates mtime and ctime.
    let before =
        fs::metadata(&p).unwrap().ctime_nsec() + fs::metadata(&p).unwrap().ctime() * 1_000_000_000;
    std::thread::sleep(std::time::Duration::from_millis(20));
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all(b"y")
        .unwrap();
    let m = fs::metadata(&p).unwrap();
    assert!(m.mtime() > 1_500_000_000);
    assert!(m.ctime() * 1_000_000_000 + m.ctime_nsec() > before);
}

#[test]
fn xattrs_for_samba() {
    let t = TestFs::new_mounted();
    let p = t.path("doc.txt");
    fs::write(&p, b"x").unwrap();
    let big = random_bytes(65536, 4);
    assert_eq!(setxattr(&p, "user.DOSATTRIB", b"\x00\x00\x04\x00", 0), 0);
    assert_eq!(setxattr(&p, "security.NTACL", &big, 0), 0);
    assert_eq!(
        setxattr(
            &p,
            "user.DosStream.Zone.Identifier:$DATA",
            b"[ZoneTransfer]\r\nZoneId=3\r\n\0",
            0
        ),
        0
    );
    assert_eq!(setxattr(&p, "trusted.x", b"t", 0), 0);
    // POSIX ACLs would not be enforced on this mount and SELinux labels
    // come from the host's policy: both refused, as on a `noacl` mount.
    let acl = [
        2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 32, 0, 4, 0,
        255, 255, 255, 255,
    ];
    assert_eq!(
        setxattr(&p, "system.posix_acl_access", &acl, 0),
        libc::EOPNOTSUPP
    );
    for n in ["system.posix_acl_access", "system.posix_acl_default"] {
        assert_eq!(getxattr(&p, n), Err(libc::EOPNOTSUPP), "{n}");
    }
    assert_eq!(
        setxattr(&p, "security.selinux", b"system_u:object_r:x:s0", 0),
        libc::EOPNOTSUPP
    );
    assert_eq!(getxattr(&p, "security.selinux"), Err(libc::EOPNOTSUPP));
    // errnos
    assert_eq!(getxattr(&p, "user.nope"), Err(libc::ENODATA));
    assert_eq!(
        setxattr(&p, "user.DOSATTRIB", b"y", libc::XATTR_CREATE),
        libc::EEXIST
    );
    assert_eq!(
        setxattr(&p, "user.new", b"y", libc::XATTR_REPLACE),
        libc::ENODATA
    );
    assert_eq!(setxattr(&p, "foo.bar", b"y", 0), libc::EOPNOTSUPP);
    assert_eq!(
        setxattr(&p, "user.huge", &random_bytes(65537, 5), 0),
        libc::E2BIG
    );
    let c = cpath(&p);
    let n = CString::new("user.nope").unwrap();
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) }, -1);
    assert_eq!(last_errno(), libc::ENODATA);
    let mut names = listxattr(&p);
    names.sort();
    assert!(names.contains(&"user.DOSATTRIB".to_string()));
    assert!(names.contains(&"security.NTACL".to_string()));
    // Small buffer: ERANGE.
    let mut small = [0u8; 2];
    let r = unsafe {
        libc::getxattr(
            c.as_ptr(),
            CString::new("security.NTACL").unwrap().as_ptr(),
            small.as_mut_ptr().cast(),
            2,
        )
    };
    assert_eq!((r, last_errno()), (-1, libc::ERANGE));
    t.umount();
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    assert_eq!(getxattr(&p, "security.NTACL").unwrap(), big);
    assert_eq!(getxattr(&p, "user.DOSATTRIB").unwrap(), b"\x00\x00\x04\x00");
    assert!(getxattr(&p, "user.DosStream.Zone.Identifier:$DATA")
        .unwrap()
        .starts_with(b"[ZoneTransfer]"));
    let rn = CString::new("user.DOSATTRIB").unwrap();
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), rn.as_ptr()) }, 0);
    assert_eq!(getxattr(&p, "user.DOSATTRIB"), Err(libc::ENODATA));
}

#[test]
fn japanese_and_odd_names() {
    let t = TestFs::new_mounted();
    let names = [
        "日本語のファイル名.txt",
        "報告書 (最終版).docx",
        "ｶﾀｶﾅ",
        "emoji 😀",
        " leading space",
        "trailing.",
        "a\\b",
        "*?<>|:\"",
    ];
    for (i, n) in names.iter().enumerate() {
        fs::write(t.path(n), format!("{i}")).unwrap();
    }
    // Non-UTF-8 bytes are valid names too.
    let raw = std::ffi::OsStr::from_bytes(b"\xff\xfe raw");
    fs::write(t.mp.join(raw), b"raw").unwrap();
    t.umount();
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(fs::read_to_string(t.path(n)).unwrap(), format!("{i}"));
    }
    assert_eq!(fs::read(t.mp.join(raw)).unwrap(), b"raw");
    let listed: Vec<_> = fs::read_dir(&t.mp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed.len(), names.len() + 1);
}

#[test]
fn large_directory_listing_is_complete_and_stable() {
    let t = TestFs::new_mounted();
    let d = t.path("big");
    fs::create_dir(&d).unwrap();
    for i in 0..5000 {
        File::create(d.join(format!("file-{i:05}"))).unwrap();
    }
    // Change the directory while reading it: every entry that exists
    // throughout is seen exactly once.
    let mut rd = fs::read_dir(&d).unwrap();
    let mut seen = std::collections::HashSet::new();
    for (n, e) in rd.by_ref().enumerate() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(seen.insert(name.clone()), "{name} listed twice");
        if n == 100 {
            for j in 0..50 {
                File::create(d.join(format!("new-{j}"))).unwrap();
                fs::remove_file(d.join(format!("file-{:05}", 4000 + j))).unwrap();
            }
        }
    }
    for i in 0..4000 {
        assert!(
            seen.contains(&format!("file-{i:05}")),
            "file-{i:05} missing"
        );
    }
}

/// Listing and stating every entry gives each file's own attributes, when
/// the listing comes with attributes (readdirplus) and when it is repeated
/// at once (a first reply of `.` and `..`, then names only), and after the
/// sizes change.
#[test]
fn listings_with_attributes() {
    let t = TestFs::new_mounted();
    let d = t.path("d");
    fs::create_dir(&d).unwrap();
    for i in 0..600u64 {
        fs::write(d.join(format!("f{i:03}")), vec![7u8; i as usize]).unwrap();
    }
    let sizes = || -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = fs::read_dir(&d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let len = e.metadata().unwrap().len();
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect();
        v.sort();
        v
    };
    let want: Vec<(String, u64)> = (0..600u64).map(|i| (format!("f{i:03}"), i)).collect();
    assert_eq!(sizes(), want, "first listing");
    assert_eq!(sizes(), want, "the same listing at once");
    for i in (0..600u64).step_by(7) {
        OpenOptions::new()
            .write(true)
            .open(d.join(format!("f{i:03}")))
            .unwrap()
            .set_len(1000 + i)
            .unwrap();
    }
    let want: Vec<(String, u64)> = (0..600u64)
        .map(|i| (format!("f{i:03}"), if i % 7 == 0 { 1000 + i } else { i }))
        .collect();
    assert_eq!(sizes(), want, "after truncating some");
}

/// Listings (kept in memory by the filesystem for plain readdir) match
/// the namespace after every kind of change, each checked on its own.
#[test]
fn listings_follow_every_change() {
    use std::collections::BTreeSet;
    let t = TestFs::new_mounted();
    let (a, b) = (t.path("a"), t.path("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let list = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // Enough entries that a listing takes several reads (only the first is
    // a readdirplus); the changes are near the end.
    let mut ma: BTreeSet<String> = (0..3000).map(|i| format!("f{i:04}")).collect();
    let mut mb: BTreeSet<String> = BTreeSet::new();
    for n in &ma {
        File::create(a.join(n)).unwrap();
    }
    let check = |ma: &BTreeSet<String>, mb: &BTreeSet<String>, what: &str| {
        assert_eq!(&list(&a), ma, "directory a after {what}");
        assert_eq!(&list(&b), mb, "directory b after {what}");
    };
    check(&ma, &mb, "creating");
    let s = |x: &str| x.to_string();
    File::create(a.join("new")).unwrap();
    ma.insert(s("new"));
    check(&ma, &mb, "create");
    fs::remove_file(a.join("f2990")).unwrap();
    ma.remove("f2990");
    check(&ma, &mb, "unlink");
    fs::create_dir(a.join("sub")).unwrap();
    ma.insert(s("sub"));
    check(&ma, &mb, "mkdir");
    fs::remove_dir(a.join("sub")).unwrap();
    ma.remove("sub");
    check(&ma, &mb, "rmdir");
    std::os::unix::fs::symlink("f2991", a.join("link")).unwrap();
    ma.insert(s("link"));
    check(&ma, &mb, "symlink");
    fs::hard_link(a.join("f2992"), b.join("hard")).unwrap();
    mb.insert(s("hard"));
    check(&ma, &mb, "link");
    fs::rename(a.join("f2993"), a.join("renamed")).unwrap();
    ma.remove("f2993");
    ma.insert(s("renamed"));
    check(&ma, &mb, "rename within a directory");
    fs::rename(a.join("f2994"), b.join("moved")).unwrap();
    ma.remove("f2994");
    mb.insert(s("moved"));
    check(&ma, &mb, "rename across directories");
    fs::rename(a.join("f2995"), a.join("f2996")).unwrap();
    ma.remove("f2995");
    check(&ma, &mb, "rename over an existing name");
    File::create(b.join("x")).unwrap();
    mb.insert(s("x"));
    assert_eq!(
        renameat2(&a.join("f2997"), &b.join("x"), libc::RENAME_EXCHANGE),
        0
    );
    check(&ma, &mb, "exchange");
    // Unchanged after a remount (listings rebuilt from the database).
    t.umount();
    t.mount(&[]);
    check(&ma, &mb, "remount");
}

#[test]
fn statfs_and_fallocate() {
    use std::os::fd::AsRawFd;
    let t = TestFs::new_mounted();
    let s = nix::sys::statvfs::statvfs(&t.mp).unwrap();
    assert!(s.blocks() > 0 && s.blocks_free() > 0);
    assert!(s.files_free() > 0);
    assert_eq!(s.name_max(), 255);
    let p = t.path("fa");
    let f = File::create(&p).unwrap();
    nix::fcntl::fallocate(
        f.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        1 << 20,
    )
    .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    nix::fcntl::fallocate(
        f.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        2 << 20,
    )
    .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    // Punching keeps the size (tests/sparse.rs covers holes in depth);
    // collapsing a range is refused cleanly.
    nix::fcntl::fallocate(
        f.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        4096,
    )
    .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    let r = nix::fcntl::fallocate(
        f.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_COLLAPSE_RANGE,
        0,
        64 << 10,
    );
    assert_eq!(r, Err(nix::errno::Errno::EOPNOTSUPP));
}

#[test]
fn posix_locks_and_flock() {
    let t = TestFs::new_mounted();
    let p = t.path("lock");
    fs::write(&p, b"0123456789").unwrap();
    let f1 = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let f2 = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // flock: exclusive on one open file description blocks the other.
    #[allow(deprecated)]
    use nix::fcntl::{flock, FlockArg};
    use std::os::fd::AsRawFd;
    #[allow(deprecated)]
    {
        flock(f1.as_raw_fd(), FlockArg::LockExclusiveNonblock).unwrap();
        assert_eq!(
            flock(f2.as_raw_fd(), FlockArg::LockExclusiveNonblock),
            Err(nix::errno::Errno::EWOULDBLOCK)
        );
        flock(f1.as_raw_fd(), FlockArg::Unlock).unwrap();
        flock(f2.as_raw_fd(), FlockArg::LockSharedNonblock).unwrap();
    }
    // POSIX byte-range locks are per process: test from a child process.
    let lk = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 2,
        l_len: 3,
        l_pid: 0,
    };
    assert_eq!(
        unsafe { libc::fcntl(f1.as_raw_fd(), libc::F_SETLK, &lk) },
        0
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import fcntl,errno,sys\nf=open({:?},'r+')\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, 3, 2)\n print('locked')\nexcept OSError as e:\n print('busy', e.errno)\nfcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, 2, 5)\nprint('other-range-ok')",
            p.display().to_string()
        ))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains(&format!("busy {}", libc::EAGAIN))
            || s.contains(&format!("busy {}", libc::EACCES)),
        "got {s} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.contains("other-range-ok"), "got {s}");
}

#[test]
fn mount_refuses_bad_mountpoints() {
    let t = TestFs::new(&[]);
    let missing = t.root.join("nope");
    let o = t.try_mount_at(&missing, &t.cache, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    let full = t.root.join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"").unwrap();
    let o = t.try_mount_at(&full, &t.cache, &[]);
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
}
