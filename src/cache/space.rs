//! Room on the cache disk: headroom, eviction of clean copies, and the
//! backpressure that makes writers wait (never fail) for uploads.

use super::{Cache, CacheError, Result, State};
use std::fs;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a full disk is re-measured before a writer is told ENOSPC
/// when nothing in the cache could free room (the disk may be filled by
/// someone else, who may be deleting right now).
pub(super) const NOSPACE_RECHECK: Duration = Duration::from_secs(1);

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

pub(super) fn is_disk_full(e: &CacheError) -> bool {
    match e {
        CacheError::Meta(m) => m.is_disk_full(),
        CacheError::NoSpace => true,
        CacheError::Io { cause: source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
        _ => false,
    }
}

impl Cache {
    /// Free space of the cache disk minus a reserve, re-measured twice a
    /// second and estimated in between: the disk may be shared, so the
    /// configured cache size alone cannot keep it from filling up.
    pub(super) fn headroom_locked(&self, st: &mut State) -> i64 {
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
    pub(super) fn remove_clean_locked(&self, st: &mut State, id: i64) -> Option<u64> {
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

    pub(super) fn evict_locked(&self, st: &mut State) {
        loop {
            // Room promised to writers under way counts: they are about
            // to fill it, and many may write at once.
            let over_size = st.clean_bytes + st.dirty_bytes + st.reserved
                > self.cache_size.load(Ordering::Relaxed);
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
            // With nothing dirty or promised, one writer gets through
            // whatever the limit, so a write larger than the limit still
            // makes progress (only one: the others wait for its bytes).
            let fits = st.dirty_bytes + st.reserved < self.dirty_limit.load(Ordering::Relaxed)
                || (st.dirty_bytes == 0 && st.reserved == 0);
            // Truly full: nothing passes on what is left (that room is the
            // databases'); ENOSPC above once waiting stops helping.
            let wait_for_uploads = hard || (low && st.dirty_bytes > 0);
            if fits && !wait_for_uploads {
                st.reserved += len;
                self.evict_locked(&mut st);
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
            self.wake_uploads();
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
        st.fresh.clear();
        st.lru.clear();
        st.clean_bytes = 0;
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
}
