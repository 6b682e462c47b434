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
    #[error("the params object asks for {0}; the store may be damaged or tampered with (swiftgate refuses values it would never write)")]
    OutOfRange(String),
}

/// Bounds on what a params object read from the store may ask for: a
/// tampered store must not make a mount allocate gigabytes or spin for
/// hours before the passphrase is even checked. mkfs writes 64 MiB, 3
/// passes, 1 lane.
pub const KDF_MAX_MEMORY_KIB: u32 = 1 << 20; // 1 GiB
pub const KDF_MIN_MEMORY_KIB: u32 = 8 << 10; // 8 MiB: weaker is no protection
pub const KDF_MAX_PASSES: u32 = 16;
pub const KDF_MAX_LANES: u32 = 16;
pub const MIN_BLOCK_SIZE: u32 = 64 << 10;
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
/// The params object is a few hundred bytes of JSON.
pub const MAX_PARAMS_BYTES: u64 = 64 << 10;

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
        let created_unix = crate::clock::unix_now();
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
        let p: Params = serde_json::from_value(v).map_err(|e| ParamsError::Parse(e.to_string()))?;
        p.check()?;
        Ok(p)
    }

    /// Every size and cost in range before anything is allocated or run.
    fn check(&self) -> Result<(), ParamsError> {
        let bad = |s: String| Err(ParamsError::OutOfRange(s));
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return bad(format!(
                "block size {bs} (expected a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE})"
            ));
        }
        if let Compression::Zstd(l) = self.compression {
            if !(1..=19).contains(&l) {
                return bad(format!("zstd level {l} (expected 1 to 19)"));
            }
        }
        if let Some(enc) = &self.encryption {
            let k = &enc.kdf;
            if k.algorithm != "argon2id" {
                return bad(format!(
                    "key derivation {:?} (expected argon2id)",
                    k.algorithm
                ));
            }
            if !(KDF_MIN_MEMORY_KIB..=KDF_MAX_MEMORY_KIB).contains(&k.m_cost_kib) {
                return bad(format!(
                    "Argon2 memory of {} KiB (expected {KDF_MIN_MEMORY_KIB} to {KDF_MAX_MEMORY_KIB})",
                    k.m_cost_kib
                ));
            }
            if !(1..=KDF_MAX_PASSES).contains(&k.t_cost) {
                return bad(format!(
                    "{} Argon2 passes (expected 1 to {KDF_MAX_PASSES})",
                    k.t_cost
                ));
            }
            if !(1..=KDF_MAX_LANES).contains(&k.p_cost) {
                return bad(format!(
                    "{} Argon2 lanes (expected 1 to {KDF_MAX_LANES})",
                    k.p_cost
                ));
            }
            if k.salt.len() > 128 || enc.wrapped_key.len() > 256 {
                return bad("an oversized salt or wrapped key".into());
            }
        }
        Ok(())
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
    fn out_of_range_costs_and_sizes_are_refused_before_use() {
        let (p, _) = Params::new(1 << 20, Compression::Zstd(3), Some(b"pw")).unwrap();
        type Tamper = Box<dyn Fn(&mut Params)>;
        let cases: Vec<(&str, Tamper)> = vec![
            (
                "memory",
                Box::new(|p| p.encryption.as_mut().unwrap().kdf.m_cost_kib = u32::MAX),
            ),
            (
                "memory",
                Box::new(|p| p.encryption.as_mut().unwrap().kdf.m_cost_kib = 8),
            ),
            (
                "passes",
                Box::new(|p| p.encryption.as_mut().unwrap().kdf.t_cost = 1_000_000),
            ),
            (
                "lanes",
                Box::new(|p| p.encryption.as_mut().unwrap().kdf.p_cost = 255),
            ),
            ("block size", Box::new(|p| p.block_size = 1 << 31)),
            ("block size", Box::new(|p| p.block_size = 3 << 20)),
            (
                "zstd level",
                Box::new(|p| p.compression = Compression::Zstd(100)),
            ),
        ];
        for (what, f) in cases {
            let mut q = p.clone();
            f(&mut q);
            let started = std::time::Instant::now();
            match Params::from_json(&q.to_json()) {
                Err(e @ ParamsError::OutOfRange(_)) => {
                    assert!(e.to_string().contains(what), "{e}")
                }
                other => panic!("{what}: {other:?}"),
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        // What mkfs writes passes.
        Params::from_json(&p.to_json()).unwrap();
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
