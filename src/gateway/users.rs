//! `swiftgate user add|list|show|remove|passwd`: the admin's side of the
//! user map, the Unix account and the Samba account.

use super::command::{self, CommandFailed};
use super::config::{GatewayConfig, UserMapMode};
use super::daemon::{open_user_store, GatewayError};
use super::samba::{self, SambaError};
use super::usermap::{check_name, UserCredentials, UserMap, UserMapError, UserSecrets};
use crate::fs::engine::{self, MkfsOptions, PARAMS_KEY};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(transparent)]
    Map(#[from] UserMapError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Samba(#[from] SambaError),
    #[error("user {0} already exists; change the password with `swiftgate user passwd {0}`")]
    Exists(String),
    #[error("per-user mode needs {0}'s own Keystone credentials: --os-username and --os-password-file, or --os-application-credential-id and --os-application-credential-secret-file")]
    NeedCredentials(String),
    #[error("the store of {user} ({url}) holds a filesystem this gateway cannot open: {reason}. Use another container (the [store] url template) or remove it")]
    Foreign {
        user: String,
        url: String,
        reason: String,
    },
    #[error("creating the filesystem of {user}: {cause}")]
    Mkfs {
        user: String,
        cause: Box<engine::EngineError>,
    },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
    #[error(transparent)]
    Run(#[from] CommandFailed),
    #[error("user {0} was removed (its data is kept): add it again with `swiftgate user add {0}`")]
    Removed(String),
    #[error("the Samba account of {user} could not be deleted, so its password still works: {reason}. {state} Delete it by hand (`smbpasswd -x {user}`) or fix the cause and run the command again")]
    SambaKept {
        user: String,
        reason: String,
        state: String,
    },
    #[error("{0} is uid 0 (root): a Samba user is never root; pick another name")]
    Root(String),
    #[error("a Unix account {user} (uid {uid}) already exists and swiftgate did not create it (not in group {group}, or uid below {uid_min}): its Samba sessions would run as that account. Pick another name, or give --adopt if this account is meant to be the Samba user")]
    ForeignAccount {
        user: String,
        uid: u32,
        group: String,
        uid_min: u32,
    },
}

/// Whether an existing account is one `user add` made (or adopted): in
/// the swiftgate group, uid in the configured range.
fn is_ours(cfg: &GatewayConfig, u: &nix::unistd::User) -> bool {
    let group = &cfg.users.group;
    let in_group = match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => u.gid == g.gid || g.mem.contains(&u.name),
        _ => false,
    };
    in_group && u.uid.as_raw() >= cfg.users.uid_min
}

/// The swiftgate group, created on first use (another `user add` running
/// at the same time may win the race: that is fine).
fn ensure_group(cfg: &GatewayConfig) -> Result<(), UsersError> {
    let group = &cfg.users.group;
    if let Ok(Some(_)) = nix::unistd::Group::from_name(group) {
        return Ok(());
    }
    let res = command::run(
        "groupadd",
        Command::new("groupadd").arg("--system").arg(group),
    );
    match nix::unistd::Group::from_name(group) {
        Ok(Some(_)) => Ok(()),
        _ => res.map(drop).map_err(UsersError::from),
    }
}

/// The Unix account Samba runs the user's session as: created if missing
/// (in the swiftgate group, without a login shell; its home is the
/// mountpoint). An existing account swiftgate did not create belongs to
/// someone else: taken over only with `adopt`, and root never.
fn ensure_unix_account(
    cfg: &GatewayConfig,
    user: &str,
    adopt: bool,
) -> Result<(u32, u32, bool), UsersError> {
    if let Ok(Some(u)) = nix::unistd::User::from_name(user) {
        let uid = u.uid.as_raw();
        if uid == 0 {
            return Err(UsersError::Root(user.into()));
        }
        if is_ours(cfg, &u) {
            return Ok((uid, u.gid.as_raw(), false));
        }
        if !adopt {
            return Err(UsersError::ForeignAccount {
                user: user.into(),
                uid,
                group: cfg.users.group.clone(),
                uid_min: cfg.users.uid_min,
            });
        }
        ensure_group(cfg)?;
        // Marked as ours from now on: later commands recognise it.
        command::run(
            "usermod",
            Command::new("usermod")
                .args(["--append", "--groups", &cfg.users.group])
                .arg(user),
        )?;
        tracing::warn!(user, uid, "adopted an existing Unix account");
        return Ok((uid, u.gid.as_raw(), false));
    }
    ensure_group(cfg)?;
    let home = cfg.mountpoint(user);
    let uid_min = cfg.users.uid_min;
    command::run(
        "useradd",
        Command::new("useradd")
            .args(["--no-create-home", "--user-group", "--groups"])
            .arg(&cfg.users.group)
            .args(["--shell", "/usr/sbin/nologin", "-K"])
            .arg(format!("UID_MIN={uid_min}"))
            .arg("-K")
            // Debian's range (login.defs: 60000): above it sit nobody
            // (65534) and 65535, the 16-bit -1, which useradd would pick
            // next after nobody with a wider range.
            .arg(format!(
                "UID_MAX={}",
                if uid_min < 60000 {
                    60000
                } else {
                    uid_min.saturating_add(10000)
                }
            ))
            .arg("--home-dir")
            .arg(&home)
            .arg(user),
    )?;
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw(), true)),
        _ => Err(UsersError::Command {
            what: "useradd".into(),
            message: format!("user {user} still does not exist"),
        }),
    }
}

/// What `add` has done so far, undone when a later step fails: an add
/// that fails applies nothing (no Unix account, no Samba account, no
/// filesystem or container, no map entry).
struct AddUndo<'a> {
    cfg: &'a GatewayConfig,
    user: &'a str,
    unix_account: bool,
    samba_account: bool,
    filesystem: Option<crate::store::DynStore>,
    done: bool,
}

impl Drop for AddUndo<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(store) = self.filesystem.take() {
            let keys: Vec<String> = store
                .list_all("")
                .map(|v| v.into_iter().map(|o| o.key).collect())
                .unwrap_or_default();
            if let Err(e) = store
                .delete_many(&keys)
                .and_then(|()| store.remove_container())
            {
                tracing::error!(
                    user = self.user,
                    "undoing a failed add: the new filesystem in {} could not be deleted: {e}",
                    store.url()
                );
            }
        }
        if self.samba_account {
            if let Err(e) = samba::delete_account(&self.cfg.samba.config, self.user) {
                tracing::error!(
                    user = self.user,
                    "undoing a failed add: the Samba account could not be deleted: {e}"
                );
            }
        }
        if self.unix_account {
            if let Err(e) = command::run("userdel", Command::new("userdel").arg(self.user)) {
                tracing::error!(user = self.user, "undoing a failed add: {e}");
            }
        }
    }
}

pub struct AddOptions {
    /// The Samba password.
    pub password: String,
    /// The user's Keystone identity (per-user mode).
    pub credentials: Option<UserCredentials>,
    /// Take over an existing Unix account swiftgate did not create.
    pub adopt: bool,
}

/// Add a user: verify the store credentials, create the filesystem if the
/// container is new, then the Unix and Samba accounts, then the map entry.
pub fn add(
    cfg: &GatewayConfig,
    map: &UserMap,
    user: &str,
    o: AddOptions,
) -> Result<String, UsersError> {
    check_name(user)?;
    let previous = match map.get(user) {
        Ok((e, s)) if e.removed => Some(s),
        Ok(_) => return Err(UsersError::Exists(user.into())),
        Err(UserMapError::NoSuchUser(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if cfg.users.mode == UserMapMode::PerUser
        && o.credentials.is_none()
        && previous.as_ref().is_none_or(|p| p.swift.is_none())
    {
        return Err(UsersError::NeedCredentials(user.into()));
    }
    let mut secrets = previous.unwrap_or_else(|| UserSecrets {
        passphrase: cfg.fs.encrypt.then(|| {
            let mut b = [0u8; 24];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
            hex::encode(b)
        }),
        swift: None,
    });
    if o.credentials.is_some() {
        secrets.swift = o.credentials;
    }
    // First contact with the store, before anything is created: wrong
    // credentials or an unreachable store fail here.
    let store = open_user_store(cfg, user, &secrets)?;
    let url = cfg.store_url(user);
    let head = store
        .head(PARAMS_KEY)
        .map_err(|source| GatewayError::Store {
            user: user.into(),
            url: url.clone(),
            cause: Box::new(source),
        })?;
    if head.is_some() {
        let p = engine::read_params(&store).map_err(|e| UsersError::Foreign {
            user: user.into(),
            url: url.clone(),
            reason: e.to_string(),
        })?;
        p.unlock(secrets.passphrase.as_deref().map(str::as_bytes))
            .map_err(|e| UsersError::Foreign {
                user: user.into(),
                url: url.clone(),
                reason: e.to_string(),
            })?;
    }
    let mut undo = AddUndo {
        cfg,
        user,
        unix_account: false,
        samba_account: false,
        filesystem: None,
        done: false,
    };
    if head.is_none() {
        // Whatever this add puts in the store (a local store's directory,
        // what mkfs writes even half-way) goes again on failure, but only
        // from a store that held nothing: someone else's objects are never
        // ours to delete (and mkfs refuses such a store anyway).
        let was_empty = match store.list("", None, 1) {
            Ok(p) => p.objects.is_empty(),
            Err(e) => e.is_not_found(),
        };
        if was_empty {
            undo.filesystem = Some(store.clone());
        }
    }
    let (uid, gid, created) = ensure_unix_account(cfg, user, o.adopt)?;
    undo.unix_account = created;
    // Samba before the filesystem: a refused password leaves no container.
    let had_samba = samba::account_exists(&cfg.samba.config, user) == Some(true);
    samba::set_password(&cfg.samba.config, user, &o.password)?;
    undo.samba_account = !had_samba;
    let what = if head.is_some() {
        "existing filesystem kept"
    } else {
        engine::mkfs(
            &store,
            &MkfsOptions {
                block_size: u32::try_from(cfg.fs.block_size).unwrap_or(4 << 20),
                compression: crate::data::Compression::Zstd(3),
                passphrase: secrets.passphrase.clone().map(String::into_bytes),
                force: false,
                root_owner: Some((uid, gid)),
            },
        )
        .map_err(|source| UsersError::Mkfs {
            user: user.into(),
            cause: Box::new(source),
        })?;
        "new filesystem created"
    };
    map.put(user, uid, gid, &url, &secrets)?;
    undo.done = true;
    Ok(format!("user {user} (uid {uid}) added: {url}, {what}"))
}

/// Change the Samba password (and in per-user mode, optionally the stored
/// Keystone credentials, verified first).
pub fn passwd(
    cfg: &GatewayConfig,
    map: &UserMap,
    user: &str,
    password: Option<&str>,
    credentials: Option<UserCredentials>,
) -> Result<(), UsersError> {
    let (e, mut s) = map.get(user)?;
    if e.removed {
        return Err(UsersError::Removed(user.into()));
    }
    if let Some(c) = credentials {
        s.swift = Some(c);
        let store = open_user_store(cfg, user, &s)?;
        store
            .head(PARAMS_KEY)
            .map_err(|source| GatewayError::Store {
                user: user.into(),
                url: e.store.clone(),
                cause: Box::new(source),
            })?;
        map.put(user, e.uid, e.gid, &e.store, &s)?;
    }
    if let Some(p) = password {
        samba::set_password(&cfg.samba.config, user, p)?;
    }
    Ok(())
}

/// Remove a user's accounts. The data (and the passphrase, kept encrypted
/// in the map) stay unless `purge`.
pub fn remove(
    cfg: &GatewayConfig,
    map: &UserMap,
    user: &str,
    purge: bool,
    unmount: &dyn Fn(&str),
    progress: &dyn Fn(&str, u64, u64),
) -> Result<String, UsersError> {
    let (e, s) = map.get(user)?;
    // No new session from here on, whatever fails below.
    map.set_removed(user)?;
    // The home is let go of first (flushed and unmounted).
    progress("unmounting", 0, 0);
    unmount(user);
    // A Samba account left behind keeps a working password: that is a
    // failure of the command, not a warning.
    if let Err(err) = samba::delete_account(&cfg.samba.config, user) {
        if samba::account_exists(&cfg.samba.config, user) != Some(false) {
            return Err(UsersError::SambaKept {
                user: user.into(),
                reason: err.to_string(),
                state: if purge {
                    "Nothing was purged: the data and the user map entry are kept, the user is marked removed (connections are refused)."
                } else {
                    "The user is marked removed (connections are refused) and the data is kept."
                }
                .into(),
            });
        }
    }
    // Only accounts that look like ours (no shell, home = mountpoint).
    if let Ok(Some(u)) = nix::unistd::User::from_name(user) {
        if u.dir == cfg.mountpoint(user) && u.shell.to_string_lossy().ends_with("nologin") {
            let _ = command::run("userdel", Command::new("userdel").arg(user));
        }
    }
    if !purge {
        return Ok(format!("user {user} removed; the data stays in {} (add the user again to get it back, or remove --purge)", e.store));
    }
    let store = open_user_store(cfg, user, &s)?;
    let all = store.list_all("").map_err(|source| GatewayError::Store {
        user: user.into(),
        url: e.store.clone(),
        cause: Box::new(source),
    })?;
    let keys: Vec<String> = all.into_iter().map(|o| o.key).collect();
    let total = keys.len() as u64;
    for (i, chunk) in keys.chunks(500).enumerate() {
        progress("deleting objects", (i * 500) as u64, total);
        store
            .delete_many(chunk)
            .map_err(|source| GatewayError::Store {
                user: user.into(),
                url: e.store.clone(),
                cause: Box::new(source),
            })?;
    }
    progress("deleting objects", total, total);
    let _ = std::fs::remove_dir_all(cfg.cache.dir.join(user));
    map.remove(user)?;
    Ok(format!(
        "user {user} removed and {} objects deleted from {}",
        keys.len(),
        e.store
    ))
}

/// `user disable` / `user enable`: the account and the data stay; while
/// disabled, Samba refuses the password and the daemon any session.
pub fn set_disabled(
    cfg: &GatewayConfig,
    map: &UserMap,
    user: &str,
    disabled: bool,
) -> Result<String, UsersError> {
    let (e, _) = map.get(user)?;
    if e.removed {
        return Err(UsersError::Removed(user.into()));
    }
    if disabled {
        // The map first: the daemon refuses sessions even if smbpasswd
        // fails below.
        map.set_disabled(user, true)?;
        samba::set_enabled(&cfg.samba.config, user, false)?;
        Ok(format!(
            "user {user} disabled: new sessions are refused (open ones run until they end)"
        ))
    } else {
        samba::set_enabled(&cfg.samba.config, user, true)?;
        map.set_disabled(user, false)?;
        Ok(format!("user {user} enabled"))
    }
}
