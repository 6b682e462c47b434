//! The gateway: per-user Swift-backed homes mounted when Samba's
//! `root preexec` fires, a user map, a control socket, Samba integration.

pub mod alerts;
pub mod api;
pub mod command;
pub mod config;
pub mod console_accounts;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod events;
pub mod health;
pub mod jobs;
pub mod lock;
pub mod quotas;
pub mod recovery;
pub mod recycle;
pub mod recycle_job;
pub mod samba;
pub mod service;
pub mod session;
pub mod shares;
pub mod smbconf;
pub mod snapshot_schedule;
pub mod snapshots;
pub mod state;
pub mod usermap;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use config::GatewayConfig;
pub use daemon::Gateway;

/// Sessions open when the daemon stopped, re-established at its next start
/// (smbd keeps its clients connected across a daemon restart).
fn sessions_file(cfg: &GatewayConfig) -> PathBuf {
    cfg.cache.dir.join("sessions.json")
}

fn save_sessions(cfg: &GatewayConfig, s: &[daemon::SavedHome]) {
    let p = sessions_file(cfg);
    let tmp = p.with_extension("tmp");
    if std::fs::write(&tmp, serde_json::to_vec(s).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, &p);
    }
}

/// Tell systemd (Type=notify) we are ready, if it is listening.
fn notify_ready() {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let mut p = PathBuf::from(&path);
        let s = std::os::unix::net::UnixDatagram::unbound();
        if let Ok(s) = s {
            if path.to_string_lossy().starts_with('@') {
                // Abstract socket: not reachable through a path; skip.
                return;
            }
            if p.as_os_str().is_empty() {
                p = PathBuf::from("/run/systemd/notify");
            }
            let _ = s.send_to(b"READY=1", &p);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Gateway(#[from] daemon::GatewayError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("{0}")]
    Console(String),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("signals: {0}")]
    Signals(std::io::Error),
}

/// `swiftgate serve`: run until SIGTERM/SIGINT, then flush and unmount all.
/// `console` starts the web console on the running gateway (the layer
/// above this one provides it).
pub fn serve(
    config_path: &Path,
    console: impl FnOnce(Arc<service::Service>, &GatewayConfig) -> Result<String, String>,
) -> Result<(), ServeError> {
    let cfg = GatewayConfig::load(config_path)?;
    crate::secure::new_dir(&cfg.cache.dir).map_err(|source| daemon::GatewayError::Io {
        path: cfg.cache.dir.clone(),
        cause: source,
    })?;
    let _ = crate::secure::private_file(&sessions_file(&cfg));
    // The single writer of the user map and the share list from here on
    // (a CLI command holding it finishes first).
    let lock = lock::StateLock::acquire(&lock::lock_path(&cfg.users.db), Duration::from_secs(120))?;
    let gw = Gateway::new(cfg.clone(), lock)?;
    gw.set_serving();
    let service = Arc::new(service::Service::new(gw.clone()));
    let backups = recovery::Backups::new(cfg.clone(), config_path);
    service.set_backups(backups.clone());
    backups.start();
    snapshot_schedule::start(gw.clone(), cfg.clone());
    // The console listens before the control socket answers: whoever
    // waits for the socket (setup, then doctor) finds the console up too.
    let console_url = if cfg.console.enabled {
        Some(console(service.clone(), &cfg).map_err(ServeError::Console)?)
    } else {
        None
    };
    control::serve(&cfg.control.socket, service)?;
    shares::mount_all(&gw);
    health::start(gw.clone());
    recycle_job::start(gw.clone());
    let restore: Vec<daemon::SavedHome> = std::fs::read(sessions_file(&cfg))
        .ok()
        .and_then(|b| {
            serde_json::from_slice(&b).ok().or_else(|| {
                // The format before smbd processes were recorded.
                let old: Vec<(String, usize)> = serde_json::from_slice(&b).ok()?;
                Some(
                    old.into_iter()
                        .map(|(user, n)| daemon::SavedHome {
                            user,
                            sessions: vec![None; n],
                        })
                        .collect(),
                )
            })
        })
        .unwrap_or_default();
    if !restore.is_empty() {
        gw.restore(&restore);
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(ServeError::Signals)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let handle = signals.handle();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                tracing::info!("signal received: flushing and unmounting every home");
                stop.store(true, std::sync::atomic::Ordering::Release);
                handle.close();
            }
        });
    }
    tracing::info!(socket = %cfg.control.socket.display(), "gateway ready");
    // One line: whoever started us may read just that one.
    match &console_url {
        Some(url) => println!(
            "swiftgate gateway ready (control socket {}, console {url})",
            cfg.control.socket.display()
        ),
        None => println!(
            "swiftgate gateway ready (control socket {})",
            cfg.control.socket.display()
        ),
    }
    notify_ready();
    let mut last: Vec<daemon::SavedHome> = restore;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(500));
        gw.reap_idle();
        let now = gw.connected();
        if now != last {
            save_sessions(&cfg, &now);
            last = now;
        }
    }
    // Keep the session list: a restart re-establishes those homes.
    save_sessions(&cfg, &gw.connected());
    gw.shutdown();
    let _ = std::fs::remove_file(&cfg.control.socket);
    tracing::info!("gateway stopped cleanly");
    Ok(())
}
