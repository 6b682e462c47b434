//! Pack garbage collection: a pack whose live fraction fell below a half is
//! rewritten. Its live records are copied as they are (a record is bound to
//! its block's hash, not to its position) into a new pack, the blocks are
//! repointed in one transaction, and the old pack is queued for deletion
//! once metadata that no longer needs it is stored.

use super::{Cache, CacheError, Result};
use crate::meta::{object_key, MetaError};
use rusqlite::params;
use std::sync::atomic::Ordering;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcStats {
    pub packs_rewritten: u64,
    pub bytes_reclaimed: u64,
}

struct Moved {
    block: i64,
    old_object: i64,
    old_offset: i64,
    new_offset: i64,
    length: i64,
}

impl Cache {
    /// Rewrite up to `max_packs` mostly-dead packs.
    pub fn gc_packs(&self, max_packs: usize) -> Result<GcStats> {
        let candidates: Vec<(i64, i64, i64)> = {
            let c = self.meta.lock();
            let mut st = c
                .prepare(
                    // A pack a snapshot reads stays where it is.
                    "SELECT id, size, live_bytes FROM objects
                     WHERE live_blocks > 0 AND live_bytes * 2 < size
                       AND id NOT IN (SELECT object FROM snapshot_objects)
                     ORDER BY size - live_bytes DESC LIMIT ?1",
                )
                .map_err(MetaError::from)?;
            let rows = st
                .query_map([max_packs as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(MetaError::from)?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(MetaError::from)?
        };
        let mut stats = GcStats::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut moved: Vec<Moved> = Vec::new();
        let mut olds: Vec<(i64, i64)> = Vec::new();
        for (obj, size, live) in candidates {
            match self.collect_live(obj, &mut buf, &mut moved) {
                Ok(()) => olds.push((obj, size - live)),
                Err(e) => tracing::error!("pack {} not collected: {e}", object_key(obj)),
            }
            if buf.len() as u64 >= self.cfg.pack_target {
                self.write_gc_pack(&mut buf, &mut moved, &mut olds, &mut stats)?;
            }
        }
        if !olds.is_empty() {
            self.write_gc_pack(&mut buf, &mut moved, &mut olds, &mut stats)?;
        }
        Ok(stats)
    }

    /// Append the verified live records of `obj` to `buf`.
    fn collect_live(&self, obj: i64, buf: &mut Vec<u8>, moved: &mut Vec<Moved>) -> Result<()> {
        let blocks: Vec<(i64, [u8; 32], i64, i64)> = {
            let c = self.meta.lock();
            let mut st = c
                .prepare("SELECT id, hash, offset, length FROM blocks WHERE object=?1")
                .map_err(MetaError::from)?;
            let rows = st
                .query_map([obj], |r| {
                    let h: Vec<u8> = r.get(1)?;
                    let mut hash = [0u8; 32];
                    hash.copy_from_slice(&h[..32.min(h.len())]);
                    Ok((r.get(0)?, hash, r.get(2)?, r.get(3)?))
                })
                .map_err(MetaError::from)?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(MetaError::from)?
        };
        // No object swiftgate writes is near this: packs and runs of blocks
        // are at most 16 MiB or one 64 MiB block, plus record headers.
        let data = self.store.get_max(&object_key(obj), 256 << 20)?;
        let start = buf.len();
        let first_move = moved.len();
        for (id, hash, off, len) in blocks {
            let rec = data
                .get(off as usize..(off + len) as usize)
                .ok_or_else(|| CacheError::Corrupt {
                    block: id,
                    object: object_key(obj),
                    reason: "record lies outside the object".into(),
                })?;
            // Never spread a damaged record: fsck must see it where it is.
            if let Err(e) = self.codec.decode_block(&hash, rec) {
                buf.truncate(start);
                moved.truncate(first_move);
                return Err(CacheError::Corrupt {
                    block: id,
                    object: object_key(obj),
                    reason: e.to_string(),
                });
            }
            moved.push(Moved {
                block: id,
                old_object: obj,
                old_offset: off,
                new_offset: buf.len() as i64,
                length: len,
            });
            buf.extend_from_slice(rec);
        }
        Ok(())
    }

    fn write_gc_pack(
        &self,
        buf: &mut Vec<u8>,
        moved: &mut Vec<Moved>,
        olds: &mut Vec<(i64, i64)>,
        stats: &mut GcStats,
    ) -> Result<()> {
        let new = self.next_object.fetch_add(1, Ordering::Relaxed);
        if !buf.is_empty() {
            self.store.put(&object_key(new), buf)?;
        }
        let gen = self.shipper.next_gen();
        let used = self.meta.with_tx(|tx| {
            let (mut live, mut n) = (0i64, 0i64);
            tx.execute(
                "INSERT INTO objects(id, size, live_bytes, live_blocks) VALUES(?1, ?2, 0, 0)",
                params![new, buf.len() as i64],
            )?;
            for m in moved.iter() {
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
            for (old, _) in olds.iter() {
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
        })?;
        if !used && !buf.is_empty() {
            let _ = self.store.delete(&object_key(new));
        }
        stats.packs_rewritten += olds.len() as u64;
        stats.bytes_reclaimed += olds.iter().map(|(_, dead)| *dead as u64).sum::<u64>();
        tracing::info!(
            packs = olds.len(),
            into = %object_key(new),
            "rewrote mostly-dead packs"
        );
        buf.clear();
        moved.clear();
        olds.clear();
        Ok(())
    }
}
