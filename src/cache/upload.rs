//! Upload workers: picking dirty blocks, packing small ones, storing
//! objects, and recording them in the block map.

use super::pool::Take;
use super::space::is_disk_full;
use super::{dirty_name, io_err, Cache, CacheError, Dirty, Job, Pack, PendingRec, Result, State};
use crate::data::{sha256, Hash, OBJECT_LEAD};
use crate::meta::blockmap::{NewRecord, Recorded, Upload, UploadedBlock};
use crate::meta::object_key;
use crate::store::ObjectStore;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::thread::LocalKey;
use std::time::{Duration, Instant};
use std::{fs, io};

impl Cache {
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
        self.wake_uploads();
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

    // -------------------------------------------------------------- uploads

    /// The next upload for a pool thread, if one is due.
    pub(super) fn take_job(&self) -> Take {
        let mut st = self.st.lock();
        if st.shutdown || st.uploads_in_flight >= self.cfg.upload_workers.max(1) {
            return Take::Idle;
        }
        if st.retry_at.is_some_and(|t| Instant::now() < t) {
            return Take::Later;
        }
        match self.pick(&mut st) {
            Some(j) => Take::Job(j),
            None if !st.queue.is_empty() || !st.ready.is_empty() || !st.pack.recs.is_empty() => {
                Take::Later
            }
            None => Take::Idle,
        }
    }

    /// Run one upload taken with [`Cache::take_job`]. A failure pauses
    /// this cache's uploads (100 ms doubling to 10 s), not the pool.
    pub(super) fn run_job(&self, job: Job) {
        let is_block = matches!(job, Job::Blocks(..));
        let res = match job {
            Job::Blocks(blocks) => self.upload_blocks(&blocks),
            Job::Pack(pack) => self.upload_pack(pack),
        };
        let mut st = self.st.lock();
        st.uploads_in_flight -= 1;
        if is_block {
            st.block_jobs -= 1;
        }
        match res {
            Ok(()) => {
                st.backoff = None;
                st.retry_at = None;
                st.last_error = None;
            }
            Err(e) => {
                if is_disk_full(&e) {
                    // The metadata database needs room to commit:
                    // clean blocks can always be fetched again.
                    drop(st);
                    self.drop_clean();
                    st = self.st.lock();
                }
                let backoff = st.backoff.map_or(Duration::from_millis(100), |b| {
                    (b * 2).min(Duration::from_secs(10))
                });
                if let Some(n) = self.upload_fail_log.hit() {
                    tracing::warn!(times = n, "upload failed, will retry in {backoff:?}: {e}");
                }
                st.backoff = Some(backoff);
                st.retry_at = Some(Instant::now() + backoff);
                st.last_error = Some(e.to_string());
            }
        }
        self.cv.notify_all();
        drop(st);
        self.wake_uploads();
    }

    pub(super) fn pick(&self, st: &mut State) -> Option<Job> {
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

    pub(super) fn unmark(&self, key: (u64, u64), inc: u64) {
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
    pub(super) fn requeue(&self, st: &mut State, key: (u64, u64)) {
        if let Some(d) = st.dirty.get(&key) {
            if !d.uploading && d.version % 2 == 0 {
                st.queue.insert((d.modified, key.0, key.1));
                if self.complete(d) {
                    st.ready.push_back(key);
                }
                self.wake_uploads();
            }
        }
    }

    /// Pickable and whole: every byte of the block written (writeback
    /// pieces arrive in any order, so its length alone says nothing).
    pub(super) fn full_pickable(&self, st: &State, key: &(u64, u64)) -> bool {
        Self::pickable(st, key) && st.dirty.get(key).is_some_and(|d| self.complete(d))
    }

    pub(super) fn complete(&self, d: &Dirty) -> bool {
        d.cover
            .first()
            .is_some_and(|r| r.0 == 0 && r.1 >= self.cfg.block_size)
    }

    /// Whether full block `k` should wait (up to the upload delay) for the
    /// blocks after it, which its writer is likely still filling, to go up
    /// with it in one object: unless the run of full blocks ending at `k`
    /// already fills one, or the next block is on its way up already.
    pub(super) fn wait_for_next(&self, st: &State, k: (u64, u64)) -> bool {
        let room = self.object_room();
        if room <= 1 || st.dirty.get(&(k.0, k.1 + 1)).is_some_and(|d| d.uploading) {
            return false;
        }
        1 + self.full_run_before(st, k, room - 1) < room
    }

    /// Blocks per object.
    pub(super) fn object_room(&self) -> usize {
        (self.cfg.object_target / self.cfg.block_size).max(1) as usize
    }

    /// How many blocks right before `k` in its file are full and pickable
    /// (at most `max`).
    pub(super) fn full_run_before(&self, st: &State, k: (u64, u64), max: usize) -> usize {
        (1..=k.1)
            .take(max)
            .take_while(|&n| self.full_pickable(st, &(k.0, k.1 - n)))
            .count()
    }

    pub(super) fn pickable(st: &State, key: &(u64, u64)) -> bool {
        st.dirty
            .get(key)
            .is_some_and(|d| !d.uploading && d.version % 2 == 0)
    }

    /// Upload dirty blocks: each one already stored (dedup) is mapped to
    /// that block, small encodings join the pack, the rest go up together
    /// as one object. On failure every block not handed to the pack is
    /// given back to the queue.
    pub(super) fn upload_blocks(&self, blocks: &[((u64, u64), u64, u64)]) -> Result<()> {
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

    pub(super) fn upload_blocks_inner(
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
        let mut object = lend(&OBJECT_BUF, size + OBJECT_LEAD.len());
        object.extend_from_slice(OBJECT_LEAD);
        let mut data = lend(&BLOCK_BUF, 0);
        let mut spans: HashMap<Hash, (u64, u64)> = HashMap::new();
        for &(key, inc, ver) in blocks {
            if !self.current_dirty(key, inc, ver, &mut data)? {
                self.unmark(key, inc); // gone, torn or superseded: try later
                continue;
            }
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
                        // Copied into the pack, and taken back off here.
                        self.add_to_pack(key, inc, ver, hash, &object[offset..], plain_len);
                        object.truncate(offset);
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
        if object.len() == OBJECT_LEAD.len() {
            return if items.is_empty() {
                Ok(())
            } else {
                self.commit(&items, None)
            };
        }
        let obj = self.next_object.fetch_add(1, Ordering::Relaxed);
        let len = object.len() as u64;
        if let Err(e) = put_lent(&*self.store, &object_key(obj), &mut object) {
            self.abandon(obj);
            return Err(e.into());
        }
        self.uploaded_objects.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
        self.commit(&items, Some((obj, len)))
    }

    /// A dirty block's content into `buf`, if the entry is still this
    /// incarnation and version (not written meanwhile): true if it is.
    pub(super) fn current_dirty(
        &self,
        key: (u64, u64),
        inc: u64,
        ver: u64,
        buf: &mut Vec<u8>,
    ) -> Result<bool> {
        let path = self.dir("dirty").join(dirty_name(key.0, key.1));
        let small = self.st.lock().dirty.get(&key).map(|d| d.small);
        buf.clear();
        let data = match small {
            Some(true) => self.small.get_dirty(key.0, key.1)?.map(|d| {
                buf.extend_from_slice(&d);
            }),
            Some(false) => match fs::File::open(&path).and_then(|mut f| f.read_to_end(buf)) {
                Ok(_) => Some(()),
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
        Ok(current && data.is_some())
    }

    /// Hand an encoded block to the pack being filled; it stays
    /// `uploading` until the pack is stored.
    pub(super) fn add_to_pack(
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
            if st.pack.buf.is_empty() {
                st.pack.buf.extend_from_slice(OBJECT_LEAD);
            }
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
        // Due once writing pauses: a pool thread must be looking.
        self.wake_uploads();
    }

    /// Hand an object id that may exist in the store, unreferenced, to
    /// the metadata's dead objects (deleted once shipped). Failing that,
    /// fsck is what finds it.
    pub(super) fn abandon(&self, obj: i64) {
        if let Err(e) = self.meta.abandon_object(obj, self.shipper.next_gen()) {
            tracing::warn!(object = %object_key(obj), error = %e, "could not note an unreferenced object for deletion; fsck will remove it");
        }
    }

    pub(super) fn upload_pack(&self, mut pack: Pack) -> Result<()> {
        let obj = self.next_object.fetch_add(1, Ordering::Relaxed);
        let len = pack.buf.len() as u64;
        if let Err(e) = put_lent(&*self.store, &object_key(obj), &mut pack.buf) {
            self.abandon(obj);
            // Give the blocks back to the queue; they will be re-encoded.
            for r in &pack.recs {
                self.unmark(r.key, r.incarnation);
            }
            return Err(e.into());
        }
        self.uploaded_objects.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
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
        let res = self.commit(&items, Some((obj, len)));
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
    pub(super) fn commit(
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
            if self.store.delete(&object_key(obj)).is_err() {
                self.abandon(obj);
            }
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

thread_local! {
    /// An upload thread's object and block buffers, kept while it has
    /// work: a fresh multi-MiB buffer per object and per block is faulted
    /// in and zeroed by the kernel every time (a sixth of an upload's
    /// CPU). The pool drops them when its thread goes idle.
    static OBJECT_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BLOCK_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Larger buffers (a rare huge object) are not kept.
const KEEP_MAX: usize = 40 << 20;

/// A thread's spare buffer, lent empty with room for `cap` bytes, and
/// given back when dropped (error paths included).
struct Lent {
    buf: Vec<u8>,
    slot: &'static LocalKey<RefCell<Vec<u8>>>,
}

fn lend(slot: &'static LocalKey<RefCell<Vec<u8>>>, cap: usize) -> Lent {
    let mut buf = slot.with(|s| std::mem::take(&mut *s.borrow_mut()));
    buf.clear();
    buf.reserve(cap);
    Lent { buf, slot }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= KEEP_MAX {
            self.slot.with(|s| *s.borrow_mut() = buf);
        }
    }
}

impl std::ops::Deref for Lent {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

/// Store `buf` as `key` without copying it for the request (see
/// [`ObjectStore::put_shared`]), and take the buffer back for the next
/// object once the request has let go of it (else a new one is made).
fn put_lent(store: &dyn ObjectStore, key: &str, buf: &mut Vec<u8>) -> crate::store::Result<()> {
    let shared = bytes::Bytes::from(std::mem::take(buf));
    let r = store.put_shared(key, &shared);
    if let Ok(back) = shared.try_into_mut() {
        *buf = back.into();
        buf.clear();
    }
    r
}

/// Give this thread's spare upload buffers back to the allocator (an
/// idle pool thread holds no memory).
pub(super) fn release_buffers() {
    OBJECT_BUF.with(|s| *s.borrow_mut() = Vec::new());
    BLOCK_BUF.with(|s| *s.borrow_mut() = Vec::new());
}

#[cfg(test)]
mod tests {
    use super::put_lent;
    use crate::store::local::LocalStore;
    use crate::store::ObjectStore;

    /// An object goes up from the upload thread's buffer without a copy
    /// for the request, and the buffer comes back for the next object.
    #[test]
    fn a_lent_buffer_is_stored_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("s")).unwrap();
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(b"first object");
        let at = buf.as_ptr();
        put_lent(&store, "data/1", &mut buf).unwrap();
        assert_eq!(store.get_max("data/1", 100).unwrap(), b"first object");
        assert!(buf.is_empty());
        assert_eq!((buf.as_ptr(), buf.capacity() >= 1 << 20), (at, true));
    }
}
