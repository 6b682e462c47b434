//! Shipping metadata to the store: numbered, checksummed, encoded snapshots
//! of the SQLite database (`meta/snap-<gen>`), the newest few kept. A mount
//! on a host without a current local copy rebuilds from the newest readable
//! generation, falling back to older ones if one fails its checksum.

use super::{Meta, MetaError};
use crate::data::{sha256, BlockCodec, Compression, MasterKey};
use crate::store::{DynStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const KEEP_GENERATIONS: u64 = 4;
pub const KV_SHIPPED_GEN: &str = "shipped_gen";
pub const KV_FS_UUID: &str = "fs_uuid";
/// Unix time a generation was shipped (stored inside it: its age on restore).
pub const KV_SHIPPED_AT: &str = "shipped_at";
/// Set once a rollback was accepted: objects no generation knows may hold
/// the only copy of newer data, so nothing unknown is deleted (quarantine)
/// until an operator releases them.
pub const KV_ROLLBACK: &str = "rollback";
/// Object ids below this may exist in the store from generations lost to a
/// rollback: new objects are numbered above it so none is overwritten.
pub const KV_OBJECT_ID_FLOOR: &str = "object_id_floor";
/// Damaged snapshots are kept under this prefix, never overwritten.
pub const DAMAGED_PREFIX: &str = "meta/damaged-";

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("metadata snapshot I/O: {0}")]
    Io(std::io::Error),
    #[error("no readable metadata snapshot in the store: {0}")]
    NoSnapshot(String),
}

cause_from!(std::io::Error => ShipError::Io);

pub fn snap_key(gen: u64) -> String {
    format!("meta/snap-{gen:016x}")
}

pub fn meta_codec(key: Option<&MasterKey>) -> BlockCodec {
    BlockCodec::new(key, Compression::Zstd(3))
}

/// A snapshot record: SHA-256 of the database, then the database, encoded
/// (the checksum makes corruption detectable even on --plain filesystems).
/// The file is read straight behind the checksum slot: one copy of a large
/// database in memory, not two.
pub(super) fn encode_db_file(
    codec: &BlockCodec,
    key: &str,
    path: &std::path::Path,
) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // Two passes over the file (it is in the page cache): the checksum
    // first, then the file streams through the codec behind it.
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut f = std::fs::File::open(path)?;
    let len = std::io::copy(&mut f, &mut hasher)?;
    let sum: [u8; 32] = sha2::Digest::finalize(hasher).into();
    let f = std::fs::File::open(path)?;
    let mut src = (&sum[..]).chain(f);
    codec.encode_stream(key.as_bytes(), 32 + len, &mut src)
}

/// The database inside a record made by [`encode_db_file`] under `key`.
pub(super) fn decode_db(codec: &BlockCodec, key: &str, rec: &[u8]) -> Result<Vec<u8>, String> {
    let plain = codec
        .decode(key.as_bytes(), rec)
        .map_err(|e| e.to_string())?;
    if plain.len() < 32 || sha256(&plain[32..])[..] != plain[..32] {
        return Err("checksum mismatch".into());
    }
    Ok(plain[32..].to_vec())
}

/// The newest generation in the store: from the `meta/latest` hint, then
/// probing forward by HEAD (a hint may lag; LIST may be stale on Swift).
pub fn latest_gen(store: &DynStore) -> Result<u64, StoreError> {
    let mut gen = match store.get_max("meta/latest", 64) {
        Ok(d) => String::from_utf8_lossy(&d)
            .trim()
            .parse::<u64>()
            .unwrap_or(0),
        Err(e) if e.is_not_found() => 0,
        Err(e) => return Err(e),
    };
    while store.head(&snap_key(gen + 1))?.is_some() {
        gen += 1;
    }
    Ok(gen)
}

/// What [`restore`] found: the generation it wrote out and, when that is
/// not the newest, the newer ones that failed (a rollback).
#[derive(Debug, Clone)]
pub struct Restored {
    pub gen: u64,
    /// The highest generation present in the store, readable or not.
    pub latest: u64,
    /// Newer generations that could not be used, with why.
    pub failed: Vec<(u64, String)>,
    /// When the generation used was shipped (unix seconds), if recorded.
    pub shipped_at: Option<u64>,
}

impl Restored {
    pub fn is_rollback(&self) -> bool {
        self.gen != self.latest
    }

    /// One paragraph for the operator: what is lost and how old the
    /// state is that would be used.
    pub fn describe(&self) -> String {
        let age = match self.shipped_at {
            Some(t) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(t);
                format!(
                    "written {} ago",
                    humantime::format_duration(std::time::Duration::from_secs(
                        now.saturating_sub(t)
                    ))
                )
            }
            None => "of unknown age".into(),
        };
        let why: Vec<String> = self
            .failed
            .iter()
            .map(|(g, e)| format!("generation {g}: {e}"))
            .collect();
        format!(
            "the newest metadata generation{} {} unusable ({}); the newest readable one is generation {} ({age}): using it loses every change made after it",
            if self.failed.len() > 1 { "s" } else { "" },
            if self.failed.len() > 1 {
                format!("{}..{} are", self.gen + 1, self.latest)
            } else {
                format!(" {} is", self.latest)
            }
            .trim_start(),
            why.join("; "),
            self.gen
        )
    }
}

/// Copy each failed generation's snapshot aside (`meta/damaged-snap-N`)
/// for inspection: generation numbers move on past it and old snapshots
/// are pruned, the copy stays.
pub fn keep_damaged(store: &DynStore, r: &Restored) -> Result<Vec<String>, StoreError> {
    let mut kept = Vec::new();
    for (g, _) in &r.failed {
        let src = snap_key(*g);
        let dst = format!("{DAMAGED_PREFIX}snap-{g:016x}");
        if store.head(&dst)?.is_some() {
            kept.push(dst);
            continue;
        }
        match store.get(&src) {
            Ok(d) => {
                store.put(&dst, &d)?;
                kept.push(dst);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(kept)
}

/// Once an operator accepted a rollback: the damaged snapshots are kept
/// aside, the metadata remembers the rollback (fsck then quarantines
/// objects it does not know instead of deleting them) and new objects are
/// numbered above every object in the store, so none from the lost
/// generations is overwritten. Returns what was kept and a line to log.
pub fn accept_rollback(store: &DynStore, meta: &Meta, r: &Restored) -> Result<String, ShipError> {
    let kept = keep_damaged(store, r)?;
    let max_id = store
        .list_all("data/")?
        .iter()
        .filter_map(|o| super::object_id(&o.key))
        .max()
        .unwrap_or(0);
    // A listing may lag behind recent PUTs (Swift): leave a wide margin.
    let floor = max_id.saturating_add(1 << 20);
    let old_floor = meta
        .kv_get(KV_OBJECT_ID_FLOOR)?
        .and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok())
        .unwrap_or(0);
    meta.kv_set(
        KV_OBJECT_ID_FLOOR,
        floor.max(old_floor).to_string().as_bytes(),
    )?;
    let now = crate::clock::unix_now();
    let note = format!(
        "rolled back to generation {} of {} at unix time {now}; damaged snapshots kept as {}",
        r.gen,
        r.latest,
        if kept.is_empty() {
            "(none left to keep)".to_string()
        } else {
            kept.join(", ")
        }
    );
    meta.kv_set(KV_ROLLBACK, note.as_bytes())?;
    meta.commit()?;
    Ok(note)
}

/// Write the newest readable snapshot to `dest` and say what it is.
pub fn restore(store: &DynStore, codec: &BlockCodec, dest: &Path) -> Result<Restored, ShipError> {
    let latest = latest_gen(store)?;
    let mut errors = Vec::new();
    let mut failed = Vec::new();
    let oldest = latest.saturating_sub(KEEP_GENERATIONS * 2).max(1);
    for gen in (oldest..=latest).rev() {
        let rec = match store.get(&snap_key(gen)) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                errors.push(format!("generation {gen}: missing"));
                failed.push((gen, "missing".to_string()));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match decode_db(codec, &snap_key(gen), &rec) {
            Ok(db) => {
                let tmp = dest.with_extension("restore");
                std::fs::write(&tmp, &db)?;
                for ext in ["db-wal", "db-shm"] {
                    let _ = std::fs::remove_file(dest.with_extension(ext));
                }
                std::fs::rename(&tmp, dest)?;
                let shipped_at = Meta::open(dest)?
                    .kv_get(KV_SHIPPED_AT)?
                    .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok());
                let r = Restored {
                    gen,
                    latest,
                    failed,
                    shipped_at,
                };
                if r.is_rollback() {
                    tracing::error!("{}", r.describe());
                }
                return Ok(r);
            }
            Err(e) => {
                errors.push(format!("generation {gen}: {e}"));
                failed.push((gen, e));
            }
        }
    }
    Err(ShipError::NoSnapshot(if errors.is_empty() {
        "none found".into()
    } else {
        errors.join("; ")
    }))
}

#[derive(Debug)]
pub struct Shipper {
    pub(super) store: DynStore,
    pub(super) codec: BlockCodec,
    pub(super) meta: Arc<Meta>,
    /// Last generation in the store.
    shipped: AtomicU64,
    /// Change sequence of the database at the last shipment.
    shipped_seq: AtomicU64,
    /// One shipment at a time; also held while a filesystem snapshot is
    /// taken or dropped, so no object it pins is deleted meanwhile.
    pub(super) lock: parking_lot::Mutex<()>,
    /// When the store last held the current metadata: a generation was
    /// stored, or there was nothing new to store (at start: what was just
    /// restored or found current).
    synced_at: parking_lot::Mutex<std::time::Instant>,
}

impl Shipper {
    pub fn new(store: DynStore, codec: BlockCodec, meta: Arc<Meta>, shipped: u64) -> Self {
        Shipper {
            store,
            codec,
            meta,
            shipped: AtomicU64::new(shipped),
            shipped_seq: AtomicU64::new(0),
            lock: parking_lot::Mutex::new(()),
            synced_at: parking_lot::Mutex::new(std::time::Instant::now()),
        }
    }

    /// Generation the next snapshot will get; stamped on objects that die
    /// so they are only deleted once a snapshot without them is stored.
    pub fn next_gen(&self) -> u64 {
        self.shipped.load(Ordering::Acquire) + 1
    }

    pub fn shipped_gen(&self) -> u64 {
        self.shipped.load(Ordering::Acquire)
    }

    /// How long the store's newest generation has lagged behind the
    /// metadata (0 right after a shipment or a check that found nothing new).
    pub fn metadata_age(&self) -> std::time::Duration {
        if !self.has_changes() {
            return std::time::Duration::ZERO;
        }
        self.synced_at.lock().elapsed()
    }

    pub fn has_changes(&self) -> bool {
        self.meta.change_seq() != self.shipped_seq.load(Ordering::Acquire)
    }

    /// Ship a snapshot if anything changed (or `force`). Returns the generation.
    pub fn ship(&self, force: bool) -> Result<u64, ShipError> {
        let _g = self.lock.lock();
        if !force && !self.has_changes() {
            *self.synced_at.lock() = std::time::Instant::now();
            return Ok(self.shipped_gen());
        }
        let gen = self.shipped_gen() + 1;
        // Record the new generation inside the snapshot itself, so a host
        // restoring it knows which generation it holds.
        self.meta
            .kv_set(KV_SHIPPED_GEN, gen.to_string().as_bytes())?;
        let now = crate::clock::unix_now();
        self.meta
            .kv_set(KV_SHIPPED_AT, now.to_string().as_bytes())?;
        let seq = self.meta.change_seq();
        // The snapshot reads through a second connection: it sees only
        // what is committed.
        self.meta.commit()?;
        let tmp = snapshot_path(self.meta.path());
        copy_db(self.meta.path(), &tmp)?;
        let rec = encode_db_file(&self.codec, &snap_key(gen), &tmp);
        let _ = std::fs::remove_file(&tmp);
        let rec = rec?;
        self.store.put(&snap_key(gen), &rec)?;
        self.store.put("meta/latest", gen.to_string().as_bytes())?;
        self.shipped.store(gen, Ordering::Release);
        self.shipped_seq.store(seq, Ordering::Release);
        *self.synced_at.lock() = std::time::Instant::now();
        // Old generations and dead objects: best effort, retried next time.
        if gen > KEEP_GENERATIONS {
            let old = gen - KEEP_GENERATIONS;
            for g in old.saturating_sub(4).max(1)..=old {
                let _ = self.store.delete(&snap_key(g));
            }
        }
        if let Err(e) = self.delete_dead_objects(gen) {
            tracing::warn!("deleting unreferenced objects failed (will retry): {e}");
        }
        tracing::debug!(gen, bytes = rec.len(), "metadata shipped");
        Ok(gen)
    }

    fn delete_dead_objects(&self, gen: u64) -> Result<(), ShipError> {
        // Two generations of margin: the snapshot that first lacks an object
        // and one more, so falling back one generation stays safe.
        let dead: Vec<i64> = {
            let c = self.meta.lock();
            let mut st = c
                // Objects a kept snapshot still reads stay until it goes.
                .prepare(
                    "SELECT id FROM dead_objects WHERE after_gen + 2 <= ?1
                     AND id NOT IN (SELECT object FROM snapshot_objects)",
                )
                .map_err(MetaError::from)?;
            let rows = st
                .query_map([gen as i64], |r| r.get(0))
                .map_err(MetaError::from)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(MetaError::from)?
        };
        if dead.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = dead.iter().map(|&id| super::object_key(id)).collect();
        self.store.delete_many(&keys)?;
        self.meta.with_tx(|tx| {
            for id in &dead {
                tx.execute("DELETE FROM dead_objects WHERE id=?1", [id])?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// A consistent copy of what is committed in the database at `db`, into
/// `dest` (replaced). A second connection reads a WAL snapshot without
/// blocking writers on the main one. The file is made 0600 before SQLite
/// fills it (SQLite would create it 0644).
pub(super) fn copy_db(db: &Path, dest: &Path) -> Result<(), ShipError> {
    let _ = std::fs::remove_file(dest);
    crate::secure::write_private(dest, b"")?;
    let c = rusqlite::Connection::open(db).map_err(MetaError::from)?;
    c.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(MetaError::from)?;
    c.execute("VACUUM INTO ?1", [dest.to_string_lossy()])
        .map_err(MetaError::from)?;
    Ok(())
}

pub(super) fn snapshot_path(db: &Path) -> PathBuf {
    db.with_extension("snapshot")
}
