//! The server side of the typed API: every [`Request`] dispatched to the
//! daemon's parts, every error typed with the field at fault. The control
//! socket and the console call it; a CLI command holding the state lock
//! (no daemon running) calls it in process.

use super::api::*;
use super::daemon::{share_key, Gateway, GatewayError};
use super::shares::{self, ShareError};
use super::snapshots;
use super::usermap::UserMapError;
use super::users::{self, UsersError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Service {
    gw: Arc<Gateway>,
    /// The state backups: only the daemon makes them (the single writer).
    backups: std::sync::OnceLock<Arc<super::recovery::Backups>>,
}

impl Service {
    pub fn new(gw: Arc<Gateway>) -> Service {
        Service {
            gw,
            backups: std::sync::OnceLock::new(),
        }
    }

    pub fn set_backups(&self, b: Arc<super::recovery::Backups>) {
        let _ = self.backups.set(b);
    }

    fn backups(&self) -> Result<&Arc<super::recovery::Backups>, ApiError> {
        self.need_daemon()?;
        self.backups
            .get()
            .ok_or_else(|| ApiError::new(ErrorKind::Internal, "the state backups are not running"))
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }
}

fn map_err(e: &UserMapError) -> ApiError {
    match e {
        UserMapError::NoSuchUser(_) => ApiError::new(ErrorKind::NotFound, e.to_string()).at("user"),
        UserMapError::BadName(_) => ApiError::invalid("user", e.to_string()),
        _ => ApiError::new(ErrorKind::Internal, e.to_string()),
    }
}

fn gateway_err(e: &GatewayError) -> ApiError {
    let k = |kind| ApiError::new(kind, e.to_string());
    match e {
        GatewayError::UserMap(m) => map_err(m),
        GatewayError::Store { .. } | GatewayError::Engine { .. } | GatewayError::ShuttingDown => {
            k(ErrorKind::Unavailable)
        }
        GatewayError::Disabled(_) | GatewayError::Removed(_) => k(ErrorKind::Conflict).at("user"),
        GatewayError::Root(_) => k(ErrorKind::Invalid).at("user"),
        GatewayError::NotAHome(_) => k(ErrorKind::NotFound).at("mountpoint"),
        GatewayError::Io { .. } | GatewayError::Command(_) => k(ErrorKind::Internal),
    }
}

fn users_err(e: &UsersError) -> ApiError {
    let k = |kind| ApiError::new(kind, e.to_string());
    match e {
        UsersError::Map(m) => map_err(m),
        UsersError::Gateway(g) => gateway_err(g),
        UsersError::Samba(_) => k(ErrorKind::Unavailable),
        UsersError::Exists(_)
        | UsersError::Removed(_)
        | UsersError::Foreign { .. }
        | UsersError::ForeignAccount { .. } => k(ErrorKind::Conflict).at("user"),
        UsersError::NeedCredentials(_) => k(ErrorKind::Invalid).at("credentials"),
        UsersError::Root(_) => k(ErrorKind::Invalid).at("user"),
        UsersError::Mkfs { .. } => k(ErrorKind::Unavailable),
        UsersError::Command { .. } | UsersError::Run(_) | UsersError::SambaKept { .. } => {
            k(ErrorKind::Internal)
        }
    }
}

fn quota_err(e: &super::quotas::QuotaError) -> ApiError {
    use super::quotas::QuotaError;
    match e {
        QuotaError::Map(m) => map_err(m),
        QuotaError::Share(s) => share_err(s),
    }
}

fn share_err(e: &ShareError) -> ApiError {
    let k = |kind| ApiError::new(kind, e.to_string());
    match e {
        ShareError::Invalid { field, .. } => k(ErrorKind::Invalid).at(field),
        ShareError::NotFound(_) => k(ErrorKind::NotFound).at("name"),
        ShareError::Exists(_) => k(ErrorKind::Conflict).at("name"),
        ShareError::NeedServiceIdentity => k(ErrorKind::Conflict),
        ShareError::Store { .. } => k(ErrorKind::Unavailable),
        ShareError::Gateway(g) => gateway_err(g),
        ShareError::Map(m) => map_err(m),
        ShareError::Io { .. } | ShareError::Command { .. } | ShareError::Run(_) => {
            k(ErrorKind::Internal)
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, e.to_string())
}

fn done(message: impl Into<String>) -> Result<Response, ApiError> {
    Ok(Response::Done {
        message: message.into(),
    })
}

/// Samba passwords go to smbpasswd on stdin, one per line.
fn check_password(p: &Secret) -> Result<(), ApiError> {
    if p.expose().is_empty() {
        return Err(ApiError::invalid("password", "the password is empty"));
    }
    if p.expose().contains(['\n', '\r', '\0']) {
        return Err(ApiError::invalid(
            "password",
            "the password must be one line (no newline or NUL characters)",
        ));
    }
    Ok(())
}

impl GatewayApi for Service {
    fn call(&self, req: Request) -> Result<Response, ApiError> {
        let op = req.op();
        let r = self.dispatch(req);
        if let Err(e) = &r {
            if matches!(e.kind, ErrorKind::Internal | ErrorKind::Unavailable) {
                self.gw.errors.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(op, "request refused: {}", e.message);
        }
        r
    }
}

impl Service {
    fn need_daemon(&self) -> Result<(), ApiError> {
        if self.gw.serving() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::NotRunning,
                "the gateway daemon is not running: homes are mounted only by it (start it with `swiftgate serve`)",
            ))
        }
    }

    fn engine_of(&self, user: &str) -> Result<Arc<crate::fs::engine::Engine>, ApiError> {
        self.gw
            .engines()
            .into_iter()
            .find(|(k, _)| k == user)
            .map(|(_, e)| e)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::Conflict,
                    format!("the home of {user} is not mounted"),
                )
                .at("user")
            })
    }

    fn dispatch(&self, req: Request) -> Result<Response, ApiError> {
        let gw = &self.gw;
        match req {
            Request::Ping => Ok(Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
                api: API_VERSION,
            }),
            Request::Connect { user, smbd } => {
                self.need_daemon()?;
                let t = std::time::Instant::now();
                match gw.connect(&user, smbd) {
                    Ok(()) => Ok(Response::Connected {
                        ms: t.elapsed().as_millis() as u64,
                    }),
                    Err(e) => {
                        // Samba only sees the exit status: the reason goes here.
                        tracing::error!(user, "refusing the connection: {e}");
                        gw.events.error(&user, format!("connection refused: {e}"));
                        Err(gateway_err(&e))
                    }
                }
            }
            Request::Disconnect { user, smbd } => {
                self.need_daemon()?;
                gw.disconnect(&user, smbd);
                done("session ended")
            }
            Request::Overview => Ok(Response::Overview(Box::new(self.overview()?))),
            Request::Homes => Ok(Response::Homes(gw.status())),
            Request::Users { query } => Ok(Response::Users(self.users(&query)?)),
            Request::User { user } => Ok(Response::User(Box::new(self.user(&user)?))),
            Request::UserAdd(a) => {
                super::usermap::check_name(&a.user).map_err(|e| map_err(&e))?;
                check_password(&a.password)?;
                let msg = users::add(
                    &gw.cfg,
                    &gw.users,
                    &a.user,
                    users::AddOptions {
                        password: a.password.expose().to_string(),
                        credentials: a.credentials.clone(),
                        adopt: a.adopt,
                    },
                )
                .map_err(|e| users_err(&e))?;
                gw.events.info(&a.user, "user added");
                done(msg)
            }
            Request::UserSetDisabled { user, disabled } => {
                let msg = users::set_disabled(&gw.cfg, &gw.users, &user, disabled)
                    .map_err(|e| users_err(&e))?;
                gw.events.info(
                    &user,
                    if disabled {
                        "user disabled"
                    } else {
                        "user enabled"
                    },
                );
                done(msg)
            }
            Request::UserRemove { user, purge } => {
                gw.users.get(&user).map_err(|e| map_err(&e))?;
                if gw.jobs.running("remove-user", &user).is_some() {
                    return Err(ApiError::new(
                        ErrorKind::Conflict,
                        format!("{user} is being removed already"),
                    )
                    .at("user"));
                }
                let g = gw.clone();
                let g2 = gw.clone();
                let u = user.clone();
                let j = gw
                    .jobs
                    .start(
                        "remove-user",
                        &user,
                        move |p| {
                            users::remove(
                                &g.cfg,
                                &g.users,
                                &u,
                                purge,
                                &|who| {
                                    if let Err(e) = g.unmount(who) {
                                        tracing::warn!(user = who, "unmount before removal: {e}");
                                    }
                                },
                                &|phase, d, t| p.set(phase, d, t),
                            )
                            .map_err(|e| e.to_string())
                        },
                        move |j| job_event(&g2, j),
                    )
                    .map_err(internal)?;
                Ok(Response::Job(j))
            }
            Request::UserPasswd {
                user,
                password,
                credentials,
            } => {
                if let Some(p) = &password {
                    check_password(p)?;
                }
                if password.is_none() && credentials.is_none() {
                    return Err(ApiError::invalid(
                        "password",
                        "give a new password, new credentials, or both",
                    ));
                }
                users::passwd(
                    &gw.cfg,
                    &gw.users,
                    &user,
                    password.as_ref().map(|p| p.expose()),
                    credentials,
                )
                .map_err(|e| users_err(&e))?;
                gw.events.info(&user, "password or credentials changed");
                done(format!("updated {user}"))
            }
            Request::Mount { user } => {
                self.need_daemon()?;
                gw.connect(&user, None).map_err(|e| {
                    gw.events.error(&user, format!("mount refused: {e}"));
                    gateway_err(&e)
                })?;
                // No session of its own: it unmounts when idle like any home.
                gw.disconnect(&user, None);
                done(format!("the home of {user} is mounted"))
            }
            Request::Unmount { user } => {
                self.need_daemon()?;
                if gw.sessions_of(&user).unwrap_or(0) > 0 {
                    return Err(ApiError::new(
                        ErrorKind::Conflict,
                        format!(
                            "{user} has open SMB sessions: the home stays mounted until they end"
                        ),
                    )
                    .at("user"));
                }
                let was = gw.unmount(&user).map_err(|e| gateway_err(&e))?;
                done(if was {
                    format!("the home of {user} is unmounted")
                } else {
                    format!("the home of {user} was not mounted (or is still busy)")
                })
            }
            Request::Flush { user } => {
                self.need_daemon()?;
                let engine = self.engine_of(&user)?;
                if let Some(j) = gw.jobs.running("flush", &user) {
                    return Ok(Response::Job(j));
                }
                let g2 = gw.clone();
                let j = gw
                    .jobs
                    .start(
                        "flush",
                        &user,
                        move |p| {
                            let total = engine.cache_stats().dirty_blocks;
                            p.set("uploading", 0, total);
                            engine
                                .flush(&|left| {
                                    let left = left as u64;
                                    p.set("uploading", total.saturating_sub(left), total.max(left));
                                })
                                .map_err(|e| e.to_string())?;
                            p.set("uploading", total, total);
                            Ok(format!(
                                "flushed: {total} blocks uploaded, metadata generation {} stored",
                                engine.metadata_generation()
                            ))
                        },
                        move |j| job_event(&g2, j),
                    )
                    .map_err(internal)?;
                Ok(Response::Job(j))
            }
            Request::Fsck { user, verify_data } => self.fsck(user, verify_data),
            Request::HomeCommand {
                mountpoint,
                command,
            } => {
                self.need_daemon()?;
                gw.home_command(&mountpoint, command)
                    .map(Response::Value)
                    .map_err(|e| gateway_err(&e))
            }
            Request::Shares => Ok(Response::Shares(
                shares::status(gw, true).map_err(|e| share_err(&e))?,
            )),
            Request::ShareAdd(spec) => shares::add(gw, &spec)
                .map(|m| Response::Done { message: m })
                .map_err(|e| share_err(&e)),
            Request::ShareUpdate(spec) => shares::update(gw, &spec)
                .map(|m| Response::Done { message: m })
                .map_err(|e| share_err(&e)),
            Request::ShareRemove { name, purge } => {
                if !purge {
                    return shares::remove(gw, &name, false, &|_, _, _| {})
                        .map(|m| Response::Done { message: m })
                        .map_err(|e| share_err(&e));
                }
                shares::check_share_name(&gw.cfg, &name).map_err(|e| share_err(&e))?;
                let g = gw.clone();
                let g2 = gw.clone();
                let n = name.clone();
                let j = gw
                    .jobs
                    .start(
                        "remove-share",
                        &share_key(&name),
                        move |p| {
                            shares::remove(&g, &n, true, &|ph, d, t| p.set(ph, d, t))
                                .map_err(|e| e.to_string())
                        },
                        move |j| job_event(&g2, j),
                    )
                    .map_err(internal)?;
                Ok(Response::Job(j))
            }
            Request::Cache => Ok(Response::Cache(self.cache())),
            Request::CacheSetBudget { size, dirty_limit } => {
                let dirty = dirty_limit
                    .unwrap_or_else(|| super::config::default_dirty_limit(4 << 30, size));
                if size < 64 << 20 {
                    return Err(ApiError::invalid(
                        "size",
                        format!("the cache must be at least 64 MiB (asked: {size} bytes)"),
                    ));
                }
                if dirty > size {
                    return Err(ApiError::invalid(
                        "dirty_limit",
                        "the dirty limit must not exceed the cache size",
                    ));
                }
                if dirty < 32 << 20 {
                    return Err(ApiError::invalid(
                        "dirty_limit",
                        "the dirty limit must be at least 32 MiB",
                    ));
                }
                gw.state
                    .update(|s| s.cache_budget = Some((size, dirty)))
                    .map_err(internal)?;
                gw.set_budget(size, dirty);
                gw.events.push(
                    EventLevel::Info,
                    None,
                    format!("cache budget set to {size} bytes, dirty limit {dirty}"),
                );
                done(format!(
                    "cache budget {size} bytes, dirty limit {dirty} bytes (kept across restarts, overriding the config file)"
                ))
            }
            Request::CacheEvict { user } => {
                let mut freed = 0;
                let mut n = 0;
                for (k, e) in gw.engines() {
                    if user.as_ref().is_none_or(|u| *u == k) {
                        freed += e.evict_clean();
                        n += 1;
                    }
                }
                if let (Some(u), 0) = (&user, n) {
                    return Err(ApiError::new(
                        ErrorKind::Conflict,
                        format!("the home of {u} is not mounted"),
                    )
                    .at("user"));
                }
                done(format!(
                    "{freed} bytes of clean cache dropped ({n} mounted)"
                ))
            }
            Request::Events { user, limit } => Ok(Response::Events(
                gw.events
                    .recent(user.as_deref(), limit.min(super::events::CAPACITY)),
            )),
            Request::Jobs => Ok(Response::Jobs(gw.jobs.list())),
            Request::Job { id } => {
                gw.jobs.get(id).map(Response::Job).ok_or_else(|| {
                    ApiError::new(ErrorKind::NotFound, format!("no job {id}")).at("id")
                })
            }
            Request::Metrics => Ok(Response::Metrics(Box::new(self.metrics()?))),
            Request::StateBackup => {
                let b = self.backups()?;
                b.run(true)
                    .map_err(|e| {
                        use super::recovery::RecoveryError as R;
                        let kind = match e {
                            R::NoKey(_) => ErrorKind::Conflict,
                            R::Store { .. } => ErrorKind::Unavailable,
                            _ => ErrorKind::Internal,
                        };
                        ApiError::new(kind, e.to_string())
                    })
                    .and_then(done)
            }
            Request::StateStatus => Ok(Response::StateStatus(self.backups()?.status())),
            Request::QuotaSet { target, quota } => super::quotas::set(gw, &target, quota)
                .map(|m| Response::Done { message: m })
                .map_err(|e| quota_err(&e)),
            Request::Snapshots { target } => {
                self.need_daemon()?;
                snapshots::list(gw, &target).map(Response::Snapshots)
            }
            Request::SnapshotCreate { target } => {
                self.need_daemon()?;
                snapshots::create(gw, &target, "manual").map(Response::Snapshot)
            }
            Request::SnapshotDelete { target, name } => {
                self.need_daemon()?;
                snapshots::delete(gw, &target, &name).map(Response::Snapshot)
            }
            Request::SnapshotRestore { target, name, path } => {
                self.need_daemon()?;
                snapshots::restore(gw, &target, &name, &path)
                    .map(|message| Response::Done { message })
            }
            Request::RecyclePurge { target } => self.recycle_purge(target),
            Request::RecycleEmpty { target } => self.recycle_empty(target),
            Request::UserSetRecycle { user, keep_days } => {
                if keep_days.is_some_and(|d| d > super::config::MAX_KEEP_DAYS) {
                    return Err(ApiError::invalid(
                        "keep_days",
                        format!(
                            "keep deleted files at most {} days (0 keeps them until the bin is emptied)",
                            super::config::MAX_KEEP_DAYS
                        ),
                    ));
                }
                gw.users
                    .set_recycle_keep_days(&user, keep_days)
                    .map_err(|e| map_err(&e))?;
                let what = match keep_days {
                    None => format!("as configured ({} days)", gw.cfg.recycle.keep_days),
                    Some(0) => "until the bin is emptied".into(),
                    Some(d) => format!("{d} days"),
                };
                gw.events
                    .info(&user, format!("recycle bin keeps deleted files {what}"));
                done(format!(
                    "the recycle bin of {user} keeps deleted files {what}"
                ))
            }
        }
    }

    fn recycle_purge(&self, target: Option<FsTarget>) -> Result<Response, ApiError> {
        self.need_daemon()?;
        let gw = &self.gw;
        let user = target.as_ref().map(fs_key);
        if let (Some(t), Some(k)) = (&target, &user) {
            if gw.mountpoint_of(k).is_none() {
                return Err(ApiError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{t} is not mounted: its recycle bin is purged when it is next mounted"
                    ),
                )
                .at("target"));
            }
        }
        let subject = user.clone().unwrap_or_else(|| "all".into());
        if let Some(j) = gw.jobs.running("recycle-purge", &subject) {
            return Ok(Response::Job(j));
        }
        let g = gw.clone();
        let g2 = gw.clone();
        let j = gw
            .jobs
            .start(
                "recycle-purge",
                &subject,
                move |p| {
                    super::recycle_job::purge_mounted(&g, user.as_deref(), &|d, t| {
                        p.set("purging", d, t)
                    })
                },
                move |j| job_event(&g2, j),
            )
            .map_err(internal)?;
        Ok(Response::Job(j))
    }

    fn recycle_empty(&self, target: FsTarget) -> Result<Response, ApiError> {
        self.need_daemon()?;
        let gw = &self.gw;
        let key = fs_key(&target);
        match &target {
            FsTarget::Share(name) if gw.mountpoint_of(&key).is_none() => {
                let known = shares::load(&gw.cfg)
                    .map_err(|e| share_err(&e))?
                    .shares
                    .get(name)
                    .is_some_and(|r| !r.removed);
                return Err(if known {
                    ApiError::new(
                        ErrorKind::Conflict,
                        format!("the team share {name} is not mounted (see its page for why)"),
                    )
                    .at("target")
                } else {
                    ApiError::new(
                        ErrorKind::NotFound,
                        format!("there is no team share {name:?}"),
                    )
                    .at("target")
                });
            }
            FsTarget::Share(_) => {}
            // Mounted (if need be) and held by a session of its own while
            // the job runs, so that it is not unmounted meanwhile.
            FsTarget::User(u) => gw.connect(u, None).map_err(|e| gateway_err(&e))?,
        }
        let release = {
            let g = gw.clone();
            let target = target.clone();
            move || {
                if let FsTarget::User(u) = &target {
                    g.disconnect(u, None);
                }
            }
        };
        if let Some(j) = gw.jobs.running("recycle-empty", &key) {
            release();
            return Ok(Response::Job(j));
        }
        let g = gw.clone();
        let g2 = gw.clone();
        let k = key.clone();
        let started = gw.jobs.start(
            "recycle-empty",
            &key,
            move |p| {
                p.set("deleting", 0, 0);
                let r = match g.mountpoint_of(&k) {
                    Some(mp) => super::recycle_job::empty(&g, &k, &mp),
                    None => Err(format!("{k} is not mounted")),
                };
                release();
                r
            },
            move |j| job_event(&g2, j),
        );
        match started {
            Ok(j) => Ok(Response::Job(j)),
            Err(e) => {
                if let FsTarget::User(u) = &target {
                    gw.disconnect(u, None);
                }
                Err(internal(e))
            }
        }
    }

    fn fsck(&self, user: String, verify_data: bool) -> Result<Response, ApiError> {
        let gw = &self.gw;
        let (_, secrets) = gw.users.get(&user).map_err(|e| map_err(&e))?;
        if gw.sessions_of(&user).unwrap_or(0) > 0 {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("{user} has open SMB sessions: fsck needs the home unused"),
            )
            .at("user"));
        }
        if gw.jobs.running("fsck", &user).is_some() {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("an fsck of {user} is running already"),
            )
            .at("user"));
        }
        if gw.sessions_of(&user).is_some() {
            gw.unmount(&user).map_err(|e| gateway_err(&e))?;
            if gw.sessions_of(&user).is_some() {
                return Err(ApiError::new(
                    ErrorKind::Conflict,
                    format!("the home of {user} is in use (a local process holds it): not checked"),
                )
                .at("user"));
            }
        }
        let store = super::daemon::open_user_store(&gw.cfg, &user, &secrets)
            .map_err(|e| gateway_err(&e))?;
        let passphrase = secrets.passphrase.clone();
        let g2 = gw.clone();
        let j = gw
            .jobs
            .start(
                "fsck",
                &user,
                move |p| {
                    let params =
                        crate::fs::engine::read_params(&store).map_err(|e| e.to_string())?;
                    let key = params
                        .unlock(passphrase.as_deref().map(str::as_bytes))
                        .map_err(|e| e.to_string())?;
                    let report = crate::meta::fsck::run(
                        &store,
                        &params,
                        key.as_ref(),
                        &crate::meta::fsck::FsckOptions {
                            verify_data,
                            dry_run: false,
                            accept_rollback: false,
                            release_quarantine: false,
                        },
                        &|phase, d, t| p.set(phase, d, t),
                    )
                    .map_err(|e| e.to_string())?;
                    let word = match report.outcome() {
                        crate::meta::fsck::Outcome::Clean => "clean",
                        crate::meta::fsck::Outcome::Repaired => "repaired without loss",
                        crate::meta::fsck::Outcome::Unrepairable => {
                            "damaged: data may have been lost"
                        }
                    };
                    let mut msg = format!(
                        "fsck: {word} ({} inodes, {} blocks checked)",
                        report.inodes, report.blocks
                    );
                    for f in report.findings.iter().take(20) {
                        msg.push('\n');
                        msg.push_str(f);
                    }
                    match report.outcome() {
                        crate::meta::fsck::Outcome::Unrepairable => Err(msg),
                        _ => Ok(msg),
                    }
                },
                move |j| job_event(&g2, j),
            )
            .map_err(internal)?;
        Ok(Response::Job(j))
    }

    fn cache(&self) -> CacheOverview {
        let gw = &self.gw;
        let (size, dirty_limit) = gw.budget();
        let homes: Vec<HomeCache> = gw
            .engines()
            .into_iter()
            .map(|(user, e)| HomeCache {
                user,
                stats: e.cache_stats(),
            })
            .collect();
        let sum = |f: fn(&crate::cache::CacheStats) -> u64| homes.iter().map(|h| f(&h.stats)).sum();
        let disk = match nix::sys::statvfs::statvfs(&gw.cfg.cache.dir) {
            Ok(s) => DiskInfo {
                path: gw.cfg.cache.dir.clone(),
                total_bytes: s.blocks() * s.fragment_size(),
                free_bytes: s.blocks_available() * s.fragment_size(),
            },
            Err(_) => DiskInfo {
                path: gw.cfg.cache.dir.clone(),
                ..Default::default()
            },
        };
        CacheOverview {
            size,
            dirty_limit,
            used_bytes: sum(|s| s.used_bytes),
            dirty_bytes: sum(|s| s.dirty_bytes),
            clean_bytes: sum(|s| s.clean_bytes),
            uploading_bytes: sum(|s| s.uploading_bytes),
            upload_queue: sum(|s| s.upload_queue),
            disk,
            homes,
        }
    }

    fn overview(&self) -> Result<Overview, ApiError> {
        let gw = &self.gw;
        let store = gw.health.get();
        let cache = self.cache();
        let homes = gw.status();
        let users_total = gw.users.list().map_err(|e| map_err(&e))?.len();
        let interval = gw.cfg.fs.metadata_interval.as_secs();
        let since =
            crate::clock::unix_now().saturating_sub(super::alerts::MOUNT_FAILURE_WINDOW_SECS);
        let failed_mounts = gw
            .events
            .errors_since(since)
            .into_iter()
            .filter(|e| e.message.starts_with("mount failed"))
            .map(|e| (e.subject.unwrap_or_default(), e.message, e.at_unix))
            .collect();
        let mut alerts = super::alerts::compute(&super::alerts::Inputs {
            store: &store,
            cache: &cache,
            homes: &homes,
            metadata_interval_secs: interval,
            failed_mounts,
        });
        alerts.extend(super::quotas::alerts(gw));
        let (uploaded_bytes, downloaded_bytes) = crate::store::metered::bytes_moved();
        let (cache_hits, cache_misses) = gw.read_counts();
        Ok(Overview {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: gw.started.elapsed().as_secs(),
            store,
            users_total,
            homes_mounted: homes.len(),
            sessions: homes.iter().map(|h| h.connections).sum(),
            metadata_interval_secs: interval,
            homes,
            alerts,
            cache,
            uploaded_bytes,
            downloaded_bytes,
            cache_hits,
            cache_misses,
        })
    }

    fn users(&self, q: &UserQuery) -> Result<UserPage, ApiError> {
        let gw = &self.gw;
        let needle = q.search.to_lowercase();
        let all = gw.users.list().map_err(|e| map_err(&e))?;
        let matching: Vec<_> = all
            .into_iter()
            .filter(|(u, _)| needle.is_empty() || u.to_lowercase().contains(&needle))
            .collect();
        let total = matching.len();
        let mounted = gw.mounted_info();
        let saved = gw.state.get().usage;
        let users = matching
            .into_iter()
            .skip(q.offset)
            .take(q.limit())
            .map(|(u, e)| summary(&u, &e, &mounted, &saved))
            .collect();
        Ok(UserPage {
            total,
            offset: q.offset,
            users,
        })
    }

    fn user(&self, user: &str) -> Result<UserDetail, ApiError> {
        let gw = &self.gw;
        let (e, s) = gw.users.get(user).map_err(|e| map_err(&e))?;
        let mounted = gw.mounted_info();
        let saved = gw.state.get().usage;
        Ok(UserDetail {
            summary: summary(user, &e, &mounted, &saved),
            gid: e.gid,
            store: e.store.clone(),
            mountpoint: gw.cfg.mountpoint(user),
            encrypted: s.passphrase.is_some(),
            keystone_user: s.swift.as_ref().and_then(|c| {
                c.username
                    .clone()
                    .or(c.user_id.clone())
                    .or(c.application_credential_id.clone())
            }),
            keystone_project: s
                .swift
                .as_ref()
                .and_then(|c| c.project_name.clone().or(c.project_id.clone())),
            created_unix: e.created_unix,
            home: gw.status().into_iter().find(|h| h.user == user),
            events: gw.events.recent(Some(user), 50),
            jobs: gw
                .jobs
                .list()
                .into_iter()
                .filter(|j| j.subject == user)
                .collect(),
            recycle: Some(super::recycle_job::info(gw, user)),
        })
    }

    fn metrics(&self) -> Result<MetricsSnapshot, ApiError> {
        let gw = &self.gw;
        let (cache_size, cache_dirty_limit) = gw.budget();
        let homes = gw.status();
        let (cache_hits, cache_misses) = gw.read_counts();
        Ok(MetricsSnapshot {
            latency_bounds_secs: crate::store::metered::LATENCY_BOUNDS.to_vec(),
            store_ops: crate::store::metered::totals()
                .into_iter()
                .map(|t| StoreOpStats {
                    op: t.op.into(),
                    ok: t.ok,
                    errors: t.errors,
                    bytes: t.bytes,
                    latency_buckets: t.cumulative_buckets,
                    latency_sum_secs: t.latency_sum_secs,
                })
                .collect(),
            cache_size,
            cache_dirty_limit,
            cache_used_bytes: homes.iter().map(|h| h.cache.used_bytes).sum(),
            cache_dirty_bytes: homes.iter().map(|h| h.cache.dirty_bytes).sum(),
            cache_hits,
            cache_misses,
            homes_mounted: homes.len() as u64,
            sessions: homes.iter().map(|h| h.connections as u64).sum(),
            metadata_age_secs: homes
                .iter()
                .map(|h| (h.user.clone(), h.metadata_age_secs.unwrap_or(0)))
                .collect(),
            errors: gw.errors.load(Ordering::Relaxed),
            users_total: gw.users.list().map_err(|e| map_err(&e))?.len() as u64,
        })
    }
}

fn summary(
    user: &str,
    e: &super::usermap::UserEntry,
    mounted: &HashMap<String, (usize, Arc<crate::fs::engine::Engine>)>,
    saved: &std::collections::BTreeMap<String, Usage>,
) -> UserSummary {
    let m = mounted.get(user);
    UserSummary {
        name: user.to_string(),
        uid: e.uid,
        state: if e.removed {
            UserState::Removed
        } else if e.disabled {
            UserState::Disabled
        } else {
            UserState::Active
        },
        mounted: m.is_some(),
        sessions: m.map(|(n, _)| *n).unwrap_or(0),
        usage: m
            .and_then(|(_, eng)| eng.usage().ok())
            .map(|c| super::daemon::usage_of(&c))
            .or_else(|| saved.get(user).cloned()),
        metadata_age_secs: m.map(|(_, eng)| eng.metadata_age().as_secs()),
        quota: e.quota,
    }
}

/// The key of a mounted filesystem: the user, or `share:NAME`.
fn fs_key(t: &FsTarget) -> String {
    match t {
        FsTarget::User(u) => u.clone(),
        FsTarget::Share(s) => share_key(s),
    }
}

/// A finished job in the event ring.
fn job_event(gw: &Gateway, j: &JobInfo) {
    let msg = format!(
        "{} {}: {}",
        j.kind,
        if j.state == JobState::Succeeded {
            "finished"
        } else {
            "failed"
        },
        j.message.as_deref().unwrap_or("")
    );
    if j.state == JobState::Succeeded {
        gw.events.info(&j.subject, msg);
    } else {
        gw.errors.fetch_add(1, Ordering::Relaxed);
        gw.events.error(&j.subject, msg);
    }
}
