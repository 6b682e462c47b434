//! Pack garbage collection: a pack whose live fraction fell below a half is
//! rewritten. Its live records are copied as they are (a record is bound to
//! its block's hash, not to its position) into a new pack, the blocks are
//! repointed in one transaction, and the old pack is queued for deletion
//! once metadata that no longer needs it is stored.

use super::{Cache, CacheError, Result};
use crate::data::OBJECT_LEAD;
use crate::meta::object_key;
use crate::meta::packgc::MovedBlock;
use std::sync::atomic::Ordering;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcStats {
    pub packs_rewritten: u64,
    pub bytes_reclaimed: u64,
}

impl Cache {
    /// Rewrite up to `max_packs` mostly-dead packs.
    pub fn gc_packs(&self, max_packs: usize) -> Result<GcStats> {
        let candidates = self.meta.gc_candidates(max_packs)?;
        let mut stats = GcStats::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut moved: Vec<MovedBlock> = Vec::new();
        let mut olds: Vec<(i64, i64)> = Vec::new();
        for c in candidates {
            let (obj, size, live) = (c.object, c.size, c.live_bytes);
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
    fn collect_live(&self, obj: i64, buf: &mut Vec<u8>, moved: &mut Vec<MovedBlock>) -> Result<()> {
        let blocks = self.meta.blocks_of_object(obj)?;
        // No object swiftgate writes is near this: packs and runs of blocks
        // are at most 16 MiB or one 64 MiB block, plus record headers.
        let data = self.store.get_max(&object_key(obj), 256 << 20)?;
        let start = buf.len();
        let first_move = moved.len();
        for b in blocks {
            let (id, hash, off, len) = (b.id, b.hash, b.offset as i64, b.length as i64);
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
            if buf.is_empty() {
                buf.extend_from_slice(OBJECT_LEAD);
            }
            moved.push(MovedBlock {
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
        moved: &mut Vec<MovedBlock>,
        olds: &mut Vec<(i64, i64)>,
        stats: &mut GcStats,
    ) -> Result<()> {
        let new = self.next_object.fetch_add(1, Ordering::Relaxed);
        if !buf.is_empty() {
            if let Err(e) = self.store.put(&object_key(new), buf) {
                self.abandon(new);
                return Err(e.into());
            }
        }
        let gen = self.shipper.next_gen();
        let old_ids: Vec<i64> = olds.iter().map(|(old, _)| *old).collect();
        let used = self
            .meta
            .repoint_packs(new, buf.len() as u64, moved, &old_ids, gen)?;
        if !used && !buf.is_empty() && self.store.delete(&object_key(new)).is_err() {
            self.abandon(new);
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
