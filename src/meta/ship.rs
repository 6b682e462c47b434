//! Shipping metadata to the store by change: the committed WAL frames of
//! the SQLite database go out as numbered, chained segments, with a full
//! snapshot now and then ([`super::chain`]). A mount on a host without a
//! current local copy rebuilds from the newest readable snapshot and the
//! segments after it, stopping at a damaged link and saying so.

use super::chain::{self, ChainState, Segment};
use super::wal;
use super::{Meta, MetaError};
use crate::data::{sha256, BlockCodec, Compression, MasterKey};
use crate::store::{DynStore, StoreError};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    #[error(
        "metadata generation {0} was already written by another mount: this mount lost its lease and stores no more metadata; unmount it (its unshipped changes stay in its local cache)"
    )]
    Fenced(u64),
    #[error("the metadata database is busy; the full snapshot is retried later")]
    Busy,
}

cause_from!(std::io::Error => ShipError::Io);

impl ShipError {
    /// The cache disk is full (the database could not grow).
    pub fn is_disk_full(&self) -> bool {
        match self {
            ShipError::Meta(MetaError::Db(rusqlite::Error::SqliteFailure(f, _))) => {
                f.code == rusqlite::ErrorCode::DiskFull
            }
            ShipError::Io(e) => e.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

pub use super::chain::{snap_key, wal_key};

/// A format 1 snapshot record (older releases: the whole database in one
/// record, up to the codec's 4 GiB) or a format 2 manifest: at most this big.
pub const MAX_SNAPSHOT_RECORD: u64 = crate::store::MAX_OBJECT;
/// Segments between full snapshots, at most: bounds the requests a
/// restore makes.
pub const MAX_SEGMENTS: u64 = 2048;
/// Segment bytes between full snapshots, at least (below the database's
/// own size a full snapshot would cost more than it saves).
pub const MIN_COMPACT_BYTES: u64 = 64 << 20;
/// Past this size the WAL is shipped early and folded into the database
/// (and emptied): SQLite's own default is about this.
pub const CHECKPOINT_AT: u64 = 4 << 20;
/// Past this size the WAL is folded in anyway (the shipper fell behind, or
/// the store is unreachable), so the cache disk does not fill; the chain
/// then resumes with a full snapshot.
pub const WAL_HARD_LIMIT: u64 = 8 << 20;

pub fn meta_codec(key: Option<&MasterKey>) -> BlockCodec {
    BlockCodec::new(key, Compression::Zstd(3))
}

/// The database in a decoded format 1 record, checksum checked.
pub(super) fn check_v1(plain: &[u8]) -> Result<&[u8], String> {
    if plain.len() < 32 || sha256(&plain[32..])[..] != plain[..32] {
        return Err("checksum mismatch".into());
    }
    Ok(&plain[32..])
}

/// The newest generation in the store (snapshot or segment).
pub fn latest_gen(store: &DynStore) -> Result<u64, StoreError> {
    super::chain::end(store)
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
            if self.latest > self.gen + 1 { "s" } else { "" },
            if self.latest > self.gen + 1 {
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

/// Copy each failed link (snapshot or segment) aside
/// (`meta/damaged-snap-N`, `meta/damaged-wal-N`) for inspection: generation
/// numbers move on past it and old links are pruned, the copy stays.
pub fn keep_damaged(store: &DynStore, r: &Restored) -> Result<Vec<String>, StoreError> {
    let mut kept = Vec::new();
    for (g, _) in &r.failed {
        for src in [snap_key(*g), wal_key(*g)] {
            let dst = format!("{DAMAGED_PREFIX}{}", src.trim_start_matches("meta/"));
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

/// Rebuild the database at `dest` from the store (newest readable snapshot
/// and the segments after it) and say what it is. The shipper's record
/// beside it continues the chain from there.
pub fn restore(store: &DynStore, codec: &BlockCodec, dest: &Path) -> Result<Restored, ShipError> {
    let _ = std::fs::remove_file(super::chain::state_path(dest));
    let rb = super::chain::restore(store, codec, dest)?;
    // Stamped before anything opens it: a format 1 snapshot is switched to
    // WAL mode on open, which rewrites the file, and then the chain cannot
    // continue on it (the next shipment is a full snapshot).
    let mut st = ChainState::new(rb.gen, &rb.hash, dest, rb.base, 0)?;
    st.segments_since_base = rb.segments;
    st.bytes_since_base = rb.bytes;
    st.save(dest)?;
    let shipped_at = Meta::open(dest)?
        .kv_get(KV_SHIPPED_AT)?
        .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok());
    let r = Restored {
        gen: rb.gen,
        latest: rb.latest,
        failed: rb.failed,
        shipped_at,
    };
    tracing::info!(
        gen = r.gen,
        base = rb.base,
        segments = rb.segments,
        "metadata rebuilt from a snapshot and the segments after it"
    );
    if r.is_rollback() {
        tracing::error!("{}", r.describe());
    }
    Ok(r)
}

/// What the shipper has sent since it started.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ShipStats {
    pub segments: u64,
    pub full_snapshots: u64,
    /// Bytes stored (encoded), segments and snapshots.
    pub bytes: u64,
    pub segments_since_snapshot: u64,
    pub bytes_since_snapshot: u64,
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
    /// taken or dropped, so no object it pins is deleted meanwhile, and
    /// the only holder that checkpoints the WAL.
    pub(super) lock: parking_lot::Mutex<()>,
    /// Where the chain stands; None: it cannot be continued from here, the
    /// next shipment is a full snapshot.
    chain: parking_lot::Mutex<Option<ChainState>>,
    /// Another mount wrote a generation this one meant to write.
    fenced: AtomicU64,
    stats: parking_lot::Mutex<ShipStats>,
    /// When the store last held the current metadata: a generation was
    /// stored, or there was nothing new to store (at start: what was just
    /// restored or found current).
    synced_at: parking_lot::Mutex<std::time::Instant>,
}

impl Shipper {
    /// `shipped`: the newest generation in the store (or of the local
    /// database, if newer). The chain continues from the record beside the
    /// database when it names that generation and the file is unchanged.
    pub fn new(store: DynStore, codec: BlockCodec, meta: Arc<Meta>, shipped: u64) -> Self {
        let chain = ChainState::load(meta.path())
            .filter(|st| st.gen == shipped && shipped > 0 && st.matches_db(meta.path()));
        if chain.is_none() && shipped > 0 {
            tracing::info!(
                gen = shipped,
                "the metadata chain cannot be continued from the local record: the next shipment is a full snapshot"
            );
        }
        let stats = ShipStats {
            segments_since_snapshot: chain.as_ref().map_or(0, |c| c.segments_since_base),
            bytes_since_snapshot: chain.as_ref().map_or(0, |c| c.bytes_since_base),
            ..Default::default()
        };
        Shipper {
            store,
            codec,
            meta,
            shipped: AtomicU64::new(shipped),
            shipped_seq: AtomicU64::new(0),
            lock: parking_lot::Mutex::new(()),
            chain: parking_lot::Mutex::new(chain),
            fenced: AtomicU64::new(0),
            stats: parking_lot::Mutex::new(stats),
            synced_at: parking_lot::Mutex::new(std::time::Instant::now()),
        }
    }

    /// Generation the next shipment will get; stamped on objects that die
    /// so they are only deleted once metadata without them is stored.
    pub fn next_gen(&self) -> u64 {
        self.shipped.load(Ordering::Acquire) + 1
    }

    pub fn shipped_gen(&self) -> u64 {
        self.shipped.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> ShipStats {
        *self.stats.lock()
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

    /// Ship what changed (or, with `force`, a link even if nothing did: a
    /// mount claims the chain so an older holder of the lease is fenced
    /// off). Returns the newest generation stored.
    pub fn ship(&self, force: bool) -> Result<u64, ShipError> {
        self.ship_with(force, false)
    }

    /// A full snapshot now (an operator's backup): it stands on its own,
    /// and objects that died before it may then go from the store.
    pub fn ship_full_now(&self) -> Result<u64, ShipError> {
        self.ship_with(true, true)
    }

    /// Past [`CHECKPOINT_AT`] of WAL waiting, it is shipped without
    /// waiting for the interval.
    pub fn wal_is_large(&self) -> bool {
        self.meta.wal_bytes() >= CHECKPOINT_AT
    }

    /// After shipping failed: past [`WAL_HARD_LIMIT`] fold the WAL into the
    /// database anyway (the next shipment is then a full snapshot), so an
    /// outage of the store does not fill the cache disk.
    pub fn relieve_wal(&self) -> Result<bool, ShipError> {
        let _g = self.lock.lock();
        if self.meta.wal_bytes() < WAL_HARD_LIMIT / 2 {
            return Ok(false);
        }
        self.fold_unshipped()?;
        tracing::warn!(
            "the metadata WAL passed {} MiB while the store could not take it: folded into the database; the next shipment is a full snapshot",
            WAL_HARD_LIMIT >> 20
        );
        Ok(true)
    }

    /// Fold the WAL in with frames not shipped: the chain cannot continue
    /// from here, the next shipment is a full snapshot. Under `self.lock`.
    fn fold_unshipped(&self) -> Result<(), ShipError> {
        *self.chain.lock() = None;
        let _ = std::fs::remove_file(chain::state_path(self.meta.path()));
        if let Some(r) = self.meta.reserve() {
            r.release_if_low();
        }
        let db = self.meta.lock_committed()?;
        self.fold(&db)?;
        Ok(())
    }

    /// Another mount wrote the generation this one was to write.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire) != 0
    }

    fn ship_with(&self, force: bool, full_now: bool) -> Result<u64, ShipError> {
        let _g = self.lock.lock();
        let fenced = self.fenced.load(Ordering::Acquire);
        if fenced != 0 {
            return Err(ShipError::Fenced(fenced));
        }
        if !force && !self.has_changes() {
            *self.synced_at.lock() = std::time::Instant::now();
            return Ok(self.shipped_gen());
        }
        let r = self.ship_locked(full_now);
        match &r {
            Err(ShipError::Fenced(g)) => {
                self.fenced.store(*g, Ordering::Release);
                tracing::error!("{}", ShipError::Fenced(*g));
            }
            // Shipping writes a little to the database first; on a full
            // cache disk that fails, and a WAL that is never folded in
            // only grows. Fold it in (the file is reused from its start):
            // the chain resumes with a full snapshot once there is room.
            Err(e) if e.is_disk_full() => {
                if let Err(e) = self.fold_unshipped() {
                    tracing::warn!("folding the metadata WAL in on a full disk failed: {e}");
                }
            }
            _ => {}
        }
        r
    }

    fn ship_locked(&self, full_now: bool) -> Result<u64, ShipError> {
        let gen = self.shipped_gen() + 1;
        // Recorded inside the database itself, so a host rebuilding it
        // knows which generation it holds and how old it is.
        self.meta
            .kv_set(KV_SHIPPED_GEN, gen.to_string().as_bytes())?;
        let now = crate::clock::unix_now();
        self.meta
            .kv_set(KV_SHIPPED_AT, now.to_string().as_bytes())?;
        let seq = self.meta.change_seq();
        self.meta.commit()?;
        let full = match self.chain.lock().as_ref() {
            _ if full_now => true,
            None => true,
            Some(c) => {
                let db_size = c.db_size.max(MIN_COMPACT_BYTES);
                c.segments_since_base >= MAX_SEGMENTS || c.bytes_since_base >= db_size
            }
        };
        let last = if full {
            self.ship_full(gen)?
        } else {
            let record = |g: u64| {
                self.meta
                    .kv_set(KV_SHIPPED_GEN, g.to_string().as_bytes())
                    .and_then(|()| self.meta.commit())
            };
            match self.ship_segments(gen, &record)? {
                Some(g) => g,
                // The WAL is not where the record says: start over.
                None => self.ship_full(gen)?,
            }
        };
        self.shipped_seq.store(seq, Ordering::Release);
        *self.synced_at.lock() = std::time::Instant::now();
        if let Err(e) = self.checkpoint_if_large() {
            tracing::warn!("folding the metadata WAL into the database failed (will retry): {e}");
        }
        // Folding a large WAL in may have shipped one more link.
        let last = last.max(self.shipped_gen());
        if let Err(e) = self.delete_dead_objects(last) {
            tracing::warn!("deleting unreferenced objects failed (will retry): {e}");
        }
        Ok(last)
    }

    /// The committed WAL frames since the last link, as segments from
    /// `gen` on. None when the chain cannot continue (the WAL was restarted
    /// behind the shipper's back).
    fn ship_segments(
        &self,
        mut gen: u64,
        record_gen: &dyn Fn(u64) -> Result<(), MetaError>,
    ) -> Result<Option<u64>, ShipError> {
        let path = wal::wal_path(self.meta.path());
        let mut guard = self.chain.lock();
        let Some(st) = guard.as_mut() else {
            return Ok(None);
        };
        if !st.matches_db(self.meta.path()) {
            return Ok(None);
        }
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(h) = wal::header(&f)? else {
            return Ok(None);
        };
        let mut from = match st.wal_pos() {
            Some(p) if p.salt == h.salt => match wal::ends_at(&f, &h, p)? {
                true => p,
                false => return Ok(None),
            },
            // Restarted after the shipper folded it in: all new frames.
            Some(_) if st.folded => wal::start(&h),
            Some(_) => return Ok(None),
            None => wal::start(&h),
        };
        let Some(mut prev) = st.hash() else {
            return Ok(None);
        };
        let mut first = true;
        loop {
            // Each link carries its own generation inside the database
            // (the caller recorded the first): a host that crashed after
            // storing it still finds its local copy current.
            if !first {
                record_gen(gen)?;
            }
            first = false;
            let fr = wal::read_committed(&f, &h, from, chain::SEGMENT_BYTES)?;
            let more = fr.data.len() as u64 >= chain::SEGMENT_BYTES;
            let frames = wal::squash(fr.page_size, &fr.data);
            let seg = Segment {
                gen,
                prev,
                end: fr.end.or(Some(from)),
                page_size: fr.page_size,
                count: frames.len() as u64 / (8 + fr.page_size as u64),
                frames,
            };
            let (hash, bytes) = chain::put_segment(&self.store, &self.codec, &seg)?;
            if let Some(e) = fr.end {
                from = e;
                st.folded = false;
            }
            prev = hash;
            st.gen = gen;
            st.set_hash(&hash);
            st.set_wal_pos(Some(from));
            st.segments_since_base += 1;
            st.bytes_since_base += bytes;
            st.save(self.meta.path())?;
            self.shipped.store(gen, Ordering::Release);
            {
                let mut s = self.stats.lock();
                s.segments += 1;
                s.bytes += bytes;
                s.segments_since_snapshot = st.segments_since_base;
                s.bytes_since_snapshot = st.bytes_since_base;
            }
            tracing::debug!(gen, frames = seg.count, bytes, "metadata segment shipped");
            if !more {
                return Ok(Some(gen));
            }
            gen += 1;
        }
    }

    /// A full snapshot as generation `gen`: the WAL is folded into the
    /// database file first, which then stays unchanged while it is read
    /// (only this shipper checkpoints, under its lock).
    fn ship_full(&self, gen: u64) -> Result<u64, ShipError> {
        let path = self.meta.path().to_path_buf();
        let end = {
            let db = self.meta.lock_committed()?;
            self.fold(&db)?
        };
        let (hash, bytes) = chain::put_snapshot(&self.store, &self.codec, gen, &path)?;
        self.store
            .put(chain::LATEST_KEY, gen.to_string().as_bytes())?;
        let prev_base = self.chain.lock().as_ref().map_or(0, |c| c.base);
        let mut st = ChainState::new(gen, &hash, &path, gen, prev_base)?;
        st.set_wal_pos(end);
        st.folded = true;
        st.save(&path)?;
        *self.chain.lock() = Some(st);
        self.shipped.store(gen, Ordering::Release);
        {
            let mut s = self.stats.lock();
            s.full_snapshots += 1;
            s.bytes += bytes;
            s.segments_since_snapshot = 0;
            s.bytes_since_snapshot = 0;
        }
        // The snapshot before this one stays, with the segments after it:
        // the fallback if this one turns out unreadable.
        match chain::prune(&self.store, gen) {
            Ok(n) => tracing::debug!(gen, pruned = n, "old metadata links deleted"),
            Err(e) => tracing::warn!("deleting old metadata links failed (will retry): {e}"),
        }
        tracing::info!(gen, bytes, "full metadata snapshot shipped");
        Ok(gen)
    }

    /// Fold every committed frame into the database file, with writers
    /// held off; SQLite then restarts the WAL from its start (reusing the
    /// file: no new disk space) at the next write. Only when nothing
    /// unshipped would be lost: callers ship first, take a full snapshot
    /// right after, or give the chain up. Returns where the committed
    /// frames ended (all of them now in the database file).
    fn fold(&self, db: &super::group::Db) -> Result<Option<wal::WalPos>, ShipError> {
        let end = self.committed_end()?;
        let (busy, _, _): (i64, i64, i64) = db
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(MetaError::from)?;
        if busy != 0 {
            return Err(ShipError::Busy);
        }
        if let Some(w) = db.wal_watch.as_ref() {
            w.folded();
        }
        Ok(end)
    }

    /// The end of the WAL's committed frames (None: no WAL yet).
    fn committed_end(&self) -> Result<Option<wal::WalPos>, ShipError> {
        let f = match std::fs::File::open(wal::wal_path(self.meta.path())) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(h) = wal::header(&f)? else {
            return Ok(None);
        };
        let from = match self.chain.lock().as_ref().and_then(|c| c.wal_pos()) {
            Some(p) if wal::ends_at(&f, &h, p)? => p,
            _ => wal::start(&h),
        };
        let mut pos = from;
        loop {
            let fr = wal::read_committed(&f, &h, pos, chain::SEGMENT_BYTES)?;
            match fr.end {
                Some(e) if fr.count > 0 => pos = e,
                _ => return Ok(Some(pos)),
            }
        }
    }

    /// Record that the WAL up to `end` is folded into the database file.
    fn note_folded(&self, end: Option<wal::WalPos>) -> Result<(), ShipError> {
        let mut g = self.chain.lock();
        if let Some(st) = g.as_mut() {
            st.set_wal_pos(end);
            st.folded = true;
            let (s, t) = chain::db_stamp(self.meta.path())?;
            st.db_size = s;
            st.db_mtime_ns = t;
            st.save(self.meta.path())?;
        }
        Ok(())
    }

    /// Past [`CHECKPOINT_AT`] of WAL in use, ship what is left and fold it
    /// in, with writers held off for that moment so nothing lands between.
    fn checkpoint_if_large(&self) -> Result<(), ShipError> {
        if self.chain.lock().is_none() || !self.wal_is_large() {
            return Ok(());
        }
        let db = self.meta.lock_committed()?;
        let next = self.shipped_gen() + 1;
        // The generation is recorded through the held connection (in
        // autocommit), as `ship` does for each link.
        let record = |g: u64| super::kv_put(&db, KV_SHIPPED_GEN, g.to_string().as_bytes());
        record(next)?;
        if self.ship_segments(next, &record)?.is_none() {
            return Ok(());
        }
        let end = self.fold(&db)?;
        drop(db);
        self.note_folded(end)
    }

    fn delete_dead_objects(&self, gen: u64) -> Result<(), ShipError> {
        // An object is deleted only once a full snapshot taken after its
        // death is stored, with one generation of margin: every restore
        // (the newest snapshot and segments, or the one before it and the
        // segments up to the newest) then lacks it too.
        let base = self.chain.lock().as_ref().map_or(0, |c| c.base);
        let dead: Vec<i64> = {
            let c = self.meta.lock();
            let mut st = c
                // Objects a kept snapshot still reads stay until it goes;
                // a stale row must never cost a live object.
                .prepare(
                    "SELECT id FROM dead_objects WHERE after_gen + 2 <= ?1 AND after_gen + 1 < ?2
                     AND id NOT IN (SELECT object FROM snapshot_objects)
                     AND id NOT IN (SELECT id FROM objects)",
                )
                .map_err(MetaError::from)?;
            let rows = st
                .query_map([gen as i64, base as i64], |r| r.get(0))
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
