//! What a backup holds (config, user map and its key, team shares, API
//! tokens, Samba password hashes, the Unix accounts' uids), collected from
//! this machine, and its encrypted object in the store.
//!
//! Object format: `SGSTATE1` ‖ salt(16) ‖ key check(16) ‖ nonce(12) ‖
//! AES-256-GCM(JSON bundle) ‖ SHA-256 of everything before it. The key is
//! Argon2id(recovery key, salt). The check value tells a wrong key from a
//! damaged object; the trailing checksum tells damage from a wrong key.

use super::{io, open_store, RecoveryError, RecoveryKey, OBJECT};
use crate::gateway::command;
use crate::gateway::config::GatewayConfig;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"SGSTATE1";
const HEADER: usize = 8 + 16 + 16 + 12;

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
    /// The console's administrators (backups from before this field have
    /// none).
    #[serde(default)]
    pub console_admins: Vec<crate::gateway::console_accounts::ConsoleAccount>,
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

pub(super) fn b64() -> base64::engine::GeneralPurpose {
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

pub(super) fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, RecoveryError> {
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
        created_unix: crate::clock::unix_now(),
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        files,
        samba,
        accounts,
        groups,
        console_admins: crate::gateway::console_accounts::collect(&cfg.console.admin_group)
            .unwrap_or_else(|e| {
                tracing::warn!("the console's administrators are not in this backup: {e}");
                Vec::new()
            }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
