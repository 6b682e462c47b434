//! SQLite metadata: inodes, directory entries, block map with refcounts,
//! symlinks, xattrs, and the stored objects blocks live in.
//!
//! Namespace operations are atomic (savepoints), so a crash leaves the
//! namespace either before or after an operation, never in between. While
//! mounted, operations are grouped into transactions ([`group`]); fsync,
//! metadata shipping and uploads that drop their dirty copies commit first.

pub mod blockmap;
pub mod chain;
pub mod dircache;
pub mod fsck;
pub mod group;
pub mod lease;
pub mod packgc;
pub mod reserve;
pub mod ship;
pub mod snapshots;
pub mod sparse;
mod tally;
mod usage;
pub mod wal;
mod walwatch;

pub use usage::Usage;

use group::{Db, Group};
use parking_lot::MutexGuard;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const ROOT_INO: u64 = 1;
pub const CAPS_XATTR: &[u8] = b"security.capability";
const KV_CAPS: &str = "xattr.caps";
const CAPS_UNKNOWN: u8 = 0;
const CAPS_NO: u8 = 1;
const CAPS_YES: u8 = 2;
pub const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("no such attribute")]
    NoAttr,
    #[error("too many links")]
    TooManyLinks,
    #[error("metadata database error: {0}")]
    Db(rusqlite::Error),
    #[error("metadata is inconsistent: {0}")]
    Corrupt(String),
}

cause_from!(rusqlite::Error => MetaError::Db);

pub type Result<T> = std::result::Result<T, MetaError>;

/// File type bits as in `st_mode`.
pub const S_IFMT: u32 = libc::S_IFMT;
pub const S_IFDIR: u32 = libc::S_IFDIR;
pub const S_IFREG: u32 = libc::S_IFREG;
pub const S_IFLNK: u32 = libc::S_IFLNK;

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    /// Full st_mode: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub rdev: u32,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub crtime: i64,
}

impl Attr {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub id: i64,
    pub hash: [u8; 32],
    pub object: i64,
    pub offset: u64,
    pub length: u64,
    pub plain_len: u64,
}

impl BlockRef {
    /// Stored right after `prev` in the same object: one ranged read
    /// fetches both.
    pub fn stored_right_after(&self, prev: &BlockRef) -> bool {
        self.object == prev.object && self.offset == prev.offset + prev.length
    }
}

/// What changed when a name was removed or replaced.
#[derive(Debug, Clone, Copy)]
pub struct Unlinked {
    pub ino: u64,
    pub nlink: u32,
}

/// Attribute changes for `setattr`; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
    pub ctime: Option<i64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inodes(
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0, nlink INTEGER NOT NULL, rdev INTEGER NOT NULL DEFAULT 0,
    atime INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL, crtime INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dentries(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL,
    UNIQUE(parent, name));
CREATE INDEX IF NOT EXISTS dentries_by_ino ON dentries(ino);
-- readdir pages by (parent, id): O(page) however large the directory, and
-- however many other directories there are.
CREATE INDEX IF NOT EXISTS dentries_by_parent_id ON dentries(parent, id);
CREATE TABLE IF NOT EXISTS symlinks(ino INTEGER PRIMARY KEY, target BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS xattrs(ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY(ino, name));
CREATE TABLE IF NOT EXISTS objects(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL, live_bytes INTEGER NOT NULL, live_blocks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE, object INTEGER NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, plain_len INTEGER NOT NULL, refcount INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS blocks_by_object ON blocks(object);
CREATE TABLE IF NOT EXISTS file_blocks(ino INTEGER NOT NULL, idx INTEGER NOT NULL, block INTEGER NOT NULL,
    PRIMARY KEY(ino, idx));
CREATE INDEX IF NOT EXISTS file_blocks_by_block ON file_blocks(block);
-- Objects no longer referenced; deleted from the store only after a
-- metadata generation that no longer needs them has been shipped.
CREATE TABLE IF NOT EXISTS dead_objects(id INTEGER PRIMARY KEY, after_gen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB);
";

pub fn object_key(id: i64) -> String {
    // Spread over 256 prefixes so a local store's directories stay small.
    format!("data/{:02x}/{:016x}", (id as u64) & 0xff, id)
}

/// The id of an object key made by [`object_key`].
pub fn object_id(key: &str) -> Option<i64> {
    let name = key.strip_prefix("data/")?.split('/').nth(1)?;
    i64::from_str_radix(name, 16).ok()
}

/// A block whose data was lost (fsck found its object missing or corrupt):
/// kept mapped so reading its range fails with EIO instead of returning
/// zeros. No object has id 0.
pub const LOST_OBJECT: i64 = 0;

pub struct Meta {
    db: Arc<Group>,
    /// Listings for plain readdir; locked only inside the database lock.
    dcache: parking_lot::Mutex<dircache::DirCache>,
    /// `caps_possible`, known once asked (CAPS_*).
    caps: std::sync::atomic::AtomicU8,
    path: PathBuf,
    /// Bumped by every committed change: the shipper uploads when it moves.
    change_seq: AtomicU64,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").field("path", &self.path).finish()
    }
}

fn row_attr(r: &rusqlite::Row<'_>) -> rusqlite::Result<Attr> {
    Ok(Attr {
        ino: r.get::<_, i64>(0)? as u64,
        mode: r.get(1)?,
        uid: r.get(2)?,
        gid: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        nlink: r.get(5)?,
        rdev: r.get(6)?,
        atime: r.get(7)?,
        mtime: r.get(8)?,
        ctime: r.get(9)?,
        crtime: r.get(10)?,
    })
}

/// (dentry id, inode, mode, name) of a plain listing's row.
fn name_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<dircache::NameEntry> {
    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?))
}

// A literal, not format!(): getattr runs on nearly every FUSE request.
const GET_ATTR_SQL: &str =
    "SELECT ino, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, crtime \
     FROM inodes WHERE ino=?1";

fn get_attr_tx(c: &Connection, ino: u64) -> Result<Attr> {
    c.prepare_cached(GET_ATTR_SQL)?
        .query_row([ino as i64], row_attr)
        .optional()?
        .ok_or(MetaError::NotFound)
}

pub(crate) fn lookup_tx(c: &Connection, parent: u64, name: &[u8]) -> Result<Option<(i64, u64)>> {
    Ok(
        c.prepare_cached("SELECT id, ino FROM dentries WHERE parent=?1 AND name=?2")?
            .query_row(params![parent as i64, name], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .optional()?,
    )
}

fn dir_attr_tx(c: &Connection, ino: u64) -> Result<Attr> {
    let a = get_attr_tx(c, ino)?;
    if !a.is_dir() {
        return Err(MetaError::NotDir);
    }
    Ok(a)
}

fn add_nlink(c: &Connection, ino: u64, delta: i64, ts: Option<i64>) -> Result<()> {
    match ts {
        Some(t) => c
            .prepare_cached("UPDATE inodes SET nlink=nlink+?2, ctime=?3 WHERE ino=?1")?
            .execute(params![ino as i64, delta, t])?,
        None => c
            .prepare_cached("UPDATE inodes SET nlink=nlink+?2 WHERE ino=?1")?
            .execute(params![ino as i64, delta])?,
    };
    Ok(())
}

fn touch_dir(c: &Connection, ino: u64, ts: i64) -> Result<()> {
    c.prepare_cached("UPDATE inodes SET mtime=?2, ctime=?2 WHERE ino=?1")?
        .execute(params![ino as i64, ts])?;
    Ok(())
}

fn is_empty_dir(c: &Connection, ino: u64) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM dentries WHERE parent=?1 LIMIT 1")?
            .query_row([ino as i64], |_| Ok(()))
            .optional()?
            .is_none(),
    )
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(MetaError::Invalid("bad file name"));
    }
    if name.len() > NAME_MAX {
        return Err(MetaError::Invalid("name too long"));
    }
    Ok(())
}

/// Remove the entry `(parent,name)` -> `a` and fix link counts.
fn drop_entry(c: &Connection, dentry_id: i64, parent: u64, a: &Attr, ts: i64) -> Result<Unlinked> {
    c.prepare_cached("DELETE FROM dentries WHERE id=?1")?
        .execute([dentry_id])?;
    let nlink = if a.is_dir() {
        // The directory's own '.' and its entry in the parent both go.
        c.prepare_cached("UPDATE inodes SET nlink=0, ctime=?2 WHERE ino=?1")?
            .execute(params![a.ino as i64, ts])?;
        add_nlink(c, parent, -1, None)?;
        0
    } else {
        add_nlink(c, a.ino, -1, Some(ts))?;
        a.nlink.saturating_sub(1)
    };
    touch_dir(c, parent, ts)?;
    Ok(Unlinked { ino: a.ino, nlink })
}

impl Meta {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Meta> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -32768)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Give the WAL's disk space back after checkpoints.
        conn.pragma_update(None, "journal_size_limit", 16 << 20)?;
        // The WAL is what the shipper sends: it folds the WAL into the
        // database once the frames are stored (see `ship`; the watch
        // replaces SQLite's auto-checkpoint), and closing leaves the WAL
        // as it is for the same reason.
        let watch = walwatch::WalWatch::install(&conn, ship::CHECKPOINT_AT, ship::WAL_HARD_LIMIT)?;
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // Every FUSE operation runs a few cached statements; rusqlite's
        // default of 16 made them evict each other and parse again.
        conn.set_prepared_statement_cache_capacity(256);
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(usage::SCHEMA)?;
        tally::install(&conn)?;
        conn.execute_batch(snapshots::SCHEMA)?;
        let group = Group::new(conn);
        group.lock().wal_watch = Some(watch);
        Ok(Meta {
            db: Arc::new(group),
            dcache: Default::default(),
            caps: CAPS_UNKNOWN.into(),
            path: path.to_path_buf(),
            change_seq: AtomicU64::new(1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the root directory of a new filesystem.
    pub fn init_root(&self, mode: u32, uid: u32, gid: u32) -> Result<()> {
        let c = self.db.lock();
        let t = now_ns();
        c.execute(
            "INSERT OR IGNORE INTO inodes(ino, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, crtime)
             VALUES (?1, ?2, ?3, ?4, 0, 2, 0, ?5, ?5, ?5, ?5)",
            params![ROOT_INO as i64, S_IFDIR | (mode & 0o7777), uid, gid, t],
        )?;
        Ok(())
    }

    pub fn change_seq(&self) -> u64 {
        self.change_seq.load(Ordering::Acquire)
    }

    /// One operation, atomic (see [`group`]).
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let out = self.db.write(f).inspect_err(|_| {
            // A listing changed inside an operation that was undone.
            self.dcache.lock().clear();
        })?;
        self.change_seq.fetch_add(1, Ordering::AcqRel);
        Ok(out)
    }

    /// Commit the open group, if any (a second connection, an upload that
    /// drops its dirty copy, or a clean close needs it on disk).
    pub fn commit(&self) -> Result<()> {
        Ok(self.db.commit()?)
    }

    /// Room kept on the disk for this database's (and the groups committed
    /// first's) commits.
    pub fn set_reserve(&self, r: Arc<reserve::Reserve>) {
        self.db.set_reserve(r)
    }

    pub fn reserve(&self) -> Option<Arc<reserve::Reserve>> {
        self.db.reserve()
    }

    /// Group operations into transactions from now on (while mounted).
    pub fn start_batching(&self) -> std::io::Result<()> {
        Group::start_batching(&self.db)
    }

    /// Commit `g` before each commit of the metadata: the cache's group of
    /// block bytes, so a file's size never lands without its bytes.
    pub fn commit_first(&self, g: Arc<Group>) {
        self.db.commit_first(g)
    }

    /// Group operations (true) or commit each on its own (false); see
    /// [`Group::set_batching`].
    pub fn set_batching(&self, on: bool) -> Result<()> {
        Ok(self.db.set_batching(on)?)
    }

    /// Drop the open group as a crash would, and commit each operation
    /// on its own from now on.
    pub fn abandon_batch(&self) {
        self.db.abandon()
    }

    /// The connection, for meta's own modules (fsck, shipping,
    /// snapshots); other layers go through named functions.
    fn lock(&self) -> MutexGuard<'_, Db> {
        self.db.lock()
    }

    /// Hold the database (tests of what must not wait for it).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> MutexGuard<'_, Db> {
        self.lock()
    }

    /// Whether the database is in use right now (a caller that must not
    /// wait, a shared FUSE reader, hands its request on instead).
    pub fn busy(&self) -> bool {
        self.db.busy()
    }

    /// Bytes of WAL written since it was last folded in.
    pub fn wal_bytes(&self) -> u64 {
        self.db.lock().wal_watch.as_ref().map_or(0, |w| w.bytes())
    }

    /// Call `f` when the WAL passes the shipper's soft limit.
    pub fn on_wal_large(&self, f: Arc<dyn Fn() + Send + Sync>) {
        if let Some(w) = self.db.lock().wal_watch.as_ref() {
            w.on_large(f);
        }
    }

    /// The connection with no group open, held: writers wait meanwhile.
    pub(super) fn lock_committed(&self) -> Result<MutexGuard<'_, Db>> {
        let mut g = self.db.lock();
        g.commit()?;
        Ok(g)
    }

    /// A write transaction, for meta's own modules.
    fn with_tx<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.write(f)
    }

    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .lock()
            .query_row("SELECT value FROM kv WHERE key=?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn kv_delete(&self, key: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM kv WHERE key=?1", [key])?;
            Ok(())
        })
    }

    pub fn kv_set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.write(|tx| kv_put(tx, key, value))
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        get_attr_tx(&self.db.lock(), ino)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let c = self.db.lock();
        dir_attr_tx(&c, parent)?;
        match lookup_tx(&c, parent, name)? {
            Some((_, ino)) => get_attr_tx(&c, ino),
            None => Err(MetaError::NotFound),
        }
    }

    /// Parent of a directory (for '..'); the root is its own parent.
    pub fn parent_of(&self, ino: u64) -> Result<u64> {
        if ino == ROOT_INO {
            return Ok(ROOT_INO);
        }
        let c = self.db.lock();
        let p = c
            .prepare_cached("SELECT parent FROM dentries WHERE ino=?1 LIMIT 1")?
            .query_row([ino as i64], |r| r.get::<_, i64>(0))
            .optional()?;
        Ok(p.map(|p| p as u64).unwrap_or(ROOT_INO))
    }

    /// Create a node of any type (`mode` carries S_IF*), or a symlink when
    /// `target` is given.
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        target: Option<&[u8]>,
    ) -> Result<Attr> {
        check_name(name)?;
        self.write(|tx| {
            let pa = dir_attr_tx(tx, parent)?;
            if pa.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            if lookup_tx(tx, parent, name)?.is_some() {
                return Err(MetaError::Exists);
            }
            let is_dir = mode & S_IFMT == S_IFDIR;
            let t = now_ns();
            let size = target.map(|t| t.len()).unwrap_or(0) as i64;
            tx.prepare_cached(
                "INSERT INTO inodes(mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, crtime)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7, ?7)",
            )?
            .execute(params![
                mode,
                uid,
                gid,
                size,
                if is_dir { 2 } else { 1 },
                rdev,
                t
            ])?;
            let ino = tx.last_insert_rowid() as u64;
            tx.prepare_cached("INSERT INTO dentries(parent, name, ino) VALUES (?1, ?2, ?3)")?
                .execute(params![parent as i64, name, ino as i64])?;
            self.dcache
                .lock()
                .insert(parent, tx.last_insert_rowid(), ino, mode, name);
            if let Some(target) = target {
                tx.prepare_cached("INSERT INTO symlinks(ino, target) VALUES (?1, ?2)")?
                    .execute(params![ino as i64, target])?;
            }
            if is_dir {
                add_nlink(tx, parent, 1, None)?;
            }
            touch_dir(tx, parent, t)?;
            get_attr_tx(tx, ino)
        })
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let c = self.db.lock();
        let t = c
            .prepare_cached("SELECT target FROM symlinks WHERE ino=?1")?
            .query_row([ino as i64], |r| r.get(0))
            .optional()?;
        t.ok_or(MetaError::Invalid("not a symlink"))
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        self.write(|tx| {
            let pa = dir_attr_tx(tx, newparent)?;
            if pa.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            let a = get_attr_tx(tx, ino)?;
            if a.is_dir() {
                return Err(MetaError::Invalid("hard link to a directory"));
            }
            if a.nlink >= 65000 {
                return Err(MetaError::TooManyLinks);
            }
            if lookup_tx(tx, newparent, newname)?.is_some() {
                return Err(MetaError::Exists);
            }
            tx.prepare_cached("INSERT INTO dentries(parent, name, ino) VALUES (?1, ?2, ?3)")?
                .execute(params![newparent as i64, newname, ino as i64])?;
            self.dcache
                .lock()
                .insert(newparent, tx.last_insert_rowid(), ino, a.mode, newname);
            let t = now_ns();
            add_nlink(tx, ino, 1, Some(t))?;
            touch_dir(tx, newparent, t)?;
            get_attr_tx(tx, ino)
        })
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<Unlinked> {
        self.write(|tx| {
            dir_attr_tx(tx, parent)?;
            let (id, ino) = lookup_tx(tx, parent, name)?.ok_or(MetaError::NotFound)?;
            let a = get_attr_tx(tx, ino)?;
            if a.is_dir() {
                return Err(MetaError::IsDir);
            }
            self.dcache.lock().forget(parent);
            drop_entry(tx, id, parent, &a, now_ns())
        })
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<Unlinked> {
        if name == b"." {
            return Err(MetaError::Invalid("rmdir ."));
        }
        if name == b".." {
            return Err(MetaError::NotEmpty);
        }
        self.write(|tx| {
            dir_attr_tx(tx, parent)?;
            let (id, ino) = lookup_tx(tx, parent, name)?.ok_or(MetaError::NotFound)?;
            let a = get_attr_tx(tx, ino)?;
            if !a.is_dir() {
                return Err(MetaError::NotDir);
            }
            if !is_empty_dir(tx, ino)? {
                return Err(MetaError::NotEmpty);
            }
            let mut dc = self.dcache.lock();
            dc.forget(parent);
            dc.forget(ino);
            drop(dc);
            drop_entry(tx, id, parent, &a, now_ns())
        })
    }

    /// Is `ancestor` on the path from `ino` up to the root?
    fn is_ancestor(c: &Connection, ancestor: u64, mut ino: u64) -> Result<bool> {
        let mut steps = 0;
        while ino != ROOT_INO {
            if ino == ancestor {
                return Ok(true);
            }
            ino = c
                .prepare_cached("SELECT parent FROM dentries WHERE ino=?1 LIMIT 1")?
                .query_row([ino as i64], |r| r.get::<_, i64>(0))
                .optional()?
                .ok_or_else(|| MetaError::Corrupt(format!("directory {ino} has no parent")))?
                as u64;
            steps += 1;
            if steps > 1_000_000 {
                return Err(MetaError::Corrupt("directory cycle".into()));
            }
        }
        Ok(ancestor == ROOT_INO)
    }

    /// rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE. Returns the inode
    /// whose name was replaced, if any.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        noreplace: bool,
        exchange: bool,
    ) -> Result<Option<Unlinked>> {
        check_name(newname)?;
        self.write(|tx| {
            {
                // Forgetting is always safe: the next listing reloads.
                let mut dc = self.dcache.lock();
                dc.forget(parent);
                dc.forget(newparent);
            }
            dir_attr_tx(tx, parent)?;
            let np = dir_attr_tx(tx, newparent)?;
            if np.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            let (sid, sino) = lookup_tx(tx, parent, name)?.ok_or(MetaError::NotFound)?;
            let sa = get_attr_tx(tx, sino)?;
            let dst = lookup_tx(tx, newparent, newname)?;
            let t = now_ns();
            if sa.is_dir() && parent != newparent && Self::is_ancestor(tx, sino, newparent)? {
                return Err(MetaError::Invalid("cannot move a directory into itself"));
            }
            if exchange {
                let (did, dino) = dst.ok_or(MetaError::NotFound)?;
                let da = get_attr_tx(tx, dino)?;
                if da.is_dir() && parent != newparent && Self::is_ancestor(tx, dino, parent)? {
                    return Err(MetaError::Invalid("cannot move a directory into itself"));
                }
                tx.execute(
                    "UPDATE dentries SET ino=?2 WHERE id=?1",
                    params![sid, dino as i64],
                )?;
                tx.execute(
                    "UPDATE dentries SET ino=?2 WHERE id=?1",
                    params![did, sino as i64],
                )?;
                if parent != newparent && sa.is_dir() != da.is_dir() {
                    let d = if sa.is_dir() { 1 } else { -1 };
                    add_nlink(tx, newparent, d, None)?;
                    add_nlink(tx, parent, -d, None)?;
                }
                for ino in [sino, dino] {
                    tx.execute(
                        "UPDATE inodes SET ctime=?2 WHERE ino=?1",
                        params![ino as i64, t],
                    )?;
                }
                touch_dir(tx, parent, t)?;
                touch_dir(tx, newparent, t)?;
                return Ok(None);
            }
            let mut replaced = None;
            if let Some((did, dino)) = dst {
                if noreplace {
                    return Err(MetaError::Exists);
                }
                if dino == sino {
                    // Two names of one inode: POSIX says do nothing.
                    return Ok(None);
                }
                let da = get_attr_tx(tx, dino)?;
                match (sa.is_dir(), da.is_dir()) {
                    (true, false) => return Err(MetaError::NotDir),
                    (false, true) => return Err(MetaError::IsDir),
                    (true, true) if !is_empty_dir(tx, dino)? => return Err(MetaError::NotEmpty),
                    _ => {}
                }
                replaced = Some(drop_entry(tx, did, newparent, &da, t)?);
            }
            tx.prepare_cached("UPDATE dentries SET parent=?2, name=?3 WHERE id=?1")?
                .execute(params![sid, newparent as i64, newname])?;
            if sa.is_dir() && parent != newparent {
                add_nlink(tx, parent, -1, None)?;
                add_nlink(tx, newparent, 1, None)?;
            }
            tx.prepare_cached("UPDATE inodes SET ctime=?2 WHERE ino=?1")?
                .execute(params![sino as i64, t])?;
            touch_dir(tx, parent, t)?;
            touch_dir(tx, newparent, t)?;
            Ok(replaced)
        })
    }

    /// A directory's entries after `after` with their attributes, in id
    /// order: `f(id, name, attr)` until it returns true. Ids are stable:
    /// entries created later get larger ones and removing one shifts no
    /// other, so readdir offsets survive concurrent change.
    pub fn readdir_plus(
        &self,
        dir: u64,
        after: i64,
        mut f: impl FnMut(i64, &[u8], &Attr) -> bool,
    ) -> Result<()> {
        self.page_dentries(
            "SELECT i.ino, i.mode, i.uid, i.gid, i.size, i.nlink, i.rdev, i.atime, i.mtime,
                    i.ctime, i.crtime, d.id, d.name
             FROM dentries d JOIN inodes i ON i.ino=d.ino
             WHERE d.parent=?1 AND d.id>?2 ORDER BY d.id LIMIT 64",
            dir,
            after,
            |r| Ok((r.get::<_, i64>(11)?, r.get::<_, Vec<u8>>(12)?, row_attr(r)?)),
            |e| e.0,
            |(id, name, attr)| f(*id, name, attr),
        )
    }

    /// A directory's entries after `after`, in id order: `f(id, ino, mode,
    /// name)` until it returns true. Served from the in-memory listing,
    /// loaded whole the first time; a directory too big to keep is read
    /// from the database page by page.
    pub fn readdir(
        &self,
        dir: u64,
        after: i64,
        mut f: impl FnMut(i64, u64, u32, &[u8]) -> bool,
    ) -> Result<()> {
        {
            let c = self.db.lock();
            if self.dcache.lock().visit(dir, after, &mut f) {
                return Ok(());
            }
            if !self.dcache.lock().too_big(dir) {
                let cap = dircache::MAX_DIR;
                let all = {
                    let mut st = c.prepare_cached(
                        "SELECT d.id, d.ino, i.mode, d.name FROM dentries d JOIN inodes i ON i.ino=d.ino
                         WHERE d.parent=?1 ORDER BY d.id LIMIT ?2",
                    )?;
                    let rows = st.query_map(params![dir as i64, cap as i64 + 1], name_row)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                };
                let mut dc = self.dcache.lock();
                dc.store(dir, all);
                if dc.visit(dir, after, &mut f) {
                    return Ok(());
                }
            }
        }
        self.page_dentries(
            "SELECT d.id, d.ino, i.mode, d.name FROM dentries d JOIN inodes i ON i.ino=d.ino
             WHERE d.parent=?1 AND d.id>?2 ORDER BY d.id LIMIT 256",
            dir,
            after,
            name_row,
            |e| e.0,
            |(id, ino, mode, name)| f(*id, *ino, *mode, name),
        )
    }

    /// Rows of `sql` (parameters: the directory, the id to start after),
    /// a page at a time until `f` returns true or they run out, so a
    /// reply costs about the rows it holds. The lock is taken per page.
    fn page_dentries<T>(
        &self,
        sql: &str,
        dir: u64,
        mut after: i64,
        row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        id: impl Fn(&T) -> i64,
        mut f: impl FnMut(&T) -> bool,
    ) -> Result<()> {
        loop {
            let page = {
                let c = self.db.lock();
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map(params![dir as i64, after], &row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = id(last);
            if page.iter().any(&mut f) {
                return Ok(());
            }
        }
    }

    pub fn setattr(&self, ino: u64, s: &SetAttr) -> Result<Attr> {
        self.write(|tx| {
            let mut a = get_attr_tx(tx, ino)?;
            if let Some(m) = s.mode {
                a.mode = (a.mode & S_IFMT) | (m & 0o7777);
            }
            if let Some(u) = s.uid {
                a.uid = u;
            }
            if let Some(g) = s.gid {
                a.gid = g;
            }
            if let Some(sz) = s.size {
                a.size = sz;
            }
            if let Some(t) = s.atime {
                a.atime = t;
            }
            if let Some(t) = s.mtime {
                a.mtime = t;
            }
            if let Some(t) = s.ctime {
                a.ctime = t;
            }
            tx.prepare_cached(
                "UPDATE inodes SET mode=?2, uid=?3, gid=?4, size=?5, atime=?6, mtime=?7, ctime=?8 WHERE ino=?1",
            )?
            .execute(params![
                ino as i64, a.mode, a.uid, a.gid, a.size as i64, a.atime, a.mtime, a.ctime
            ])?;
            Ok(a)
        })
    }

    /// After a write: grow the size if needed and stamp mtime/ctime.
    pub fn note_write(&self, ino: u64, end: u64, t: i64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE inodes SET size=max(size, ?2), mtime=?3, ctime=?3 WHERE ino=?1",
            )?
            .execute(params![ino as i64, end as i64, t])?;
            Ok(())
        })
    }

    /// Make every change so far durable (fsync of the WAL).
    pub fn sync(&self) -> Result<()> {
        Ok(self.db.sync(
            "INSERT INTO kv(key, value) VALUES('sync', 1) ON CONFLICT(key) DO UPDATE SET value=value+1",
        )?)
    }

    pub fn touch_atime(&self, ino: u64, t: i64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE inodes SET atime=?2 WHERE ino=?1")?
                .execute(params![ino as i64, t])?;
            Ok(())
        })
    }

    // ---- xattrs ----

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let c = self.db.lock();
        get_attr_tx(&c, ino)?;
        let v = c
            .prepare_cached("SELECT value FROM xattrs WHERE ino=?1 AND name=?2")?
            .query_row(params![ino as i64, name], |r| r.get(0))
            .optional()?;
        v.ok_or(MetaError::NoAttr)
    }

    /// Whether any file may carry `security.capability` (the kernel asks
    /// for it before writes and chowns; it is almost never there). Kept as
    /// a flag that setting one raises, found by one scan the first time.
    pub fn caps_possible(&self) -> Result<bool> {
        match self.caps.load(Ordering::Acquire) {
            CAPS_NO => return Ok(false),
            CAPS_YES => return Ok(true),
            _ => {}
        }
        let any = match self.kv_get(KV_CAPS)? {
            Some(v) => v == b"1",
            None => {
                let any: bool = self.db.lock().query_row(
                    "SELECT EXISTS(SELECT 1 FROM xattrs WHERE name=?1)",
                    [CAPS_XATTR],
                    |r| r.get(0),
                )?;
                self.kv_set(KV_CAPS, if any { b"1" } else { b"0" })?;
                any
            }
        };
        // A concurrent setxattr may have raised it meanwhile: keep "yes".
        let _ = self.caps.compare_exchange(
            CAPS_UNKNOWN,
            if any { CAPS_YES } else { CAPS_NO },
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        Ok(self.caps.load(Ordering::Acquire) == CAPS_YES)
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let c = self.db.lock();
        get_attr_tx(&c, ino)?;
        let mut st = c.prepare_cached("SELECT name FROM xattrs WHERE ino=?1 ORDER BY name")?;
        let rows = st.query_map([ino as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// `create`: fail if it exists (XATTR_CREATE); `replace`: fail if not.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> Result<()> {
        self.write(|tx| {
            get_attr_tx(tx, ino)?;
            let exists = tx
                .prepare_cached("SELECT 1 FROM xattrs WHERE ino=?1 AND name=?2")?
                .query_row(params![ino as i64, name], |_| Ok(()))
                .optional()?
                .is_some();
            if create && exists {
                return Err(MetaError::Exists);
            }
            if replace && !exists {
                return Err(MetaError::NoAttr);
            }
            tx.prepare_cached(
                "INSERT OR REPLACE INTO xattrs(ino, name, value) VALUES(?1, ?2, ?3)",
            )?
            .execute(params![ino as i64, name, value])?;
            tx.prepare_cached("UPDATE inodes SET ctime=?2 WHERE ino=?1")?
                .execute(params![ino as i64, now_ns()])?;
            if name == CAPS_XATTR {
                self.caps.store(CAPS_YES, Ordering::Release);
                tx.execute(
                    "INSERT OR REPLACE INTO kv(key, value) VALUES(?1, X'31')",
                    [KV_CAPS],
                )?;
            }
            Ok(())
        })
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        self.write(|tx| {
            get_attr_tx(tx, ino)?;
            let n = tx
                .prepare_cached("DELETE FROM xattrs WHERE ino=?1 AND name=?2")?
                .execute(params![ino as i64, name])?;
            if n == 0 {
                return Err(MetaError::NoAttr);
            }
            tx.prepare_cached("UPDATE inodes SET ctime=?2 WHERE ino=?1")?
                .execute(params![ino as i64, now_ns()])?;
            Ok(())
        })
    }

    // ---- block map ----

    pub fn block_at(&self, ino: u64, idx: u64) -> Result<Option<BlockRef>> {
        let c = self.db.lock();
        let b = c
            .prepare_cached(
                "SELECT b.id, b.hash, b.object, b.offset, b.length, b.plain_len
                 FROM file_blocks f JOIN blocks b ON b.id=f.block WHERE f.ino=?1 AND f.idx=?2",
            )?
            .query_row(params![ino as i64, idx as i64], row_block)
            .optional()?;
        Ok(b)
    }

    /// Blocks stored in `object` at offsets in `[from, to)`, in order: the
    /// neighbours of a packed block, fetched with it in one request.
    pub fn blocks_in_object(&self, object: i64, from: u64, to: u64) -> Result<Vec<BlockRef>> {
        let c = self.db.lock();
        let mut st = c.prepare_cached(
            "SELECT id, hash, object, offset, length, plain_len FROM blocks
             WHERE object=?1 AND offset>=?2 AND offset<?3 ORDER BY offset",
        )?;
        let rows = st.query_map(params![object, from as i64, to as i64], row_block)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn block_by_hash(c: &Connection, hash: &[u8; 32]) -> Result<Option<BlockRef>> {
        Ok(c.prepare_cached(
            "SELECT id, hash, object, offset, length, plain_len FROM blocks WHERE hash=?1",
        )?
        .query_row([&hash[..]], row_block)
        .optional()?)
    }

    /// Point `(ino, idx)` at `block` (which must exist), fixing refcounts.
    pub fn map_block(tx: &Connection, ino: u64, idx: u64, block: i64, gen: u64) -> Result<()> {
        let old: Option<i64> = tx
            .prepare_cached("SELECT block FROM file_blocks WHERE ino=?1 AND idx=?2")?
            .query_row(params![ino as i64, idx as i64], |r| r.get(0))
            .optional()?;
        if old == Some(block) {
            return Ok(());
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO file_blocks(ino, idx, block) VALUES(?1, ?2, ?3)",
        )?
        .execute(params![ino as i64, idx as i64, block])?;
        tx.prepare_cached("UPDATE blocks SET refcount=refcount+1 WHERE id=?1")?
            .execute([block])?;
        if let Some(old) = old {
            decref_block(tx, old, gen)?;
        }
        Ok(())
    }

    /// Drop the mapping of blocks `idx >= from` of a file.
    pub fn unmap_from(&self, ino: u64, from: u64, gen: u64) -> Result<()> {
        self.write(|tx| unmap_from_tx(tx, ino, from, gen))
    }

    /// Delete an inode with no names left (and no open handles).
    pub fn purge_inode(&self, ino: u64, gen: u64) -> Result<()> {
        self.write(|tx| {
            unmap_from_tx(tx, ino, 0, gen)?;
            tx.execute("DELETE FROM xattrs WHERE ino=?1", [ino as i64])?;
            tx.execute("DELETE FROM symlinks WHERE ino=?1", [ino as i64])?;
            tx.execute("DELETE FROM inodes WHERE ino=?1 AND nlink=0", [ino as i64])?;
            Ok(())
        })
    }

    /// Inodes left with no names (open-but-unlinked at a crash).
    pub fn orphans(&self) -> Result<Vec<u64>> {
        let c = self.db.lock();
        let mut st = c.prepare("SELECT ino FROM inodes WHERE nlink=0")?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        Ok(rows
            .map(|r| r.map(|i| i as u64))
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Which of `ids` are still blocks (the rest lost their last
    /// reference and were removed).
    pub fn existing_blocks(&self, ids: &[i64]) -> Result<std::collections::HashSet<i64>> {
        let c = self.db.lock();
        let mut out = std::collections::HashSet::new();
        for chunk in ids.chunks(500) {
            let list = chunk
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let mut st = c.prepare(&format!("SELECT id FROM blocks WHERE id IN ({list})"))?;
            let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
            for r in rows {
                out.insert(r?);
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub inodes: u64,
    /// Sizes of all regular files (what users see, uploaded or not).
    pub file_bytes: u64,
    /// Bytes of file content referenced, counting each reference.
    pub logical_bytes: u64,
    /// Bytes of distinct block content (after dedup, before compression).
    pub unique_bytes: u64,
    /// Encoded bytes of those blocks (after compression and encryption).
    pub stored_bytes: u64,
    pub blocks: u64,
    pub objects: u64,
    pub object_bytes: u64,
}

pub(crate) fn row_block(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlockRef> {
    let h: Vec<u8> = r.get(1)?;
    let mut hash = [0u8; 32];
    if h.len() == 32 {
        hash.copy_from_slice(&h);
    }
    Ok(BlockRef {
        id: r.get(0)?,
        hash,
        object: r.get(2)?,
        offset: r.get::<_, i64>(3)? as u64,
        length: r.get::<_, i64>(4)? as u64,
        plain_len: r.get::<_, i64>(5)? as u64,
    })
}

impl Meta {
    /// A path naming `ino` for reports; see [`path_of`].
    pub fn path_of(&self, ino: u64) -> Result<String> {
        path_of(&self.db.lock(), ino)
    }
}

/// A path naming `ino` for reports: through its first name up to the root
/// (`#ino` where no name leads there).
/// Set a kv row on `c` (in whatever transaction it is in).
fn kv_put(c: &Connection, key: &str, value: &[u8]) -> Result<()> {
    c.execute(
        "INSERT INTO kv(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value=?2",
        params![key, value],
    )?;
    Ok(())
}

pub fn path_of(tx: &Connection, ino: u64) -> Result<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = ino;
    // Bounded: a damaged tree may loop.
    for _ in 0..4096 {
        if cur == ROOT_INO {
            parts.reverse();
            return Ok(format!("/{}", parts.join("/")));
        }
        let up: Option<(i64, Vec<u8>)> = tx
            .prepare_cached("SELECT parent, name FROM dentries WHERE ino=?1 ORDER BY id LIMIT 1")?
            .query_row([cur as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((parent, name)) = up else {
            break;
        };
        parts.push(String::from_utf8_lossy(&name).into_owned());
        cur = parent as u64;
    }
    Ok(format!("#{ino} (no path)"))
}

/// Turn a block whose data is gone into a lost marker: still mapped, so
/// reading it fails with EIO; its hash can match no content, so no write
/// ever deduplicates into it.
pub fn mark_block_lost(tx: &Connection, block: i64) -> Result<()> {
    let mut h = b"swiftgate lost block ".to_vec();
    h.extend_from_slice(&block.to_le_bytes());
    let marker = <sha2::Sha256 as sha2::Digest>::digest(&h).to_vec();
    tx.execute(
        "UPDATE blocks SET object=?2, offset=0, length=0, hash=?3 WHERE id=?1",
        params![block, LOST_OBJECT, marker],
    )?;
    Ok(())
}

/// A new lost marker block (for a mapping whose block row is gone).
pub fn new_lost_block(tx: &Connection) -> Result<i64> {
    tx.execute(
        "INSERT INTO blocks(hash, object, offset, length, plain_len, refcount) VALUES(randomblob(32), ?1, 0, 0, 0, 1)",
        [LOST_OBJECT],
    )?;
    let id = tx.last_insert_rowid();
    mark_block_lost(tx, id)?;
    Ok(id)
}

pub(crate) fn unmap_all(tx: &Connection, ino: u64, gen: u64) -> Result<()> {
    unmap_from_tx(tx, ino, 0, gen)
}

fn unmap_from_tx(tx: &Connection, ino: u64, from: u64, gen: u64) -> Result<()> {
    let blocks: Vec<i64> = {
        let mut st = tx.prepare_cached("SELECT block FROM file_blocks WHERE ino=?1 AND idx>=?2")?;
        let rows = st.query_map(params![ino as i64, from as i64], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.prepare_cached("DELETE FROM file_blocks WHERE ino=?1 AND idx>=?2")?
        .execute(params![ino as i64, from as i64])?;
    for b in blocks {
        decref_block(tx, b, gen)?;
    }
    Ok(())
}

/// Drop one reference; a block with none left is removed and its bytes no
/// longer count as live in its object. An object with nothing live is queued
/// for deletion once metadata generation `gen` is safely shipped.
pub fn decref_block(tx: &Connection, block: i64, gen: u64) -> Result<()> {
    tx.prepare_cached("UPDATE blocks SET refcount=refcount-1 WHERE id=?1")?
        .execute([block])?;
    let row: Option<(i64, i64, i64)> = tx
        .prepare_cached("SELECT refcount, object, length FROM blocks WHERE id=?1")?
        .query_row([block], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((rc, object, length)) = row else {
        return Err(MetaError::Corrupt(format!("block {block} missing")));
    };
    if rc > 0 {
        return Ok(());
    }
    tx.prepare_cached("DELETE FROM blocks WHERE id=?1")?
        .execute([block])?;
    tx.prepare_cached(
        "UPDATE objects SET live_bytes=live_bytes-?2, live_blocks=live_blocks-1 WHERE id=?1",
    )?
    .execute(params![object, length])?;
    let live: Option<i64> = tx
        .prepare_cached("SELECT live_blocks FROM objects WHERE id=?1")?
        .query_row([object], |r| r.get(0))
        .optional()?;
    if live == Some(0) {
        tx.prepare_cached("DELETE FROM objects WHERE id=?1")?
            .execute([object])?;
        tx.prepare_cached("INSERT OR REPLACE INTO dead_objects(id, after_gen) VALUES(?1, ?2)")?
            .execute(params![object, gen as i64])?;
    }
    Ok(())
}
