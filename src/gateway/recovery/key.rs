//! The recovery key: made once (`swiftgate recovery init`), printed once,
//! kept root-only on the gateway; the backup's encryption key derives from it.

use super::{io, RecoveryError};
use crate::gateway::config::GatewayConfig;
use rand::RngCore;
use std::path::Path;
use zeroize::Zeroizing;

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

    pub(super) fn derive(&self, salt: &[u8]) -> Zeroizing<[u8; 32]> {
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

    pub(super) fn save(&self, path: &Path) -> Result<(), RecoveryError> {
        if let Some(d) = path.parent() {
            crate::secure::new_dir(d).map_err(io(d))?;
        }
        crate::secure::write_private(path, format!("{}\n", self.display().as_str()).as_bytes())
            .map_err(io(path))
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
}
