//! Room kept for the databases' last commits. A cache disk filled from
//! outside (another program, a log) would make the next group commit fail,
//! and SQLite then drops the whole group: operations already answered.
//! A file of [`RESERVE_BYTES`] holds room no one else can take; just before
//! a commit, if the disk has less free than that, it is released so the
//! commit lands, and writers get ENOSPC from the cache from then on. It is
//! taken back once the disk has room again.

use parking_lot::Mutex;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// More than a group commit's WAL frames and a checkpoint's growth.
pub const RESERVE_BYTES: u64 = 16 << 20;

#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    /// Whether the file holds its room; when it was last looked at.
    state: Mutex<(bool, Option<Instant>)>,
    /// Released for the databases and not taken back yet: that room is
    /// theirs, not the writers'.
    given_back: std::sync::atomic::AtomicBool,
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let v = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(v.blocks_available() as u64 * v.fragment_size() as u64)
}

impl Reserve {
    /// The reserve file `name` in `dir`, taken now if the disk has room.
    pub fn new(dir: &Path, name: &str) -> Reserve {
        let r = Reserve {
            path: dir.join(name),
            state: Mutex::new((false, None)),
            given_back: std::sync::atomic::AtomicBool::new(false),
        };
        let held = std::fs::metadata(&r.path).is_ok_and(|m| m.len() >= RESERVE_BYTES);
        r.state.lock().0 = held;
        r.take_back();
        r
    }

    pub fn held(&self) -> bool {
        self.state.lock().0
    }

    /// The room was released for commits and is not back yet.
    pub fn given_back(&self) -> bool {
        self.given_back.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Before a commit: free the reserve if the disk is about to be full.
    pub fn release_if_low(&self) {
        let mut st = self.state.lock();
        if !st.0 {
            return;
        }
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        if free_bytes(dir).is_some_and(|f| f < RESERVE_BYTES) {
            match std::fs::remove_file(&self.path) {
                Ok(()) => {
                    st.0 = false;
                    self.given_back
                        .store(true, std::sync::atomic::Ordering::Release);
                    tracing::error!(
                        "cache disk full: released the {} MiB kept for metadata commits; writes fail with ENOSPC until space is freed",
                        RESERVE_BYTES >> 20
                    );
                }
                Err(e) => tracing::error!("releasing the metadata reserve failed: {e}"),
            }
        }
    }

    /// Take the room back once the disk has plenty again (checked at most
    /// every few seconds).
    pub fn take_back(&self) {
        let mut st = self.state.lock();
        if st.0 || st.1.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        st.1 = Some(Instant::now());
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        if free_bytes(dir).is_none_or(|f| f < 4 * RESERVE_BYTES) {
            return;
        }
        let made = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|f| {
                // Real blocks, not a sparse file: the room must be ours.
                nix::fcntl::fallocate(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    nix::fcntl::FallocateFlags::empty(),
                    0,
                    RESERVE_BYTES as i64,
                )
                .map_err(std::io::Error::from)?;
                f.sync_all()
            });
        match made {
            Ok(()) => {
                st.0 = true;
                self.given_back
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            Err(e) => {
                tracing::debug!("keeping room for metadata commits failed: {e}");
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_at_start_and_kept_while_there_is_room() {
        let d = tempfile::tempdir().unwrap();
        let r = Reserve::new(d.path(), "reserve");
        assert!(r.held());
        let m = std::fs::metadata(d.path().join("reserve")).unwrap();
        assert_eq!(m.len(), RESERVE_BYTES);
        use std::os::unix::fs::MetadataExt;
        assert!(m.blocks() * 512 >= RESERVE_BYTES, "allocated, not sparse");
        r.release_if_low();
        assert!(r.held(), "released with plenty of room");
    }
}
