//! `swiftgate user add|list|show|remove|passwd`: the admin's side of the
//! user map, the Unix account and the Samba account.

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
    #[error("creating the filesystem of {user}: {source}")]
    Mkfs {
        user: String,
        #[source]
        source: Box<engine::EngineError>,
    },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
}

fn run(what: &str, cmd: &mut Command) -> Result<(), UsersError> {
    let out = cmd.output().map_err(|e| UsersError::Command {
        what: what.into(),
        message: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(UsersError::Command {
            what: what.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The Unix account Samba runs the user's session as: created if missing,
/// without a login shell; its home is the mountpoint.
fn ensure_unix_account(cfg: &GatewayConfig, user: &str) -> Result<(u32, u32), UsersError> {
    if let Ok(Some(u)) = nix::unistd::User::from_name(user) {
        return Ok((u.uid.as_raw(), u.gid.as_raw()));
    }
    let home = cfg.mountpoint(user);
    run(
        "useradd",
        Command::new("useradd")
            .args([
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                "--home-dir",
            ])
            .arg(&home)
            .arg(user),
    )?;
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        _ => Err(UsersError::Command {
            what: "useradd".into(),
            message: format!("user {user} still does not exist"),
        }),
    }
}

pub struct AddOptions {
    /// The Samba password.
    pub password: String,
    /// The user's Keystone identity (per-user mode).
    pub credentials: Option<UserCredentials>,
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
        Ok((e, s)) if e.disabled => Some(s),
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
    let (uid, gid) = ensure_unix_account(cfg, user)?;
    // First contact with the store: wrong credentials fail here.
    let store = open_user_store(cfg, user, &secrets)?;
    let url = cfg.store_url(user);
    let head = store
        .head(PARAMS_KEY)
        .map_err(|source| GatewayError::Store {
            user: user.into(),
            url: url.clone(),
            source: Box::new(source),
        })?;
    let what = if head.is_some() {
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
            source: Box::new(source),
        })?;
        "new filesystem created"
    };
    samba::set_password(&cfg.samba.config, user, &o.password)?;
    map.put(user, uid, gid, &url, &secrets)?;
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
    if let Some(c) = credentials {
        s.swift = Some(c);
        let store = open_user_store(cfg, user, &s)?;
        store
            .head(PARAMS_KEY)
            .map_err(|source| GatewayError::Store {
                user: user.into(),
                url: e.store.clone(),
                source: Box::new(source),
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
) -> Result<String, UsersError> {
    let (e, s) = map.get(user)?;
    // A running daemon lets go of the home first (best effort).
    let _ = super::control::request(
        &cfg.control.socket,
        &serde_json::json!({"op": "unmount", "user": user}),
        std::time::Duration::from_secs(600),
    );
    if let Err(err) = samba::delete_account(&cfg.samba.config, user) {
        tracing::warn!(user, "removing the Samba account: {err}");
    }
    // Only accounts that look like ours (no shell, home = mountpoint).
    if let Ok(Some(u)) = nix::unistd::User::from_name(user) {
        if u.dir == cfg.mountpoint(user) && u.shell.to_string_lossy().ends_with("nologin") {
            let _ = run("userdel", Command::new("userdel").arg(user));
        }
    }
    if !purge {
        map.set_disabled(user, true)?;
        return Ok(format!("user {user} removed; the data stays in {} (add the user again to get it back, or remove --purge)", e.store));
    }
    let store = open_user_store(cfg, user, &s)?;
    let all = store.list_all("").map_err(|source| GatewayError::Store {
        user: user.into(),
        url: e.store.clone(),
        source: Box::new(source),
    })?;
    let keys: Vec<String> = all.into_iter().map(|o| o.key).collect();
    store
        .delete_many(&keys)
        .map_err(|source| GatewayError::Store {
            user: user.into(),
            url: e.store.clone(),
            source: Box::new(source),
        })?;
    let _ = std::fs::remove_dir_all(cfg.cache.dir.join(user));
    map.remove(user)?;
    Ok(format!(
        "user {user} removed and {} objects deleted from {}",
        keys.len(),
        e.store
    ))
}
