//! The cache over a real local store wrapped in the fault-injecting store:
//! errors, latency, and a crash between an upload's PUT and its metadata
//! commit. The metadata is a real SQLite database; nothing is mocked.

use super::{Cache, CacheConfig};
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
    cache.start_workers().unwrap();
    Rig {
        fault,
        local,
        meta,
        cache,
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
