//! Block-map operations for holes and shared blocks: punching a range of
//! whole blocks out of a file, finding which blocks a file has, and
//! pointing one file's blocks at another's (server-side copy). Blocks are
//! immutable and refcounted, so a shared block is copy-on-write for free: a
//! later write to either file makes a new block for that file alone.

use super::{decref_block, Meta, Result};
use rusqlite::{params, OptionalExtension};

impl Meta {
    /// Drop the mapping of blocks `first..end` of a file (they read as
    /// zeros afterwards: holes).
    pub fn unmap_range(&self, ino: u64, first: u64, end: u64, gen: u64) -> Result<()> {
        if first >= end {
            return Ok(());
        }
        self.write(|tx| {
            let blocks: Vec<i64> = {
                let mut st = tx.prepare_cached(
                    "SELECT block FROM file_blocks WHERE ino=?1 AND idx>=?2 AND idx<?3",
                )?;
                let rows =
                    st.query_map(params![ino as i64, first as i64, end as i64], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.prepare_cached("DELETE FROM file_blocks WHERE ino=?1 AND idx>=?2 AND idx<?3")?
                .execute(params![ino as i64, first as i64, end as i64])?;
            for b in blocks {
                decref_block(tx, b, gen)?;
            }
            Ok(())
        })
    }

    /// Indices of the stored blocks of a file from `from` on, in order, at
    /// most `limit` of them.
    pub fn mapped_from(&self, ino: u64, from: u64, limit: u64) -> Result<Vec<u64>> {
        let c = self.lock();
        let mut st = c.prepare_cached(
            "SELECT idx FROM file_blocks WHERE ino=?1 AND idx>=?2 ORDER BY idx LIMIT ?3",
        )?;
        let rows = st.query_map(
            params![ino as i64, from as i64, limit.min(i64::MAX as u64) as i64],
            |r| r.get::<_, i64>(0),
        )?;
        Ok(rows
            .map(|r| r.map(|i| i as u64))
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Make blocks `dst_first..dst_first+n` of `dst` the same stored blocks
    /// as `src_first..` of `src` (each shared block gains a reference; what
    /// `dst` had there loses one). A hole in `src` becomes a hole in `dst`.
    /// `dst`'s size grows to at least `grow_to` in the same operation: a
    /// block mapped past the end without its size (a crash in between)
    /// would hold bytes that a later growth exposes. Returns how many
    /// blocks are now shared.
    #[allow(clippy::too_many_arguments)]
    pub fn share_blocks(
        &self,
        src: u64,
        src_first: u64,
        dst: u64,
        dst_first: u64,
        n: u64,
        grow_to: u64,
        gen: u64,
    ) -> Result<u64> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE inodes SET size=max(size, ?2) WHERE ino=?1")?
                .execute(params![dst as i64, grow_to as i64])?;
            let mut shared = 0;
            for i in 0..n {
                let from: Option<i64> = tx
                    .prepare_cached("SELECT block FROM file_blocks WHERE ino=?1 AND idx=?2")?
                    .query_row(params![src as i64, (src_first + i) as i64], |r| r.get(0))
                    .optional()?;
                match from {
                    Some(b) => {
                        Meta::map_block(tx, dst, dst_first + i, b, gen)?;
                        shared += 1;
                    }
                    None => {
                        let at = params![dst as i64, (dst_first + i) as i64];
                        let old: Option<i64> = tx
                            .prepare_cached(
                                "SELECT block FROM file_blocks WHERE ino=?1 AND idx=?2",
                            )?
                            .query_row(at, |r| r.get(0))
                            .optional()?;
                        if let Some(old) = old {
                            tx.prepare_cached("DELETE FROM file_blocks WHERE ino=?1 AND idx=?2")?
                                .execute(at)?;
                            decref_block(tx, old, gen)?;
                        }
                    }
                }
            }
            Ok(shared)
        })
    }
}
