//! Command-line interface. Errors become one clear line and a non-zero exit.

pub mod control;
pub mod doctor;
pub mod gateway;
pub mod mount;
pub mod recovery;
pub mod services;
pub mod setup;
mod setup_prompt;
pub mod snapshot;
pub mod stat;
pub mod supervise;
pub mod token;
pub mod undo;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::data::Compression;

#[derive(Debug, Parser)]
#[command(
    name = "swiftgate",
    version,
    about = "File gateway whose bytes live in object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a filesystem in an object store.
    Mkfs {
        /// local:///absolute/path or swift://CONTAINER[/PREFIX]
        store: String,
        #[command(flatten)]
        swift: SwiftArgs,
        /// No encryption (blocks are still compressed and checksummed).
        #[arg(long, conflicts_with = "passphrase_file")]
        plain: bool,
        /// File whose first line is the passphrase.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Block size, e.g. 4M (power of two, 64K..64M).
        #[arg(long, default_value = "4M", value_parser = parse_size)]
        block_size: u64,
        /// none, zstd or zstd:LEVEL.
        #[arg(long, default_value = "zstd:3")]
        compression: Compression,
        /// Erase whatever the store holds.
        #[arg(long)]
        force: bool,
    },
    /// Mount a filesystem; returns once it is usable.
    Mount(mount::MountArgs),
    /// Flush everything to the store, then unmount.
    Umount { mountpoint: PathBuf },
    /// Check a filesystem (not mounted) and repair what can be repaired.
    Fsck {
        store: String,
        #[command(flatten)]
        swift: SwiftArgs,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Download and verify every block too.
        #[arg(long)]
        verify_data: bool,
        /// Only report, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// When the newest metadata generations are damaged, repair from the
        /// newest readable one (what came after it is lost; nothing is
        /// deleted, objects only it lacks are quarantined).
        #[arg(long)]
        accept_rollback: bool,
        /// Delete the objects quarantined after a rollback.
        #[arg(long)]
        release_quarantine: bool,
    },
    /// Figures of a mounted filesystem (standalone or a gateway home).
    Stat {
        mountpoint: PathBuf,
        #[arg(long)]
        json: bool,
        /// The gateway to ask when the mountpoint is one of its homes.
        #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// Control a mounted filesystem (standalone or a gateway home).
    Ctl {
        mountpoint: PathBuf,
        /// gc: rewrite packs that are mostly dead now (otherwise every minute)
        #[arg(value_parser = ["flush", "backup-metadata", "drop-cache", "gc"])]
        action: String,
        /// The gateway to ask when the mountpoint is one of its homes.
        #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// Run the gateway daemon under a supervisor, for hosts without systemd:
    /// detaches, writes a pidfile, restarts `serve` when it dies (1 s
    /// backoff doubling to 30 s). SIGTERM stops it (every home flushed),
    /// SIGHUP restarts the daemon (e.g. into an upgraded binary).
    Supervise(supervise::SuperviseArgs),
    /// Run the gateway daemon (foreground): per-user homes for Samba.
    Serve {
        #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// Samba hooks: `connect %U` (root preexec), `disconnect %U` (root postexec).
    Hook {
        #[arg(value_parser = ["connect", "disconnect"])]
        action: String,
        user: String,
        #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// Print the smb.conf for the gateway's home share.
    SambaConfig {
        #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
        /// Extra [global] lines, e.g. "smb ports = 445".
        #[arg(long = "global")]
        extra_global: Vec<String>,
    },
    /// Manage gateway users (Unix + Samba accounts and their homes).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        #[arg(long, global = true, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// API tokens for the console's JSON API and /metrics.
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
        #[arg(long, global = true, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// Configure this machine as a gateway (idempotent): config, smb.conf
    /// block, recovery key, daemon start, doctor.
    Setup(setup::SetupArgs),
    /// Disaster recovery: the gateway's state, encrypted, in the store.
    Recovery {
        #[command(subcommand)]
        cmd: recovery::RecoveryCmd,
        #[arg(long, global = true, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// Snapshots of a home, a share or a mount (Windows' Previous Versions).
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot::SnapshotCmd,
        #[arg(long, global = true, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// Team shares: one filesystem per share, for the members of a group.
    Share {
        #[command(subcommand)]
        cmd: ShareCmd,
        #[arg(long, global = true, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
    /// Check this machine as a gateway (FUSE, Samba, store, cache, daemon,
    /// console); each problem with its fix. Exit status 1 if any failed.
    Doctor {
        #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
        /// A JSON list of {check, status, message, fix}.
        #[arg(long)]
        json: bool,
    },
    /// Homes mounted by the running gateway.
    Status {
        #[arg(long, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create (first time) and mount a demo filesystem on the local store.
    Demo {
        #[arg(long, default_value = "/var/lib/swiftgate/demo-store")]
        store_dir: PathBuf,
        #[arg(long, default_value = "/mnt/swiftgate")]
        mountpoint: PathBuf,
    },
    /// Recycle bins (#recycle) of homes and team shares: purge what expired
    /// now, or empty one.
    Recycle {
        #[command(subcommand)]
        cmd: RecycleCmd,
        #[arg(long, global = true, default_value = "/etc/swiftgate/gateway.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecycleCmd {
    /// Delete the entries older than keep_days now (what the daemon does
    /// every purge_interval): of USER's home, a --share, or every mounted bin.
    Purge {
        #[arg(conflicts_with = "share")]
        user: Option<String>,
        #[arg(long)]
        share: Option<String>,
    },
    /// Delete everything in the recycle bin of USER's home (mounted for it
    /// if needed), or of a --share.
    Empty {
        #[arg(required_unless_present = "share", conflicts_with = "share")]
        user: Option<String>,
        #[arg(long)]
        share: Option<String>,
    },
    /// How many days USER's recycle bin keeps deleted files (0: until
    /// emptied); without DAYS, as [recycle] keep_days again. (A team
    /// share's: `share update NAME --recycle-keep-days N`.)
    Keep { user: String, days: Option<u32> },
}

impl Cmd {
    /// Whether the command goes on in the background with its stderr
    /// redirected to a log file.
    pub fn detaches(&self) -> bool {
        match self {
            Cmd::Mount(a) => !a.foreground,
            Cmd::Demo { .. } | Cmd::Supervise(_) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Verify the store credentials, create the home filesystem if new, the
    /// Unix account (no login shell) and the Samba account. The Samba
    /// password is read from stdin (or prompted for).
    Add {
        user: String,
        #[command(flatten)]
        keystone: UserKeystoneArgs,
        /// Take over an existing Unix account that swiftgate did not create
        /// (outside [users] group or below uid_min); never root.
        #[arg(long)]
        adopt: bool,
        /// The home's quota, as `user quota` takes it (50G, 50G,100000).
        #[arg(long, value_parser = clap::value_parser!(crate::fs::quota::Quota))]
        quota: Option<crate::fs::quota::Quota>,
    },
    /// Refuse the user's sessions (Samba account disabled too); data kept.
    Disable {
        user: String,
    },
    /// Let a disabled user in again.
    Enable {
        user: String,
    },
    List,
    Show {
        user: String,
    },
    /// Remove the accounts; the data stays unless --purge.
    Remove {
        user: String,
        #[arg(long)]
        purge: bool,
    },
    /// Limit the home: file sizes and optionally files, e.g. 50G or
    /// 50G,100000 (',100000': files only; 'none' lifts it). A mounted home
    /// gets it at once.
    Quota {
        user: String,
        #[arg(value_parser = clap::value_parser!(crate::fs::quota::Quota))]
        quota: crate::fs::quota::Quota,
    },
    /// New Samba password from stdin (or a prompt); with Keystone flags, new
    /// stored credentials (verified first).
    Passwd {
        user: String,
        #[command(flatten)]
        keystone: UserKeystoneArgs,
        /// Only update the Keystone credentials.
        #[arg(long)]
        keystone_only: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShareCmd {
    /// Create a team share \\gateway\NAME on its own container, for the
    /// members of a Unix group (default share-NAME, created if missing).
    Add {
        name: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[arg(long)]
        group: Option<String>,
        /// A member (repeat); the group's members become exactly these.
        #[arg(long = "member")]
        members: Vec<String>,
        /// A member who may only read (repeat).
        #[arg(long = "read-only")]
        read_only: Vec<String>,
        /// The share's quota, as `share quota` takes it (50G, 50G,100000).
        #[arg(long, value_parser = clap::value_parser!(crate::fs::quota::Quota))]
        quota: Option<crate::fs::quota::Quota>,
        /// The share's recycle bin (default: as [recycle] enabled).
        #[arg(long, value_enum)]
        recycle: Option<RecycleSwitch>,
        /// Days deleted files stay in its recycle bin (default: [recycle] keep_days; 0 keeps them until emptied).
        #[arg(long)]
        recycle_keep_days: Option<u32>,
    },
    List,
    Show {
        name: String,
    },
    /// Change the comment, the members or the read-only members.
    Update {
        name: String,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long = "member")]
        members: Vec<String>,
        #[arg(long = "read-only")]
        read_only: Vec<String>,
        /// No read-only members any more.
        #[arg(long, conflicts_with = "read_only")]
        no_read_only: bool,
        /// The share's recycle bin: on, off, or default (as [recycle] enabled).
        #[arg(long, value_enum)]
        recycle: Option<RecycleSwitch>,
        /// Days deleted files stay in its recycle bin (0: until emptied).
        #[arg(long, conflicts_with = "recycle_keep_days_default")]
        recycle_keep_days: Option<u32>,
        /// Keep deleted files as long as [recycle] keep_days says again.
        #[arg(long)]
        recycle_keep_days_default: bool,
    },
    /// Take the share out of Samba and unmount it; the data stays unless --purge.
    Remove {
        name: String,
        #[arg(long)]
        purge: bool,
    },
    /// Limit the share like `user quota` (50G, 50G,100000, none).
    Quota {
        name: String,
        #[arg(value_parser = clap::value_parser!(crate::fs::quota::Quota))]
        quota: crate::fs::quota::Quota,
    },
}

/// A share's own recycle-bin setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecycleSwitch {
    On,
    Off,
    /// As `[recycle] enabled` in the config.
    Default,
}

impl RecycleSwitch {
    /// The share record's override (None: follow the config).
    pub fn value(self) -> Option<bool> {
        match self {
            RecycleSwitch::On => Some(true),
            RecycleSwitch::Off => Some(false),
            RecycleSwitch::Default => None,
        }
    }
}

/// A user's own Keystone identity (per-user mode).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UserKeystoneArgs {
    #[arg(long)]
    pub os_username: Option<String>,
    #[arg(long)]
    pub os_user_id: Option<String>,
    /// File whose first line is the Keystone password
    #[arg(long)]
    pub os_password_file: Option<PathBuf>,
    #[arg(long)]
    pub os_project_name: Option<String>,
    #[arg(long)]
    pub os_project_id: Option<String>,
    #[arg(long)]
    pub os_user_domain_name: Option<String>,
    #[arg(long)]
    pub os_project_domain_name: Option<String>,
    #[arg(long)]
    pub os_application_credential_id: Option<String>,
    #[arg(long)]
    pub os_application_credential_secret_file: Option<PathBuf>,
}

impl UserKeystoneArgs {
    fn credentials(&self) -> Result<Option<crate::gateway::usermap::UserCredentials>> {
        let first_line = |p: &Option<PathBuf>| -> Result<Option<String>> {
            Ok(match p {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                ),
                None => None,
            })
        };
        let c = crate::gateway::usermap::UserCredentials {
            username: self.os_username.clone(),
            user_id: self.os_user_id.clone(),
            password: first_line(&self.os_password_file)?,
            project_name: self.os_project_name.clone(),
            project_id: self.os_project_id.clone(),
            user_domain_name: self.os_user_domain_name.clone(),
            project_domain_name: self.os_project_domain_name.clone(),
            application_credential_id: self.os_application_credential_id.clone(),
            application_credential_secret: first_line(&self.os_application_credential_secret_file)?,
        };
        Ok(if c == Default::default() {
            None
        } else {
            Some(c)
        })
    }
}

/// One line from the terminal with echo off (a password); None at EOF
/// (Ctrl-D).
pub(crate) fn read_hidden(prompt: &str) -> Result<Option<zeroize::Zeroizing<String>>> {
    use nix::sys::termios;
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let old = termios::tcgetattr(&stdin)?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(termios::LocalFlags::ECHO);
    termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &quiet)?;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = zeroize::Zeroizing::new(String::new());
    let r = stdin.lock().read_line(&mut line);
    termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &old)?;
    eprintln!();
    if r? == 0 {
        return Ok(None);
    }
    Ok(Some(zeroize::Zeroizing::new(
        line.trim_end_matches(['\n', '\r']).to_string(),
    )))
}

/// A password from stdin: prompted for (twice, no echo) on a terminal.
fn read_new_password(what: &str) -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let p = line.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            bail!("empty {what} on stdin");
        }
        return Ok(p);
    }
    let ask = |prompt: &str| -> Result<String> {
        Ok(read_hidden(prompt)?
            .map(|l| l.to_string())
            .unwrap_or_default())
    };
    let a = ask(&format!("New {what}: "))?;
    let b = ask(&format!("Retype new {what}: "))?;
    if a != b {
        bail!("the two {what}s differ");
    }
    if a.is_empty() {
        bail!("empty {what}");
    }
    Ok(a)
}

fn user_cmd(cmd: UserCmd, config: &Path) -> Result<i32> {
    use crate::gateway::api::{Request, Secret, UserAdd};
    let api = gateway::api(config)?;
    let api = &*api;
    match cmd {
        UserCmd::Add {
            user,
            keystone,
            adopt,
            quota,
        } => {
            crate::gateway::usermap::check_name(&user)?;
            let credentials = keystone.credentials()?;
            let password = read_new_password("Samba password")?;
            let rc = gateway::run_change(
                api,
                Request::UserAdd(UserAdd {
                    user: user.clone(),
                    password: Secret::new(password),
                    credentials,
                    adopt,
                }),
            )?;
            return match quota {
                Some(quota) if rc == 0 => gateway::run_change(
                    api,
                    Request::QuotaSet {
                        target: crate::gateway::api::FsTarget::User(user),
                        quota,
                    },
                ),
                _ => Ok(rc),
            };
        }
        UserCmd::List => gateway::user_list(api)?,
        UserCmd::Show { user } => gateway::user_show(api, &user)?,
        UserCmd::Disable { user } => {
            return gateway::run_change(
                api,
                Request::UserSetDisabled {
                    user,
                    disabled: true,
                },
            )
        }
        UserCmd::Enable { user } => {
            return gateway::run_change(
                api,
                Request::UserSetDisabled {
                    user,
                    disabled: false,
                },
            )
        }
        UserCmd::Remove { user, purge } => {
            return gateway::run_change(api, Request::UserRemove { user, purge })
        }
        UserCmd::Quota { user, quota } => {
            return gateway::run_change(
                api,
                Request::QuotaSet {
                    target: crate::gateway::api::FsTarget::User(user),
                    quota,
                },
            )
        }
        UserCmd::Passwd {
            user,
            keystone,
            keystone_only,
        } => {
            let credentials = keystone.credentials()?;
            let password = if keystone_only {
                None
            } else {
                Some(Secret::new(read_new_password("Samba password")?))
            };
            return gateway::run_change(
                api,
                Request::UserPasswd {
                    user,
                    password,
                    credentials,
                },
            );
        }
    }
    Ok(0)
}

fn share_cmd(cmd: ShareCmd, config: &Path) -> Result<i32> {
    use crate::gateway::api::{Request, ShareSpec};
    let api = gateway::api(config)?;
    let api = &*api;
    match cmd {
        ShareCmd::Add {
            name,
            comment,
            group,
            members,
            read_only,
            quota,
            recycle,
            recycle_keep_days,
        } => {
            let rc = gateway::run_change(
                api,
                Request::ShareAdd(ShareSpec {
                    name: name.clone(),
                    comment,
                    group,
                    members: (!members.is_empty()).then_some(members),
                    read_only,
                    recycle: recycle.and_then(RecycleSwitch::value),
                    recycle_keep_days,
                }),
            )?;
            match quota {
                Some(quota) if rc == 0 => gateway::run_change(
                    api,
                    Request::QuotaSet {
                        target: crate::gateway::api::FsTarget::Share(name),
                        quota,
                    },
                ),
                _ => Ok(rc),
            }
        }
        ShareCmd::List => gateway::share_list(api).map(|()| 0),
        ShareCmd::Show { name } => gateway::share_show(api, &name).map(|()| 0),
        ShareCmd::Update {
            name,
            comment,
            members,
            read_only,
            no_read_only,
            recycle,
            recycle_keep_days,
            recycle_keep_days_default,
        } => {
            let ro = if no_read_only {
                Some(Vec::new())
            } else {
                (!read_only.is_empty()).then_some(read_only)
            };
            let mut spec = gateway::share_update_spec(api, &name, comment, members, ro)?;
            if let Some(r) = recycle {
                spec.recycle = r.value();
            }
            if recycle_keep_days_default {
                spec.recycle_keep_days = None;
            } else if recycle_keep_days.is_some() {
                spec.recycle_keep_days = recycle_keep_days;
            }
            gateway::run_change(api, Request::ShareUpdate(spec))
        }
        ShareCmd::Remove { name, purge } => {
            gateway::run_change(api, Request::ShareRemove { name, purge })
        }
        ShareCmd::Quota { name, quota } => gateway::run_change(
            api,
            Request::QuotaSet {
                target: crate::gateway::api::FsTarget::Share(name),
                quota,
            },
        ),
    }
}

/// Swift credentials on the command line. Anything not given here comes
/// from `OS_*` variables, clouds.yaml or `ST_*`; secrets only as files.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Swift (defaults from OS_* variables, clouds.yaml, ST_*)")]
pub struct SwiftArgs {
    /// Cloud name in clouds.yaml [env: OS_CLOUD]
    #[arg(long)]
    pub os_cloud: Option<String>,
    /// Identity (Keystone) URL, any path/port, or a tempauth .../auth/v1.0 URL
    #[arg(long)]
    pub os_auth_url: Option<String>,
    /// password, v3password, v2password, v3applicationcredential, v1password
    #[arg(long)]
    pub os_auth_type: Option<String>,
    #[arg(long)]
    pub os_identity_api_version: Option<String>,
    #[arg(long)]
    pub os_username: Option<String>,
    #[arg(long)]
    pub os_user_id: Option<String>,
    /// File whose first line is the password (never on the command line)
    #[arg(long)]
    pub os_password_file: Option<PathBuf>,
    #[arg(long, alias = "os-tenant-name")]
    pub os_project_name: Option<String>,
    #[arg(long, alias = "os-tenant-id")]
    pub os_project_id: Option<String>,
    #[arg(long)]
    pub os_user_domain_name: Option<String>,
    #[arg(long)]
    pub os_user_domain_id: Option<String>,
    #[arg(long)]
    pub os_project_domain_name: Option<String>,
    #[arg(long)]
    pub os_project_domain_id: Option<String>,
    #[arg(long)]
    pub os_region_name: Option<String>,
    /// public, internal or admin
    #[arg(long)]
    pub os_interface: Option<String>,
    #[arg(long)]
    pub os_application_credential_id: Option<String>,
    #[arg(long)]
    pub os_application_credential_name: Option<String>,
    /// File whose first line is the application credential secret
    #[arg(long)]
    pub os_application_credential_secret_file: Option<PathBuf>,
    /// Storage URL to use instead of the catalog's (with a token: no auth at all)
    #[arg(long)]
    pub os_storage_url: Option<String>,
    /// File holding a pre-authenticated token
    #[arg(long)]
    pub os_auth_token_file: Option<PathBuf>,
    /// CA certificate (PEM) for a private cloud's TLS
    #[arg(long)]
    pub os_cacert: Option<PathBuf>,
    /// Parallel requests to Swift
    #[arg(long, default_value_t = crate::store::swift::DEFAULT_CONNECTIONS)]
    pub swift_connections: usize,
    /// S3QL-style URLs: plain http to the derived auth URL
    #[arg(long)]
    pub no_ssl: bool,
}

impl SwiftArgs {
    pub fn open_options(&self) -> crate::store::OpenOptions {
        crate::store::OpenOptions {
            swift: crate::store::swift::SwiftFlags {
                cloud: self.os_cloud.clone(),
                auth_url: self.os_auth_url.clone(),
                auth_type: self.os_auth_type.clone(),
                identity_api_version: self.os_identity_api_version.clone(),
                username: self.os_username.clone(),
                user_id: self.os_user_id.clone(),
                password_file: self.os_password_file.clone(),
                project_name: self.os_project_name.clone(),
                project_id: self.os_project_id.clone(),
                user_domain_name: self.os_user_domain_name.clone(),
                user_domain_id: self.os_user_domain_id.clone(),
                project_domain_name: self.os_project_domain_name.clone(),
                project_domain_id: self.os_project_domain_id.clone(),
                region_name: self.os_region_name.clone(),
                interface: self.os_interface.clone(),
                application_credential_id: self.os_application_credential_id.clone(),
                application_credential_name: self.os_application_credential_name.clone(),
                application_credential_secret_file: self
                    .os_application_credential_secret_file
                    .clone(),
                storage_url: self.os_storage_url.clone(),
                auth_token_file: self.os_auth_token_file.clone(),
                cacert: self.os_cacert.clone(),
                connections: Some(self.swift_connections),
                no_ssl: self.no_ssl,
                ..Default::default()
            },
            ignore_env: false,
        }
    }
}

/// Sizes on the command line: the same grammar as the gateway's config.
pub use crate::gateway::config::parse_size;

pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    match num.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v * mult)),
        _ => Err(format!("invalid duration {s:?}: use e.g. 30s, 5m")),
    }
}

pub fn read_passphrase(path: Option<&Path>) -> Result<Option<Vec<u8>>> {
    let Some(p) = path else { return Ok(None) };
    let s = std::fs::read(p).with_context(|| format!("reading passphrase file {}", p.display()))?;
    let line = s.split(|&b| b == b'\n').next().unwrap_or(&[]).to_vec();
    if line.is_empty() {
        bail!("passphrase file {} is empty", p.display());
    }
    Ok(Some(line))
}

/// A home's quota use for `status`, flagged from 90 % on.
fn quota_line(h: &crate::gateway::api::HomeStatus) -> Option<String> {
    let u = h.quota_use?;
    let fill = h.quota.fill(&u)?;
    let warn = if fill >= crate::gateway::quotas::WARN_FILL {
        "WARNING: "
    } else {
        ""
    };
    Some(format!(
        "{}: {warn}quota {} is {:.0} % used ({} in {} files)",
        h.user,
        h.quota,
        fill * 100.0,
        human(u.bytes),
        u.files
    ))
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

pub fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Mkfs {
            store,
            swift,
            plain,
            passphrase_file,
            block_size,
            compression,
            force,
        } => {
            let passphrase = read_passphrase(passphrase_file.as_deref())?;
            if passphrase.is_none() && !plain {
                bail!("give --passphrase-file FILE to encrypt, or --plain for no encryption");
            }
            let s = crate::store::open_with(&store, &swift.open_options())?;
            let p = crate::fs::engine::mkfs(
                &s,
                &crate::fs::engine::MkfsOptions {
                    block_size: u32::try_from(block_size).unwrap_or(u32::MAX),
                    compression,
                    passphrase,
                    force,
                    root_owner: None,
                },
            )?;
            println!(
                "created filesystem {} in {} (block size {}, {}, {})",
                p.uuid,
                s.url(),
                human(p.block_size as u64),
                match p.compression {
                    Compression::None => "no compression".to_string(),
                    Compression::Zstd(l) => format!("zstd level {l}"),
                },
                if p.encryption.is_some() {
                    "AES-256-GCM"
                } else {
                    "not encrypted"
                }
            );
            Ok(0)
        }
        Cmd::Mount(args) => mount::mount(args),
        Cmd::Serve { config } => {
            crate::gateway::serve(&config, |gw, cfg| {
                let api: std::sync::Arc<dyn crate::gateway::api::GatewayApi> = gw;
                crate::web::server::spawn(api, &cfg.console).map_err(|e| e.to_string())
            })?;
            Ok(0)
        }
        Cmd::Hook {
            action,
            user,
            config,
        } => {
            use crate::gateway::api::{GatewayApi, Request};
            // The smbd process this session belongs to: the daemon drops
            // the session if that process dies without a disconnect.
            let smbd = crate::gateway::session::smbd_ancestor();
            let req = if action == "connect" {
                Request::Connect { user, smbd }
            } else {
                Request::Disconnect { user, smbd }
            };
            // A first mount may rebuild metadata from the store: be patient,
            // but not forever (Samba waits for us).
            match gateway::client(&config, Duration::from_secs(120))?.call(req) {
                Ok(_) => Ok(0),
                Err(e) => {
                    eprintln!("swiftgate: {e}");
                    Ok(1)
                }
            }
        }
        Cmd::SambaConfig {
            config,
            extra_global,
        } => {
            let cfg = crate::gateway::GatewayConfig::load(&config)?;
            let exe = std::env::current_exe()?;
            let config = std::fs::canonicalize(&config)?;
            print!(
                "{}",
                crate::gateway::samba::generate(&cfg, &exe, &config, &extra_global)
            );
            Ok(0)
        }
        Cmd::User { cmd, config } => user_cmd(cmd, &config),
        Cmd::Share { cmd, config } => share_cmd(cmd, &config),
        Cmd::Snapshot { cmd, config } => snapshot::run(cmd, &config),
        Cmd::Token { cmd, config } => token::run(cmd, &config),
        Cmd::Recovery { cmd, config } => recovery::run(cmd, &config),
        Cmd::Setup(a) => setup::run(a),
        Cmd::Supervise(a) => supervise::run(a),
        Cmd::Doctor { config, json } => doctor::run(&config, json),
        Cmd::Status { config, json } => {
            use crate::gateway::api::GatewayApiExt;
            let homes = gateway::client(&config, Duration::from_secs(10))?.homes()?;
            if json {
                println!("{}", serde_json::to_string(&homes)?);
            } else {
                println!(
                    "{:<16} {:>5} {:>8} {:>21} {:>21} {:>7}  mountpoint",
                    "user", "conns", "idle s", "cache used/size", "dirty/limit", "queue"
                );
                let mut errors = Vec::new();
                for h in &homes {
                    let c = &h.cache;
                    println!(
                        "{:<16} {:>5} {:>8} {:>21} {:>21} {:>7}  {}",
                        h.user,
                        h.connections,
                        h.idle_secs
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "-".into()),
                        format!("{}/{}", human(c.used_bytes), human(c.cache_size)),
                        format!("{}/{}", human(c.dirty_bytes), human(c.dirty_limit)),
                        c.upload_queue,
                        h.mountpoint.display()
                    );
                    if let Some(e) = &c.last_error {
                        errors.push(format!("{}: last upload error: {e}", h.user));
                    }
                    if let Some(w) = quota_line(h) {
                        errors.push(w);
                    }
                }
                for e in errors {
                    println!("{e}");
                }
            }
            Ok(0)
        }
        Cmd::Umount { mountpoint } => mount::umount(&mountpoint),
        Cmd::Fsck {
            store,
            swift,
            passphrase_file,
            verify_data,
            dry_run,
            accept_rollback,
            release_quarantine,
        } => {
            let passphrase = read_passphrase(passphrase_file.as_deref())?;
            let s = crate::store::open_with(&store, &swift.open_options())?;
            let params = crate::fs::engine::read_params(&s)?;
            let key = params.unlock(passphrase.as_deref())?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let report = crate::meta::fsck::run(
                &s,
                &params,
                key.as_ref(),
                &crate::meta::fsck::FsckOptions {
                    verify_data,
                    dry_run,
                    accept_rollback,
                    release_quarantine,
                },
                &|phase, done, total| {
                    bar.set_message(phase.to_string());
                    bar.set_length(total);
                    bar.set_position(done);
                },
            )?;
            bar.finish_and_clear();
            for line in &report.findings {
                println!("{line}");
            }
            let (code, word) = match (report.outcome(), dry_run) {
                (crate::meta::fsck::Outcome::Clean, _) => (0, "clean"),
                (crate::meta::fsck::Outcome::Repaired, false) => (1, "repaired without loss"),
                (crate::meta::fsck::Outcome::Repaired, true) => {
                    (1, "would repair without loss (dry run: nothing changed)")
                }
                (crate::meta::fsck::Outcome::Unrepairable, false) => {
                    (2, "damaged: data may have been lost (see above)")
                }
                (crate::meta::fsck::Outcome::Unrepairable, true) => (
                    2,
                    "damaged: data may have been lost (dry run: nothing changed)",
                ),
            };
            println!(
                "fsck: {word} ({} inodes, {} blocks checked)",
                report.inodes, report.blocks
            );
            Ok(code)
        }
        Cmd::Stat {
            mountpoint,
            json,
            config,
        } => {
            let v = stat::mount_command(
                &mountpoint,
                crate::fs::commands::MountCommand::Stat,
                &config,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let g = |a: &str, b: &str| v[a][b].as_u64().unwrap_or(0);
                // Referenced stored bytes (each reference counted) against
                // distinct ones: the dedup ratio of what is uploaded.
                let referenced = g("counts", "logical_bytes");
                let unique = g("counts", "unique_bytes");
                let stored = g("counts", "stored_bytes");
                println!("files (inodes):     {}", g("counts", "inodes"));
                println!(
                    "logical data:       {} (file sizes, uploaded or not)",
                    human(g("counts", "file_bytes"))
                );
                println!("uploaded, deduped:  {}", human(unique));
                println!("stored (encoded):   {}", human(stored));
                if unique > 0 && stored > 0 {
                    println!(
                        "dedup ratio:        {:.2}",
                        referenced as f64 / unique as f64
                    );
                    println!("compression ratio:  {:.2}", unique as f64 / stored as f64);
                }
                let objects = g("counts", "objects");
                println!(
                    "objects:            {objects} ({})",
                    human(g("counts", "object_bytes"))
                );
                println!(
                    "cache used:         {} of {}",
                    human(g("cache", "used_bytes")),
                    human(g("cache", "cache_size"))
                );
                println!(
                    "  dirty (pinned):   {} of {} limit, {} blocks, {} uploading now",
                    human(g("cache", "dirty_bytes")),
                    human(g("cache", "dirty_limit")),
                    g("cache", "dirty_blocks"),
                    human(g("cache", "uploading_bytes"))
                );
                println!(
                    "  clean:            {} in {} blocks (evictable)",
                    human(g("cache", "clean_bytes")),
                    g("cache", "clean_blocks")
                );
                println!("upload queue:       {}", g("cache", "upload_queue"));
                println!("metadata generation {}", v["metadata_generation"]);
                if v["superseded"].as_bool() == Some(true) {
                    println!(
                        "READ-ONLY:          another mount took this filesystem over; unmount this one"
                    );
                }
                println!(
                    "snapshots:          {} holding {} the live files no longer use, {} of metadata",
                    g("snapshots", "snapshots"),
                    human(g("snapshots", "held_bytes")),
                    human(g("snapshots", "meta_bytes"))
                );
            }
            Ok(0)
        }
        Cmd::Ctl {
            mountpoint,
            action,
            config,
        } => {
            let cmd = crate::fs::commands::MountCommand::parse(&action)
                .with_context(|| format!("unknown action {action:?}"))?;
            let v = stat::mount_command(&mountpoint, cmd, &config)?;
            println!(
                "{action}: done {}",
                if v.is_null() {
                    String::new()
                } else {
                    v.to_string()
                }
            );
            Ok(0)
        }
        Cmd::Demo {
            store_dir,
            mountpoint,
        } => mount::demo(&store_dir, &mountpoint),
        Cmd::Recycle { cmd, config } => recycle_cmd(cmd, &config),
    }
}

fn recycle_cmd(cmd: RecycleCmd, config: &Path) -> Result<i32> {
    use crate::gateway::api::{FsTarget, Request};
    let api = gateway::api(config)?;
    // clap lets exactly one of them through for `empty`, at most one for `purge`.
    let target = |user: Option<String>, share: Option<String>| {
        share.map(FsTarget::Share).or(user.map(FsTarget::User))
    };
    match cmd {
        RecycleCmd::Purge { user, share } => gateway::run_change(
            &*api,
            Request::RecyclePurge {
                target: target(user, share),
            },
        ),
        RecycleCmd::Empty { user, share } => gateway::run_change(
            &*api,
            Request::RecycleEmpty {
                target: target(user, share)
                    .ok_or_else(|| anyhow::anyhow!("give a USER or --share NAME"))?,
            },
        ),
        RecycleCmd::Keep { user, days } => gateway::run_change(
            &*api,
            Request::UserSetRecycle {
                user,
                keep_days: days,
            },
        ),
    }
}
