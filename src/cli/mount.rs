//! `mount` (daemonizes, returns once usable), `umount`, `demo`.

use super::{control, parse_duration, parse_size, read_passphrase};
use crate::fs::commands::{self, MountCommand};
use crate::fs::engine::{Engine, OpenOptions};
use crate::fs::fuse::FuseFs;
use crate::fs::Durability;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args, Clone)]
pub struct MountArgs {
    /// local:///absolute/path or swift://CONTAINER[/PREFIX]
    pub store: String,
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub swift: super::SwiftArgs,
    #[arg(long, default_value = crate::gateway::config::DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Local cache size limit.
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,
    /// Dirty (not yet uploaded) bytes before writers wait [default: 2G, or
    /// half the cache if that is smaller].
    #[arg(long, value_parser = parse_size)]
    pub dirty_limit: Option<u64>,
    #[arg(long, default_value_t = 8)]
    pub upload_workers: usize,
    /// local: fsync = on the cache disk; remote: fsync = in the store.
    #[arg(long, default_value = "local")]
    pub durability: Durability,
    /// Longest time namespace changes wait before being shipped (what a
    /// lost host can lose; 1s works: only what changed is sent).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub metadata_interval: Duration,
    /// How long a dirty block rests before upload.
    #[arg(long, default_value = "1s", value_parser = parse_duration, hide = true)]
    pub upload_delay: Duration,
    /// Lifetime of the mount lease (renewed every third of it).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    #[arg(long)]
    pub allow_other: bool,
    /// Mount although a previous mount's lease is left (it must be dead).
    #[arg(long)]
    pub takeover: bool,
    /// On a full cache disk that uploads do not free, writes fail with
    /// ENOSPC after this long (instead of hanging).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub enospc_after: Duration,
    /// Go on with an older metadata generation when the newest ones are
    /// damaged (changes after it are lost; nothing is deleted).
    #[arg(long)]
    pub accept_rollback: bool,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Limit on file sizes and optionally inodes: 50G, 50G,100000, ,100000
    /// (writes past it fail with EDQUOT; df shows it as the size).
    #[arg(long, value_parser = clap::value_parser!(crate::fs::quota::Quota))]
    pub quota: Option<crate::fs::quota::Quota>,
    /// Stay in the foreground (logs to stderr).
    #[arg(long)]
    pub foreground: bool,
    /// Requests of this mount served at once.
    #[arg(long, default_value_t = 8, hide = true)]
    pub fuse_concurrency: usize,
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let canon = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let want = canon.to_string_lossy().replace(' ', "\\040");
    s.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn check_mountpoint(mp: &Path) -> Result<()> {
    match std::fs::metadata(mp) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "{} is a dead swiftgate mount (its process is gone): run `swiftgate umount {}` first",
            mp.display(),
            mp.display()
        ),
        Err(e) => bail!("mountpoint {}: {e}", mp.display()),
        Ok(m) if !m.is_dir() => bail!("mountpoint {} is not a directory", mp.display()),
        Ok(_) => {}
    }
    if is_mountpoint(mp) {
        bail!("{} is already a mountpoint", mp.display());
    }
    if std::fs::read_dir(mp)?.next().is_some() {
        bail!(
            "mountpoint {} is not empty; mount on an empty directory",
            mp.display()
        );
    }
    Ok(())
}

pub fn mount(a: MountArgs) -> Result<i32> {
    check_mountpoint(&a.mountpoint)?;
    if a.dirty_limit.is_some_and(|d| d > a.cache_size) {
        bail!("--dirty-limit must not exceed --cache-size");
    }
    let passphrase = read_passphrase(a.passphrase_file.as_deref())?;
    let mp = a.mountpoint.canonicalize()?;
    if a.foreground {
        return serve(a, mp, passphrase, None);
    }
    // Fork before any thread exists; the parent waits for the child to say
    // the mount is usable (or why it failed).
    let (rd, wr) = nix::unistd::pipe()?;
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(wr);
            let mut msg = String::new();
            std::fs::File::from(rd).read_to_string(&mut msg)?;
            match msg.strip_prefix("OK") {
                Some(rest) => {
                    for w in rest.lines().filter(|l| !l.is_empty()) {
                        eprintln!("swiftgate: warning: {w}");
                    }
                    Ok(0)
                }
                None if msg.is_empty() => bail!("the mount process died during start-up"),
                None => bail!("{}", msg.trim_start_matches("ERR ").trim()),
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let _ = nix::unistd::setsid();
            redirect_stdio(&a.cache_dir);
            let code = match serve(a, mp, passphrase, Some(wr)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e:#}");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

fn redirect_stdio(cache_dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = crate::secure::new_dir(cache_dir);
    let path = cache_dir.join("mount.log");
    // File names and errors go to the log: root's alone (older logs too).
    let _ = crate::secure::private_file(&path);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path);
    let null = std::fs::File::open("/dev/null");
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
        }
        if let Ok(l) = &log {
            libc::dup2(l.as_raw_fd(), 1);
            libc::dup2(l.as_raw_fd(), 2);
        }
    }
}

fn serve(
    a: MountArgs,
    mp: PathBuf,
    passphrase: Option<Vec<u8>>,
    ready: Option<OwnedFd>,
) -> Result<i32> {
    let mut ready = ready.map(|fd| unsafe { std::fs::File::from_raw_fd(fd_into_raw(fd)) });
    let res = start(&a, &mp, passphrase);
    let (engine, mut session) = match res {
        Ok(v) => v,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            if let Some(w) = ready.as_mut() {
                let _ = write!(w, "ERR {}", msg.join(": "));
                return Ok(1);
            }
            return Err(e);
        }
    };
    let unmounter = Arc::new(parking_lot::Mutex::new(session.unmount_callable()));
    let sock = control::socket_for(&mp);
    {
        let engine = engine.clone();
        let unmounter = unmounter.clone();
        let handler: Arc<control::Handler> = Arc::new(
            move |cmd: &str, progress: &mut dyn FnMut(serde_json::Value)| {
                handle(&engine, &unmounter, cmd, progress)
            },
        );
        control::serve(&sock, handler)?;
    }
    {
        // SIGTERM/SIGINT: unmount cleanly; the session then ends
        // and everything is flushed below.
        let unmounter = unmounter.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        std::thread::spawn(move || {
            for _ in signals.forever() {
                tracing::info!("signal received: unmounting");
                if let Err(e) = unmounter.lock().unmount() {
                    tracing::error!("unmount on signal failed: {e}");
                }
            }
        });
    }
    // Served by the shared FUSE readers (as the gateway's homes are);
    // this thread waits for the session's end.
    let (ended_tx, ended) = std::sync::mpsc::sync_channel(1);
    let served = crate::fs::fuse_readers::serve(session, move |why| {
        let _ = ended_tx.send(why);
    });
    if let Err(e) = served {
        let _ = engine.close();
        let _ = std::fs::remove_file(&sock);
        return Err(e).context("serving the FUSE session");
    }
    if let Some(mut w) = ready.take() {
        let _ = write!(w, "OK\n{}", engine.warnings.join("\n"));
    } else {
        for w in &engine.warnings {
            eprintln!("swiftgate: warning: {w}");
        }
    }
    tracing::info!(mountpoint = %mp.display(), "mounted");
    let why = ended.recv().ok().flatten();
    let closed = engine.close();
    let _ = std::fs::remove_file(&sock);
    closed?;
    if let Some(e) = why {
        // Flushed and closed all the same; the exit status says the mount
        // did not end by an unmount.
        bail!(
            "the FUSE device failed ({e}); the filesystem was flushed and closed, mount it again"
        );
    }
    tracing::info!("unmounted cleanly");
    Ok(0)
}

fn fd_into_raw(fd: OwnedFd) -> i32 {
    use std::os::fd::IntoRawFd;
    fd.into_raw_fd()
}

/// The dirty limit given, else the default scaled down to a small cache.
fn dirty_limit(a: &MountArgs) -> u64 {
    a.dirty_limit
        .unwrap_or_else(|| crate::gateway::config::default_dirty_limit(2 << 30, a.cache_size))
}

fn start(
    a: &MountArgs,
    mp: &Path,
    passphrase: Option<Vec<u8>>,
) -> Result<(Arc<Engine>, fuser::Session<FuseFs>)> {
    let store = crate::store::open_with(&a.store, &a.swift.open_options())?;
    let engine = Engine::open(
        store,
        &OpenOptions {
            cache_dir: a.cache_dir.clone(),
            cache_size: a.cache_size,
            dirty_limit: dirty_limit(a),
            upload_workers: a.upload_workers,
            upload_pool: None,
            upload_delay: a.upload_delay,
            durability: a.durability,
            metadata_interval: a.metadata_interval,
            lease_ttl: a.lease_ttl,
            takeover: a.takeover,
            passphrase,
            accept_rollback: a.accept_rollback,
            nospace_wait: a.enospc_after,
        },
    )?;
    if let Some(q) = a.quota {
        engine.fs.set_quota(q);
    }
    let settings = crate::fs::fuse::MountSettings {
        allow_other: a.allow_other,
        devices_and_setuid: true,
        concurrency: a.fuse_concurrency,
    };
    match crate::fs::fuse::session(&engine, mp, &settings) {
        Ok(s) => Ok((engine, s)),
        Err(e) => {
            let _ = engine.close();
            Err(e).with_context(|| format!("mounting FUSE at {}", mp.display()))
        }
    }
}

fn handle(
    engine: &Arc<Engine>,
    unmounter: &parking_lot::Mutex<fuser::SessionUnmounter>,
    cmd: &str,
    progress: &mut dyn FnMut(serde_json::Value),
) -> std::result::Result<serde_json::Value, String> {
    let p = std::cell::RefCell::new(progress);
    let progress = |n: usize| (p.borrow_mut())(json!(n));
    if cmd == "umount" {
        // Superseded by another mount: nothing more can be stored, so
        // there is nothing to wait for; it still unmounts.
        if engine.fs.superseded() {
            unmounter
                .lock()
                .unmount()
                .map_err(|e| format!("unmounting failed: {e} (is a file still open?)"))?;
            return Ok(serde_json::json!({
                "warning": format!(
                    "this mount had been taken over by another mount; changes it had not stored by then stay in its local cache ({}) and are not in the filesystem",
                    engine.dir.display()
                )
            }));
        }
        engine.flush(&progress).map_err(|e| e.to_string())?;
        unmounter.lock().unmount().map_err(|e| {
            format!("data is flushed, but unmounting failed: {e} (is a file still open?)")
        })?;
        return Ok(serde_json::Value::Null);
    }
    let cmd = MountCommand::parse(cmd).ok_or_else(|| format!("unknown command {cmd:?}"))?;
    commands::run(engine, cmd, &progress)
}

pub fn umount(mp: &Path) -> Result<i32> {
    let sock = control::socket_for(mp);
    // A socket nobody listens on is left by a killed mount process.
    let alive = sock.exists() && std::os::unix::net::UnixStream::connect(&sock).is_ok();
    if !alive {
        return detach_dead(mp, &sock);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} uploading: {pos}/{len} blocks left {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let r = control::request(mp, "umount", |p| {
        let n = p.as_u64().unwrap_or(0);
        if n > bar.length().unwrap_or(0) {
            bar.set_length(n);
        }
        bar.set_position(n);
    });
    bar.finish_and_clear();
    if let Ok(v) = &r {
        if let Some(w) = v["warning"].as_str() {
            eprintln!("warning: {w}");
        }
    }
    if let Err(e) = r {
        // The process may have died while we talked to it (killed, or
        // crashed): then the mount is dead and only needs detaching.
        std::thread::sleep(Duration::from_millis(500));
        if std::os::unix::net::UnixStream::connect(&sock).is_err() {
            return detach_dead(mp, &sock);
        }
        return Err(e);
    }
    // The process exits once the lease is released; wait for the socket.
    for _ in 0..600 {
        if !sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(0)
}

/// The mount process is gone: detach its dead mount.
fn detach_dead(mp: &Path, sock: &Path) -> Result<i32> {
    let _ = std::fs::remove_file(sock);
    let dead =
        matches!(std::fs::metadata(mp), Err(ref e) if e.raw_os_error() == Some(libc::ENOTCONN));
    if !(is_mountpoint(mp) || dead) {
        bail!("{} is not a swiftgate mount", mp.display());
    }
    nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH)
        .with_context(|| format!("detaching {}", mp.display()))?;
    eprintln!(
        "the mount process for {} was gone; detached the mount. Blocks not yet uploaded stay in the cache and upload at the next mount",
        mp.display()
    );
    Ok(0)
}

pub fn demo(store_dir: &Path, mp: &Path) -> Result<i32> {
    let url = format!("local://{}", store_dir.display());
    std::fs::create_dir_all(store_dir)?;
    std::fs::create_dir_all(mp)?;
    let store = crate::store::open(&url)?;
    if crate::fs::engine::read_params(&store).is_err() {
        let p = crate::fs::engine::mkfs(
            &store,
            &crate::fs::engine::MkfsOptions {
                block_size: crate::fs::engine::DEFAULT_BLOCK_SIZE,
                compression: crate::data::Compression::Zstd(3),
                passphrase: None,
                force: false,
                root_owner: None,
            },
        )?;
        println!("created demo filesystem {} in {url}", p.uuid);
    }
    drop(store);
    if is_mountpoint(mp) {
        println!("{} is already mounted", mp.display());
        return Ok(0);
    }
    let args = MountArgs {
        store: url.clone(),
        mountpoint: mp.to_path_buf(),
        swift: Default::default(),
        cache_dir: PathBuf::from(crate::gateway::config::DEFAULT_CACHE_DIR),
        cache_size: 10 << 30,
        dirty_limit: None,
        upload_workers: 8,
        durability: Durability::Local,
        metadata_interval: Duration::from_secs(30),
        upload_delay: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(60),
        allow_other: true,
        takeover: false,
        accept_rollback: false,
        enospc_after: crate::fs::engine::DEFAULT_NOSPACE_WAIT,
        passphrase_file: None,
        quota: None,
        foreground: false,
        fuse_concurrency: 8,
    };
    mount(args)?;
    println!("mounted {url} at {}", mp.display());
    println!(
        "try: cp -r /usr/share/doc {0}/ && swiftgate stat {0}",
        mp.display()
    );
    println!("unmount with: swiftgate umount {}", mp.display());
    Ok(0)
}
