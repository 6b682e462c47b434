//! What a filesystem uses, for quotas: bytes of regular files (their
//! sizes, each inode once however many names it has) and inodes.
//!
//! Kept by triggers in the same transaction as every change to `inodes`,
//! so the figure is exact whoever changes the table (the engine, fsck, a
//! rollback of a failed group) and costs one primary-key read, where a
//! `sum()` over a million inodes on every write would not do.

use super::{Meta, Result};
use rusqlite::Connection;

/// Created with the other tables. The seed runs once, when the table is
/// new (a filesystem made before quotas existed): later opens find the
/// row and skip the scan.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage(id INTEGER PRIMARY KEY CHECK (id = 1),
    bytes INTEGER NOT NULL, files INTEGER NOT NULL);
INSERT OR IGNORE INTO usage(id, bytes, files)
    SELECT 1, coalesce(sum(CASE WHEN (mode & 61440) = 32768 THEN size ELSE 0 END), 0), count(*)
    FROM inodes WHERE NOT EXISTS (SELECT 1 FROM usage WHERE id = 1);
CREATE TRIGGER IF NOT EXISTS usage_insert AFTER INSERT ON inodes BEGIN
    UPDATE usage SET files = files + 1,
        bytes = bytes + CASE WHEN (new.mode & 61440) = 32768 THEN new.size ELSE 0 END
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS usage_delete AFTER DELETE ON inodes BEGIN
    UPDATE usage SET files = files - 1,
        bytes = bytes - CASE WHEN (old.mode & 61440) = 32768 THEN old.size ELSE 0 END
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS usage_update AFTER UPDATE OF size, mode ON inodes
    WHEN old.size != new.size OR old.mode != new.mode BEGIN
    UPDATE usage SET
        bytes = bytes - CASE WHEN (old.mode & 61440) = 32768 THEN old.size ELSE 0 END
                      + CASE WHEN (new.mode & 61440) = 32768 THEN new.size ELSE 0 END
    WHERE id = 1;
END;
";

/// Logical use of one filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Sizes of regular files, including unlinked ones still open.
    pub bytes: u64,
    /// Inodes of every kind (the root directory too).
    pub files: u64,
}

impl Meta {
    /// The running figures (one row read).
    pub fn usage(&self) -> Result<Usage> {
        Ok(kept(&self.lock())?)
    }

    /// The same figures counted from scratch (fsck uses [`correct`]).
    #[cfg(test)]
    pub(crate) fn usage_recount(&self) -> Result<Usage> {
        Ok(counted(&self.lock())?)
    }
}

pub(super) fn kept(c: &Connection) -> rusqlite::Result<Usage> {
    let (bytes, files): (i64, i64) = c
        .prepare_cached("SELECT bytes, files FROM usage WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Usage {
        bytes: bytes.max(0) as u64,
        files: files.max(0) as u64,
    })
}

pub(super) fn counted(c: &Connection) -> rusqlite::Result<Usage> {
    let (bytes, files): (i64, i64) = c.query_row(
        "SELECT coalesce(sum(CASE WHEN (mode & 61440) = 32768 THEN size ELSE 0 END), 0), count(*) FROM inodes",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Usage {
        bytes: bytes.max(0) as u64,
        files: files.max(0) as u64,
    })
}

/// Set the running figures to the counted ones if they differ (fsck):
/// true if they did.
pub(super) fn correct(c: &Connection) -> rusqlite::Result<bool> {
    let n = counted(c)?;
    if kept(c)? == n {
        return Ok(false);
    }
    c.execute(
        "UPDATE usage SET bytes = ?1, files = ?2 WHERE id = 1",
        rusqlite::params![n.bytes as i64, n.files as i64],
    )?;
    Ok(true)
}

impl Meta {
    /// Make this database look like one from before quotas (no table, no
    /// triggers), to test the seeding on open.
    #[cfg(test)]
    pub(crate) fn drop_usage_tracking(&self) -> Result<()> {
        self.lock().execute_batch(
            "DROP TRIGGER usage_insert; DROP TRIGGER usage_update; DROP TRIGGER usage_delete; DROP TABLE usage;",
        )?;
        Ok(())
    }
}
