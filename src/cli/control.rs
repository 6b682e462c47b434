//! The per-mount control socket: `umount`, `stat` and `ctl` talk to the
//! mount process through it. One JSON request line; JSON reply lines
//! (`{"progress":N}` while working, then `{"ok":...}` or `{"error":"..."}`).

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub fn run_dir() -> PathBuf {
    std::env::var_os("SWIFTGATE_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/swiftgate"))
}

/// Socket path for a mountpoint (by its canonical path).
pub fn socket_for(mountpoint: &Path) -> PathBuf {
    let canon = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let h = crate::data::sha256(canon.as_os_str().as_encoded_bytes());
    run_dir().join(format!("mount-{}.sock", hex::encode(&h[..8])))
}

pub type Handler = dyn Fn(&str, &mut dyn FnMut(Value)) -> Result<Value, String> + Send + Sync;

pub fn serve(path: &Path, handler: std::sync::Arc<Handler>) -> anyhow::Result<()> {
    std::fs::create_dir_all(run_dir()).context("creating the run directory")?;
    let _ = std::fs::remove_file(path);
    let listener = crate::gateway::control::bind_private(path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    // Root-only: the socket can unmount and flush.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let h = handler.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &*h);
                });
            }
        })?;
    Ok(())
}

fn handle(conn: UnixStream, handler: &Handler) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(conn.try_clone()?).read_line(&mut line)?;
    let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
    let cmd = req.get("cmd").and_then(|c| c.as_str()).unwrap_or("");
    let mut w = conn.try_clone()?;
    let mut progress = |v: Value| {
        let _ = writeln!(w, "{}", json!({ "progress": v }));
    };
    let reply = match handler(cmd, &mut progress) {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "error": e }),
    };
    let mut w = conn;
    writeln!(w, "{reply}")?;
    w.flush()
}

/// Send a command; `progress` sees progress values. Returns the reply,
/// after the server closed the connection.
pub fn request(
    mountpoint: &Path,
    cmd: &str,
    mut progress: impl FnMut(&Value),
) -> anyhow::Result<Value> {
    let sock = socket_for(mountpoint);
    let conn = UnixStream::connect(&sock).with_context(|| {
        format!(
            "no swiftgate mount process answers for {} (socket {})",
            mountpoint.display(),
            sock.display()
        )
    })?;
    let mut w = conn.try_clone()?;
    writeln!(w, "{}", json!({ "cmd": cmd }))?;
    let mut result = None;
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(p) = v.get("progress") {
            progress(p);
        } else if let Some(ok) = v.get("ok") {
            result = Some(Ok(ok.clone()));
        } else if let Some(e) = v.get("error") {
            result = Some(Err(e.as_str().unwrap_or("unknown error").to_string()));
        }
    }
    match result {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => bail!("{e}"),
        None => bail!("the mount process closed the connection without answering"),
    }
}
