//! swiftgate: a Samba/CIFS file gateway whose bytes live in object storage.
//!
//! Layers, bottom-up; each uses only the ones before it:
//! `store` (object stores), `data` (block codec), `meta` (SQLite metadata,
//! shipping, lease), `cache` (write-back block cache), `fs` (POSIX semantics
//! and the FUSE adapter), `gateway` (per-user homes for Samba, user map,
//! control socket), `cli` (commands).

pub mod cache;
pub mod cli;
pub mod data;
pub mod fs;
pub mod gateway;
pub mod logevery;
pub mod meta;
pub mod secure;
pub mod store;
