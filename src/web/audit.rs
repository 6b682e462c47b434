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
    /// Past this size the file is rotated: the page reads one bounded file.
    max_bytes: u64,
}

/// Rotated at 8 MiB (about 40,000 actions); five old files are kept
/// (`audit.log.1` newest .. `audit.log.5`).
pub const MAX_BYTES: u64 = 8 << 20;
pub const KEEP: usize = 5;

pub struct AuditPage {
    pub total: usize,
    pub entries: Vec<AuditEntry>,
}

impl AuditLog {
    pub fn new(path: &Path) -> AuditLog {
        AuditLog::with_limit(path, MAX_BYTES)
    }

    pub fn with_limit(path: &Path, max_bytes: u64) -> AuditLog {
        AuditLog {
            path: path.into(),
            lock: parking_lot::Mutex::new(()),
            max_bytes,
        }
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    /// Move a full log aside (`.1`, older ones up to `.KEEP`).
    fn rotate_if_full(&self) {
        let full = std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.max_bytes);
        if !full {
            return;
        }
        for n in (1..KEEP).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        if let Err(e) = std::fs::rename(&self.path, self.rotated(1)) {
            tracing::error!(path = %self.path.display(), "cannot rotate the audit log: {e}");
        }
    }

    pub fn append(&self, e: &AuditEntry) -> Result<(), AuditError> {
        let line = serde_json::to_string(e).unwrap_or_default();
        let _g = self.lock.lock();
        self.rotate_if_full();
        crate::secure::append_line(&self.path, &line).map_err(|cause| AuditError {
            path: self.path.clone(),
            cause,
        })
    }

    /// Newest first: `limit` entries after skipping `offset`, from the
    /// current file (older ones are in the rotated files).
    pub fn page(&self, offset: usize, limit: usize) -> Result<AuditPage, AuditError> {
        // Bounded even if the file grew by other means: the newest part.
        let read = || -> std::io::Result<String> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&self.path)?;
            let len = f.metadata()?.len();
            let cap = self.max_bytes.max(1 << 20) * 2;
            if len > cap {
                f.seek(SeekFrom::Start(len - cap))?;
            }
            let mut b = Vec::new();
            f.take(cap).read_to_end(&mut b)?;
            Ok(String::from_utf8_lossy(&b).into_owned())
        };
        let text = match read() {
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
        // Rotation: a small limit moves full files aside, keeping KEEP.
        let small = AuditLog::with_limit(&path, 1);
        for i in 0..(KEEP + 3) {
            small
                .append(&AuditEntry {
                    at_unix: 100 + i as u64,
                    who: "root".into(),
                    from: "127.0.0.1".into(),
                    action: format!("r{i}"),
                    subject: None,
                    ok: true,
                    message: String::new(),
                })
                .unwrap();
        }
        let p = small.page(0, 10).unwrap();
        assert_eq!(p.total, 1);
        assert_eq!(p.entries[0].action, format!("r{}", KEEP + 2));
        assert!(small.rotated(KEEP).exists() && !small.rotated(KEEP + 1).exists());
        let newest_old = std::fs::read_to_string(small.rotated(1)).unwrap();
        assert!(
            newest_old.contains(&format!("r{}", KEEP + 1)),
            "{newest_old}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
    }
}
