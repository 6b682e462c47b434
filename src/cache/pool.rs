//! One pool of upload threads for every cache in the process. A gateway
//! with hundreds of homes runs a fixed number of upload threads, not eight
//! per home, and an idle home costs no thread and no wakeup: pool threads
//! sleep until a cache has work, and poll (every 100 ms) only while some
//! cache holds work that is not due yet (the upload delay, a filling pack,
//! a retry after a failure).
//!
//! Each cache still bounds its own uploads in flight (its
//! `upload_workers`), and threads scan the caches round robin from a
//! different one each time, so one busy home cannot take every thread.

use super::Cache;
use parking_lot::{Condvar, Mutex};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// What a cache has for the pool.
pub(super) enum Take {
    Job(super::Job),
    /// Work that is not due yet: look again soon.
    Later,
    /// Nothing queued (or as many uploads in flight as it may have).
    Idle,
}

#[derive(Default)]
struct State {
    caches: Vec<Weak<Cache>>,
    next: usize,
    /// Bumped by every wake: a thread that scanned before a wake does not
    /// go to sleep after it.
    epoch: u64,
    shutdown: bool,
}

#[derive(Default)]
pub(super) struct Shared {
    st: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    /// A cache has new work (or room for more uploads).
    pub(super) fn wake(&self) {
        self.st.lock().epoch += 1;
        self.cv.notify_one();
    }

    pub(super) fn wake_all(&self) {
        self.st.lock().epoch += 1;
        self.cv.notify_all();
    }
}

/// The pool; dropping it stops and joins its threads (the caches using it
/// must have been shut down first).
pub struct UploadPool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    size: usize,
}

impl std::fmt::Debug for UploadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadPool")
            .field("threads", &self.size)
            .finish()
    }
}

impl UploadPool {
    pub fn new(threads: usize) -> std::io::Result<Arc<UploadPool>> {
        let shared = Arc::new(Shared::default());
        let size = threads.max(1);
        let mut handles = Vec::with_capacity(size);
        for i in 0..size {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("upload-{i}"))
                .spawn(move || run(&s));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop(&shared, handles);
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(UploadPool {
            shared,
            threads: Mutex::new(handles),
            size,
        }))
    }

    pub fn threads(&self) -> usize {
        self.size
    }

    pub(super) fn register(&self, cache: &Arc<Cache>) -> Arc<Shared> {
        self.shared.st.lock().caches.push(Arc::downgrade(cache));
        self.shared.wake_all();
        self.shared.clone()
    }
}

impl Drop for UploadPool {
    fn drop(&mut self) {
        stop(&self.shared, std::mem::take(&mut *self.threads.lock()));
    }
}

fn stop(shared: &Shared, handles: Vec<std::thread::JoinHandle<()>>) {
    shared.st.lock().shutdown = true;
    shared.cv.notify_all();
    for h in handles {
        let _ = h.join();
    }
}

/// How long an idle upload thread keeps its buffers: writes come in
/// bursts with pauses shorter than this between objects, and a buffer
/// made again is faulted in and cleared again by the kernel.
const KEEP_BUFFERS: Duration = Duration::from_secs(2);

fn run(shared: &Shared) {
    // When this thread last did a job, while it may hold buffers.
    let mut last_job: Option<Instant> = None;
    loop {
        let (epoch, caches) = {
            let mut st = shared.st.lock();
            if st.shutdown {
                return;
            }
            st.caches.retain(|c| c.strong_count() > 0);
            let n = st.caches.len();
            let start = if n == 0 { 0 } else { st.next % n };
            st.next = st.next.wrapping_add(1);
            let order: Vec<Weak<Cache>> =
                (0..n).map(|i| st.caches[(start + i) % n].clone()).collect();
            (st.epoch, order)
        };
        let mut later = false;
        let mut job = None;
        for c in caches {
            let Some(c) = c.upgrade() else { continue };
            match c.take_job() {
                Take::Job(j) => {
                    job = Some((c, j));
                    break;
                }
                Take::Later => later = true,
                Take::Idle => {}
            }
        }
        if let Some((c, j)) = job {
            c.run_job(j);
            last_job = Some(Instant::now());
            continue;
        }
        if !later && last_job.is_some_and(|t| t.elapsed() >= KEEP_BUFFERS) {
            super::upload::release_buffers();
            last_job = None;
        }
        let mut st = shared.st.lock();
        if st.epoch == epoch && !st.shutdown {
            // Without pending work every change wakes us; the long
            // timeout is only a safety net.
            let t = if later {
                Duration::from_millis(100)
            } else if let Some(t) = last_job {
                // Back in time to give the buffers up.
                KEEP_BUFFERS
                    .saturating_sub(t.elapsed())
                    .max(Duration::from_millis(10))
            } else {
                Duration::from_secs(5)
            };
            shared.cv.wait_for(&mut st, t);
        }
    }
}
