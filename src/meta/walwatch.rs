//! How much WAL the metadata connection has written since it was last
//! folded in, told by SQLite after every commit (`sqlite3_wal_hook`), so
//! the shipper is woken the moment it passes its soft limit instead of at
//! its next tick: with batching off (a nearly full disk) a busy writer
//! adds megabytes a second. Past a hard limit it folds the WAL in itself
//! as SQLite's own auto-checkpoint would; the shipper notices (the WAL was
//! restarted behind it) and resumes the chain with a full snapshot.

use rusqlite::{ffi, Connection};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Wake = Arc<dyn Fn() + Send + Sync>;

pub struct WalWatch {
    /// Frames in the WAL after the last commit.
    frames: AtomicU64,
    page_size: u64,
    soft: u64,
    hard: u64,
    wake: parking_lot::Mutex<Option<Wake>>,
}

impl WalWatch {
    /// Watch `conn`'s WAL: `soft` bytes wake the shipper, `hard` bytes fold
    /// the WAL in on the spot. The returned watch must outlive `conn`.
    pub fn install(conn: &Connection, soft: u64, hard: u64) -> rusqlite::Result<Arc<WalWatch>> {
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let w = Arc::new(WalWatch {
            frames: AtomicU64::new(0),
            page_size: page_size.max(512),
            soft,
            hard,
            wake: parking_lot::Mutex::new(None),
        });
        // SAFETY: the pointer stays valid while the connection lives: the
        // caller keeps the Arc beside the connection and drops it after.
        unsafe {
            ffi::sqlite3_wal_hook(
                conn.handle(),
                Some(on_commit),
                Arc::as_ptr(&w) as *mut c_void,
            );
        }
        Ok(w)
    }

    /// Bytes of WAL written since it was last folded in.
    pub fn bytes(&self) -> u64 {
        self.frames.load(Ordering::Relaxed) * (24 + self.page_size)
    }

    /// Called (on the committing thread, briefly) once the WAL passes the
    /// soft limit.
    pub fn on_large(&self, f: Wake) {
        *self.wake.lock() = Some(f);
    }

    /// The WAL was folded in and will restart.
    pub fn folded(&self) {
        self.frames.store(0, Ordering::Relaxed);
    }
}

unsafe extern "C" fn on_commit(
    arg: *mut c_void,
    db: *mut ffi::sqlite3,
    name: *const c_char,
    pages: c_int,
) -> c_int {
    // SAFETY: `arg` is the WalWatch installed with this hook (see install).
    let w = unsafe { &*(arg as *const WalWatch) };
    w.frames.store(pages.max(0) as u64, Ordering::Relaxed);
    let bytes = w.bytes();
    if bytes >= w.hard {
        // SAFETY: SQLite's own auto-checkpoint does this from this hook.
        unsafe {
            ffi::sqlite3_wal_checkpoint(db, name);
        }
    } else if bytes >= w.soft {
        if let Some(f) = w.wake.try_lock().and_then(|g| g.clone()) {
            f();
        }
    }
    ffi::SQLITE_OK
}
