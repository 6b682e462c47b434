//! Block codec: content hashing, zstd compression, AES-256-GCM encryption,
//! the versioned on-store record format, and the filesystem parameters
//! (superblock) that say how blocks are encoded.

pub mod codec;
pub mod params;

pub use codec::{BlockCodec, CodecError, Compression};
pub use params::{MasterKey, Params};

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}
