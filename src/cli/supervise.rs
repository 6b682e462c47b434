//! `swiftgate supervise`: the daemon on a host without systemd. Detaches,
//! holds a pidfile, runs `swiftgate serve` as its child and restarts it
//! when it dies; SIGTERM stops both (the daemon flushes every home first),
//! SIGHUP restarts the daemon (after a package upgrade: the new binary).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEFAULT_LOG: &str = "/var/log/swiftgate/daemon.log";
/// A daemon that stayed up this long starts the backoff afresh.
const STABLE: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
    pub config: PathBuf,
    /// The daemon's and the supervisor's output (appended, 0600).
    #[arg(long, default_value = DEFAULT_LOG)]
    pub log: PathBuf,
    /// Default: supervisor.pid beside the config's control socket
    /// (/run/swiftgate/supervisor.pid).
    #[arg(long)]
    pub pidfile: Option<PathBuf>,
}

/// The supervisor's pidfile for a config: beside its control socket, so a
/// gateway with a socket of its own has a supervisor of its own.
pub fn pidfile_for(cfg: &crate::gateway::GatewayConfig) -> PathBuf {
    cfg.control
        .socket
        .parent()
        .unwrap_or(Path::new("/run/swiftgate"))
        .join("supervisor.pid")
}

/// The pid of the live supervisor `pidfile` names: one holds its lock.
pub fn running(pidfile: &Path) -> Option<u32> {
    use nix::fcntl::{Flock, FlockArg};
    let f = std::fs::File::open(pidfile).ok()?;
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        // Nobody holds it: a stale file of a supervisor that is gone.
        Ok(_) => None,
        Err((mut f, _)) => {
            let mut s = String::new();
            f.read_to_string(&mut s).ok()?;
            s.trim().parse().ok()
        }
    }
}

/// The pid of the process that answers on a Unix socket (its listener).
pub fn socket_owner(socket: &Path) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// The binary by its path, looked up at every start: after a package
/// upgrade replaced it, the next start runs the new one.
fn daemon_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the swiftgate binary")?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

pub fn run(a: SuperviseArgs) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("supervise needs root (the daemon mounts FUSE filesystems)");
    }
    let config = std::path::absolute(&a.config)?;
    // A config the daemon would refuse: said here, not in a restart loop.
    let cfg = crate::gateway::GatewayConfig::load(&config)?;
    let pidfile = a.pidfile.clone().unwrap_or_else(|| pidfile_for(&cfg));
    let exe = daemon_exe()?;
    if let Some(d) = pidfile.parent() {
        crate::secure::new_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&pidfile)
        .with_context(|| format!("opening {}", pidfile.display()))?;
    use nix::fcntl::{Flock, FlockArg};
    let lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err(_) => {
            let pid = running(&pidfile).map_or("?".into(), |p| p.to_string());
            bail!(
                "a supervisor runs already (pid {pid}, {}): `kill -HUP {pid}` restarts its daemon, `kill {pid}` stops it",
                pidfile.display()
            );
        }
    };
    let log_dir = a.log.parent().unwrap_or(Path::new("/"));
    crate::secure::new_dir(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let _ = crate::secure::private_file(&a.log);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&a.log)
        .with_context(|| format!("opening the log {}", a.log.display()))?;
    // Fork before any thread exists; the parent returns once the child
    // has written the pidfile (whoever started it can then find it).
    let (rd, wr) = nix::unistd::pipe()?;
    // SAFETY: single-threaded here; the child only continues this code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            // The child holds the lock now; an unlock here would free it.
            std::mem::forget(lock);
            let mut msg = String::new();
            std::fs::File::from(rd).read_to_string(&mut msg)?;
            if msg != "OK" {
                bail!("the supervisor did not start: see {}", a.log.display());
            }
            println!(
                "swiftgate supervise: running (pid {child}), the daemon restarted if it dies; log {}",
                a.log.display()
            );
            Ok(0)
        }
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            let mut lock = lock;
            let me = std::process::id();
            let wrote = lock
                .set_len(0)
                .and_then(|_| lock.write_all(format!("{me}\n").as_bytes()));
            redirect_stdio(&log);
            if let Err(e) = wrote {
                tracing::error!("cannot write {}: {e}", pidfile.display());
                std::process::exit(1);
            }
            let _ = std::fs::File::from(wr).write_all(b"OK");
            let code = match supervise(&exe, &config) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("supervisor: {e:#}");
                    1
                }
            };
            let _ = std::fs::remove_file(&pidfile);
            drop(lock);
            std::process::exit(code);
        }
    }
}

fn redirect_stdio(log: &std::fs::File) {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null");
    // SAFETY: dup2 onto the standard descriptors only.
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
        }
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
}

fn spawn(exe: &Path, config: &Path) -> std::io::Result<Child> {
    let c = Command::new(exe)
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .spawn()?;
    tracing::warn!("supervisor: started the daemon (pid {})", c.id());
    Ok(c)
}

/// SIGTERM (the daemon flushes every home), then wait however long that
/// takes.
fn stop(mut c: Child, why: &str) {
    tracing::warn!(
        "supervisor: {why}: stopping the daemon (pid {}), flushing every home",
        c.id()
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    match c.wait() {
        Ok(s) => tracing::warn!("supervisor: the daemon stopped ({s})"),
        Err(e) => tracing::error!("supervisor: waiting for the daemon: {e}"),
    }
}

fn supervise(exe: &Path, config: &Path) -> Result<()> {
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for s in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(s, term.clone())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
    let mut child: Option<(Child, Instant)> = None;
    let mut next_start = Some(Instant::now());
    let mut backoff = Duration::from_secs(1);
    loop {
        if term.load(Ordering::SeqCst) {
            if let Some((c, _)) = child.take() {
                stop(c, "SIGTERM");
            }
            tracing::warn!("supervisor: exiting");
            return Ok(());
        }
        if hup.swap(false, Ordering::SeqCst) {
            if let Some((c, _)) = child.take() {
                stop(c, "SIGHUP (restart)");
            }
            next_start = Some(Instant::now());
            backoff = Duration::from_secs(1);
            continue; // a SIGTERM during the stop wins over the start
        }
        if next_start.is_some_and(|t| Instant::now() >= t) {
            next_start = None;
            match spawn(exe, config) {
                Ok(c) => child = Some((c, Instant::now())),
                Err(e) => {
                    tracing::warn!(
                        "supervisor: cannot start {}: {e}; trying again in {}s",
                        exe.display(),
                        backoff.as_secs()
                    );
                    next_start = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Some((c, since)) = &mut child {
            if let Some(status) = c.try_wait()? {
                let ran = since.elapsed();
                child = None;
                if status.success() {
                    // A clean shutdown somebody asked for (kill PID): not
                    // undone behind their back.
                    tracing::warn!("supervisor: the daemon exited cleanly ({status}): not restarted; the supervisor exits");
                    return Ok(());
                }
                if ran >= STABLE {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(
                    "supervisor: the daemon exited ({status}) after {}s: restarting it in {}s",
                    ran.as_secs(),
                    backoff.as_secs()
                );
                next_start = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
