//! Quotas on a real mount (`swiftgate mount --quota`): EDQUOT where the
//! writer waits for it, statvfs showing the quota, the recycle bin never
//! refused. (Refusals at writeback: tests/gateway_quota.rs, where a quota
//! can be set on a mounted filesystem.)

mod common;
use common::*;
use std::fs::{self, File};
use std::os::fd::AsRawFd;

const MIB: u64 = 1 << 20;

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn statvfs(p: &std::path::Path) -> libc::statvfs {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s
}

#[test]
fn quota_refuses_growth_with_edquot_and_never_the_recycle_bin() {
    let t = TestFs::new(&[]);
    t.mount(&["--quota", "8M,6"]);
    let s = statvfs(&t.mp);
    assert_eq!(s.f_blocks * s.f_frsize, 8 * MIB, "capacity = the quota");
    assert_eq!(s.f_files, 6);

    let keep = random_bytes(7 * MIB as usize, 1);
    fs::write(t.path("keep"), &keep).unwrap();
    let s = statvfs(&t.mp);
    assert_eq!(s.f_bavail * s.f_frsize, MIB, "free = quota - used");
    assert_eq!(s.f_ffree, 6 - 2);

    // A write past the quota fails in the writer's call (under a byte
    // quota, files open for writing without the page cache).
    let big = fs::write(t.path("big"), random_bytes(2 * MIB as usize, 2));
    assert_eq!(errno_of(big), Some(libc::EDQUOT));
    // Growing truncate and fallocate: refused up front.
    let f = File::create(t.path("sized")).unwrap();
    assert_eq!(errno_of(f.set_len(10 * MIB)), Some(libc::EDQUOT));
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 10 * MIB as i64) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EDQUOT)
    );
    drop(f);
    // The quota and its use in `stat`.
    let st = t.stat();
    assert_eq!(st["quota"]["bytes"].as_u64(), Some(8 * MIB), "{st}");
    // The refused write may have stored what fitted (a short write).
    let used = st["quota_use"]["bytes"].as_u64().unwrap();
    assert!((7 * MIB..=8 * MIB).contains(&used), "{st}");
    // Files: root, keep, big, sized, now one more, then the limit.
    fs::write(t.path("five"), b"5").unwrap();
    fs::write(t.path("six"), b"6").unwrap();
    assert_eq!(errno_of(File::create(t.path("seven"))), Some(libc::EDQUOT));
    assert_eq!(errno_of(fs::create_dir(t.path("dir"))), Some(libc::EDQUOT));
    // Samba's recycle bin: its folders and the move into them always work.
    fs::create_dir_all(t.path("#recycle/sub")).unwrap();
    fs::rename(t.path("keep"), t.path("#recycle/sub/keep")).unwrap();
    assert_eq!(fs::read(t.path("#recycle/sub/keep")).unwrap(), keep);
    // Deleting makes room again.
    fs::remove_file(t.path("big")).unwrap();
    fs::remove_file(t.path("five")).unwrap();
    fs::remove_file(t.path("six")).unwrap();
    fs::write(t.path("again"), b"x").unwrap();

    // Nothing written before was lost, and without --quota the mount is
    // as large as ever.
    t.umount();
    t.mount(&[]);
    assert_eq!(fs::read(t.path("#recycle/sub/keep")).unwrap(), keep);
    let s = statvfs(&t.mp);
    assert!(s.f_blocks * s.f_frsize > 1 << 40);
}
