//! The user map: Samba user → Unix ids, store URL and secrets (the home's
//! passphrase; in per-user mode the user's Keystone credentials). Secrets
//! are AES-256-GCM encrypted under a key in a root-only file, bound to the
//! user name, and never logged or shown back.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UserMapError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not a valid user map: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("the secrets of user {0} cannot be decrypted: wrong or replaced key file")]
    Decrypt(String),
    #[error("user {0:?} is not in the user map; add it with `swiftgate user add {0}`")]
    NoSuchUser(String),
    #[error("invalid user name {0:?}: use letters, digits, '.', '_' or '-' (at most 32, not starting with '-' or '.')")]
    BadName(String),
}

/// Samba user names end up in paths and container names: keep them tame.
pub fn check_name(user: &str) -> Result<(), UserMapError> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with(['-', '.'])
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(UserMapError::BadName(user.to_string()))
    }
}

/// Per-user Keystone identity (per-user mode).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_domain_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_domain_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credential_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credential_secret: Option<String>,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("username", &self.username)
            .field("user_id", &self.user_id)
            .field("project_name", &self.project_name)
            .field("project_id", &self.project_id)
            .field("application_credential_id", &self.application_credential_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct UserSecrets {
    /// The home filesystem's passphrase (None: not encrypted).
    #[serde(default)]
    pub passphrase: Option<String>,
    #[serde(default)]
    pub swift: Option<UserCredentials>,
}

impl std::fmt::Debug for UserSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserSecrets(<redacted>)")
    }
}

impl Drop for UserSecrets {
    fn drop(&mut self) {
        if let Some(p) = self.passphrase.as_mut() {
            zeroize::Zeroize::zeroize(p);
        }
        if let Some(c) = self.swift.as_mut() {
            for s in [&mut c.password, &mut c.application_credential_secret]
                .into_iter()
                .flatten()
            {
                zeroize::Zeroize::zeroize(s);
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserEntry {
    pub uid: u32,
    pub gid: u32,
    pub store: String,
    pub created_unix: u64,
    /// Removed without --purge: no login, data and passphrase kept so a
    /// later `user add` gets the same home back. ("disabled" in the file,
    /// its name before `user disable` existed.)
    #[serde(default, rename = "disabled")]
    pub removed: bool,
    /// `user disable`: the account stays, but no session may start.
    #[serde(default, rename = "login_disabled")]
    pub disabled: bool,
    /// Limit of the home (`user quota`); enforced by the mounted engine.
    #[serde(default, skip_serializing_if = "crate::fs::quota::Quota::is_none")]
    pub quota: crate::fs::quota::Quota,
    /// Base64 of nonce ‖ AES-256-GCM(JSON of UserSecrets), AAD = user name.
    secrets: String,
    /// Days the home's recycle bin keeps deleted files, when not the
    /// config's `[recycle] keep_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_keep_days: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MapFile {
    version: u32,
    users: BTreeMap<String, UserEntry>,
}

pub struct UserMap {
    path: PathBuf,
    cipher: Aes256Gcm,
    lock: Mutex<()>,
}

impl std::fmt::Debug for UserMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserMap({})", self.path.display())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UserMapError + '_ {
    move |source| UserMapError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

/// Read the key file, creating it (32 random bytes, mode 600) if missing.
fn load_key(path: &Path) -> Result<[u8; 32], UserMapError> {
    match std::fs::metadata(path) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(UserMapError::KeyExposed {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            let b = std::fs::read(path).map_err(io(path))?;
            b.try_into().map_err(|_| UserMapError::Corrupt {
                path: path.to_path_buf(),
                message: "the key file must hold exactly 32 bytes".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(io(d))?;
            }
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            std::io::Write::write_all(&mut f, &key).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            Ok(key)
        }
        Err(e) => Err(io(path)(e)),
    }
}

impl UserMap {
    pub fn open(path: &Path, key_file: &Path) -> Result<UserMap, UserMapError> {
        let key = load_key(key_file)?;
        Ok(UserMap {
            path: path.to_path_buf(),
            cipher: Aes256Gcm::new_from_slice(&key).expect("32-byte key"),
            lock: Mutex::new(()),
        })
    }

    fn read(&self) -> Result<MapFile, UserMapError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| UserMapError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MapFile {
                version: 1,
                users: BTreeMap::new(),
            }),
            Err(e) => Err(io(&self.path)(e)),
        }
    }

    fn write(&self, m: &MapFile) -> Result<(), UserMapError> {
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            let body = serde_json::to_vec_pretty(m).expect("serializable");
            std::io::Write::write_all(&mut f, &body).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))
    }

    fn seal(&self, user: &str, s: &UserSecrets) -> String {
        use base64::Engine;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(s).expect("serializable"));
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: user.as_bytes(),
                },
            )
            .expect("in-memory encryption");
        base64::engine::general_purpose::STANDARD.encode([&nonce[..], &ct].concat())
    }

    fn open_secrets(&self, user: &str, sealed: &str) -> Result<UserSecrets, UserMapError> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| UserMapError::Decrypt(user.into()))?;
        if raw.len() < 12 + 16 {
            return Err(UserMapError::Decrypt(user.into()));
        }
        let plain = zeroize::Zeroizing::new(
            self.cipher
                .decrypt(
                    Nonce::from_slice(&raw[..12]),
                    Payload {
                        msg: &raw[12..],
                        aad: user.as_bytes(),
                    },
                )
                .map_err(|_| UserMapError::Decrypt(user.into()))?,
        );
        serde_json::from_slice(&plain).map_err(|_| UserMapError::Decrypt(user.into()))
    }

    /// Seal secrets of something else than a user (a team share) under
    /// the same key, bound to `name` (which must not be a valid user name).
    pub fn seal_other(&self, name: &str, s: &UserSecrets) -> String {
        self.seal(name, s)
    }

    pub fn open_other(&self, name: &str, sealed: &str) -> Result<UserSecrets, UserMapError> {
        self.open_secrets(name, sealed)
    }

    pub fn get(&self, user: &str) -> Result<(UserEntry, UserSecrets), UserMapError> {
        check_name(user)?;
        let _g = self.lock.lock();
        let m = self.read()?;
        let e = m
            .users
            .get(user)
            .cloned()
            .ok_or_else(|| UserMapError::NoSuchUser(user.into()))?;
        let s = self.open_secrets(user, &e.secrets)?;
        Ok((e, s))
    }

    pub fn contains(&self, user: &str) -> Result<bool, UserMapError> {
        let _g = self.lock.lock();
        Ok(self.read()?.users.contains_key(user))
    }

    pub fn put(
        &self,
        user: &str,
        uid: u32,
        gid: u32,
        store: &str,
        secrets: &UserSecrets,
    ) -> Result<(), UserMapError> {
        check_name(user)?;
        let _g = self.lock.lock();
        let mut m = self.read()?;
        let old = m.users.get(user);
        // A disabled user stays disabled whatever else changes.
        let disabled = old.is_some_and(|e| e.disabled);
        let quota = old.map(|e| e.quota).unwrap_or_default();
        let recycle_keep_days = old.and_then(|e| e.recycle_keep_days);
        let created_unix = old
            .map(|e| e.created_unix)
            .unwrap_or_else(crate::clock::unix_now);
        m.version = 1;
        m.users.insert(
            user.to_string(),
            UserEntry {
                uid,
                gid,
                store: store.to_string(),
                created_unix,
                removed: false,
                disabled,
                quota,
                secrets: self.seal(user, secrets),
                recycle_keep_days,
            },
        );
        self.write(&m)
    }

    pub fn remove(&self, user: &str) -> Result<Option<UserEntry>, UserMapError> {
        let _g = self.lock.lock();
        let mut m = self.read()?;
        let e = m.users.remove(user);
        if e.is_some() {
            self.write(&m)?;
        }
        Ok(e)
    }

    /// Mark a user removed (without --purge).
    pub fn set_removed(&self, user: &str) -> Result<(), UserMapError> {
        self.update(user, |e| e.removed = true)
    }

    /// `user disable` / `user enable`.
    pub fn set_disabled(&self, user: &str, disabled: bool) -> Result<(), UserMapError> {
        self.update(user, |e| e.disabled = disabled)
    }

    /// `user quota`.
    pub fn set_quota(&self, user: &str, q: crate::fs::quota::Quota) -> Result<(), UserMapError> {
        self.update(user, |e| e.quota = q)
    }

    /// The home's own recycle-bin retention (None: the config's).
    pub fn set_recycle_keep_days(&self, user: &str, days: Option<u32>) -> Result<(), UserMapError> {
        self.update(user, |e| e.recycle_keep_days = days)
    }

    fn update(&self, user: &str, f: impl FnOnce(&mut UserEntry)) -> Result<(), UserMapError> {
        let _g = self.lock.lock();
        let mut m = self.read()?;
        let e = m
            .users
            .get_mut(user)
            .ok_or_else(|| UserMapError::NoSuchUser(user.into()))?;
        f(e);
        self.write(&m)
    }

    pub fn list(&self) -> Result<Vec<(String, UserEntry)>, UserMapError> {
        let _g = self.lock.lock();
        Ok(self.read()?.users.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_is_kept_in_the_map_and_survives_a_new_password() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("users.json");
        let m = UserMap::open(&path, &d.path().join("k")).unwrap();
        let s = UserSecrets::default();
        m.put("carol", 1002, 1002, "local:///x", &s).unwrap();
        assert!(m.get("carol").unwrap().0.quota.is_none());
        let q: crate::fs::quota::Quota = "50G,1000".parse().unwrap();
        m.set_quota("carol", q).unwrap();
        // `user passwd` rewrites the entry: the quota stays.
        m.put("carol", 1002, 1002, "local:///x", &s).unwrap();
        let again = UserMap::open(&path, &d.path().join("k")).unwrap();
        assert_eq!(again.get("carol").unwrap().0.quota, q);
        assert!(matches!(
            m.set_quota("nobody", q),
            Err(UserMapError::NoSuchUser(_))
        ));
    }

    #[test]
    fn secrets_round_trip_encrypted_and_bound_to_the_name() {
        let d = tempfile::tempdir().unwrap();
        let m = UserMap::open(&d.path().join("users.json"), &d.path().join("k")).unwrap();
        let s = UserSecrets {
            passphrase: Some("pp-very-secret".into()),
            swift: Some(UserCredentials {
                username: Some("alice".into()),
                password: Some("pw-very-secret".into()),
                ..Default::default()
            }),
        };
        m.put("alice", 1001, 1001, "swift://home-alice", &s)
            .unwrap();
        let raw = std::fs::read_to_string(d.path().join("users.json")).unwrap();
        assert!(!raw.contains("very-secret"), "secret in the clear: {raw}");
        let (e, back) = m.get("alice").unwrap();
        assert_eq!(e.uid, 1001);
        assert_eq!(back.passphrase.as_deref(), Some("pp-very-secret"));
        assert_eq!(
            back.swift.as_ref().unwrap().password.as_deref(),
            Some("pw-very-secret")
        );
        assert!(!format!("{back:?} {e:?}").contains("very-secret"));
        // Copying alice's sealed secrets onto bob does not decrypt.
        let mut v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        v["users"]["bob"] = v["users"]["alice"].clone();
        std::fs::write(d.path().join("users.json"), v.to_string()).unwrap();
        assert!(matches!(m.get("bob"), Err(UserMapError::Decrypt(_))));
        let mode = std::fs::metadata(d.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(d.path().join("k"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = UserMap::open(&d.path().join("users.json"), &d.path().join("k")).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "../root",
            "a/b",
            ".hidden",
            "-rf",
            "x y",
            "名前",
            &"a".repeat(33),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "bob.smith", "user_01", "a-b"] {
            check_name(good).unwrap();
        }
    }
}
