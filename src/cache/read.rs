//! Reading: a block from its dirty copy, its clean copy, or the store
//! (fetched into the cache; a packed block with its neighbours).

use super::fresh::{self, FreshBlock};
use super::{dirty_name, io_err, Cache, CacheError, Result};
use crate::meta::{object_key, BlockRef};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::{fs, io};

/// Clean block files kept open for readers.
pub(super) const OPEN_FILES: usize = 32;

/// How far past a wanted packed block one read reaches (see fetch_pack_window).
pub(super) const PACK_READ_WINDOW: u64 = 2 << 20;

/// A clean block's plaintext: a cache file, (small blocks) bytes, or a
/// block just fetched.
pub(super) enum CleanData {
    File(Arc<File>, PathBuf),
    Mem(Vec<u8>),
    Fresh(Arc<FreshBlock>),
}

impl CleanData {
    pub(super) fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        match self {
            CleanData::File(f, p) => read_full_at(f, buf, off).map_err(io_err(p)),
            CleanData::Mem(d) => {
                copy_at(d, buf, off);
                Ok(())
            }
            CleanData::Fresh(f) => {
                copy_at(f.data(), buf, off);
                Ok(())
            }
        }
    }
}

/// Copy from `data` at `off` into `buf`; past its end reads as zeros.
pub(super) fn copy_at(data: &[u8], buf: &mut [u8], off: u64) {
    let start = (off as usize).min(data.len());
    let n = (data.len() - start).min(buf.len());
    buf[..n].copy_from_slice(&data[start..start + n]);
    buf[n..].fill(0);
}

/// A clean block as the cache holds it.
enum Hit {
    File(Arc<File>),
    /// In `cache.db`.
    Small,
    Miss,
}

/// [`read_full_at`] from the page cache only: false as soon as a page
/// would have to come from the disk (RWF_NOWAIT), or where the
/// filesystem cannot say.
fn read_full_at_now(f: &File, buf: &mut [u8], off: u64) -> io::Result<bool> {
    use rustix::io::{Errno, ReadWriteFlags};
    let mut done = 0;
    while done < buf.len() {
        let mut iov = [io::IoSliceMut::new(&mut buf[done..])];
        match rustix::io::preadv2(f, &mut iov, off + done as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS) => return Ok(false),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Fill `buf` from `off`; bytes past the end of the file read as zeros.
pub(super) fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
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

impl Cache {
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
                Ok(c) => {
                    c.read_at(buf, off)?;
                    if let CleanData::Fresh(f) = &c {
                        self.served_fresh(b.id, f, off, buf.len());
                    }
                    Ok(())
                }
                // No room to cache it: serve this read straight from the store.
                Err(CacheError::NoSpace) => {
                    copy_at(&self.fetch_plain(&b)?, buf, off);
                    Ok(())
                }
                Err(e) => Err(e),
            },
        }
    }

    /// [`read_block`](Self::read_block) if every byte is in the page cache
    /// now: no wait on the disk, the store or a fetch under way. Ok(false):
    /// it would wait (or the block is in `cache.db`); ask `read_block`.
    pub fn read_block_now(&self, ino: u64, idx: u64, off: u64, buf: &mut [u8]) -> Result<bool> {
        let dirty = self.st.lock().dirty.get(&(ino, idx)).map(|d| d.small);
        let (f, path) = match dirty {
            Some(true) => return Ok(false),
            Some(false) => {
                let path = self.dir("dirty").join(dirty_name(ino, idx));
                (Arc::new(File::open(&path).map_err(io_err(&path))?), path)
            }
            None => match self.meta.block_at(ino, idx)? {
                None => {
                    buf.fill(0);
                    return Ok(true);
                }
                Some(b) => {
                    let path = self.dir("blocks").join(b.id.to_string());
                    let mut st = self.st.lock();
                    if let Some(f) = st.fresh.get(b.id) {
                        drop(st);
                        copy_at(f.data(), buf, off);
                        self.read_hits.fetch_add(1, Ordering::Relaxed);
                        self.served_fresh(b.id, &f, off, buf.len());
                        return Ok(true);
                    }
                    match self.clean_hit(&mut st, b.id, &path)? {
                        Hit::File(f) => (f, path),
                        Hit::Small | Hit::Miss => return Ok(false),
                    }
                }
            },
        };
        let done = read_full_at_now(&f, buf, off).map_err(io_err(&path))?;
        if done {
            // Only here: a read handed on is counted where it is served.
            self.read_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(done)
    }

    /// Whether a clean block is cached, and where; a hit counts as a use
    /// (for eviction; the caller counts it as a cache hit once served).
    fn clean_hit(&self, st: &mut super::State, id: i64, path: &Path) -> Result<Hit> {
        let Some(&(_, _, small)) = st.clean.get(&id) else {
            return Ok(Hit::Miss);
        };
        st.tick += 1;
        let t = st.tick;
        if let Some(e) = st.clean.get_mut(&id) {
            let old = std::mem::replace(&mut e.1, t);
            st.lru.remove(&old);
            st.lru.insert(t, id);
        }
        if small {
            return Ok(Hit::Small);
        }
        // Sequential readers come back to the same block many times
        // (a 4 MiB block is 32 kernel reads): keep a few open.
        if let Some(f) = st.open_files.get(&id) {
            return Ok(Hit::File(f.clone()));
        }
        // Opened under the lock: eviction may unlink the name, but the
        // open file stays readable.
        let f = Arc::new(File::open(path).map_err(io_err(path))?);
        if st.open_files.len() >= OPEN_FILES {
            if let Some(&k) = st.open_files.keys().next() {
                st.open_files.remove(&k);
            }
        }
        st.open_files.insert(id, f.clone());
        Ok(Hit::File(f))
    }

    /// Open the cached plaintext of a block, fetching it if needed.
    pub(super) fn open_clean(&self, b: &BlockRef) -> Result<CleanData> {
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
            if let Some(f) = st.fresh.get(b.id) {
                self.read_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(CleanData::Fresh(f));
            }
            let hit = self.clean_hit(&mut st, b.id, &path)?;
            if !matches!(hit, Hit::Miss) {
                self.read_hits.fetch_add(1, Ordering::Relaxed);
            }
            match hit {
                Hit::File(f) => return Ok(CleanData::File(f, path)),
                Hit::Small => {
                    drop(st);
                    match self.small.get_clean(b.id)? {
                        Some(d) => return Ok(CleanData::Mem(d)),
                        None => continue, // evicted meanwhile
                    }
                }
                Hit::Miss => {}
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
            let kept = match &res {
                Ok((size, small)) => self.install_clean(&mut st, b.id, *size, *small),
                Err(_) => false,
            };
            self.cv.notify_all();
            if kept {
                continue;
            }
            // Not kept on the cache disk (no room, or writing failed): the
            // copy in memory, if any, still serves this read.
            if let Some(f) = st.fresh.get(b.id) {
                if let Err(e) = &res {
                    tracing::debug!("block {} not cached: {e}", b.id);
                }
                return Ok(CleanData::Fresh(f));
            }
            drop(st);
            res?;
            // Evicted at once: the disk has no room for it (filled from
            // outside). Fetching again would loop for ever; the caller
            // reads it straight from the store.
            return Err(CacheError::NoSpace);
        }
    }

    /// Account a block just stored in the cache as clean and most recently
    /// used; false if eviction had to take it straight away.
    fn install_clean(&self, st: &mut super::State, id: i64, size: u64, small: bool) -> bool {
        st.tick += 1;
        let t = st.tick;
        st.headroom -= size as i64;
        st.clean.insert(id, (size, t, small));
        st.lru.insert(t, id);
        st.clean_bytes += size;
        self.evict_locked(st);
        st.clean.contains_key(&id)
    }

    /// Download and verify a block's plaintext.
    pub(super) fn fetch_plain(&self, b: &BlockRef) -> Result<Vec<u8>> {
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
            .decode_block_vec(&b.hash, rec)
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
    pub(super) fn fetch_pack_window(&self, b: &BlockRef) -> Result<Option<Vec<u8>>> {
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
    pub(super) fn fetch(&self, b: &BlockRef, path: &Path) -> Result<(u64, bool)> {
        let packed = if b.plain_len <= self.small_max() {
            self.fetch_pack_window(b)?
        } else {
            None
        };
        let plain = match packed {
            Some(p) => p,
            None => self.fetch_plain(b)?,
        };
        self.store_plain(b, path, &plain)
    }

    /// Put a block's plaintext into the cache (the small-block database or
    /// a file at `path`); returns the size and which of the two.
    fn store_plain(&self, b: &BlockRef, path: &Path, plain: &[u8]) -> Result<(u64, bool)> {
        if plain.len() as u64 <= self.small_max() {
            self.small.put_clean(b.id, plain)?;
            return Ok((plain.len() as u64, true));
        }
        let tmp = self.tmp_path();
        let budget = self.st.lock().fresh.budget();
        let kept = FreshBlock::new(plain, budget).map(Arc::new);
        let written = match &kept {
            Some(f) => {
                // Readers waiting for it take it now, not after the write.
                self.st.lock().fresh.insert(b.id, f.clone());
                self.cv.notify_all();
                fresh::write_file(&tmp, f, &self.direct_io)
            }
            None => fresh::write_plain(&tmp, plain),
        };
        if let Err(e) = written {
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

    /// Count `n` bytes read at `off` of fresh block `f`; one that has been
    /// read to its length is dropped (the cache file has it).
    fn served_fresh(&self, id: i64, f: &Arc<FreshBlock>, off: u64, n: usize) {
        let n = n.min(f.data().len().saturating_sub(off as usize));
        if f.note_served(n) {
            self.st.lock().fresh.remove(id, f);
        }
    }

    /// Let go of fresh blocks no reader finished in time.
    pub fn sweep_fresh(&self) {
        self.st.lock().fresh.sweep(std::time::Instant::now());
    }

    /// Fresh blocks held (for tests and stats).
    pub fn fresh_blocks(&self) -> usize {
        self.st.lock().fresh.len()
    }

    /// Warm the cache with blocks a sequential reader will want next.
    /// Large blocks that follow each other in one object come down in one
    /// request (a file's blocks are stored that way): fewer requests per
    /// GiB (about half, measured), and less work for the object store.
    pub fn prefetch(self: &Arc<Self>, blocks: Vec<BlockRef>) {
        let mut runs: Vec<Vec<BlockRef>> = Vec::new();
        let mut singles = Vec::new();
        {
            let mut st = self.st.lock();
            for b in blocks {
                if st.clean.contains_key(&b.id) || st.fetching.contains(&b.id) {
                    continue;
                }
                if b.plain_len <= self.small_max() || b.object == crate::meta::LOST_OBJECT {
                    // Packed neighbours have their own path; a lost block
                    // is reported to whoever reads it.
                    singles.push(b);
                    continue;
                }
                // Claimed now: a reader of one of them waits for this fetch.
                st.fetching.insert(b.id);
                match runs.last_mut() {
                    Some(run) if follows(run, &b) => run.push(b),
                    _ => runs.push(vec![b]),
                }
            }
        }
        for run in runs {
            let me = self.clone();
            let ids: Vec<i64> = run.iter().map(|b| b.id).collect();
            if !spawn_prefetch(move || me.fetch_run(&run)) {
                // Readers fetch these themselves.
                let mut st = self.st.lock();
                for id in ids {
                    st.fetching.remove(&id);
                }
                self.cv.notify_all();
            }
        }
        for b in singles {
            let me = self.clone();
            spawn_prefetch(move || {
                if let Err(e) = me.open_clean(&b) {
                    tracing::debug!("prefetch of block {} failed: {e}", b.id);
                }
            });
        }
    }

    /// Fetch claimed blocks lying back to back in one object with one
    /// ranged GET, each into the cache as it arrives; claims not fulfilled
    /// (a failure, a damaged record, a full disk) are released so a reader
    /// fetches that block itself and sees the error.
    fn fetch_run(&self, run: &[BlockRef]) {
        let key = object_key(run[0].object);
        let lens: Vec<u64> = run.iter().map(|b| b.length).collect();
        let mut next = 0usize;
        let res = self
            .store
            .get_ranges(&key, run[0].offset, &lens, &mut |rec| {
                let b = &run[next];
                next += 1;
                let stored = self
                    .codec
                    .decode_block_in(&b.hash, rec)
                    .map_err(|e| e.to_string())
                    .and_then(|plain| {
                        let path = self.dir("blocks").join(b.id.to_string());
                        self.store_plain(b, &path, &plain)
                            .map_err(|e| e.to_string())
                    });
                let mut st = self.st.lock();
                st.fetching.remove(&b.id);
                let kept = match stored {
                    Ok((size, small)) => {
                        self.fetched_blocks.fetch_add(1, Ordering::Relaxed);
                        self.install_clean(&mut st, b.id, size, small)
                    }
                    Err(e) => {
                        tracing::debug!("prefetch of block {} failed: {e}", b.id);
                        false
                    }
                };
                self.cv.notify_all();
                kept
            });
        if let Err(e) = res {
            tracing::debug!("prefetch from {key} failed: {e}");
        }
        let mut st = self.st.lock();
        for b in &run[next..] {
            st.fetching.remove(&b.id);
        }
        self.cv.notify_all();
    }
}

/// Prefetch threads in the whole process at most. Each waits on one GET,
/// and a prefetch is only a head start: past this, readers fetch what
/// they need themselves, instead of every sequential reader of hundreds
/// of homes starting a thread per 16 MiB asked ahead.
pub(super) const PREFETCH_THREADS: usize = 32;
static PREFETCHING: AtomicUsize = AtomicUsize::new(0);

/// A place under [`PREFETCH_THREADS`], given back when dropped.
struct PrefetchSlot;

impl PrefetchSlot {
    fn take() -> Option<PrefetchSlot> {
        PREFETCHING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < PREFETCH_THREADS).then_some(n + 1)
            })
            .ok()
            .map(|_| PrefetchSlot)
    }
}

impl Drop for PrefetchSlot {
    fn drop(&mut self) {
        PREFETCHING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Run `job` on a thread of its own if there is a place for one; false
/// if not (the job is dropped).
fn spawn_prefetch(job: impl FnOnce() + Send + 'static) -> bool {
    let Some(slot) = PrefetchSlot::take() else {
        return false;
    };
    // Named: unnamed threads show their creator's name (the FUSE reader's)
    // in `top` and `perf`.
    let spawned = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || {
            let _slot = slot;
            job()
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("no thread for a prefetch: {e}");
            false
        }
    }
}

/// Whether `b` is stored right after the last block of `run`, in the same
/// object, with the run still under one object's worth of bytes.
fn follows(run: &[BlockRef], b: &BlockRef) -> bool {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return false;
    };
    b.stored_right_after(last) && b.offset + b.length - first.offset <= RUN_MAX
}

/// The most one prefetch request asks for: one object as uploads make
/// them (16 MiB of blocks, and each record's header and tag on top: at
/// 16 MiB even, a full object always took two requests), so a sequential
/// reader keeps a few streams going.
const RUN_MAX: u64 = 17 << 20;
