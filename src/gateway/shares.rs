//! Team shares: one filesystem on its own container per share, mounted
//! while the daemon runs, exported as `\\gateway\NAME` to the members of
//! a Unix group. The share list is written only by the holder of the
//! state lock (the daemon); the generated smb.conf sections go into a file
//! the main smb.conf includes, and smbd is told to reload it.

use super::api::{ShareSpec, ShareStatus};
use super::command::{self, CommandFailed};
use super::config::{GatewayConfig, UserMapMode, MAX_KEEP_DAYS};
use super::daemon::{open_service_store, share_key, Gateway, GatewayError};
use super::usermap::{check_name, UserSecrets};
use crate::fs::engine::{self, MkfsOptions, PARAMS_KEY};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("there is no team share {0:?} (`swiftgate share list` shows them)")]
    NotFound(String),
    #[error("a share named {0:?} exists already")]
    Exists(String),
    #[error("team shares in per-user mode need the gateway's own Swift identity in [store.swift] (username and password_file, or an application credential): a share belongs to no single user")]
    NeedServiceIdentity,
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
    #[error(transparent)]
    Run(#[from] CommandFailed),
    #[error("the store of share {name} ({url}): {cause}")]
    Store {
        name: String,
        url: String,
        cause: String,
    },
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Map(#[from] super::usermap::UserMapError),
}

impl ShareError {
    fn invalid(field: &'static str, message: impl Into<String>) -> ShareError {
        ShareError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// One share as kept in the list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareRecord {
    pub spec: ShareSpec,
    /// The group in force.
    pub group: String,
    pub store: String,
    /// The filesystem's passphrase, sealed like the user map's secrets.
    pub sealed: String,
    pub created_unix: u64,
    /// Removed without --purge: out of smb.conf and unmounted, the data and
    /// its key kept so that adding the share again brings it back.
    #[serde(default)]
    pub removed: bool,
    /// `share quota`; enforced by the mounted engine.
    #[serde(default, skip_serializing_if = "crate::fs::quota::Quota::is_none")]
    pub quota: crate::fs::quota::Quota,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShareList {
    pub version: u32,
    pub shares: BTreeMap<String, ShareRecord>,
}

pub fn load(cfg: &GatewayConfig) -> Result<ShareList, ShareError> {
    let p = cfg.share_list_path();
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| ShareError::Io {
            path: p.clone(),
            cause: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ShareList {
            version: 1,
            shares: BTreeMap::new(),
        }),
        Err(e) => Err(ShareError::Io { path: p, cause: e }),
    }
}

fn save(cfg: &GatewayConfig, l: &ShareList) -> Result<(), ShareError> {
    let p = cfg.share_list_path();
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|cause| ShareError::Io {
            path: d.to_path_buf(),
            cause,
        })?;
    }
    let body = serde_json::to_vec_pretty(l).unwrap_or_default();
    crate::secure::write_private(&p, &body).map_err(|cause| ShareError::Io { path: p, cause })
}

/// Samba share names are case-insensitive and land in paths, container
/// and group names: letters, digits, '.', '_', '-', at most 26 (so that
/// `share-NAME` is a valid group name), and none of Samba's own.
pub fn check_share_name(cfg: &GatewayConfig, name: &str) -> Result<(), ShareError> {
    let ok = !name.is_empty()
        && name.len() <= 26
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(ShareError::invalid(
            "name",
            format!("invalid share name {name:?}: use letters, digits, '.', '_' or '-' (at most 26, starting with a letter or digit)"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    let reserved = ["global", "homes", "printers", "print$", "ipc$"];
    if reserved.contains(&lower.as_str()) || lower == cfg.samba.share.to_ascii_lowercase() {
        return Err(ShareError::invalid(
            "name",
            format!("{name:?} is reserved (Samba's own sections and the home share)"),
        ));
    }
    Ok(())
}

/// A comment goes into smb.conf on one line: no control characters (a
/// newline would start a new line of configuration) and no trailing
/// backslash (it would continue the line into the next).
fn check_comment(c: &str) -> Result<(), ShareError> {
    if c.chars().count() > 200 {
        return Err(ShareError::invalid(
            "comment",
            "the comment is longer than 200 characters",
        ));
    }
    if c.chars().any(|ch| ch.is_control()) {
        return Err(ShareError::invalid(
            "comment",
            "the comment must be one line (no newlines or control characters)",
        ));
    }
    if c.trim_end().ends_with('\\') {
        return Err(ShareError::invalid(
            "comment",
            "the comment must not end with a backslash",
        ));
    }
    Ok(())
}

fn default_group(name: &str) -> String {
    format!("share-{}", name.to_ascii_lowercase())
}

/// Validate a spec; returns (group, members to set or None).
fn check_spec(gw: &Gateway, spec: &ShareSpec) -> Result<(String, Option<Vec<String>>), ShareError> {
    check_share_name(&gw.cfg, &spec.name)?;
    check_comment(&spec.comment)?;
    if spec.recycle_keep_days.is_some_and(|d| d > MAX_KEEP_DAYS) {
        return Err(ShareError::invalid(
            "recycle_keep_days",
            format!("keep deleted files at most {MAX_KEEP_DAYS} days (0 keeps them until the bin is emptied)"),
        ));
    }
    let group = spec
        .group
        .clone()
        .unwrap_or_else(|| default_group(&spec.name));
    if check_name(&group).is_err() || group.starts_with(['.', '-']) {
        return Err(ShareError::invalid(
            "group",
            format!("invalid group name {group:?}"),
        ));
    }
    if let Ok(Some(g)) = nix::unistd::Group::from_name(&group) {
        if g.gid.as_raw() < gw.cfg.users.uid_min || g.gid.as_raw() == 0 {
            return Err(ShareError::invalid(
                "group",
                format!(
                    "{group} is a system group (gid {}): pick a group of its own for the share",
                    g.gid
                ),
            ));
        }
    }
    let mut field = "members";
    let check_user = |u: &String, field: &'static str| -> Result<(), ShareError> {
        match gw.users.get(u) {
            Ok((e, _)) if !e.removed => Ok(()),
            Ok(_) => Err(ShareError::invalid(field, format!("user {u} was removed"))),
            Err(super::usermap::UserMapError::NoSuchUser(_))
            | Err(super::usermap::UserMapError::BadName(_)) => Err(ShareError::invalid(
                field,
                format!("{u:?} is not a gateway user (add it with `swiftgate user add`)"),
            )),
            Err(e) => Err(e.into()),
        }
    };
    let members = match &spec.members {
        Some(m) => {
            for u in m {
                check_user(u, field)?;
            }
            field = "read_only";
            for u in &spec.read_only {
                check_user(u, field)?;
            }
            let mut all: Vec<String> = m.iter().chain(&spec.read_only).cloned().collect();
            all.sort();
            all.dedup();
            Some(all)
        }
        None => {
            for u in &spec.read_only {
                check_user(u, "read_only")?;
            }
            // Read-only members must be in the group to get in at all.
            (!spec.read_only.is_empty()).then(|| {
                let mut all = group_members(&group);
                all.extend(spec.read_only.iter().cloned());
                all.sort();
                all.dedup();
                all
            })
        }
    };
    Ok((group, members))
}

pub fn group_members(group: &str) -> Vec<String> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => {
            let mut m = g.mem;
            m.sort();
            m
        }
        _ => Vec::new(),
    }
}

/// The group, created if missing; returns its gid and whether it was made.
fn ensure_group(group: &str) -> Result<(u32, bool), ShareError> {
    if let Ok(Some(g)) = nix::unistd::Group::from_name(group) {
        return Ok((g.gid.as_raw(), false));
    }
    command::run_stdout_too("groupadd", Command::new("groupadd").arg(group))?;
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok((g.gid.as_raw(), true)),
        _ => Err(ShareError::Command {
            what: "groupadd".into(),
            message: format!("group {group} still does not exist"),
        }),
    }
}

fn set_members(group: &str, members: &[String]) -> Result<(), ShareError> {
    command::run_stdout_too(
        "gpasswd",
        Command::new("gpasswd")
            .arg("-M")
            .arg(members.join(","))
            .arg(group),
    )
    .map(drop)
    .map_err(ShareError::from)
}

/// The smb.conf section of a share.
pub fn section(cfg: &GatewayConfig, r: &ShareRecord) -> String {
    let mut s = format!("[{}]\n", r.spec.name);
    if !r.spec.comment.is_empty() {
        s.push_str(&format!("   comment = {}\n", r.spec.comment));
    }
    s.push_str(&format!(
        "   path = {}\n   valid users = @{g}\n   read only = no\n",
        cfg.share_mountpoint(&r.spec.name).display(),
        g = r.group
    ));
    if !r.spec.read_only.is_empty() {
        s.push_str(&format!("   read list = {}\n", r.spec.read_only.join(" ")));
    }
    s.push_str(&format!(
        r#"   # Every member's files belong to the group and stay usable by all.
   force group = {g}
   create mask = 0660
   force create mode = 0660
   directory mask = 2770
   force directory mode = 2770
   browseable = yes
"#,
        g = r.group
    ));
    s.push_str(&super::samba::vfs_lines(
        &cfg.recycle,
        r.spec.recycle.unwrap_or(true),
        "0770",
        "shadow_copy2",
    ));
    s.push_str(&super::samba::shadow_copy_lines(&cfg.shares.root));
    s
}

/// Rewrite the included fragment (atomically) from the list.
fn write_conf(cfg: &GatewayConfig, l: &ShareList) -> Result<(), ShareError> {
    let mut body = String::from(
        "# Team shares, generated by the swiftgate daemon: edit them with `swiftgate share`.\n",
    );
    for r in l.shares.values().filter(|r| !r.removed) {
        body.push('\n');
        body.push_str(&section(cfg, r));
    }
    let p = cfg.share_smb_conf();
    write_readable(&p, body.as_bytes()).map_err(|cause| ShareError::Io { path: p, cause })
}

/// smbd reads it as root; no secrets inside: 0644 like smb.conf.
fn write_readable(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    crate::secure::write_private(path, body)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// Make sure the fragment exists (the main smb.conf includes it).
pub fn ensure_conf(cfg: &GatewayConfig) -> Result<(), ShareError> {
    write_conf(cfg, &load(cfg)?)
}

/// Tell smbd to reload its configuration; the result in words.
pub fn reload(cfg: &GatewayConfig) -> String {
    let out = Command::new("smbcontrol")
        .arg("-s")
        .arg(&cfg.samba.config)
        .args(["smbd", "reload-config"])
        .output();
    match out {
        Ok(o) if o.status.success() => "smbd reloaded its configuration".into(),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            );
            if text.contains("Can't find pid") || text.contains("No such process") {
                "smbd is not running: it reads the share when it starts".into()
            } else {
                format!("smbd did not reload: {}", text.trim())
            }
        }
        Err(e) => format!("cannot run smbcontrol ({e}): reload smbd by hand"),
    }
}

/// testparm's verdict on the whole configuration: "ok" or its complaints.
/// testparm's verdict, run again only when smb.conf or the shares
/// fragment changed (a page showing it must not start a process and parse
/// Samba's whole configuration on every view).
pub fn testparm(cfg: &GatewayConfig) -> String {
    type Stamp = Vec<(std::path::PathBuf, Option<(std::time::SystemTime, u64)>)>;
    static LAST: parking_lot::Mutex<Option<(Stamp, String)>> = parking_lot::Mutex::new(None);
    let stamp: Stamp = [cfg.samba.config.clone(), cfg.share_smb_conf()]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p.clone(), m)
        })
        .collect();
    let mut last = LAST.lock();
    if let Some((s, v)) = &*last {
        if *s == stamp {
            return v.clone();
        }
    }
    let v = run_testparm(cfg);
    *last = Some((stamp, v.clone()));
    v
}

fn run_testparm(cfg: &GatewayConfig) -> String {
    let out = Command::new("testparm")
        .args(["-s", "--suppress-prompt"])
        .arg(&cfg.samba.config)
        .output();
    match out {
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let bad: Vec<&str> = err
                .lines()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("unknown parameter")
                        || l.contains("ignoring")
                        || l.contains("error")
                        || l.contains("invalid")
                        || l.contains("can't find include")
                })
                .collect();
            if o.status.success() && bad.is_empty() {
                "ok".into()
            } else if bad.is_empty() {
                format!("testparm failed: {}", err.trim())
            } else {
                bad.join("\n")
            }
        }
        Err(e) => format!("cannot run testparm: {e}"),
    }
}

fn passphrase(gw: &Gateway, r: &ShareRecord) -> Result<Option<String>, ShareError> {
    Ok(gw
        .users
        .open_other(&share_key(&r.spec.name), &r.sealed)?
        .passphrase
        .clone())
}

fn store_of(gw: &Gateway, name: &str, url: &str) -> Result<crate::store::DynStore, ShareError> {
    open_service_store(&gw.cfg, url).map_err(|e| ShareError::Store {
        name: name.into(),
        url: url.into(),
        cause: e.to_string(),
    })
}

fn mount(gw: &Arc<Gateway>, r: &ShareRecord) -> Result<(), ShareError> {
    let gid = nix::unistd::Group::from_name(&r.group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| ShareError::Command {
            what: "mounting".into(),
            message: format!("the group {} of share {} is gone", r.group, r.spec.name),
        })?;
    let store = store_of(gw, &r.spec.name, &r.store)?;
    gw.mount_share(&r.spec.name, store, passphrase(gw, r)?, gid, r.quota)?;
    // A quota changed while the mount was under way found nothing to
    // push to: read again.
    if let Some(now) = load(&gw.cfg)?.shares.get(&r.spec.name) {
        if now.quota != r.quota {
            gw.push_quota(&share_key(&r.spec.name), now.quota);
        }
    }
    Ok(())
}

/// At daemon start: the fragment, and every share mounted.
pub fn mount_all(gw: &Arc<Gateway>) {
    if let Err(e) = ensure_conf(&gw.cfg) {
        tracing::error!("cannot write the team shares' smb.conf: {e}");
    }
    let list = match load(&gw.cfg) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot read the share list: {e}");
            return;
        }
    };
    let mut failed = Vec::new();
    for r in list.shares.values().filter(|r| !r.removed) {
        if let Err(e) = mount(gw, r) {
            tracing::error!(share = %r.spec.name, "cannot mount the team share: {e}; trying again every {}s", RETRY.as_secs());
            failed.push(r.spec.name.clone());
        }
    }
    if !failed.is_empty() {
        retry(gw.clone(), failed);
    }
}

/// How often a share that could not be mounted at start is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// Shares that failed at start (the store unreachable for a while, or the
/// lease of the gateway this one was restored from not yet expired) are
/// tried again until mounted, removed, or the daemon stops.
fn retry(gw: Arc<Gateway>, mut names: Vec<String>) {
    let spawned = std::thread::Builder::new()
        .name("share-retry".into())
        .spawn(move || {
            while !names.is_empty() {
                let until = std::time::Instant::now() + RETRY;
                while std::time::Instant::now() < until {
                    if gw.stopping() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                let Ok(list) = load(&gw.cfg) else { continue };
                names.retain(|n| {
                    let Some(r) = list.shares.get(n).filter(|r| !r.removed) else {
                        return false;
                    };
                    match mount(&gw, r) {
                        Ok(()) => {
                            tracing::info!(share = %n, "team share mounted (on a later try)");
                            false
                        }
                        Err(e) => {
                            tracing::debug!(share = %n, "team share still not mountable: {e}");
                            true
                        }
                    }
                });
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the share retry thread: {e}");
    }
}

fn need_identity(cfg: &GatewayConfig, url: &str) -> Result<(), ShareError> {
    let f = &cfg.store.swift;
    let has = f.username.is_some()
        || f.user_id.is_some()
        || f.application_credential_id.is_some()
        || f.auth_token_file.is_some();
    if cfg.users.mode == UserMapMode::PerUser && url.starts_with("swift://") && !has {
        return Err(ShareError::NeedServiceIdentity);
    }
    Ok(())
}

pub fn add(gw: &Arc<Gateway>, spec: &ShareSpec) -> Result<String, ShareError> {
    let _g = gw.shares_lock.lock();
    let (group, members) = check_spec(gw, spec)?;
    let mut list = load(&gw.cfg)?;
    if list
        .shares
        .iter()
        .any(|(k, r)| k.eq_ignore_ascii_case(&spec.name) && !(r.removed && *k == spec.name))
    {
        return Err(ShareError::Exists(spec.name.clone()));
    }
    let url = gw.cfg.share_url(&spec.name);
    need_identity(&gw.cfg, &url)?;
    let (gid, made) = ensure_group(&group)?;
    let undo_group = |made: bool| {
        if made {
            let _ = Command::new("groupdel").arg(&group).output();
        }
    };
    let res = (|| -> Result<ShareRecord, ShareError> {
        if let Some(m) = &members {
            set_members(&group, m)?;
        }
        let store = store_of(gw, &spec.name, &url)?;
        let head = store.head(PARAMS_KEY).map_err(|e| ShareError::Store {
            name: spec.name.clone(),
            url: url.clone(),
            cause: e.to_string(),
        })?;
        // A share removed without --purge comes back with its data only
        // if its passphrase is still known: otherwise refuse to touch it.
        let secrets = UserSecrets {
            passphrase: gw.cfg.fs.encrypt.then(|| {
                let mut b = [0u8; 24];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
                hex::encode(b)
            }),
            swift: None,
        };
        let sealed = match (head, list.shares.get(&spec.name)) {
            (None, _) => {
                engine::mkfs(
                    &store,
                    &MkfsOptions {
                        block_size: u32::try_from(gw.cfg.fs.block_size).unwrap_or(4 << 20),
                        compression: crate::data::Compression::Zstd(3),
                        passphrase: secrets.passphrase.clone().map(String::into_bytes),
                        force: false,
                        root_owner: Some((0, gid)),
                    },
                )
                .map_err(|e| ShareError::Store {
                    name: spec.name.clone(),
                    url: url.clone(),
                    cause: e.to_string(),
                })?;
                gw.users.seal_other(&share_key(&spec.name), &secrets)
            }
            (Some(_), Some(old)) if old.removed && old.store == url => old.sealed.clone(),
            (Some(_), _) => {
                return Err(ShareError::invalid(
                    "name",
                    format!("{url} already holds a filesystem this gateway does not know the key of; pick another name or empty that container"),
                ))
            }
        };
        Ok(ShareRecord {
            spec: ShareSpec {
                group: Some(group.clone()),
                members: None,
                ..spec.clone()
            },
            group: group.clone(),
            store: url.clone(),
            sealed,
            created_unix: crate::clock::unix_now(),
            removed: false,
            quota: Default::default(),
        })
    })();
    let rec = match res {
        Ok(r) => r,
        Err(e) => {
            undo_group(made);
            return Err(e);
        }
    };
    list.shares.insert(spec.name.clone(), rec.clone());
    save(&gw.cfg, &list)?;
    let mounted = if gw.serving() {
        match mount(gw, &rec) {
            Ok(()) => "mounted".to_string(),
            Err(e) => format!("NOT mounted ({e})"),
        }
    } else {
        "mounted when the daemon starts".to_string()
    };
    write_conf(&gw.cfg, &list)?;
    let reload = reload(&gw.cfg);
    gw.events
        .info(&share_key(&spec.name), format!("team share added ({url})"));
    Ok(format!(
        "share {} added for group {group}: {url}, {mounted}; {reload}",
        spec.name
    ))
}

pub fn update(gw: &Arc<Gateway>, spec: &ShareSpec) -> Result<String, ShareError> {
    let _g = gw.shares_lock.lock();
    let mut list = load(&gw.cfg)?;
    let Some(old) = list.shares.get(&spec.name).filter(|r| !r.removed).cloned() else {
        return Err(ShareError::NotFound(spec.name.clone()));
    };
    // The group stays the share's; members and comment change.
    let spec2 = ShareSpec {
        group: Some(old.group.clone()),
        ..spec.clone()
    };
    if spec.group.as_ref().is_some_and(|g| *g != old.group) {
        return Err(ShareError::invalid(
            "group",
            format!("a share's group cannot change (it is {})", old.group),
        ));
    }
    let (group, members) = check_spec(gw, &spec2)?;
    if let Some(m) = &members {
        set_members(&group, m)?;
    }
    let rec = ShareRecord {
        spec: ShareSpec {
            members: None,
            ..spec2
        },
        ..old
    };
    list.shares.insert(spec.name.clone(), rec);
    save(&gw.cfg, &list)?;
    write_conf(&gw.cfg, &list)?;
    let reload = reload(&gw.cfg);
    gw.events
        .info(&share_key(&spec.name), "team share changed".to_string());
    Ok(format!("share {} updated; {reload}", spec.name))
}

/// `share quota`: kept in the share list (so in the recovery bundle),
/// and handed to the mounted share at once.
pub fn set_quota(gw: &Gateway, name: &str, q: crate::fs::quota::Quota) -> Result<(), ShareError> {
    let _g = gw.shares_lock.lock();
    let mut list = load(&gw.cfg)?;
    let Some(rec) = list.shares.get_mut(name).filter(|r| !r.removed) else {
        return Err(ShareError::NotFound(name.to_string()));
    };
    rec.quota = q;
    save(&gw.cfg, &list)?;
    gw.push_quota(&share_key(name), q);
    Ok(())
}

/// Take the share out (unmounted, flushed, section removed, smbd
/// reloaded); with `purge`, `progress` follows the deletion of its objects.
pub fn remove(
    gw: &Arc<Gateway>,
    name: &str,
    purge: bool,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<String, ShareError> {
    let _g = gw.shares_lock.lock();
    let mut list = load(&gw.cfg)?;
    let Some(rec) = list
        .shares
        .get(name)
        .filter(|r| !r.removed || purge)
        .cloned()
    else {
        return Err(ShareError::NotFound(name.into()));
    };
    progress("unmounting", 0, 0);
    gw.unmount(&share_key(name))?;
    if purge {
        list.shares.remove(name);
    } else if let Some(r) = list.shares.get_mut(name) {
        r.removed = true;
    }
    save(&gw.cfg, &list)?;
    write_conf(&gw.cfg, &list)?;
    let reload = reload(&gw.cfg);
    gw.events.info(
        &share_key(name),
        format!("team share removed (purge: {purge})"),
    );
    if !purge {
        return Ok(format!(
            "share {name} removed; the data stays in {} (`swiftgate share add {name}` brings it back, `share remove {name} --purge` deletes it); {reload}",
            rec.store
        ));
    }
    progress("listing", 0, 0);
    let store = store_of(gw, name, &rec.store)?;
    let err = |e: crate::store::StoreError| ShareError::Store {
        name: name.into(),
        url: rec.store.clone(),
        cause: e.to_string(),
    };
    let keys: Vec<String> = store
        .list_all("")
        .map_err(err)?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let total = keys.len() as u64;
    for (i, chunk) in keys.chunks(500).enumerate() {
        progress("deleting objects", (i * 500) as u64, total);
        store.delete_many(chunk).map_err(err)?;
    }
    progress("deleting objects", total, total);
    let _ = std::fs::remove_dir_all(gw.cfg.cache.dir.join("+shares").join(name));
    if rec.group == default_group(name) {
        let _ = Command::new("groupdel").arg(&rec.group).output();
    }
    Ok(format!(
        "share {name} removed and {total} objects deleted from {}; {reload}",
        rec.store
    ))
}

pub fn status(gw: &Gateway, with_testparm: bool) -> Result<Vec<ShareStatus>, ShareError> {
    let list = load(&gw.cfg)?;
    let verdict = with_testparm.then(|| testparm(&gw.cfg));
    let engines = gw.engines();
    let saved = gw.state.get().usage;
    Ok(list
        .shares
        .values()
        .filter(|r| !r.removed)
        .map(|r| {
            let key = share_key(&r.spec.name);
            let eng = engines.iter().find(|(k, _)| *k == key).map(|(_, e)| e);
            ShareStatus {
                spec: r.spec.clone(),
                group: r.group.clone(),
                members: group_members(&r.group),
                store: r.store.clone(),
                mountpoint: gw.cfg.share_mountpoint(&r.spec.name),
                mounted: eng.is_some(),
                usage: eng
                    .and_then(|e| e.usage().ok())
                    .map(|c| super::daemon::usage_of(&c))
                    .or_else(|| saved.get(&key).cloned()),
                quota: r.quota,
                smb_conf: section(&gw.cfg, r),
                testparm: verdict.clone(),
                error: None,
                recycle: Some(super::recycle_job::info(gw, &key)),
            }
        })
        .collect())
}
