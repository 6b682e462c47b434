//! The gateway daemon's core: one in-process FUSE session per connected
//! user, refcounted across Samba sessions, idle homes flushed and unmounted,
//! one cache budget shared by all mounted homes.

use super::config::{GatewayConfig, UserMapMode};
use super::usermap::{check_name, UserMap, UserSecrets};
use crate::fs::engine::{Engine, OpenOptions};
use crate::gateway::session::SmbdProcess;
use crate::store::swift::{Secret, SwiftFlags};
use crate::store::DynStore;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    UserMap(#[from] super::usermap::UserMapError),
    #[error("cannot open the store of {user} ({url}): {cause}")]
    Store {
        user: String,
        url: String,
        cause: Box<crate::store::StoreError>,
    },
    #[error("cannot mount the home of {user}: {cause}")]
    Engine {
        user: String,
        cause: Box<crate::fs::engine::EngineError>,
    },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("user {0} is disabled (`swiftgate user enable {0}` lets them in again)")]
    Disabled(String),
    #[error("user {0} was removed (`swiftgate user add {0}` brings the home back)")]
    Removed(String),
    #[error("user {0} maps to uid 0 (root): a home is never served as root")]
    Root(String),
    #[error("{0} is not a home this gateway has mounted")]
    NotAHome(PathBuf),
    #[error("{0}")]
    Command(String),
}

/// Store flags for a user: the config's [store.swift] plus, in per-user
/// mode, the user's own Keystone identity.
pub fn swift_flags(cfg: &GatewayConfig, secrets: &UserSecrets) -> SwiftFlags {
    let mut f = cfg.store.swift.clone();
    if cfg.users.mode == UserMapMode::PerUser {
        if let Some(c) = &secrets.swift {
            // The user's identity replaces the service one entirely.
            f.username = c.username.clone();
            f.user_id = c.user_id.clone();
            f.password_file = None;
            f.password = c.password.clone().map(Secret::new);
            f.project_name = c.project_name.clone().or(f.project_name);
            f.project_id = c.project_id.clone().or(f.project_id);
            if c.user_domain_name.is_some() {
                f.user_domain_name = c.user_domain_name.clone();
            }
            if c.project_domain_name.is_some() {
                f.project_domain_name = c.project_domain_name.clone();
            }
            f.application_credential_id = c.application_credential_id.clone();
            f.application_credential_secret_file = None;
            f.application_credential_secret =
                c.application_credential_secret.clone().map(Secret::new);
            if f.application_credential_id.is_some() {
                f.auth_type = Some("v3applicationcredential".into());
            }
        }
    }
    f
}

/// Open a user's store with the right credentials. In per-user mode the
/// daemon's own `OS_*` environment is not consulted for identities.
pub fn open_user_store(
    cfg: &GatewayConfig,
    user: &str,
    secrets: &UserSecrets,
) -> Result<DynStore, GatewayError> {
    let url = cfg.store_url(user);
    let opts = crate::store::OpenOptions {
        swift: swift_flags(cfg, secrets),
        ignore_env: cfg.users.mode == UserMapMode::PerUser,
    };
    crate::store::open_with(&url, &opts)
        .map(crate::store::metered::MeteredStore::wrap)
        .map_err(|source| GatewayError::Store {
            user: user.into(),
            url,
            cause: Box::new(source),
        })
}

/// Open a store with the gateway's service identity (team shares, the
/// health probe), counted like the homes' stores.
pub fn open_service_store(
    cfg: &GatewayConfig,
    url: &str,
) -> Result<DynStore, crate::store::StoreError> {
    let opts = crate::store::OpenOptions {
        swift: cfg.store.swift.clone(),
        ignore_env: false,
    };
    crate::store::open_with(url, &opts).map(crate::store::metered::MeteredStore::wrap)
}

/// A home's sessions as saved across a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedHome {
    pub user: String,
    pub sessions: Vec<Option<SmbdProcess>>,
}

struct Home {
    /// A team share: mounted while the daemon runs, never idle-unmounted.
    pinned: bool,
    engine: Arc<Engine>,
    /// Signalled once the FUSE session has ended and the engine is closed.
    ended: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    mp: PathBuf,
    /// One entry per Samba session: the smbd process that opened it, when
    /// the hook ran under one.
    sessions: Vec<Option<SmbdProcess>>,
    idle_since: Option<Instant>,
    mounted_at: Instant,
}

pub use super::api::HomeStatus;

pub struct Gateway {
    pub cfg: GatewayConfig,
    pub users: UserMap,
    pub events: super::events::Events,
    pub jobs: super::jobs::Jobs,
    pub state: super::state::State,
    pub health: super::health::Health,
    /// Serialises changes of the share list within the process.
    pub shares_lock: Mutex<()>,
    /// Errors counted for `/metrics` (failed mounts, refused requests).
    pub errors: std::sync::atomic::AtomicU64,
    pub started: Instant,
    /// Whether this is the daemon (it mounts), not a CLI command holding
    /// the state lock.
    serving: std::sync::atomic::AtomicBool,
    /// The single-writer lock of the user map and share list.
    _lock: super::lock::StateLock,
    /// The cache budget in force (config, or set online).
    budget: Mutex<(u64, u64)>,
    /// Cache hits and misses of homes unmounted since the start.
    retired_reads: Mutex<(u64, u64)>,
    homes: Mutex<HashMap<String, Home>>,
    /// Users being mounted or unmounted right now.
    busy: Mutex<HashSet<String>>,
    busy_cv: Condvar,
    stopping: std::sync::atomic::AtomicBool,
    /// Idle unmounts in progress, one thread each: a slow flush (a large
    /// upload) must not hold up the others or the serve loop.
    reapers: Mutex<HashMap<String, std::thread::JoinHandle<()>>>,
    /// The recycle bins' purges and measurements.
    pub recycle: super::recycle_job::RecycleState,
    /// Upload threads shared by every home (made at the first mount: CLI
    /// commands holding the state lock need none).
    upload_pool: std::sync::OnceLock<Arc<crate::cache::UploadPool>>,
}

impl Gateway {
    /// The gateway state, owned through `lock` (see [`super::lock`]).
    pub fn new(
        cfg: GatewayConfig,
        lock: super::lock::StateLock,
    ) -> Result<Arc<Gateway>, GatewayError> {
        let users = UserMap::open(&cfg.users.db, &cfg.users.key_file)?;
        let state = super::state::State::load(&cfg.cache.dir);
        let budget = state
            .get()
            .cache_budget
            .unwrap_or((cfg.cache.size, cfg.cache.dirty_limit));
        Ok(Arc::new(Gateway {
            cfg,
            users,
            events: Default::default(),
            jobs: Default::default(),
            state,
            health: Default::default(),
            shares_lock: Mutex::new(()),
            errors: 0.into(),
            started: Instant::now(),
            serving: false.into(),
            _lock: lock,
            budget: Mutex::new(budget),
            retired_reads: Mutex::new((0, 0)),
            homes: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            busy_cv: Condvar::new(),
            stopping: false.into(),
            reapers: Mutex::new(HashMap::new()),
            recycle: Default::default(),
            upload_pool: std::sync::OnceLock::new(),
        }))
    }

    /// A Samba session of `user` starts: mount their home if needed.
    /// Returns once the home is usable.
    pub fn connect(
        self: &Arc<Self>,
        user: &str,
        smbd: Option<SmbdProcess>,
    ) -> Result<(), GatewayError> {
        check_name(user)?;
        // Asked at every session, mounted or not: `user disable` and
        // `user remove` take effect at once.
        self.may_connect(user)?;
        loop {
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return Err(GatewayError::ShuttingDown);
            }
            {
                let mut homes = self.homes.lock();
                if let Some(h) = homes.get_mut(user) {
                    if h.engine.fs.superseded() {
                        // Read-only here and unmounted once its sessions end.
                        return Err(GatewayError::Command(format!(
                            "the home of {user} was taken over by another gateway (this one lost its lease): connect to that gateway"
                        )));
                    }
                    h.sessions.push(smbd);
                    h.idle_since = None;
                    return Ok(());
                }
            }
            let mut m = self.busy.lock();
            if m.contains(user) {
                // Another session of the same user is mounting: wait for it.
                self.busy_cv.wait_for(&mut m, Duration::from_millis(200));
                continue;
            }
            m.insert(user.to_string());
            drop(m);
            let res = self.mount(user, smbd);
            let mut m = self.busy.lock();
            m.remove(user);
            self.busy_cv.notify_all();
            drop(m);
            return res;
        }
    }

    /// Whether the user map lets `user` start a session now.
    fn may_connect(&self, user: &str) -> Result<(), GatewayError> {
        let (e, _) = self.users.get(user)?;
        let unix_uid = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw());
        if e.removed {
            Err(GatewayError::Removed(user.into()))
        } else if e.disabled {
            Err(GatewayError::Disabled(user.into()))
        } else if e.uid == 0 || unix_uid == Some(0) {
            Err(GatewayError::Root(user.into()))
        } else {
            Ok(())
        }
    }

    /// A Samba session of `user` ends.
    pub fn disconnect(&self, user: &str, smbd: Option<SmbdProcess>) {
        let mut homes = self.homes.lock();
        if let Some(h) = homes.get_mut(user) {
            // This smbd's session, else one of unknown process, else any.
            let i = h
                .sessions
                .iter()
                .position(|s| *s == smbd)
                .or_else(|| h.sessions.iter().position(|s| s.is_none()))
                .or((!h.sessions.is_empty()).then_some(0));
            if let Some(i) = i {
                h.sessions.remove(i);
            }
            if h.sessions.is_empty() {
                h.idle_since = Some(Instant::now());
            }
        }
    }

    /// Drop the sessions whose smbd process is gone (killed or crashed:
    /// its `root postexec` never ran).
    fn drop_dead_sessions(&self) {
        let mut homes = self.homes.lock();
        for (u, h) in homes.iter_mut() {
            let before = h.sessions.len();
            h.sessions.retain(|s| match s {
                Some(p) if !p.alive() => {
                    tracing::warn!(
                        user = %u,
                        pid = p.pid,
                        "smbd process ended without disconnecting (killed or crashed): session dropped"
                    );
                    false
                }
                _ => true,
            });
            if before > 0 && h.sessions.is_empty() {
                h.idle_since = Some(Instant::now());
            }
        }
    }

    /// The homes' shared upload threads: twice one home's uploads in
    /// flight, so two busy homes upload at full speed at once, and a fixed
    /// number however many homes are mounted.
    fn upload_pool(&self) -> Result<Arc<crate::cache::UploadPool>, GatewayError> {
        if let Some(p) = self.upload_pool.get() {
            return Ok(p.clone());
        }
        let p = crate::cache::UploadPool::new((2 * self.cfg.cache.upload_workers).max(4))
            .map_err(|e| GatewayError::Command(format!("cannot start the upload threads: {e}")))?;
        Ok(self.upload_pool.get_or_init(|| p).clone())
    }

    fn cache_share(&self, homes: usize) -> (u64, u64) {
        let n = homes.max(1) as u64;
        let (size, dirty) = *self.budget.lock();
        ((size / n).max(64 << 20), (dirty / n).max(32 << 20))
    }

    /// The global cache budget in force: (size, dirty limit).
    pub fn budget(&self) -> (u64, u64) {
        *self.budget.lock()
    }

    /// Change the global budget and give every mounted home its share now.
    pub fn set_budget(&self, size: u64, dirty: u64) {
        *self.budget.lock() = (size, dirty);
        self.rebalance(&self.homes.lock());
    }

    /// Give every mounted home an equal share of the global budget.
    fn rebalance(&self, homes: &HashMap<String, Home>) {
        let (size, dirty) = self.cache_share(homes.len());
        for h in homes.values() {
            h.engine.set_cache_limits(size, dirty);
        }
    }

    /// The engines of the mounted homes and shares (key: user or `share:NAME`).
    pub fn engines(&self) -> Vec<(String, Arc<Engine>)> {
        let mut v: Vec<_> = self
            .homes
            .lock()
            .iter()
            .map(|(u, h)| (u.clone(), h.engine.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Sessions and engine of every mounted home and share, at once.
    pub fn mounted_info(&self) -> HashMap<String, (usize, Arc<Engine>)> {
        self.homes
            .lock()
            .iter()
            .map(|(u, h)| (u.clone(), (h.sessions.len(), h.engine.clone())))
            .collect()
    }

    /// Block reads served from the cache and fetched from the store, since
    /// the daemon started (homes unmounted since included).
    pub fn read_counts(&self) -> (u64, u64) {
        let (mut hits, mut misses) = *self.retired_reads.lock();
        for h in self.homes.lock().values() {
            let s = h.engine.cache_stats();
            hits += s.read_hits;
            misses += s.fetched_blocks;
        }
        (hits, misses)
    }

    /// Where each mounted home and share is (key: user or `share:NAME`).
    pub fn mounts(&self) -> Vec<(String, PathBuf)> {
        let mut v: Vec<_> = self
            .homes
            .lock()
            .iter()
            .map(|(k, h)| (k.clone(), h.mp.clone()))
            .collect();
        v.sort();
        v
    }

    pub fn mountpoint_of(&self, key: &str) -> Option<PathBuf> {
        self.homes.lock().get(key).map(|h| h.mp.clone())
    }

    /// Open sessions of a mounted home (None: not mounted).
    pub fn sessions_of(&self, key: &str) -> Option<usize> {
        self.homes.lock().get(key).map(|h| h.sessions.len())
    }

    /// Whether a mount or unmount of `key` is under way.
    pub fn is_busy(&self, key: &str) -> bool {
        self.busy.lock().contains(key)
    }

    fn mount(self: &Arc<Self>, user: &str, smbd: Option<SmbdProcess>) -> Result<(), GatewayError> {
        let r = self.mount_user(user, smbd);
        match &r {
            Ok(()) => self.events.info(user, "home mounted"),
            Err(e) => {
                self.errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.events.error(user, format!("mount failed: {e}"));
            }
        }
        r
    }

    fn mount_user(
        self: &Arc<Self>,
        user: &str,
        smbd: Option<SmbdProcess>,
    ) -> Result<(), GatewayError> {
        let (entry, secrets) = self.users.get(user)?;
        let store = open_user_store(&self.cfg, user, &secrets)?;
        let mp = self.cfg.mountpoint(user);
        prepare_mountpoint(&mp)?;
        let quota = entry.quota;
        let r = self.mount_fs(
            MountSpec {
                key: user.to_string(),
                cache_dir: self.cfg.cache.dir.join(user),
                store,
                mp,
                passphrase: secrets.passphrase.clone(),
                owner: (entry.uid, entry.gid),
                root_mode: 0o700,
                pinned: false,
                quota,
            },
            vec![smbd],
        );
        // A quota changed while this mount was under way found no engine
        // to push to: it is read again now.
        if r.is_ok() {
            if let Ok((e, _)) = self.users.get(user) {
                if e.quota != quota {
                    self.push_quota(user, e.quota);
                }
            }
        }
        r
    }

    /// Mount a team share (it stays mounted until removed or shutdown).
    pub fn mount_share(
        self: &Arc<Self>,
        name: &str,
        store: DynStore,
        passphrase: Option<String>,
        gid: u32,
        quota: crate::fs::quota::Quota,
    ) -> Result<(), GatewayError> {
        let key = share_key(name);
        {
            let mut m = self.busy.lock();
            if self.homes.lock().contains_key(&key) || m.contains(&key) {
                return Ok(());
            }
            m.insert(key.clone());
        }
        let mp = self.cfg.share_mountpoint(name);
        let r = prepare_mountpoint(&mp).and_then(|()| {
            self.mount_fs(
                MountSpec {
                    key: key.clone(),
                    cache_dir: self.cfg.cache.dir.join("+shares").join(name),
                    store,
                    mp,
                    passphrase,
                    owner: (0, gid),
                    // Members share everything; new entries keep the group.
                    root_mode: 0o2770,
                    pinned: true,
                    quota,
                },
                Vec::new(),
            )
        });
        let mut m = self.busy.lock();
        m.remove(&key);
        self.busy_cv.notify_all();
        drop(m);
        match &r {
            Ok(()) => self.events.info(&key, "team share mounted"),
            Err(e) => {
                self.errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.events.error(&key, format!("mount failed: {e}"));
            }
        }
        r
    }

    fn mount_fs(
        self: &Arc<Self>,
        spec: MountSpec,
        sessions: Vec<Option<SmbdProcess>>,
    ) -> Result<(), GatewayError> {
        let started = Instant::now();
        let MountSpec {
            key,
            cache_dir,
            store,
            mp,
            passphrase,
            owner,
            root_mode,
            pinned,
            quota,
        } = spec;
        let user = key.as_str();
        let n = self.homes.lock().len() + 1;
        let (cache_size, dirty_limit) = self.cache_share(n);
        let pool = self.upload_pool()?;
        let open = |takeover: bool| {
            Engine::open(
                store.clone(),
                &OpenOptions {
                    cache_dir: cache_dir.clone(),
                    cache_size,
                    dirty_limit,
                    upload_workers: self.cfg.cache.upload_workers,
                    upload_pool: Some(pool.clone()),
                    upload_delay: Duration::from_secs(2),
                    durability: self
                        .cfg
                        .fs
                        .durability
                        .parse()
                        .unwrap_or(crate::fs::Durability::Local),
                    metadata_interval: self.cfg.fs.metadata_interval,
                    lease_ttl: Duration::from_secs(60),
                    takeover,
                    passphrase: passphrase.clone().map(String::into_bytes),
                    // A home whose newest metadata is damaged stays unmounted
                    // until an admin decides (fsck --accept-rollback).
                    accept_rollback: false,
                    nospace_wait: crate::fs::engine::DEFAULT_NOSPACE_WAIT,
                },
            )
        };
        // A home whose lease expired in the hands of the gateway this one
        // was restored from (`swiftgate recovery restore`) is taken over:
        // that gateway is gone. Any other holder's lease is left to the
        // admin (`mount --takeover`), and a live one is always refused.
        let engine = match open(false) {
            Err(crate::fs::engine::EngineError::Lease(
                crate::meta::lease::LeaseError::Expired { host, .. },
            )) if self.state.get().replaces_host.as_deref() == Some(host.as_str()) => {
                tracing::warn!(user, old_host = %host, "taking over the expired lease of the gateway this one replaces");
                open(true)
            }
            r => r,
        }
        .map_err(|source| GatewayError::Engine {
            user: user.into(),
            cause: Box::new(source),
        })?;
        for w in &engine.warnings {
            tracing::warn!(user, "{w}");
        }
        // Before the first request: nothing may get past it.
        engine.fs.set_quota(quota);
        let settings = crate::fs::fuse::MountSettings {
            allow_other: true,
            devices_and_setuid: false,
            concurrency: 8,
        };
        let session = match crate::fs::fuse::session(&engine, &mp, &settings) {
            Ok(s) => s,
            Err(e) => {
                let _ = engine.close();
                return Err(GatewayError::Io { path: mp, cause: e });
            }
        };
        // Served by the process's shared FUSE readers; when the session
        // ends (unmounted), the engine is closed and `ended` signalled.
        let (ended_tx, ended) = std::sync::mpsc::sync_channel(1);
        let served = {
            let engine = engine.clone();
            let user = user.to_string();
            // A device error is logged by the reader; the home ends as
            // if unmounted (the hook mounts it again when asked).
            crate::fs::fuse_readers::serve(session, move |_| {
                if let Err(e) = engine.close() {
                    tracing::error!(user, "closing the home failed: {e}");
                }
                let _ = ended_tx.send(());
            })
        };
        if let Err(e) = served {
            // The session is gone (unmounted with it): close what it held.
            let _ = engine.close();
            return Err(GatewayError::Io { path: mp, cause: e });
        }
        {
            // The home's root belongs to its user, closed to everyone else
            // (asked only now: the FUSE readers serve the request).
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            if let Ok(m) = std::fs::metadata(&mp) {
                if m.uid() != owner.0 || m.gid() != owner.1 {
                    let _ = std::os::unix::fs::chown(&mp, Some(owner.0), Some(owner.1));
                }
                if m.mode() & 0o7777 != root_mode {
                    let _ =
                        std::fs::set_permissions(&mp, std::fs::Permissions::from_mode(root_mode));
                }
            }
        }
        let mut homes = self.homes.lock();
        homes.insert(
            user.to_string(),
            Home {
                pinned,
                engine,
                ended: Mutex::new(Some(ended)),
                mp: mp.clone(),
                sessions,
                idle_since: None,
                mounted_at: Instant::now(),
            },
        );
        self.rebalance(&homes);
        drop(homes);
        tracing::info!(user, mountpoint = %mp.display(), ms = started.elapsed().as_millis() as u64, "home mounted");
        // What expired while it was not mounted goes now.
        super::recycle_job::after_mount(self, user);
        Ok(())
    }

    /// A changed quota reaches the mounted engine at once (no remount):
    /// true if `key` (a user, or `share:NAME`) is mounted.
    pub fn push_quota(&self, key: &str, q: crate::fs::quota::Quota) -> bool {
        match self.homes.lock().get(key) {
            Some(h) => {
                h.engine.fs.set_quota(q);
                true
            }
            None => false,
        }
    }

    /// Flush and unmount one home (on request).
    pub fn unmount(&self, user: &str) -> Result<bool, GatewayError> {
        self.unmount_if(user, false)
    }

    /// With `idle_only`, a home that got a session (or was used) since it
    /// was found idle stays mounted.
    fn unmount_if(&self, user: &str, idle_only: bool) -> Result<bool, GatewayError> {
        // Busy while unmounting: a connect arriving now waits for the old
        // session to release the lease and the cache, then mounts again.
        {
            let mut m = self.busy.lock();
            while m.contains(user) {
                self.busy_cv.wait_for(&mut m, Duration::from_millis(200));
            }
            m.insert(user.to_string());
        }
        let home = {
            let mut homes = self.homes.lock();
            let still_idle = homes
                .get(user)
                .is_some_and(|h| h.sessions.is_empty() && self.due_for_unmount(h));
            let h = if idle_only && !still_idle {
                None
            } else {
                homes.remove(user)
            };
            self.rebalance(&homes);
            h
        };
        let done = || {
            let mut m = self.busy.lock();
            m.remove(user);
            self.busy_cv.notify_all();
        };
        let Some(h) = home else {
            done();
            return Ok(false);
        };
        // Upload first, while the mount still serves (a slow store does not
        // block other users' connects).
        self.record_usage(user, &h.engine);
        if let Err(e) = h.engine.flush(&|_| {}) {
            tracing::warn!(
                user,
                "flush before unmount failed (the unmount retries it): {e}"
            );
        }
        // A plain umount(2): the kernel then ends the FUSE session, and its
        // end closes the engine (`ended`). (fuser's unmounter is single-
        // use: after a busy failure a retry through it did nothing.)
        let unmounted = nix::mount::umount2(&h.mp, nix::mount::MntFlags::empty());
        if let Err(e) = unmounted {
            // Busy (a local process has a file open): a lazy detach would
            // leave the session running with nobody to flush it. Keep the
            // home and try again after another idle period.
            tracing::warn!(
                user,
                "unmount failed, keeping the home mounted for now: {e}"
            );
            let mut homes = self.homes.lock();
            let mut h = h;
            h.idle_since = Some(Instant::now());
            homes.insert(user.to_string(), h);
            self.rebalance(&homes);
            drop(homes);
            done();
            return Ok(false);
        }
        if let Some(ended) = h.ended.lock().take() {
            let _ = ended.recv();
        }
        drop(h);
        // A home's freed memory sits in the allocator's arenas, spread
        // among live data of other homes: hand what it can back.
        // SAFETY: malloc_trim only releases free memory.
        unsafe {
            libc::malloc_trim(0);
        }
        done();
        tracing::info!(user, "home unmounted");
        self.events.info(user, "unmounted");
        Ok(true)
    }

    /// Idle past the timeout, or taken over by another gateway (it is
    /// read-only and can store nothing more: it goes once its sessions end).
    fn due_for_unmount(&self, h: &Home) -> bool {
        h.engine.fs.superseded()
            || h.idle_since
                .is_some_and(|t| t.elapsed() >= self.cfg.mounts.idle_unmount)
    }

    /// Keep a home's figures for when it is not mounted.
    fn record_usage(&self, key: &str, engine: &Engine) {
        {
            let s = engine.cache_stats();
            let mut r = self.retired_reads.lock();
            r.0 += s.read_hits;
            r.1 += s.fetched_blocks;
        }
        if let Ok(c) = engine.usage() {
            let u = usage_of(&c);
            if let Err(e) = self.state.update(|s| {
                s.usage.insert(key.to_string(), u);
            }) {
                tracing::warn!(user = key, "cannot record the home's usage: {e}");
            }
        }
    }

    /// Unmount homes idle longer than the configured timeout, each in a
    /// thread of its own.
    pub fn reap_idle(self: &Arc<Self>) {
        self.drop_dead_sessions();
        let mut reapers = self.reapers.lock();
        reapers.retain(|_, t| !t.is_finished());
        let idle: Vec<String> = {
            let homes = self.homes.lock();
            homes
                .iter()
                .filter(|(_, h)| !h.pinned && h.sessions.is_empty() && self.due_for_unmount(h))
                .map(|(u, _)| u.clone())
                .collect()
        };
        for u in idle {
            if reapers.contains_key(&u) {
                continue;
            }
            tracing::info!(user = %u, "idle: unmounting");
            let gw = self.clone();
            let user = u.clone();
            let t = std::thread::Builder::new()
                .name(format!("unmount-{u}"))
                .spawn(move || {
                    if let Err(e) = gw.unmount_if(&user, true) {
                        tracing::error!(user = %user, "idle unmount failed: {e}");
                    }
                });
            match t {
                Ok(t) => {
                    reapers.insert(u, t);
                }
                Err(e) => tracing::error!(user = %u, "cannot start an unmount thread: {e}"),
            }
        }
    }

    pub fn status(&self) -> Vec<HomeStatus> {
        let homes = self.homes.lock();
        let mut v: Vec<HomeStatus> = homes
            .iter()
            .map(|(u, h)| HomeStatus {
                user: u.clone(),
                mountpoint: h.mp.clone(),
                store: h.engine.store.url(),
                connections: h.sessions.len(),
                smbd_pids: h.sessions.iter().flatten().map(|p| p.pid).collect(),
                idle_secs: h.idle_since.map(|t| t.elapsed().as_secs()),
                mounted_secs: h.mounted_at.elapsed().as_secs(),
                cache: h.engine.cache_stats(),
                metadata_age_secs: Some(h.engine.metadata_age().as_secs()),
                metadata_generation: h.engine.metadata_generation(),
                quota: h.engine.fs.quota(),
                quota_use: (!h.engine.fs.quota().is_none())
                    .then(|| h.engine.fs.usage().ok())
                    .flatten(),
            })
            .collect();
        v.sort_by(|a, b| a.user.cmp(&b.user));
        v
    }

    /// Users with live sessions, to re-establish after a daemon restart
    /// (an idle home is not: nobody would end its session).
    pub fn connected(&self) -> Vec<SavedHome> {
        let mut v: Vec<SavedHome> = self
            .homes
            .lock()
            .iter()
            .filter(|(_, h)| !h.sessions.is_empty())
            .map(|(u, h)| SavedHome {
                user: u.clone(),
                sessions: h.sessions.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.user.cmp(&b.user));
        v
    }

    /// Restore sessions recorded before a restart (those whose smbd has
    /// gone since are dropped at the next idle check).
    pub fn restore(self: &Arc<Self>, saved: &[SavedHome]) {
        for s in saved.iter().filter(|s| !s.sessions.is_empty()) {
            match self.connect(&s.user, None) {
                Ok(()) => {
                    let mut homes = self.homes.lock();
                    if let Some(h) = homes.get_mut(&s.user) {
                        h.sessions = s.sessions.clone();
                    }
                    tracing::info!(user = %s.user, sessions = s.sessions.len(), "re-established after restart");
                }
                Err(e) => tracing::error!(user = %s.user, "could not re-establish the home: {e}"),
            }
        }
    }

    /// `swiftgate stat` / `ctl` on a mounted home, found by its mountpoint.
    pub fn home_command(
        &self,
        mountpoint: &Path,
        cmd: crate::fs::commands::MountCommand,
    ) -> Result<serde_json::Value, GatewayError> {
        let want = mountpoint
            .canonicalize()
            .unwrap_or_else(|_| mountpoint.to_path_buf());
        // The engine, not the lock: a flush may take long.
        let engine = self
            .homes
            .lock()
            .values()
            .find(|h| h.mp == want || h.mp.canonicalize().is_ok_and(|p| p == want))
            .map(|h| h.engine.clone())
            .ok_or(GatewayError::NotAHome(want))?;
        crate::fs::commands::run(&engine, cmd, &|_| {}).map_err(GatewayError::Command)
    }

    /// This process is the daemon (it serves mounts).
    pub fn set_serving(&self) {
        self.serving
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn serving(&self) -> bool {
        self.serving.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Flush and unmount everything (SIGTERM).
    pub fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        // Idle unmounts already under way finish first (their homes have
        // left the list below).
        let reapers: Vec<_> = self.reapers.lock().drain().collect();
        for (_, t) in reapers {
            let _ = t.join();
        }
        super::recycle_job::wait_idle(self);
        let users: Vec<String> = self.homes.lock().keys().cloned().collect();
        for u in users {
            if let Err(e) = self.unmount(&u) {
                tracing::error!(user = %u, "unmount at shutdown failed: {e}");
            }
        }
        // Still busy: detach. Everything was flushed above; what a process
        // writes from now on stays in the cache and uploads next mount.
        for (u, h) in self.homes.lock().iter() {
            tracing::warn!(user = %u, "home busy at shutdown: detaching it");
            let _ = nix::mount::umount2(&h.mp, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// What to mount where, as whom.
struct MountSpec {
    key: String,
    cache_dir: PathBuf,
    store: DynStore,
    mp: PathBuf,
    passphrase: Option<String>,
    /// Owner of the mount's root (uid, gid) and its mode.
    owner: (u32, u32),
    root_mode: u32,
    pinned: bool,
    quota: crate::fs::quota::Quota,
}

/// The key of a team share among the mounted filesystems (':' is never
/// in a user name).
pub fn share_key(name: &str) -> String {
    format!("share:{name}")
}

pub fn usage_of(c: &crate::meta::Counts) -> super::api::Usage {
    super::api::Usage {
        files: c.inodes,
        logical_bytes: c.file_bytes,
        referenced_bytes: c.logical_bytes,
        unique_bytes: c.unique_bytes,
        stored_bytes: c.stored_bytes,
        at_unix: crate::clock::unix_now(),
    }
}

/// stat(2) that asks a FUSE server even when the kernel still holds the
/// attributes: a mount whose daemon was just killed answers a plain stat
/// from that cache, and the dead mount is only found when mounting over it
/// fails with ENOTCONN.
fn stat_uncached(p: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C path and a zeroed statx buffer the call fills.
    let r = unsafe {
        let mut buf: libc::statx = std::mem::zeroed();
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_BASIC_STATS,
            &mut buf,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Create the mountpoint; detach a dead FUSE mount left by a crash.
fn prepare_mountpoint(mp: &Path) -> Result<(), GatewayError> {
    let io = |source| GatewayError::Io {
        path: mp.to_path_buf(),
        cause: source,
    };
    match stat_uncached(mp) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(mountpoint = %mp.display(), "detaching a dead mount left by a crash");
            nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| io(std::io::Error::from_raw_os_error(e as i32)))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // smbd enters the mount root as each user: passable, while a
            // home's directory is root's until its mount covers it.
            if let Some(root) = mp.parent() {
                crate::secure::passable_dir(root).map_err(io)?;
            }
            crate::secure::new_dir(mp).map_err(io)?;
        }
        Err(e) => return Err(io(e)),
    }
    Ok(())
}
