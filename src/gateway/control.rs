//! The control socket: the typed API ([`super::api`]) as JSON lines on a
//! root-only Unix socket. One [`Request`] per line (the Samba hook's old
//! `{"op":"connect","user":..,"smbd":..}` is one of them); each answered
//! with `{"ok": <Response>}` or `{"error": <ApiError>}`.

use super::api::{ApiError, ErrorKind, GatewayApi, Request, Response};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("another gateway daemon is already listening on {0}")]
    InUse(String),
}

/// One answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(Response),
    Error(ApiError),
}

/// Bind the socket (root-only) and serve requests on a thread per client.
pub fn serve(path: &Path, api: Arc<dyn GatewayApi>) -> Result<(), ControlError> {
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
                let api = api.clone();
                let _ = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || handle_client(c, &*api));
            }
        })
        .map_err(io)?;
    Ok(())
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

fn handle_client(c: UnixStream, api: &dyn GatewayApi) {
    let Ok(w) = c.try_clone() else { return };
    let mut w = w;
    for line in BufReader::new(c).lines() {
        let Ok(line) = line else { return };
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => match api.call(req) {
                Ok(r) => Reply::Ok(r),
                Err(e) => Reply::Error(e),
            },
            Err(e) => Reply::Error(ApiError::new(
                ErrorKind::Invalid,
                format!("bad request: {e}"),
            )),
        };
        let text = serde_json::to_string(&reply).unwrap_or_else(|e| {
            format!(r#"{{"error":{{"kind":"internal","message":"unserialisable answer: {e}"}}}}"#)
        });
        if writeln!(w, "{text}").is_err() {
            return;
        }
    }
}

/// The client side: the typed API over the socket.
#[derive(Debug, Clone)]
pub struct ControlClient {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl ControlClient {
    pub fn new(socket: &Path, timeout: Duration) -> ControlClient {
        ControlClient {
            socket: socket.to_path_buf(),
            timeout,
        }
    }
}

impl GatewayApi for ControlClient {
    fn call(&self, req: Request) -> Result<Response, ApiError> {
        let ps = self.socket.display();
        let mut c = UnixStream::connect(&self.socket).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                ApiError::new(
                    ErrorKind::Denied,
                    format!("permission denied on the control socket {ps}: only root controls the gateway (run this as root)"),
                )
            } else {
                ApiError::new(
                    ErrorKind::NotRunning,
                    format!("the gateway daemon is not running (no answer on {ps}: {e}); start it with `swiftgate serve`"),
                )
            }
        })?;
        let io = |e: std::io::Error| {
            ApiError::new(ErrorKind::Unavailable, format!("control socket {ps}: {e}"))
        };
        c.set_read_timeout(Some(self.timeout)).map_err(io)?;
        let text = serde_json::to_string(&req).map_err(|e| {
            ApiError::new(ErrorKind::Invalid, format!("unserialisable request: {e}"))
        })?;
        writeln!(c, "{text}").map_err(io)?;
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).map_err(io)?;
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Ok(r)) => Ok(r),
            Ok(Reply::Error(e)) => Err(e),
            Err(e) => Err(ApiError::new(
                ErrorKind::Internal,
                format!("unreadable answer from the daemon: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_round_trip_and_old_hook_lines() {
        struct Echo;
        impl GatewayApi for Echo {
            fn call(&self, req: Request) -> Result<Response, ApiError> {
                match req {
                    Request::Connect { user, .. } if user == "bob" => {
                        Ok(Response::Connected { ms: 7 })
                    }
                    Request::Ping => Ok(Response::Pong {
                        version: "v".into(),
                        api: 1,
                    }),
                    _ => Err(ApiError::invalid("user", "no")),
                }
            }
        }
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("s");
        serve(&sock, Arc::new(Echo)).unwrap();
        let c = ControlClient::new(&sock, Duration::from_secs(5));
        use crate::gateway::api::GatewayApiExt;
        assert_eq!(c.ping().unwrap(), "v");
        let e = c.call(Request::Overview).unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::Invalid, Some("user"))
        );
        // The old hook line, raw.
        let mut s = UnixStream::connect(&sock).unwrap();
        writeln!(s, r#"{{"op":"connect","user":"bob","smbd":null}}"#).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(
            line.contains(r#""ok""#) && line.contains(r#""connected""#),
            "{line}"
        );
        let e = ControlClient::new(&d.path().join("none"), Duration::from_secs(1))
            .ping()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotRunning);
    }
}
