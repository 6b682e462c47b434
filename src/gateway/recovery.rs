//! Disaster recovery: the gateway's state (config, user map and its key,
//! team shares, API tokens, Samba password hashes, the Unix accounts'
//! uids) as one encrypted object in the store, so that a new VM can be
//! rebuilt from the store and a recovery key alone.
//!
//! Object format: `SGSTATE1` ‖ salt(16) ‖ key check(16) ‖ nonce(12) ‖
//! AES-256-GCM(JSON bundle) ‖ SHA-256 of everything before it. The key is
//! Argon2id(recovery key, salt). The check value tells a wrong key from a
//! damaged object; the trailing checksum tells damage from a wrong key.

use super::command::{self, CommandFailed};
use super::config::GatewayConfig;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The one object holding the state, in the recovery store.
pub const OBJECT: &str = "gateway-state.sgs";
const MAGIC: &[u8; 8] = b"SGSTATE1";
const HEADER: usize = 8 + 16 + 16 + 12;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0:?} is not a recovery key: it is 32 letters and digits (0-9, A-F) in groups of four, like ABCD-0123-...; give the key `swiftgate recovery init` printed (root can print it again on the old gateway with `swiftgate recovery show-key`)")]
    BadKey(String),
    #[error("no recovery key at {0}: create one with `swiftgate recovery init` (it is printed once; keep it off this machine)")]
    NoKey(PathBuf),
    #[error("a recovery key already exists at {0}: print it with `swiftgate recovery show-key`")]
    KeyExists(PathBuf),
    #[error("the recovery key does not open the backup in {0}: check the key (it was printed by `swiftgate recovery init`); nothing was written")]
    WrongKey(String),
    #[error("the backup in {store} is damaged ({why}): restore from a copy of the object (Swift object versioning) or another store; nothing was written")]
    Damaged { store: String, why: String },
    #[error("no gateway state in {0} (object {OBJECT}): is this the recovery store of the gateway ([recovery] url)? Nothing was written")]
    Missing(String),
    #[error("the store {url}: {cause}")]
    Store { url: String, cause: String },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
    #[error(transparent)]
    Run(#[from] CommandFailed),
    #[error("the backup's config does not load: {0}")]
    Config(String),
    #[error("restore refused, nothing was written: {0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |cause| RecoveryError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A recovery key: 128 random bits, written as 8 groups of 4 hex digits.
pub struct RecoveryKey(Zeroizing<String>);

impl RecoveryKey {
    pub fn generate() -> RecoveryKey {
        let mut b = Zeroizing::new([0u8; 16]);
        rand::rngs::OsRng.fill_bytes(&mut *b);
        RecoveryKey(Zeroizing::new(hex::encode_upper(*b)))
    }

    /// Accepts any case, with or without dashes and spaces.
    pub fn parse(s: &str) -> Result<RecoveryKey, RecoveryError> {
        let norm: Zeroizing<String> = Zeroizing::new(
            s.chars()
                .filter(|c| !matches!(c, '-' | ' ' | '\t' | '\n' | '\r'))
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );
        if norm.len() != 32 || !norm.chars().all(|c| c.is_ascii_hexdigit()) {
            // Never echo what might be most of a key: only its length.
            return Err(RecoveryError::BadKey(format!(
                "<{} characters>",
                norm.chars().count()
            )));
        }
        Ok(RecoveryKey(norm))
    }

    /// `XXXX-XXXX-...`: what the admin writes down.
    pub fn display(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(40));
        for (i, c) in self.0.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                s.push('-');
            }
            s.push(c);
        }
        s
    }

    fn derive(&self, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        // The input is 128 random bits: Argon2id's defaults are plenty.
        argon2::Argon2::default()
            .hash_password_into(self.0.as_bytes(), salt, &mut *out)
            .expect("argon2 with a 16-byte salt and 32-byte output");
        out
    }

    pub fn load(path: &Path) -> Result<RecoveryKey, RecoveryError> {
        match std::fs::read_to_string(path) {
            Ok(s) => RecoveryKey::parse(&Zeroizing::new(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(RecoveryError::NoKey(path.to_path_buf()))
            }
            Err(e) => Err(io(path)(e)),
        }
    }

    fn save(&self, path: &Path) -> Result<(), RecoveryError> {
        if let Some(d) = path.parent() {
            crate::secure::new_dir(d).map_err(io(d))?;
        }
        crate::secure::write_private(path, format!("{}\n", self.display().as_str()).as_bytes())
            .map_err(io(path))
    }
}

fn check_value(key: &[u8; 32]) -> [u8; 16] {
    let d = Sha256::new()
        .chain_update(b"swiftgate recovery key check")
        .chain_update(key)
        .finalize();
    let mut c = [0u8; 16];
    c.copy_from_slice(&d[..16]);
    c
}

pub fn seal(key: &RecoveryKey, plain: &[u8]) -> Vec<u8> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let k = key.derive(&salt);
    let cipher = Aes256Gcm::new_from_slice(&*k).expect("32-byte key");
    let mut out = Vec::with_capacity(HEADER + plain.len() + 48);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&check_value(&k));
    out.extend_from_slice(&nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: MAGIC,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer");
    out.extend_from_slice(&ct);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

pub fn open(
    key: &RecoveryKey,
    obj: &[u8],
    store: &str,
) -> Result<Zeroizing<Vec<u8>>, RecoveryError> {
    let damaged = |why: &str| RecoveryError::Damaged {
        store: store.to_string(),
        why: why.to_string(),
    };
    if obj.len() < HEADER + 16 + 32 || &obj[..8] != MAGIC {
        return Err(damaged("not a swiftgate state object, or cut short"));
    }
    let (body, sum) = obj.split_at(obj.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err(damaged("its checksum does not match"));
    }
    let salt = &body[8..24];
    let check = &body[24..40];
    let nonce = &body[40..52];
    let k = key.derive(salt);
    if check_value(&k) != check {
        return Err(RecoveryError::WrongKey(store.to_string()));
    }
    let cipher = Aes256Gcm::new_from_slice(&*k).expect("32-byte key");
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &body[HEADER..],
                aad: MAGIC,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| damaged("it does not decrypt"))
}

/// A file of the state, whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedFile {
    /// config, users, users-key, shares, tokens, swift-password,
    /// swift-app-secret.
    pub role: String,
    pub path: PathBuf,
    pub data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The name of its primary group.
    pub group: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedGroup {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Everything a new gateway needs, besides the homes' data (in the store).
#[derive(Serialize, Deserialize)]
pub struct Bundle {
    pub version: u32,
    pub created_unix: u64,
    pub host: String,
    pub files: Vec<SavedFile>,
    /// `pdbedit -e smbpasswd:` of the gateway's users.
    pub samba: String,
    pub accounts: Vec<SavedAccount>,
    pub groups: Vec<SavedGroup>,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.samba.zeroize();
        for f in &mut self.files {
            f.data.zeroize();
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The gateway's users' Samba entries, smbpasswd style (name, uid, LM and
/// NT hash, flags). Not `pdbedit -e smbpasswd:`: that refuses every
/// account whose RID is not derived from its uid (all but the first).
fn samba_export(cfg: &GatewayConfig, users: &[String]) -> Result<String, RecoveryError> {
    let all = Zeroizing::new(command::run_stdout_too(
        "pdbedit -L -w",
        Command::new("pdbedit")
            .arg("-s")
            .arg(&cfg.samba.config)
            .args(["-L", "-w"]),
    )?);
    // Only the gateway's own accounts: not whatever else the passdb holds.
    Ok(all
        .lines()
        .filter(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| users.iter().any(|u| u == n))
        })
        .map(|l| format!("{l}\n"))
        .collect())
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
    if super::samba::account_exists(conf, user) != Some(true) {
        let mut b = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let throwaway = Zeroizing::new(hex::encode(b));
        super::samba::set_password(conf, user, &throwaway).map_err(|e| RecoveryError::Command {
            what: format!("adding the Samba account {user}"),
            message: e.to_string(),
        })?;
    }
    command::run_stdout_too(
        "pdbedit --set-nt-hash",
        Command::new("pdbedit")
            .arg("-s")
            .arg(conf)
            .args(["-u", user, "--set-nt-hash", nt]),
    )?;
    super::samba::set_enabled(conf, user, !flags.contains('D')).map_err(|e| {
        RecoveryError::Command {
            what: format!("setting the Samba account {user}'s flags"),
            message: e.to_string(),
        }
    })?;
    Ok(user.to_string())
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, RecoveryError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Collect the state as it is now.
pub fn collect(cfg: &GatewayConfig, config_path: &Path) -> Result<Bundle, RecoveryError> {
    let mut files = Vec::new();
    let share_list = cfg.share_list_path();
    for (role, path) in [
        ("config", config_path.to_path_buf()),
        ("users", cfg.users.db.clone()),
        ("users-key", cfg.users.key_file.clone()),
        ("shares", share_list.clone()),
        ("tokens", cfg.console.tokens_file.clone()),
        // The service identity's secrets the config points at: without
        // them the restored gateway could not reach the store.
        (
            "swift-password",
            cfg.store.swift.password_file.clone().unwrap_or_default(),
        ),
        (
            "swift-app-secret",
            cfg.store
                .swift
                .application_credential_secret_file
                .clone()
                .unwrap_or_default(),
        ),
    ] {
        if path.as_os_str().is_empty() {
            continue;
        }
        if let Some(b) = read_opt(&path)? {
            files.push(SavedFile {
                role: role.into(),
                path,
                data: b64().encode(&b),
            });
        }
    }
    let users: Vec<String> = match read_opt(&cfg.users.db)? {
        Some(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| {
                v.get("users")
                    .and_then(|u| u.as_object())
                    .map(|m| m.keys().cloned().collect())
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut accounts = Vec::new();
    for u in &users {
        if let Ok(Some(pw)) = nix::unistd::User::from_name(u) {
            let group = nix::unistd::Group::from_gid(pw.gid)
                .ok()
                .flatten()
                .map(|g| g.name)
                .unwrap_or_else(|| u.clone());
            accounts.push(SavedAccount {
                name: u.clone(),
                uid: pw.uid.as_raw(),
                gid: pw.gid.as_raw(),
                group,
            });
        }
    }
    let mut group_names = vec![cfg.users.group.clone()];
    if let Some(b) = read_opt(&share_list)? {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
            if let Some(m) = v.get("shares").and_then(|s| s.as_object()) {
                for r in m.values() {
                    if let Some(g) = r.get("group").and_then(|g| g.as_str()) {
                        group_names.push(g.to_string());
                    }
                }
            }
        }
    }
    group_names.sort();
    group_names.dedup();
    let groups = group_names
        .into_iter()
        .filter_map(|n| nix::unistd::Group::from_name(&n).ok().flatten())
        .map(|g| {
            let mut members = g.mem;
            members.sort();
            SavedGroup {
                name: g.name,
                gid: g.gid.as_raw(),
                members,
            }
        })
        .collect();
    let samba = if users.is_empty() {
        String::new()
    } else {
        samba_export(cfg, &users)?
    };
    Ok(Bundle {
        version: 1,
        created_unix: now_unix(),
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        files,
        samba,
        accounts,
        groups,
    })
}

/// The store holding the state object.
pub fn open_store(
    url: &str,
    swift: &crate::store::swift::SwiftFlags,
) -> Result<crate::store::DynStore, RecoveryError> {
    let opts = crate::store::OpenOptions {
        swift: swift.clone(),
        ignore_env: false,
    };
    crate::store::open_with(url, &opts).map_err(|e| RecoveryError::Store {
        url: url.into(),
        cause: e.to_string(),
    })
}

/// What the daemon's backups are doing (`swiftgate recovery status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupStatus {
    /// The recovery store.
    pub url: String,
    pub last_backup_unix: Option<u64>,
    pub last_size: Option<u64>,
    /// The last attempt's error (none: it succeeded).
    pub last_error: Option<String>,
}

/// The daemon's backups: after each change of the state (checked every few
/// seconds, so a burst of changes makes one backup) and every hour.
pub struct Backups {
    cfg: GatewayConfig,
    config_path: PathBuf,
    inner: parking_lot::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    status: BackupStatus,
    /// Digest of the last stored state (without its time stamp).
    digest: Option<[u8; 32]>,
    at: Option<Instant>,
}

impl Backups {
    pub fn new(cfg: GatewayConfig, config_path: &Path) -> Arc<Backups> {
        let url = cfg.recovery_url();
        Arc::new(Backups {
            cfg,
            config_path: config_path.to_path_buf(),
            inner: parking_lot::Mutex::new(Inner {
                status: BackupStatus {
                    url,
                    ..Default::default()
                },
                ..Default::default()
            }),
        })
    }

    pub fn status(&self) -> BackupStatus {
        self.inner.lock().status.clone()
    }

    /// Back up if the state changed (or `force`, or an hour went by);
    /// the result in words.
    pub fn run(&self, force: bool) -> Result<String, RecoveryError> {
        let mut inner = self.inner.lock();
        let r = self.run_locked(&mut inner, force);
        match &r {
            Ok(_) => inner.status.last_error = None,
            Err(e) => inner.status.last_error = Some(e.to_string()),
        }
        r
    }

    fn run_locked(&self, inner: &mut Inner, force: bool) -> Result<String, RecoveryError> {
        let key = RecoveryKey::load(&self.cfg.recovery.key_file)?;
        let mut bundle = collect(&self.cfg, &self.config_path)?;
        let created = bundle.created_unix;
        bundle.created_unix = 0;
        let plain = Zeroizing::new(serde_json::to_vec(&bundle).unwrap_or_default());
        let digest: [u8; 32] = Sha256::digest(&*plain).into();
        let due = inner
            .at
            .is_none_or(|t| t.elapsed() >= self.cfg.recovery.interval);
        if !force && !due && inner.digest == Some(digest) {
            return Ok("the gateway state is unchanged since the last backup".into());
        }
        bundle.created_unix = created;
        let plain = Zeroizing::new(serde_json::to_vec(&bundle).unwrap_or_default());
        let obj = seal(&key, &plain);
        let url = self.cfg.recovery_url();
        let store = open_store(&url, &self.cfg.store.swift)?;
        let serr = |e: crate::store::StoreError| RecoveryError::Store {
            url: url.clone(),
            cause: e.to_string(),
        };
        store.prepare().map_err(serr)?;
        store.put(OBJECT, &obj).map_err(serr)?;
        inner.digest = Some(digest);
        inner.at = Some(Instant::now());
        inner.status.last_backup_unix = Some(created);
        inner.status.last_size = Some(obj.len() as u64);
        tracing::info!(
            store = %url,
            users = bundle.accounts.len(),
            bytes = obj.len(),
            "gateway state backed up"
        );
        Ok(format!(
            "gateway state backed up to {url} ({} users, {} bytes)",
            bundle.accounts.len(),
            obj.len()
        ))
    }

    /// The background loop of `swiftgate serve`.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        std::thread::Builder::new()
            .name("state-backup".into())
            .spawn(move || {
                let mut warned = false;
                loop {
                    match me.run(false) {
                        Ok(_) => warned = false,
                        Err(e) => {
                            if !warned {
                                tracing::warn!("gateway state not backed up: {e}");
                            }
                            warned = true;
                        }
                    }
                    std::thread::sleep(me.cfg.recovery.check_interval);
                }
            })
            .ok();
    }
}

/// `swiftgate recovery init`: a new key, root-only; printed by the caller once.
pub fn init_key(cfg: &GatewayConfig) -> Result<RecoveryKey, RecoveryError> {
    let p = &cfg.recovery.key_file;
    if p.exists() {
        return Err(RecoveryError::KeyExists(p.clone()));
    }
    let k = RecoveryKey::generate();
    k.save(p)?;
    Ok(k)
}

/// Download and decrypt the state; nothing is written.
pub fn fetch(
    url: &str,
    swift: &crate::store::swift::SwiftFlags,
    key: &RecoveryKey,
) -> Result<Bundle, RecoveryError> {
    let store = open_store(url, swift)?;
    let obj = match store.get(OBJECT) {
        Ok(o) => o,
        Err(crate::store::StoreError::NotFound { .. }) => {
            return Err(RecoveryError::Missing(url.into()))
        }
        Err(e) => {
            return Err(RecoveryError::Store {
                url: url.into(),
                cause: e.to_string(),
            })
        }
    };
    let plain = open(key, &obj, url)?;
    serde_json::from_slice(&plain).map_err(|e| RecoveryError::Damaged {
        store: url.into(),
        why: format!("its contents do not parse: {e}"),
    })
}

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
            let packaged = f.role == "config" && now == super::config::PACKAGED_DEFAULT.as_bytes();
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
    super::state::State::load(&cfg.cache.dir)
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
    // 5. The team shares' smb.conf fragment (the daemon keeps it from now on).
    super::shares::ensure_conf(&cfg).map_err(|e| RecoveryError::Command {
        what: "writing the team shares' smb.conf".into(),
        message: e.to_string(),
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_in_any_spelling_and_display_in_groups() {
        let k = RecoveryKey::generate();
        let shown = k.display();
        assert_eq!(shown.len(), 39);
        assert_eq!(shown.matches('-').count(), 7);
        let again = RecoveryKey::parse(&shown.to_lowercase().replace('-', " ")).unwrap();
        assert_eq!(*again.0, *k.0);
        assert!(RecoveryKey::parse("ABCD-1234").is_err());
        assert!(RecoveryKey::parse(&"Z".repeat(32)).is_err());
        // The error never repeats the input.
        let e = RecoveryKey::parse("SECRET-SECRET")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn sealed_state_opens_only_with_its_key_and_damage_is_told_apart() {
        let k = RecoveryKey::generate();
        let obj = seal(&k, b"state");
        assert_eq!(&*open(&k, &obj, "s").unwrap(), b"state");
        let other = RecoveryKey::generate();
        assert!(matches!(
            open(&other, &obj, "s"),
            Err(RecoveryError::WrongKey(_))
        ));
        for at in [3, 30, HEADER + 2, obj.len() - 1] {
            let mut bad = obj.clone();
            bad[at] ^= 1;
            assert!(
                matches!(open(&k, &bad, "s"), Err(RecoveryError::Damaged { .. })),
                "flip at {at}"
            );
        }
        assert!(matches!(
            open(&k, &obj[..obj.len() / 2], "s"),
            Err(RecoveryError::Damaged { .. })
        ));
        assert!(!obj.windows(5).any(|w| w == b"state"));
    }
}
