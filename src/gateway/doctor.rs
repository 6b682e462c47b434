//! `swiftgate doctor`: is this machine a working gateway? Each check says
//! what is wrong and the command that fixes it. Checks only look: nothing
//! is created, started or changed (the CLI formats the result).

use super::api::{ErrorKind, GatewayApiExt};
use super::config::{GatewayConfig, UserMapMode};
use super::control::ControlClient;
use crate::store::swift::SwiftStore;
use crate::store::StoreError;
use serde::Serialize;
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth fixing, but the gateway works.
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub message: String,
    /// The command (or edit) that fixes it; None when nothing is wrong.
    pub fix: Option<String>,
}

/// Tokens, leases and idle timers go by wall clocks on both sides.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// A store round trip slower than this makes every first mount slow.
pub const SLOW_STORE: Duration = Duration::from_secs(2);
/// The environment file the systemd unit gives the daemon (OS_* lines).
pub const OPENRC_ENV: &str = "/etc/swiftgate/openrc.env";

fn ok(check: &str, message: impl Into<String>) -> Check {
    Check {
        check: check.into(),
        status: Status::Ok,
        message: message.into(),
        fix: None,
    }
}

fn bad(check: &str, status: Status, message: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        check: check.into(),
        status,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

fn fail(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
    bad(check, Status::Fail, message, fix)
}

fn warn(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
    bad(check, Status::Warn, message, fix)
}

/// Every check, in the order an admin would fix them.
pub fn run(config_path: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = check_config(config_path, &mut out);
    out.extend(check_fuse());
    let smb_conf = cfg
        .as_ref()
        .map(|c| c.samba.config.clone())
        .unwrap_or_else(|| PathBuf::from("/etc/samba/smb.conf"));
    out.push(check_smbd());
    let dump = testparm(&smb_conf);
    out.extend(check_smb_conf(cfg.as_ref(), &smb_conf, &dump));
    out.push(check_smb_port(&smb_conf, &dump));
    if let Some(cfg) = &cfg {
        let daemon = ControlClient::new(&cfg.control.socket, Duration::from_secs(5));
        out.extend(check_store(cfg, config_path, &daemon));
        out.push(check_cache(cfg));
        out.extend(check_secrets(cfg));
        out.push(check_daemon(cfg, config_path, &daemon));
        out.push(check_console(cfg));
    }
    out
}

fn systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn start_daemon_fix(config_path: &Path) -> String {
    if systemd() {
        "systemctl start swiftgate (journalctl -u swiftgate says why it stopped)".into()
    } else {
        format!(
            "swiftgate serve --config {} (no systemd here: run it under a supervisor)",
            config_path.display()
        )
    }
}

fn mode_of(m: &std::fs::Metadata) -> u32 {
    m.mode() & 0o7777
}

fn check_config(path: &Path, out: &mut Vec<Check>) -> Option<GatewayConfig> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.push(fail(
                "config",
                format!("cannot read {}: {e}", path.display()),
                format!(
                    "write {} (the package installs a commented one; the README's \"The gateway\" lists every key)",
                    path.display()
                ),
            ));
            return None;
        }
    };
    let cfg = match GatewayConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            out.push(fail(
                "config",
                e.to_string(),
                format!("edit {} at the line named", path.display()),
            ));
            return None;
        }
    };
    let mode = mode_of(&meta);
    let inline_secret = cfg.store.swift.password.is_some()
        || cfg.store.swift.application_credential_secret.is_some();
    if inline_secret && (mode & 0o077 != 0 || meta.uid() != 0) {
        out.push(fail(
            "config",
            format!(
                "{} holds a Swift secret but is mode {mode:04o} owned by uid {}: other local users can read it",
                path.display(),
                meta.uid()
            ),
            format!("chown root:root {p} && chmod 600 {p}", p = path.display()),
        ));
    } else {
        out.push(ok(
            "config",
            format!("{} parses (mode {mode:04o})", path.display()),
        ));
    }
    Some(cfg)
}

/// `name` in PATH, or in the sbin directories a non-login root shell may
/// lack.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn check_fuse() -> Vec<Check> {
    let mut out = Vec::new();
    match std::fs::metadata("/dev/fuse") {
        Ok(m) if m.file_type().is_char_device() => out.push(ok("fuse-device", "/dev/fuse")),
        _ => out.push(fail(
            "fuse-device",
            "/dev/fuse is missing: no home can be mounted",
            "modprobe fuse (in a container: mknod -m 666 /dev/fuse c 10 229, or give the container /dev/fuse)",
        )),
    }
    match which("fusermount3") {
        Some(p) => out.push(ok("fusermount3", p.display().to_string())),
        None => out.push(fail(
            "fusermount3",
            "fusermount3 is not installed",
            "apt install fuse3",
        )),
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("fuse"))
    {
        out.push(ok("fuse-module", "the kernel knows FUSE"));
    } else {
        out.push(fail(
            "fuse-module",
            "the kernel has no FUSE filesystem type (module not loaded)",
            "modprobe fuse && echo fuse >> /etc/modules",
        ));
    }
    out
}

/// Whether a process whose command is `smbd` runs (its helpers are
/// `smbd-notifyd` and the like; the main one is plain `smbd`).
fn smbd_running() -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == "smbd")
    })
}

fn check_smbd() -> Check {
    if which("smbd").is_none() {
        return fail(
            "smbd",
            "Samba's smbd is not installed",
            "apt install samba samba-vfs-modules",
        );
    }
    if smbd_running() {
        ok("smbd", "smbd is running")
    } else {
        fail(
            "smbd",
            "smbd is installed but not running: nobody can connect",
            start_smbd_fix(systemd()),
        )
    }
}

fn start_smbd_fix(systemd: bool) -> &'static str {
    if systemd {
        "systemctl enable --now smbd"
    } else {
        // Without systemd, setup starts smbd itself (cli/services.rs).
        "swiftgate setup starts it; or by hand: /etc/init.d/smbd start"
    }
}

/// `testparm -s CONF`: the effective configuration (includes expanded) or
/// why Samba refuses the file.
fn testparm(conf: &Path) -> Result<String, String> {
    let o = Command::new(which("testparm").unwrap_or_else(|| "testparm".into()))
        .arg("-s")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run testparm: {e}"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("unknown parameter") || l.contains("can't")
        })
        .collect();
    if !o.status.success() || !problems.is_empty() {
        let why = if problems.is_empty() {
            err.trim().to_string()
        } else {
            problems.join("; ")
        };
        return Err(why);
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The section `[name]` of testparm's dump: its `key = value` lines.
fn section(dump: &str, name: &str) -> Option<HashMap<String, String>> {
    let mut lines = dump.lines().map(str::trim);
    let head = format!("[{}]", name.to_ascii_lowercase());
    lines.by_ref().find(|l| l.to_ascii_lowercase() == head)?;
    Some(
        lines
            .take_while(|l| !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
    )
}

fn check_smb_conf(
    cfg: Option<&GatewayConfig>,
    conf: &Path,
    dump: &Result<String, String>,
) -> Vec<Check> {
    let regen = format!(
        "swiftgate samba-config > {c} (or merge its sections into {c}), then smbcontrol smbd reload-config",
        c = conf.display()
    );
    let dump = match dump {
        Ok(d) => d,
        Err(e) if which("testparm").is_none() => {
            return vec![fail(
                "smb.conf",
                format!("testparm is not installed: {e}"),
                "apt install samba-common-bin",
            )]
        }
        Err(e) => {
            return vec![fail(
                "smb.conf",
                format!("testparm -s {} refuses it: {e}", conf.display()),
                format!("fix what testparm names, or regenerate it: {regen}"),
            )]
        }
    };
    let Some(cfg) = cfg else {
        return vec![ok(
            "smb.conf",
            format!("testparm accepts {}", conf.display()),
        )];
    };
    let mut out = Vec::new();
    let share = &cfg.samba.share;
    match section(dump, share) {
        None => out.push(fail(
            "smb.conf",
            format!(
                "{} has no [{share}] section: users have no home share",
                conf.display()
            ),
            regen.clone(),
        )),
        Some(s) if !s.get("root preexec").is_some_and(|v| v.contains("hook connect")) => out
            .push(fail(
                "smb.conf",
                format!(
                    "[{share}] in {} has no `root preexec = swiftgate hook connect %U`: homes would never be mounted",
                    conf.display()
                ),
                regen.clone(),
            )),
        Some(_) => out.push(ok(
            "smb.conf",
            format!(
                "testparm accepts {}; [{share}] mounts homes through the hook",
                conf.display()
            ),
        )),
    }
    if let Some(s) = section(dump, share) {
        out.push(check_recycle(cfg, conf, share, &s, &regen));
    }
    // testparm expands includes: look for the line in the file itself.
    let want = cfg.share_smb_conf();
    let text = std::fs::read_to_string(conf).unwrap_or_default();
    let included = text.lines().any(|l| {
        let l = l.trim();
        l.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("include") && Path::new(v.trim()) == want
        })
    });
    if included {
        out.push(ok(
            "smb.conf-include",
            format!("{} includes {}", conf.display(), want.display()),
        ));
    } else {
        out.push(fail(
            "smb.conf-include",
            format!(
                "{} does not include {}: team shares would not appear",
                conf.display(),
                want.display()
            ),
            format!(
                "echo 'include = {}' >> {} && smbcontrol smbd reload-config",
                want.display(),
                conf.display()
            ),
        ));
    }
    out
}

/// Whether the home share's recycle bin is what `[recycle]` says: the
/// config changes without smb.conf following until it is regenerated.
fn check_recycle(
    cfg: &GatewayConfig,
    conf: &Path,
    share: &str,
    s: &HashMap<String, String>,
    regen: &str,
) -> Check {
    let in_conf = s
        .get("vfs objects")
        .is_some_and(|v| v.split_whitespace().any(|m| m == "recycle"));
    match (cfg.recycle.enabled, in_conf) {
        (true, true) => ok(
            "recycle",
            format!(
                "[{share}] moves deleted files to {}; kept {} days",
                super::samba::RECYCLE_DIR,
                cfg.recycle.keep_days
            ),
        ),
        (false, false) => ok("recycle", "the recycle bin is off: a delete is final"),
        (true, false) => warn(
            "recycle",
            format!(
                "[recycle] is on in the config, but [{share}] in {} has no recycle module: deleted files are gone for good",
                conf.display()
            ),
            regen,
        ),
        (false, true) => warn(
            "recycle",
            format!(
                "[recycle] is off in the config, but [{share}] in {} still moves deleted files to {}, where nothing purges them",
                conf.display(),
                super::samba::RECYCLE_DIR
            ),
            regen,
        ),
    }
}

/// Local TCP ports in LISTEN state (IPv4 and IPv6).
fn listening_ports() -> Vec<u16> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for l in text.lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == "0A" {
                if let Some(port) = cols[1].rsplit(':').next() {
                    if let Ok(p) = u16::from_str_radix(port, 16) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

fn check_smb_port(conf: &Path, dump: &Result<String, String>) -> Check {
    // testparm prints `smb ports` only when it differs from the default.
    let ports: Vec<u16> = dump
        .as_ref()
        .ok()
        .and_then(|d| section(d, "global"))
        .and_then(|g| g.get("smb ports").cloned())
        .map(|v| {
            v.split(|c: char| c == ',' || c.is_whitespace())
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![445]);
    let Some(&port) = ports.first() else {
        return fail(
            "smb-port",
            format!("no port in `smb ports` of {}", conf.display()),
            format!("set `smb ports = 445` in [global] of {}", conf.display()),
        );
    };
    if listening_ports().contains(&port) {
        ok("smb-port", format!("port {port} is listening"))
    } else {
        fail(
            "smb-port",
            format!("nothing listens on port {port}: clients cannot connect"),
            format!(
                "{}; `ss -ltnp 'sport = :{port}'` shows who holds it",
                if systemd() {
                    "systemctl restart smbd"
                } else {
                    "start smbd"
                }
            ),
        )
    }
}

/// `KEY=VALUE` lines of an openrc-style file (`export` and quotes allowed).
fn env_file(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

fn skew_check(server: &str, date: Option<SystemTime>) -> Check {
    let Some(d) = date else {
        return warn(
            "clock",
            format!("{server} sent no Date header: clock skew not checked"),
            "make sure the clock is synchronised: timedatectl set-ntp true",
        );
    };
    let now = SystemTime::now();
    let (skew, behind) = match now.duration_since(d) {
        Ok(s) => (s, false),
        Err(e) => (e.duration(), true),
    };
    if skew > MAX_SKEW {
        warn(
            "clock",
            format!(
                "this machine's clock is {}s {} {server}'s: token expiry and mount leases go wrong",
                skew.as_secs(),
                if behind { "behind" } else { "ahead of" }
            ),
            "timedatectl set-ntp true (or chronyc makestep)",
        )
    } else {
        ok(
            "clock",
            format!("within {}s of {server}", skew.as_secs().max(1)),
        )
    }
}

fn store_fix(e: &StoreError, config: &str) -> String {
    match e {
        StoreError::Auth(_) => format!(
            "correct the credentials in [store.swift] of {config} (or the OS_* lines of {OPENRC_ENV}); `openstack token issue` with the same values shows what Keystone says"
        ),
        StoreError::Denied(_) => {
            "give the identity the object-store role (ask the cloud's admin), or use one that has it".into()
        }
        StoreError::Transient { .. } => format!(
            "check auth_url/storage URL in {config} and that this machine reaches it (curl -sI URL; firewall, DNS, proxy)"
        ),
        _ => format!("check [store] and [store.swift] in {config}"),
    }
}

fn check_store(cfg: &GatewayConfig, config_path: &Path, daemon: &ControlClient) -> Vec<Check> {
    let url = cfg.store_url("swiftgate-doctor");
    if let Some(path) = url.strip_prefix("local://") {
        // The homes' parent directory (the daemon creates it with the
        // first home; then its own parent must be there).
        let base = Path::new(path).parent().unwrap_or(Path::new("/"));
        let dir = if base.exists() {
            base
        } else {
            base.parent().unwrap_or(base)
        };
        return vec![match std::fs::read_dir(dir) {
            Ok(_) => ok(
                "store",
                format!("local store under {} is readable", dir.display()),
            ),
            Err(e) => fail(
                "store",
                format!("local store directory {}: {e}", dir.display()),
                format!("install -d -m 700 {}", base.display()),
            ),
        }];
    }
    let config = &config_path.display().to_string();
    let file_env = env_file(Path::new(OPENRC_ENV));
    let get = |k: &str| std::env::var(k).ok().or_else(|| file_env.get(k).cloned());
    let store = SwiftStore::open_with_env(&url, &cfg.store.swift, &get);
    let store = match store {
        Ok(s) => s,
        Err(e) if cfg.users.mode == UserMapMode::PerUser => {
            return per_user_store(cfg, daemon, &e);
        }
        Err(e) => {
            let fix = store_fix(&e, config);
            return vec![fail("store", e.to_string(), fix)];
        }
    };
    match store.probe() {
        Ok(p) => {
            let ms = p.latency.as_millis();
            let store_check = if p.latency > SLOW_STORE {
                warn(
                    "store",
                    format!(
                        "credentials accepted; Swift at {} answered in {ms} ms (slow: first mounts will take long)",
                        p.storage_url
                    ),
                    "check the network path to the object store (a region closer to this VM?)",
                )
            } else {
                ok(
                    "store",
                    format!(
                        "credentials accepted; Swift at {} answered in {ms} ms",
                        p.storage_url
                    ),
                )
            };
            vec![store_check, skew_check(&p.storage_url, p.server_date)]
        }
        Err(e) => {
            let fix = store_fix(&e, config);
            vec![fail("store", e.to_string(), fix)]
        }
    }
}

/// Per-user mode with no identity of the gateway's own: the daemon's
/// background probe (with a home's credentials) is the best witness.
fn per_user_store(cfg: &GatewayConfig, daemon: &ControlClient, open: &StoreError) -> Vec<Check> {
    let mut out = Vec::new();
    match daemon.overview() {
        Ok(o) => match (o.store.reachable, o.store.error) {
            (Some(true), _) => out.push(ok(
                "store",
                format!(
                    "per-user mode: the daemon reached {} ({} ms)",
                    o.store.url,
                    o.store.latency_ms.unwrap_or(0)
                ),
            )),
            (Some(false), err) => out.push(fail(
                "store",
                format!(
                    "per-user mode: the daemon cannot reach {}: {}",
                    o.store.url,
                    err.unwrap_or_default()
                ),
                "check [store.swift] auth_url and region, and the network to them".to_string(),
            )),
            (None, _) => out.push(warn(
                "store",
                "per-user mode: the daemon has not probed the store yet",
                "run doctor again in a minute",
            )),
        },
        Err(_) => out.push(warn(
            "store",
            format!(
                "per-user mode and no credentials of the gateway's own ({open}): each user's are verified at `swiftgate user add`; with the daemon running, doctor reports its store probe"
            ),
            "start the daemon, then run doctor again",
        )),
    }
    if let Some(auth) = &cfg.store.swift.auth_url {
        out.push(match http_date(auth) {
            Ok(d) => skew_check(auth, d),
            Err(e) => fail(
                "keystone",
                format!("Keystone at {auth} cannot be reached: {e}"),
                "check [store.swift] auth_url and that this machine reaches it (curl -sI URL)",
            ),
        });
    }
    out
}

/// GET `url` unauthenticated: its `Date` header.
fn http_date(url: &str) -> Result<Option<SystemTime>, String> {
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let r = c
        .get(url)
        .send()
        .map_err(|e| crate::store::swift::auth::cause(&e))?;
    Ok(r.headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok()))
}

/// Bytes the files under `dir` take on disk (bounded walk).
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > 1_000_000 {
                return total;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                todo.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

fn check_cache(cfg: &GatewayConfig) -> Check {
    let dir = &cfg.cache.dir;
    let d = dir.display();
    let m = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            return fail(
                "cache",
                format!("{d} is not a directory"),
                format!("move it away, then: install -d -m 700 -o root -g root {d}"),
            )
        }
        Err(e) => {
            return fail(
                "cache",
                format!("cache directory {d}: {e}"),
                format!("install -d -m 700 -o root -g root {d}"),
            )
        }
    };
    let mode = mode_of(&m);
    if m.uid() != 0 || mode & 0o077 != 0 {
        return fail(
            "cache",
            format!(
                "{d} is mode {mode:04o} owned by uid {}: the cache holds plaintext file contents, only root may enter it",
                m.uid()
            ),
            format!("chown root:root {d} && chmod 700 {d}"),
        );
    }
    let free = match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => s.blocks_available() * s.fragment_size(),
        Err(e) => {
            return warn(
                "cache",
                format!("cannot tell the free space of {d}: {e}"),
                format!("df -h {d}"),
            )
        }
    };
    let used = disk_usage(dir);
    if free + used < cfg.cache.size {
        warn(
            "cache",
            format!(
                "{d} may grow to {} but its disk has {} free (the cache holds {})",
                gib(cfg.cache.size),
                gib(free),
                gib(used)
            ),
            "lower [cache] size in the config, or give the cache a bigger disk".to_string(),
        )
    } else {
        ok(
            "cache",
            format!(
                "{d} is 0700 root; {} free for a cache of {}",
                gib(free),
                gib(cfg.cache.size)
            ),
        )
    }
}

/// Root-only files holding secrets: the user map's key and the map, and
/// the Swift secret files the config names.
fn check_secrets(cfg: &GatewayConfig) -> Vec<Check> {
    let mut files: Vec<(&str, &Path, bool)> = vec![
        ("user-map-key", &cfg.users.key_file, false),
        ("user-map", &cfg.users.db, false),
    ];
    let s = &cfg.store.swift;
    for p in [
        &s.password_file,
        &s.application_credential_secret_file,
        &s.auth_token_file,
    ]
    .into_iter()
    .flatten()
    {
        files.push(("swift-secret", p, true));
    }
    let mut out = Vec::new();
    for (name, p, must_exist) in files {
        let d = p.display();
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                out.push(ok(name, format!("{d}: not created yet (first user add)")))
            }
            Err(e) => out.push(fail(
                name,
                format!("{d}: {e}"),
                format!(
                    "write it (root-only): install -m 600 /dev/null {d}, then put the secret in"
                ),
            )),
            Ok(m) if m.uid() != 0 || mode_of(&m) & 0o077 != 0 => out.push(fail(
                name,
                format!(
                    "{d} is mode {:04o} owned by uid {}: other local users can read a secret",
                    mode_of(&m),
                    m.uid()
                ),
                format!("chown root:root {d} && chmod 600 {d}"),
            )),
            Ok(_) => out.push(ok(name, format!("{d} is 0600 root"))),
        }
    }
    out
}

fn check_daemon(cfg: &GatewayConfig, config_path: &Path, c: &ControlClient) -> Check {
    let sock = cfg.control.socket.display();
    match c.ping() {
        Ok(v) if v != env!("CARGO_PKG_VERSION") => warn(
            "daemon",
            format!(
                "the daemon on {sock} runs version {v}, this binary is {}",
                env!("CARGO_PKG_VERSION")
            ),
            if systemd() {
                "systemctl restart swiftgate".to_string()
            } else {
                "restart `swiftgate serve`".to_string()
            },
        ),
        Ok(v) => ok("daemon", format!("answers on {sock} (version {v})")),
        Err(e) if e.kind == ErrorKind::NotRunning => fail(
            "daemon",
            format!("the gateway daemon is not running (no answer on {sock})"),
            start_daemon_fix(config_path),
        ),
        Err(e) if e.kind == ErrorKind::Denied => {
            fail("daemon", e.message.clone(), "run swiftgate doctor as root")
        }
        Err(e) => fail(
            "daemon",
            format!(
                "the daemon on {sock} does not answer properly: {}",
                e.message
            ),
            if systemd() {
                "systemctl restart swiftgate (journalctl -u swiftgate says why)".to_string()
            } else {
                "restart `swiftgate serve`".to_string()
            },
        ),
    }
}

fn check_console(cfg: &GatewayConfig) -> Check {
    let c = &cfg.console;
    if !c.enabled {
        return ok("console", "disabled ([console] enabled = false)");
    }
    let Ok(mut addr) = c.listen.parse::<std::net::SocketAddr>() else {
        return fail(
            "console",
            format!("[console] listen {:?} is not an address", c.listen),
            "set [console] listen = \"127.0.0.1:8443\"",
        );
    };
    if addr.port() == 0 {
        return warn(
            "console",
            "[console] listen has port 0 (a new port at every start): not checked",
            "set a fixed port, e.g. [console] listen = \"127.0.0.1:8443\"",
        );
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let tls = c.tls_cert.is_some();
    let url = format!("{}://{addr}/healthz", if tls { "https" } else { "http" });
    // Liveness, not trust: the console's certificate may be self-signed.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .danger_accept_invalid_certs(true)
        .build();
    let r = client.map_err(|e| e.to_string()).and_then(|cl| {
        cl.get(&url)
            .send()
            .map_err(|e| crate::store::swift::auth::cause(&e))
    });
    match r {
        Ok(r) if r.status().is_success() => ok("console", format!("{url} answers")),
        Ok(r) => fail(
            "console",
            format!("{url} answered {}", r.status()),
            "something else holds the console's port: pick another [console] listen, or stop it",
        ),
        Err(e) => fail(
            "console",
            format!("the console does not answer at {url}: {e}"),
            if systemd() {
                "it runs inside the daemon: systemctl restart swiftgate (journalctl -u swiftgate says why it did not start)"
            } else {
                "it runs inside the daemon: restart `swiftgate serve` and read its log"
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testparm_sections_and_env_files_are_read() {
        let dump = "[global]\n\tsmb ports = 4450\n\n[home]\n\tpath = /x/%U\n\troot preexec = /usr/bin/swiftgate hook connect %U\n";
        let g = section(dump, "global").unwrap();
        assert_eq!(g["smb ports"], "4450");
        let h = section(dump, "HOME").unwrap();
        assert!(h["root preexec"].contains("hook connect"));
        assert!(!h.contains_key("smb ports"));
        assert!(section(dump, "other").is_none());
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("openrc.env");
        std::fs::write(
            &p,
            "# c\nexport OS_AUTH_URL=\"https://k/v3\"\nOS_USERNAME='u'\nOS_REGION_NAME=tyo1\n",
        )
        .unwrap();
        let e = env_file(&p);
        assert_eq!(e["OS_AUTH_URL"], "https://k/v3");
        assert_eq!(e["OS_USERNAME"], "u");
        assert_eq!(e["OS_REGION_NAME"], "tyo1");
    }

    #[test]
    fn a_stopped_smbd_without_systemd_is_started_by_setup_or_its_init_script() {
        assert_eq!(start_smbd_fix(true), "systemctl enable --now smbd");
        let f = start_smbd_fix(false);
        assert!(
            f.contains("swiftgate setup") && f.contains("/etc/init.d/smbd start"),
            "{f}"
        );
    }

    #[test]
    fn clock_skew_over_the_limit_warns() {
        let now = SystemTime::now();
        assert_eq!(skew_check("s", Some(now)).status, Status::Ok);
        let c = skew_check("s", Some(now - Duration::from_secs(120)));
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("ahead of"), "{}", c.message);
        let c = skew_check("s", Some(now + Duration::from_secs(120)));
        assert!(c.message.contains("behind"), "{}", c.message);
        assert!(c.fix.unwrap().contains("timedatectl"));
    }
}
