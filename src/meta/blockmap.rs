//! The stored side of the block map, as the cache's uploads see it: which
//! objects exist, which blocks live in them, and recording a finished
//! upload. The cache owns the bytes; these tables are the metadata's.

use super::{row_block, BlockRef, Meta, MetaError, Result};
use rusqlite::{params, OptionalExtension};
use std::collections::HashSet;

/// Where an uploaded dirty block's content is stored.
#[derive(Debug, Clone)]
pub enum UploadedBlock {
    /// Already stored (deduplicated) as this block.
    Existing(i64),
    /// A new record inside the upload's object.
    New(NewRecord),
}

/// A record written into a new object.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub hash: [u8; 32],
    pub offset: u64,
    pub length: u64,
    pub plain_len: u64,
}

/// One uploaded block; `map_to` is the `(ino, idx)` to point at it, or
/// `None` when the file moved on meanwhile (the block is then kept only if
/// something else references it).
#[derive(Debug, Clone)]
pub struct Upload {
    pub map_to: Option<(u64, u64)>,
    pub block: UploadedBlock,
}

/// What [`Meta::record_upload`] did.
#[derive(Debug)]
pub struct Recorded {
    /// False when no block of the new object is referenced: the object
    /// was never recorded and may be deleted from the store at once.
    pub object_used: bool,
    /// Per upload: the block id it was mapped to (`None` if not mapped).
    pub ids: Vec<Option<i64>>,
}

impl MetaError {
    /// SQLite reported a full disk (the cache then waits for room).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, MetaError::Db(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::DiskFull)
    }
}

impl Meta {
    /// The highest object id this metadata knows, live or awaiting deletion
    /// (0 if none): new objects are numbered above it.
    pub fn max_object_id(&self) -> Result<i64> {
        Ok(self.db.lock().query_row(
            "SELECT max(coalesce((SELECT max(id) FROM objects),0), coalesce((SELECT max(id) FROM dead_objects),0))",
            [],
            |r| r.get(0),
        )?)
    }

    /// Ids of every block in the map (to keep the cache's clean copies of
    /// blocks that still exist).
    pub fn block_ids(&self) -> Result<HashSet<i64>> {
        let c = self.db.lock();
        let mut s = c.prepare("SELECT id FROM blocks")?;
        let r = s.query_map([], |r| r.get::<_, i64>(0))?;
        Ok(r.collect::<rusqlite::Result<_>>()?)
    }

    /// The stored block with this content, if any (dedup).
    /// An object this host numbered but no metadata refers to: its upload
    /// failed (the PUT may still have landed, its reply lost in an outage)
    /// or it went unused and deleting it failed. Deleted with the dead
    /// objects, so nothing is left behind for fsck to find.
    pub fn abandon_object(&self, object: i64, gen: u64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("INSERT OR IGNORE INTO dead_objects(id, after_gen) VALUES(?1, ?2)")?
                .execute(params![object, gen as i64])?;
            Ok(())
        })
    }

    /// Ids of the objects awaiting deletion.
    #[cfg(test)]
    pub fn dead_object_ids(&self) -> Result<HashSet<i64>> {
        let c = self.db.lock();
        let mut s = c.prepare("SELECT id FROM dead_objects")?;
        let r = s.query_map([], |r| r.get::<_, i64>(0))?;
        Ok(r.collect::<rusqlite::Result<_>>()?)
    }

    pub fn find_block(&self, hash: &[u8; 32]) -> Result<Option<BlockRef>> {
        Meta::block_by_hash(&self.db.lock(), hash)
    }

    /// Record an upload in one transaction: the new `object` (id, size),
    /// if any, its new blocks, and the mapping of each current upload.
    /// Blocks of the object that nothing references are dropped again.
    pub fn record_upload(
        &self,
        object: Option<(i64, u64)>,
        uploads: &[Upload],
        gen: u64,
    ) -> Result<Recorded> {
        let mut ids: Vec<Option<i64>> = Vec::with_capacity(uploads.len());
        let object_used = self.write(|tx| {
            let mut live_bytes = 0i64;
            let mut live_blocks = 0i64;
            let mut inserted: HashSet<[u8; 32]> = HashSet::new();
            if let Some((obj, size)) = object {
                tx.execute(
                    "INSERT INTO objects(id, size, live_bytes, live_blocks) VALUES(?1, ?2, 0, 0)",
                    params![obj, size as i64],
                )?;
            }
            for u in uploads {
                let id = match &u.block {
                    UploadedBlock::Existing(id) => *id,
                    UploadedBlock::New(nb) => {
                        let existing: Option<i64> = tx
                            .prepare_cached("SELECT id FROM blocks WHERE hash=?1")?
                            .query_row([&nb.hash[..]], |r| r.get(0))
                            .optional()?;
                        match existing {
                            Some(id) => id,
                            None => {
                                let (obj, _) = object.ok_or(MetaError::Invalid(
                                    "a new block needs the object it is stored in",
                                ))?;
                                tx.execute(
                                    "INSERT INTO blocks(hash, object, offset, length, plain_len, refcount)
                                     VALUES(?1, ?2, ?3, ?4, ?5, 0)",
                                    params![&nb.hash[..], obj, nb.offset as i64, nb.length as i64, nb.plain_len as i64],
                                )?;
                                if inserted.insert(nb.hash) {
                                    live_bytes += nb.length as i64;
                                    live_blocks += 1;
                                }
                                tx.last_insert_rowid()
                            }
                        }
                    }
                };
                match u.map_to {
                    Some((ino, idx)) => {
                        Meta::map_block(tx, ino, idx, id, gen)?;
                        ids.push(Some(id));
                    }
                    None => ids.push(None),
                }
            }
            // Blocks whose file went away meanwhile: drop unreferenced ones.
            let orphans: Vec<i64> = {
                let mut s =
                    tx.prepare_cached("SELECT id FROM blocks WHERE refcount=0 AND object=?1")?;
                let obj = object.map(|o| o.0).unwrap_or(-1);
                let r = s.query_map([obj], |r| r.get(0))?;
                r.collect::<rusqlite::Result<_>>()?
            };
            for o in &orphans {
                let len: i64 =
                    tx.query_row("SELECT length FROM blocks WHERE id=?1", [o], |r| r.get(0))?;
                tx.execute("DELETE FROM blocks WHERE id=?1", [o])?;
                live_bytes -= len;
                live_blocks -= 1;
            }
            if let Some((obj, _)) = object {
                if live_blocks <= 0 {
                    tx.execute("DELETE FROM objects WHERE id=?1", [obj])?;
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE objects SET live_bytes=?2, live_blocks=?3 WHERE id=?1",
                    params![obj, live_bytes, live_blocks],
                )?;
            }
            Ok(true)
        })?;
        Ok(Recorded { object_used, ids })
    }

    /// The blocks stored in `object`.
    pub fn blocks_of_object(&self, object: i64) -> Result<Vec<BlockRef>> {
        let c = self.db.lock();
        let mut st = c.prepare(
            "SELECT id, hash, object, offset, length, plain_len FROM blocks WHERE object=?1",
        )?;
        let rows = st.query_map([object], row_block)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
