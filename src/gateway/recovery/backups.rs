//! The daemon's backups of the gateway state (`swiftgate serve`), and what
//! they are doing (`swiftgate recovery status`).

use super::{collect, open_store, seal, RecoveryError, RecoveryKey, OBJECT};
use crate::gateway::config::GatewayConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use zeroize::Zeroizing;

/// What the daemon's backups are doing (`swiftgate recovery status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupStatus {
    /// The recovery store.
    pub url: String,
    pub last_backup_unix: Option<u64>,
    pub last_size: Option<u64>,
    /// The last attempt's error (none: it succeeded).
    pub last_error: Option<String>,
}

/// The daemon's backups: after each change of the state (checked every few
/// seconds, so a burst of changes makes one backup) and every hour.
pub struct Backups {
    cfg: GatewayConfig,
    config_path: PathBuf,
    inner: parking_lot::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    status: BackupStatus,
    /// Digest of the last stored state (without its time stamp).
    digest: Option<[u8; 32]>,
    at: Option<Instant>,
}

impl Backups {
    pub fn new(cfg: GatewayConfig, config_path: &Path) -> Arc<Backups> {
        let url = cfg.recovery_url();
        Arc::new(Backups {
            cfg,
            config_path: config_path.to_path_buf(),
            inner: parking_lot::Mutex::new(Inner {
                status: BackupStatus {
                    url,
                    ..Default::default()
                },
                ..Default::default()
            }),
        })
    }

    pub fn status(&self) -> BackupStatus {
        self.inner.lock().status.clone()
    }

    /// Back up if the state changed (or `force`, or an hour went by);
    /// the result in words.
    pub fn run(&self, force: bool) -> Result<String, RecoveryError> {
        let mut inner = self.inner.lock();
        let r = self.run_locked(&mut inner, force);
        match &r {
            Ok(_) => inner.status.last_error = None,
            Err(e) => inner.status.last_error = Some(e.to_string()),
        }
        r
    }

    fn run_locked(&self, inner: &mut Inner, force: bool) -> Result<String, RecoveryError> {
        let key = RecoveryKey::load(&self.cfg.recovery.key_file)?;
        let mut bundle = collect(&self.cfg, &self.config_path)?;
        let created = bundle.created_unix;
        bundle.created_unix = 0;
        let plain = Zeroizing::new(serde_json::to_vec(&bundle).unwrap_or_default());
        let digest: [u8; 32] = Sha256::digest(&*plain).into();
        let due = inner
            .at
            .is_none_or(|t| t.elapsed() >= self.cfg.recovery.interval);
        if !force && !due && inner.digest == Some(digest) {
            return Ok("the gateway state is unchanged since the last backup".into());
        }
        bundle.created_unix = created;
        let plain = Zeroizing::new(serde_json::to_vec(&bundle).unwrap_or_default());
        let obj = seal(&key, &plain);
        let url = self.cfg.recovery_url();
        let store = open_store(&url, &self.cfg.store.swift)?;
        let serr = |e: crate::store::StoreError| RecoveryError::Store {
            url: url.clone(),
            cause: e.to_string(),
        };
        store.prepare().map_err(serr)?;
        store.put(OBJECT, &obj).map_err(serr)?;
        inner.digest = Some(digest);
        inner.at = Some(Instant::now());
        inner.status.last_backup_unix = Some(created);
        inner.status.last_size = Some(obj.len() as u64);
        tracing::info!(
            store = %url,
            users = bundle.accounts.len(),
            bytes = obj.len(),
            "gateway state backed up"
        );
        Ok(format!(
            "gateway state backed up to {url} ({} users, {} bytes)",
            bundle.accounts.len(),
            obj.len()
        ))
    }

    /// The background loop of `swiftgate serve`.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        std::thread::Builder::new()
            .name("state-backup".into())
            .spawn(move || {
                let mut warned = false;
                loop {
                    match me.run(false) {
                        Ok(_) => warned = false,
                        Err(e) => {
                            if !warned {
                                tracing::warn!("gateway state not backed up: {e}");
                            }
                            warned = true;
                        }
                    }
                    std::thread::sleep(me.cfg.recovery.check_interval);
                }
            })
            .ok();
    }
}
