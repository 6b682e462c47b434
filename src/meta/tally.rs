//! Running totals of the block map (blocks, their plain, referenced and
//! stored bytes; objects and their bytes), for `statfs`, `stat` and the
//! console.
//!
//! Kept by triggers in the same transaction as every change to `blocks`
//! and `objects`, as `usage` is for inodes: summing those tables took
//! 0.12-0.16 s at a million files (seconds at ten million) with the
//! mount's one database connection held, and Samba asks for the free space
//! all the time.

use super::{Counts, Meta, Result, Usage};
use rusqlite::Connection;

/// Created with the other tables (see [`install`]).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tally(id INTEGER PRIMARY KEY CHECK (id = 1),
    blocks INTEGER NOT NULL, unique_bytes INTEGER NOT NULL,
    referenced_bytes INTEGER NOT NULL, stored_bytes INTEGER NOT NULL,
    objects INTEGER NOT NULL, object_bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS tally_block_insert AFTER INSERT ON blocks BEGIN
    UPDATE tally SET blocks = blocks + 1, unique_bytes = unique_bytes + new.plain_len,
        referenced_bytes = referenced_bytes + new.plain_len * new.refcount,
        stored_bytes = stored_bytes + new.length
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS tally_block_delete AFTER DELETE ON blocks BEGIN
    UPDATE tally SET blocks = blocks - 1, unique_bytes = unique_bytes - old.plain_len,
        referenced_bytes = referenced_bytes - old.plain_len * old.refcount,
        stored_bytes = stored_bytes - old.length
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS tally_block_update AFTER UPDATE OF plain_len, refcount, length ON blocks
    WHEN old.plain_len != new.plain_len OR old.refcount != new.refcount OR old.length != new.length
BEGIN
    UPDATE tally SET unique_bytes = unique_bytes - old.plain_len + new.plain_len,
        referenced_bytes = referenced_bytes - old.plain_len * old.refcount + new.plain_len * new.refcount,
        stored_bytes = stored_bytes - old.length + new.length
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS tally_object_insert AFTER INSERT ON objects BEGIN
    UPDATE tally SET objects = objects + 1, object_bytes = object_bytes + new.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS tally_object_delete AFTER DELETE ON objects BEGIN
    UPDATE tally SET objects = objects - 1, object_bytes = object_bytes - old.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS tally_object_update AFTER UPDATE OF size ON objects
    WHEN old.size != new.size BEGIN
    UPDATE tally SET object_bytes = object_bytes - old.size + new.size WHERE id = 1;
END;
";

/// The block map's totals, as kept or as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    blocks: i64,
    unique_bytes: i64,
    referenced_bytes: i64,
    stored_bytes: i64,
    objects: i64,
    object_bytes: i64,
}

impl Tally {
    fn kept(c: &Connection) -> rusqlite::Result<Tally> {
        c.prepare_cached(
            "SELECT blocks, unique_bytes, referenced_bytes, stored_bytes, objects, object_bytes
             FROM tally WHERE id = 1",
        )?
        .query_row([], Self::row)
    }

    fn counted(c: &Connection) -> rusqlite::Result<Tally> {
        c.query_row(
            "SELECT b.n, b.plain, b.refd, b.stored, o.n, o.size
             FROM (SELECT count(*) AS n, coalesce(sum(plain_len), 0) AS plain,
                          coalesce(sum(plain_len * refcount), 0) AS refd,
                          coalesce(sum(length), 0) AS stored FROM blocks) AS b,
                  (SELECT count(*) AS n, coalesce(sum(size), 0) AS size FROM objects) AS o",
            [],
            Self::row,
        )
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tally> {
        Ok(Tally {
            blocks: r.get(0)?,
            unique_bytes: r.get(1)?,
            referenced_bytes: r.get(2)?,
            stored_bytes: r.get(3)?,
            objects: r.get(4)?,
            object_bytes: r.get(5)?,
        })
    }

    fn store(&self, c: &Connection) -> rusqlite::Result<()> {
        c.execute(
            "INSERT OR REPLACE INTO tally(id, blocks, unique_bytes, referenced_bytes, stored_bytes,
                 objects, object_bytes) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                self.blocks,
                self.unique_bytes,
                self.referenced_bytes,
                self.stored_bytes,
                self.objects,
                self.object_bytes
            ],
        )?;
        Ok(())
    }

    fn counts(&self, u: Usage) -> Counts {
        let n = |v: i64| v.max(0) as u64;
        Counts {
            inodes: u.files,
            file_bytes: u.bytes,
            logical_bytes: n(self.referenced_bytes),
            unique_bytes: n(self.unique_bytes),
            stored_bytes: n(self.stored_bytes),
            blocks: n(self.blocks),
            objects: n(self.objects),
            object_bytes: n(self.object_bytes),
        }
    }
}

/// The table and its triggers; on a database from before the tally, the
/// totals counted once.
pub(super) fn install(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(SCHEMA)?;
    let kept: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM tally WHERE id = 1)",
        [],
        |r| r.get(0),
    )?;
    if !kept {
        Tally::counted(c)?.store(c)?;
    }
    Ok(())
}

impl Meta {
    /// Files, bytes, blocks and objects: two rows read, however large the
    /// filesystem.
    pub fn counts(&self) -> Result<Counts> {
        let c = self.lock();
        Ok(Tally::kept(&c)?.counts(super::usage::kept(&c)?))
    }

    /// The same figures counted from scratch (fsck uses [`correct`]).
    #[cfg(test)]
    pub(crate) fn counts_recount(&self) -> Result<Counts> {
        let c = self.lock();
        Ok(Tally::counted(&c)?.counts(super::usage::counted(&c)?))
    }
}

/// Set the kept totals (of the block map and of inodes) to what the tables
/// hold, if they differ; true if they did. For fsck, which repairs
/// anything a bug or a hand-edited database may have left.
pub(super) fn correct(tx: &Connection) -> Result<bool> {
    let counted = Tally::counted(tx)?;
    let mut changed = Tally::kept(tx)? != counted;
    if changed {
        counted.store(tx)?;
    }
    changed |= super::usage::correct(tx)?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> (tempfile::TempDir, Meta) {
        let d = tempfile::tempdir().unwrap();
        let m = Meta::open(&d.path().join("meta.db")).unwrap();
        (d, m)
    }

    /// Blocks and objects come and go by every path the tables know:
    /// the kept totals follow the tables exactly.
    #[test]
    fn kept_totals_follow_every_change_to_the_block_map() {
        let (_d, m) = meta();
        let c = m.lock();
        c.execute_batch(
            "INSERT INTO objects(id, size, live_bytes, live_blocks) VALUES (1, 1000, 0, 0), (2, 50, 0, 0);
             INSERT INTO blocks(hash, object, offset, length, plain_len, refcount)
                 VALUES (x'01', 1, 0, 400, 4096, 1), (x'02', 1, 400, 600, 8192, 3), (x'03', 2, 0, 50, 10, 2);",
        )
        .unwrap();
        assert_eq!(Tally::kept(&c).unwrap(), Tally::counted(&c).unwrap());
        c.execute_batch(
            "UPDATE blocks SET refcount = refcount + 1 WHERE hash = x'01';
             UPDATE blocks SET length = 590, plain_len = 8000 WHERE hash = x'02';
             UPDATE objects SET size = 990 WHERE id = 1;
             UPDATE objects SET live_bytes = 5 WHERE id = 2;
             DELETE FROM blocks WHERE object = 2;
             DELETE FROM objects WHERE id = 2;",
        )
        .unwrap();
        let kept = Tally::kept(&c).unwrap();
        assert_eq!(kept, Tally::counted(&c).unwrap());
        assert_eq!(
            (
                kept.blocks,
                kept.referenced_bytes,
                kept.objects,
                kept.object_bytes
            ),
            (2, 2 * 4096 + 3 * 8000, 1, 990)
        );
        // A whole-table delete is no shortcut past the triggers.
        c.execute_batch("DELETE FROM blocks; DELETE FROM objects;")
            .unwrap();
        assert_eq!(Tally::kept(&c).unwrap(), Tally::counted(&c).unwrap());
    }

    /// A database from before the tally gets one counted on open.
    #[test]
    fn an_older_database_is_tallied_once_on_open() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("meta.db");
        {
            let m = Meta::open(&path).unwrap();
            m.lock()
                .execute_batch(
                    "INSERT INTO objects(id, size, live_bytes, live_blocks) VALUES (7, 300, 0, 0);
                     INSERT INTO blocks(hash, object, offset, length, plain_len, refcount)
                         VALUES (x'07', 7, 0, 300, 4096, 2);
                     DROP TRIGGER tally_block_insert; DROP TRIGGER tally_block_delete;
                     DROP TRIGGER tally_block_update; DROP TRIGGER tally_object_insert;
                     DROP TRIGGER tally_object_delete; DROP TRIGGER tally_object_update;
                     DROP TABLE tally;",
                )
                .unwrap();
        }
        let m = Meta::open(&path).unwrap();
        let c = m.counts().unwrap();
        assert_eq!((c.blocks, c.logical_bytes, c.stored_bytes), (1, 8192, 300));
        assert_eq!((c.objects, c.object_bytes), (1, 300));
    }

    /// Kept totals that went wrong are put right by `correct`, and only
    /// then is there anything to report.
    #[test]
    fn wrong_totals_are_corrected() {
        let (_d, m) = meta();
        let c = m.lock();
        assert!(!correct(&c).unwrap(), "nothing to correct");
        c.execute_batch(
            "UPDATE tally SET blocks = 99, object_bytes = -5; UPDATE usage SET files = 12345;",
        )
        .unwrap();
        assert!(correct(&c).unwrap());
        assert_eq!(Tally::kept(&c).unwrap(), Tally::counted(&c).unwrap());
        drop(c);
        assert_eq!(
            m.counts().unwrap().inodes,
            m.counts_recount().unwrap().inodes
        );
        assert!(!correct(&m.lock()).unwrap());
    }
}
