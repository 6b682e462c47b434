//! The filesystem parameters ("superblock"), stored plain as the `params`
//! object: format version, block size, codec, and the master key wrapped by
//! a passphrase-derived key (Argon2id, memory-hard).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Compression;

/// Bumped on any incompatible change of object or metadata layout.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("the params object is not valid JSON of a swiftgate filesystem: {0}")]
    Parse(String),
    #[error(
        "this filesystem has format version {0}, newer than this swiftgate supports ({FORMAT_VERSION}); upgrade swiftgate"
    )]
    NewerFormat(u32),
    #[error("wrong passphrase: it does not unlock this filesystem's key")]
    WrongPassphrase,
    #[error("this filesystem is encrypted: give its passphrase with --passphrase-file")]
    PassphraseNeeded,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(&mut k[..]);
        MasterKey(k)
    }
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KdfParams {
    pub algorithm: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub salt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Encryption {
    pub cipher: String,
    pub kdf: KdfParams,
    /// hex(nonce || AES-GCM(kek, master key))
    pub wrapped_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub magic: String,
    pub format_version: u32,
    pub uuid: String,
    pub block_size: u32,
    pub compression: Compression,
    pub encryption: Option<Encryption>,
    pub created_unix: u64,
}

const MAGIC: &str = "swiftgate-filesystem";

fn derive_kek(pass: &[u8], kdf: &KdfParams) -> Result<Zeroizing<[u8; 32]>, ParamsError> {
    let salt = hex::decode(&kdf.salt).map_err(|e| ParamsError::Parse(e.to_string()))?;
    let params = argon2::Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| ParamsError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass, &salt, &mut out[..])
        .map_err(|e| ParamsError::Kdf(e.to_string()))?;
    Ok(out)
}

impl Params {
    pub fn new(
        block_size: u32,
        compression: Compression,
        passphrase: Option<&[u8]>,
    ) -> Result<(Params, Option<MasterKey>), ParamsError> {
        let mut uuid = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut uuid);
        let (encryption, key) = match passphrase {
            None => (None, None),
            Some(pass) => {
                let mut salt = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut salt);
                let kdf = KdfParams {
                    algorithm: "argon2id".into(),
                    m_cost_kib: 64 * 1024,
                    t_cost: 3,
                    p_cost: 1,
                    salt: hex::encode(salt),
                };
                let kek = derive_kek(pass, &kdf)?;
                let key = MasterKey::random();
                let mut nonce = [0u8; 12];
                rand::thread_rng().fill_bytes(&mut nonce);
                let ct = Aes256Gcm::new_from_slice(&kek[..])
                    .expect("32-byte key")
                    .encrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: key.bytes(),
                            aad: MAGIC.as_bytes(),
                        },
                    )
                    .expect("in-memory encryption");
                let wrapped = hex::encode([&nonce[..], &ct[..]].concat());
                (
                    Some(Encryption {
                        cipher: "aes-256-gcm".into(),
                        kdf,
                        wrapped_key: wrapped,
                    }),
                    Some(key),
                )
            }
        };
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok((
            Params {
                magic: MAGIC.into(),
                format_version: FORMAT_VERSION,
                uuid: hex::encode(uuid),
                block_size,
                compression,
                encryption,
                created_unix,
            },
            key,
        ))
    }

    pub fn from_json(data: &[u8]) -> Result<Params, ParamsError> {
        // Check the version before the full shape: a newer format may have
        // fields we cannot parse, and that deserves the upgrade message.
        let v: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| ParamsError::Parse(e.to_string()))?;
        if v.get("magic").and_then(|m| m.as_str()) != Some(MAGIC) {
            return Err(ParamsError::Parse("missing swiftgate magic".into()));
        }
        match v.get("format_version").and_then(|m| m.as_u64()) {
            Some(n) if n > FORMAT_VERSION as u64 => return Err(ParamsError::NewerFormat(n as u32)),
            _ => {}
        }
        serde_json::from_value(v).map_err(|e| ParamsError::Parse(e.to_string()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("params serialize")
    }

    /// The master key, or None for a `--plain` filesystem.
    pub fn unlock(&self, passphrase: Option<&[u8]>) -> Result<Option<MasterKey>, ParamsError> {
        let Some(enc) = &self.encryption else {
            return Ok(None);
        };
        let pass = passphrase.ok_or(ParamsError::PassphraseNeeded)?;
        let kek = derive_kek(pass, &enc.kdf)?;
        let raw = hex::decode(&enc.wrapped_key).map_err(|e| ParamsError::Parse(e.to_string()))?;
        if raw.len() < 12 {
            return Err(ParamsError::Parse("wrapped key too short".into()));
        }
        let plain = Aes256Gcm::new_from_slice(&kek[..])
            .expect("32-byte key")
            .decrypt(
                Nonce::from_slice(&raw[..12]),
                Payload {
                    msg: &raw[12..],
                    aad: MAGIC.as_bytes(),
                },
            )
            .map_err(|_| ParamsError::WrongPassphrase)?;
        let mut k = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(ParamsError::WrongPassphrase);
        }
        k.copy_from_slice(&plain);
        Ok(Some(MasterKey(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let (p, k) = Params::new(1 << 20, Compression::Zstd(3), Some(b"pw")).unwrap();
        let p2 = Params::from_json(&p.to_json()).unwrap();
        let k2 = p2.unlock(Some(b"pw")).unwrap().unwrap();
        assert_eq!(k.unwrap().bytes(), k2.bytes());
        assert!(matches!(
            p2.unlock(Some(b"wrong")),
            Err(ParamsError::WrongPassphrase)
        ));
        assert!(matches!(
            p2.unlock(None),
            Err(ParamsError::PassphraseNeeded)
        ));
    }

    #[test]
    fn newer_format_refused() {
        let (mut p, _) = Params::new(1 << 20, Compression::None, None).unwrap();
        p.format_version = FORMAT_VERSION + 1;
        assert!(matches!(
            Params::from_json(&p.to_json()),
            Err(ParamsError::NewerFormat(_))
        ));
    }
}
