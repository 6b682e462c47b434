//! Block codec: content hashing, zstd compression, AES-256-GCM encryption,
//! the versioned on-store record format, and the filesystem parameters
//! (superblock) that say how blocks are encoded.

pub mod codec;
pub mod params;

pub use codec::{BlockCodec, CodecError, Compression};
pub use params::{MasterKey, Params};

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// The first bytes of every data object swiftgate writes, before its first
/// record: no block's record starts at byte 0, so no block read does. A
/// GET that starts at byte 0 makes Swift's object server MD5 everything
/// it sends (to check the ETag should the read reach the end); on the
/// loopback fixture that more than doubled Swift's CPU per GiB served and
/// halved the rate (4.4-5.4 against 1.9-2.1 CPU-s/GiB, 168-201 against
/// 368-403 MiB/s: BENCHMARKS.md). Swift's auditor still checks every
/// object, and every record is authenticated when read. Objects written
/// before it have their first record at 0 and read as they always did.
pub const OBJECT_LEAD: &[u8] = b"SGDATA1\n";

pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}
