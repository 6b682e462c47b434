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
fn encode_snapshot_file(
    codec: &BlockCodec,
    gen: u64,
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
    codec.encode_stream(snap_key(gen).as_bytes(), 32 + len, &mut src)
}

fn decode_snapshot(codec: &BlockCodec, gen: u64, rec: &[u8]) -> Result<Vec<u8>, String> {
    let plain = codec
        .decode(snap_key(gen).as_bytes(), rec)
        .map_err(|e| e.to_string())?;
    if plain.len() < 32 || sha256(&plain[32..])[..] != plain[..32] {
        return Err("checksum mismatch".into());
    }
    Ok(plain[32..].to_vec())
}

/// The newest generation in the store: from the `meta/latest` hint, then
/// probing forward by HEAD (a hint may lag; LIST may be stale on Swift).
pub fn latest_gen(store: &DynStore) -> Result<u64, StoreError> {
    let mut gen = match store.get("meta/latest") {
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

/// Write the newest readable snapshot to `dest`; returns its generation
/// and, if newer generations had to be skipped, a warning saying so.
pub fn restore(
    store: &DynStore,
    codec: &BlockCodec,
    dest: &Path,
) -> Result<(u64, Option<String>), ShipError> {
    let latest = latest_gen(store)?;
    let mut errors = Vec::new();
    let oldest = latest.saturating_sub(KEEP_GENERATIONS * 2).max(1);
    for gen in (oldest..=latest).rev() {
        let rec = match store.get(&snap_key(gen)) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                errors.push(format!("generation {gen}: missing"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match decode_snapshot(codec, gen, &rec) {
            Ok(db) => {
                let warning = (gen != latest).then(|| {
                    format!(
                        "metadata generation {latest} is unusable ({}); fell back to generation {gen}: namespace changes after it are lost",
                        errors.join("; ")
                    )
                });
                if let Some(w) = &warning {
                    tracing::error!("{w}");
                }
                let tmp = dest.with_extension("restore");
                std::fs::write(&tmp, &db)?;
                for ext in ["db-wal", "db-shm"] {
                    let _ = std::fs::remove_file(dest.with_extension(ext));
                }
                std::fs::rename(&tmp, dest)?;
                return Ok((gen, warning));
            }
            Err(e) => errors.push(format!("generation {gen}: {e}")),
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
    store: DynStore,
    codec: BlockCodec,
    meta: Arc<Meta>,
    /// Last generation in the store.
    shipped: AtomicU64,
    /// Change sequence of the database at the last shipment.
    shipped_seq: AtomicU64,
    lock: parking_lot::Mutex<()>,
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

    pub fn has_changes(&self) -> bool {
        self.meta.change_seq() != self.shipped_seq.load(Ordering::Acquire)
    }

    /// Ship a snapshot if anything changed (or `force`). Returns the generation.
    pub fn ship(&self, force: bool) -> Result<u64, ShipError> {
        let _g = self.lock.lock();
        if !force && !self.has_changes() {
            return Ok(self.shipped_gen());
        }
        let gen = self.shipped_gen() + 1;
        // Record the new generation inside the snapshot itself, so a host
        // restoring it knows which generation it holds.
        self.meta
            .kv_set(KV_SHIPPED_GEN, gen.to_string().as_bytes())?;
        let seq = self.meta.change_seq();
        // The snapshot reads through a second connection: it sees only
        // what is committed.
        self.meta.commit()?;
        let tmp = snapshot_path(self.meta.path());
        let _ = std::fs::remove_file(&tmp);
        {
            // A second connection reads a consistent WAL snapshot without
            // blocking writers on the main one.
            let c = rusqlite::Connection::open(self.meta.path()).map_err(MetaError::from)?;
            c.busy_timeout(std::time::Duration::from_secs(30))
                .map_err(MetaError::from)?;
            c.execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
                .map_err(MetaError::from)?;
        }
        let rec = encode_snapshot_file(&self.codec, gen, &tmp);
        let _ = std::fs::remove_file(&tmp);
        let rec = rec?;
        self.store.put(&snap_key(gen), &rec)?;
        self.store.put("meta/latest", gen.to_string().as_bytes())?;
        self.shipped.store(gen, Ordering::Release);
        self.shipped_seq.store(seq, Ordering::Release);
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
                .prepare("SELECT id FROM dead_objects WHERE after_gen + 2 <= ?1")
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

fn snapshot_path(db: &Path) -> PathBuf {
    db.with_extension("snapshot")
}
