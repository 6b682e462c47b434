//! Is the object store there? A background probe every 30 s: one cheap,
//! honest request with the credentials the gateway actually uses, its
//! latency and error, and the token's remaining life.
//!
//! What is probed: a HEAD of the `params` object of a mounted home or
//! share (its own store and identity), or when nothing is mounted a HEAD
//! in the service identity's store (the container of a probe user that
//! never exists: a 404 is a fine answer, it proves the account answers).
//! A local store is probed by reading its base directory.

use super::api::StoreHealth;
use super::daemon::{open_service_store, Gateway};
use parking_lot::Mutex;
use std::time::{Duration, Instant};

pub const INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Health {
    last: Mutex<Option<(Instant, StoreHealth)>>,
}

impl Health {
    /// The last probe's result, its age filled in.
    pub fn get(&self) -> StoreHealth {
        match &*self.last.lock() {
            Some((at, h)) => StoreHealth {
                checked_secs_ago: Some(at.elapsed().as_secs()),
                ..h.clone()
            },
            None => StoreHealth {
                auth: "unknown".into(),
                ..Default::default()
            },
        }
    }

    fn set(&self, h: StoreHealth) {
        *self.last.lock() = Some((Instant::now(), h));
    }
}

/// Probe once and record the result.
pub fn probe(gw: &Gateway) -> StoreHealth {
    let started = Instant::now();
    let (url, result, auth) = match gw.engines().into_iter().next() {
        Some((_, engine)) => {
            let r = engine.store.head(crate::fs::engine::PARAMS_KEY).map(|_| ());
            (engine.store.url(), r, engine.store.auth_state())
        }
        None => {
            let url = gw.cfg.store_url("swiftgate-probe");
            if let Some(path) = url.strip_prefix("local://") {
                // Not opened (that would create the directory): its parent
                // must be there and readable.
                let base = std::path::Path::new(path)
                    .parent()
                    .unwrap_or(std::path::Path::new("/"));
                // Before the first home it may not exist yet: then the
                // directory it will be made in must.
                let probe_dir = if base.exists() {
                    base
                } else {
                    base.parent().unwrap_or(base)
                };
                let r = std::fs::read_dir(probe_dir).map(|_| ()).map_err(|e| {
                    crate::store::StoreError::Other(format!("{}: {e}", probe_dir.display()))
                });
                (format!("local://{}", base.display()), r, None)
            } else {
                match open_service_store(&gw.cfg, &url) {
                    Ok(s) => {
                        let r = s.head(crate::fs::engine::PARAMS_KEY).map(|_| ());
                        (url, r, s.auth_state())
                    }
                    Err(e) => (url, Err(e), None),
                }
            }
        }
    };
    let ms = started.elapsed().as_millis() as u64;
    let h = StoreHealth {
        url,
        reachable: Some(result.is_ok()),
        latency_ms: Some(ms),
        checked_secs_ago: Some(0),
        error: result.err().map(|e| e.to_string()),
        auth: auth
            .as_ref()
            .map(|a| a.method.clone())
            .unwrap_or_else(|| "none".into()),
        token_expires_in_secs: auth.and_then(|a| a.token_expires_in_secs),
    };
    if let Some(e) = &h.error {
        tracing::warn!(store = %h.url, "store probe failed: {e}");
    }
    gw.health.set(h.clone());
    h
}

/// Probe now, then every [`INTERVAL`] until the gateway stops.
pub fn start(gw: std::sync::Arc<Gateway>) {
    let _ = std::thread::Builder::new()
        .name("store-probe".into())
        .spawn(move || loop {
            probe(&gw);
            let until = Instant::now() + INTERVAL;
            while Instant::now() < until {
                if gw.stopping() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
}
