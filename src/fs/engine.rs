//! Putting the layers together: mkfs, opening a filesystem for mounting
//! (params, lease, metadata from local disk or the store, cache), the
//! background shipping/lease loop, and a clean shutdown.

use super::{Durability, Fs};
use crate::cache::{Cache, CacheConfig, CacheError, UploadPool};
use crate::data::params::ParamsError;
use crate::data::{BlockCodec, Compression, MasterKey, Params};
use crate::meta::lease::{Lease, LeaseError};
use crate::meta::ship::{self, meta_codec, ShipError, Shipper, KV_FS_UUID, KV_SHIPPED_GEN};
use crate::meta::{Meta, MetaError};
use crate::store::{DynStore, StoreError};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PARAMS_KEY: &str = "params";
pub const DEFAULT_BLOCK_SIZE: u32 = 4 << 20;
/// How often mostly-dead packs are looked for.
const GC_INTERVAL: Duration = Duration::from_secs(60);
/// How often cached copies of deleted blocks are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How often the store account's quota is read (for statfs): one HEAD,
/// and the figure is eventually consistent anyway.
const CAPACITY_INTERVAL: Duration = Duration::from_secs(300);
/// A failed metadata shipment is tried again after this long.
const SHIP_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{url} holds no swiftgate filesystem (no params object); create one with `swiftgate mkfs {url}`")]
    NoFilesystem { url: String },
    #[error("{url} already holds a swiftgate filesystem (uuid {uuid}); use --force to destroy it and start over")]
    AlreadyFormatted { url: String, uuid: String },
    #[error("{url} is not empty ({count} objects) and does not look like a swiftgate filesystem; use --force to erase it")]
    NotEmpty { url: String, count: usize },
    #[error("invalid block size {0}: use a power of two between 64 KiB and 64 MiB")]
    BadBlockSize(u64),
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("metadata: {0}")]
    Meta(MetaError),
    #[error("metadata shipping: {0}")]
    Ship(ShipError),
    #[error("cache: {0}")]
    Cache(CacheError),
    #[error("cache directory {path}: {cause}")]
    CacheDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("data could not be flushed: {0}")]
    Flush(String),
    #[error("{0}. Nothing was changed. To look closer run `swiftgate fsck --dry-run`; to go on with the older generation mount with --accept-rollback (the damaged snapshots are kept, and objects only they referenced are never deleted)")]
    Rollback(String),
}

cause_from!(MetaError => EngineError::Meta, ShipError => EngineError::Ship, CacheError => EngineError::Cache);

pub type Result<T> = std::result::Result<T, EngineError>;

#[derive(Debug, Clone)]
pub struct MkfsOptions {
    pub block_size: u32,
    pub compression: Compression,
    pub passphrase: Option<Vec<u8>>,
    pub force: bool,
    /// Owner of the root directory (uid, gid); it is then mode 0700 (a
    /// user's home). None: root-owned, 0755.
    pub root_owner: Option<(u32, u32)>,
}

pub fn read_params(store: &DynStore) -> Result<Params> {
    match store.get_max(PARAMS_KEY, crate::data::params::MAX_PARAMS_BYTES) {
        Ok(d) => Ok(Params::from_json(&d)?),
        Err(e) if e.is_not_found() => Err(EngineError::NoFilesystem { url: store.url() }),
        Err(e) => Err(e.into()),
    }
}

pub fn mkfs(store: &DynStore, o: &MkfsOptions) -> Result<Params> {
    let bs = o.block_size as u64;
    if !bs.is_power_of_two() || !(64 << 10..=64 << 20).contains(&bs) {
        return Err(EngineError::BadBlockSize(bs));
    }
    store.prepare()?;
    // Listings may lag on Swift: a HEAD of the superblock catches a
    // filesystem created moments ago that the listing does not show yet.
    let mut existing = store.list_all("")?;
    if existing.is_empty() && store.head(PARAMS_KEY)?.is_some() {
        existing.push(crate::store::ObjectInfo {
            key: PARAMS_KEY.to_string(),
            size: 0,
        });
    }
    if !existing.is_empty() {
        if !o.force {
            return match read_params(store) {
                Ok(p) => Err(EngineError::AlreadyFormatted {
                    url: store.url(),
                    uuid: p.uuid,
                }),
                Err(_) => Err(EngineError::NotEmpty {
                    url: store.url(),
                    count: existing.len(),
                }),
            };
        }
        let keys: Vec<String> = existing.into_iter().map(|o| o.key).collect();
        store.delete_many(&keys)?;
    }
    let (params, key) = Params::new(o.block_size, o.compression, o.passphrase.as_deref())?;
    // The first metadata generation: an empty root directory.
    let tmp = tempdir_for_mkfs()?;
    let db = tmp.join("meta.db");
    {
        let meta = Arc::new(Meta::open(&db)?);
        match o.root_owner {
            Some((uid, gid)) => meta.init_root(0o700, uid, gid)?,
            None => meta.init_root(0o755, 0, 0)?,
        }
        meta.kv_set(KV_FS_UUID, params.uuid.as_bytes())?;
        let shipper = Shipper::new(store.clone(), meta_codec(key.as_ref()), meta, 0);
        shipper.ship(true)?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    // Params last: a store with params is a complete filesystem.
    store.put(PARAMS_KEY, &params.to_json())?;
    Ok(params)
}

fn tempdir_for_mkfs() -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!(
        "swiftgate-mkfs-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    crate::secure::private_dir(&p).map_err(|source| EngineError::CacheDir {
        path: p.clone(),
        cause: source,
    })?;
    Ok(p)
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub dirty_limit: u64,
    /// Uploads in flight at most (the pool's threads are shared).
    pub upload_workers: usize,
    /// Upload threads shared with other engines (a gateway's homes); None:
    /// this engine runs its own pool of `upload_workers` threads.
    pub upload_pool: Option<Arc<crate::cache::UploadPool>>,
    pub upload_delay: Duration,
    pub durability: Durability,
    pub metadata_interval: Duration,
    pub lease_ttl: Duration,
    pub takeover: bool,
    pub passphrase: Option<Vec<u8>>,
    /// Go on with an older metadata generation when the newest are damaged.
    pub accept_rollback: bool,
    /// On a full cache disk that waiting does not free, writes fail with
    /// ENOSPC after this long.
    pub nospace_wait: Duration,
}

/// The default of [`OpenOptions::nospace_wait`]: well under the minute
/// after which people (and smbd's clients) give up on a hung write.
pub const DEFAULT_NOSPACE_WAIT: Duration = Duration::from_secs(20);

/// Everything a live mount needs, minus the FUSE session itself.
pub struct Engine {
    pub store: DynStore,
    pub params: Params,
    pub fs: Arc<Fs>,
    pub dir: PathBuf,
    lease: Mutex<Option<Lease>>,
    /// The background work's timings (see [`Engine::step`]).
    bg: Mutex<Background>,
    /// Registration with the shared ticker; taken at close.
    ticket: Mutex<Option<super::ticker::Ticket>>,
    /// The upload pool this engine made for itself (none when shared).
    own_pool: Mutex<Option<Arc<UploadPool>>>,
    closed: AtomicBool,
    /// Things the person mounting should hear about (e.g. a metadata
    /// generation that had to be skipped).
    pub warnings: Vec<String>,
}

/// When each piece of a mount's background work last ran.
struct Background {
    interval: Duration,
    renew_every: Duration,
    last_ship: Instant,
    last_renew: Instant,
    last_gc: Instant,
    ship_retry_at: Option<Instant>,
    last_sweep: Instant,
    last_capacity: Option<Instant>,
    capacity_busy: Arc<AtomicBool>,
    ship_fail_log: crate::logevery::LogEvery,
}

impl Background {
    fn new(interval: Duration, renew_every: Duration) -> Background {
        let now = Instant::now();
        Background {
            interval,
            renew_every,
            last_ship: now,
            last_renew: now,
            last_gc: now,
            ship_retry_at: None,
            last_sweep: now,
            last_capacity: None,
            capacity_busy: Arc::default(),
            ship_fail_log: crate::logevery::LogEvery::new(Duration::from_secs(10)),
        }
    }

    /// When the next piece is due: not on a fixed tick (a gateway's
    /// hundreds of idle homes each woke twice a second), but at least
    /// every 2 s (the reserve's room is taken back that often).
    fn next(&self) -> Instant {
        let now = Instant::now();
        let ship_at = (self.last_ship + self.interval).max(self.ship_retry_at.unwrap_or(now));
        let next = [
            self.last_renew + self.renew_every,
            ship_at,
            self.last_sweep + SWEEP_INTERVAL,
            self.last_gc + GC_INTERVAL,
            self.last_capacity.map_or(now, |t| t + CAPACITY_INTERVAL),
        ]
        .into_iter()
        .min()
        .unwrap_or(now);
        super::ticker::within(next, Duration::from_millis(20), Duration::from_secs(2))
    }
}

impl super::ticker::Step for Engine {
    /// One round of the mount's background work: the lease, metadata
    /// shipping, sweeps; returns when the next is due.
    fn step(&self) -> Instant {
        let mut guard = self.bg.lock();
        let b = &mut *guard;
        if let Some(r) = self.fs.meta().reserve() {
            r.take_back();
        }
        if b.last_renew.elapsed() >= b.renew_every {
            if let Some(l) = self.lease.lock().as_mut() {
                match l.renew() {
                    Ok(()) => b.last_renew = Instant::now(),
                    Err(e @ LeaseError::Lost { .. }) => {
                        tracing::error!("{e}");
                        self.fs.set_lease_lost();
                        b.last_renew = Instant::now();
                    }
                    Err(e) => tracing::error!("renewing the mount lease failed: {e}"),
                }
            }
        }
        // A WAL past its soft limit ships early (and is then emptied):
        // the cache disk holds only a few MiB of it.
        let due = b.last_ship.elapsed() >= b.interval || self.fs.shipper().wal_is_large();
        if due && b.ship_retry_at.is_none_or(|t| Instant::now() >= t) {
            match self.fs.shipper().ship(false) {
                Ok(_) => {
                    b.last_ship = Instant::now();
                    b.ship_retry_at = None;
                }
                Err(e) => {
                    // Each try writes a snapshot: not twice a second.
                    b.ship_retry_at = Some(Instant::now() + SHIP_RETRY);
                    if let Err(e) = self.fs.shipper().relieve_wal() {
                        tracing::warn!("folding the metadata WAL in failed: {e}");
                    }
                    if let Some(n) = b.ship_fail_log.hit() {
                        tracing::warn!(times = n, "shipping metadata failed (will retry): {e}");
                    }
                }
            }
        }
        self.fs.cache().sweep_fresh();
        if b.last_sweep.elapsed() >= SWEEP_INTERVAL {
            b.last_sweep = Instant::now();
            if let Err(e) = self.fs.cache().drop_dead_clean() {
                tracing::warn!("dropping cached copies of deleted blocks failed: {e}");
            }
        }
        if b.last_capacity
            .is_none_or(|t| t.elapsed() >= CAPACITY_INTERVAL)
            && !b.capacity_busy.swap(true, Ordering::AcqRel)
        {
            b.last_capacity = Some(Instant::now());
            self.refresh_capacity(b.capacity_busy.clone());
        }
        if b.last_gc.elapsed() >= GC_INTERVAL {
            b.last_gc = Instant::now();
            if let Err(e) = self.fs.cache().gc_packs(8) {
                tracing::warn!("pack garbage collection failed (will retry): {e}");
            }
        }
        b.next()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish()
    }
}

/// Pick up local metadata if it is current, else rebuild from the store.
/// Returns the generation the next shipment follows: never below one that
/// is in the store, readable or not, so no number is used twice.
fn prepare_metadata(
    store: &DynStore,
    codec: &BlockCodec,
    dir: &Path,
    uuid: &str,
    accept_rollback: bool,
    warnings: &mut Vec<String>,
) -> Result<u64> {
    let db = dir.join("meta.db");
    let latest = ship::latest_gen(store)?;
    if db.exists() {
        let local = Meta::open(&db)?;
        let same_fs = local.kv_get(KV_FS_UUID)?.as_deref() == Some(uuid.as_bytes());
        let gen = local
            .kv_get(KV_SHIPPED_GEN)?
            .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok())
            .unwrap_or(0);
        drop(local);
        if same_fs && gen >= latest {
            tracing::info!(gen, "using local metadata");
            return Ok(gen);
        }
        // Stale: another host wrote newer metadata. Local dirty blocks
        // belong to the old view; keep them aside rather than lose them.
        let dirty = dir.join("dirty");
        if dirty.exists() {
            let aside = dir.join(format!("stale-dirty-{}", crate::clock::unix_now()));
            let _ = std::fs::rename(&dirty, &aside);
            let w = format!(
                "local metadata (generation {gen}) is older than the store's ({latest}): \
                 rebuilt from the store; blocks never uploaded from here were moved to {}",
                aside.display()
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        let _ = std::fs::remove_dir_all(dir.join("blocks"));
    }
    let r = ship::restore(store, codec, &db)?;
    if r.is_rollback() {
        if !accept_rollback {
            // Leave no local copy claiming to be current.
            for ext in ["db", "db-wal", "db-shm"] {
                let _ = std::fs::remove_file(db.with_extension(ext));
            }
            return Err(EngineError::Rollback(r.describe()));
        }
        let meta = Meta::open(&db)?;
        let note = ship::accept_rollback(store, &meta, &r)?;
        let w = format!("{}; accepted (--accept-rollback): {note}", r.describe());
        tracing::error!("{w}");
        warnings.push(w);
    }
    tracing::info!(gen = r.gen, "metadata rebuilt from the store");
    Ok(r.gen.max(r.latest))
}

impl Engine {
    pub fn open(store: DynStore, o: &OpenOptions) -> Result<Arc<Engine>> {
        let params = read_params(&store)?;
        let key: Option<MasterKey> = params.unlock(o.passphrase.as_deref())?;
        let lease = Lease::acquire(store.clone(), o.lease_ttl, o.takeover)?;
        Self::open_locked(store.clone(), params, key, o, lease)
    }

    fn open_locked(
        store: DynStore,
        params: Params,
        key: Option<MasterKey>,
        o: &OpenOptions,
        lease: Lease,
    ) -> Result<Arc<Engine>> {
        let dir = o.cache_dir.join(&params.uuid);
        let mut warnings = Vec::new();
        let own_pool: Mutex<Option<Arc<UploadPool>>> = Mutex::new(None);
        let mut setup = || -> Result<Arc<Fs>> {
            // Plaintext lives here: root's alone, also for installs made
            // before that rule (tightened now).
            crate::secure::new_dir(&o.cache_dir)
                .and_then(|()| crate::secure::private_dir(&dir))
                .map_err(|source| EngineError::CacheDir {
                    path: dir.clone(),
                    cause: source,
                })?;
            let mcodec = meta_codec(key.as_ref());
            let gen = prepare_metadata(
                &store,
                &mcodec,
                &dir,
                &params.uuid,
                o.accept_rollback,
                &mut warnings,
            )?;
            let meta = Arc::new(Meta::open(&dir.join("meta.db"))?);
            meta.set_reserve(Arc::new(crate::meta::reserve::Reserve::new(
                &dir, "reserve",
            )));
            meta.kv_set(KV_FS_UUID, params.uuid.as_bytes())?;
            meta.start_batching()
                .map_err(|source| EngineError::CacheDir {
                    path: dir.clone(),
                    cause: source,
                })?;
            let shipper = Arc::new(Shipper::new(store.clone(), mcodec, meta.clone(), gen));
            // Claim the chain: the first link this mount writes fences off
            // any older holder of the lease, which then finds its next
            // generation taken. After a rollback (the record beside the
            // database names an older generation) it is a full snapshot
            // numbered above the damaged links.
            shipper.ship(true)?;
            let bs = params.block_size as u64;
            let cfg = CacheConfig {
                dir: dir.clone(),
                block_size: bs,
                cache_size: o.cache_size,
                dirty_limit: o.dirty_limit.min(o.cache_size),
                upload_workers: o.upload_workers,
                upload_delay: o.upload_delay,
                pack_threshold: (bs / 2).min(1 << 20),
                pack_target: (2 * bs).clamp(4 << 20, 16 << 20),
                // 16 MiB: each upload worker holds one object in memory.
                object_target: (16 << 20).max(bs),
                nospace_wait: o.nospace_wait,
            };
            let codec = BlockCodec::new(key.as_ref(), params.compression);
            let cache = Cache::new(cfg, store.clone(), codec, meta.clone(), shipper.clone())?;
            let spawn_err = |source| EngineError::CacheDir {
                path: dir.clone(),
                cause: source,
            };
            let pool = match &o.upload_pool {
                Some(p) => p.clone(),
                None => {
                    let p = UploadPool::new(o.upload_workers).map_err(spawn_err)?;
                    *own_pool.lock() = Some(p.clone());
                    p
                }
            };
            cache.start_uploads(&pool).map_err(spawn_err)?;
            let fs = Arc::new(
                Fs::new(meta, cache, shipper, o.durability)
                    .map_err(|e| EngineError::Flush(format!("cleaning orphans failed: {e}")))?,
            );
            Ok(fs)
        };
        let fs = match setup() {
            Ok(v) => v,
            Err(e) => {
                let _ = lease.release();
                return Err(e);
            }
        };
        let engine = Arc::new(Engine {
            store,
            params,
            fs,
            dir,
            lease: Mutex::new(Some(lease)),
            bg: Mutex::new(Background::new(o.metadata_interval, o.lease_ttl / 3)),
            ticket: Mutex::new(None),
            own_pool,
            closed: AtomicBool::new(false),
            warnings,
        });
        let ticket = super::ticker::ticker().register(engine.clone());
        // A WAL past its soft limit ships at once.
        let waker = ticket.waker();
        engine
            .fs
            .meta()
            .on_wal_large(Arc::new(move || waker.wake()));
        *engine.ticket.lock() = Some(ticket);
        Ok(engine)
    }

    /// Stop the background steps (waiting for one under way).
    fn stop_background(&self) {
        let ticket = self.ticket.lock().take();
        drop(ticket);
    }

    /// Read the account quota on a thread of its own: a slow HEAD must not
    /// hold up lease renewals. `busy` is cleared when done.
    fn refresh_capacity(&self, busy: Arc<AtomicBool>) {
        let (store, fs) = (self.store.clone(), self.fs.clone());
        let r = std::thread::Builder::new()
            .name("capacity".into())
            .spawn(move || {
                match store.capacity() {
                    Ok(c) => fs.set_account_capacity(c),
                    // Keep the last figure; statfs is no reason to shout.
                    Err(e) => tracing::debug!("reading the account quota failed: {e}"),
                }
                busy.store(false, Ordering::Release);
            });
        if r.is_err() {
            tracing::debug!("cannot start a thread to read the account quota");
        }
    }

    /// Upload everything and ship the metadata; `progress` gets the number
    /// of blocks still waiting, now and then.
    pub fn flush(&self, progress: &dyn Fn(usize)) -> Result<()> {
        let cache = self.fs.cache().clone();
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let c2 = cache.clone();
        let waiter = std::thread::spawn(move || {
            let r = c2.flush(None);
            d2.store(true, Ordering::Release);
            r
        });
        while !done.load(Ordering::Acquire) {
            progress(cache.dirty_count());
            std::thread::sleep(Duration::from_millis(200));
        }
        progress(0);
        waiter
            .join()
            .map_err(|_| EngineError::Flush("flush thread panicked".into()))??;
        self.fs.shipper().ship(false)?;
        Ok(())
    }

    /// The cache's figures: use, limits, upload queue, hits, last error.
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.fs.cache().stats()
    }

    /// Move the cache limits of this mount (a gateway shares one budget).
    pub fn set_cache_limits(&self, cache_size: u64, dirty_limit: u64) {
        self.fs.cache().set_limits(cache_size, dirty_limit);
    }

    /// Drop the clean (already stored) cached blocks; returns the bytes freed.
    pub fn evict_clean(&self) -> u64 {
        let before = self.fs.cache().stats().clean_bytes;
        self.fs.cache().drop_clean();
        before.saturating_sub(self.fs.cache().stats().clean_bytes)
    }

    /// How long the store's metadata has lagged behind this mount's.
    pub fn metadata_age(&self) -> Duration {
        self.fs.shipper().metadata_age()
    }

    /// The newest metadata generation in the store.
    pub fn metadata_generation(&self) -> u64 {
        self.fs.shipper().shipped_gen()
    }

    /// Files and bytes, as of now.
    pub fn usage(&self) -> Result<crate::meta::Counts> {
        self.fs
            .counts()
            .map_err(|e| EngineError::Flush(format!("reading the filesystem's figures: {e}")))
    }

    /// Clean shutdown: flush, stop background work, release the lease.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let r = self.flush(&|_| {});
        self.stop_background();
        self.fs.cache().shutdown();
        drop(self.own_pool.lock().take());
        r?;
        if let Some(l) = self.lease.lock().take() {
            l.release()?;
        }
        Ok(())
    }

    /// Stop without flushing or releasing the lease (tests simulate a crash).
    pub fn abandon(&self) {
        self.closed.store(true, Ordering::Release);
        self.stop_background();
        self.fs.cache().shutdown();
        drop(self.own_pool.lock().take());
        // What a crash loses: the uncommitted groups of operations.
        self.fs.meta().abandon_batch();
        self.fs.cache().abandon_batch();
    }
}
