//! swiftgate: a Samba/CIFS file gateway whose bytes live in object storage.
//!
//! Layers, bottom-up; each uses only the ones before it:
//! `store` (object stores), `data` (block codec), `meta` (SQLite metadata,
//! shipping, lease), `cache` (write-back block cache), `fs` (POSIX semantics
//! and the FUSE adapter), `gateway` (per-user homes for Samba, user map,
//! control socket), `web` (console, JSON API, metrics), `cli` (commands).

/// `From` for error variants whose message already shows their cause.
/// (thiserror's `#[from]` would also return it as `source()`, so anything
/// printing the chain of causes would print it twice.) The rule for every
/// error type here: a cause goes in the message or in `source()`, never
/// both; messages are whole sentences, `{e}` is all a log needs.
macro_rules! cause_from {
    ($($from:ty => $to:ident::$var:ident),* $(,)?) => {
        $(impl From<$from> for $to {
            fn from(e: $from) -> Self {
                $to::$var(e)
            }
        })*
    };
}

pub mod cache;
pub mod cli;
pub mod clock;
pub mod data;
pub mod fs;
pub mod gateway;
pub mod logevery;
pub mod meta;
pub mod secure;
pub mod store;
pub mod web;

/// Helpers for the unit tests of more than one layer.
#[cfg(test)]
pub(crate) mod test_support {
    /// Threads of this process called `name` right now.
    pub fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|c| c.trim_end() == name)
            .count()
    }
}
