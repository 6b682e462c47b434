//! `swiftgate setup`: the one configuration step. Writes the config, the
//! gateway's block of smb.conf, the recovery key; starts the daemon; ends
//! with `doctor`. Idempotent: the same input writes nothing the second time.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const HEADER: &str = "# Written by `swiftgate setup`; run it again to change this file.";
use crate::gateway::command;
use crate::gateway::config::PACKAGED_DEFAULT;

/// smb.conf as setup merges it: the distribution's own [homes] disabled
/// (compared with the pristine copy Debian keeps).
fn smb_conf_text(p: &Path) -> String {
    let existing = std::fs::read_to_string(p).unwrap_or_default();
    let stock =
        std::fs::read_to_string(crate::gateway::smbconf::DISTRIBUTION_SMB_CONF).unwrap_or_default();
    crate::gateway::smbconf::disable_stock_homes(&existing, &stock)
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
    pub config: PathBuf,
    /// Where the user map, its key, the recovery key and API tokens live.
    #[arg(long, default_value = "/etc/swiftgate")]
    pub etc_dir: PathBuf,
    /// Each user's filesystem: `swift://home-{user}` or `local:///path/{user}`.
    #[arg(long, env = "SWIFTGATE_STORE_URL")]
    pub store_url: Option<String>,
    /// An openrc file (`export OS_AUTH_URL=...`): Keystone settings from it;
    /// its OS_PASSWORD goes into a root-only password file, never the config.
    #[arg(long)]
    pub openrc: Option<PathBuf>,
    /// clouds.yaml cloud name (the daemon reads clouds.yaml itself).
    #[arg(long, env = "OS_CLOUD")]
    pub os_cloud: Option<String>,
    #[arg(long, env = "OS_AUTH_URL")]
    pub os_auth_url: Option<String>,
    #[arg(long, env = "OS_REGION_NAME")]
    pub os_region_name: Option<String>,
    #[arg(long, env = "OS_USERNAME")]
    pub os_username: Option<String>,
    /// A file holding the Keystone password (never the password itself).
    #[arg(long, env = "OS_PASSWORD_FILE")]
    pub os_password_file: Option<PathBuf>,
    #[arg(long, env = "OS_PROJECT_NAME")]
    pub os_project_name: Option<String>,
    #[arg(long, env = "OS_PROJECT_ID")]
    pub os_project_id: Option<String>,
    #[arg(long, env = "OS_USER_DOMAIN_NAME")]
    pub os_user_domain_name: Option<String>,
    #[arg(long, env = "OS_PROJECT_DOMAIN_NAME")]
    pub os_project_domain_name: Option<String>,
    // Options, not clap defaults: on a terminal, what was not given is
    // asked for (the help text still names the default).
    /// [default: /var/cache/swiftgate]
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// [default: 20G, or 3/4 of what the cache disk can give it when less]
    #[arg(long)]
    pub cache_size: Option<String>,
    /// The smb.conf the gateway's block is merged into (other shares kept).
    #[arg(long, default_value = "/etc/samba/smb.conf")]
    pub smb_conf: PathBuf,
    /// Extra [global] lines for the gateway's block (e.g. "smb ports = 445").
    #[arg(long = "smb-global")]
    pub smb_global: Vec<String>,
    /// The Unix group whose members may log in to the console.
    #[arg(long, default_value = "swiftgate-admin")]
    pub admin_group: String,
    /// An existing Unix account put into the admin group.
    #[arg(long)]
    pub admin_user: Option<String>,
    /// The local store in /var/lib/swiftgate and a demo user (password from
    /// SWIFTGATE_DEMO_PASSWORD, else one line on stdin, else "demo").
    #[arg(long)]
    pub demo: bool,
    /// The demo user's name.
    #[arg(long, default_value = "demo", requires = "demo")]
    pub demo_user: String,
    /// The web console's address ([console] listen; default 127.0.0.1:8443,
    /// loopback only: reach it through an SSH tunnel).
    #[arg(long)]
    pub console_listen: Option<String>,
    /// The daemon's control socket ([control] socket; default
    /// /run/swiftgate/gateway.sock). Without systemd the supervisor's
    /// pidfile, supervisor.pid, goes beside it.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// Without systemd: the supervised daemon's log.
    #[arg(long, default_value = super::supervise::DEFAULT_LOG)]
    pub daemon_log: PathBuf,
    /// Restore a lost gateway from this recovery store first (the recovery
    /// key is asked for, or read from stdin), then start it.
    #[arg(long)]
    pub restore: Option<String>,
    /// Write the configuration only: no daemon start, no doctor.
    #[arg(long)]
    pub no_start: bool,
    /// The Keystone password typed at setup's prompt (an openrc without
    /// OS_PASSWORD): never a flag, so never in argv.
    #[arg(skip)]
    pub keystone_password: Option<crate::store::swift::Secret>,
}

pub(super) use crate::gateway::config::DEFAULT_CACHE_DIR;
use crate::gateway::config::DEFAULT_CACHE_SIZE;

/// The default cache size as the config file writes it.
pub(super) fn default_cache_size() -> String {
    format!("{}G", DEFAULT_CACHE_SIZE >> 30)
}

impl SetupArgs {
    fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_CACHE_DIR.into())
    }
    fn cache_size(&self) -> String {
        self.cache_size.clone().unwrap_or_else(default_cache_size)
    }
}

/// The cache size when none is given: the size an earlier setup wrote
/// (a second run must not resize the cache with the disk's free space),
/// else 20G, or three quarters of what the cache's disk can give it
/// (free space plus what the cache already holds) when that is less, in
/// whole GiB and at least 1G. Returns the size and, when it was fitted
/// below the default, why (for the operator).
pub(super) fn fitted_cache_size(a: &SetupArgs) -> (String, Option<String>) {
    if let Some(s) = written_cache_size(&a.config, &a.cache_dir()) {
        return (s, None);
    }
    let dir = a.cache_dir();
    let Some(on) = dir.ancestors().find(|p| p.exists()) else {
        return (default_cache_size(), None);
    };
    let Ok(st) = nix::sys::statvfs::statvfs(on) else {
        return (default_cache_size(), None);
    };
    let free = st.blocks_available() * st.fragment_size();
    let used = if dir.exists() {
        crate::gateway::doctor::disk_usage(&dir)
    } else {
        0
    };
    fit_cache(free, used)
}

fn fit_cache(free: u64, used: u64) -> (String, Option<String>) {
    let room = free.saturating_add(used) / 4 * 3;
    if room >= DEFAULT_CACHE_SIZE {
        return (default_cache_size(), None);
    }
    let gib = (room >> 30).max(1);
    let why = format!(
        "the cache gets {gib}G, three quarters of the {} its disk can give it ({} free{}); --cache-size sets another size",
        super::human(free.saturating_add(used)),
        super::human(free),
        if used > 0 {
            format!(", {} already cached", super::human(used))
        } else {
            String::new()
        }
    );
    (format!("{gib}G"), Some(why))
}

/// `[cache] size` of a config an earlier setup wrote for the same cache
/// directory, as written.
fn written_cache_size(config: &Path, dir: &Path) -> Option<String> {
    let old = std::fs::read_to_string(config).ok()?;
    if !old.starts_with(HEADER) {
        return None;
    }
    let v: toml::Value = toml::from_str(&old).ok()?;
    let cache = v.get("cache")?;
    if cache.get("dir")?.as_str().map(Path::new) != Some(dir) {
        return None;
    }
    match cache.get("size")? {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `export OS_X=value` lines of an openrc. A value that is a shell
/// variable (Horizon's `export OS_PASSWORD=$OS_PASSWORD_INPUT`, read at
/// `source` time) is no value: it is left out.
pub(super) fn read_openrc(p: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let mut out = Vec::new();
    for l in text.lines() {
        let l = l.trim().trim_start_matches("export ").trim();
        if let Some((k, v)) = l.split_once('=') {
            if k.starts_with("OS_") {
                let v = v.trim().trim_matches('"').trim_matches('\'');
                if !v.starts_with('$') {
                    out.push((k.to_string(), v.to_string()));
                }
            }
        }
    }
    if !out.iter().any(|(k, _)| k == "OS_AUTH_URL") {
        bail!("{} has no OS_AUTH_URL: is it an openrc file (Horizon: API Access > Download OpenStack RC File)?", p.display());
    }
    Ok(out)
}

/// Write `body` only when it differs (a second setup touches nothing).
fn write_if_changed(p: &Path, body: &[u8], mode: u32) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read(p).ok().as_deref() == Some(body) {
        return Ok(false);
    }
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    crate::secure::write_private(p, body).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(true)
}

/// The config file's text from the flags.
fn config_text(
    a: &SetupArgs,
    password_file: Option<&Path>,
    env: &[(String, String)],
) -> Result<String> {
    let get = |flag: &Option<String>, var: &str| -> Option<String> {
        // An empty variable (OS_AUTH_URL=) is no setting.
        flag.clone()
            .filter(|v| !v.is_empty())
            .or_else(|| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()))
            .filter(|v| !v.is_empty())
    };
    let store = match (&a.store_url, a.demo) {
        (Some(u), _) => u.clone(),
        (None, true) => "local:///var/lib/swiftgate/homes/{user}".into(),
        (None, false)
            if get(&a.os_auth_url, "OS_AUTH_URL").is_some() || get(&a.os_cloud, "OS_CLOUD").is_some() =>
        {
            "swift://home-{user}".into()
        }
        (None, false) => bail!("no object store given: --store-url swift://home-{{user}} with Keystone settings (--openrc FILE, --os-auth-url ..., or OS_* variables), or --demo for the local store"),
    };
    let e = |p: &Path| p.display().to_string();
    let mut t = String::new();
    writeln!(t, "{HEADER}")?;
    writeln!(t, "[store]\nurl = {}", q(&store))?;
    let mut swift = String::new();
    for (key, val) in [
        ("cloud", get(&a.os_cloud, "OS_CLOUD")),
        ("auth_url", get(&a.os_auth_url, "OS_AUTH_URL")),
        ("region_name", get(&a.os_region_name, "OS_REGION_NAME")),
        ("username", get(&a.os_username, "OS_USERNAME")),
        ("password_file", password_file.map(e)),
        ("project_name", get(&a.os_project_name, "OS_PROJECT_NAME")),
        (
            "project_id",
            get(&a.os_project_id, "OS_PROJECT_ID").or_else(|| get(&None, "OS_TENANT_ID")),
        ),
        (
            "user_domain_name",
            get(&a.os_user_domain_name, "OS_USER_DOMAIN_NAME"),
        ),
        (
            "project_domain_name",
            get(&a.os_project_domain_name, "OS_PROJECT_DOMAIN_NAME"),
        ),
    ] {
        if let Some(v) = val {
            writeln!(swift, "{key} = {}", q(&v))?;
        }
    }
    if !swift.is_empty() {
        writeln!(t, "[store.swift]\n{swift}")?;
    }
    let etc = &a.etc_dir;
    writeln!(
        t,
        "[cache]\ndir = {}\nsize = {}\n\n[users]\ndb = {}\nkey_file = {}\n\n[samba]\nconfig = {}\n",
        q(&e(&a.cache_dir())),
        q(&a.cache_size()),
        q(&e(&etc.join("users.json"))),
        q(&e(&etc.join("secret.key"))),
        q(&e(&a.smb_conf)),
    )?;
    // Only when given: a config of the defaults stays byte-identical.
    if let Some(s) = &a.control_socket {
        writeln!(t, "[control]\nsocket = {}\n", q(&e(s)))?;
    }
    writeln!(t, "[console]")?;
    if let Some(l) = &a.console_listen {
        writeln!(t, "listen = {}", q(l))?;
    }
    writeln!(
        t,
        "admin_group = {}\ntokens_file = {}\n\n[recovery]\nkey_file = {}",
        q(&a.admin_group),
        q(&e(&etc.join("api-tokens.json"))),
        q(&e(&etc.join("recovery.key"))),
    )?;
    Ok(t)
}

/// Everything setup will write, checked; nothing written yet.
struct Plan {
    text: String,
    cfg: crate::gateway::GatewayConfig,
    merged_smb: String,
    /// An openrc's OS_PASSWORD and the file it goes to.
    password: Option<(PathBuf, zeroize::Zeroizing<String>)>,
    /// The cache directory, if the probe created it.
    cache_created: Option<PathBuf>,
}

/// The least free space the cache disk must have: 1 GiB, or the cache
/// size when that is smaller.
const MIN_CACHE_FREE: u64 = 1 << 30;

pub fn run(mut a: SetupArgs) -> Result<i32> {
    // smb.conf's hooks name the config: an absolute path.
    a.config = std::path::absolute(&a.config)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("setup needs root (it writes /etc and starts the daemon)");
    }
    if let Some(from) = &a.restore {
        return restore(&a, from);
    }
    if !super::setup_prompt::ask_missing(&mut a)? {
        eprintln!("setup: aborted, nothing was written");
        return Ok(1);
    }
    if a.cache_size.is_none() {
        let (size, why) = fitted_cache_size(&a);
        if let Some(why) = why {
            println!("setup: {why}");
        }
        a.cache_size = Some(size);
    }
    let plan = check(&a).map_err(|e| anyhow::anyhow!("{e:#} (nothing was written)"))?;
    let mut undo = super::undo::Undo::default();
    let mut changed = Vec::new();
    let mut what = super::services::Changed::default();
    let written = write(&a, &plan, &mut undo, &mut changed, &mut what);
    let new_key = match written {
        Ok(k) => k,
        Err(e) => {
            let left = undo.rollback();
            if left.is_empty() {
                bail!("{e:#} (setup undid what it had written: files restored, what it created removed)");
            }
            bail!(
                "{e:#}; undoing what setup had written failed too: {}",
                left.join("; ")
            );
        }
    };
    if let Some(k) = new_key {
        // On a terminal only: unattended (cloud-init), stdout ends up in
        // logs and on the VM console, where the key must never be.
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            eprintln!("Recovery key (shown only now; write it down and keep it off this machine; `swiftgate recovery show-key` prints it again):");
            println!("{}", k.display().as_str());
        } else {
            println!("setup: a recovery key was created in {}: print it with `swiftgate recovery show-key` (as root) and keep it off this machine", plan.cfg.recovery.key_file.display());
        }
    }
    if changed.is_empty() {
        println!("setup: nothing to change");
    } else {
        println!("setup: wrote {}", changed.join(", "));
    }
    if a.no_start {
        return Ok(0);
    }
    super::services::start(&a.config, &plan.cfg, &a.daemon_log, what)?;
    if a.demo {
        demo_user(&a)?;
    }
    super::doctor::run(&a.config, false)
}

/// `setup --restore`: the state back from the store (the key opens the
/// backup before anything is written), smb.conf's block, the daemon.
fn restore(a: &SetupArgs, from: &str) -> Result<i32> {
    // A conflicting [homes] is refused before the restore writes anything
    // (the restored config may name another share; it is checked again).
    crate::gateway::smbconf::merge(&smb_conf_text(&a.smb_conf), "", "home")?;
    let swift = super::SwiftArgs::default();
    super::recovery::restore(from, &swift, &a.config)?;
    // This machine's smb.conf gets the gateway's block, as at setup.
    let cfg = crate::gateway::GatewayConfig::load(&a.config)?;
    let exe = std::env::current_exe()?;
    let block = crate::gateway::samba::generate(&cfg, &exe, &a.config, &a.smb_global);
    let existing = smb_conf_text(&cfg.samba.config);
    let merged = crate::gateway::smbconf::merge(&existing, &block, &cfg.samba.share)?;
    let smb = write_if_changed(&cfg.samba.config, merged.as_bytes(), 0o644)?;
    if smb {
        println!("setup: wrote {}", cfg.samba.config.display());
    }
    if a.no_start {
        return Ok(0);
    }
    let what = super::services::Changed { daemon: true, smb };
    super::services::start(&a.config, &cfg, &a.daemon_log, what)?;
    super::doctor::run(&a.config, false)
}

/// Every check, before anything is written. The cache directory is the
/// one thing made here (its disk is probed by writing); it is removed
/// again when a check fails.
fn check(a: &SetupArgs) -> Result<Plan> {
    let env = match &a.openrc {
        Some(p) => read_openrc(p)?,
        None => Vec::new(),
    };
    if let Some(l) = &a.console_listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            bail!("--console-listen {l:?} is not ADDR:PORT: give e.g. 127.0.0.1:8443 (loopback, through an SSH tunnel) or 0.0.0.0:8443");
        }
    }
    if let Some(u) = &a.admin_user {
        if nix::unistd::User::from_name(u)?.is_none() {
            bail!("--admin-user {u} is not a Unix account here: create it first (adduser {u}) or leave --admin-user out");
        }
    }
    let typed = a.keystone_password.as_ref().map(|s| s.expose().to_string());
    let password = env
        .iter()
        .find(|(k, _)| k == "OS_PASSWORD")
        .map(|(_, pw)| pw.clone())
        .or(typed)
        .map(|pw| {
            (
                a.etc_dir.join("keystone-password"),
                zeroize::Zeroizing::new(pw),
            )
        });
    let password_file = match &password {
        Some((p, _)) => Some(p.clone()),
        None => a.os_password_file.clone(),
    };
    let text = config_text(a, password_file.as_deref(), &env)?;
    let cfg = crate::gateway::GatewayConfig::parse(&text, &a.config)?;
    // An existing config setup did not write is the admin's: never replaced.
    if let Ok(old) = std::fs::read_to_string(&a.config) {
        if old != text && !old.starts_with(HEADER) && old != PACKAGED_DEFAULT {
            bail!("{} exists and was not written by setup: move it away (or edit it by hand and skip setup)", a.config.display());
        }
    }
    // smb.conf: the merged text (a conflicting [homes] is refused here).
    let exe = std::env::current_exe()?;
    let block = crate::gateway::samba::generate(&cfg, &exe, &a.config, &a.smb_global);
    let existing = smb_conf_text(&a.smb_conf);
    let merged_smb = crate::gateway::smbconf::merge(&existing, &block, &cfg.samba.share)?;
    // The store answers with these settings (the password from memory:
    // its file is not written yet).
    if cfg.store.url.starts_with("swift://") {
        let mut flags = cfg.store.swift.clone();
        if let Some((_, pw)) = &password {
            flags.password = Some(crate::store::swift::Secret::new(pw.as_str()));
        }
        let url = cfg.recovery_url();
        let store = crate::gateway::recovery::open_store(&url, &flags)?;
        store.head(crate::gateway::recovery::OBJECT).map_err(|e| {
            anyhow::anyhow!("the object store does not accept these settings: {e}. Check the Keystone URL, user, password and project")
        })?;
    }
    let cache_created = check_cache(&a.cache_dir(), cfg.cache.size)?;
    Ok(Plan {
        text,
        cfg,
        merged_smb,
        password,
        cache_created,
    })
}

/// The cache disk: writable (a probe file), and with room: at least
/// 1 GiB free, or the cache size when smaller. A directory made for the
/// probe is removed again when it fails. Returns the directory it made.
fn check_cache(dir: &Path, size: u64) -> Result<Option<PathBuf>> {
    let mut top = None;
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.exists() {
            break;
        }
        top = Some(p.to_path_buf());
        cur = p.parent();
    }
    let r = probe_cache(dir, size);
    if r.is_err() {
        if let Some(t) = &top {
            let _ = std::fs::remove_dir_all(t);
        }
    }
    r.map(|_| top)
}

fn probe_cache(dir: &Path, size: u64) -> Result<()> {
    let d = dir.display();
    let why = |e: &std::io::Error| match e.raw_os_error() {
        Some(libc::EROFS) => "it is on a read-only filesystem".to_string(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "its disk is full".to_string(),
        _ => e.to_string(),
    };
    crate::secure::new_dir(dir).map_err(|e| {
        anyhow::anyhow!(
            "the cache directory {d} cannot be created: {}: give --cache-dir a directory on a writable disk with room",
            why(&e)
        )
    })?;
    let probe = dir.join(".setup-probe");
    let w = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&[0u8; 64 << 10])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    w.map_err(|e| {
        anyhow::anyhow!(
            "the cache directory {d} is not writable: {} (a 64 KiB probe failed): free space there, or give --cache-dir a directory on a writable disk with room",
            why(&e)
        )
    })?;
    let st = nix::sys::statvfs::statvfs(dir)?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let need = MIN_CACHE_FREE.min(size);
    if free < need {
        bail!(
            "the cache disk of {d} has {} free; setup wants at least 1 GiB or the cache size ({}), whichever is smaller: free space there, give --cache-dir on a bigger disk, or a smaller --cache-size",
            super::human(free),
            super::human(size),
        );
    }
    Ok(())
}

/// Write `body` only when it differs (a second setup touches nothing);
/// what it held before goes into `undo`.
fn write_journaled(undo: &mut super::undo::Undo, p: &Path, body: &[u8], mode: u32) -> Result<bool> {
    if std::fs::read(p).ok().as_deref() == Some(body) {
        return Ok(false);
    }
    undo.file(p);
    write_if_changed(p, body, mode)
}

/// The writes, in order; a failing one stops the run (the caller undoes).
/// Returns the recovery key when this run created it.
fn write(
    a: &SetupArgs,
    plan: &Plan,
    undo: &mut super::undo::Undo,
    changed: &mut Vec<String>,
    what: &mut super::services::Changed,
) -> Result<Option<crate::gateway::recovery::RecoveryKey>> {
    if let Some(c) = &plan.cache_created {
        undo.created_dir(c.clone());
    }
    undo.dir(&a.etc_dir);
    crate::secure::new_dir(&a.etc_dir)
        .with_context(|| format!("creating {}", a.etc_dir.display()))?;
    if let Some((p, pw)) = &plan.password {
        if write_journaled(undo, p, pw.as_bytes(), 0o600)? {
            changed.push(p.display().to_string());
            what.daemon = true;
        }
    }
    if write_journaled(undo, &a.config, plan.text.as_bytes(), 0o600)? {
        changed.push(a.config.display().to_string());
        what.daemon = true;
    }
    if write_journaled(undo, &a.smb_conf, plan.merged_smb.as_bytes(), 0o644)? {
        changed.push(a.smb_conf.display().to_string());
        what.smb = true;
    }
    if nix::unistd::Group::from_name(&a.admin_group)?.is_none() {
        command::run(
            "groupadd",
            std::process::Command::new("groupadd")
                .arg("--system")
                .arg(&a.admin_group),
        )?;
        undo.group(&a.admin_group);
        changed.push(format!("group {}", a.admin_group));
    }
    if let Some(u) = &a.admin_user {
        let g = nix::unistd::Group::from_name(&a.admin_group)?;
        if !g.is_some_and(|g| g.mem.contains(u)) {
            command::run(
                "usermod",
                std::process::Command::new("usermod").args([
                    "--append",
                    "--groups",
                    &a.admin_group,
                    u,
                ]),
            )?;
            undo.member(u, &a.admin_group);
            changed.push(format!("{u} in group {}", a.admin_group));
        }
    }
    let key_file = &plan.cfg.recovery.key_file;
    if key_file.exists() {
        return Ok(None);
    }
    undo.file(key_file);
    let k = crate::gateway::recovery::init_key(&plan.cfg)
        .with_context(|| format!("creating the recovery key {}", key_file.display()))?;
    changed.push(key_file.display().to_string());
    Ok(Some(k))
}

/// The demo user, once (a second `setup --demo` adds nothing).
fn demo_user(a: &SetupArgs) -> Result<()> {
    use crate::gateway::api::GatewayApiExt;
    let api = super::gateway::api(&a.config)?;
    match api.user(&a.demo_user) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind == crate::gateway::api::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let pw = demo_password()?;
    super::gateway::run_change(
        &*api,
        crate::gateway::api::Request::UserAdd(crate::gateway::api::UserAdd {
            user: a.demo_user.clone(),
            password: crate::gateway::api::Secret::new(pw.as_str()),
            credentials: None,
            adopt: false,
        }),
    )?;
    Ok(())
}

/// SWIFTGATE_DEMO_PASSWORD, else the first line of stdin (not a
/// terminal), else "demo".
fn demo_password() -> Result<zeroize::Zeroizing<String>> {
    use std::io::{BufRead, IsTerminal};
    if let Ok(p) = std::env::var("SWIFTGATE_DEMO_PASSWORD") {
        if !p.is_empty() {
            return Ok(zeroize::Zeroizing::new(p));
        }
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = zeroize::Zeroizing::new(String::new());
        stdin.lock().read_line(&mut line)?;
        let t = line.trim_end_matches(['\r', '\n']);
        if !t.is_empty() {
            return Ok(zeroize::Zeroizing::new(t.to_string()));
        }
    }
    Ok(zeroize::Zeroizing::new("demo".into()))
}

/// Setup's flags parsed from `argv` alone: flags backed by an environment
/// variable (OS_AUTH_URL, ...) are dropped unless given in `argv`, so unit
/// tests do not depend on the shell they run in (run-all exports the
/// Swift fixture's OS_* variables).
#[cfg(test)]
pub(super) fn test_args(argv: &[&str]) -> SetupArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SetupArgs,
    }
    let mut a = T::parse_from(std::iter::once("t").chain(argv.iter().copied())).a;
    let has = |f: &str| {
        argv.iter()
            .any(|x| *x == f || x.starts_with(&format!("{f}=")))
    };
    macro_rules! argv_only {
        ($($field:ident $flag:literal),*) => {$(
            if !has($flag) {
                a.$field = None;
            }
        )*};
    }
    argv_only!(store_url "--store-url", os_cloud "--os-cloud", os_auth_url "--os-auth-url",
        os_region_name "--os-region-name", os_username "--os-username",
        os_password_file "--os-password-file", os_project_name "--os-project-name",
        os_project_id "--os-project-id", os_user_domain_name "--os-user-domain-name",
        os_project_domain_name "--os-project-domain-name");
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> SetupArgs {
        let mut v = vec!["--store-url", "local:///s/{user}"];
        v.extend(extra);
        test_args(&v)
    }

    #[test]
    fn defaults_give_the_same_text_as_before_and_flags_add_their_lines() {
        let t = config_text(&args(&[]), None, &[]).unwrap();
        assert_eq!(
            t,
            format!("{HEADER}\n[store]\nurl = \"local:///s/{{user}}\"\n[cache]\ndir = \"/var/cache/swiftgate\"\nsize = \"20G\"\n\n[users]\ndb = \"/etc/swiftgate/users.json\"\nkey_file = \"/etc/swiftgate/secret.key\"\n\n[samba]\nconfig = \"/etc/samba/smb.conf\"\n\n[console]\nadmin_group = \"swiftgate-admin\"\ntokens_file = \"/etc/swiftgate/api-tokens.json\"\n\n[recovery]\nkey_file = \"/etc/swiftgate/recovery.key\"\n")
        );
        let t = config_text(
            &args(&[
                "--console-listen",
                "0.0.0.0:9443",
                "--control-socket",
                "/run/x/g.sock",
            ]),
            None,
            &[],
        )
        .unwrap();
        let cfg = crate::gateway::GatewayConfig::parse(&t, Path::new("/g.toml")).unwrap();
        assert_eq!(cfg.console.listen, "0.0.0.0:9443");
        assert_eq!(cfg.control.socket, Path::new("/run/x/g.sock"));
        assert_eq!(
            super::super::supervise::pidfile_for(&cfg),
            Path::new("/run/x/supervisor.pid")
        );
    }

    #[test]
    fn the_default_cache_fits_a_small_disk_and_a_second_setup_keeps_the_written_size() {
        const G: u64 = 1 << 30;
        assert_eq!(fit_cache(100 * G, 0), ("20G".to_string(), None));
        assert_eq!(fit_cache(27 * G, 0).0, "20G");
        let (size, why) = fit_cache(10 * G + (G / 10), 0);
        assert_eq!(size, "7G");
        let why = why.unwrap();
        assert!(why.contains("7G") && why.contains("--cache-size"), "{why}");
        // What the cache holds is room it can keep.
        assert_eq!(fit_cache(4 * G, 4 * G).0, "6G");
        assert!(fit_cache(4 * G, 4 * G)
            .1
            .unwrap()
            .contains("already cached"));
        // A nearly full disk still gets 1G; setup's disk check refuses it.
        assert_eq!(fit_cache(G / 2, 0).0, "1G");

        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let cfg = d.path().join("g.toml");
        let mut a = args(&[
            "--cache-dir",
            cache.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]);
        a.cache_size = Some("3G".into());
        std::fs::write(&cfg, config_text(&a, None, &[]).unwrap()).unwrap();
        a.cache_size = None;
        assert_eq!(fitted_cache_size(&a), ("3G".to_string(), None));
        // Another cache directory, or a config setup did not write: fitted.
        let mut b = args(&[
            "--cache-dir",
            "/elsewhere",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        b.cache_size = None;
        assert_eq!(written_cache_size(&b.config, &b.cache_dir()), None);
        std::fs::write(&cfg, "[cache]\nsize = \"3G\"\n").unwrap();
        assert_eq!(written_cache_size(&a.config, &a.cache_dir()), None);
    }

    #[test]
    fn an_openrc_password_read_at_source_time_is_no_password() {
        let d = tempfile::tempdir().unwrap();
        let rc = d.path().join("openrc.sh");
        // Horizon's v3 openrc, as downloaded.
        std::fs::write(&rc, "export OS_AUTH_URL=https://k.example/v3\nexport OS_USERNAME=\"alice\"\necho \"Please enter your OpenStack Password for project $OS_PROJECT_NAME as user $OS_USERNAME: \"\nread -sr OS_PASSWORD_INPUT\nexport OS_PASSWORD=$OS_PASSWORD_INPUT\nexport OS_REGION_NAME=\"tyo1\"\n").unwrap();
        let env = read_openrc(&rc).unwrap();
        assert!(!env.iter().any(|(k, _)| k == "OS_PASSWORD"), "{env:?}");
        assert!(env.contains(&("OS_USERNAME".into(), "alice".into())));
        // A typed password (setup's prompt) takes its place: into the
        // password file, never the config.
        let p = |f: &str| d.path().join(f).display().to_string();
        let (etc, cache, smb, cfg) = (p("etc"), p("cache"), p("smb.conf"), p("g.toml"));
        let mut a = args(&[
            "--openrc",
            rc.to_str().unwrap(),
            "--etc-dir",
            &etc,
            "--cache-dir",
            &cache,
            "--cache-size",
            "1M",
            "--smb-conf",
            &smb,
            "--config",
            &cfg,
        ]);
        a.keystone_password = Some(crate::store::swift::Secret::new("typed"));
        let plan = check(&a).unwrap();
        let (file, pw) = plan.password.unwrap();
        assert_eq!(
            (file, pw.as_str()),
            (d.path().join("etc/keystone-password"), "typed")
        );
        assert!(plan.text.contains("keystone-password") && !plan.text.contains("typed"));
    }
}
