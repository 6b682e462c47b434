//! The daemon's own small state, kept across restarts in a root-only file
//! under the cache directory: the cache budget set online (it overrides
//! the config file's, which stays the operator's), and each home's usage
//! as last measured (shown for homes that are not mounted).

use super::api::Usage;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateFile {
    /// (size, dirty limit) set with `CacheSetBudget`.
    #[serde(default)]
    pub cache_budget: Option<(u64, u64)>,
    /// Last known usage of each home (and `share:NAME`).
    #[serde(default)]
    pub usage: BTreeMap<String, Usage>,
    /// The host of the gateway this one was restored from: its expired
    /// mount leases are taken over.
    #[serde(default)]
    pub replaces_host: Option<String>,
}

#[derive(Debug)]
pub struct State {
    path: PathBuf,
    cur: Mutex<StateFile>,
}

impl State {
    pub fn path_in(cache_dir: &Path) -> PathBuf {
        cache_dir.join("gateway-state.json")
    }

    /// Load (a missing or unreadable file is an empty state: it only
    /// holds things that can be measured or set again).
    pub fn load(cache_dir: &Path) -> State {
        let path = Self::path_in(cache_dir);
        let cur = std::fs::read(&path)
            .ok()
            .and_then(|b| match serde_json::from_slice(&b) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring an unreadable state file: {e}");
                    None
                }
            })
            .unwrap_or_default();
        State {
            path,
            cur: Mutex::new(cur),
        }
    }

    pub fn get(&self) -> StateFile {
        self.cur.lock().clone()
    }

    /// Change and write it (atomically, 0600).
    pub fn update(&self, f: impl FnOnce(&mut StateFile)) -> std::io::Result<()> {
        let mut cur = self.cur.lock();
        f(&mut cur);
        let body = serde_json::to_vec_pretty(&*cur).unwrap_or_default();
        crate::secure::write_private(&self.path, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn survives_a_reload_and_is_private() {
        let d = tempfile::tempdir().unwrap();
        let s = State::load(d.path());
        s.update(|f| {
            f.cache_budget = Some((1 << 30, 1 << 29));
            f.usage.insert(
                "alice".into(),
                Usage {
                    files: 3,
                    ..Default::default()
                },
            );
        })
        .unwrap();
        let back = State::load(d.path()).get();
        assert_eq!(back.cache_budget, Some((1 << 30, 1 << 29)));
        assert_eq!(back.usage["alice"].files, 3);
        let mode = std::fs::metadata(State::path_in(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
