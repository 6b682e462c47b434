//! Writes into dirty blocks, truncation, and the local fsync of dirty
//! copies.

use super::read::copy_at;
use super::{create_truncated, dirty_name, io_err, Cache, CacheError, Dirty, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Instant;
use std::{fs, io};

/// Add `[a, b)` to sorted, disjoint ranges, merging neighbours.
pub(super) fn add_range(r: &mut Vec<(u64, u64)>, a: u64, b: u64) {
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

impl Cache {
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
    pub(super) fn write_block_cut(
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
    pub(super) fn old_content(
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

    pub(super) fn forget_dirty(&self, k: (u64, u64), small: bool) {
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
    pub(super) fn drop_dirty_range(&self, ino: u64, first: u64, end: u64) {
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
