//! API tokens (`swiftgate token create NAME`): shown once at creation; the
//! file keeps only their SHA-256, so reading it gives no access.

use super::session::{constant_time_eq, random_token};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Tokens start with this: easy to spot in a secret scanner.
pub const PREFIX: &str = "sgt_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    pub created_unix: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token name {0:?} is not usable: use 1-64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("a token named {0:?} exists already: revoke it first, or pick another name")]
    Exists(String),
    #[error("no token named {0:?} (see `swiftgate token list`)")]
    NotFound(String),
    #[error("the token file {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the token file {path} is damaged ({cause}): fix or remove it")]
    Damaged { path: PathBuf, cause: String },
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub struct Tokens {
    path: PathBuf,
}

impl Tokens {
    pub fn new(path: &Path) -> Tokens {
        Tokens { path: path.into() }
    }

    fn io(&self, cause: std::io::Error) -> TokenError {
        TokenError::Io {
            path: self.path.clone(),
            cause,
        }
    }

    fn load(&self) -> Result<TokenFile, TokenError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| TokenError::Damaged {
                path: self.path.clone(),
                cause: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn save(&self, f: &TokenFile) -> Result<(), TokenError> {
        let bytes = serde_json::to_vec_pretty(f).unwrap_or_default();
        crate::secure::new_parent(&self.path)
            .and_then(|()| crate::secure::write_private(&self.path, &bytes))
            .map_err(|e| self.io(e))
    }

    /// A new token: the returned string is the only copy of it.
    pub fn create(&self, name: &str) -> Result<String, TokenError> {
        if !valid_name(name) {
            return Err(TokenError::BadName(name.into()));
        }
        let mut f = self.load()?;
        if f.tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::Exists(name.into()));
        }
        let token = format!("{PREFIX}{}", random_token());
        f.tokens.push(TokenEntry {
            name: name.into(),
            sha256: hash(&token),
            created_unix: crate::clock::unix_now(),
        });
        self.save(&f)?;
        Ok(token)
    }

    pub fn list(&self) -> Result<Vec<TokenEntry>, TokenError> {
        Ok(self.load()?.tokens)
    }

    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        let mut f = self.load()?;
        let before = f.tokens.len();
        f.tokens.retain(|t| t.name != name);
        if f.tokens.len() == before {
            return Err(TokenError::NotFound(name.into()));
        }
        self.save(&f)
    }

    /// The name of the token presented, if it is one of ours. Read from
    /// disk each time: a revocation takes effect at once.
    pub fn verify(&self, presented: &str) -> Option<String> {
        if !presented.starts_with(PREFIX) {
            return None;
        }
        let h = hash(presented);
        let f = self.load().ok()?;
        // Every entry is compared (no early exit on a match's position).
        let mut found = None;
        for t in &f.tokens {
            if constant_time_eq(&t.sha256, &h) {
                found = Some(t.name.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_verify_revoke_and_only_hashes_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/tokens.json");
        let t = Tokens::new(&path);
        let tok = t.create("grafana").unwrap();
        assert!(tok.starts_with(PREFIX));
        assert!(matches!(t.create("grafana"), Err(TokenError::Exists(_))));
        assert!(matches!(t.create("a b"), Err(TokenError::BadName(_))));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&tok[PREFIX.len()..]), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert_eq!(t.verify(&tok).as_deref(), Some("grafana"));
        assert_eq!(t.verify(&format!("{tok}x")), None);
        assert_eq!(t.verify("nonsense"), None);
        assert_eq!(t.list().unwrap().len(), 1);
        t.revoke("grafana").unwrap();
        assert_eq!(t.verify(&tok), None);
        assert!(matches!(t.revoke("grafana"), Err(TokenError::NotFound(_))));
    }
}
