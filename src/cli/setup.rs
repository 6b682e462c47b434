//! `swiftgate setup`: the one configuration step. Writes the config, the
//! gateway's block of smb.conf, the recovery key; starts the daemon; ends
//! with `doctor`. Idempotent: the same input writes nothing the second time.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HEADER: &str = "# Written by `swiftgate setup`; run it again to change this file.";

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
    #[arg(long, default_value = "/var/cache/swiftgate")]
    pub cache_dir: PathBuf,
    #[arg(long, default_value = "20G")]
    pub cache_size: String,
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
    /// The local store in /var/lib/swiftgate and a demo user (password on
    /// stdin, or "demo" when stdin is empty).
    #[arg(long)]
    pub demo: bool,
    /// Restore a lost gateway from this recovery store first (the recovery
    /// key is asked for, or read from stdin), then start it.
    #[arg(long)]
    pub restore: Option<String>,
    /// Write the configuration only: no daemon start, no doctor.
    #[arg(long)]
    pub no_start: bool,
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `export OS_X=value` lines of an openrc.
fn read_openrc(p: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let mut out = Vec::new();
    for l in text.lines() {
        let l = l.trim().trim_start_matches("export ").trim();
        if let Some((k, v)) = l.split_once('=') {
            if k.starts_with("OS_") {
                let v = v.trim().trim_matches('"').trim_matches('\'');
                out.push((k.to_string(), v.to_string()));
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
    crate::gateway::state::write_private(p, body)
        .with_context(|| format!("writing {}", p.display()))?;
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
        "[cache]\ndir = {}\nsize = {}\n\n[users]\ndb = {}\nkey_file = {}\n\n[samba]\nconfig = {}\n\n[console]\nadmin_group = {}\ntokens_file = {}\n\n[recovery]\nkey_file = {}",
        q(&e(&a.cache_dir)),
        q(&a.cache_size),
        q(&e(&etc.join("users.json"))),
        q(&e(&etc.join("secret.key"))),
        q(&e(&a.smb_conf)),
        q(&a.admin_group),
        q(&e(&etc.join("api-tokens.json"))),
        q(&e(&etc.join("recovery.key"))),
    )?;
    Ok(t)
}

fn run_cmd(what: &str, c: &mut std::process::Command) -> Result<()> {
    let o = c.output().with_context(|| format!("running {what}"))?;
    if !o.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

pub fn run(mut a: SetupArgs) -> Result<i32> {
    // smb.conf's hooks name the config: an absolute path.
    a.config = std::path::absolute(&a.config)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("setup needs root (it writes /etc and starts the daemon)");
    }
    if let Some(from) = &a.restore {
        let swift = super::SwiftArgs::default();
        super::recovery::restore(from, &swift, &a.config)?;
        // This machine's smb.conf gets the gateway's block, as at setup.
        let cfg = crate::gateway::GatewayConfig::load(&a.config)?;
        let exe = std::env::current_exe()?;
        let block = crate::gateway::samba::generate(&cfg, &exe, &a.config, &a.smb_global);
        let existing = std::fs::read_to_string(&cfg.samba.config).unwrap_or_default();
        let merged = crate::gateway::smbconf::merge(&existing, &block, &cfg.samba.share)?;
        if write_if_changed(&cfg.samba.config, merged.as_bytes(), 0o644)? {
            println!("setup: wrote {}", cfg.samba.config.display());
        }
        if a.no_start {
            return Ok(0);
        }
        return start_and_check(&a);
    }
    let mut changed = Vec::new();
    // Keystone: from an openrc, its password into a root-only file.
    let env = match &a.openrc {
        Some(p) => read_openrc(p)?,
        None => Vec::new(),
    };
    let mut password_file = a.os_password_file.clone();
    let mut new_password_file = None;
    if let Some((_, pw)) = env.iter().find(|(k, _)| k == "OS_PASSWORD") {
        let p = a.etc_dir.join("keystone-password");
        let existed = p.exists();
        crate::secure::new_dir(&a.etc_dir)?;
        if write_if_changed(&p, pw.as_bytes(), 0o600)? {
            changed.push(p.display().to_string());
            if !existed {
                new_password_file = Some(p.clone());
            }
        }
        password_file = Some(p);
    }
    // Whatever fails from here on leaves no new password file behind.
    let r = configure(&a, password_file.as_deref(), &env, &mut changed);
    if r.is_err() {
        if let Some(p) = new_password_file {
            let _ = std::fs::remove_file(p);
        }
    }
    let cfg = r?;
    finish(&a, &cfg, changed)
}

fn configure(
    a: &SetupArgs,
    password_file: Option<&Path>,
    env: &[(String, String)],
    changed: &mut Vec<String>,
) -> Result<crate::gateway::GatewayConfig> {
    let text = config_text(a, password_file, env)?;
    let cfg = crate::gateway::GatewayConfig::parse(&text, &a.config)?;
    // The store answers with these settings, before anything is written
    // (a wrong password or an unreachable Keystone: one message, no config).
    if cfg.store.url.starts_with("swift://") {
        let url = cfg.recovery_url();
        let store = crate::gateway::recovery::open_store(&url, &cfg.store.swift)?;
        store.head(crate::gateway::recovery::OBJECT).map_err(|e| {
            anyhow::anyhow!("the object store does not accept these settings: {e}. Check the Keystone URL, user, password and project (nothing was written)")
        })?;
    }
    // An existing config setup did not write is the admin's: never replaced.
    if let Ok(old) = std::fs::read_to_string(&a.config) {
        if old != text && !old.starts_with(HEADER) {
            bail!("{} exists and was not written by setup: move it away (or edit it by hand and skip setup)", a.config.display());
        }
    }
    // The cache disk: writable, before anything is written.
    crate::secure::new_dir(&a.cache_dir).with_context(|| {
        format!(
            "the cache directory {} cannot be created",
            a.cache_dir.display()
        )
    })?;
    let probe = a.cache_dir.join(".setup-probe");
    std::fs::write(&probe, b"x").with_context(|| {
        format!(
            "the cache directory {} is not writable (full or read-only disk?)",
            a.cache_dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    // smb.conf: the merged text, checked before anything is written.
    let exe = std::env::current_exe()?;
    let block = crate::gateway::samba::generate(&cfg, &exe, &a.config, &a.smb_global);
    let existing = std::fs::read_to_string(&a.smb_conf).unwrap_or_default();
    let merged = crate::gateway::smbconf::merge(&existing, &block, &cfg.samba.share)?;
    crate::secure::new_dir(&a.etc_dir)?;
    if write_if_changed(&a.config, text.as_bytes(), 0o600)? {
        changed.push(a.config.display().to_string());
    }
    if write_if_changed(&a.smb_conf, merged.as_bytes(), 0o644)? {
        changed.push(a.smb_conf.display().to_string());
    }
    if nix::unistd::Group::from_name(&a.admin_group)?.is_none() {
        run_cmd(
            "groupadd",
            std::process::Command::new("groupadd")
                .arg("--system")
                .arg(&a.admin_group),
        )?;
        changed.push(format!("group {}", a.admin_group));
    }
    if let Some(u) = &a.admin_user {
        let g = nix::unistd::Group::from_name(&a.admin_group)?;
        if !g.is_some_and(|g| g.mem.contains(u)) {
            run_cmd(
                "usermod",
                std::process::Command::new("usermod").args([
                    "--append",
                    "--groups",
                    &a.admin_group,
                    u,
                ]),
            )?;
            changed.push(format!("{u} in group {}", a.admin_group));
        }
    }
    if !cfg.recovery.key_file.exists() {
        let k = crate::gateway::recovery::init_key(&cfg)?;
        // On a terminal only: unattended (cloud-init), stdout ends up in
        // logs and on the VM console, where the key must never be.
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            eprintln!("Recovery key (shown only now; write it down and keep it off this machine; `swiftgate recovery show-key` prints it again):");
            println!("{}", k.display().as_str());
        } else {
            println!("setup: a recovery key was created in {}: print it with `swiftgate recovery show-key` (as root) and keep it off this machine", cfg.recovery.key_file.display());
        }
        changed.push(cfg.recovery.key_file.display().to_string());
    }
    Ok(cfg)
}

fn finish(a: &SetupArgs, cfg: &crate::gateway::GatewayConfig, changed: Vec<String>) -> Result<i32> {
    if changed.is_empty() {
        println!("setup: nothing to change");
    } else {
        println!("setup: wrote {}", changed.join(", "));
    }
    if a.no_start {
        return Ok(0);
    }
    if a.demo
        && !crate::gateway::usermap::UserMap::open(&cfg.users.db, &cfg.users.key_file)?
            .contains("demo")?
    {
        start_and_check(a)?;
        let api = super::gateway::api(&a.config)?;
        let pw = std::env::var("SWIFTGATE_DEMO_PASSWORD").unwrap_or_else(|_| "demo".into());
        super::gateway::run_change(
            &*api,
            crate::gateway::api::Request::UserAdd(crate::gateway::api::UserAdd {
                user: "demo".into(),
                password: crate::gateway::api::Secret::new(pw),
                credentials: None,
                adopt: false,
            }),
        )?;
        return Ok(0);
    }
    start_and_check(a)
}

/// Start (or restart) the daemon, then `doctor`.
fn start_and_check(a: &SetupArgs) -> Result<i32> {
    let systemd = std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd");
    if systemd {
        run_cmd(
            "systemctl",
            std::process::Command::new("systemctl").args(["enable", "swiftgate"]),
        )?;
        run_cmd(
            "systemctl",
            std::process::Command::new("systemctl").args(["restart", "swiftgate", "smbd"]),
        )?;
        println!("setup: the daemon runs under systemd (swiftgate.service)");
    } else {
        use crate::gateway::api::GatewayApiExt;
        let c = super::gateway::client(&a.config, Duration::from_secs(5))?;
        if c.ping().is_err() {
            let log = PathBuf::from("/var/log/swiftgate");
            crate::secure::new_dir(&log)?;
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log.join("daemon.log"))?;
            use std::os::unix::process::CommandExt;
            std::process::Command::new(std::env::current_exe()?)
                .args(["serve", "--config"])
                .arg(&a.config)
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .process_group(0)
                .spawn()
                .context("starting the daemon")?;
            let until = std::time::Instant::now() + Duration::from_secs(60);
            while c.ping().is_err() {
                if std::time::Instant::now() > until {
                    bail!("the daemon did not start: see /var/log/swiftgate/daemon.log");
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        println!("setup: no systemd here (PID 1 is not systemd): the daemon runs in the background, NOT restarted if it dies (log: /var/log/swiftgate/daemon.log)");
    }
    super::doctor::run(&a.config, false)
}
