//! The restore: a backup written back on this machine (files, groups,
//! accounts, Samba passwords), every check made before anything is written.

use super::bundle::{b64, read_opt};
use super::{io, Bundle, RecoveryError, RecoveryKey, SavedFile};
use crate::gateway::command;
use crate::gateway::config::GatewayConfig;
use base64::Engine as _;
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::process::Command;
use zeroize::Zeroizing;

fn user_by_name(n: &str) -> Option<nix::unistd::User> {
    nix::unistd::User::from_name(n).ok().flatten()
}
fn group_by_name(n: &str) -> Option<nix::unistd::Group> {
    nix::unistd::Group::from_name(n).ok().flatten()
}
fn uid_free(uid: u32) -> bool {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .is_none()
}
fn gid_free(gid: u32) -> bool {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .is_none()
}

/// One exported entry back into the passdb: the account (with a throwaway
/// password), then its old NT hash, then its flags.
fn samba_import(cfg: &GatewayConfig, line: &str) -> Result<String, RecoveryError> {
    let f: Vec<&str> = line.split(':').collect();
    let (user, nt, flags) = match f.as_slice() {
        [u, _, _, nt, flags, ..] if nt.len() == 32 && nt.chars().all(|c| c.is_ascii_hexdigit()) => {
            (*u, *nt, *flags)
        }
        _ => {
            return Err(RecoveryError::Config(
                "a Samba entry of the backup is malformed".into(),
            ))
        }
    };
    let conf = &cfg.samba.config;
    if crate::gateway::samba::account_exists(conf, user) != Some(true) {
        let mut b = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let throwaway = Zeroizing::new(hex::encode(b));
        crate::gateway::samba::set_password(conf, user, &throwaway).map_err(|e| {
            RecoveryError::Command {
                what: format!("adding the Samba account {user}"),
                message: e.to_string(),
            }
        })?;
    }
    command::run_stdout_too(
        "pdbedit --set-nt-hash",
        Command::new("pdbedit")
            .arg("-s")
            .arg(conf)
            .args(["-u", user, "--set-nt-hash", nt]),
    )?;
    crate::gateway::samba::set_enabled(conf, user, !flags.contains('D')).map_err(|e| {
        RecoveryError::Command {
            what: format!("setting the Samba account {user}'s flags"),
            message: e.to_string(),
        }
    })?;
    Ok(user.to_string())
}

/// Write the state back on this machine: files, groups, accounts, Samba
/// passwords. Everything that could refuse is checked before anything is
/// written. `config_path` is where the config goes. The report, one line
/// per thing restored.
pub fn restore(
    bundle: &Bundle,
    key: &RecoveryKey,
    config_path: &Path,
) -> Result<Vec<String>, RecoveryError> {
    let data = |f: &SavedFile| {
        b64()
            .decode(&f.data)
            .map(Zeroizing::new)
            .map_err(|e| RecoveryError::Config(format!("{} is not base64: {e}", f.role)))
    };
    let cfg_file = bundle
        .files
        .iter()
        .find(|f| f.role == "config")
        .ok_or_else(|| RecoveryError::Config("the backup holds no config".into()))?;
    let cfg_text = String::from_utf8(data(cfg_file)?.to_vec())
        .map_err(|_| RecoveryError::Config("the config is not UTF-8".into()))?;
    let cfg = GatewayConfig::parse(&cfg_text, config_path)
        .map_err(|e| RecoveryError::Config(e.to_string()))?;
    // Where each file goes on this machine: the config where asked, the
    // rest where the restored config says.
    let target = |role: &str, old: &Path| -> PathBuf {
        match role {
            "config" => config_path.to_path_buf(),
            "users" => cfg.users.db.clone(),
            "users-key" => cfg.users.key_file.clone(),
            "shares" => cfg.share_list_path(),
            "tokens" => cfg.console.tokens_file.clone(),
            "swift-password" => cfg
                .store
                .swift
                .password_file
                .clone()
                .unwrap_or_else(|| old.to_path_buf()),
            "swift-app-secret" => cfg
                .store
                .swift
                .application_credential_secret_file
                .clone()
                .unwrap_or_else(|| old.to_path_buf()),
            _ => old.to_path_buf(),
        }
    };

    // 1. Checks, nothing written yet.
    let mut problems = Vec::new();
    for f in &bundle.files {
        let p = target(&f.role, &f.path);
        if let Some(now) = read_opt(&p)? {
            // The package's untouched default config is no gateway's.
            let packaged =
                f.role == "config" && now == crate::gateway::config::PACKAGED_DEFAULT.as_bytes();
            if now != *data(f)? && !packaged {
                problems.push(format!(
                    "{} exists and differs from the backup: this is not a fresh gateway (move it away to restore over it)",
                    p.display()
                ));
            }
        }
    }
    for a in &bundle.accounts {
        if let Some(u) = user_by_name(&a.name) {
            let ours = u.uid.as_raw() == a.uid
                && group_by_name(&cfg.users.group)
                    .is_some_and(|g| g.mem.contains(&a.name) || g.gid == u.gid);
            if !ours {
                problems.push(format!(
                    "a Unix account {} (uid {}) already exists and is not the gateway's (uid {} in group {}): it is never taken over; remove or rename it, or restore on a fresh machine",
                    a.name,
                    u.uid.as_raw(),
                    a.uid,
                    cfg.users.group
                ));
            }
        }
    }
    problems.extend(crate::gateway::console_accounts::conflicts(
        &bundle.console_admins,
    ));
    if !bundle.samba.is_empty() && !cfg.samba.config.exists() {
        problems.push(format!(
            "the smb.conf {} of the restored config does not exist: set up Samba first (`swiftgate setup`)",
            cfg.samba.config.display()
        ));
    }
    if !problems.is_empty() {
        return Err(RecoveryError::Refused(problems.join("; ")));
    }

    // 2. Files.
    let mut report = Vec::new();
    for f in &bundle.files {
        let p = target(&f.role, &f.path);
        if let Some(d) = p.parent() {
            crate::secure::new_dir(d).map_err(io(d))?;
        }
        crate::secure::write_private(&p, &data(f)?).map_err(io(&p))?;
        report.push(format!("{} -> {}", f.role, p.display()));
    }
    key.save(&cfg.recovery.key_file)?;
    crate::secure::new_dir(&cfg.cache.dir).map_err(io(&cfg.cache.dir))?;
    crate::gateway::state::State::load(&cfg.cache.dir)
        .update(|s| s.replaces_host = Some(bundle.host.clone()))
        .map_err(io(&cfg.cache.dir))?;

    // 3. Groups (same gid when free), then accounts (same uid when free).
    let ensure_group = |name: &str, gid: u32, system: bool| -> Result<u32, RecoveryError> {
        if let Some(g) = group_by_name(name) {
            return Ok(g.gid.as_raw());
        }
        let mut c = Command::new("groupadd");
        if system {
            c.arg("--system");
        }
        if gid_free(gid) {
            c.arg("--gid").arg(gid.to_string());
        }
        command::run_stdout_too("groupadd", c.arg(name))?;
        group_by_name(name)
            .map(|g| g.gid.as_raw())
            .ok_or_else(|| RecoveryError::Command {
                what: "groupadd".into(),
                message: format!("group {name} still does not exist"),
            })
    };
    let main = bundle.groups.iter().find(|g| g.name == cfg.users.group);
    ensure_group(&cfg.users.group, main.map_or(u32::MAX, |g| g.gid), true)?;
    let mut changed_ids = Vec::new();
    for a in &bundle.accounts {
        if user_by_name(&a.name).is_some() {
            report.push(format!("account {} (uid {}) already there", a.name, a.uid));
            continue;
        }
        let pgid = ensure_group(&a.group, a.gid, false)?;
        let mut c = Command::new("useradd");
        c.args(["--no-create-home", "--no-user-group", "--gid"])
            .arg(pgid.to_string())
            .arg("--groups")
            .arg(&cfg.users.group)
            .args(["--shell", "/usr/sbin/nologin", "--home-dir"])
            .arg(cfg.mountpoint(&a.name));
        let same_uid = uid_free(a.uid);
        if same_uid {
            c.arg("--uid").arg(a.uid.to_string());
        }
        command::run_stdout_too("useradd", c.arg(&a.name))?;
        let u = user_by_name(&a.name).ok_or_else(|| RecoveryError::Command {
            what: "useradd".into(),
            message: format!("user {} still does not exist", a.name),
        })?;
        if same_uid && pgid == a.gid {
            report.push(format!("account {} (uid {})", a.name, a.uid));
        } else {
            changed_ids.push((a.name.clone(), u.uid.as_raw(), u.gid.as_raw()));
            report.push(format!(
                "account {} with uid {} (uid {} was taken)",
                a.name,
                u.uid.as_raw(),
                a.uid
            ));
        }
    }
    if !changed_ids.is_empty() {
        // The user map keeps each user's uid/gid: point it at the new ones.
        let p = cfg.users.db.clone();
        let b = std::fs::read(&p).map_err(io(&p))?;
        let mut v: serde_json::Value = serde_json::from_slice(&b)
            .map_err(|e| RecoveryError::Config(format!("the user map: {e}")))?;
        for (n, uid, gid) in &changed_ids {
            if let Some(e) = v.pointer_mut(&format!("/users/{n}")) {
                e["uid"] = (*uid).into();
                e["gid"] = (*gid).into();
            }
        }
        crate::secure::write_private(&p, &serde_json::to_vec_pretty(&v).unwrap_or_default())
            .map_err(io(&p))?;
    }
    for g in bundle.groups.iter().filter(|g| g.name != cfg.users.group) {
        // The gateway's group got its accounts from useradd above; its
        // other members then are not the gateway's to restore.
        ensure_group(&g.name, g.gid, false)?;
        // Members that are gone (on this machine) are dropped, not fatal.
        let members: Vec<&str> = g
            .members
            .iter()
            .filter(|m| user_by_name(m).is_some())
            .map(String::as_str)
            .collect();
        command::run_stdout_too(
            "gpasswd",
            Command::new("gpasswd")
                .arg("-M")
                .arg(members.join(","))
                .arg(&g.name),
        )?;
        report.push(format!("group {} ({})", g.name, members.join(", ")));
    }

    // 4. Samba password hashes.
    let mut restored = Vec::new();
    for l in bundle.samba.lines().filter(|l| !l.trim().is_empty()) {
        restored.push(samba_import(&cfg, l)?);
    }
    if !restored.is_empty() {
        report.push(format!(
            "Samba passwords of {} users ({})",
            restored.len(),
            restored.join(", ")
        ));
    }
    // 5. The console's administrators, with their passwords.
    report.extend(
        crate::gateway::console_accounts::restore(&bundle.console_admins, &cfg.console.admin_group)
            .map_err(|e| RecoveryError::Command {
                what: "restoring the console's administrators".into(),
                message: e.to_string(),
            })?,
    );
    // 6. The team shares' smb.conf fragment (the daemon keeps it from now on).
    crate::gateway::shares::ensure_conf(&cfg).map_err(|e| RecoveryError::Command {
        what: "writing the team shares' smb.conf".into(),
        message: e.to_string(),
    })?;
    Ok(report)
}
