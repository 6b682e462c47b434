//! One timer thread for the background work of every mounted filesystem
//! (lease renewal, metadata shipping, sweeps): each mount says when it is
//! next due, and its work runs then on a small shared pool, one step of a
//! mount at a time. A gateway's hundreds of homes each had a thread of
//! their own for this.

use super::dispatch::{Lane, Pool};
use parking_lot::{Condvar, Mutex};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A mount's background work: does what is due, returns when it next is.
pub trait Step: Send + Sync {
    fn step(&self) -> Instant;
}

struct Entry {
    job: Arc<dyn Step>,
    lane: Arc<Lane>,
    /// A step is running (on the pool).
    running: bool,
    /// A wake arrived while it ran: step again at once.
    again: bool,
    /// The due time the heap holds for it; older heap items are stale.
    due: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
}

pub struct Ticker {
    pool: Arc<Pool>,
    state: Mutex<State>,
    cv: Condvar,
    /// Times steps ask for are rounded up to a grid from here, so that
    /// hundreds of mounts come due together: one wakeup serves many.
    epoch: Instant,
}

/// The grid's step: background work can wait this much longer.
const GRAIN: Duration = Duration::from_millis(100);

/// Handle of one registration; dropping it stops the steps (and waits
/// for one under way).
pub struct Ticket {
    ticker: Arc<Ticker>,
    id: u64,
}

/// The process's ticker.
pub fn ticker() -> &'static Arc<Ticker> {
    static T: OnceLock<Arc<Ticker>> = OnceLock::new();
    // A step may wait on the store (a shipment, a lease renewal): a few
    // can, without holding up the others.
    T.get_or_init(|| Ticker::start(Pool::new("background", 8)))
}

impl Ticker {
    pub fn start(pool: Arc<Pool>) -> Arc<Ticker> {
        let t = Arc::new(Ticker {
            pool,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            epoch: Instant::now(),
        });
        let me = t.clone();
        std::thread::Builder::new()
            .name("ticker".into())
            .spawn(move || me.run())
            .expect("spawn the background ticker thread");
        t
    }

    /// Run `job`'s first step now, then whenever it says.
    pub fn register(self: &Arc<Self>, job: Arc<dyn Step>) -> Ticket {
        let mut s = self.state.lock();
        let id = s.next_id;
        s.next_id += 1;
        let now = Instant::now();
        s.entries.insert(
            id,
            Entry {
                job,
                lane: Arc::new(self.pool.lane(1)),
                running: false,
                again: false,
                due: now,
            },
        );
        self.schedule(&mut s, now, id);
        Ticket {
            ticker: self.clone(),
            id,
        }
    }

    fn run(self: Arc<Self>) {
        let mut s = self.state.lock();
        loop {
            let Some(&Reverse((due, id))) = s.heap.peek() else {
                self.cv.wait(&mut s);
                continue;
            };
            let now = Instant::now();
            if due > now {
                self.cv.wait_for(&mut s, due - now);
                continue;
            }
            s.heap.pop();
            let Some(e) = s.entries.get_mut(&id) else {
                continue;
            };
            if e.due != due {
                continue;
            }
            if e.running {
                e.again = true;
                continue;
            }
            e.running = true;
            let (job, lane, me) = (e.job.clone(), e.lane.clone(), self.clone());
            lane.spawn(move || {
                let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.step()))
                    .unwrap_or_else(|_| {
                        tracing::error!("a background step panicked; trying again in 2 s");
                        Instant::now() + Duration::from_secs(2)
                    });
                me.stepped(id, next);
            });
        }
    }

    fn stepped(&self, id: u64, next: Instant) {
        let mut s = self.state.lock();
        let Some(e) = s.entries.get_mut(&id) else {
            return;
        };
        e.running = false;
        let due = if std::mem::take(&mut e.again) {
            Instant::now()
        } else {
            self.on_grid(next)
        };
        e.due = due;
        self.schedule(&mut s, due, id);
    }

    /// `t` rounded up to the next point of the grid.
    fn on_grid(&self, t: Instant) -> Instant {
        let since = t.saturating_duration_since(self.epoch).as_nanos();
        let grain = GRAIN.as_nanos();
        let n = since.div_ceil(grain);
        self.epoch + Duration::from_nanos((n * grain) as u64)
    }

    /// Queue a step; the timer thread is woken only if it now has to
    /// wake earlier than it would anyway.
    fn schedule(&self, s: &mut State, due: Instant, id: u64) {
        let earlier = s.heap.peek().is_none_or(|&Reverse((t, _))| due < t);
        s.heap.push(Reverse((due, id)));
        if earlier {
            self.cv.notify_one();
        }
    }

    fn wake(&self, id: u64) {
        let mut s = self.state.lock();
        let Some(e) = s.entries.get_mut(&id) else {
            return;
        };
        if e.running {
            e.again = true;
            return;
        }
        let now = Instant::now();
        if e.due <= now {
            return;
        }
        e.due = now;
        self.schedule(&mut s, now, id);
    }

    /// Mounts registered.
    #[cfg(test)]
    fn registered(&self) -> usize {
        self.state.lock().entries.len()
    }
}

/// Wakes one registration; holds no reference that keeps it alive.
#[derive(Clone)]
pub struct Waker {
    ticker: std::sync::Weak<Ticker>,
    id: u64,
}

impl Waker {
    /// Step as soon as possible (something became due early).
    pub fn wake(&self) {
        if let Some(t) = self.ticker.upgrade() {
            t.wake(self.id);
        }
    }
}

impl Ticket {
    /// Step as soon as possible (something became due early).
    pub fn wake(&self) {
        self.ticker.wake(self.id);
    }

    pub fn waker(&self) -> Waker {
        Waker {
            ticker: Arc::downgrade(&self.ticker),
            id: self.id,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let lane = self
            .ticker
            .state
            .lock()
            .entries
            .remove(&self.id)
            .map(|e| e.lane);
        // A step under way finishes before the owner goes on (its lane
        // drains when the last handle to it is dropped).
        if let Some(lane) = lane {
            lane.drain();
        }
    }
}

/// The next step's time when nothing is due sooner than `max` from now.
pub fn within(next: Instant, min: Duration, max: Duration) -> Instant {
    let now = Instant::now();
    now + next.saturating_duration_since(now).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter {
        steps: AtomicUsize,
        every: Duration,
    }

    impl Step for Counter {
        fn step(&self) -> Instant {
            self.steps.fetch_add(1, Ordering::SeqCst);
            Instant::now() + self.every
        }
    }

    fn counter(every: Duration) -> Arc<Counter> {
        Arc::new(Counter {
            steps: AtomicUsize::new(0),
            every,
        })
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn steps_run_when_due_and_a_wake_brings_the_next_one_forward() {
        let t = Ticker::start(Pool::new("test", 2));
        let fast = counter(Duration::from_millis(20));
        let slow = counter(Duration::from_secs(3600));
        let _a = t.register(fast.clone());
        let b = t.register(slow.clone());
        wait_for("the fast one steps again and again", || {
            fast.steps.load(Ordering::SeqCst) >= 5
        });
        wait_for("the first step", || slow.steps.load(Ordering::SeqCst) == 1);
        b.wake();
        wait_for("the woken step", || slow.steps.load(Ordering::SeqCst) == 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(slow.steps.load(Ordering::SeqCst), 2, "no step before due");
    }

    #[test]
    fn dropping_the_ticket_stops_the_steps_and_waits_for_one_under_way() {
        struct Slow(AtomicUsize, AtomicUsize);
        impl Step for Slow {
            fn step(&self) -> Instant {
                self.0.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                self.1.fetch_add(1, Ordering::SeqCst);
                Instant::now()
            }
        }
        let t = Ticker::start(Pool::new("test", 2));
        let job = Arc::new(Slow(AtomicUsize::new(0), AtomicUsize::new(0)));
        let ticket = t.register(job.clone());
        wait_for("a step started", || job.0.load(Ordering::SeqCst) >= 1);
        drop(ticket);
        let (started, ended) = (job.0.load(Ordering::SeqCst), job.1.load(Ordering::SeqCst));
        assert_eq!(started, ended, "the drop waited for the step under way");
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(job.0.load(Ordering::SeqCst), started, "no step after");
        assert_eq!(t.registered(), 0);
    }
}
