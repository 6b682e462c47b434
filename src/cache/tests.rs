//! The cache over a real local store wrapped in the fault-injecting store:
//! errors, latency, and a crash between an upload's PUT and its metadata
//! commit. The metadata is a real SQLite database; nothing is mocked.

use super::{Cache, CacheConfig, UploadPool};
use crate::data::{BlockCodec, Compression};
use crate::meta::ship::{meta_codec, Shipper};
use crate::meta::{Meta, ROOT_INO};
use crate::store::fault::{FaultConfig, FaultStore};
use crate::store::local::LocalStore;
use crate::store::{DynStore, ObjectStore};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const BS: u64 = 64 << 10;
/// Generous: the machine running the tests may be busy.
const PATIENCE: Duration = Duration::from_secs(60);

struct Rig {
    fault: Arc<FaultStore>,
    local: Arc<LocalStore>,
    meta: Arc<Meta>,
    cache: Arc<Cache>,
    /// Dropped after the cache is shut down (fields drop after `drop`).
    _pool: Arc<UploadPool>,
}

fn config(dir: &Path) -> CacheConfig {
    CacheConfig {
        dir: dir.join("cache"),
        block_size: BS,
        cache_size: 64 << 20,
        dirty_limit: 32 << 20,
        upload_workers: 2,
        upload_delay: Duration::from_millis(10),
        pack_threshold: 16 << 10,
        pack_target: 1 << 20,
        object_target: 4 << 20,
        nospace_wait: Duration::from_secs(5),
    }
}

/// A cache as a mount starts it, over `dir` (store, metadata, cache disk
/// all inside it). Opening it again on the same `dir` is a restart.
fn start(dir: &Path, faults: FaultConfig) -> Rig {
    start_on(dir, faults, UploadPool::new(2).unwrap())
}

/// [`start`] with uploads on `pool` (shared with other caches).
fn start_on(dir: &Path, faults: FaultConfig, pool: Arc<UploadPool>) -> Rig {
    let local = Arc::new(LocalStore::open(dir.join("store")).unwrap());
    let fault = Arc::new(FaultStore::new(local.clone() as DynStore, faults));
    let store: DynStore = fault.clone();
    let meta_path = dir.join("meta.db");
    let fresh = !meta_path.exists();
    let meta = Arc::new(Meta::open(&meta_path).unwrap());
    if fresh {
        meta.init_root(0o40755, 0, 0).unwrap();
    }
    let shipper = Arc::new(Shipper::new(
        store.clone(),
        meta_codec(None),
        meta.clone(),
        0,
    ));
    let codec = BlockCodec::new(None, Compression::None);
    let cache = Cache::new(config(dir), store, codec, meta.clone(), shipper).unwrap();
    cache.start_uploads(&pool).unwrap();
    Rig {
        fault,
        local,
        meta,
        cache,
        _pool: pool,
    }
}

/// Distinct, incompressible-looking content per (seed, length).
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Rig {
    /// A new regular file holding `data`, written through the cache the
    /// way the filesystem writes (block by block, then the size) and made
    /// durable locally (fsync), so a crash keeps it.
    fn write_file(&self, name: &str, data: &[u8]) -> u64 {
        let a = self
            .meta
            .mknod(ROOT_INO, name.as_bytes(), 0o100644, 0, 0, 0, None)
            .unwrap();
        let size = data.len() as u64;
        for (idx, chunk) in data.chunks(BS as usize).enumerate() {
            let _room = self.cache.wait_for_room(chunk.len() as u64).unwrap();
            self.cache
                .write_block(a.ino, idx as u64, 0, chunk, size)
                .unwrap();
        }
        self.meta.note_write(a.ino, size, 0).unwrap();
        self.cache.sync_local(a.ino).unwrap();
        self.meta.commit().unwrap();
        a.ino
    }

    /// A file written, uploaded, and gone from the cache: its next read
    /// fetches from the store.
    fn stored_cold(&self, name: &str, data: &[u8]) -> u64 {
        let ino = self.write_file(name, data);
        self.flush(ino);
        self.cache.drop_clean();
        ino
    }

    fn read_file(&self, ino: u64, size: usize) -> Vec<u8> {
        let mut out = vec![0u8; size];
        for (idx, chunk) in out.chunks_mut(BS as usize).enumerate() {
            self.cache.read_block(ino, idx as u64, 0, chunk).unwrap();
        }
        out
    }

    /// `flush`, but a hang fails the test instead of stalling it.
    fn flush(&self, ino: u64) {
        let (tx, rx) = mpsc::channel();
        let cache = self.cache.clone();
        std::thread::spawn(move || {
            let _ = tx.send(cache.flush(Some(ino)).map_err(|e| e.to_string()));
        });
        rx.recv_timeout(PATIENCE)
            .expect("flush did not finish")
            .unwrap();
    }

    fn data_objects(&self) -> usize {
        self.local
            .list("data/", None, 10_000)
            .unwrap()
            .objects
            .len()
    }

    fn faults(&self, f: impl FnOnce(&mut FaultConfig)) {
        f(&mut self.fault.config.lock());
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Let a frozen upload go (shutdown joins the workers), into a
        // store that is down: a dead process stores nothing more.
        self.faults(|c| {
            c.stall_after_put = false;
            c.down = true;
        });
        self.cache.shutdown();
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < PATIENCE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn failed_puts_keep_blocks_dirty_and_readable_until_a_retry_stores_them() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(
        dir.path(),
        FaultConfig {
            down: true,
            ..Default::default()
        },
    );
    // Full blocks (one object) and a tail (a pack).
    let data = content(1, 3 * BS as usize + 1000);
    let ino = rig.write_file("f", &data);
    wait_until("an upload failed", || {
        rig.cache.stats().last_error.is_some()
    });
    // Give the workers time to retry (and fail) a few times.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rig.cache.st.lock().dirty.len(),
        4,
        "every block is still dirty"
    );
    assert_eq!(rig.data_objects(), 0);
    assert!(rig.meta.block_at(ino, 0).unwrap().is_none());
    assert_eq!(rig.read_file(ino, data.len()), data);

    // The store comes back, but uploads abort midway: the full blocks
    // (one object of three blocks) cannot get there.
    rig.faults(|c| {
        c.down = false;
        c.fail_after_bytes = Some(BS);
    });
    wait_until("an upload aborted midway", || {
        let e = rig.cache.stats().last_error.unwrap_or_default();
        e.contains("connection reset")
    });
    assert!(rig.meta.block_at(ino, 0).unwrap().is_none());
    assert_eq!(rig.read_file(ino, data.len()), data);
    // Then a third of the calls fail: the retries get everything there.
    rig.faults(|c| {
        c.fail_after_bytes = None;
        c.error_rate = 0.3;
    });
    rig.flush(ino);
    assert_eq!(rig.cache.dirty_count(), 0);
    rig.faults(|c| c.error_rate = 0.0);
    for idx in 0..4 {
        assert!(
            rig.meta.block_at(ino, idx).unwrap().is_some(),
            "block {idx}"
        );
    }
    // Read back from the store, not from the cache's copies.
    rig.cache.drop_clean();
    let before = rig.cache.stats().fetched_blocks;
    assert_eq!(rig.read_file(ino, data.len()), data);
    assert!(rig.cache.stats().fetched_blocks > before);
}

/// An upload that landed but whose reply was lost (Swift going away
/// mid-request) is retried under a new object id; the first one, stored
/// and referenced by nothing, goes to the dead objects instead of being
/// left for fsck to call an orphan.
#[test]
fn an_upload_whose_reply_was_lost_leaves_no_orphan_object() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(
        dir.path(),
        FaultConfig {
            lose_put_reply: true,
            ..Default::default()
        },
    );
    // Full blocks (one object) and a tail (a pack).
    let data = content(7, 3 * BS as usize + 1000);
    let ino = rig.write_file("f", &data);
    // Clearing the fault races with uploads in flight, so the store's own
    // count of lost replies is what the dead objects must match.
    let lost = || rig.fault.lost_replies.load(Ordering::SeqCst);
    wait_until("both uploads landed and were reported failed", || {
        lost() >= 2
    });
    rig.faults(|c| c.lose_put_reply = false);
    rig.flush(ino);
    assert_eq!(rig.cache.dirty_count(), 0);
    let dead = rig.meta.dead_object_ids().unwrap();
    let listed = rig.local.list("data/", None, 10_000).unwrap().objects;
    let mut lost_replies = 0;
    for o in &listed {
        let id = crate::meta::object_id(&o.key).expect("an object key");
        if dead.contains(&id) {
            lost_replies += 1;
        } else {
            assert!(
                !rig.meta.blocks_of_object(id).unwrap().is_empty(),
                "{} is neither referenced nor awaiting deletion",
                o.key
            );
        }
    }
    assert_eq!(
        lost_replies,
        lost(),
        "objects awaiting deletion against replies lost, of {} objects",
        listed.len()
    );
    assert_eq!(rig.read_file(ino, data.len()), data);
}

/// A sequential reader's prefetch takes the blocks stored back to back in
/// one object with one request, and readers find them in the cache.
#[test]
fn prefetch_takes_an_objects_blocks_in_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path(), FaultConfig::default());
    let data = content(9, 12 * BS as usize);
    let ino = rig.stored_cold("f", &data);
    let refs: Vec<_> = (0..12)
        .map(|i| rig.meta.block_at(ino, i).unwrap().expect("uploaded"))
        .collect();
    // Runs of blocks back to back in one object (uploads may have cut
    // the file into several objects).
    let runs = 1 + refs
        .windows(2)
        .filter(|w| w[0].object != w[1].object || w[0].offset + w[0].length != w[1].offset)
        .count() as u64;
    let gets = || rig.fault.range_gets.load(Ordering::Relaxed);
    let (g0, f0) = (gets(), rig.cache.stats().fetched_blocks);
    rig.cache.prefetch(refs.clone());
    wait_until("every block was prefetched", || {
        rig.cache.stats().fetched_blocks == f0 + 12
    });
    assert_eq!(gets() - g0, runs, "one request per run of blocks");
    assert!(runs < 12, "the file should lie in few objects");
    // Already there: reading needs no request.
    let g1 = gets();
    assert_eq!(rig.read_file(ino, data.len()), data);
    assert_eq!(gets(), g1);
}

/// A prefetch cut off midway releases its claims: a reader fetches the
/// blocks that did not arrive itself, and reads the right bytes.
#[test]
fn a_failed_prefetch_leaves_blocks_to_their_readers() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path(), FaultConfig::default());
    let data = content(11, 8 * BS as usize);
    let ino = rig.stored_cold("f", &data);
    let refs: Vec<_> = (0..8)
        .map(|i| rig.meta.block_at(ino, i).unwrap().expect("uploaded"))
        .collect();
    rig.faults(|c| c.down = true);
    rig.cache.prefetch(refs);
    wait_until("the prefetch gave up its claims", || {
        rig.cache.st.lock().fetching.is_empty()
    });
    rig.faults(|c| c.down = false);
    assert_eq!(rig.read_file(ino, data.len()), data);
}

/// However many readers ask ahead at once, the process runs at most
/// PREFETCH_THREADS prefetch threads; what is not prefetched is fetched by
/// its reader, and every byte reads back.
#[test]
fn prefetch_threads_are_bounded_and_what_they_skip_is_read_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path(), FaultConfig::default());
    let n = 3 * super::read::PREFETCH_THREADS as u64;
    let data = content(13, (n * BS) as usize);
    let ino = rig.stored_cold("f", &data);
    let refs: Vec<_> = (0..n)
        .map(|i| rig.meta.block_at(ino, i).unwrap().expect("uploaded"))
        .collect();
    rig.faults(|c| c.data_get_latency = Duration::from_millis(400));
    // One prefetch per block, as many readers would ask.
    for r in &refs {
        rig.cache.prefetch(vec![r.clone()]);
    }
    // A thread names itself once it runs, a moment after it is spawned.
    wait_until("some prefetches are under way", || {
        crate::test_support::threads_named("prefetch") > 0
    });
    let most = crate::test_support::threads_named("prefetch");
    assert!(
        most <= super::read::PREFETCH_THREADS,
        "{most} prefetch threads for {n} runs"
    );
    rig.faults(|c| c.data_get_latency = Duration::ZERO);
    assert_eq!(rig.read_file(ino, data.len()), data);
    wait_until("the prefetches gave up or kept their claims", || {
        rig.cache.st.lock().fetching.is_empty()
    });
}

/// Homes share one pool: a home whose store fails keeps retrying without
/// holding the pool's threads, and the others' uploads go on.
#[test]
fn a_failing_cache_does_not_stall_others_on_a_shared_pool() {
    let pool = UploadPool::new(2).unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_on(
        da.path(),
        FaultConfig {
            down: true,
            ..Default::default()
        },
        pool.clone(),
    );
    let b = start_on(db.path(), FaultConfig::default(), pool.clone());
    // More uploads for the failing home than the pool has threads.
    let mut ia = Vec::new();
    for n in 0..6 {
        ia.push(a.write_file(&format!("a{n}"), &content(10 + n, 2 * BS as usize + 77)));
    }
    wait_until("the failing home saw an error", || {
        a.cache.stats().last_error.is_some()
    });
    // Liveness, not speed: a pool held by the failing home's retries
    // (backoff up to 10 s each) would take far longer.
    let t = Instant::now();
    for n in 0..6 {
        let data = content(20 + n, 3 * BS as usize + 5);
        let ino = b.write_file(&format!("b{n}"), &data);
        b.flush(ino);
        assert!(b.meta.block_at(ino, 2).unwrap().is_some(), "file b{n}");
    }
    assert_eq!(b.cache.dirty_count(), 0);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(a.cache.dirty_count() > 0, "the failing home stored nothing");
    assert_eq!(a.data_objects(), 0);
    // Its store back, the failing home catches up on the same pool.
    a.faults(|c| c.down = false);
    for ino in ia {
        a.flush(ino);
    }
    assert_eq!(a.cache.dirty_count(), 0);
}

#[test]
fn a_slow_store_does_not_slow_writes_and_reads_come_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let latency = Duration::from_millis(400);
    let rig = start(
        dir.path(),
        FaultConfig {
            latency,
            ..Default::default()
        },
    );
    let data = content(2, 4 * BS as usize + 123);
    let t = Instant::now();
    let ino = rig.write_file("slow", &data);
    // Write-back: writing touches the cache disk and the metadata, never
    // the store, so it takes less than one store call.
    assert!(
        t.elapsed() < latency,
        "writing waited on the store: {:?}",
        t.elapsed()
    );
    rig.flush(ino);
    assert!(rig.data_objects() > 0);
    rig.cache.drop_clean();
    let t = Instant::now();
    assert_eq!(rig.read_file(ino, data.len()), data);
    assert!(
        t.elapsed() >= latency,
        "the cold read never reached the store"
    );
}

#[test]
fn a_crash_between_put_and_commit_is_recovered_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3, 2 * BS as usize);
    let ino = {
        let rig = start(
            dir.path(),
            FaultConfig {
                stall_after_put: true,
                ..Default::default()
            },
        );
        let ino = rig.write_file("crash", &data);
        // The object is stored; the worker is frozen before its commit.
        wait_until("an upload was stored", || {
            rig.fault.stalled.load(Ordering::SeqCst) > 0
        });
        assert!(rig.data_objects() > 0);
        assert!(rig.meta.block_at(ino, 0).unwrap().is_none());
        // The crash: what the dead process had not committed is gone,
        // and the frozen worker must never commit after it.
        rig.cache.abandon_batch();
        rig.meta.abandon_batch();
        ino
        // Dropping the rig lets the frozen upload fail and stops it.
    };
    let rig = start(dir.path(), FaultConfig::default());
    assert_eq!(
        rig.cache.st.lock().dirty.len(),
        2,
        "recovery re-queued the blocks whose upload was never recorded"
    );
    assert_eq!(rig.read_file(ino, data.len()), data);
    rig.flush(ino);
    assert_eq!(rig.cache.dirty_count(), 0);
    rig.cache.drop_clean();
    assert_eq!(rig.read_file(ino, data.len()), data);
    // Every block the metadata maps lives in an object the store holds.
    for idx in 0..2 {
        let b = rig.meta.block_at(ino, idx).unwrap().expect("mapped");
        let key = crate::meta::object_key(b.object);
        assert!(rig.local.head(&key).unwrap().is_some(), "{key} is missing");
    }
}

/// Writers that start together while nothing is dirty share the dirty
/// limit: only one gets through on an empty cache, the rest on room
/// under the limit, and each holds its room until its bytes are counted.
#[test]
fn writers_starting_together_share_the_dirty_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Uploads fail until the end, so nothing dirty drains meanwhile.
    let rig = Arc::new(start(
        dir.path(),
        FaultConfig {
            down: true,
            ..Default::default()
        },
    ));
    rig.cache.set_limits(64 << 20, 4 * BS);
    let inos: Vec<u64> = (0..16)
        .map(|i| {
            rig.meta
                .mknod(
                    ROOT_INO,
                    format!("f{i}").as_bytes(),
                    0o100644,
                    0,
                    0,
                    0,
                    None,
                )
                .unwrap()
                .ino
        })
        .collect();
    let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = inos
        .iter()
        .map(|&ino| {
            let (rig, held, peak) = (rig.clone(), held.clone(), peak.clone());
            std::thread::spawn(move || {
                let room = rig.cache.wait_for_room(BS).unwrap();
                let now = held.fetch_add(BS, Ordering::SeqCst) + BS;
                peak.fetch_max(now + rig.cache.stats().dirty_bytes, Ordering::SeqCst);
                // A slow write: the others arrive while this one holds room.
                std::thread::sleep(Duration::from_millis(100));
                let data = content(ino, BS as usize);
                rig.cache.write_block(ino, 0, 0, &data, BS).unwrap();
                held.fetch_sub(BS, Ordering::SeqCst);
                drop(room);
            })
        })
        .collect();
    wait_until("the writers under the limit wrote", || {
        rig.cache.stats().dirty_bytes >= 4 * BS
    });
    std::thread::sleep(Duration::from_millis(300));
    let peak_while_stuck = peak.load(Ordering::SeqCst);
    rig.faults(|c| c.down = false);
    for w in writers {
        w.join().unwrap();
    }
    // Counted twice at most for the one write that is both held and dirty.
    assert!(
        peak_while_stuck <= 5 * BS,
        "writers held or wrote {peak_while_stuck} bytes against a 4-block limit"
    );
    // Every writer got through once uploads could drain the cache.
    for &ino in &inos {
        rig.flush(ino);
        assert_eq!(rig.read_file(ino, BS as usize), content(ino, BS as usize));
    }
    assert_eq!(rig.cache.dirty_count(), 0);
}

/// The kept totals `statfs` and the console read follow what uploads,
/// dedup, packing, deletes and pack GC do to the block map, exactly.
#[test]
fn kept_totals_match_a_count_after_uploads_dedup_deletes_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path(), FaultConfig::default());
    let same = content(21, (2 * BS + 100) as usize);
    let a = rig.write_file("a", &same);
    let b = rig.write_file("b", &same);
    let small: Vec<u64> = (0..5)
        .map(|i| rig.write_file(&format!("s{i}"), &content(30 + i, 2000)))
        .collect();
    for ino in [a, b].iter().chain(&small) {
        rig.flush(*ino);
    }
    let check = |when: &str| {
        let (kept, counted) = (
            rig.meta.counts().unwrap(),
            rig.meta.counts_recount().unwrap(),
        );
        assert_eq!(kept, counted, "{when}");
        kept
    };
    let full = check("after uploads");
    assert!(
        full.logical_bytes > full.unique_bytes,
        "deduplicated: {full:?}"
    );
    for (ino, name) in [
        (a, "a".to_string()),
        (small[0], "s0".into()),
        (small[1], "s1".into()),
    ] {
        rig.meta.unlink(ROOT_INO, name.as_bytes()).unwrap();
        rig.meta.purge_inode(ino, 1).unwrap();
    }
    rig.meta.commit().unwrap();
    let fewer = check("after deletes");
    assert!(fewer.inodes < full.inodes && fewer.logical_bytes < full.logical_bytes);
    rig.cache.gc_packs(1000).unwrap();
    rig.meta.commit().unwrap();
    check("after pack gc");
}

/// Every data object starts with the lead and no record at byte 0, for
/// runs of full blocks and for packs of small ones alike (a read from byte
/// 0 makes Swift hash all it sends); a cold read of either comes back.
#[test]
fn no_block_record_starts_at_byte_0_of_its_object() {
    use crate::data::OBJECT_LEAD;
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path(), FaultConfig::default());
    let big = content(11, 5 * BS as usize + 100);
    let small = content(12, 3000);
    let a = rig.write_file("big", &big);
    let b = rig.write_file("small", &small);
    rig.flush(a);
    rig.flush(b);
    rig.cache.drop_clean();
    assert_eq!(rig.read_file(a, big.len()), big);
    assert_eq!(rig.read_file(b, small.len()), small);
    let mut blocks = 0;
    for (ino, len) in [(a, big.len()), (b, small.len())] {
        for idx in 0..(len as u64).div_ceil(BS) {
            let r = rig.meta.block_at(ino, idx).unwrap().expect("mapped");
            assert!(
                r.offset >= OBJECT_LEAD.len() as u64,
                "block {idx} of {ino} at {}",
                r.offset
            );
            let obj = rig.local.get(&crate::meta::object_key(r.object)).unwrap();
            assert!(obj.starts_with(OBJECT_LEAD));
            blocks += 1;
        }
    }
    assert_eq!(blocks, 7);
}

/// A block fetched cold is served from memory while its cache file is
/// written, and let go once read to its end; the file it left in the
/// cache serves the next read.
#[test]
fn a_block_read_cold_is_handed_over_from_memory_and_then_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let rig = start(dir.path(), FaultConfig::default());
    rig.cache
        .st
        .lock()
        .fresh
        .set_budget(super::fresh::tests::own_budget());
    let data = content(21, 3 * BS as usize);
    let ino = rig.stored_cold("f", &data);
    // Half of block 1: fetched, kept in memory, not done with yet.
    let mut half = vec![0u8; BS as usize / 2];
    rig.cache.read_block(ino, 1, 0, &mut half).unwrap();
    assert_eq!(half, data[BS as usize..(BS + BS / 2) as usize]);
    assert_eq!(rig.cache.fresh_blocks(), 1);
    let fetched = rig.cache.stats().fetched_blocks;
    // The other half: from memory, after which the block is let go.
    rig.cache.read_block(ino, 1, BS / 2, &mut half).unwrap();
    assert_eq!(half, data[(BS + BS / 2) as usize..2 * BS as usize]);
    assert_eq!(rig.cache.fresh_blocks(), 0);
    // Its cache file has it: read again without a fetch.
    let mut whole = vec![0u8; BS as usize];
    rig.cache.read_block(ino, 1, 0, &mut whole).unwrap();
    assert_eq!(whole, data[BS as usize..2 * BS as usize]);
    assert_eq!(rig.cache.stats().fetched_blocks, fetched);
    let file = dir
        .path()
        .join("cache/blocks")
        .join(rig.meta.block_at(ino, 1).unwrap().unwrap().id.to_string());
    assert_eq!(std::fs::read(file).unwrap(), whole);
    // The whole file reads back; nothing is held once all is read.
    assert_eq!(rig.read_file(ino, data.len()), data);
    assert_eq!(rig.cache.fresh_blocks(), 0);
}
