//! The daemon's control API: JSON lines on a root-only Unix socket.
//!
//! Requests: `{"op":"connect","user":"alice","smbd":{"pid":..,"start":..}}`
//! (smbd optional), `disconnect` (same fields), `unmount`,
//! `status`, `ping`, `home` (see [`HomeRequest`]). Answers: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.

use super::daemon::Gateway;
use crate::fs::commands::MountCommand;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("another gateway daemon is already listening on {0}")]
    InUse(String),
    #[error("the gateway daemon is not running (no answer on {path}: {cause}); start it with `swiftgate serve`")]
    NotRunning { path: String, cause: std::io::Error },
    #[error("permission denied on the control socket {0}: only root controls the gateway (run this as root)")]
    Denied(String),
    #[error("{0}")]
    Refused(String),
}

/// Bind the socket (root-only) and serve requests on a thread per client.
pub fn serve(path: &Path, gw: Arc<Gateway>) -> Result<(), ControlError> {
    let ps = path.display().to_string();
    let io = |source| ControlError::Io {
        path: ps.clone(),
        cause: source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(ps));
        }
        std::fs::remove_file(path).map_err(io)?; // left by a crash
    }
    // Root-only from the first moment: created under a umask that leaves
    // nothing for group and others (a chmod after bind leaves a window).
    let l = bind_private(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let gw = gw.clone();
                let _ = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || handle_client(c, &gw));
            }
        })
        .map_err(io)?;
    Ok(())
}

/// `swiftgate stat` / `ctl` on a home the daemon mounted:
/// `{"op":"home","mountpoint":"/srv/swiftgate/home/alice","command":"stat"}`,
/// answered with `{"ok":true,"result":...}` (what a standalone mount's
/// socket answers to the same command).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HomeRequest {
    pub mountpoint: std::path::PathBuf,
    pub command: MountCommand,
}

/// Client side of [`HomeRequest`].
pub fn home_command(
    socket: &Path,
    mountpoint: &Path,
    command: MountCommand,
) -> Result<Value, ControlError> {
    let mut req = serde_json::to_value(HomeRequest {
        mountpoint: mountpoint.to_path_buf(),
        command,
    })
    .expect("serializable");
    req["op"] = json!("home");
    // A flush uploads whatever is dirty: it may take long.
    let timeout = match command {
        MountCommand::Stat => Duration::from_secs(60),
        _ => Duration::from_secs(24 * 3600),
    };
    let mut v = request(socket, &req, timeout)?;
    Ok(v["result"].take())
}

/// Bind a Unix socket that only its owner can connect to.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::stat::{umask, Mode};
    // umask is per process: another thread creating a file meanwhile only
    // gets stricter modes, never looser ones.
    let old = umask(Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    umask(old);
    l
}

fn handle_client(c: UnixStream, gw: &Arc<Gateway>) {
    let Ok(w) = c.try_clone() else { return };
    let mut w = w;
    for line in BufReader::new(c).lines() {
        let Ok(line) = line else { return };
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => handle(gw, &req),
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        if writeln!(w, "{reply}").is_err() {
            return;
        }
    }
}

/// The smbd process a hook ran under (`"smbd": {"pid": .., "start": ..}`).
fn smbd_of(req: &Value) -> Option<crate::gateway::session::SmbdProcess> {
    serde_json::from_value(req.get("smbd")?.clone()).ok()
}

fn handle(gw: &Arc<Gateway>, req: &Value) -> Value {
    let user = req["user"].as_str().unwrap_or("");
    let res: Result<Value, String> = match req["op"].as_str().unwrap_or("") {
        "ping" => Ok(json!({})),
        "connect" => {
            let t = std::time::Instant::now();
            match gw.connect(user, smbd_of(req)) {
                Ok(()) => Ok(json!({"ms": t.elapsed().as_millis() as u64})),
                Err(e) => {
                    // Samba only sees the exit status: the reason goes here.
                    tracing::error!(user, "refusing the connection: {e}");
                    Err(e.to_string())
                }
            }
        }
        "disconnect" => {
            gw.disconnect(user, smbd_of(req));
            Ok(json!({}))
        }
        "unmount" => gw
            .unmount(user)
            .map(|was| json!({"was_mounted": was}))
            .map_err(|e| e.to_string()),
        "status" => Ok(json!({"homes": gw.status()})),
        "home" => match serde_json::from_value::<HomeRequest>(req.clone()) {
            Ok(r) => gw
                .home_command(&r.mountpoint, r.command)
                .map(|v| json!({ "result": v }))
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("bad home request: {e}")),
        },
        other => Err(format!("unknown op {other:?}")),
    };
    match res {
        Ok(mut v) => {
            v["ok"] = json!(true);
            v
        }
        Err(e) => json!({"ok": false, "error": e}),
    }
}

/// Client side: one request, one answer.
pub fn request(path: &Path, req: &Value, timeout: Duration) -> Result<Value, ControlError> {
    let ps = path.display().to_string();
    let mut c = UnixStream::connect(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ControlError::Denied(ps.clone())
        } else {
            ControlError::NotRunning {
                path: ps.clone(),
                cause: source,
            }
        }
    })?;
    let io = |source| ControlError::Io {
        path: ps.clone(),
        cause: source,
    };
    c.set_read_timeout(Some(timeout)).map_err(io)?;
    writeln!(c, "{req}").map_err(io)?;
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).map_err(io)?;
    let v: Value = serde_json::from_str(&line)
        .map_err(|e| ControlError::Refused(format!("unreadable answer from the daemon: {e}")))?;
    if v["ok"] == json!(true) {
        Ok(v)
    } else {
        Err(ControlError::Refused(
            v["error"].as_str().unwrap_or("refused").to_string(),
        ))
    }
}
