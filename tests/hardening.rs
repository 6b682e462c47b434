//! What a file server must never do, through real mounts: show one user's
//! bytes to another local user, lose data behind a damaged metadata
//! snapshot, hang writers on a full disk, trust sizes read from the store.

mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file and directory under `root` (symlinks not followed).
fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
        out.push((p, m));
    }
    out
}

/// Files under `dirs` that are open to others, as "path mode" lines.
fn open_to_others(dirs: &[&Path]) -> Vec<String> {
    let mut bad = Vec::new();
    for d in dirs {
        for (p, m) in walk(d) {
            if m.file_type().is_symlink() {
                continue;
            }
            if m.mode() & 0o077 != 0 || m.uid() != 0 {
                bad.push(format!(
                    "{} {:o} uid {}",
                    p.display(),
                    m.mode() & 0o7777,
                    m.uid()
                ));
            }
        }
    }
    bad
}

/// What `nobody` finds when it greps everything under `dirs` for `needle`.
fn nobody_finds(dirs: &[&Path], needle: &str) -> String {
    let mut c = Command::new("runuser");
    c.args(["-u", "nobody", "--", "grep", "-rla", needle]);
    c.args(dirs);
    let o = c.output().expect("runuser");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn other_local_users_read_nothing_of_the_cache_or_the_store() {
    let t = TestFs::new(&["--plain", "--block-size", "64K"]);
    // The test's own root is the test's: let others reach what swiftgate
    // made inside it, so only swiftgate's own modes protect it.
    fs::set_permissions(&t.root, fs::Permissions::from_mode(0o755)).unwrap();
    t.mount(&[]);
    let secret = format!("SECRET-{}", std::process::id());
    {
        let mut f = fs::File::create(t.path(&format!("{secret}.txt"))).unwrap();
        f.write_all(format!("{secret} payroll\n").as_bytes())
            .unwrap();
        f.write_all(&random_bytes(300_000, 7)).unwrap();
        f.sync_all().unwrap();
    }
    let store_dir = t.root.join("store");
    let mut dirs: Vec<&Path> = vec![&t.cache];
    if !swift_mode() {
        dirs.push(&store_dir);
    }
    // While mounted (WAL files, dirty blocks, the log) ...
    let bad = open_to_others(&dirs);
    assert!(bad.is_empty(), "open to other users:\n{}", bad.join("\n"));
    let found = nobody_finds(&dirs, &secret);
    assert!(found.is_empty(), "nobody can read: {found}");
    // ... and after everything went up.
    t.umount();
    let bad = open_to_others(&dirs);
    assert!(bad.is_empty(), "open to other users:\n{}", bad.join("\n"));
    assert!(nobody_finds(&dirs, &secret).is_empty());

    // An install from before this rule is tightened at the next mount.
    for d in &dirs {
        for (p, m) in walk(d) {
            let mode = if m.is_dir() { 0o755 } else { 0o644 };
            if !m.file_type().is_symlink() {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }
    t.mount(&[]);
    // The two roots the operator named stay as they are (one could be a
    // shared directory); everything swiftgate put in them is closed.
    let bad: Vec<String> = open_to_others(&dirs)
        .into_iter()
        .filter(|l| {
            !dirs
                .iter()
                .any(|d| l.starts_with(&format!("{} ", d.display())))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "left open after a mount:\n{}",
        bad.join("\n")
    );
    assert!(nobody_finds(&dirs, &secret).is_empty());
}

fn latest_gen(t: &TestFs) -> u64 {
    t.newest_link().0
}

/// Every data object with a digest of its bytes.
fn data_digests(t: &TestFs) -> Vec<(String, String)> {
    let st = t.objects();
    t.obj_keys("data/")
        .into_iter()
        .map(|k| {
            let d = st.get(&k).unwrap();
            let h = swiftgate::data::sha256(&d);
            (k, h.iter().map(|b| format!("{b:02x}")).collect())
        })
        .collect()
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_damaged_newest_snapshot_is_never_a_silent_rollback() {
    let t = TestFs::new_mounted();
    fs::write(t.path("first"), b"1").unwrap();
    ok(run(&["ctl", t.mp.to_str().unwrap(), "backup-metadata"]));
    // Written after that generation: a large file and small ones, whose
    // only record is the newest snapshot.
    fs::write(t.path("big"), random_bytes(3 << 20, 11)).unwrap();
    for i in 0..20 {
        fs::write(t.path(&format!("small-{i}")), format!("small {i}")).unwrap();
    }
    t.umount();
    let (latest, snap) = t.newest_link();
    let damaged = t.obj_get(&snap)[..100].to_vec();
    t.obj_put(&snap, &damaged);
    let before = data_digests(&t);
    assert!(!before.is_empty());

    // fsck refuses to judge from an older generation unless told, and says
    // what is lost; exit 2; nothing changes.
    for args in [
        &[][..],
        &["--dry-run"][..],
        &["--dry-run", "--accept-rollback"][..],
    ] {
        let o = t.fsck(args);
        let s = out(&o);
        assert_eq!(o.status.code(), Some(2), "fsck {args:?}: {s}");
        assert!(
            s.contains(&format!("generation {latest} is unusable")),
            "{s}"
        );
        assert!(s.contains("--accept-rollback"), "{s}");
        assert!(!s.contains("repaired"), "{s}");
        assert_eq!(data_digests(&t), before);
        assert_eq!(t.obj_get(&snap), damaged);
        assert_eq!(latest_gen(&t), latest);
    }
    // A new host (no cache) refuses too, and leaves the store alone.
    fs::remove_dir_all(&t.cache).unwrap();
    let o = t.try_mount_at(&t.mp, &t.cache, &[]);
    let s = out(&o);
    assert!(!o.status.success(), "{s}");
    assert!(s.contains("--accept-rollback"), "{s}");
    assert!(s.contains("ago"), "the age of the generation used: {s}");
    assert!(!is_mounted(&t.mp));
    assert_eq!(data_digests(&t), before);
    assert_eq!(t.obj_get(&snap), damaged);

    // Told to: the repair keeps every object (quarantined), keeps the
    // damaged snapshot aside and numbers its generation above it.
    let o = t.fsck(&["--accept-rollback"]);
    let s = out(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(s.contains("quarantined"), "{s}");
    for (k, _) in &before {
        assert!(t.obj_exists(k), "{k} deleted: {s}");
    }
    assert_eq!(t.obj_get(&snap.replace("meta/", "meta/damaged-")), damaged);
    assert!(latest_gen(&t) > latest, "{s}");
    // Later runs still keep (and list) them until released.
    let o = t.fsck(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert_eq!(data_digests(&t).len(), before.len());

    // The rolled-back filesystem mounts and works; new objects never
    // overwrite the quarantined ones.
    t.mount(&[]);
    assert_eq!(fs::read(t.path("first")).unwrap(), b"1");
    assert!(!t.path("big").exists());
    fs::write(t.path("third"), random_bytes(2 << 20, 12)).unwrap();
    for i in 0..30 {
        fs::write(t.path(&format!("new-{i}")), format!("new {i}")).unwrap();
    }
    t.umount();
    let after = data_digests(&t);
    for (k, h) in &before {
        assert!(
            after.iter().any(|(k2, h2)| k2 == k && h2 == h),
            "{k} was overwritten or deleted"
        );
    }
    assert_eq!(t.obj_get(&snap.replace("meta/", "meta/damaged-")), damaged);
    // Released by the operator: deleted now, and fsck is clean after.
    let o = t.fsck(&["--release-quarantine"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let o = t.fsck(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    t.mount(&[]);
    assert_eq!(
        fs::read(t.path("third")).unwrap(),
        random_bytes(2 << 20, 12)
    );
    t.umount();
}

#[test]
fn sizes_and_costs_read_from_the_store_are_bounded() {
    let t = TestFs::new(&["--passphrase", "pw", "--block-size", "64K"]);
    let good = t.obj_get("params");
    let mut p: serde_json::Value = serde_json::from_slice(&good).unwrap();
    for (field, value, says) in [
        ("m_cost_kib", 4_000_000_000u64, "Argon2 memory"),
        ("t_cost", 1_000_000, "Argon2 passes"),
        ("p_cost", 255, "Argon2 lanes"),
    ] {
        let mut q = p.clone();
        q["encryption"]["kdf"][field] = value.into();
        t.obj_put("params", &serde_json::to_vec(&q).unwrap());
        let started = std::time::Instant::now();
        let o = t.try_mount_at(&t.mp, &t.cache, &[]);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(e.contains(says) && e.contains("tampered"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(!is_mounted(&t.mp));
    }
    p["block_size"] = (1u64 << 31).into();
    t.obj_put("params", &serde_json::to_vec(&p).unwrap());
    let e = stderr(&t.try_mount_at(&t.mp, &t.cache, &[]));
    assert!(e.contains("block size"), "{e}");
    // An oversized params object is refused, not read into memory.
    let mut huge = good.clone();
    huge.resize(1 << 20, b' ');
    t.obj_put("params", &huge);
    let e = stderr(&t.try_mount_at(&t.mp, &t.cache, &[]));
    assert!(e.contains("larger than"), "{e}");
    t.obj_put("params", &good);
    t.mount(&[]);
    fs::write(t.path("ok"), b"fine").unwrap();
    t.umount();
}

#[test]
fn a_record_claiming_gigabytes_reads_as_eio() {
    // Unencrypted: the header is not authenticated.
    let t = TestFs::new_mounted();
    fs::write(t.path("victim"), random_bytes(40_000, 3)).unwrap();
    t.umount();
    let objs = t.obj_keys("data/");
    assert_eq!(objs.len(), 1);
    let mut d = t.obj_get(&objs[0]);
    // The first record follows the object's lead; its plain_len comes
    // after "SGR", version, flags.
    let lead = swiftgate::data::OBJECT_LEAD;
    assert_eq!(&d[..lead.len()], lead);
    let r = lead.len();
    assert_eq!(&d[r..r + 3], b"SGR");
    d[r + 5..r + 9].copy_from_slice(&u32::MAX.to_le_bytes());
    t.obj_put(&objs[0], &d);
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    assert_eq!(errno_of(fs::read(t.path("victim"))), libc::EIO);
    let log = fs::read_to_string(t.cache.join("mount.log")).unwrap_or_default();
    assert!(log.contains("more than the"), "{log}");
}

/// A tmpfs of `size` at `at`, unmounted on drop (also when a test fails).
struct SmallDisk(PathBuf);
impl SmallDisk {
    fn new(at: &Path, size: &str) -> SmallDisk {
        fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        SmallDisk(at.to_path_buf())
    }
    /// Fill it to the last byte with a file that is not swiftgate's.
    fn fill(&self) -> PathBuf {
        let p = self.0.join("ballast");
        let mut f = fs::File::create(&p).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let small = [0u8; 4096];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        p
    }
}
impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn fs_uuid(t: &TestFs) -> String {
    let p: serde_json::Value = serde_json::from_slice(&t.obj_get("params")).unwrap();
    p["uuid"].as_str().unwrap().to_string()
}

/// The reproduction: a cache disk filled by someone else, then a writer
/// with fsync. It must get ENOSPC within the bound, stay killable, and
/// lose nothing fsynced before; the mount keeps serving.
fn full_disk_gives_enospc(t: &TestFs, disk: &SmallDisk) {
    t.mount(&[
        "--enospc-after",
        "5s",
        "--cache-size",
        "1G",
        "--dirty-limit",
        "512M",
    ]);
    let keep = random_bytes(8 << 20, 31);
    {
        let mut f = fs::File::create(t.path("keep")).unwrap();
        f.write_all(&keep).unwrap();
        f.sync_all().unwrap();
    }
    let ballast = disk.fill();
    let started = std::time::Instant::now();
    let o = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "60",
            "dd",
            "if=/dev/urandom",
            "bs=1M",
            "count=100",
            "conv=fsync",
        ])
        .arg(format!("of={}", t.path("big").display()))
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "dd: {err}");
    assert!(err.contains("No space left on device"), "dd: {err}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "dd took {took:?}"
    );
    // Still serving, nothing fsynced lost.
    assert_eq!(fs::read(t.path("keep")).unwrap(), keep);
    assert!(is_mounted(&t.mp));
    // Room again: writes work again.
    fs::remove_file(&ballast).unwrap();
    let _ = fs::remove_file(t.path("big"));
    {
        let mut f = fs::File::create(t.path("after")).unwrap();
        f.write_all(&random_bytes(4 << 20, 32)).unwrap();
        f.sync_all().unwrap();
    }
    t.umount();
    t.mount(&[]);
    assert_eq!(fs::read(t.path("keep")).unwrap(), keep);
    assert_eq!(
        fs::read(t.path("after")).unwrap(),
        random_bytes(4 << 20, 32)
    );
    t.umount();
}

#[test]
fn a_cache_disk_filled_from_outside_gives_enospc_not_a_hang() {
    let t = TestFs::new(&[]);
    // The filesystem's cache on a 200 MiB disk, the log beside it.
    let disk = SmallDisk::new(&t.cache.join(fs_uuid(&t)), "200m");
    full_disk_gives_enospc(&t, &disk);
    let log = fs::read_to_string(t.cache.join("mount.log")).unwrap();
    let lines = log.lines().filter(|l| l.contains("cache disk")).count();
    assert!(lines <= 10, "{lines} lines about the full disk:\n{log}");
    assert!(log.contains("ENOSPC"), "{log}");
    // The room kept for commits let every group commit land.
    assert!(!log.contains("dropped the changes"), "{log}");
}

#[test]
fn a_full_log_disk_does_not_kill_the_mount() {
    let t = TestFs::new(&[]);
    // The log on the same full disk as the cache.
    let disk = SmallDisk::new(&t.cache, "200m");
    full_disk_gives_enospc(&t, &disk);
}

#[test]
fn the_cache_counts_live_blocks_and_says_what_is_pinned() {
    let t = TestFs::new_mounted();
    // Create and delete several rounds of files; keep the last round.
    let mut live = 0u64;
    for round in 0..3 {
        let dir = t.path(&format!("r{round}"));
        fs::create_dir(&dir).unwrap();
        for i in 0..60u64 {
            let n = [3_000usize, 70_000, 200_000][(i % 3) as usize];
            fs::write(dir.join(format!("f{i}")), random_bytes(n, round * 1000 + i)).unwrap();
            if round == 2 {
                live += n as u64;
            }
        }
        ok(run(&["ctl", t.mp.to_str().unwrap(), "flush"]));
        if round < 2 {
            fs::remove_dir_all(&dir).unwrap();
        }
    }
    let s = t.stat();
    let used = s["cache"]["used_bytes"].as_u64().unwrap();
    let clean = s["cache"]["clean_bytes"].as_u64().unwrap();
    // Only the live round's blocks are still cached (1% slack for rounding).
    assert!(
        used <= live + live / 100,
        "cache counts {used} bytes for {live} live: {s}"
    );
    assert_eq!(clean, used, "{s}");
    assert_eq!(s["counts"]["file_bytes"].as_u64().unwrap(), live, "{s}");
    // ... and the disk agrees: no file of a deleted block is left.
    let blocks_dir = t.cache.join(fs_uuid(&t)).join("blocks");
    let on_disk: u64 = walk(&blocks_dir)
        .iter()
        .filter(|(_, m)| m.is_file())
        .map(|(_, m)| m.len())
        .sum();
    assert!(
        on_disk <= live,
        "{on_disk} bytes of block files for {live} live"
    );
    // Dirty data is counted as logical data before it is uploaded, and
    // shown as pinned.
    fs::write(t.path("fresh"), random_bytes(3 << 20, 9)).unwrap();
    let f = fs::OpenOptions::new()
        .append(true)
        .open(t.path("fresh"))
        .unwrap();
    f.sync_all().unwrap();
    let human =
        String::from_utf8_lossy(&ok(run(&["stat", t.mp.to_str().unwrap()])).stdout).into_owned();
    assert!(human.contains("dirty (pinned)"), "{human}");
    assert!(human.contains("clean:"), "{human}");
    assert!(!human.contains("logical data:       0.0 B"), "{human}");
    let s = t.stat();
    assert_eq!(
        s["counts"]["file_bytes"].as_u64().unwrap(),
        live + (3 << 20),
        "{s}"
    );
}
