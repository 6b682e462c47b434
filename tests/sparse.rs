//! Sparse files and server-side copy on a real mount: fallocate's punch
//! hole and zero range, SEEK_DATA/SEEK_HOLE, copy_file_range sharing
//! stored blocks, and ioctls answered without noise.

mod common;
use common::*;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The test filesystems' block size (TestFs: 64K).
const BS: u64 = 64 << 10;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> i32 {
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    if r == 0 {
        0
    } else {
        errno()
    }
}

/// lseek's result, or the errno.
fn seek(f: &File, off: u64, whence: i32) -> Result<u64, i32> {
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as i64, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as u64)
    }
}

/// copy_file_range until `len` bytes are copied (it may copy fewer per call).
fn copy_range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) {
    let (mut si, mut di) = (src_off as i64, dst_off as i64);
    let mut left = len as usize;
    while left > 0 {
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut si, dst.as_raw_fd(), &mut di, left, 0)
        };
        assert!(n > 0, "copy_file_range: {} (n={n})", errno());
        left -= n as usize;
    }
}

fn rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap()
}

fn read_at(f: &File, off: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

fn flush(t: &TestFs) {
    ok(run(&["ctl", t.mp.to_str().unwrap(), "flush"]));
}

fn data_objects(t: &TestFs) -> Vec<String> {
    t.obj_keys("data/")
}

#[track_caller]
fn fsck_clean(t: &TestFs) {
    let o = t.fsck(&["--verify-data"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "fsck not clean: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

#[test]
fn punch_hole_frees_whole_blocks_zeroes_partial_ones() {
    let t = TestFs::new_mounted();
    let p = t.path("f");
    let data = random_bytes(10 * BS as usize, 1);
    let f = rw(&p);
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    flush(&t);
    let logical = |t: &TestFs| t.stat()["counts"]["logical_bytes"].as_u64().unwrap();
    let logical_before = logical(&t);

    // [1.5, 5.5) blocks: blocks 2..5 freed, halves of 1 and 5 zeroed.
    let (off, len) = (BS + BS / 2, 4 * BS);
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(fallocate(&f, mode, off, len), 0, "punch hole");
    assert_eq!(f.metadata().unwrap().len(), data.len() as u64);
    let check = |f: &File| {
        let got = read_at(f, 0, data.len());
        let (a, b) = (off as usize, (off + len) as usize);
        assert!(got[..a] == data[..a], "data before the hole changed");
        assert!(got[a..b].iter().all(|&x| x == 0), "the hole is not zeros");
        assert!(got[b..] == data[b..], "data after the hole changed");
        // Holes are whole blocks: 2, 3, 4.
        assert_eq!(seek(f, 0, libc::SEEK_HOLE), Ok(2 * BS));
        assert_eq!(seek(f, 2 * BS + 7, libc::SEEK_HOLE), Ok(2 * BS + 7));
        assert_eq!(seek(f, 2 * BS, libc::SEEK_DATA), Ok(5 * BS));
        assert_eq!(seek(f, 5 * BS + 3, libc::SEEK_DATA), Ok(5 * BS + 3));
        assert_eq!(seek(f, 5 * BS, libc::SEEK_HOLE), Ok(10 * BS)); // the end
        assert_eq!(seek(f, 10 * BS, libc::SEEK_DATA), Err(libc::ENXIO));
    };
    check(&f);
    flush(&t);
    // The freed blocks no longer count.
    // Stat's counts are cached for 2 s.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(logical_before - logical(&t), 3 * BS, "3 blocks freed");
    drop(f);
    t.umount();
    fsck_clean(&t);
    t.mount(&[]);
    check(&File::open(&p).unwrap());
}

#[test]
fn punch_hole_discards_dirty_blocks() {
    let t = TestFs::new(&[]);
    // Blocks stay dirty in the cache while the test punches.
    t.mount(&["--upload-delay", "60s"]);
    let p = t.path("f");
    let mut data = random_bytes(4 * BS as usize, 2);
    let marker = b"PUNCHED-AWAY-MARKER-0123456789";
    data[(2 * BS) as usize..(2 * BS) as usize + marker.len()].copy_from_slice(marker);
    let f = rw(&p);
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(fallocate(&f, mode, 2 * BS, BS), 0);
    assert!(read_at(&f, 2 * BS, BS as usize).iter().all(|&x| x == 0));
    assert_eq!(seek(&f, 0, libc::SEEK_HOLE), Ok(2 * BS));
    assert_eq!(seek(&f, 2 * BS, libc::SEEK_DATA), Ok(3 * BS));
    flush(&t);
    assert!(
        !t.store_contains(marker),
        "the punched dirty block was uploaded"
    );
    drop(f);
    t.umount();
    fsck_clean(&t);
}

#[test]
fn zero_range_and_unsupported_modes() {
    let t = TestFs::new_mounted();
    let p = t.path("f");
    let data = random_bytes(3 * BS as usize, 3);
    let f = rw(&p);
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    // Within the file, keeping the size: block 1 becomes a hole.
    let zr = libc::FALLOC_FL_ZERO_RANGE;
    assert_eq!(
        fallocate(&f, zr | libc::FALLOC_FL_KEEP_SIZE, BS - 10, BS + 20),
        0
    );
    let got = read_at(&f, 0, data.len());
    assert!(got[..(BS - 10) as usize] == data[..(BS - 10) as usize]);
    assert!(got[(BS - 10) as usize..(2 * BS + 10) as usize]
        .iter()
        .all(|&x| x == 0));
    assert!(got[(2 * BS + 10) as usize..] == data[(2 * BS + 10) as usize..]);
    assert_eq!(seek(&f, 0, libc::SEEK_HOLE), Ok(BS));
    assert_eq!(f.metadata().unwrap().len(), 3 * BS);
    // Past the end with KEEP_SIZE: the size stays.
    assert_eq!(fallocate(&f, zr | libc::FALLOC_FL_KEEP_SIZE, 3 * BS, BS), 0);
    assert_eq!(f.metadata().unwrap().len(), 3 * BS);
    // Without: the file grows, and the new part is a hole.
    assert_eq!(fallocate(&f, zr, 2 * BS, 3 * BS), 0);
    assert_eq!(f.metadata().unwrap().len(), 5 * BS);
    assert!(read_at(&f, 2 * BS, 3 * BS as usize).iter().all(|&x| x == 0));
    assert_eq!(seek(&f, 2 * BS, libc::SEEK_HOLE), Ok(2 * BS));
    assert_eq!(seek(&f, 2 * BS, libc::SEEK_DATA), Err(libc::ENXIO));
    // Collapse and insert range renumber blocks: not supported, cleanly.
    for m in [libc::FALLOC_FL_COLLAPSE_RANGE, libc::FALLOC_FL_INSERT_RANGE] {
        assert_eq!(fallocate(&f, m, 0, BS), libc::EOPNOTSUPP, "mode {m:#x}");
    }
    assert_eq!(f.metadata().unwrap().len(), 5 * BS);
    // A file never written in the middle: a hole without any fallocate.
    // Not synced: the writes may still be in the kernel's page cache,
    // which lseek must see too.
    let q = rw(&t.path("g"));
    q.write_all_at(b"head", 0).unwrap();
    q.write_all_at(b"tail", 8 * BS).unwrap();
    assert_eq!(seek(&q, 0, libc::SEEK_HOLE), Ok(BS));
    assert_eq!(seek(&q, BS, libc::SEEK_DATA), Ok(8 * BS));
    assert!(read_at(&q, BS, BS as usize).iter().all(|&x| x == 0));
    drop((f, q));
    t.umount();
    fsck_clean(&t);
}

#[test]
fn copy_file_range_shares_blocks_and_copies_on_write() {
    let t = TestFs::new_mounted();
    let (ps, pd) = (t.path("src"), t.path("dst"));
    // 64 whole blocks and a partial tail.
    let data = random_bytes((64 * BS + 12345) as usize, 4);
    fs::write(&ps, &data).unwrap();
    flush(&t);
    let before = data_objects(&t);
    // Dedup alone would also store no new objects for a byte-for-byte
    // copy: shared blocks are not even uploaded and looked up again.
    let cache_counter = |t: &TestFs, k: &str| t.stat()["cache"][k].as_u64().unwrap();
    let (up_before, dedup_before) = (
        cache_counter(&t, "uploaded_bytes"),
        cache_counter(&t, "dedup_hits"),
    );

    let src = File::open(&ps).unwrap();
    let dst = rw(&pd);
    let started = std::time::Instant::now();
    copy_range(&src, 0, &dst, 0, data.len() as u64);
    let took = started.elapsed();
    drop(dst);
    flush(&t);
    assert_eq!(
        data_objects(&t),
        before,
        "the copy stored new objects (took {took:?})"
    );
    assert_eq!(sha256_file(&pd), sha256_file(&ps));
    assert_eq!(
        cache_counter(&t, "uploaded_bytes"),
        up_before,
        "bytes uploaded"
    );
    assert_eq!(
        cache_counter(&t, "dedup_hits"),
        dedup_before,
        "blocks deduplicated"
    );

    // Copy-on-write: a write to either leaves the other alone.
    let dst = rw(&pd);
    dst.write_all_at(b"DST-ONLY", 3 * BS + 5).unwrap();
    dst.sync_all().unwrap();
    let srcw = rw(&ps);
    srcw.write_all_at(b"SRC-ONLY", 7 * BS).unwrap();
    srcw.sync_all().unwrap();
    let mut want_dst = data.clone();
    want_dst[(3 * BS + 5) as usize..(3 * BS + 13) as usize].copy_from_slice(b"DST-ONLY");
    let mut want_src = data.clone();
    want_src[(7 * BS) as usize..(7 * BS + 8) as usize].copy_from_slice(b"SRC-ONLY");
    assert!(fs::read(&pd).unwrap() == want_dst, "dst after the writes");
    assert!(fs::read(&ps).unwrap() == want_src, "src after the writes");
    drop((dst, srcw, src));

    // Survives a remount, and the source's deletion.
    t.umount();
    fsck_clean(&t);
    t.mount(&[]);
    assert!(fs::read(&pd).unwrap() == want_dst, "dst after remount");
    fs::remove_file(&ps).unwrap();
    flush(&t);
    ok(run(&["ctl", t.mp.to_str().unwrap(), "drop-cache"]));
    assert!(fs::read(&pd).unwrap() == want_dst, "dst after src deleted");
    t.umount();
    fsck_clean(&t);
}

#[test]
fn copy_file_range_partial_unaligned_and_dirty() {
    let t = TestFs::new(&[]);
    t.mount(&["--upload-delay", "60s"]);
    let (ps, pd) = (t.path("src"), t.path("dst"));
    let data = random_bytes((8 * BS + 100) as usize, 5);
    // Still dirty in the cache when copied.
    let src = rw(&ps);
    src.write_all_at(&data, 0).unwrap();
    let old = random_bytes((10 * BS) as usize, 6);
    let dst = rw(&pd);
    dst.write_all_at(&old, 0).unwrap();
    // Same offset within a block: head, shared blocks, tail into the
    // middle of a larger file (whose bytes after the copy stay).
    let (so, d_o, n) = (BS / 2, BS + BS / 2, 6 * BS + 77);
    copy_range(&src, so, &dst, d_o, n);
    let mut want = old.clone();
    want[d_o as usize..(d_o + n) as usize].copy_from_slice(&data[so as usize..(so + n) as usize]);
    assert!(read_at(&dst, 0, want.len()) == want, "aligned copy");
    // The whole blocks in the middle were shared, not written again (a
    // copy by writing would store them again and find them by hash).
    dst.sync_all().unwrap();
    flush(&t);
    assert_eq!(t.stat()["cache"]["dedup_hits"].as_u64(), Some(0));
    // Different offsets within a block: read and written.
    copy_range(&src, 3, &dst, 1000, 2 * BS);
    want[1000..1000 + (2 * BS) as usize].copy_from_slice(&data[3..3 + (2 * BS) as usize]);
    assert!(read_at(&dst, 0, want.len()) == want, "unaligned copy");
    // Past the source's end: nothing.
    let (mut si, mut di) = (data.len() as i64, 0i64);
    let r =
        unsafe { libc::copy_file_range(src.as_raw_fd(), &mut si, dst.as_raw_fd(), &mut di, 10, 0) };
    assert_eq!(r, 0);
    dst.sync_all().unwrap();
    drop((src, dst));
    t.umount();
    fsck_clean(&t);
    t.mount(&[]);
    assert!(fs::read(&pd).unwrap() == want, "after remount");
}

/// Samba's server-side copy: copy_file_range calls of at most 1 MiB
/// (COPYCHUNK_MAX_CHUNK_LEN), in order, on the default 4 MiB blocks, where
/// no call covers a whole block.
const CHUNK: u64 = 1 << 20;

fn copy_in_chunks(src: &File, dst: &File, len: u64) {
    let mut off = 0;
    while off < len {
        let n = CHUNK.min(len - off);
        copy_range(src, off, dst, off, n);
        off += n;
    }
}

#[test]
fn chunked_copy_shares_default_size_blocks_and_hides_bytes_past_the_end() {
    // mkfs's default block size (4 MiB), as the gateway's homes.
    let t = TestFs::new(&["--plain"]);
    t.mount(&[]);
    const BIG: u64 = 4 << 20;
    let (ps, pd) = (t.path("src"), t.path("dst"));
    // 3.5 blocks and a tail.
    let data = random_bytes((3 * BIG + BIG / 2 + 12345) as usize, 7);
    fs::write(&ps, &data).unwrap();
    flush(&t);
    let before = data_objects(&t);
    let cache_counter = |t: &TestFs, k: &str| t.stat()["cache"][k].as_u64().unwrap();
    let (up_before, dedup_before) = (
        cache_counter(&t, "uploaded_bytes"),
        cache_counter(&t, "dedup_hits"),
    );

    let src = File::open(&ps).unwrap();
    let dst = rw(&pd);
    let started = std::time::Instant::now();
    copy_in_chunks(&src, &dst, data.len() as u64);
    let took = started.elapsed();
    drop(dst);
    flush(&t);
    // A copy by reading and writing stores nothing new either (dedup),
    // but uploads or looks up every block: both counters stay.
    assert_eq!(data_objects(&t), before, "the copy stored new objects");
    assert_eq!(
        cache_counter(&t, "uploaded_bytes"),
        up_before,
        "bytes uploaded"
    );
    assert_eq!(
        cache_counter(&t, "dedup_hits"),
        dedup_before,
        "blocks deduplicated"
    );
    assert_eq!(sha256_file(&pd), sha256_file(&ps));
    assert!(took.as_secs_f64() < 2.0, "the copy took {took:?}");

    // Copies stopped in the middle of a block (5 MiB: block 1 is shared
    // and holds the source's bytes past the copy's end), then grown in
    // every way: what lies between the old end and the new reads as zeros.
    let cut = 5u64 << 20;
    let partial = |name: &str| {
        let p = t.path(name);
        let f = rw(&p);
        copy_in_chunks(&File::open(&ps).unwrap(), &f, cut);
        assert_eq!(f.metadata().unwrap().len(), cut);
        f
    };
    let want_grown = |size: u64| {
        let mut w = data[..cut as usize].to_vec();
        w.resize(size as usize, 0);
        w
    };
    let grown = 9u64 << 20;
    // truncate growing the file.
    let f_trunc = partial("trunc");
    f_trunc.set_len(grown).unwrap();
    assert!(
        read_at(&f_trunc, 0, grown as usize) == want_grown(grown),
        "truncate up"
    );
    // A write past the end, in a later block.
    let f_write = partial("write");
    f_write.write_all_at(b"END", grown).unwrap();
    let mut want_write = want_grown(grown);
    want_write.extend_from_slice(b"END");
    assert!(
        read_at(&f_write, 0, want_write.len()) == want_write,
        "write past the end"
    );
    // A write past the end within the shared block.
    let f_near = partial("near");
    f_near.write_all_at(b"NEAR", cut + 1000).unwrap();
    let mut want_near = want_grown(cut + 1000);
    want_near.extend_from_slice(b"NEAR");
    assert!(
        read_at(&f_near, 0, want_near.len()) == want_near,
        "write in the block"
    );
    // fallocate growing the size.
    let f_alloc = partial("alloc");
    assert_eq!(fallocate(&f_alloc, 0, 0, grown), 0, "fallocate");
    assert!(
        read_at(&f_alloc, 0, grown as usize) == want_grown(grown),
        "fallocate up"
    );
    // A copy further on: a gap, then the source's bytes.
    let f_gap = partial("gap");
    let (gs, gn) = (2 * BIG, CHUNK);
    copy_range(&src, gs, &f_gap, grown, gn);
    let mut want_gap = want_grown(grown);
    want_gap.extend_from_slice(&data[gs as usize..(gs + gn) as usize]);
    assert!(
        read_at(&f_gap, 0, want_gap.len()) == want_gap,
        "copy past the end"
    );
    drop((f_trunc, f_write, f_near, f_alloc, f_gap));

    // Copy-on-write: later writes to either file leave the other alone.
    let dst = rw(&pd);
    dst.write_all_at(b"DST-ONLY", BIG + 5).unwrap();
    let srcw = rw(&ps);
    srcw.write_all_at(b"SRC-ONLY", 3 * BIG + 7).unwrap();
    let mut want_dst = data.clone();
    want_dst[(BIG + 5) as usize..(BIG + 13) as usize].copy_from_slice(b"DST-ONLY");
    let mut want_src = data.clone();
    want_src[(3 * BIG + 7) as usize..(3 * BIG + 15) as usize].copy_from_slice(b"SRC-ONLY");
    assert!(fs::read(&pd).unwrap() == want_dst, "dst after the writes");
    assert!(fs::read(&ps).unwrap() == want_src, "src after the writes");
    drop((dst, srcw, src));

    let check_all = |when: &str| {
        assert!(fs::read(&pd).unwrap() == want_dst, "dst {when}");
        assert!(fs::read(&ps).unwrap() == want_src, "src {when}");
        assert!(
            fs::read(t.path("trunc")).unwrap() == want_grown(grown),
            "trunc {when}"
        );
        assert!(
            fs::read(t.path("write")).unwrap() == want_write,
            "write {when}"
        );
        assert!(
            fs::read(t.path("near")).unwrap() == want_near,
            "near {when}"
        );
        assert!(
            fs::read(t.path("alloc")).unwrap() == want_grown(grown),
            "alloc {when}"
        );
        assert!(fs::read(t.path("gap")).unwrap() == want_gap, "gap {when}");
    };
    t.umount();
    fsck_clean(&t);
    t.mount(&[]);
    ok(run(&["ctl", t.mp.to_str().unwrap(), "drop-cache"]));
    check_all("after remount");
    // A partial copy left as it is survives a remount; growing it then
    // still shows zeros.
    let f = partial("late");
    drop(f);
    t.umount();
    fsck_clean(&t);
    t.mount(&[]);
    let f = rw(&t.path("late"));
    assert!(
        read_at(&f, 0, cut as usize) == data[..cut as usize],
        "late copy"
    );
    f.set_len(grown).unwrap();
    assert!(
        read_at(&f, 0, grown as usize) == want_grown(grown),
        "late copy grown"
    );
    drop(f);
    t.umount();
    fsck_clean(&t);
}

#[test]
fn unsupported_ioctls_get_enotty_without_log_noise() {
    let t = TestFs::new_mounted();
    let p = t.path("f");
    fs::write(&p, b"x").unwrap();
    let f = File::open(&p).unwrap();
    // FS_IOC_GETVERSION: passed through to the filesystem by FUSE.
    let mut v: libc::c_long = 0;
    for _ in 0..50 {
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETVERSION, &mut v) };
        assert_eq!(r, -1);
        assert_eq!(errno(), libc::ENOTTY);
    }
    let log = fs::read_to_string(t.cache.join("mount.log")).unwrap_or_default();
    assert!(
        !log.contains("Not Implemented"),
        "mount.log warns about ioctls: {}",
        log.lines()
            .filter(|l| l.contains("Not Implemented"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
