//! One pool of worker threads serving the requests of every mounted
//! filesystem that may block (on the object store, on backpressure, on an
//! upload), so that a mount costs one thread reading its FUSE device, not
//! a set of workers of its own: a gateway with hundreds of idle homes had
//! six threads each.
//!
//! Each mount has a [`Lane`]: its jobs run in the order given, at most
//! `per_lane` at a time, and lanes with work take turns, so one busy home
//! cannot take every worker from the others. Workers are started when
//! work finds none idle (up to a bound) and leave after a minute idle.

use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker waits for work before it leaves.
const IDLE_EXIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct LaneState {
    queue: VecDeque<Job>,
    running: usize,
    /// At most this many of its jobs run at once.
    limit: usize,
    /// In the pool's ready ring (has work and room to run it).
    ready: bool,
}

#[derive(Default)]
struct State {
    lanes: HashMap<u64, LaneState>,
    /// Lanes with queued work and room, served round robin.
    ready: VecDeque<u64>,
    next_lane: u64,
    workers: usize,
    idle: usize,
    /// Wakeups given to idle workers and not yet taken: an idle worker
    /// already woken does not count as free for the next job.
    woken: usize,
}

pub struct Pool {
    /// Its threads' name.
    name: &'static str,
    max_workers: usize,
    state: Mutex<State>,
    /// Workers wait here for work.
    work: Condvar,
    /// Drains wait here for a lane to empty.
    drained: Condvar,
}

/// The process's pool. Sized for blocking work: a worker waiting on the
/// store costs a thread, not a core.
pub fn pool() -> &'static Arc<Pool> {
    static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
    POOL.get_or_init(|| Pool::new("fuse-worker", 64))
}

impl Pool {
    pub fn new(name: &'static str, max_workers: usize) -> Arc<Pool> {
        Arc::new(Pool {
            name,
            max_workers: max_workers.max(1),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            drained: Condvar::new(),
        })
    }

    /// A new lane whose jobs run at most `per_lane` at a time.
    pub fn lane(self: &Arc<Self>, per_lane: usize) -> Lane {
        let mut s = self.state.lock();
        let id = s.next_lane;
        s.next_lane += 1;
        s.lanes.insert(
            id,
            LaneState {
                limit: per_lane.max(1),
                ..Default::default()
            },
        );
        Lane {
            pool: self.clone(),
            id,
        }
    }

    /// Threads the pool has now.
    #[cfg(test)]
    fn workers(&self) -> usize {
        self.state.lock().workers
    }

    fn submit(self: &Arc<Self>, lane: &Lane, job: Job) {
        let mut s = self.state.lock();
        let l = s
            .lanes
            .get_mut(&lane.id)
            .expect("a lane lives until dropped");
        l.queue.push_back(job);
        if !l.ready && l.running < l.limit {
            l.ready = true;
            s.ready.push_back(lane.id);
        }
        if s.idle > s.woken {
            s.woken += 1;
            self.work.notify_one();
        } else if s.workers < self.max_workers {
            s.workers += 1;
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || me.work());
            if let Err(e) = spawned {
                // The job waits for a worker that exists (or is the first
                // one to be started once threads can be had again).
                s.workers -= 1;
                tracing::error!(pool = self.name, "cannot start a worker thread: {e}");
            }
        }
    }

    fn work(self: Arc<Self>) {
        let mut s = self.state.lock();
        loop {
            let Some(id) = s.ready.pop_front() else {
                s.idle += 1;
                let timed_out = self.work.wait_for(&mut s, IDLE_EXIT).timed_out();
                s.idle -= 1;
                s.woken = s.woken.saturating_sub(1);
                if timed_out && s.ready.is_empty() {
                    s.workers -= 1;
                    return;
                }
                continue;
            };
            let l = s.lanes.get_mut(&id).expect("ready lanes exist");
            let Some(job) = l.queue.pop_front() else {
                l.ready = false;
                continue;
            };
            l.running += 1;
            // Back to the end of the ring if it has more and room: turns.
            if !l.queue.is_empty() && l.running < l.limit {
                s.ready.push_back(id);
            } else {
                l.ready = false;
            }
            drop(s);
            // A panic must not take the worker's count with it (a drain
            // would wait for ever); fuser answers a dropped reply with EIO.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!(pool = self.name, "a job panicked");
            }
            s = self.state.lock();
            let l = s.lanes.get_mut(&id).expect("a lane outlives its jobs");
            l.running -= 1;
            if l.queue.is_empty() && l.running == 0 {
                self.drained.notify_all();
            } else if !l.ready && !l.queue.is_empty() && l.running < l.limit {
                l.ready = true;
                s.ready.push_back(id);
            }
        }
    }
}

/// One mount's share of the pool.
pub struct Lane {
    pool: Arc<Pool>,
    id: u64,
}

impl Lane {
    /// Run `job` on the pool, after the lane's earlier jobs have started.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        self.pool.submit(self, Box::new(job));
    }

    /// Wait until every job given to the lane has finished.
    pub fn drain(&self) {
        let mut s = self.pool.state.lock();
        while s
            .lanes
            .get(&self.id)
            .is_some_and(|l| l.running > 0 || !l.queue.is_empty())
        {
            self.pool.drained.wait(&mut s);
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.drain();
        self.pool.state.lock().lanes.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_lane_runs_at_most_its_limit_at_once_and_drain_waits_for_all() {
        let pool = Pool::new("test", 8);
        let lane = pool.lane(3);
        let (now, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        for _ in 0..30 {
            let (now, most, done) = (now.clone(), most.clone(), done.clone());
            lane.spawn(move || {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                now.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        lane.drain();
        assert_eq!(done.load(Ordering::SeqCst), 30);
        assert_eq!(most.load(Ordering::SeqCst), 3, "the lane's limit, and used");
        assert!(pool.workers() <= 8);
    }

    #[test]
    fn a_busy_lane_does_not_keep_another_waiting_behind_all_its_work() {
        let pool = Pool::new("test", 2);
        let busy = pool.lane(2);
        let other = pool.lane(2);
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 0..20 {
            let order = order.clone();
            busy.spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                order.lock().push(format!("busy{i}"));
            });
        }
        let o = order.clone();
        other.spawn(move || o.lock().push("other".to_string()));
        other.drain();
        let done_before = order.lock().len();
        busy.drain();
        // Served at the next free worker, not after the busy lane's 20.
        assert!(done_before <= 4, "other ran after {done_before} busy jobs");
    }

    #[test]
    fn jobs_given_while_every_worker_is_busy_still_run() {
        let pool = Pool::new("test", 1);
        let lanes: Vec<_> = (0..5).map(|_| pool.lane(1)).collect();
        let done = Arc::new(AtomicUsize::new(0));
        for l in &lanes {
            for _ in 0..4 {
                let done = done.clone();
                l.spawn(move || {
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
        drop(lanes);
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert_eq!(pool.workers(), 1);
    }
}
