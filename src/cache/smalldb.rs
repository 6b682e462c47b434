//! Small blocks (file tails, small files) are kept in one SQLite database
//! beside the cache instead of a file each: creating and deleting a file per
//! small block costs far more than the block itself (inode allocation),
//! and office trees are mostly small files.

use super::{CacheError, Result};
use crate::meta::group::Group;
use crate::meta::MetaError;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

/// Blocks up to this size live in the database.
pub const SMALL_MAX: u64 = 128 * 1024;

/// Writes are grouped like the metadata's (see `meta::group`), and this
/// group is committed before each metadata commit, so the bytes of a file
/// are on disk before the size that covers them. Near a full disk both
/// commit each write on its own (a failed group would drop many).
pub struct SmallDb {
    conn: Arc<Group>,
}

fn db(e: rusqlite::Error) -> CacheError {
    CacheError::Meta(MetaError::Db(e))
}

impl SmallDb {
    pub fn open(path: &Path) -> Result<SmallDb> {
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.pragma_update(None, "cache_size", -16384).map_err(db)?;
        // Savepoints of grouped writes journal in memory, not in temp files.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(db)?;
        conn.pragma_update(None, "journal_size_limit", 16 << 20)
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(db)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS dirty(ino INTEGER NOT NULL, idx INTEGER NOT NULL,
                 data BLOB NOT NULL, PRIMARY KEY(ino, idx));
             CREATE TABLE IF NOT EXISTS clean(block INTEGER PRIMARY KEY, data BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS syncs(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);",
        )
        .map_err(db)?;
        Ok(SmallDb {
            conn: Arc::new(Group::new(conn)),
        })
    }

    /// The connection's group, for the metadata to commit first.
    pub fn group(&self) -> Arc<Group> {
        self.conn.clone()
    }

    /// Group writes from now on (while mounted).
    pub fn start_batching(&self) -> std::io::Result<()> {
        Group::start_batching(&self.conn)
    }

    pub fn set_batching(&self, on: bool) -> Result<()> {
        self.conn.set_batching(on).map_err(db)
    }

    /// Drop the open group as a crash would.
    pub fn abandon(&self) {
        self.conn.abandon()
    }

    pub fn get_dirty(&self, ino: u64, idx: u64) -> Result<Option<Vec<u8>>> {
        let c = self.conn.lock();
        let r = c
            .prepare_cached("SELECT data FROM dirty WHERE ino=?1 AND idx=?2")
            .map_err(db)?
            .query_row(params![ino as i64, idx as i64], |r| r.get(0))
            .optional()
            .map_err(db)?;
        Ok(r)
    }

    pub fn put_dirty(&self, ino: u64, idx: u64, data: &[u8]) -> Result<()> {
        self.conn
            .write(|c| {
                c.prepare_cached("INSERT OR REPLACE INTO dirty(ino, idx, data) VALUES(?1, ?2, ?3)")?
                    .execute(params![ino as i64, idx as i64, data])
                    .map(|_| ())
            })
            .map_err(db)
    }

    pub fn del_dirty(&self, ino: u64, idx: u64) -> Result<()> {
        self.conn
            .write(|c| {
                c.prepare_cached("DELETE FROM dirty WHERE ino=?1 AND idx=?2")?
                    .execute(params![ino as i64, idx as i64])
                    .map(|_| ())
            })
            .map_err(db)
    }

    /// Keep an uploaded dirty block as the clean copy of block `id`.
    pub fn dirty_to_clean(&self, ino: u64, idx: u64, id: i64) -> Result<()> {
        self.conn
            .write(|c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO clean(block, data) SELECT ?3, data FROM dirty WHERE ino=?1 AND idx=?2",
                )?
                .execute(params![ino as i64, idx as i64, id])?;
                c.prepare_cached("DELETE FROM dirty WHERE ino=?1 AND idx=?2")?
                    .execute(params![ino as i64, idx as i64])
                    .map(|_| ())
            })
            .map_err(db)
    }

    pub fn list_dirty(&self) -> Result<Vec<(u64, u64, u64)>> {
        let c = self.conn.lock();
        let mut st = c
            .prepare("SELECT ino, idx, length(data) FROM dirty")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    pub fn get_clean(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let c = self.conn.lock();
        let r = c
            .prepare_cached("SELECT data FROM clean WHERE block=?1")
            .map_err(db)?
            .query_row([id], |r| r.get(0))
            .optional()
            .map_err(db)?;
        Ok(r)
    }

    pub fn put_clean(&self, id: i64, data: &[u8]) -> Result<()> {
        self.conn
            .write(|c| {
                c.prepare_cached("INSERT OR REPLACE INTO clean(block, data) VALUES(?1, ?2)")?
                    .execute(params![id, data])
                    .map(|_| ())
            })
            .map_err(db)
    }

    /// Many clean blocks in one transaction (a pack window).
    pub fn put_clean_many(&self, items: &[(i64, Vec<u8>)]) -> Result<()> {
        self.conn
            .write(|c| {
                let mut st =
                    c.prepare_cached("INSERT OR REPLACE INTO clean(block, data) VALUES(?1, ?2)")?;
                for (id, d) in items {
                    st.execute(params![id, d])?;
                }
                Ok(())
            })
            .map_err(db)
    }

    pub fn del_clean(&self, id: i64) -> Result<()> {
        self.conn
            .write(|c| {
                c.prepare_cached("DELETE FROM clean WHERE block=?1")?
                    .execute([id])
                    .map(|_| ())
            })
            .map_err(db)
    }

    pub fn clear_clean(&self) -> Result<()> {
        self.conn
            .write(|c| c.execute("DELETE FROM clean", []).map(|_| ()))
            .map_err(db)
    }

    pub fn list_clean(&self) -> Result<Vec<(i64, u64)>> {
        let c = self.conn.lock();
        let mut st = c
            .prepare("SELECT block, length(data) FROM clean")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    /// Bytes of free pages inside the database file: space it reuses
    /// before growing, so as good as free disk space for small blocks.
    pub fn free_bytes(&self) -> u64 {
        let c = self.conn.lock();
        let pages: i64 = c
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap_or(0);
        let size: i64 = c
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap_or(4096);
        (pages * size).max(0) as u64
    }

    /// Make every committed change durable (see `Meta::sync`).
    pub fn sync(&self) -> Result<()> {
        self.conn
            .sync("INSERT INTO syncs(id, n) VALUES(1, 1) ON CONFLICT(id) DO UPDATE SET n=n+1")
            .map_err(db)
    }
}
