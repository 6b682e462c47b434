//! Sparse files and server-side copy: fallocate (punch hole, zero range),
//! SEEK_DATA/SEEK_HOLE, and copy_file_range by sharing stored blocks.
//!
//! A hole is a block with neither a block-map row nor a dirty copy; it
//! reads as zeros. Holes are block-granular (POSIX allows that): a partial
//! block in a punched range is zeroed through the normal write path and
//! stays data.

use super::{meta, Errno, Fs, Result, MAX_FILE_SIZE};
use std::collections::BTreeSet;

/// Most bytes one copy_file_range moves by reading and writing (ranges
/// whose offsets differ within a block cannot share blocks); callers loop
/// on a short count, and the inode locks are not held for longer.
const COPY_BY_WRITE_MAX: u64 = 8 << 20;

/// Block-map rows read per query while looking for a hole.
const SCAN_PAGE: u64 = 1024;

impl Fs {
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, mode: i32) -> Result<()> {
        self.live(ino)?;
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        // Collapse/insert range would renumber every later block (and
        // need block-aligned ranges); unshare means nothing here.
        if mode & !(KEEP | PUNCH | ZERO) != 0 {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        // As Linux: a punched hole never changes the size.
        if mode & PUNCH != 0 && (mode & KEEP == 0 || mode & ZERO != 0) {
            return Err(Errno(libc::EINVAL));
        }
        let end = off.checked_add(len).ok_or(Errno(libc::EFBIG))?;
        if end > MAX_FILE_SIZE {
            return Err(Errno(libc::EFBIG));
        }
        let bs = self.cache.block_size();
        let clears = mode & (PUNCH | ZERO) != 0;
        // Room for the zeros written into the partial blocks at each end.
        let _room = self.cache.wait_for_room(if clears { 2 * bs } else { 0 })?;
        let lock = self.cache.inode_lock(ino);
        let _g = lock.write();
        let a = self.meta.getattr(ino)?;
        if a.is_dir() {
            return Err(Errno(libc::EISDIR));
        }
        if !a.is_reg() {
            return Err(Errno(libc::ENODEV));
        }
        if mode & KEEP == 0 {
            self.check_growth(end.saturating_sub(a.size))?;
        }
        if clears {
            // Past the end there is nothing to clear.
            let zend = end.min(a.size);
            if off < zend {
                self.clear_range(ino, off, zend, a.size)?;
            }
        }
        // Space in an object store is not reserved ahead; growing the size
        // (sparse) is what callers observe.
        let grow = mode & KEEP == 0 && end > a.size;
        if grow {
            // The new range reads as zeros, not as what a shared block
            // holds past the old end.
            self.cache.cut_past_eof(ino, a.size)?;
        }
        if grow || clears {
            self.meta
                .note_write(ino, if grow { end } else { 0 }, meta::now_ns())?;
        }
        Ok(())
    }

    /// Make `[off, end)` (within the file's `size`) read as zeros: whole
    /// blocks become holes, partial ones are zeroed. Caller holds the
    /// inode lock exclusively.
    fn clear_range(&self, ino: u64, off: u64, end: u64, size: u64) -> Result<()> {
        let bs = self.cache.block_size();
        let first = off.div_ceil(bs);
        // The last block counts as whole when the range reaches the end of
        // the file: nothing is kept past the end.
        let last_end = if end >= size {
            size.div_ceil(bs)
        } else {
            end / bs
        };
        if first >= last_end {
            return self.zero_bytes(ino, off, end, size);
        }
        self.cache.punch_blocks(ino, first, last_end)?;
        self.zero_bytes(ino, off, (first * bs).min(end), size)?;
        self.zero_bytes(ino, (last_end * bs).max(off), end, size)
    }

    /// Write zeros over `[off, end)`, skipping blocks that are holes
    /// already.
    fn zero_bytes(&self, ino: u64, off: u64, end: u64, size: u64) -> Result<()> {
        let bs = self.cache.block_size();
        let mut pos = off;
        while pos < end {
            let idx = pos / bs;
            let n = (bs - pos % bs).min(end - pos);
            if !self.is_hole(ino, idx)? {
                self.write_locked(ino, pos, &vec![0u8; n as usize], size)?;
            }
            pos += n;
        }
        Ok(())
    }

    fn is_hole(&self, ino: u64, idx: u64) -> Result<bool> {
        Ok(self.cache.dirty_from(ino, idx).first() != Some(&idx)
            && self.meta.mapped_from(ino, idx, 1)?.first() != Some(&idx))
    }

    /// lseek with SEEK_DATA or SEEK_HOLE (the kernel answers the others).
    pub fn lseek(&self, ino: u64, off: u64, whence: i32) -> Result<u64> {
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            return Err(Errno(libc::EINVAL));
        }
        if super::snapview::is_snapshot_ino(ino) {
            return self.tree().lseek(ino, off, whence);
        }
        let lock = self.cache.inode_lock(ino);
        let _g = lock.read();
        let a = self.meta.getattr(ino)?;
        if off >= a.size {
            return Err(Errno(libc::ENXIO));
        }
        let bs = self.cache.block_size();
        let from = off / bs;
        let dirty: BTreeSet<u64> = self.cache.dirty_from(ino, from).into_iter().collect();
        if whence == libc::SEEK_DATA {
            let mapped = self.meta.mapped_from(ino, from, 1)?.first().copied();
            let next = match (mapped, dirty.first().copied()) {
                (Some(m), Some(d)) => Some(m.min(d)),
                (m, d) => m.or(d),
            };
            return match next {
                Some(i) if i.saturating_mul(bs) < a.size => Ok(off.max(i * bs)),
                _ => Err(Errno(libc::ENXIO)),
            };
        }
        // The first block from `from` on that is neither stored nor dirty;
        // the end of the file counts as a hole.
        let mut i = from;
        loop {
            let mapped = self.meta.mapped_from(ino, i, SCAN_PAGE)?;
            let full_page = mapped.len() as u64 == SCAN_PAGE;
            let mut m = mapped.into_iter().peekable();
            loop {
                if i.saturating_mul(bs) >= a.size {
                    return Ok(a.size);
                }
                let stored = m.peek() == Some(&i);
                if !stored && !dirty.contains(&i) {
                    return Ok(off.max(i * bs));
                }
                if stored {
                    m.next();
                }
                i += 1;
                if m.peek().is_none() && full_page {
                    break; // read the next page of the block map
                }
            }
        }
    }

    /// copy_file_range within this filesystem: where both offsets sit at
    /// the same place within a block, blocks are shared (the destination
    /// points at the source's stored blocks; nothing is stored anew, and a
    /// later write to either file makes a new block for that file alone);
    /// other bytes are read and written. Returns the bytes copied, which
    /// may be fewer than asked (callers loop).
    ///
    /// Samba copies in chunks of at most 1 MiB, in order, so with larger
    /// blocks no call covers a whole block. A chunk that starts a block
    /// past the destination's end maps the source's whole block at once
    /// (its bytes past the destination's end are not visible), and the
    /// chunks after it in the same block find it shared already: only the
    /// size grows. Whatever later grows the file otherwise cuts those
    /// hidden bytes off first (`Cache::cut_past_eof`).
    pub fn copy_file_range(
        &self,
        src: u64,
        src_off: u64,
        dst: u64,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        if len == 0 {
            return Ok(0);
        }
        self.live(dst)?;
        if super::snapview::is_snapshot_ino(src) {
            // Restoring from Previous Versions: the bytes are copied (the
            // snapshot's blocks may not be in the live block map).
            return self.copy_from_snapshot(src, src_off, dst, dst_off, len);
        }
        let bs = self.cache.block_size();
        let aligned = src_off % bs == dst_off % bs;
        let by_write = if aligned { 2 * bs } else { COPY_BY_WRITE_MAX };
        let _room = self.cache.wait_for_room(by_write.min(len))?;
        // Both inodes locked in inode order, so two copies in opposite
        // directions cannot deadlock.
        let (ls, ld) = (self.cache.inode_lock(src), self.cache.inode_lock(dst));
        let (_gs, _gd) = if src == dst {
            (None, ld.write())
        } else if src < dst {
            let gs = ls.read();
            (Some(gs), ld.write())
        } else {
            let gd = ld.write();
            (Some(ls.read()), gd)
        };
        let (sa, da) = (self.meta.getattr(src)?, self.meta.getattr(dst)?);
        if sa.is_dir() || da.is_dir() {
            return Err(Errno(libc::EISDIR));
        }
        if !sa.is_reg() || !da.is_reg() {
            return Err(Errno(libc::EINVAL));
        }
        if src_off >= sa.size {
            return Ok(0);
        }
        let len = len.min(sa.size - src_off);
        let end = dst_off.checked_add(len).ok_or(Errno(libc::EFBIG))?;
        if end > MAX_FILE_SIZE {
            return Err(Errno(libc::EFBIG));
        }
        let copy_end = if aligned {
            end
        } else {
            dst_off + len.min(COPY_BY_WRITE_MAX)
        };
        self.check_growth(copy_end.saturating_sub(da.size))?;
        if dst_off > da.size {
            // The gap between the old end and the copy reads as zeros.
            self.cache.cut_past_eof(dst, da.size)?;
        }
        let copied = if aligned {
            self.copy_aligned(src, src_off, &sa, dst, dst_off, &da, len)?
        } else {
            let n = len.min(COPY_BY_WRITE_MAX);
            self.copy_by_write(src, src_off, sa.size, dst, dst_off, da.size, n)?;
            n
        };
        self.meta
            .note_write(dst, dst_off + copied, meta::now_ns())?;
        Ok(copied)
    }

    /// The copy of `len` bytes whose offsets sit at the same place within
    /// a block, block by block (the inode locks held; no gap before
    /// `dst_off`).
    #[allow(clippy::too_many_arguments)]
    fn copy_aligned(
        &self,
        src: u64,
        src_off: u64,
        sa: &meta::Attr,
        dst: u64,
        dst_off: u64,
        da: &meta::Attr,
        len: u64,
    ) -> Result<u64> {
        let bs = self.cache.block_size();
        // The destination's size as the copy goes: what is visible of it.
        let mut dsize = da.size;
        let mut done = 0;
        while done < len {
            let (s, d) = (src_off + done, dst_off + done);
            let (si, di, o) = (s / bs, d / bs, s % bs);
            let n = (bs - o).min(len - done);
            if o == 0 && n == bs {
                // A run of whole blocks: whatever the destination had there
                // is replaced.
                let whole = (len - done) / bs;
                self.cache
                    .share_blocks(src, si, dst, di, whole, d + whole * bs)?;
                dsize = dsize.max(d + whole * bs);
                done += whole * bs;
                continue;
            }
            let piece_end = d + n;
            if d <= dsize && self.same_block(src, si, dst, di)? {
                // Shared already (an earlier chunk of this block): the
                // bytes are there, and no gap before `d` would show what
                // the block holds past the end, so only the size grows.
            } else if o == 0 && dsize <= piece_end {
                // Nothing of this destination block stays visible beyond
                // the piece: map the source's block; its bytes past the
                // piece stay past the end until copied or cut off.
                self.cache.share_blocks(src, si, dst, di, 1, piece_end)?;
            } else {
                self.copy_by_write(src, s, sa.size, dst, d, dsize, n)?;
            }
            dsize = dsize.max(piece_end);
            done += n;
        }
        Ok(len)
    }

    /// Whether block `di` of `dst` reads from the very stored block that
    /// block `si` of `src` does (neither has a dirty copy).
    fn same_block(&self, src: u64, si: u64, dst: u64, di: u64) -> Result<bool> {
        let Some(d) = self.cache.clean_block_id(dst, di)? else {
            return Ok(false);
        };
        Ok(self.cache.clean_block_id(src, si)? == Some(d))
    }

    /// Copy `n` bytes by reading and writing (the inode locks held).
    #[allow(clippy::too_many_arguments)]
    fn copy_by_write(
        &self,
        src: u64,
        src_off: u64,
        src_size: u64,
        dst: u64,
        dst_off: u64,
        dst_size: u64,
        n: u64,
    ) -> Result<()> {
        let bs = self.cache.block_size();
        let mut done = 0;
        while done < n {
            let piece = (bs - (dst_off + done) % bs).min(n - done);
            let data = self.read_locked(src, src_off + done, piece, src_size)?;
            if data.len() as u64 != piece {
                return Err(Errno(libc::EIO));
            }
            self.write_locked(dst, dst_off + done, &data, dst_size)?;
            done += piece;
        }
        Ok(())
    }
}
