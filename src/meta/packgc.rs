//! The metadata side of pack garbage collection (the cache's `gc` moves
//! the bytes): which packs are mostly dead, and repointing their live
//! blocks at the rewritten pack in one transaction.

use super::{Meta, Result};
use rusqlite::params;

/// A pack worth rewriting.
#[derive(Debug, Clone, Copy)]
pub struct GcCandidate {
    pub object: i64,
    pub size: i64,
    pub live_bytes: i64,
}

/// A live block copied from `old_object` at `old_offset` into the new
/// pack at `new_offset`.
#[derive(Debug, Clone, Copy)]
pub struct MovedBlock {
    pub block: i64,
    pub old_object: i64,
    pub old_offset: i64,
    pub new_offset: i64,
    pub length: i64,
}

impl Meta {
    /// Up to `max` packs less than half live, most dead bytes first.
    pub fn gc_candidates(&self, max: usize) -> Result<Vec<GcCandidate>> {
        let c = self.db.lock();
        let mut st = c.prepare(
            // A pack a snapshot reads stays where it is.
            "SELECT id, size, live_bytes FROM objects
             WHERE live_blocks > 0 AND live_bytes * 2 < size
               AND id NOT IN (SELECT object FROM snapshot_objects)
             ORDER BY size - live_bytes DESC LIMIT ?1",
        )?;
        let rows = st.query_map([max as i64], |r| {
            Ok(GcCandidate {
                object: r.get(0)?,
                size: r.get(1)?,
                live_bytes: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Record the rewritten pack `new` (`size` bytes), repoint the `moved`
    /// blocks still where they were, and queue the `olds` for deletion
    /// after generation `gen` is stored. False when no block moved: `new`
    /// is then not recorded and may be deleted from the store.
    pub fn repoint_packs(
        &self,
        new: i64,
        size: u64,
        moved: &[MovedBlock],
        olds: &[i64],
        gen: u64,
    ) -> Result<bool> {
        self.write(|tx| {
            let (mut live, mut n) = (0i64, 0i64);
            tx.execute(
                "INSERT INTO objects(id, size, live_bytes, live_blocks) VALUES(?1, ?2, 0, 0)",
                params![new, size as i64],
            )?;
            for m in moved {
                // A block freed meanwhile stays behind (and dies with its pack).
                let changed = tx.execute(
                    "UPDATE blocks SET object=?2, offset=?3 WHERE id=?1 AND object=?4 AND offset=?5",
                    params![m.block, new, m.new_offset, m.old_object, m.old_offset],
                )?;
                if changed == 1 {
                    live += m.length;
                    n += 1;
                }
            }
            for old in olds {
                tx.execute("DELETE FROM objects WHERE id=?1", [old])?;
                tx.execute(
                    "INSERT OR REPLACE INTO dead_objects(id, after_gen) VALUES(?1, ?2)",
                    params![old, gen as i64],
                )?;
            }
            if n == 0 {
                tx.execute("DELETE FROM objects WHERE id=?1", [new])?;
                return Ok(false);
            }
            tx.execute(
                "UPDATE objects SET live_bytes=?2, live_blocks=?3 WHERE id=?1",
                params![new, live, n],
            )?;
            Ok(true)
        })
    }
}
