//! `stat` and `ctl`: asked of the mount's own process (a standalone
//! mount) or, when none answers, of the gateway daemon that mounted the
//! home there.

use super::control;
use crate::fs::commands::MountCommand;
use anyhow::{bail, Result};
use serde_json::Value;
use std::path::Path;

pub fn mount_command(mp: &Path, cmd: MountCommand, config: &Path) -> Result<Value> {
    let sock = control::socket_for(mp);
    match std::os::unix::net::UnixStream::connect(&sock) {
        Ok(_) => {
            return control::request(mp, &cmd.wire(), |_| {});
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "permission denied on the control socket {} of {}: only root controls mounts (run this as root)",
            sock.display(),
            mp.display()
        ),
        Err(_) => {}
    }
    let nobody = format!(
        "no swiftgate mount process answers for {} (socket {})",
        mp.display(),
        sock.display()
    );
    let cfg = match crate::gateway::GatewayConfig::load(config) {
        Ok(c) => c,
        Err(crate::gateway::config::ConfigError::Read { ref cause, .. })
            if cause.kind() == std::io::ErrorKind::NotFound =>
        {
            bail!(
                "{nobody}, and there is no gateway configuration {} (--config)",
                config.display()
            )
        }
        Err(e) => bail!("{nobody}; asking the gateway: {e}"),
    };
    use crate::gateway::api::{ErrorKind, GatewayApi, Request, Response};
    // A flush uploads whatever is dirty: it may take long.
    let timeout = match cmd {
        MountCommand::Stat => std::time::Duration::from_secs(60),
        _ => std::time::Duration::from_secs(24 * 3600),
    };
    let c = crate::gateway::control::ControlClient::new(&cfg.control.socket, timeout);
    match c.call(Request::HomeCommand {
        mountpoint: mp.to_path_buf(),
        command: cmd,
    }) {
        Ok(Response::Value(v)) => Ok(v),
        Ok(other) => bail!("unexpected answer from the gateway: {other:?}"),
        Err(e) if e.kind == ErrorKind::Denied => Err(e.into()),
        Err(e) => bail!("{nobody}, and the gateway: {e}"),
    }
}
