//! The mount lease: one object in the store naming the live mount. A second
//! mount is refused while it is fresh; after its holder died and it expired,
//! `--takeover` may replace it.

use crate::store::{DynStore, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const LEASE_KEY: &str = "lease";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseInfo {
    pub host: String,
    pub pid: u32,
    pub mount_id: String,
    pub acquired_unix: u64,
    pub expires_unix: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "the filesystem is mounted by {host} (pid {pid}); its lease is live until {expires} (unix time). Unmount it there first"
    )]
    Held {
        host: String,
        pid: u32,
        expires: u64,
    },
    #[error(
        "the filesystem was last mounted by {host} (pid {pid}), which did not unmount cleanly; its lease expired at {expires} (unix time). If that mount is really gone, mount again with --takeover"
    )]
    Expired {
        host: String,
        pid: u32,
        expires: u64,
    },
    #[error("another mount took over this filesystem's lease ({host}, pid {pid}); stop writing")]
    Lost { host: String, pid: u32 },
    #[error("lease object is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited already.
        Ok(st) => !st.contains(") Z "),
        Err(_) => false,
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

#[derive(Debug)]
pub struct Lease {
    store: DynStore,
    pub info: LeaseInfo,
    ttl: Duration,
}

pub fn read(store: &DynStore) -> Result<Option<LeaseInfo>, LeaseError> {
    // A lease is a small JSON document.
    match store.get_max(LEASE_KEY, 64 << 10) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| LeaseError::Corrupt(e.to_string())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Lease {
    pub fn acquire(store: DynStore, ttl: Duration, takeover: bool) -> Result<Lease, LeaseError> {
        let mut mid = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut mid);
        let t = crate::clock::unix_now();
        let info = LeaseInfo {
            host: hostname(),
            pid: std::process::id(),
            mount_id: hex::encode(mid),
            acquired_unix: t,
            expires_unix: t + ttl.as_secs(),
        };
        let body = serde_json::to_vec(&info).expect("serialize lease");
        for _ in 0..3 {
            match store.create(LEASE_KEY, &body) {
                Ok(()) => return Ok(Lease { store, info, ttl }),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let Some(cur) = read(&store)? else {
                continue; // released meanwhile: try again
            };
            // A retried create whose first attempt did succeed.
            if cur.mount_id == info.mount_id {
                return Ok(Lease { store, info, ttl });
            }
            // Our own host, and the holder process is gone: it crashed
            // here, so nobody else can be using the filesystem through it.
            let dead_here = cur.host == hostname() && !pid_alive(cur.pid);
            if dead_here {
                tracing::warn!(
                    pid = cur.pid,
                    "previous mount on this host died: taking over its lease"
                );
                store.delete(LEASE_KEY)?;
                continue;
            }
            if cur.expires_unix > crate::clock::unix_now() {
                return Err(LeaseError::Held {
                    host: cur.host,
                    pid: cur.pid,
                    expires: cur.expires_unix,
                });
            }
            if !takeover {
                return Err(LeaseError::Expired {
                    host: cur.host,
                    pid: cur.pid,
                    expires: cur.expires_unix,
                });
            }
            tracing::warn!(host = %cur.host, pid = cur.pid, "taking over an expired mount lease");
            store.delete(LEASE_KEY)?;
        }
        Err(LeaseError::Corrupt(
            "the lease changed hands while we tried to take it; try again".into(),
        ))
    }

    /// Extend the lease; fails with `Lost` if someone else holds it now.
    pub fn renew(&mut self) -> Result<(), LeaseError> {
        if let Some(cur) = read(&self.store)? {
            if cur.mount_id != self.info.mount_id {
                return Err(LeaseError::Lost {
                    host: cur.host,
                    pid: cur.pid,
                });
            }
        }
        self.info.expires_unix = crate::clock::unix_now() + self.ttl.as_secs();
        let body = serde_json::to_vec(&self.info).expect("serialize lease");
        self.store.put(LEASE_KEY, &body)?;
        Ok(())
    }

    pub fn release(self) -> Result<(), LeaseError> {
        match read(&self.store)? {
            Some(cur) if cur.mount_id == self.info.mount_id => {
                self.store.delete(LEASE_KEY)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
