//! Write-back block cache on local disk.
//!
//! * Dirty blocks are files `dirty/<ino>.<idx>` holding the block's current
//!   plaintext; they survive a crash and are re-queued at start.
//! * Clean blocks are files `blocks/<block id>`, immutable, evicted LRU.
//! * Upload workers hash each dirty block, dedup against the block table,
//!   encode it, and store large blocks as their own object and small ones
//!   (file tails, small files) grouped into pack objects.
//! * Writers wait (never fail) while the dirty limit is reached; they resume
//!   as soon as uploads free room, so throughput degrades to the store's
//!   upload rate rather than collapsing.
//!
//! Writers and uploaders coordinate per dirty block with a seqlock-style
//! version: odd while a write is in progress, so an uploader never commits a
//! torn read.

mod fresh;
pub mod gc;
mod pinned;
pub mod pool;
mod read;
mod recover;
pub mod smalldb;
mod space;
pub mod sparse;
#[cfg(test)]
mod tests;
mod upload;
mod write;

pub use pool::UploadPool;
pub use space::Room;

use crate::data::{BlockCodec, Hash};
use crate::meta::ship::Shipper;
use crate::meta::{Meta, MetaError};
use crate::store::{DynStore, StoreError};
use parking_lot::{Condvar, Mutex, RwLock};
use smalldb::{SmallDb, SMALL_MAX};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache disk I/O on {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {block} in object {object} is unreadable: {reason}")]
    Corrupt {
        block: i64,
        object: String,
        reason: String,
    },
    #[error("the cache is shutting down")]
    Shutdown,
    #[error("the cache disk is full")]
    NoSpace,
}

pub type Result<T> = std::result::Result<T, CacheError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub block_size: u64,
    pub cache_size: u64,
    pub dirty_limit: u64,
    pub upload_workers: usize,
    /// A dirty block is uploaded once untouched this long.
    pub upload_delay: Duration,
    /// Encoded blocks smaller than this go into packs.
    pub pack_threshold: u64,
    /// A pack is uploaded once it reaches this size (or ages).
    pub pack_target: u64,
    /// Full blocks waiting together go up as one object of up to this
    /// size: a store pays per request (Swift's proxy and object server
    /// spend about as much on a 4 MiB PUT's setup as on its bytes).
    pub object_target: u64,
    /// A writer waiting for room on a full cache disk gets ENOSPC once
    /// waiting has freed nothing for this long (at once, after a short
    /// re-check, when nothing could: no upload pending, nothing to evict).
    pub nospace_wait: Duration,
}

/// A dirty block (key, incarnation) waiting for an upload of its content.
type Waiter = ((u64, u64), u64);

#[derive(Debug)]
struct Dirty {
    /// Identifies this incarnation of the entry: a truncate that drops it and
    /// a later write that recreates it give a new one.
    incarnation: u64,
    version: u64,
    bytes: u64,
    modified: Instant,
    uploading: bool,
    needs_sync: bool,
    /// Content lives in the small-block database, not in a file.
    small: bool,
    /// Byte ranges of the block that hold written (or earlier) data, sorted
    /// and disjoint. A block goes up at once only when they cover it whole:
    /// the kernel's writeback hands pieces over in any order, and a block
    /// that merely reaches its full length may still have pieces to come.
    cover: Vec<(u64, u64)>,
}

#[derive(Debug)]
struct PendingRec {
    key: (u64, u64),
    incarnation: u64,
    version: u64,
    hash: Hash,
    plain_len: u64,
    /// Offset/length in the pack buffer; `None` when an identical block is
    /// already in this pack.
    span: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Pack {
    buf: Vec<u8>,
    recs: Vec<PendingRec>,
    hashes: HashSet<Hash>,
    started: Option<Instant>,
    last_added: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    dirty: BTreeMap<(u64, u64), Dirty>,
    /// Clean block id -> (size, LRU tick, in the small-block database).
    clean: HashMap<i64, (u64, u64, bool)>,
    lru: BTreeMap<u64, i64>,
    tick: u64,
    clean_bytes: u64,
    dirty_bytes: u64,
    fetching: HashSet<i64>,
    pack: Pack,
    /// Inodes whose blocks should be uploaded now (fsync, umount).
    urgent: HashSet<u64>,
    flush_all: bool,
    writers_waiting: usize,
    /// Bytes that writers past `wait_for_room` are about to add.
    reserved: u64,
    /// The cache disk is nearly full: metadata commits one by one.
    meta_unbatched: bool,
    uploads_in_flight: usize,
    /// Block jobs in flight: each may still add a record to the pack.
    block_jobs: usize,
    shutdown: bool,
    last_error: Option<String>,
    /// After a failed upload: uploads pause until then, the pause doubling
    /// with each failure in a row.
    retry_at: Option<Instant>,
    backoff: Option<Duration>,
    /// Free bytes on the cache disk beyond the reserve, as last measured
    /// and adjusted since; negative means over.
    headroom: i64,
    disk_checked: Option<Instant>,
    /// While the disk is full: when waiting last freed something, and the
    /// dirty bytes and headroom seen then. Shared by all writers, so once
    /// waiting has been useless for the bound every writer fails at once
    /// (the kernel's writeback sends many writes; each must not wait anew).
    full_progress: Option<(Instant, u64, i64)>,
    /// A write found the disk truly full (not just below our margin).
    hard_full: bool,
    /// Dirty blocks waiting for upload, oldest change first. Entries are
    /// checked when taken (stale ones dropped), so every change of a block
    /// just adds a new entry.
    queue: BTreeSet<(Instant, u64, u64)>,
    /// Full blocks: uploaded without waiting for the delay.
    ready: VecDeque<(u64, u64)>,
    /// Content being uploaded as a new block, with the dirty blocks (key,
    /// incarnation) holding the same content: they wait, still marked
    /// uploading, and go back to the queue once it is stored (to find it
    /// by hash) or failed, so the same bytes never go up twice at once.
    inflight: HashMap<Hash, Vec<Waiter>>,
    /// Open clean block files (a handful, for sequential readers).
    open_files: HashMap<i64, Arc<File>>,
    /// Blocks just fetched, for the readers waiting for them.
    fresh: fresh::Fresh,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize, Clone)]
#[serde(default)]
pub struct CacheStats {
    /// Dirty plus clean: what the cache holds on its disk.
    pub used_bytes: u64,
    /// Copies of stored blocks, evictable at any time.
    pub clean_bytes: u64,
    /// Of the dirty bytes, those on their way to the store now.
    pub uploading_bytes: u64,
    pub dirty_bytes: u64,
    pub dirty_blocks: u64,
    pub clean_blocks: u64,
    pub cache_size: u64,
    pub dirty_limit: u64,
    pub upload_queue: u64,
    pub uploads_in_flight: u64,
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
    pub dedup_hits: u64,
    pub fetched_blocks: u64,
    /// Block reads served from the cache (dirty or clean copies); reads
    /// that had to fetch count in `fetched_blocks`.
    pub read_hits: u64,
    pub writer_waits: u64,
    pub last_error: Option<String>,
}

pub struct Cache {
    cfg: CacheConfig,
    /// The live limits: a gateway shares one budget among its homes and
    /// moves these as homes come and go.
    cache_size: AtomicU64,
    dirty_limit: AtomicU64,
    store: DynStore,
    codec: BlockCodec,
    meta: Arc<Meta>,
    shipper: Arc<Shipper>,
    small: SmallDb,
    st: Mutex<State>,
    /// Writers waiting for room, flushes, fetch waiters.
    cv: Condvar,
    /// The upload pool's threads (set once uploads start).
    pool: std::sync::OnceLock<Arc<pool::Shared>>,
    inode_locks: Mutex<HashMap<u64, Arc<RwLock<()>>>>,
    next_object: AtomicI64,
    next_incarnation: AtomicU64,
    uploaded_objects: AtomicU64,
    uploaded_bytes: AtomicU64,
    dedup_hits: AtomicU64,
    fetched_blocks: AtomicU64,
    read_hits: AtomicU64,
    writer_waits: AtomicU64,
    /// Full-disk reports, rate-limited.
    disk_full_log: crate::logevery::LogEvery,
    /// Room kept for the databases' commits (see `meta::reserve`).
    reserve: Option<Arc<crate::meta::reserve::Reserve>>,
    upload_fail_log: crate::logevery::LogEvery,
    stopped: AtomicBool,
    /// Clean block files are written past the page cache (until the
    /// cache's filesystem refuses it).
    direct_io: AtomicBool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("dir", &self.cfg.dir).finish()
    }
}

fn dirty_name(ino: u64, idx: u64) -> String {
    format!("{ino}.{idx}")
}

impl Cache {
    pub fn new(
        cfg: CacheConfig,
        store: DynStore,
        codec: BlockCodec,
        meta: Arc<Meta>,
        shipper: Arc<Shipper>,
    ) -> Result<Arc<Cache>> {
        for sub in ["dirty", "blocks", "tmp"] {
            let p = cfg.dir.join(sub);
            crate::secure::private_dir(&p).map_err(io_err(&p))?;
        }
        let max_obj = meta.max_object_id()?;
        // After a rollback the store may hold objects numbered above what
        // this metadata knows: never reuse (overwrite) one of them.
        let floor = meta
            .kv_get(crate::meta::ship::KV_OBJECT_ID_FLOOR)?
            .and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok())
            .unwrap_or(0);
        let max_obj = max_obj.max(floor);
        let small = SmallDb::open(&cfg.dir.join("cache.db"))?;
        // Held here too: the writers' path asks it without taking the
        // metadata connection's lock.
        let reserve = meta.reserve();
        if let Some(r) = &reserve {
            small.group().set_reserve(r.clone());
        }
        meta.commit_first(small.group());
        let cache = Arc::new(Cache {
            cache_size: AtomicU64::new(cfg.cache_size),
            dirty_limit: AtomicU64::new(cfg.dirty_limit),
            small,
            cfg,
            store,
            codec,
            meta,
            shipper,
            st: Mutex::new(State::default()),
            cv: Condvar::new(),
            pool: std::sync::OnceLock::new(),
            inode_locks: Mutex::new(HashMap::new()),
            next_object: AtomicI64::new(max_obj + 1),
            next_incarnation: AtomicU64::new(1),
            uploaded_objects: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
            dedup_hits: AtomicU64::new(0),
            fetched_blocks: AtomicU64::new(0),
            read_hits: AtomicU64::new(0),
            writer_waits: AtomicU64::new(0),
            disk_full_log: crate::logevery::LogEvery::new(Duration::from_secs(5)),
            reserve,
            upload_fail_log: crate::logevery::LogEvery::new(Duration::from_secs(5)),
            stopped: AtomicBool::new(false),
            direct_io: AtomicBool::new(true),
        });
        cache.recover()?;
        Ok(cache)
    }

    /// Blocks up to this size live in the small-block database: well
    /// under a block, so full blocks of big files always get a file.
    fn small_max(&self) -> u64 {
        SMALL_MAX.min(self.cfg.block_size / 2)
    }

    /// How long a writer waits on a full disk that nothing frees.
    pub fn nospace_wait(&self) -> Duration {
        self.cfg.nospace_wait
    }

    pub fn block_size(&self) -> u64 {
        self.cfg.block_size
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.cfg.dir.join(sub)
    }

    /// Start uploads on `pool`'s threads, and group small-block writes.
    pub fn start_uploads(self: &Arc<Self>, pool: &UploadPool) -> std::io::Result<()> {
        self.small.start_batching()?;
        let _ = self.pool.set(pool.register(self));
        Ok(())
    }

    /// Tell the upload pool there is work (or room for more uploads).
    fn wake_uploads(&self) {
        if let Some(p) = self.pool.get() {
            p.wake();
        }
    }

    /// Drop the open group of small-block writes as a crash would.
    pub fn abandon_batch(&self) {
        self.small.abandon()
    }

    /// Per-inode lock: writes and truncates exclusive, reads shared.
    pub fn inode_lock(&self, ino: u64) -> Arc<RwLock<()>> {
        self.inode_locks.lock().entry(ino).or_default().clone()
    }

    pub fn forget_inode_lock(&self, ino: u64) {
        let mut m = self.inode_locks.lock();
        if let Some(l) = m.get(&ino) {
            if Arc::strong_count(l) == 1 {
                m.remove(&ino);
            }
        }
    }

    /// New limits (evicts at once if the cache shrank; writers over the new
    /// dirty limit wait for uploads as usual).
    pub fn set_limits(&self, cache_size: u64, dirty_limit: u64) {
        self.cache_size.store(cache_size, Ordering::Relaxed);
        self.dirty_limit
            .store(dirty_limit.min(cache_size), Ordering::Relaxed);
        let mut st = self.st.lock();
        self.evict_locked(&mut st);
        self.cv.notify_all();
    }

    fn tmp_path(&self) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        self.dir("tmp")
            .join(SEQ.fetch_add(1, Ordering::Relaxed).to_string())
    }

    pub fn stats(&self) -> CacheStats {
        let st = self.st.lock();
        CacheStats {
            used_bytes: st.clean_bytes + st.dirty_bytes,
            clean_bytes: st.clean_bytes,
            uploading_bytes: st
                .dirty
                .values()
                .filter(|d| d.uploading)
                .map(|d| d.bytes)
                .sum(),
            dirty_bytes: st.dirty_bytes,
            dirty_blocks: st.dirty.len() as u64,
            clean_blocks: st.clean.len() as u64,
            cache_size: self.cache_size.load(Ordering::Relaxed),
            dirty_limit: self.dirty_limit.load(Ordering::Relaxed),
            upload_queue: st.dirty.values().filter(|d| !d.uploading).count() as u64
                + st.pack.recs.len() as u64,
            uploads_in_flight: st.uploads_in_flight as u64,
            uploaded_objects: self.uploaded_objects.load(Ordering::Relaxed),
            uploaded_bytes: self.uploaded_bytes.load(Ordering::Relaxed),
            dedup_hits: self.dedup_hits.load(Ordering::Relaxed),
            fetched_blocks: self.fetched_blocks.load(Ordering::Relaxed),
            read_hits: self.read_hits.load(Ordering::Relaxed),
            writer_waits: self.writer_waits.load(Ordering::Relaxed),
            last_error: st.last_error.clone(),
        }
    }

    pub fn dirty_count(&self) -> usize {
        let st = self.st.lock();
        st.dirty.len() + st.pack.recs.len()
    }

    /// Stop uploads (after a flush, for a clean unmount): none starts
    /// from now on, and those in flight are waited for.
    pub fn shutdown(&self) {
        let mut st = self.st.lock();
        st.shutdown = true;
        self.cv.notify_all();
        while st.uploads_in_flight > 0 {
            self.cv.wait_for(&mut st, Duration::from_millis(100));
        }
        drop(st);
        self.stopped.store(true, Ordering::Release);
    }
}

enum Job {
    /// Dirty blocks (key, incarnation, version), stored in one object.
    Blocks(Vec<((u64, u64), u64, u64)>),
    Pack(Pack),
}

fn create_truncated(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))
}
