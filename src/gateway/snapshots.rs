//! Snapshots of homes and team shares through the gateway: the typed API's
//! requests, run on the mounted engine (a home is mounted for the request
//! if it is not, and unmounts when idle as usual).

use super::api::{ApiError, ErrorKind, FsTarget, SnapshotInfo, SnapshotList};
use super::daemon::{share_key, Gateway};
use crate::fs::engine::Engine;
use std::sync::Arc;

fn fs_err(target: &FsTarget, what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, format!("{what} of {target}: {e}"))
}

/// Run `f` on the engine of `target`, holding a session on a home so it
/// is not unmounted meanwhile.
fn with_engine<T>(
    gw: &Arc<Gateway>,
    target: &FsTarget,
    f: impl FnOnce(&Engine) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let key = match target {
        FsTarget::User(u) => {
            gw.connect(u, None).map_err(|e| {
                let kind = match e {
                    super::daemon::GatewayError::UserMap(_) => ErrorKind::NotFound,
                    _ => ErrorKind::Unavailable,
                };
                ApiError::new(kind, e.to_string()).at("user")
            })?;
            u.clone()
        }
        FsTarget::Share(s) => share_key(s),
    };
    let engine = gw
        .engines()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, e)| e);
    let r = match engine {
        Some(e) => f(&e),
        None => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("{target} is not mounted (`swiftgate share list` shows why)"),
        )
        .at("name")),
    };
    if let FsTarget::User(u) = target {
        gw.disconnect(u, None);
    }
    r
}

pub fn list(gw: &Arc<Gateway>, target: &FsTarget) -> Result<SnapshotList, ApiError> {
    with_engine(gw, target, |e| {
        Ok(SnapshotList {
            snapshots: e
                .fs
                .snapshot_list()
                .map_err(|x| fs_err(target, "the snapshots", x))?,
            cost: e
                .fs
                .snapshot_cost()
                .map_err(|x| fs_err(target, "the snapshots' cost", x))?,
        })
    })
}

pub fn create(gw: &Arc<Gateway>, target: &FsTarget, label: &str) -> Result<SnapshotInfo, ApiError> {
    with_engine(gw, target, |e| {
        e.fs.snapshot_create(label).map_err(|x| {
            let kind = match x {
                crate::meta::snapshots::SnapshotError::SameSecond(_) => ErrorKind::Conflict,
                _ => ErrorKind::Unavailable,
            };
            ApiError::new(kind, format!("snapshot of {target}: {x}"))
        })
    })
}

fn find(e: &Engine, target: &FsTarget, name: &str) -> Result<SnapshotInfo, ApiError> {
    e.fs.snapshot_find(name).map_err(|_| {
        ApiError::new(
            ErrorKind::NotFound,
            format!("{target} has no snapshot {name:?}"),
        )
        .at("name")
    })
}

pub fn delete(gw: &Arc<Gateway>, target: &FsTarget, name: &str) -> Result<SnapshotInfo, ApiError> {
    with_engine(gw, target, |e| {
        let s = find(e, target, name)?;
        e.fs.snapshot_delete(s.id)
            .map_err(|x| fs_err(target, "deleting a snapshot", x))
    })
}

pub fn restore(
    gw: &Arc<Gateway>,
    target: &FsTarget,
    name: &str,
    path: &str,
) -> Result<String, ApiError> {
    with_engine(gw, target, |e| {
        let s = find(e, target, name)?;
        let r = e.fs.snapshot_restore(&s.name, path).map_err(|x| {
            let kind = if x.0 == libc::ENOENT {
                ErrorKind::NotFound
            } else if x.0 == libc::EINVAL || x.0 == libc::EISDIR {
                ErrorKind::Invalid
            } else {
                ErrorKind::Internal
            };
            ApiError::new(
                kind,
                format!("restoring {path:?} of {target} from {}: {x}", s.name),
            )
            .at("path")
        })?;
        Ok(format!(
            "restored {path:?} of {target} as of {} ({} files, {} folders, {} bytes)",
            s.name, r.files, r.dirs, r.bytes
        ))
    })
}
