//! Setup's last step: the daemon and smbd running with what setup wrote.
//! systemd when it is PID 1, else the daemon under `swiftgate supervise`
//! and smbd started by hand; restarted (reloaded) only when setup changed
//! their configuration, so a second identical setup restarts nothing.

use crate::gateway::command;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::supervise;
use crate::gateway::api::GatewayApiExt;
use crate::gateway::GatewayConfig;

/// What this setup run changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Changed {
    /// The config or a secret the daemon reads at start.
    pub daemon: bool,
    /// smb.conf.
    pub smb: bool,
}

/// How long the daemon may take to answer after a (re)start.
const DAEMON_PATIENCE: Duration = Duration::from_secs(60);
const SMBD_PATIENCE: Duration = Duration::from_secs(20);

fn pid1() -> String {
    std::fs::read_to_string("/proc/1/comm")
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn succeeds(c: &mut Command) -> bool {
    c.output().is_ok_and(|o| o.status.success())
}

pub fn start(config: &Path, cfg: &GatewayConfig, log: &Path, changed: Changed) -> Result<()> {
    let pid1 = pid1();
    if pid1 == "systemd" {
        return start_systemd(changed);
    }
    let sup = start_supervised(config, cfg, log, changed)?;
    println!("setup: no systemd here (PID 1 is {pid1}): the daemon runs under `swiftgate supervise` (pid {sup}), restarted if it dies; log {}", log.display());
    start_smbd(&cfg.samba.config, changed.smb)
}

fn start_systemd(changed: Changed) -> Result<()> {
    let systemctl = |args: &[&str]| command::run("systemctl", Command::new("systemctl").args(args));
    let active =
        |unit: &str| succeeds(Command::new("systemctl").args(["is-active", "--quiet", unit]));
    systemctl(&["enable", "--quiet", "swiftgate"])?;
    if !active("swiftgate") {
        systemctl(&["start", "swiftgate"])?;
        println!("setup: started swiftgate.service");
    } else if changed.daemon {
        // SIGTERM flushes every home before the new config is read.
        systemctl(&["restart", "swiftgate"])?;
        println!("setup: restarted swiftgate.service (its configuration changed)");
    }
    if !active("smbd") {
        systemctl(&["start", "smbd"])?;
        println!("setup: started smbd.service");
    } else if changed.smb {
        systemctl(&["reload-or-restart", "smbd"])?;
        println!("setup: reloaded smbd (smb.conf changed)");
    }
    println!("setup: the daemon runs under systemd (swiftgate.service)");
    Ok(())
}

/// Until the daemon answers (and, after a restart, a different process
/// than `old` does).
fn wait_daemon(cfg: &GatewayConfig, old: Option<u32>, log: &Path) -> Result<()> {
    let c =
        crate::gateway::control::ControlClient::new(&cfg.control.socket, Duration::from_secs(5));
    let until = Instant::now() + DAEMON_PATIENCE;
    loop {
        if c.ping().is_ok() {
            let now = supervise::socket_owner(&cfg.control.socket);
            if old.is_none() || (now.is_some() && now != old) {
                return Ok(());
            }
        }
        if Instant::now() > until {
            bail!(
                "the daemon did not answer on {} within {} s: see {} (and `swiftgate doctor`)",
                cfg.control.socket.display(),
                DAEMON_PATIENCE.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The supervisor's pid once the daemon answers.
fn start_supervised(
    config: &Path,
    cfg: &GatewayConfig,
    log: &Path,
    changed: Changed,
) -> Result<u32> {
    let pidfile = supervise::pidfile_for(cfg);
    if let Some(pid) = supervise::running(&pidfile) {
        if changed.daemon {
            let old = supervise::socket_owner(&cfg.control.socket);
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGHUP,
            )
            .with_context(|| format!("signalling the supervisor (pid {pid})"))?;
            wait_daemon(cfg, old, log)?;
            println!("setup: restarted the daemon (its configuration changed)");
        } else {
            wait_daemon(cfg, None, log)?;
        }
        return Ok(pid);
    }
    if let Some(other) = supervise::socket_owner(&cfg.control.socket) {
        bail!(
            "a daemon (pid {other}) answers on {} but not under `swiftgate supervise`: stop it (`kill {other}`; it flushes every home first) and run setup again",
            cfg.control.socket.display()
        );
    }
    let exe = std::env::current_exe()?;
    command::run(
        "swiftgate supervise",
        Command::new(exe)
            .args(["supervise", "--config"])
            .arg(config)
            .arg("--log")
            .arg(log),
    )?;
    wait_daemon(cfg, None, log)?;
    supervise::running(&pidfile).with_context(|| {
        format!(
            "the supervisor stopped right after its start: see {}",
            log.display()
        )
    })
}

fn smbcontrol(conf: &Path, what: &str) -> Command {
    let mut c = Command::new("smbcontrol");
    c.arg("-s").arg(conf).args(["smbd", what]);
    c
}

/// smbd without systemd: started when it does not answer, told to reload
/// when smb.conf changed.
fn start_smbd(conf: &Path, changed: bool) -> Result<()> {
    if succeeds(&mut smbcontrol(conf, "ping")) {
        if changed {
            command::run(
                "smbcontrol smbd reload-config",
                &mut smbcontrol(conf, "reload-config"),
            )?;
            println!("setup: smbd runs; told it to reload smb.conf");
        } else {
            println!("setup: smbd runs");
        }
        return Ok(());
    }
    let init = Path::new("/etc/init.d/smbd");
    // The init script knows only the default smb.conf.
    let how = if init.exists() && conf == Path::new("/etc/samba/smb.conf") {
        command::run("/etc/init.d/smbd start", Command::new(init).arg("start"))?;
        "/etc/init.d/smbd start"
    } else {
        command::run(
            "smbd --daemon",
            Command::new("smbd").arg("--daemon").arg("-s").arg(conf),
        )?;
        "smbd --daemon"
    };
    let until = Instant::now() + SMBD_PATIENCE;
    while !succeeds(&mut smbcontrol(conf, "ping")) {
        if Instant::now() > until {
            bail!(
                "smbd did not start ({how}): see its log (`testparm -s {}` checks the config)",
                conf.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("setup: started smbd ({how})");
    Ok(())
}
