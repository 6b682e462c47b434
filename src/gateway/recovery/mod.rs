//! Disaster recovery: the gateway's state (config, user map and its key,
//! team shares, API tokens, Samba password hashes, the Unix accounts'
//! uids) as one encrypted object in the store, so that a new VM can be
//! rebuilt from the store and a recovery key alone.
//!
//! By job: `key` (the recovery key), `bundle` (what a backup holds, and
//! its encrypted object), `backups` (the daemon's backup worker),
//! `restore` (writing a backup back on a new machine).

mod backups;
mod bundle;
mod key;
mod restore;

pub use backups::{BackupStatus, Backups};
pub use bundle::{collect, fetch, open, seal, Bundle, SavedAccount, SavedFile, SavedGroup};
pub use key::{init_key, RecoveryKey};
pub use restore::restore;

use crate::gateway::command::CommandFailed;
use std::path::{Path, PathBuf};

/// The one object holding the state, in the recovery store.
pub const OBJECT: &str = "gateway-state.sgs";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0:?} is not a recovery key: it is 32 letters and digits (0-9, A-F) in groups of four, like ABCD-0123-...; give the key `swiftgate recovery init` printed (root can print it again on the old gateway with `swiftgate recovery show-key`)")]
    BadKey(String),
    #[error("no recovery key at {0}: create one with `swiftgate recovery init` (it is printed once; keep it off this machine)")]
    NoKey(PathBuf),
    #[error("a recovery key already exists at {0}: print it with `swiftgate recovery show-key`")]
    KeyExists(PathBuf),
    #[error("the recovery key does not open the backup in {0}: check the key (it was printed by `swiftgate recovery init`); nothing was written")]
    WrongKey(String),
    #[error("the backup in {store} is damaged ({why}): restore from a copy of the object (Swift object versioning) or another store; nothing was written")]
    Damaged { store: String, why: String },
    #[error("no gateway state in {0} (object {OBJECT}): is this the recovery store of the gateway ([recovery] url)? Nothing was written")]
    Missing(String),
    #[error("the store {url}: {cause}")]
    Store { url: String, cause: String },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
    #[error(transparent)]
    Run(#[from] CommandFailed),
    #[error("the backup's config does not load: {0}")]
    Config(String),
    #[error("restore refused, nothing was written: {0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |cause| RecoveryError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// The store holding the state object.
pub fn open_store(
    url: &str,
    swift: &crate::store::swift::SwiftFlags,
) -> Result<crate::store::DynStore, RecoveryError> {
    let opts = crate::store::OpenOptions {
        swift: swift.clone(),
        ignore_env: false,
    };
    crate::store::open_with(url, &opts).map_err(|e| RecoveryError::Store {
        url: url.into(),
        cause: e.to_string(),
    })
}
