//! Holes and shared blocks at the cache level: a hole is a block with
//! neither a block-map row nor a dirty copy, so punching drops both, and
//! sharing a source's blocks first stores the source's dirty blocks (only
//! stored blocks can be shared).

use super::{Cache, Result};

impl Cache {
    /// Forget dirty copies of blocks `first..end` of a file (caller holds
    /// the inode lock exclusively). An upload of one already under way
    /// finds its entry gone and maps nothing.
    /// Make blocks `first..end` of a file holes (caller holds the inode
    /// lock exclusively): stored blocks lose this file's reference, dirty
    /// copies are discarded.
    pub fn punch_blocks(&self, ino: u64, first: u64, end: u64) -> Result<()> {
        self.drop_dirty_range(ino, first, end);
        self.meta
            .unmap_range(ino, first, end, self.shipper.next_gen())?;
        Ok(())
    }

    /// Indices of a file's dirty blocks from `from` on, in order.
    pub fn dirty_from(&self, ino: u64, from: u64) -> Vec<u64> {
        let st = self.st.lock();
        st.dirty
            .range((ino, from)..=(ino, u64::MAX))
            .map(|(k, _)| k.1)
            .collect()
    }

    /// Point blocks `dst_first..dst_first+n` of `dst` at the stored blocks
    /// `src_first..` of `src` and grow `dst` to at least `grow_to` (caller
    /// holds both inode locks, `dst`'s exclusively). The source's dirty
    /// blocks are stored first; the destination's dirty copies in the
    /// range are discarded.
    #[allow(clippy::too_many_arguments)]
    pub fn share_blocks(
        &self,
        src: u64,
        src_first: u64,
        dst: u64,
        dst_first: u64,
        n: u64,
        grow_to: u64,
    ) -> Result<u64> {
        if n == 0 {
            return Ok(0);
        }
        if self
            .dirty_from(src, src_first)
            .first()
            .is_some_and(|&i| i < src_first + n)
        {
            self.flush(Some(src))?;
        }
        self.drop_dirty_range(dst, dst_first, dst_first + n);
        Ok(self.meta.share_blocks(
            src,
            src_first,
            dst,
            dst_first,
            n,
            grow_to,
            self.shipper.next_gen(),
        )?)
    }

    /// The id of the stored block that block `idx` of a file reads from,
    /// unless it is a hole or has a dirty copy.
    pub fn clean_block_id(&self, ino: u64, idx: u64) -> Result<Option<i64>> {
        if self.st.lock().dirty.contains_key(&(ino, idx)) {
            return Ok(None);
        }
        Ok(self.meta.block_at(ino, idx)?.map(|b| b.id))
    }

    /// Before a file grows from `size` other than by writing on from its
    /// end: cut off what is stored past the end (caller holds the inode
    /// lock exclusively). A block shared by server-side copy may hold the
    /// source's bytes past this file's end; the gap must read as zeros.
    /// The block's visible prefix becomes a dirty copy; a block wholly
    /// past the end holds nothing.
    pub fn cut_past_eof(&self, ino: u64, size: u64) -> Result<()> {
        let bs = self.cfg.block_size;
        let keep = size.div_ceil(bs);
        self.drop_dirty_range(ino, keep, u64::MAX);
        if !self.meta.mapped_from(ino, keep, 1)?.is_empty() {
            self.meta.unmap_from(ino, keep, self.shipper.next_gen())?;
        }
        let tail = size % bs;
        if tail == 0 || self.st.lock().dirty.contains_key(&(ino, size / bs)) {
            // Dirty copies never hold bytes past the end (writes start
            // from the stored content up to the end; truncate cuts).
            return Ok(());
        }
        match self.meta.block_at(ino, size / bs)? {
            Some(b) if b.plain_len > tail => {
                self.write_block_cut(ino, size / bs, tail, &[], size, Some(tail))
            }
            _ => Ok(()),
        }
    }
}
