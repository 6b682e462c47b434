//! One encoded record (a block, or a metadata snapshot) looks like:
//!
//! ```text
//! magic "SGR" | version u8 | flags u8 | plain_len u32 LE | [nonce 12] | payload
//! ```
//! flags bit 0: payload is zstd-compressed; bit 1: payload is AES-256-GCM
//! ciphertext+tag. The AEAD's associated data is the header plus a caller
//! supplied context (the block hash or the object name), so a record moved
//! to another place or swapped for another fails authentication.

use super::{sha256, Hash, MasterKey};
use rand::RngCore;
// ring's AES-256-GCM (the same algorithm and record format as the
// aes-gcm crate's): its assembly runs GHASH several blocks at a time, where
// aes-gcm's took 8 % of the mount's CPU per GiB moved (BENCHMARKS.md).
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

const MAGIC: &[u8; 3] = b"SGR";
const VERSION: u8 = 1;
const F_ZSTD: u8 = 1;
const F_AES: u8 = 2;
const HEADER: usize = 3 + 1 + 1 + 4;
const NONCE: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is truncated or not a swiftgate record")]
    Malformed,
    #[error(
        "record format version {0} is newer than this swiftgate understands; upgrade swiftgate"
    )]
    NewerVersion(u8),
    #[error("record failed authentication (corrupt, tampered with, or a wrong key)")]
    Auth,
    #[error("record is encrypted but the filesystem has no key loaded")]
    NoKey,
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("content does not match its hash (corrupt record)")]
    HashMismatch,
    #[error("record claims {len} bytes of content, more than the {max} allowed here (corrupt or tampered record)")]
    TooLarge { len: usize, max: usize },
}

/// Largest plaintext a data block record may claim (the largest block size).
pub const MAX_BLOCK_PLAIN: usize = super::params::MAX_BLOCK_SIZE as usize;
/// Up to this size zstd output is allocated up front; beyond it (metadata
/// snapshots) it grows with what actually comes out, so a header's claim
/// alone cannot make us allocate gigabytes.
const BULK_MAX: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    None,
    Zstd(i32),
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd(3)),
            _ => match s.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(n)) if (1..=19).contains(&n) => Ok(Compression::Zstd(n)),
                _ => Err(format!(
                    "invalid compression {s:?}: use none, zstd or zstd:N with N in 1..=19"
                )),
            },
        }
    }
}

#[derive(Clone)]
pub struct BlockCodec {
    cipher: Option<LessSafeKey>,
    compression: Compression,
}

impl std::fmt::Debug for BlockCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCodec")
            .field("encrypted", &self.cipher.is_some())
            .field("compression", &self.compression)
            .finish()
    }
}

impl BlockCodec {
    pub fn new(key: Option<&MasterKey>, compression: Compression) -> Self {
        BlockCodec {
            cipher: key.map(|k| {
                LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k.bytes()).expect("32-byte key"))
            }),
            compression,
        }
    }

    pub fn encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn encode(&self, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(context, plain, &mut out);
        out
    }

    /// `encode`, appending the record to `out` (several records make one
    /// object without another copy of each).
    pub fn encode_into(&self, context: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        let mut flags = 0u8;
        let mut compressed: Option<Vec<u8>> = None;
        if let Compression::Zstd(level) = self.compression {
            if worth_compressing(plain) {
                if let Ok(c) = zstd_compress(plain, level) {
                    // Incompressible data is stored raw: saves CPU on read.
                    if c.len() + c.len() / 32 < plain.len() {
                        compressed = Some(c);
                        flags |= F_ZSTD;
                    }
                }
            }
        }
        let payload: &[u8] = compressed.as_deref().unwrap_or(plain);
        let rec = out.len();
        out.reserve(HEADER + NONCE + payload.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        if self.cipher.is_some() {
            flags |= F_AES;
        }
        out.push(flags);
        out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        match &self.cipher {
            Some(cipher) => {
                let mut nonce = [0u8; NONCE];
                rand::thread_rng().fill_bytes(&mut nonce);
                let aad = [&out[rec..rec + HEADER], context].concat();
                out.extend_from_slice(&nonce);
                // Encrypt in the output buffer itself: no extra copies of
                // a multi-MiB block.
                let start = out.len();
                out.extend_from_slice(payload);
                let tag = cipher
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad[..]),
                        &mut out[start..],
                    )
                    .expect("AES-GCM encryption cannot fail for a record under 4 GiB");
                out.extend_from_slice(tag.as_ref());
            }
            None => out.extend_from_slice(payload),
        }
    }

    /// `encode` for a large plaintext read from `src` (`plain_len` bytes):
    /// compressed as it streams into the output buffer and encrypted in
    /// place there, so memory holds the compressed record once and never
    /// the plaintext (metadata snapshots of big filesystems).
    pub fn encode_stream(
        &self,
        context: &[u8],
        plain_len: u64,
        src: &mut dyn std::io::Read,
    ) -> std::io::Result<Vec<u8>> {
        let len32 = u32::try_from(plain_len).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a record holds at most 4 GiB",
            )
        })?;
        let mut flags = 0u8;
        if self.cipher.is_some() {
            flags |= F_AES;
        }
        let level = match self.compression {
            Compression::Zstd(l) => {
                flags |= F_ZSTD;
                Some(l)
            }
            Compression::None => None,
        };
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&len32.to_le_bytes());
        let mut nonce = [0u8; NONCE];
        if self.cipher.is_some() {
            rand::thread_rng().fill_bytes(&mut nonce);
            out.extend_from_slice(&nonce);
        }
        let start = out.len();
        let mut limited = std::io::Read::take(&mut *src, plain_len);
        match level {
            Some(l) => {
                let mut enc = zstd::stream::Encoder::new(&mut out, l)?;
                std::io::copy(&mut limited, &mut enc)?;
                enc.finish()?;
            }
            None => {
                std::io::copy(&mut limited, &mut out)?;
            }
        }
        if let Some(cipher) = &self.cipher {
            let aad = [&out[..HEADER], context].concat();
            let tag = cipher
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad[..]),
                    &mut out[start..],
                )
                .map_err(|_| std::io::Error::other("AES-GCM encryption failed"))?;
            out.extend_from_slice(tag.as_ref());
        }
        Ok(out)
    }

    pub fn decode(&self, context: &[u8], record: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.decode_max(context, record, u32::MAX as usize)
    }

    /// [`decode`](Self::decode), refusing records that claim more than
    /// `max` bytes of content before doing any work.
    pub fn decode_max(
        &self,
        context: &[u8],
        record: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, CodecError> {
        parse_header(record, max)?; // before copying anything
        self.open(context, record.to_vec(), max)
            .map(|(plain, _)| plain)
    }

    /// The content of `rec`, opened where it lies (an uncompressed record
    /// is decrypted in place: no second buffer of it), and whether it was
    /// authenticated by the key.
    fn open(
        &self,
        context: &[u8],
        mut rec: Vec<u8>,
        max: usize,
    ) -> Result<(Vec<u8>, bool), CodecError> {
        let (plain, authenticated) = self.open_in(context, &mut rec, max)?;
        let plain = match plain {
            Opened::At(start, end) => {
                rec.copy_within(start..end, 0);
                rec.truncate(end - start);
                rec
            }
            Opened::Decompressed(v) => v,
        };
        Ok((plain, authenticated))
    }

    /// [`open`](Self::open) of a record in a buffer it may overwrite:
    /// uncompressed content is left where it lies (no copy at all).
    fn open_in(
        &self,
        context: &[u8],
        rec: &mut [u8],
        max: usize,
    ) -> Result<(Opened, bool), CodecError> {
        let (flags, plain_len) = parse_header(rec, max)?;
        let (start, end) = if flags & F_AES != 0 {
            let cipher = self.cipher.as_ref().ok_or(CodecError::NoKey)?;
            if rec.len() < HEADER + NONCE + 16 {
                return Err(CodecError::Malformed);
            }
            let aad = [&rec[..HEADER], context].concat();
            let nonce: [u8; NONCE] = rec[HEADER..HEADER + NONCE].try_into().unwrap();
            let n = cipher
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad[..]),
                    &mut rec[HEADER + NONCE..],
                )
                .map_err(|_| CodecError::Auth)?
                .len();
            (HEADER + NONCE, HEADER + NONCE + n)
        } else {
            if self.cipher.is_some() {
                // An attacker must not be able to downgrade to plaintext.
                return Err(CodecError::Auth);
            }
            (HEADER, rec.len())
        };
        let plain = if flags & F_ZSTD != 0 {
            let v = zstd_decompress(&rec[start..end], plain_len)
                .map_err(|e| CodecError::Decompress(e.to_string()))?;
            if v.len() != plain_len {
                return Err(CodecError::Malformed);
            }
            Opened::Decompressed(v)
        } else {
            if end - start != plain_len {
                return Err(CodecError::Malformed);
            }
            Opened::At(start, end)
        };
        Ok((plain, flags & F_AES != 0))
    }

    /// Decode a data block and check it is the content its hash names.
    pub fn decode_block(&self, hash: &Hash, record: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.decode_block_vec(hash, record.to_vec())
    }

    /// [`decode_block`](Self::decode_block) of a record it may take apart:
    /// an uncompressed block is decrypted where it lies (no second buffer
    /// of a multi-MiB block to fault in).
    ///
    /// An encrypted record is authenticated with its hash in the AAD: it
    /// is the content that hash names, or GCM refuses it. Hashing the
    /// plaintext again would only repeat that check (a tenth of a cold
    /// read's CPU); without a key the SHA-256 is what makes corruption an
    /// error.
    pub fn decode_block_vec(&self, hash: &Hash, rec: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        let (plain, authenticated) = self.open(hash, rec, MAX_BLOCK_PLAIN)?;
        if !authenticated && &sha256(&plain) != hash {
            return Err(CodecError::HashMismatch);
        }
        Ok(plain)
    }

    /// [`decode_block`](Self::decode_block) of a record in a buffer it
    /// may overwrite: uncompressed content comes back as the part of
    /// `rec` it was decrypted in (no copy, no allocation).
    pub fn decode_block_in<'a>(
        &self,
        hash: &Hash,
        rec: &'a mut [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, CodecError> {
        let (plain, authenticated) = self.open_in(hash, rec, MAX_BLOCK_PLAIN)?;
        let plain = match plain {
            Opened::At(start, end) => std::borrow::Cow::Borrowed(&rec[start..end]),
            Opened::Decompressed(v) => std::borrow::Cow::Owned(v),
        };
        if !authenticated && &sha256(&plain) != hash {
            return Err(CodecError::HashMismatch);
        }
        Ok(plain)
    }
}

/// Where [`BlockCodec::open_in`] left a record's content.
enum Opened {
    /// In the record's own buffer, between these offsets.
    At(usize, usize),
    Decompressed(Vec<u8>),
}

thread_local! {
    // One context per thread and level: creating one costs more than
    // compressing a small block.
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSORS.with(|c| {
        let mut c = c.borrow_mut();
        let i = match c.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                c.push((level, zstd::bulk::Compressor::new(level)?));
                c.len() - 1
            }
        };
        c[i].1.compress(data)
    })
}

/// A record's flags and content length, checked: a newer format or a
/// length past `max` is refused before any work is done.
fn parse_header(record: &[u8], max: usize) -> Result<(u8, usize), CodecError> {
    if record.len() < HEADER || &record[..3] != MAGIC {
        return Err(CodecError::Malformed);
    }
    if record[3] > VERSION {
        return Err(CodecError::NewerVersion(record[3]));
    }
    let flags = record[4];
    if flags & !(F_ZSTD | F_AES) != 0 {
        return Err(CodecError::Malformed);
    }
    let plain_len = u32::from_le_bytes(record[5..9].try_into().unwrap()) as usize;
    if plain_len > max {
        return Err(CodecError::TooLarge {
            len: plain_len,
            max,
        });
    }
    Ok((flags, plain_len))
}

fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    if capacity > BULK_MAX {
        use std::io::Read;
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(data)?
            .take(capacity as u64 + 1)
            .read_to_end(&mut out)?;
        return Ok(out);
    }
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("set above").decompress(data, capacity)
    })
}

/// Whether zstd may pay off: large blocks are judged by three 16 KiB
/// samples at the fastest level first, so already-compressed data (photos,
/// Office files, archives) does not cost a full compression attempt.
fn worth_compressing(plain: &[u8]) -> bool {
    const SAMPLE: usize = 16 << 10;
    if plain.len() < 16 * SAMPLE {
        return true;
    }
    let mid = plain.len() / 2 - SAMPLE / 2;
    let mut packed = 0;
    for at in [0, mid, plain.len() - SAMPLE] {
        match zstd_compress(&plain[at..at + SAMPLE], 1) {
            Ok(c) => packed += c.len(),
            Err(_) => return true,
        }
    }
    packed * 100 < 3 * SAMPLE * 97
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written before the switch to ring (aes-gcm crate) must
    /// still open, and the other way round: the record format is the GCM
    /// standard's, whichever implementation runs it.
    #[test]
    fn records_match_the_aes_gcm_crate_both_ways() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        use aes_gcm::{Aes256Gcm, Nonce as GcmNonce};
        let k = MasterKey::random();
        let codec = BlockCodec::new(Some(&k), Compression::None);
        let old = Aes256Gcm::new_from_slice(k.bytes()).unwrap();
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let ctx = b"context";

        // aes-gcm crate -> ring
        let mut rec = Vec::new();
        rec.extend_from_slice(MAGIC);
        rec.push(VERSION);
        rec.push(F_AES);
        rec.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        let nonce = [9u8; NONCE];
        let aad = [&rec[..HEADER], &ctx[..]].concat();
        let ct = old
            .encrypt(
                GcmNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .unwrap();
        rec.extend_from_slice(&nonce);
        rec.extend_from_slice(&ct);
        assert_eq!(codec.decode(ctx, &rec).unwrap(), plain);
        let mut bad = rec.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(codec.decode(ctx, &bad), Err(CodecError::Auth)));

        // ring -> aes-gcm crate
        let rec = codec.encode(ctx, &plain);
        let aad = [&rec[..HEADER], &ctx[..]].concat();
        let body = &rec[HEADER..];
        let back = old
            .decrypt(
                GcmNonce::from_slice(&body[..NONCE]),
                Payload {
                    msg: &body[NONCE..],
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(back, plain);
    }

    fn codecs() -> Vec<BlockCodec> {
        let k = MasterKey::random();
        vec![
            BlockCodec::new(None, Compression::None),
            BlockCodec::new(None, Compression::Zstd(3)),
            BlockCodec::new(Some(&k), Compression::None),
            BlockCodec::new(Some(&k), Compression::Zstd(3)),
        ]
    }

    #[test]
    fn a_header_claiming_huge_content_is_refused_without_allocating() {
        let c = BlockCodec::new(None, Compression::Zstd(3));
        let data = vec![7u8; 100_000];
        let h = sha256(&data);
        let mut rec = c.encode(&h, &data);
        // A tampered plain record claims 4 GiB of content.
        rec[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        match c.decode_block(&h, &rec) {
            Err(CodecError::TooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, MAX_BLOCK_PLAIN);
            }
            other => panic!("{other:?}"),
        }
        // Snapshots may be large, but the output grows only with what the
        // stream really holds: a false claim is a clean error.
        assert!(matches!(c.decode(b"x", &rec), Err(CodecError::Malformed)));
        let big = vec![1u8; 70 << 20];
        let rec = c.encode(b"snap", &big);
        assert_eq!(c.decode(b"snap", &rec).unwrap(), big);
    }

    #[test]
    fn roundtrip_and_tamper() {
        // Compressible (zstd records) and random (raw records, decrypted
        // in place).
        let mut random = vec![0u8; 4096];
        rand::thread_rng().fill_bytes(&mut random);
        let datas = [
            b"hello hello hello hello hello hello hello".repeat(100),
            random,
        ];
        for (c, data) in codecs()
            .into_iter()
            .flat_map(|c| datas.iter().map(move |d| (c.clone(), d)))
        {
            let data = data.clone();
            let h = sha256(&data);
            let rec = c.encode(&h, &data);
            assert_eq!(c.decode_block_vec(&h, rec.clone()).unwrap(), data);
            assert_eq!(c.decode_block(&h, &rec).unwrap(), data);
            assert_eq!(
                &c.decode_block_in(&h, &mut rec.clone()).unwrap()[..],
                &data[..]
            );
            for pos in 0..rec.len() {
                let mut bad = rec.clone();
                bad[pos] ^= 0x40;
                // Authenticated records reject every change; plain ones may
                // tolerate a change that decodes to the same bytes (the hash
                // proves it), but never return other bytes.
                if let Ok(got) = c.decode_block(&h, &bad) {
                    assert!(!c.encrypted() && got == data, "flip at {pos} accepted");
                }
                if let Ok(got) = c.decode_block_in(&h, &mut bad.clone()) {
                    assert!(
                        !c.encrypted() && got[..] == data[..],
                        "flip at {pos} accepted in place"
                    );
                }
            }
            // Wrong context (a swapped object) must not decode.
            let other = sha256(b"other");
            assert!(c.decode_block(&other, &rec).is_err());
            assert!(c.decode_block_in(&other, &mut rec.clone()).is_err());
        }
    }

    #[test]
    fn ciphertext_hides_plaintext() {
        let k = MasterKey::random();
        let c = BlockCodec::new(Some(&k), Compression::Zstd(3));
        let data = b"SECRET-MARKER-1234".repeat(1000);
        let rec = c.encode(b"ctx", &data);
        assert!(!rec.windows(13).any(|w| w == b"SECRET-MARKER"));
    }

    #[test]
    fn incompressible_stored_raw() {
        let mut data = vec![0u8; 65536];
        rand::thread_rng().fill_bytes(&mut data);
        let c = BlockCodec::new(None, Compression::Zstd(3));
        let rec = c.encode(b"", &data);
        assert_eq!(rec[4] & F_ZSTD, 0);
        assert_eq!(rec.len(), HEADER + data.len());
    }

    #[test]
    fn streamed_encoding_decodes_like_the_plain_one() {
        let k = MasterKey::random();
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            BlockCodec::new(Some(&k), Compression::Zstd(3)),
            BlockCodec::new(None, Compression::Zstd(3)),
            BlockCodec::new(Some(&k), Compression::None),
        ] {
            let rec = c
                .encode_stream(b"ctx", data.len() as u64, &mut &data[..])
                .unwrap();
            assert_eq!(c.decode(b"ctx", &rec).unwrap(), data);
            assert!(c.decode(b"other", &rec).is_err() || !c.encrypted());
        }
    }

    #[test]
    fn compression_parse() {
        assert_eq!("zstd:7".parse::<Compression>(), Ok(Compression::Zstd(7)));
        assert!("zstd:99".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
    }
}
