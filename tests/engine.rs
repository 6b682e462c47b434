//! Engine behaviour through real mounts: dedup, encryption, leases, crash
//! recovery, new-host rebuild, fault injection, corruption, backpressure.

mod common;
use common::*;
use std::fs::{self, File};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

#[test]
fn dedup_same_data_twice_stores_it_once() {
    let t = TestFs::new(&["--plain"]);
    t.mount(&[]);
    let data = random_bytes(100 * MIB as usize, 7);
    fs::write(t.path("a"), &data).unwrap();
    fs::write(t.path("b"), &data).unwrap();
    t.umount();
    let stored = t.stored_data_bytes();
    assert!(
        stored > 100 * MIB && stored < 105 * MIB,
        "200 MiB of files holding the same 100 MiB stored as {stored} bytes"
    );
    t.mount(&[]);
    let s = t.stat();
    assert_eq!(s["counts"]["logical_bytes"].as_u64().unwrap(), 200 * MIB);
    assert_eq!(s["counts"]["unique_bytes"].as_u64().unwrap(), 100 * MIB);
    assert_eq!(sha256_file(&t.path("b")), sha256_file(&t.path("a")));
}

#[test]
fn encryption_hides_names_and_content() {
    let marker = b"PLAINTEXT-MARKER-8d1f";
    let write = |t: &TestFs| {
        t.mount(&[]);
        let mut body = Vec::new();
        for _ in 0..2000 {
            body.extend_from_slice(marker);
        }
        fs::write(t.path("PLAINTEXT-MARKER-8d1f.txt"), &body).unwrap();
        fs::write(t.path("small"), marker).unwrap();
        t.umount();
    };
    // Control: without encryption or compression the scan does find it.
    let plain = TestFs::new(&["--plain", "--compression", "none"]);
    write(&plain);
    assert!(plain.store_contains(marker));
    let enc = TestFs::new(&["--passphrase", "correct horse"]);
    write(&enc);
    assert!(
        !enc.store_contains(marker),
        "plaintext leaked into the store"
    );
    // A wrong passphrase is refused with a clear message.
    let bad = enc.root.join("badpass");
    fs::write(&bad, "wrong horse\n").unwrap();
    let o = enc.try_mount_at(
        &enc.mp,
        &enc.cache,
        &["--passphrase-file", bad.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    // And the right one reads it back, from the store alone.
    fs::remove_dir_all(&enc.cache).unwrap();
    enc.mount(&[]);
    assert_eq!(fs::read(enc.path("small")).unwrap(), marker);
}

#[test]
fn second_live_mount_is_refused() {
    let t = TestFs::new_mounted();
    let mp2 = t.root.join("mp2");
    fs::create_dir(&mp2).unwrap();
    let o = t.try_mount_at(&mp2, &t.root.join("cache2"), &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("mounted by") && e.contains("Unmount it there"),
        "{e}"
    );
    // --takeover does not override a live lease either.
    let o = t.try_mount_at(&mp2, &t.root.join("cache2"), &["--takeover"]);
    assert!(!o.status.success(), "takeover of a live lease must fail");
}

fn write_lease(t: &TestFs, host: &str, expires_in: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let lease = serde_json::json!({
        "host": host, "pid": 1, "mount_id": "feedfeedfeedfeed",
        "acquired_unix": now - 100, "expires_unix": now + expires_in,
    });
    t.obj_put("lease", lease.to_string().as_bytes());
}

#[test]
fn expired_lease_of_another_host_needs_takeover() {
    let t = TestFs::new(&[]);
    write_lease(&t, "other-gateway", 3600);
    let o = t.try_mount_at(&t.mp, &t.cache, &[]);
    assert!(
        stderr(&o).contains("mounted by other-gateway"),
        "{}",
        stderr(&o)
    );
    write_lease(&t, "other-gateway", -10);
    let o = t.try_mount_at(&t.mp, &t.cache, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--takeover"), "{}", stderr(&o));
    t.mount(&["--takeover"]);
    fs::write(t.path("x"), b"mine now").unwrap();
}

#[test]
fn kill9_keeps_every_fsynced_file() {
    let t = TestFs::new_mounted();
    let done = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (d2, s2, mp) = (done.clone(), stop.clone(), t.mp.clone());
    let writer = std::thread::spawn(move || {
        for i in 0u64.. {
            if s2.load(Ordering::Relaxed) {
                break;
            }
            let data = random_bytes(10_000 + (i as usize * 7919) % 300_000, i);
            let r = (|| -> std::io::Result<()> {
                let mut f = File::create(mp.join(format!("f{i}")))?;
                f.write_all(&data)?;
                f.sync_all()
            })();
            if r.is_err() {
                break;
            }
            d2.lock().unwrap().push(i);
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    t.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let done = done.lock().unwrap().clone();
    assert!(
        done.len() > 5,
        "writer made too little progress: {}",
        done.len()
    );
    // Same host, same cache: the dead mount's lease is taken over.
    t.mount(&[]);
    for i in &done {
        let want = random_bytes(10_000 + (*i as usize * 7919) % 300_000, *i);
        assert_eq!(
            fs::read(t.path(&format!("f{i}"))).unwrap(),
            want,
            "fsynced file f{i} damaged"
        );
    }
    t.umount();
    // An object uploaded but not yet recorded when the process died is
    // an orphan fsck may delete: "repaired" (1) without loss is fine.
    let o = t.fsck(&["--verify-data"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "fsck after crash recovery: {out}"
    );
    assert!(!out.contains("DATA LOST"), "{out}");
    assert_eq!(t.fsck(&[]).status.code(), Some(0));
}

#[test]
fn new_host_after_crash_sees_what_was_shipped() {
    let t = TestFs::new(&[]);
    t.mount(&["--metadata-interval", "1s"]);
    for i in 0..20 {
        fs::write(t.path(&format!("old{i}")), random_bytes(50_000, i)).unwrap();
    }
    fs::create_dir(t.path("olddir")).unwrap();
    // Longer than the metadata interval plus the upload delay.
    std::thread::sleep(Duration::from_secs(4));
    t.kill9();
    // A new host: no local cache at all.
    let fresh = t.root.join("cache-new-host");
    ok(t.try_mount_at(&t.mp, &fresh, &[]));
    for i in 0..20 {
        assert_eq!(
            fs::read(t.path(&format!("old{i}"))).unwrap(),
            random_bytes(50_000, i)
        );
    }
    assert!(t.path("olddir").is_dir());
}

#[test]
fn durability_remote_fsync_reaches_the_store() {
    let t = TestFs::new(&[]);
    t.mount(&["--durability", "remote", "--metadata-interval", "1h"]);
    let data = random_bytes(500_000, 11);
    let mut f = File::create(t.path("durable")).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    t.kill9();
    let fresh = t.root.join("cache-new-host");
    ok(t.try_mount_at(&t.mp, &fresh, &[]));
    assert_eq!(fs::read(t.path("durable")).unwrap(), data);
}

#[test]
fn faulty_store_never_corrupts_data() {
    let mut t = TestFs::new(&[]);
    t.mount_env = vec![(
        "SWIFTGATE_FAULTS".into(),
        "error_rate=0.15,latency_ms=1".into(),
    )];
    t.mount(&[]);
    for i in 0..40u64 {
        fs::write(
            t.path(&format!("f{i}")),
            random_bytes(1000 + i as usize * 9000, i),
        )
        .unwrap();
    }
    fs::write(t.path("big"), random_bytes(3 * MIB as usize, 99)).unwrap();
    t.umount();
    t.mount_env.clear();
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    for i in 0..40u64 {
        assert_eq!(
            fs::read(t.path(&format!("f{i}"))).unwrap(),
            random_bytes(1000 + i as usize * 9000, i)
        );
    }
    assert_eq!(
        fs::read(t.path("big")).unwrap(),
        random_bytes(3 * MIB as usize, 99)
    );
    t.umount();
    let o = t.fsck(&["--verify-data"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

fn data_objects(t: &TestFs) -> Vec<String> {
    t.obj_keys("data/")
}

#[test]
fn corrupt_or_missing_object_gives_eio_and_fsck_reports_it() {
    let t = TestFs::new_mounted();
    fs::write(t.path("victim"), random_bytes(64 * 1024, 5)).unwrap();
    t.umount();
    let objs = data_objects(&t);
    assert_eq!(objs.len(), 1);
    let mut d = t.obj_get(&objs[0]);
    let n = d.len();
    d[n / 2] ^= 0x01;
    t.obj_put(&objs[0], &d);
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    assert_eq!(errno_of(fs::read(t.path("victim"))), libc::EIO);
    // Other files are unaffected and the filesystem keeps working.
    fs::write(t.path("fine"), b"ok").unwrap();
    assert_eq!(fs::read(t.path("fine")).unwrap(), b"ok");
    t.umount();
    let o = t.fsck(&["--verify-data"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("DATA LOST"), "{out}");
    // The report names the file by its path.
    assert!(out.contains("/victim block 0"), "{out}");
    // After the repair the damaged range still fails loudly (never silent
    // zeros), and fsck keeps saying so until the file is rewritten.
    t.mount(&[]);
    assert_eq!(errno_of(fs::read(t.path("victim"))), libc::EIO);
    assert_eq!(fs::read(t.path("fine")).unwrap(), b"ok");
    t.umount();
    let o = t.fsck(&[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("/victim block 0 was lost"), "{out}");
    t.mount(&[]);
    fs::write(t.path("victim"), b"rewritten").unwrap();
    t.umount();
    let o = t.fsck(&[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn fsck_removes_orphan_objects() {
    let t = TestFs::new_mounted();
    fs::write(t.path("a"), b"a").unwrap();
    t.umount();
    t.obj_put("data/ff/00000000000000ff", b"junk");
    let o = t.fsck(&[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!t.obj_exists("data/ff/00000000000000ff"));
    assert_eq!(t.fsck(&[]).status.code(), Some(0));
    // fsck refuses to run on a mounted filesystem.
    t.mount(&[]);
    let o = t.fsck(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("mounted by"), "{}", stderr(&o));
}

/// Wrong link counts and block refcounts in the shipped metadata are
/// found and repaired (fsck now asks SQLite for the wrong rows only).
#[test]
fn fsck_repairs_link_counts_and_refcounts() {
    let t = TestFs::new_mounted();
    fs::write(t.path("a"), random_bytes(200_000, 7)).unwrap();
    fs::write(t.path("b"), b"bee").unwrap();
    fs::create_dir(t.path("d")).unwrap();
    let uuid = t.stat()["uuid"].as_str().unwrap().to_string();
    t.umount();
    // Damage the local database; the next mount ships it whole (the file
    // no longer matches its shipping record).
    let db = t.cache.join(&uuid).join("meta.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        let ino = |name: &str| -> i64 {
            c.query_row(
                "SELECT ino FROM dentries WHERE parent=1 AND name=?1",
                [name.as_bytes()],
                |r| r.get(0),
            )
            .unwrap()
        };
        let (a, d) = (ino("a"), ino("d"));
        c.execute("UPDATE inodes SET nlink=5 WHERE ino=?1", [a])
            .unwrap();
        c.execute("UPDATE inodes SET nlink=9 WHERE ino=?1", [d])
            .unwrap();
        c.execute(
            "UPDATE blocks SET refcount=refcount+3 WHERE id=(SELECT block FROM file_blocks WHERE ino=?1 AND idx=0)",
            [a],
        )
        .unwrap();
    }
    t.mount(&[]);
    t.umount();
    let o = t.fsck(&[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("/a: link count 5 -> 1"), "{out}");
    assert!(out.contains("/d: link count 9 -> 2"), "{out}");
    assert!(out.contains("refcount 4 -> 1"), "{out}");
    assert!(!out.contains("/b:"), "{out}");
    assert_eq!(t.fsck(&[]).status.code(), Some(0));
    t.mount(&[]);
    assert_eq!(fs::read(t.path("a")).unwrap(), random_bytes(200_000, 7));
}

#[test]
fn mkfs_refuses_existing_and_foreign_stores() {
    let t = TestFs::new(&[]);
    let o = run(&["mkfs", &t.store, "--plain"]);
    assert!(
        stderr(&o).contains("already holds a swiftgate filesystem"),
        "{}",
        stderr(&o)
    );
    ok(run(&["mkfs", &t.store, "--plain", "--force"]));
    let foreign = unique_dir("foreign");
    fs::write(foreign.join("somebody-elses-file"), b"x").unwrap();
    let url = format!("local://{}", foreign.display());
    let o = run(&["mkfs", &url, "--plain"]);
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert!(foreign.join("somebody-elses-file").exists());
    let o = run(&["mkfs", "local://relative/path", "--plain"]);
    assert!(stderr(&o).contains("absolute"), "{}", stderr(&o));
    let o = run(&["mkfs", &url]);
    assert!(stderr(&o).contains("--passphrase-file"), "{}", stderr(&o));
    let _ = fs::remove_dir_all(&foreign);
}

#[test]
fn newer_format_is_refused() {
    let t = TestFs::new(&[]);
    let mut v: serde_json::Value = serde_json::from_slice(&t.obj_get("params")).unwrap();
    v["format_version"] = 99.into();
    t.obj_put("params", v.to_string().as_bytes());
    let o = t.try_mount_at(&t.mp, &t.cache, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("upgrade swiftgate"), "{}", stderr(&o));
}

#[test]
fn corrupt_metadata_snapshot_falls_back_a_generation() {
    let t = TestFs::new_mounted();
    fs::write(t.path("first"), b"1").unwrap();
    ok(run(&["ctl", t.mp.to_str().unwrap(), "backup-metadata"]));
    fs::write(t.path("second"), b"2").unwrap();
    t.umount();
    // The newest link: the segment the unmount shipped.
    let (latest, snap) = t.newest_link();
    assert!(snap.contains("/wal-"), "{snap}");
    let mut d = t.obj_get(&snap);
    let n = d.len();
    d[n - 10] ^= 0xff;
    t.obj_put(&snap, &d);
    fs::remove_dir_all(&t.cache).unwrap();
    // Refused unless told: what would be lost is said.
    let o = t.try_mount_at(&t.mp, &t.cache, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!("generation {latest} is unusable")),
        "{e}"
    );
    assert!(e.contains("--accept-rollback"), "{e}");
    let o = t.try_mount_at(&t.mp, &t.cache, &["--accept-rollback"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("generation {latest} is unusable")),
        "{e}"
    );
    assert_eq!(fs::read(t.path("first")).unwrap(), b"1");
    assert!(!t.path("second").exists());
}

#[test]
fn writes_wait_instead_of_failing_when_dirty_limit_is_reached() {
    let mut t = TestFs::new(&[]);
    // A slow store and a tiny cache: the writer must be throttled to the
    // upload rate, never get an error, and the cache must stay bounded.
    t.mount_env = vec![("SWIFTGATE_FAULTS".into(), "latency_ms=15".into())];
    t.mount(&[
        "--cache-size",
        "4M",
        "--dirty-limit",
        "2M",
        "--upload-workers",
        "2",
    ]);
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (p2, s2, cache) = (peak.clone(), stop.clone(), t.cache.clone());
    let mon = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            let mut used = 0;
            for sub in ["dirty", "blocks"] {
                if let Ok(rd) = fs::read_dir(&cache) {
                    for fsdir in rd.flatten() {
                        used += dir_size(&fsdir.path().join(sub));
                    }
                }
            }
            p2.fetch_max(used, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let data = random_bytes(24 * MIB as usize, 3);
    let start = Instant::now();
    let mut f = File::create(t.path("stream")).unwrap();
    for chunk in data.chunks(128 * 1024) {
        f.write_all(chunk).unwrap();
    }
    drop(f);
    stop.store(true, Ordering::Relaxed);
    mon.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    // Room for one block per writer beyond the limit, plus in-flight files.
    assert!(
        peak <= 4 * MIB + 1024 * 1024,
        "cache grew to {peak} bytes (limit 4 MiB)"
    );
    assert!(
        t.stat()["cache"]["writer_waits"].as_u64().unwrap() > 0,
        "writer never waited"
    );
    eprintln!(
        "24 MiB through a 4 MiB cache in {:?}, peak {peak} bytes",
        start.elapsed()
    );
    t.umount();
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount_env.clear();
    t.mount(&[]);
    assert_eq!(fs::read(t.path("stream")).unwrap(), data);
}

#[test]
fn small_files_are_packed() {
    let t = TestFs::new(&["--plain"]);
    t.mount(&[]);
    for i in 0..2000u64 {
        fs::write(
            t.path(&format!("small-{i}.txt")),
            random_bytes(2000 + (i as usize % 5000), i),
        )
        .unwrap();
    }
    t.umount();
    let objs = data_objects(&t).len();
    assert!(objs < 40, "2000 small files became {objs} objects");
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    for i in (0..2000u64).step_by(97) {
        assert_eq!(
            fs::read(t.path(&format!("small-{i}.txt"))).unwrap(),
            random_bytes(2000 + (i as usize % 5000), i)
        );
    }
}

#[test]
fn full_blocks_go_up_together_in_few_objects() {
    // 64 KiB blocks. 96 of them in one file, the last 16 repeating the
    // first 16 (stored once, even when they land in the same object).
    let t = TestFs::new_mounted();
    let mut data = random_bytes(80 << 16, 21);
    let head = data[..16 << 16].to_vec();
    data.extend_from_slice(&head);
    fs::write(t.path("big"), &data).unwrap();
    fs::write(t.path("other"), random_bytes(3 << 16, 22)).unwrap();
    t.umount();
    let objs = data_objects(&t).len();
    assert!(objs <= 12, "99 full blocks became {objs} objects");
    let stored: u64 = data_objects(&t)
        .iter()
        .map(|k| t.obj_get(k).len() as u64)
        .sum();
    assert!(
        stored < 84 << 16,
        "repeated blocks stored twice: {stored} bytes"
    );
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    assert_eq!(fs::read(t.path("big")).unwrap(), data);
    assert_eq!(
        fs::read(t.path("other")).unwrap(),
        random_bytes(3 << 16, 22)
    );
}

#[test]
fn umount_waits_for_uploads_and_new_host_sees_all() {
    let t = TestFs::new(&[]);
    t.mount(&["--upload-delay", "30s"]);
    fs::write(t.path("late"), random_bytes(300_000, 8)).unwrap();
    t.umount();
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    assert_eq!(fs::read(t.path("late")).unwrap(), random_bytes(300_000, 8));
}

#[test]
fn ctl_and_stat_commands() {
    let t = TestFs::new_mounted();
    fs::write(t.path("x"), random_bytes(200_000, 1)).unwrap();
    ok(run(&["ctl", t.mp.to_str().unwrap(), "flush"]));
    let s = t.stat();
    assert_eq!(s["cache"]["dirty_blocks"].as_u64().unwrap(), 0);
    ok(run(&["ctl", t.mp.to_str().unwrap(), "drop-cache"]));
    assert_eq!(t.stat()["cache"]["clean_blocks"].as_u64().unwrap(), 0);
    assert_eq!(fs::read(t.path("x")).unwrap(), random_bytes(200_000, 1));
    let human = ok(run(&["stat", t.mp.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&human.stdout).contains("files (inodes)"));
    let o = run(&["stat", t.root.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no swiftgate mount"), "{}", stderr(&o));
}

#[test]
fn full_cache_disk_makes_writers_wait_not_fail() {
    let t = TestFs::new(&[]);
    // The cache lives on a 24 MiB tmpfs but is told it may use 1 GiB: only
    // watching the disk itself keeps writes from failing with ENOSPC.
    fs::create_dir_all(&t.cache).unwrap();
    let src = std::ffi::CString::new("tmpfs").unwrap();
    let dst = std::ffi::CString::new(t.cache.to_str().unwrap()).unwrap();
    let opts = std::ffi::CString::new("size=24m").unwrap();
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    assert_eq!(
        r,
        0,
        "mounting a tmpfs: {}",
        std::io::Error::last_os_error()
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(t.cache.clone());
    t.mount(&["--cache-size", "1G", "--dirty-limit", "512M"]);
    let data = random_bytes(64 * MIB as usize, 21);
    let mut f = File::create(t.path("big")).unwrap();
    for chunk in data.chunks(256 * 1024) {
        f.write_all(chunk)
            .expect("a full cache disk must not fail writes");
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(t.path("big")).unwrap(), data);
    // Small files live in the cache's database: the same must hold there.
    fs::create_dir(t.path("small")).unwrap();
    for i in 0..3000u64 {
        fs::write(t.path(&format!("small/{i}")), random_bytes(8000, i))
            .expect("a full cache disk must not fail small writes");
    }
    for i in (0..3000u64).step_by(101) {
        assert_eq!(
            fs::read(t.path(&format!("small/{i}"))).unwrap(),
            random_bytes(8000, i)
        );
    }
    t.umount();
    let fresh = t.root.join("cache-new-host");
    ok(t.try_mount_at(&t.mp, &fresh, &[]));
    assert_eq!(fs::read(t.path("big")).unwrap(), data);
    assert_eq!(
        fs::read(t.path("small/2999")).unwrap(),
        random_bytes(8000, 2999)
    );
}

#[test]
fn mostly_dead_packs_are_rewritten_and_deleted() {
    let t = TestFs::new(&["--plain"]);
    // Nothing uploads before the flush: all files land in one pack, of
    // which 90% then dies.
    t.mount(&["--upload-delay", "60s"]);
    for i in 0..200u64 {
        fs::write(t.path(&format!("s{i}")), random_bytes(20_000, i)).unwrap();
    }
    ok(run(&["ctl", t.mp.to_str().unwrap(), "flush"]));
    let before = data_objects(&t);
    assert_eq!(before.len(), 1, "{before:?}");
    let bytes_before = t.stored_data_bytes();
    for i in 0..200u64 {
        if i % 10 != 0 {
            fs::remove_file(t.path(&format!("s{i}"))).unwrap();
        }
    }
    let o = ok(run(&["ctl", t.mp.to_str().unwrap(), "gc"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("\"packs_rewritten\":") && !out.contains("\"packs_rewritten\":0"),
        "{out}"
    );
    // The old packs go once two newer metadata generations are stored.
    for _ in 0..3 {
        ok(run(&["ctl", t.mp.to_str().unwrap(), "backup-metadata"]));
    }
    let after = data_objects(&t);
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "old packs still stored: {before:?} -> {after:?}"
    );
    let bytes_after = t.stored_data_bytes();
    assert!(
        bytes_after * 4 < bytes_before,
        "{bytes_before} -> {bytes_after} bytes"
    );
    // What is left reads back, also on a new host.
    t.umount();
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    for i in (0..200u64).step_by(10) {
        assert_eq!(
            fs::read(t.path(&format!("s{i}"))).unwrap(),
            random_bytes(20_000, i)
        );
    }
    t.umount();
    let o = t.fsck(&["--verify-data"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn closed_small_files_survive_kill9() {
    let t = TestFs::new_mounted();
    // Written in many pieces and closed, never fsynced: closed files are on
    // the local disk once the metadata group window (50 ms) has passed.
    for i in 0..50u64 {
        let data = random_bytes(30_000, i);
        let mut f = File::create(t.path(&format!("c{i}"))).unwrap();
        for piece in data.chunks(1000) {
            f.write_all(piece).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    t.kill9();
    t.mount(&[]);
    for i in 0..50u64 {
        assert_eq!(
            fs::read(t.path(&format!("c{i}"))).unwrap(),
            random_bytes(30_000, i),
            "c{i}"
        );
    }
}

/// SIGCONT on drop: a test that fails while a mount is stopped must not
/// leave it frozen (its unmount would hang).
struct Resume(i32);
impl Drop for Resume {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

/// A gateway VM paused past its lease (or cut off from the store) while
/// another mount takes the filesystem over: once it runs again it refuses
/// every change with EROFS instead of accepting writes that could never be
/// stored, still serves reads, and unmounts; the store holds the new
/// mount's state.
#[test]
fn a_mount_that_lost_its_lease_turns_read_only() {
    let t = TestFs::new(&[]);
    t.mount(&["--lease-ttl", "3s", "--metadata-interval", "1s"]);
    fs::write(t.path("before"), b"both see this").unwrap();
    ok(run(&["ctl", t.mp.to_str().unwrap(), "flush"]));
    let pid = t.stat()["pid"].as_u64().unwrap() as i32;
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let resume = Resume(pid);
    // The lease runs out while the old mount is frozen; a new host takes over.
    std::thread::sleep(Duration::from_secs(4));
    let mp2 = t.root.join("mp2");
    fs::create_dir(&mp2).unwrap();
    ok(t.try_mount_at(&mp2, &t.root.join("cache2"), &["--takeover"]));
    assert_eq!(fs::read(mp2.join("before")).unwrap(), b"both see this");
    fs::write(mp2.join("new-owner"), b"written after the takeover").unwrap();
    drop(resume);
    // It notices at its next lease renewal (a second) or shipment.
    wait_until(
        20,
        || errno_of(fs::write(t.path("late"), b"x")) == libc::EROFS,
        || "the superseded mount still accepts writes".into(),
    );
    for r in [
        errno_of(fs::create_dir(t.path("d"))),
        errno_of(fs::remove_file(t.path("before"))),
        errno_of(fs::rename(t.path("before"), t.path("moved"))),
        errno_of(fs::OpenOptions::new().append(true).open(t.path("before"))),
    ] {
        assert_eq!(r, libc::EROFS);
    }
    assert_eq!(fs::read(t.path("before")).unwrap(), b"both see this");
    assert_eq!(t.stat()["superseded"], true);
    // It unmounts (what it could not store is reported, not hung on).
    let _ = run(&["umount", t.mp.to_str().unwrap()]);
    wait_unmounted(&t.mp);
    assert!(!is_mounted(&t.mp));
    // The new owner is untouched, and a third host sees its state.
    fs::write(mp2.join("still"), b"fine").unwrap();
    ok(run(&["umount", mp2.to_str().unwrap()]));
    wait_unmounted(&mp2);
    ok(t.try_mount_at(&t.mp, &t.root.join("cache3"), &[]));
    assert_eq!(
        fs::read(t.path("new-owner")).unwrap(),
        b"written after the takeover"
    );
    assert_eq!(fs::read(t.path("still")).unwrap(), b"fine");
    assert!(!t.path("late").exists());
}

/// Requests that wait on the store (cold reads) go to the shared pool: the
/// mount's one reader goes on answering lookups and listings meanwhile,
/// even with more reads waiting than a fixed set of FUSE threads had (4).
#[test]
fn reads_waiting_on_a_slow_store_do_not_hold_up_lookups_and_listings() {
    let mut t = TestFs::new(&[]);
    t.mount(&[]);
    let size = 200_000;
    for i in 0..6u64 {
        fs::write(t.path(&format!("cold{i}")), random_bytes(size, i)).unwrap();
    }
    t.umount();
    // A new host: every block comes from the store, each read of one
    // waits 3 s; the metadata's own reads stay fast.
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount_env = vec![("SWIFTGATE_FAULTS".into(), "data_get_latency_ms=3000".into())];
    t.mount(&[]);
    let readers: Vec<_> = (0..6u64)
        .map(|i| {
            let p = t.path(&format!("cold{i}"));
            std::thread::spawn(move || fs::read(p).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let listed = fs::read_dir(&t.mp).unwrap().count();
    let meta = fs::metadata(t.path("cold5")).unwrap();
    let missing = errno_of(fs::metadata(t.path("not-there")));
    let took = t0.elapsed();
    let waiting = readers.iter().filter(|h| !h.is_finished()).count();
    assert_eq!(
        (listed, meta.len(), missing),
        (6, size as u64, libc::ENOENT)
    );
    assert_eq!(waiting, 6, "the reads were still waiting on the store");
    assert!(
        took < Duration::from_millis(1500),
        "a listing and two lookups took {took:?} while {waiting} reads waited"
    );
    for (i, h) in readers.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), random_bytes(size, i as u64), "cold{i}");
    }
    t.umount();
}
