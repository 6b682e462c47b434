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

pub mod gc;
mod pinned;
pub mod smalldb;
pub mod sparse;

use crate::data::{sha256, BlockCodec, Hash};
use crate::meta::blockmap::{NewRecord, Recorded, Upload, UploadedBlock};
use crate::meta::ship::Shipper;
use crate::meta::{object_key, BlockRef, Meta, MetaError};
use crate::store::{DynStore, StoreError};
use parking_lot::{Condvar, Mutex, RwLock};
use smalldb::{SmallDb, SMALL_MAX};

/// Clean block files kept open for readers.
const OPEN_FILES: usize = 32;

/// How far past a wanted packed block one read reaches (see fetch_pack_window).
const PACK_READ_WINDOW: u64 = 2 << 20;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
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

/// How long a full disk is re-measured before a writer is told ENOSPC
/// when nothing in the cache could free room (the disk may be filled by
/// someone else, who may be deleting right now).
const NOSPACE_RECHECK: Duration = Duration::from_secs(1);

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

/// Room for one write, held from `wait_for_room` until the write is done.
pub struct Room<'a> {
    cache: &'a Cache,
    len: u64,
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        let mut st = self.cache.st.lock();
        st.reserved -= self.len;
        self.cache.cv.notify_all();
    }
}

/// Add `[a, b)` to sorted, disjoint ranges, merging neighbours.
fn add_range(r: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    if a >= b {
        return;
    }
    let (mut a, mut b) = (a, b);
    // Ranges that overlap or touch [a, b) melt into it.
    let first = r.partition_point(|&(_, e)| e < a);
    let mut last = first;
    while last < r.len() && r[last].0 <= b {
        a = a.min(r[last].0);
        b = b.max(r[last].1);
        last += 1;
    }
    r.splice(first..last, [(a, b)]);
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
    /// Upload workers.
    work_cv: Condvar,
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
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stopped: AtomicBool,
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
            work_cv: Condvar::new(),
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
            workers: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
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

    /// Re-register what a previous run left on disk.
    fn recover(&self) -> Result<()> {
        let tmp = self.dir("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let mut st = self.st.lock();
        let dirty_dir = self.dir("dirty");
        let mut requeued = 0;
        for e in fs::read_dir(&dirty_dir)
            .map_err(io_err(&dirty_dir))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let parsed = name
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
            let Some((ino, idx)) = parsed else {
                let _ = fs::remove_file(e.path());
                continue;
            };
            let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
            if self.recovered(&mut st, (ino, idx), bytes, false) {
                requeued += 1;
            } else {
                let _ = fs::remove_file(e.path());
            }
        }
        for (ino, idx, bytes) in self.small.list_dirty()? {
            if st.dirty.contains_key(&(ino, idx)) {
                // A crash mid-conversion to a file: the file is complete
                // (the row is deleted only after it was written).
                self.small.del_dirty(ino, idx)?;
                continue;
            }
            if self.recovered(&mut st, (ino, idx), bytes, true) {
                requeued += 1;
            } else {
                self.small.del_dirty(ino, idx)?;
            }
        }
        if requeued > 0 {
            tracing::info!(
                blocks = requeued,
                "re-queued dirty blocks left by the previous run"
            );
        }
        let blocks_dir = self.dir("blocks");
        let known: HashSet<i64> = self.meta.block_ids()?;
        for e in fs::read_dir(&blocks_dir)
            .map_err(io_err(&blocks_dir))?
            .flatten()
        {
            let id = e.file_name().to_string_lossy().parse::<i64>().ok();
            match id {
                Some(id) if known.contains(&id) => {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    st.tick += 1;
                    let t = st.tick;
                    st.clean.insert(id, (size, t, false));
                    st.lru.insert(t, id);
                    st.clean_bytes += size;
                }
                _ => {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for (id, size) in self.small.list_clean()? {
            if known.contains(&id) {
                st.tick += 1;
                let t = st.tick;
                st.clean.insert(id, (size, t, true));
                st.lru.insert(t, id);
                st.clean_bytes += size;
            } else {
                self.small.del_clean(id)?;
            }
        }
        Ok(())
    }

    /// Register a dirty block found at start; false if its file is gone
    /// or now shorter, so the data is unreachable and may be dropped.
    fn recovered(&self, st: &mut State, key: (u64, u64), bytes: u64, small: bool) -> bool {
        match self.meta.getattr(key.0) {
            Ok(a) if key.1 * self.cfg.block_size < a.size.max(1) => {
                st.dirty_bytes += bytes;
                st.dirty.insert(
                    key,
                    Dirty {
                        incarnation: self.next_incarnation.fetch_add(1, Ordering::Relaxed),
                        version: 0,
                        bytes,
                        modified: Instant::now(),
                        uploading: false,
                        needs_sync: false,
                        small,
                        cover: vec![(0, u64::MAX)],
                    },
                );
                self.requeue(st, key);
                true
            }
            _ => false,
        }
    }

    /// Start the upload workers, and group small-block writes.
    pub fn start_workers(self: &Arc<Self>) -> std::io::Result<()> {
        self.small.start_batching()?;
        let mut w = self.workers.lock();
        for i in 0..self.cfg.upload_workers.max(1) {
            let me = self.clone();
            w.push(
                std::thread::Builder::new()
                    .name(format!("upload-{i}"))
                    .spawn(move || me.worker())?,
            );
        }
        Ok(())
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

    // ---------------------------------------------------------------- reads

    /// Read `buf.len()` bytes at `off` of block `idx` (whose valid length
    /// given the file size is `valid`). Caller holds the inode lock (shared).
    pub fn read_block(&self, ino: u64, idx: u64, off: u64, buf: &mut [u8]) -> Result<()> {
        let dirty_path = self.dir("dirty").join(dirty_name(ino, idx));
        let dirty = self.st.lock().dirty.get(&(ino, idx)).map(|d| d.small);
        if dirty.is_some() {
            self.read_hits.fetch_add(1, Ordering::Relaxed);
        }
        match dirty {
            Some(true) => {
                let data = self.small.get_dirty(ino, idx)?.unwrap_or_default();
                copy_at(&data, buf, off);
                return Ok(());
            }
            Some(false) => {
                let f = File::open(&dirty_path).map_err(io_err(&dirty_path))?;
                return read_full_at(&f, buf, off).map_err(io_err(&dirty_path));
            }
            None => {}
        }
        match self.meta.block_at(ino, idx)? {
            None => {
                buf.fill(0);
                Ok(())
            }
            Some(b) => match self.open_clean(&b) {
                Ok(c) => c.read_at(buf, off),
                // No room to cache it: serve this read straight from the store.
                Err(CacheError::NoSpace) => {
                    copy_at(&self.fetch_plain(&b)?, buf, off);
                    Ok(())
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Open the cached plaintext of a block, fetching it if needed.
    fn open_clean(&self, b: &BlockRef) -> Result<CleanData> {
        if b.object == crate::meta::LOST_OBJECT {
            return Err(CacheError::Corrupt {
                block: b.id,
                object: "(none)".into(),
                reason: "its data was lost (see fsck's report); rewrite or delete the file".into(),
            });
        }
        let path = self.dir("blocks").join(b.id.to_string());
        loop {
            let mut st = self.st.lock();
            if let Some(&(_, _, small)) = st.clean.get(&b.id) {
                self.read_hits.fetch_add(1, Ordering::Relaxed);
                st.tick += 1;
                let t = st.tick;
                if let Some(e) = st.clean.get_mut(&b.id) {
                    let old = std::mem::replace(&mut e.1, t);
                    st.lru.remove(&old);
                    st.lru.insert(t, b.id);
                }
                if small {
                    drop(st);
                    match self.small.get_clean(b.id)? {
                        Some(d) => return Ok(CleanData::Mem(d)),
                        None => continue, // evicted meanwhile
                    }
                }
                // Sequential readers come back to the same block many times
                // (a 4 MiB block is 32 kernel reads): keep a few open.
                if let Some(f) = st.open_files.get(&b.id) {
                    return Ok(CleanData::File(f.clone(), path));
                }
                // Opened under the lock: eviction may unlink the name, but
                // the open file stays readable.
                let f = Arc::new(File::open(&path).map_err(io_err(&path))?);
                if st.open_files.len() >= OPEN_FILES {
                    if let Some(&k) = st.open_files.keys().next() {
                        st.open_files.remove(&k);
                    }
                }
                st.open_files.insert(b.id, f.clone());
                return Ok(CleanData::File(f, path));
            }
            if st.fetching.contains(&b.id) {
                self.cv.wait_for(&mut st, Duration::from_millis(100));
                continue;
            }
            st.fetching.insert(b.id);
            drop(st);
            let res = self.fetch(b, &path);
            let mut st = self.st.lock();
            st.fetching.remove(&b.id);
            if let Ok((size, small)) = res {
                st.tick += 1;
                let t = st.tick;
                st.headroom -= size as i64;
                st.clean.insert(b.id, (size, t, small));
                st.lru.insert(t, b.id);
                st.clean_bytes += size;
                self.evict_locked(&mut st);
                if !st.clean.contains_key(&b.id) {
                    // Evicted at once: the disk has no room for it (filled
                    // from outside). Fetching again would loop for ever;
                    // the caller reads it straight from the store.
                    self.cv.notify_all();
                    return Err(CacheError::NoSpace);
                }
            }
            self.cv.notify_all();
            drop(st);
            res?;
        }
    }

    /// Download and verify a block's plaintext.
    fn fetch_plain(&self, b: &BlockRef) -> Result<Vec<u8>> {
        if b.object == crate::meta::LOST_OBJECT {
            return Err(CacheError::Corrupt {
                block: b.id,
                object: "(none)".into(),
                reason: "its data was lost (see fsck's report)".into(),
            });
        }
        let key = object_key(b.object);
        let rec = self.store.get_range(&key, b.offset, b.length)?;
        let plain = self
            .codec
            .decode_block(&b.hash, &rec)
            .map_err(|e| CacheError::Corrupt {
                block: b.id,
                object: key.clone(),
                reason: e.to_string(),
            })?;
        self.fetched_blocks.fetch_add(1, Ordering::Relaxed);
        Ok(plain)
    }

    /// Fetch a small packed block together with the blocks that follow it
    /// in its pack (written together, so likely read together: the next
    /// files of a directory), in one ranged GET. On a WAN the round trip,
    /// not the bytes, is what a small file costs. The neighbours go into
    /// the clean cache; returns the wanted block's plaintext.
    fn fetch_pack_window(&self, b: &BlockRef) -> Result<Option<Vec<u8>>> {
        let window = PACK_READ_WINDOW.max(b.length);
        let mut blocks = self
            .meta
            .blocks_in_object(b.object, b.offset, b.offset + window)?;
        if blocks.len() <= 1 {
            return Ok(None); // not a pack, or the last block in it
        }
        {
            let st = self.st.lock();
            // Keep the wanted block and the uncached neighbours.
            blocks.retain(|x| {
                x.id == b.id
                    || (x.plain_len <= self.small_max()
                        && !st.clean.contains_key(&x.id)
                        && !st.fetching.contains(&x.id))
            });
        }
        let Some(last) = blocks.last() else {
            return Ok(None);
        };
        let end = last.offset + last.length;
        let key = object_key(b.object);
        let rec = self.store.get_range(&key, b.offset, end - b.offset)?;
        let mut wanted = None;
        let mut extra = Vec::new();
        for x in &blocks {
            let (a, z) = (
                (x.offset - b.offset) as usize,
                (x.offset + x.length - b.offset) as usize,
            );
            let Some(r) = rec.get(a..z) else { continue };
            match self.codec.decode_block(&x.hash, r) {
                Ok(plain) if x.id == b.id => wanted = Some(plain),
                Ok(plain) => extra.push((x.id, plain)),
                Err(e) if x.id == b.id => {
                    return Err(CacheError::Corrupt {
                        block: b.id,
                        object: key.clone(),
                        reason: e.to_string(),
                    })
                }
                // A damaged neighbour is reported when someone reads it.
                Err(_) => {}
            }
        }
        self.fetched_blocks
            .fetch_add(1 + extra.len() as u64, Ordering::Relaxed);
        if !extra.is_empty() && self.small.put_clean_many(&extra).is_ok() {
            let mut st = self.st.lock();
            for (id, d) in &extra {
                if st.clean.contains_key(id) {
                    continue;
                }
                st.tick += 1;
                let t = st.tick;
                st.headroom -= d.len() as i64;
                st.clean.insert(*id, (d.len() as u64, t, true));
                st.lru.insert(t, *id);
                st.clean_bytes += d.len() as u64;
            }
            self.evict_locked(&mut st);
        }
        Ok(wanted)
    }

    /// Fetch into the cache; returns the size and whether it went into the
    /// small-block database.
    fn fetch(&self, b: &BlockRef, path: &Path) -> Result<(u64, bool)> {
        let packed = if b.plain_len <= self.small_max() {
            self.fetch_pack_window(b)?
        } else {
            None
        };
        let plain = match packed {
            Some(p) => p,
            None => self.fetch_plain(b)?,
        };
        if plain.len() as u64 <= self.small_max() {
            self.small.put_clean(b.id, &plain)?;
            return Ok((plain.len() as u64, true));
        }
        let tmp = self.tmp_path();
        if let Err(e) = fs::write(&tmp, &plain) {
            let _ = fs::remove_file(&tmp);
            if e.raw_os_error() == Some(libc::ENOSPC) {
                self.st.lock().disk_checked = None;
                return Err(CacheError::NoSpace);
            }
            return Err(io_err(&tmp)(e));
        }
        fs::rename(&tmp, path).map_err(io_err(path))?;
        Ok((plain.len() as u64, false))
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

    /// Warm the cache with blocks a sequential reader will want next.
    pub fn prefetch(self: &Arc<Self>, blocks: Vec<BlockRef>) {
        for b in blocks {
            {
                let st = self.st.lock();
                if st.clean.contains_key(&b.id) || st.fetching.contains(&b.id) {
                    continue;
                }
            }
            let me = self.clone();
            std::thread::spawn(move || {
                if let Err(e) = me.open_clean(&b) {
                    tracing::debug!("prefetch of block {} failed: {e}", b.id);
                }
            });
        }
    }

    fn tmp_path(&self) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        self.dir("tmp")
            .join(SEQ.fetch_add(1, Ordering::Relaxed).to_string())
    }

    /// Free space of the cache disk minus a reserve, re-measured twice a
    /// second and estimated in between: the disk may be shared, so the
    /// configured cache size alone cannot keep it from filling up.
    fn headroom_locked(&self, st: &mut State) -> i64 {
        if st
            .disk_checked
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
        {
            if let Ok(v) = nix::sys::statvfs::statvfs(&self.cfg.dir) {
                let frsize = v.fragment_size() as i64;
                let mut free = v.blocks_available() as i64 * frsize;
                // Room the metadata reserve gave back is the databases',
                // not the writers'.
                if self.reserve.as_ref().is_some_and(|r| r.given_back()) {
                    free -= crate::meta::reserve::RESERVE_BYTES as i64;
                }
                let total = v.blocks() as i64 * frsize;
                // Room for the metadata database to keep committing (its
                // WAL grows by up to 4 MiB between checkpoints): without
                // it, uploads could not record their results and free space.
                let reserve = (total / 10)
                    .min(1 << 30)
                    .max(4 * self.cfg.block_size as i64)
                    .max(8 << 20);
                st.headroom = free + self.small.free_bytes() as i64 - reserve;
            }
            st.disk_checked = Some(Instant::now());
        }
        st.headroom
    }

    /// Forget the clean copy of block `id` and free its room; its size.
    fn remove_clean_locked(&self, st: &mut State, id: i64) -> Option<u64> {
        let (size, t, small) = st.clean.remove(&id)?;
        st.lru.remove(&t);
        st.open_files.remove(&id);
        st.clean_bytes -= size;
        st.headroom += size as i64;
        if small {
            let _ = self.small.del_clean(id);
        } else {
            let _ = fs::remove_file(self.dir("blocks").join(id.to_string()));
        }
        Some(size)
    }

    fn evict_locked(&self, st: &mut State) {
        loop {
            let over_size =
                st.clean_bytes + st.dirty_bytes > self.cache_size.load(Ordering::Relaxed);
            if !over_size && self.headroom_locked(st) >= 0 {
                break;
            }
            let Some((&t, &id)) = st.lru.iter().next() else {
                break;
            };
            st.lru.remove(&t);
            self.remove_clean_locked(st, id);
        }
    }

    // --------------------------------------------------------------- writes

    /// Block until there is room for `len` more dirty bytes, and hold
    /// that room until the returned guard is dropped (after the write), so
    /// concurrent writers cannot all pass the limit at once. Call before
    /// taking the inode lock: uploads may need to read that inode's blocks.
    ///
    /// On a full cache disk a writer waits only while waiting can help
    /// (uploads pending free room once their blocks are clean and evicted);
    /// when it has not for `nospace_wait`, or nothing could, it gets
    /// [`CacheError::NoSpace`] (ENOSPC), so no process hangs on the mount.
    pub fn wait_for_room(&self, len: u64) -> Result<Room<'_>> {
        let mut st = self.st.lock();
        let mut logged = false;
        let mut remeasured = false;
        loop {
            self.evict_locked(&mut st);
            let headroom = self.headroom_locked(&mut st);
            // Below the margin kept for the databases: wait for uploads
            // if any are pending, else let the write try what is left.
            let low = headroom < 2 * self.cfg.block_size as i64;
            if !low {
                st.full_progress = None;
                st.hard_full = false;
            }
            // Truly full: a write failed for want of space, or the room
            // kept for commits had to be given back.
            let hard =
                low && (st.hard_full || self.reserve.as_ref().is_some_and(|r| r.given_back()));
            if hard {
                // Progress: an upload finished, or the disk gained room.
                let dirty = st.dirty_bytes;
                let progress_at = match st.full_progress {
                    Some((at, d, h)) if dirty >= d && headroom <= h => at,
                    _ => Instant::now(),
                };
                st.full_progress = Some((progress_at, dirty, headroom));
                let can_help = dirty > 0;
                let limit = if can_help {
                    self.cfg.nospace_wait
                } else {
                    NOSPACE_RECHECK.min(self.cfg.nospace_wait)
                };
                if progress_at.elapsed() >= limit {
                    if !remeasured {
                        // Not on an estimate: someone may have freed room.
                        remeasured = true;
                        st.disk_checked = None;
                        continue;
                    }
                    if let Some(n) = self.disk_full_log.hit() {
                        tracing::error!(
                            dir = %self.cfg.dir.display(),
                            dirty,
                            times = n,
                            "cache disk full and {}: writes fail with ENOSPC until space is freed",
                            if can_help { "uploads freed nothing in time" } else { "nothing left to upload or evict" }
                        );
                    }
                    return Err(CacheError::NoSpace);
                }
            }
            if (headroom < 4 * self.cfg.block_size as i64) != st.meta_unbatched {
                st.meta_unbatched = !st.meta_unbatched;
                self.meta.set_batching(!st.meta_unbatched)?;
                self.small.set_batching(!st.meta_unbatched)?;
            }
            // With nothing dirty, writers get through whatever the limit,
            // so a write larger than the limit still makes progress.
            let fits = st.dirty_bytes + st.reserved < self.dirty_limit.load(Ordering::Relaxed)
                || st.dirty_bytes == 0;
            // Truly full: nothing passes on what is left (that room is the
            // databases'); ENOSPC above once waiting stops helping.
            let wait_for_uploads = hard || (low && st.dirty_bytes > 0);
            if fits && !wait_for_uploads {
                st.reserved += len;
                break;
            }
            if st.shutdown {
                return Err(CacheError::Shutdown);
            }
            if low && !logged {
                if let Some(n) = self.disk_full_log.hit() {
                    tracing::warn!(
                        times = n,
                        "cache disk nearly full: writers wait for uploads to free space"
                    );
                }
            }
            if !logged {
                self.writer_waits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    dirty = st.dirty_bytes,
                    limit = self.dirty_limit.load(Ordering::Relaxed),
                    "dirty limit reached: writer waits for uploads"
                );
                logged = true;
            }
            st.writers_waiting += 1;
            self.work_cv.notify_all();
            self.cv.wait_for(&mut st, Duration::from_millis(200));
            st.writers_waiting -= 1;
        }
        Ok(Room { cache: self, len })
    }

    /// A write failed for want of space on the cache disk: from now until
    /// the disk has room, writers wait only while waiting frees room.
    pub fn note_disk_full(&self) {
        let mut st = self.st.lock();
        st.hard_full = true;
        st.disk_checked = None;
    }

    /// Write `data` at `off` within block `idx`; `file_size` is the size
    /// before this write. Caller holds the inode lock exclusively.
    pub fn write_block(
        &self,
        ino: u64,
        idx: u64,
        off: u64,
        data: &[u8],
        file_size: u64,
    ) -> Result<()> {
        self.write_block_cut(ino, idx, off, data, file_size, None)
    }

    /// `write_block`, then (with `cut`) shorten the block's content to
    /// `cut` bytes, all while the block is marked as being written, so no
    /// upload can take the uncut content in between.
    fn write_block_cut(
        &self,
        ino: u64,
        idx: u64,
        off: u64,
        data: &[u8],
        file_size: u64,
        cut: Option<u64>,
    ) -> Result<()> {
        let bs = self.cfg.block_size;
        let path = self.dir("dirty").join(dirty_name(ino, idx));
        let end = off + data.len() as u64;
        let (existed, small) = {
            let mut st = self.st.lock();
            let st = &mut *st;
            match st.dirty.get_mut(&(ino, idx)) {
                Some(d) => {
                    d.version += 1; // odd: write in progress
                    (true, d.small)
                }
                None => {
                    let inc = self.next_incarnation.fetch_add(1, Ordering::Relaxed);
                    let small = end <= self.small_max();
                    st.dirty.insert(
                        (ino, idx),
                        Dirty {
                            incarnation: inc,
                            version: 1,
                            bytes: 0,
                            modified: Instant::now(),
                            uploading: false,
                            needs_sync: true,
                            small,
                            // What the block held before stays valid.
                            cover: vec![(0, file_size.saturating_sub(idx * bs).min(bs))],
                        },
                    );
                    (false, small)
                }
            }
        };
        // Small blocks go to the database straight away: its writes are
        // grouped, and it is committed before the metadata that points at
        // them, so a crash never leaves a size without its bytes.
        let res = (|| -> Result<(u64, bool)> {
            if small {
                let mut buf = if existed {
                    self.small.get_dirty(ino, idx)?.unwrap_or_default()
                } else {
                    self.old_content(ino, idx, off, data.len() as u64, file_size, bs)?
                };
                if buf.len() as u64 >= end || end <= self.small_max() {
                    if (buf.len() as u64) < end {
                        buf.resize(end as usize, 0);
                    }
                    buf[off as usize..end as usize].copy_from_slice(data);
                    if let Some(c) = cut {
                        buf.truncate(c as usize);
                    }
                    self.small.put_dirty(ino, idx, &buf)?;
                    return Ok((buf.len() as u64, true));
                }
                // Grows past the small limit: the block moves to a file.
                let f = create_truncated(&path)?;
                f.write_all_at(&buf, 0)
                    .and_then(|_| f.write_all_at(data, off))
                    .map_err(io_err(&path))?;
                self.small.del_dirty(ino, idx)?;
                let len = f.metadata().map_err(io_err(&path))?.len();
                return Ok((len, false));
            }
            let f = if existed {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?
            } else {
                let f = create_truncated(&path)?;
                let old = self.old_content(ino, idx, off, data.len() as u64, file_size, bs)?;
                f.write_all_at(&old, 0).map_err(io_err(&path))?;
                f
            };
            f.write_all_at(data, off).map_err(io_err(&path))?;
            if let Some(c) = cut {
                let len = f.metadata().map_err(io_err(&path))?.len();
                f.set_len(c.min(len)).map_err(io_err(&path))?;
            }
            Ok((f.metadata().map_err(io_err(&path))?.len(), false))
        })();
        let mut st = self.st.lock();
        let st = &mut *st;
        match res {
            Ok((len, small_now)) => {
                if let Some(d) = st.dirty.get_mut(&(ino, idx)) {
                    d.version += 1;
                    st.headroom -= len as i64 - d.bytes as i64;
                    st.dirty_bytes = st.dirty_bytes - d.bytes + len;
                    d.bytes = len;
                    d.modified = Instant::now();
                    d.needs_sync = true;
                    d.small = small_now;
                    add_range(&mut d.cover, off, end);
                }
                self.requeue(st, (ino, idx));
                self.evict_locked(st);
                Ok(())
            }
            Err(e) => {
                if let Some(d) = st.dirty.get_mut(&(ino, idx)) {
                    d.version += 1;
                    if !existed {
                        // Nothing valid was written: forget the entry.
                        st.dirty_bytes -= d.bytes;
                        st.dirty.remove(&(ino, idx));
                        if small {
                            let _ = self.small.del_dirty(ino, idx);
                        }
                    }
                }
                if !existed || small {
                    // A file left by a failed create or conversion.
                    let _ = fs::remove_file(&path);
                }
                self.requeue(st, (ino, idx));
                match e {
                    CacheError::Io { ref cause, .. }
                        if cause.raw_os_error() == Some(libc::ENOSPC) =>
                    {
                        // Measure again next time; the caller waits and retries.
                        st.disk_checked = None;
                        Err(CacheError::NoSpace)
                    }
                    CacheError::Meta(ref m) if m.is_disk_full() => {
                        st.disk_checked = None;
                        Err(CacheError::NoSpace)
                    }
                    e => Err(e),
                }
            }
        }
    }

    /// A block's current stored content (up to the file's end), unless the
    /// write about to happen replaces all of it.
    fn old_content(
        &self,
        ino: u64,
        idx: u64,
        off: u64,
        len: u64,
        file_size: u64,
        bs: u64,
    ) -> Result<Vec<u8>> {
        let valid = file_size.saturating_sub(idx * bs).min(bs);
        if valid == 0 || (off == 0 && len >= valid) {
            return Ok(Vec::new());
        }
        let Some(b) = self.meta.block_at(ino, idx)? else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; b.plain_len.min(valid) as usize];
        match self.open_clean(&b) {
            Ok(c) => c.read_at(&mut buf, 0)?,
            Err(CacheError::NoSpace) => copy_at(&self.fetch_plain(&b)?, &mut buf, 0),
            Err(e) => return Err(e),
        }
        Ok(buf)
    }

    /// Cut a file to `new_size` (caller holds the inode lock exclusively and
    /// updates the inode's size).
    pub fn truncate(&self, ino: u64, old_size: u64, new_size: u64) -> Result<()> {
        let bs = self.cfg.block_size;
        if new_size > old_size {
            // The old end's block must read as zeros past the old end.
            return self.cut_past_eof(ino, old_size);
        }
        if new_size == old_size {
            return Ok(());
        }
        let keep = new_size.div_ceil(bs);
        self.drop_dirty_range(ino, keep, u64::MAX);
        self.meta.unmap_from(ino, keep, self.shipper.next_gen())?;
        let tail = new_size % bs;
        if tail != 0 {
            // The kept partial block must read as zeros past the new end,
            // even if the file grows again later.
            let idx = new_size / bs;
            let exists = self.st.lock().dirty.contains_key(&(ino, idx))
                || self.meta.block_at(ino, idx)?.is_some();
            if exists {
                self.write_block_cut(ino, idx, tail, &[], old_size, Some(tail))?;
            }
        }
        Ok(())
    }

    fn forget_dirty(&self, k: (u64, u64), small: bool) {
        if small {
            let _ = self.small.del_dirty(k.0, k.1);
        } else {
            let _ = fs::remove_file(self.dir("dirty").join(dirty_name(k.0, k.1)));
        }
    }

    /// Forget all cached state of a deleted inode.
    pub fn drop_inode(&self, ino: u64) {
        self.drop_dirty_range(ino, 0, u64::MAX);
        self.st.lock().urgent.remove(&ino);
    }

    /// Discard the dirty copies of blocks `first..end` of a file (truncated,
    /// punched or deleted: never to be uploaded).
    fn drop_dirty_range(&self, ino: u64, first: u64, end: u64) {
        if first >= end {
            return;
        }
        let mut st = self.st.lock();
        let st = &mut *st;
        let keys: Vec<(u64, u64)> = st
            .dirty
            .range((ino, first)..(ino, end))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(d) = st.dirty.remove(&k) {
                st.dirty_bytes -= d.bytes;
                self.forget_dirty(k, d.small);
            }
        }
        self.cv.notify_all();
    }

    /// fsync with local durability: this inode's dirty blocks are on disk.
    pub fn sync_local(&self, ino: u64) -> Result<()> {
        let mut any_small = false;
        let keys: Vec<(u64, u64)> = {
            let mut st = self.st.lock();
            let mut keys = Vec::new();
            for (k, d) in st.dirty.iter_mut() {
                if k.0 == ino && d.needs_sync {
                    d.needs_sync = false;
                    if d.small {
                        any_small = true;
                    } else {
                        keys.push(*k);
                    }
                }
            }
            keys
        };
        if any_small {
            self.small.sync()?;
        }
        for (i, x) in &keys {
            let p = self.dir("dirty").join(dirty_name(*i, *x));
            match File::open(&p) {
                Ok(f) => f.sync_all().map_err(io_err(&p))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // uploaded meanwhile
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        if !keys.is_empty() {
            let d = self.dir("dirty");
            crate::store::local::fsync_dir(&d).map_err(io_err(&d))?;
        }
        Ok(())
    }

    /// Upload this inode's dirty blocks now and wait until they are stored
    /// (or all inodes, with `None`).
    pub fn flush(&self, ino: Option<u64>) -> Result<()> {
        let mut st = self.st.lock();
        match ino {
            Some(i) => {
                st.urgent.insert(i);
            }
            None => st.flush_all = true,
        }
        self.work_cv.notify_all();
        loop {
            let pending = match ino {
                Some(i) => st.dirty.range((i, 0)..=(i, u64::MAX)).next().is_some(),
                None => !st.dirty.is_empty(),
            } || !st.pack.recs.is_empty()
                && ino.is_none_or(|i| st.pack.recs.iter().any(|r| r.key.0 == i));
            if !pending {
                break;
            }
            if st.shutdown && self.stopped.load(Ordering::Acquire) {
                return Err(CacheError::Shutdown);
            }
            self.cv.wait_for(&mut st, Duration::from_millis(100));
        }
        if let Some(i) = ino {
            st.urgent.remove(&i);
        } else {
            st.flush_all = false;
        }
        Ok(())
    }

    pub fn drop_clean(&self) {
        let mut st = self.st.lock();
        st.disk_checked = None;
        let ids: Vec<(i64, bool)> = st.clean.iter().map(|(id, e)| (*id, e.2)).collect();
        for (id, small) in ids {
            if !small {
                let _ = fs::remove_file(self.dir("blocks").join(id.to_string()));
            }
        }
        let _ = self.small.clear_clean();
        st.clean.clear();
        st.open_files.clear();
        st.lru.clear();
        st.clean_bytes = 0;
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

    /// Drop the clean copies of blocks no file references any more (their
    /// last reference went with a delete or an overwrite): they could
    /// never be read again, only evicted some day. Returns the blocks and
    /// bytes freed.
    pub fn drop_dead_clean(&self) -> Result<(usize, u64)> {
        let ids: Vec<i64> = self.st.lock().clean.keys().copied().collect();
        if ids.is_empty() {
            return Ok((0, 0));
        }
        let live = self.meta.existing_blocks(&ids)?;
        let mut st = self.st.lock();
        let (mut n, mut bytes) = (0, 0);
        for id in ids.into_iter().filter(|id| !live.contains(id)) {
            // Block ids are never reused: a dead id stays dead.
            if let Some(size) = self.remove_clean_locked(&mut st, id) {
                n += 1;
                bytes += size;
            }
        }
        if n > 0 {
            tracing::debug!(blocks = n, bytes, "dropped cached copies of deleted blocks");
            self.cv.notify_all();
        }
        Ok((n, bytes))
    }

    pub fn dirty_count(&self) -> usize {
        let st = self.st.lock();
        st.dirty.len() + st.pack.recs.len()
    }

    /// Stop workers (after a flush, for a clean unmount).
    pub fn shutdown(&self) {
        self.st.lock().shutdown = true;
        self.cv.notify_all();
        self.work_cv.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock());
        for w in workers {
            let _ = w.join();
        }
        self.stopped.store(true, Ordering::Release);
    }

    // -------------------------------------------------------------- uploads

    fn worker(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let job = {
                let mut st = self.st.lock();
                loop {
                    if st.shutdown {
                        return;
                    }
                    if let Some(j) = self.pick(&mut st) {
                        break j;
                    }
                    self.work_cv.wait_for(&mut st, Duration::from_millis(100));
                }
            };
            let is_block = matches!(job, Job::Blocks(..));
            let res = match job {
                Job::Blocks(blocks) => self.upload_blocks(&blocks),
                Job::Pack(pack) => self.upload_pack(pack),
            };
            let mut st = self.st.lock();
            st.uploads_in_flight -= 1;
            if is_block {
                st.block_jobs -= 1;
                self.work_cv.notify_one();
            }
            match res {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    st.last_error = None;
                    self.cv.notify_all();
                }
                Err(e) => {
                    if is_disk_full(&e) {
                        // The metadata database needs room to commit:
                        // clean blocks can always be fetched again.
                        drop(st);
                        self.drop_clean();
                        st = self.st.lock();
                    }
                    if let Some(n) = self.upload_fail_log.hit() {
                        tracing::warn!(times = n, "upload failed, will retry in {backoff:?}: {e}");
                    }
                    st.last_error = Some(e.to_string());
                    self.cv.notify_all();
                    drop(st);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn pick(&self, st: &mut State) -> Option<Job> {
        let now = Instant::now();
        let pressure = st.writers_waiting > 0 || st.flush_all;
        let mut chosen: Option<(u64, u64)> = None;
        // fsync / flush of one inode: its blocks first (rare: a scan).
        if !st.urgent.is_empty() {
            chosen = st
                .queue
                .iter()
                .find(|(_, i, x)| st.urgent.contains(i) && Self::pickable(st, &(*i, *x)))
                .map(|(_, i, x)| (*i, *x));
        }
        while chosen.is_none() {
            let Some(k) = st.ready.pop_front() else { break };
            if Self::pickable(st, &k) && (pressure || !self.wait_for_next(st, k)) {
                chosen = Some(k);
            }
        }
        while chosen.is_none() {
            let Some(&(t, i, x)) = st.queue.first() else {
                break;
            };
            let current = st
                .dirty
                .get(&(i, x))
                .is_some_and(|d| d.modified == t && !d.uploading && d.version % 2 == 0);
            if !current {
                st.queue.pop_first();
                continue;
            }
            if pressure || now.duration_since(t) >= self.cfg.upload_delay {
                st.queue.pop_first();
                chosen = Some((i, x));
            }
            break;
        }
        // A pack fills while small blocks keep coming; it goes once full,
        // once writing pauses or it grows old, or, when someone waits for
        // it, once no more blocks are queued that could still join it.
        let max_age = (self.cfg.upload_delay * 10).max(Duration::from_secs(5));
        let pack_due = match (st.pack.started, st.pack.last_added) {
            (Some(s), Some(l)) => {
                st.pack.buf.len() as u64 >= self.cfg.pack_target
                    || now.duration_since(l) >= self.cfg.upload_delay
                    || now.duration_since(s) >= max_age
                    || (chosen.is_none()
                        && st.block_jobs == 0
                        && (pressure || st.pack.recs.iter().any(|r| st.urgent.contains(&r.key.0))))
            }
            _ => false,
        };
        if pack_due {
            if let Some(k) = chosen {
                self.requeue(st, k);
            }
            st.uploads_in_flight += 1;
            return Some(Job::Pack(std::mem::take(&mut st.pack)));
        }
        let k = chosen?;
        let room = self.object_room();
        let mut keys = vec![k];
        if self.full_pickable(st, &k) {
            // The file's neighbouring full blocks, then other full blocks
            // waiting, join it up to the object size.
            let (ino, mut last) = (k.0, k.1);
            let before = self.full_run_before(st, k, room - 1);
            keys.extend((k.1 - before as u64..k.1).map(|i| (ino, i)));
            while keys.len() < room && self.full_pickable(st, &(ino, last + 1)) {
                last += 1;
                keys.push((ino, last));
            }
            while keys.len() < room {
                let Some(k) = st.ready.pop_front() else { break };
                if self.full_pickable(st, &k) && !keys.contains(&k) {
                    keys.push(k);
                }
            }
            keys.sort_unstable();
        }
        let mut blocks = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(d) = st.dirty.get_mut(&k) {
                d.uploading = true;
                blocks.push((k, d.incarnation, d.version));
            }
        }
        st.uploads_in_flight += 1;
        st.block_jobs += 1;
        Some(Job::Blocks(blocks))
    }

    fn unmark(&self, key: (u64, u64), inc: u64) {
        let mut st = self.st.lock();
        if let Some(d) = st.dirty.get_mut(&key) {
            if d.incarnation == inc {
                d.uploading = false;
                self.requeue(&mut st, key);
            }
        }
        self.cv.notify_all();
    }

    /// Queue a dirty block whose state changed; a no-op unless it can be
    /// uploaded (not uploading, no write in progress).
    fn requeue(&self, st: &mut State, key: (u64, u64)) {
        if let Some(d) = st.dirty.get(&key) {
            if !d.uploading && d.version % 2 == 0 {
                st.queue.insert((d.modified, key.0, key.1));
                if self.complete(d) {
                    st.ready.push_back(key);
                }
                self.work_cv.notify_one();
            }
        }
    }

    /// Pickable and whole: every byte of the block written (writeback
    /// pieces arrive in any order, so its length alone says nothing).
    fn full_pickable(&self, st: &State, key: &(u64, u64)) -> bool {
        Self::pickable(st, key) && st.dirty.get(key).is_some_and(|d| self.complete(d))
    }

    fn complete(&self, d: &Dirty) -> bool {
        d.cover
            .first()
            .is_some_and(|r| r.0 == 0 && r.1 >= self.cfg.block_size)
    }

    /// Whether full block `k` should wait (up to the upload delay) for the
    /// blocks after it, which its writer is likely still filling, to go up
    /// with it in one object: unless the run of full blocks ending at `k`
    /// already fills one, or the next block is on its way up already.
    fn wait_for_next(&self, st: &State, k: (u64, u64)) -> bool {
        let room = self.object_room();
        if room <= 1 || st.dirty.get(&(k.0, k.1 + 1)).is_some_and(|d| d.uploading) {
            return false;
        }
        1 + self.full_run_before(st, k, room - 1) < room
    }

    /// Blocks per object.
    fn object_room(&self) -> usize {
        (self.cfg.object_target / self.cfg.block_size).max(1) as usize
    }

    /// How many blocks right before `k` in its file are full and pickable
    /// (at most `max`).
    fn full_run_before(&self, st: &State, k: (u64, u64), max: usize) -> usize {
        (1..=k.1)
            .take(max)
            .take_while(|&n| self.full_pickable(st, &(k.0, k.1 - n)))
            .count()
    }

    fn pickable(st: &State, key: &(u64, u64)) -> bool {
        st.dirty
            .get(key)
            .is_some_and(|d| !d.uploading && d.version % 2 == 0)
    }

    /// Upload dirty blocks: each one already stored (dedup) is mapped to
    /// that block, small encodings join the pack, the rest go up together
    /// as one object. On failure every block not handed to the pack is
    /// given back to the queue.
    fn upload_blocks(&self, blocks: &[((u64, u64), u64, u64)]) -> Result<()> {
        // Blocks handed to the pack or left waiting on another upload of
        // the same content are not this job's to give back.
        let mut handed = HashSet::new();
        let mut claimed = Vec::new();
        let res = self.upload_blocks_inner(blocks, &mut handed, &mut claimed);
        if res.is_err() {
            for (key, inc, _) in blocks {
                if !handed.contains(key) {
                    self.unmark(*key, *inc);
                }
            }
        }
        let waiters: Vec<_> = {
            let mut st = self.st.lock();
            claimed
                .iter()
                .filter_map(|h| st.inflight.remove(h))
                .flatten()
                .collect()
        };
        for (key, inc) in waiters {
            self.unmark(key, inc);
        }
        res
    }

    fn upload_blocks_inner(
        &self,
        blocks: &[((u64, u64), u64, u64)],
        handed: &mut HashSet<(u64, u64)>,
        claimed: &mut Vec<Hash>,
    ) -> Result<()> {
        let mut items = Vec::with_capacity(blocks.len());
        // Sized once from the blocks' lengths: growing by doubling would
        // hold up to twice the object.
        let size: usize = {
            let st = self.st.lock();
            blocks
                .iter()
                .filter_map(|(k, _, _)| st.dirty.get(k))
                .map(|d| d.bytes as usize + 64)
                .sum()
        };
        let mut object = Vec::with_capacity(size);
        let mut spans: HashMap<Hash, (u64, u64)> = HashMap::new();
        for &(key, inc, ver) in blocks {
            let Some(data) = self.current_dirty(key, inc, ver)? else {
                self.unmark(key, inc); // gone, torn or superseded: try later
                continue;
            };
            let hash = sha256(&data);
            let plain_len = data.len() as u64;
            let (offset, length) = match spans.get(&hash) {
                Some(&span) => span, // the same content twice in this object
                None => {
                    // Claim the content before looking it up: whoever
                    // stored it first had committed before releasing its
                    // claim.
                    {
                        let mut st = self.st.lock();
                        if let Some(w) = st.inflight.get_mut(&hash) {
                            w.push((key, inc));
                            handed.insert(key);
                            continue;
                        }
                        st.inflight.insert(hash, Vec::new());
                        claimed.push(hash);
                    }
                    if let Some(b) = self.meta.find_block(&hash)? {
                        self.dedup_hits.fetch_add(1, Ordering::Relaxed);
                        items.push((key, inc, ver, Ok(b.id)));
                        continue;
                    }
                    let offset = object.len();
                    self.codec.encode_into(&hash, &data, &mut object);
                    if ((object.len() - offset) as u64) < self.cfg.pack_threshold {
                        // Usually the only record (a small file): no copy.
                        let rec = if offset == 0 {
                            std::mem::take(&mut object)
                        } else {
                            object.split_off(offset)
                        };
                        self.add_to_pack(key, inc, ver, hash, &rec, plain_len);
                        handed.insert(key);
                        continue;
                    }
                    let span = (offset as u64, (object.len() - offset) as u64);
                    spans.insert(hash, span);
                    span
                }
            };
            items.push((
                key,
                inc,
                ver,
                Err(NewRecord {
                    hash,
                    offset,
                    length,
                    plain_len,
                }),
            ));
        }
        if object.is_empty() {
            return if items.is_empty() {
                Ok(())
            } else {
                self.commit(&items, None)
            };
        }
        let obj = self.next_object.fetch_add(1, Ordering::Relaxed);
        self.store.put(&object_key(obj), &object)?;
        self.uploaded_objects.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes
            .fetch_add(object.len() as u64, Ordering::Relaxed);
        self.commit(&items, Some((obj, object.len() as u64)))
    }

    /// A dirty block's content, if the entry is still this incarnation
    /// and version (not written meanwhile).
    fn current_dirty(&self, key: (u64, u64), inc: u64, ver: u64) -> Result<Option<Vec<u8>>> {
        let path = self.dir("dirty").join(dirty_name(key.0, key.1));
        let small = self.st.lock().dirty.get(&key).map(|d| d.small);
        let data = match small {
            Some(true) => self.small.get_dirty(key.0, key.1)?,
            Some(false) => match fs::read(&path) {
                Ok(d) => Some(d),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(&path)(e)),
            },
            None => None,
        };
        let mut st = self.st.lock();
        let current =
            matches!(st.dirty.get(&key), Some(d) if d.incarnation == inc && d.version == ver);
        if current && data.is_none() {
            // Gone while current: its bytes never reached the disk (a
            // commit the full disk refused, already reported). Retrying
            // could never succeed; the block reads as it was before.
            if let Some(d) = st.dirty.remove(&key) {
                st.dirty_bytes -= d.bytes;
                tracing::error!(
                    ino = key.0,
                    block = key.1,
                    "a dirty block's bytes are missing from the cache (lost when the disk was full): dropped"
                );
            }
            self.cv.notify_all();
        }
        Ok(if current { data } else { None })
    }

    /// Hand an encoded block to the pack being filled; it stays
    /// `uploading` until the pack is stored.
    fn add_to_pack(
        &self,
        key: (u64, u64),
        inc: u64,
        ver: u64,
        hash: Hash,
        rec: &[u8],
        plain_len: u64,
    ) {
        let mut st = self.st.lock();
        let st = &mut *st;
        let span = if st.pack.hashes.contains(&hash) {
            None
        } else {
            let off = st.pack.buf.len() as u64;
            st.pack.buf.extend_from_slice(rec);
            st.pack.hashes.insert(hash);
            Some((off, rec.len() as u64))
        };
        st.pack.recs.push(PendingRec {
            key,
            incarnation: inc,
            version: ver,
            hash,
            plain_len,
            span,
        });
        st.pack.started.get_or_insert_with(Instant::now);
        st.pack.last_added = Some(Instant::now());
        self.cv.notify_all();
    }

    fn upload_pack(&self, pack: Pack) -> Result<()> {
        let obj = self.next_object.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store.put(&object_key(obj), &pack.buf) {
            // Give the blocks back to the queue; they will be re-encoded.
            for r in &pack.recs {
                self.unmark(r.key, r.incarnation);
            }
            return Err(e.into());
        }
        self.uploaded_objects.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes
            .fetch_add(pack.buf.len() as u64, Ordering::Relaxed);
        let mut items = Vec::with_capacity(pack.recs.len());
        let mut by_hash: HashMap<Hash, (u64, u64)> = HashMap::new();
        for r in &pack.recs {
            if let Some(s) = r.span {
                by_hash.insert(r.hash, s);
            }
        }
        for r in &pack.recs {
            let (offset, length) = by_hash[&r.hash];
            items.push((
                r.key,
                r.incarnation,
                r.version,
                Err(NewRecord {
                    hash: r.hash,
                    offset,
                    length,
                    plain_len: r.plain_len,
                }),
            ));
        }
        let res = self.commit(&items, Some((obj, pack.buf.len() as u64)));
        if res.is_err() {
            for r in &pack.recs {
                self.unmark(r.key, r.incarnation);
            }
        }
        res
    }

    /// Record uploaded blocks in the metadata and retire clean dirty files.
    /// Each item maps a dirty block to an existing block id (dedup) or to a
    /// new block inside `object`.
    #[allow(clippy::type_complexity)]
    fn commit(
        &self,
        items: &[((u64, u64), u64, u64, std::result::Result<i64, NewRecord>)],
        object: Option<(i64, u64)>,
    ) -> Result<()> {
        let gen = self.shipper.next_gen();
        // Decide under the state lock which entries are still current, and
        // keep it held so no writer slips in between map and cleanup.
        let mut st = self.st.lock();
        let st = &mut *st;
        let uploads: Vec<Upload> = items
            .iter()
            .map(|(key, inc, _ver, b)| Upload {
                map_to: st
                    .dirty
                    .get(key)
                    .is_some_and(|d| d.incarnation == *inc)
                    .then_some(*key),
                block: match b {
                    Ok(id) => UploadedBlock::Existing(*id),
                    Err(nb) => UploadedBlock::New(nb.clone()),
                },
            })
            .collect();
        let Recorded { object_used, ids } = self.meta.record_upload(object, &uploads, gen)?;
        // The block map must be on disk before the dirty copies go.
        self.meta.commit()?;
        if let (Some((obj, _)), false) = (object, object_used) {
            // Nothing references it and no metadata ever did: delete now.
            let _ = self.store.delete(&object_key(obj));
        }
        for ((key, inc, ver, _), id) in items.iter().zip(ids) {
            let Some(id) = id else { continue };
            let Some(d) = st.dirty.get_mut(key) else {
                continue;
            };
            if d.incarnation != *inc {
                continue;
            }
            if d.version != *ver {
                d.uploading = false; // changed since: upload again later
                self.requeue(st, *key);
                continue;
            }
            let d = st.dirty.remove(key).expect("present");
            st.dirty_bytes -= d.bytes;
            // The uploaded content becomes the clean copy of its block.
            let kept = if st.clean.contains_key(&id) {
                self.forget_dirty(*key, d.small);
                false
            } else if d.small {
                self.small.dirty_to_clean(key.0, key.1, id).is_ok()
            } else {
                let src = self.dir("dirty").join(dirty_name(key.0, key.1));
                let dst = self.dir("blocks").join(id.to_string());
                let ok = fs::rename(&src, &dst).is_ok();
                if !ok {
                    let _ = fs::remove_file(&src);
                }
                ok
            };
            if kept {
                st.tick += 1;
                let t = st.tick;
                st.clean.insert(id, (d.bytes, t, d.small));
                st.lru.insert(t, id);
                st.clean_bytes += d.bytes;
            }
        }
        self.evict_locked(st);
        self.cv.notify_all();
        Ok(())
    }
}

enum Job {
    /// Dirty blocks (key, incarnation, version), stored in one object.
    Blocks(Vec<((u64, u64), u64, u64)>),
    Pack(Pack),
}

/// A clean block's plaintext: a cache file or (small blocks) bytes.
enum CleanData {
    File(Arc<File>, PathBuf),
    Mem(Vec<u8>),
}

impl CleanData {
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        match self {
            CleanData::File(f, p) => read_full_at(f, buf, off).map_err(io_err(p)),
            CleanData::Mem(d) => {
                copy_at(d, buf, off);
                Ok(())
            }
        }
    }
}

/// Copy from `data` at `off` into `buf`; past its end reads as zeros.
fn copy_at(data: &[u8], buf: &mut [u8], off: u64) {
    let start = (off as usize).min(data.len());
    let n = (data.len() - start).min(buf.len());
    buf[..n].copy_from_slice(&data[start..start + n]);
    buf[n..].fill(0);
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

fn is_disk_full(e: &CacheError) -> bool {
    match e {
        CacheError::Meta(m) => m.is_disk_full(),
        CacheError::NoSpace => true,
        CacheError::Io { cause: source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
        _ => false,
    }
}

/// Fill `buf` from `off`; bytes past the end of the file read as zeros.
fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::add_range;

    #[test]
    fn ranges_merge_in_any_order() {
        let mut r = Vec::new();
        add_range(&mut r, 8, 12);
        add_range(&mut r, 0, 4);
        assert_eq!(r, vec![(0, 4), (8, 12)]);
        add_range(&mut r, 4, 8); // touches both
        assert_eq!(r, vec![(0, 12)]);
        add_range(&mut r, 20, 30);
        add_range(&mut r, 2, 25);
        assert_eq!(r, vec![(0, 30)]);
        add_range(&mut r, 5, 5);
        assert_eq!(r, vec![(0, 30)]);
    }
}
