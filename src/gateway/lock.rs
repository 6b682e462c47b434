//! The state lock: whoever holds it is the one writer of the user map and
//! the share list. The daemon holds it for its lifetime; a CLI command
//! holds it while it changes things in process (no daemon running).

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the gateway state lock {0} is held by another process (a gateway daemon starting, or another `swiftgate user`/`share` command); try again in a moment")]
    Held(PathBuf),
}

/// An exclusive `flock`, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

/// The lock file: next to the user map.
pub fn lock_path(user_db: &Path) -> PathBuf {
    let mut s = user_db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

impl StateLock {
    /// Try once.
    pub fn try_acquire(path: &Path) -> Result<Option<StateLock>, LockError> {
        let io = |cause| LockError::Io {
            path: path.to_path_buf(),
            cause,
        };
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io)?;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            Ok(Some(StateLock {
                _file: f,
                path: path.to_path_buf(),
            }))
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Ok(None)
            } else {
                Err(io(e))
            }
        }
    }

    /// Wait up to `patience` for the lock.
    pub fn acquire(path: &Path, patience: Duration) -> Result<StateLock, LockError> {
        let until = Instant::now() + patience;
        loop {
            if let Some(l) = Self::try_acquire(path)? {
                return Ok(l);
            }
            if Instant::now() >= until {
                return Err(LockError::Held(path.to_path_buf()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = lock_path(&d.path().join("users.json"));
        assert!(p.ends_with("users.json.lock"));
        let a = StateLock::acquire(&p, Duration::ZERO).unwrap();
        assert!(StateLock::try_acquire(&p).unwrap().is_none());
        let e = StateLock::acquire(&p, Duration::from_millis(100)).unwrap_err();
        assert!(e.to_string().contains("held by another process"), "{e}");
        drop(a);
        StateLock::acquire(&p, Duration::ZERO).unwrap();
    }
}
