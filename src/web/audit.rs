//! The audit log: every admin action (who, from where, what, the result),
//! one JSON line each, appended; read back newest first for its page.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_unix: u64,
    /// The admin (or `token:NAME`); for a failed login, the name tried.
    pub who: String,
    /// The client address.
    pub from: String,
    /// What was asked: `login`, `user_add`, `share_remove`, ...
    pub action: String,
    /// The user, share or job acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub ok: bool,
    /// The outcome in words (the error, or what was done).
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the audit log {path}: {cause}")]
pub struct AuditError {
    pub path: PathBuf,
    pub cause: std::io::Error,
}

pub struct AuditLog {
    path: PathBuf,
    lock: parking_lot::Mutex<()>,
}

pub struct AuditPage {
    pub total: usize,
    pub entries: Vec<AuditEntry>,
}

impl AuditLog {
    pub fn new(path: &Path) -> AuditLog {
        AuditLog {
            path: path.into(),
            lock: parking_lot::Mutex::new(()),
        }
    }

    pub fn append(&self, e: &AuditEntry) -> Result<(), AuditError> {
        let line = serde_json::to_string(e).unwrap_or_default();
        let _g = self.lock.lock();
        super::securefile::append_line(&self.path, &line).map_err(|cause| AuditError {
            path: self.path.clone(),
            cause,
        })
    }

    /// Newest first: `limit` entries after skipping `offset`.
    pub fn page(&self, offset: usize, limit: usize) -> Result<AuditPage, AuditError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(cause) => {
                return Err(AuditError {
                    path: self.path.clone(),
                    cause,
                })
            }
        };
        // A damaged line (a crash mid-write) is skipped, not fatal.
        let all: Vec<AuditEntry> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let total = all.len();
        let entries = all.into_iter().rev().skip(offset).take(limit).collect();
        Ok(AuditPage { total, entries })
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn appends_0600_and_pages_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/audit.log");
        let log = AuditLog::new(&path);
        for i in 0..5 {
            log.append(&AuditEntry {
                at_unix: i,
                who: "root".into(),
                from: "127.0.0.1".into(),
                action: format!("a{i}"),
                subject: None,
                ok: true,
                message: String::new(),
            })
            .unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{broken\n"))
            .unwrap();
        let p = log.page(1, 2).unwrap();
        assert_eq!(p.total, 5);
        let actions: Vec<_> = p.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["a3", "a2"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
    }
}
