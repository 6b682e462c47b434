//! The daemon's recycle-bin work: the expired entries of every mounted
//! home and share purged every `[recycle] purge_interval`, and a home's
//! right after it is mounted (a home that was not mounted at the last
//! round is purged then); the bins measured for the console, the result
//! kept a little while (the pages refresh every few seconds).

use super::api::RecycleInfo;
use super::daemon::Gateway;
use super::recycle::{self, BinReport};
use super::samba::RECYCLE_DIR;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A measurement this young is shown as is.
const MEASURE_TTL: Duration = Duration::from_secs(15);

/// A bin's last measurement: when, and what it found (or why not).
type Measured = (Instant, Result<BinReport, String>);

#[derive(Default)]
pub struct RecycleState {
    /// One walk that changes a bin at a time (purge rounds, a purge after
    /// a mount, an admin's purge or emptying).
    walking: Mutex<()>,
    measured: Mutex<HashMap<String, Measured>>,
}

/// The recycle setting in force for a home (`user`) or `share:NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub enabled: bool,
    pub keep_days: u32,
    /// The home's or share's own retention, if it has one.
    pub own_keep_days: Option<u32>,
}

/// An error when the share list or the user map cannot be read: then
/// nothing is purged (the config's days may be shorter than the bin's own).
pub fn setting(gw: &Gateway, key: &str) -> Result<Setting, String> {
    let r = &gw.cfg.recycle;
    let mut s = Setting {
        enabled: r.enabled,
        keep_days: r.keep_days,
        own_keep_days: None,
    };
    if let Some(name) = key.strip_prefix("share:") {
        let list = super::shares::load(&gw.cfg).map_err(|e| e.to_string())?;
        let rec = list
            .shares
            .get(name)
            .ok_or_else(|| format!("the share {name} is not in the share list"))?;
        s.enabled &= rec.spec.recycle.unwrap_or(true);
        s.own_keep_days = rec.spec.recycle_keep_days;
    } else {
        let (e, _) = gw.users.get(key).map_err(|e| e.to_string())?;
        s.own_keep_days = e.recycle_keep_days;
    }
    s.keep_days = s.own_keep_days.unwrap_or(s.keep_days);
    Ok(s)
}

/// The setting and, when mounted, what the bin holds.
pub fn info(gw: &Gateway, key: &str) -> RecycleInfo {
    let (s, err) = match setting(gw, key) {
        Ok(s) => (s, None),
        Err(e) => (
            Setting {
                enabled: gw.cfg.recycle.enabled,
                keep_days: gw.cfg.recycle.keep_days,
                own_keep_days: None,
            },
            Some(format!("cannot read the bin's setting: {e}")),
        ),
    };
    let mut i = RecycleInfo {
        error: err,
        enabled: s.enabled,
        keep_days: s.keep_days,
        own_keep_days: s.own_keep_days,
        folder: RECYCLE_DIR.into(),
        ..Default::default()
    };
    let Some(mp) = gw.mountpoint_of(key) else {
        return i;
    };
    let cached = gw
        .recycle
        .measured
        .lock()
        .get(key)
        .filter(|(at, _)| at.elapsed() < MEASURE_TTL)
        .map(|(_, r)| r.clone());
    let r = cached.unwrap_or_else(|| {
        let r = recycle::measure(&mp).map_err(|e| e.to_string());
        gw.recycle
            .measured
            .lock()
            .insert(key.to_string(), (Instant::now(), r.clone()));
        r
    });
    match r {
        Ok(b) => {
            i.files = Some(b.files);
            i.bytes = Some(b.bytes);
        }
        Err(e) => i.error = Some(i.error.take().map_or(e.clone(), |s| format!("{s}; {e}"))),
    }
    i
}

fn forget(gw: &Gateway, key: &str) {
    gw.recycle.measured.lock().remove(key);
}

/// Purge one mounted bin by its setting; None: the bin is off or keeps
/// everything (nothing looked at).
pub fn purge_one(gw: &Gateway, key: &str, mp: &Path) -> Result<Option<BinReport>, String> {
    let s = setting(gw, key)?;
    if !s.enabled || s.keep_days == 0 {
        return Ok(None);
    }
    let cutoff = crate::clock::unix_now() as i64 - i64::from(s.keep_days) * 86_400;
    let r = {
        let _w = gw.recycle.walking.lock();
        // Shutdown waits for a walk under way, then unmounts: one that
        // started after would block on a mount nobody serves any more.
        if gw.stopping() {
            return Ok(None);
        }
        recycle::purge(mp, cutoff).map_err(|e| e.to_string())?
    };
    forget(gw, key);
    if r.removed_files > 0 || r.errors > 0 {
        let msg = format!(
            "recycle bin: {} files ({} bytes) older than {} days deleted, {} folders removed{}",
            r.removed_files,
            r.removed_bytes,
            s.keep_days,
            r.removed_dirs,
            r.first_error
                .as_ref()
                .map(|e| format!("; {} entries could not be removed ({e})", r.errors))
                .unwrap_or_default()
        );
        if r.errors > 0 {
            gw.events.error(key, msg);
        } else {
            gw.events.info(key, msg);
        }
    }
    Ok(Some(r))
}

/// Purge the bins of these mounted filesystems (all when None); a summary.
pub fn purge_mounted(
    gw: &Gateway,
    only: Option<&str>,
    progress: &dyn Fn(u64, u64),
) -> Result<String, String> {
    let mounts: Vec<_> = gw
        .mounts()
        .into_iter()
        .filter(|(k, _)| only.is_none_or(|o| o == k))
        .collect();
    let total = mounts.len() as u64;
    let (mut files, mut bytes, mut failed) = (0, 0, Vec::new());
    for (i, (key, mp)) in mounts.iter().enumerate() {
        progress(i as u64, total);
        match purge_one(gw, key, mp) {
            Ok(Some(r)) => {
                files += r.removed_files;
                bytes += r.removed_bytes;
            }
            Ok(None) => {}
            Err(e) => failed.push(format!("{key}: {e}")),
        }
    }
    progress(total, total);
    let msg = format!("{files} expired files ({bytes} bytes) deleted from {total} recycle bins");
    if failed.is_empty() {
        Ok(msg)
    } else {
        Err(format!("{msg}; failed: {}", failed.join("; ")))
    }
}

/// Empty a mounted bin; a summary.
pub fn empty(gw: &Gateway, key: &str, mp: &Path) -> Result<String, String> {
    let r = {
        let _w = gw.recycle.walking.lock();
        recycle::empty(mp).map_err(|e| e.to_string())?
    };
    forget(gw, key);
    let msg = format!(
        "recycle bin emptied: {} files ({} bytes) deleted",
        r.removed_files, r.removed_bytes
    );
    match r.first_error {
        Some(e) => Err(format!(
            "{msg}; {} entries could not be removed ({e})",
            r.errors
        )),
        None => Ok(msg),
    }
}

/// A home or share was just mounted: purge its bin in the background
/// (the session that mounted it does not wait).
pub fn after_mount(gw: &Arc<Gateway>, key: &str) {
    if !gw.serving() || !setting(gw, key).is_ok_and(|s| s.enabled) {
        return;
    }
    let gw = gw.clone();
    let key = key.to_string();
    let spawned = std::thread::Builder::new()
        .name("recycle-mount".into())
        .spawn(move || {
            if let Some(mp) = gw.mountpoint_of(&key) {
                if let Err(e) = purge_one(&gw, &key, &mp) {
                    tracing::warn!(user = %key, "purging the recycle bin after mount: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start a recycle purge: {e}");
    }
}

/// Wait until no recycle bin is being walked (at shutdown, before the
/// mounts go: a walk is file operations on them, served by this process).
pub fn wait_idle(gw: &Gateway) {
    drop(gw.recycle.walking.lock());
}

/// The purge rounds, until the daemon stops.
pub fn start(gw: Arc<Gateway>) {
    let spawned = std::thread::Builder::new()
        .name("recycle-purge".into())
        .spawn(move || loop {
            let until = Instant::now() + gw.cfg.recycle.purge_interval;
            while Instant::now() < until {
                if gw.stopping() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            if !gw.cfg.recycle.enabled {
                continue;
            }
            if let Err(e) = purge_mounted(&gw, None, &|_, _| {}) {
                tracing::warn!("recycle purge round: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the recycle purge thread: {e}");
    }
}
