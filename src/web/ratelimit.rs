//! The login rate limit: per user name and per client address, free for a
//! few failures, then an exponentially growing wait (up to 15 minutes).
//! Guessing passwords through the console becomes hopeless while a
//! mistyping admin is barely slowed.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failures allowed before any wait.
pub const FREE_FAILURES: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(30);
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Default)]
pub struct LoginLimiter {
    map: Mutex<HashMap<String, Record>>,
}

fn keys(user: &str, addr: &str) -> [String; 2] {
    [
        format!("u:{}", user.trim().to_lowercase()),
        format!("a:{addr}"),
    ]
}

/// The wait after the n-th failure (n > FREE_FAILURES).
fn wait_for(failures: u32) -> Duration {
    let exp = failures.saturating_sub(FREE_FAILURES + 1).min(16);
    FIRST_WAIT.saturating_mul(1u32 << exp).min(MAX_WAIT)
}

impl LoginLimiter {
    /// None: go ahead. Some(wait): refuse, try again after `wait`.
    pub fn check(&self, user: &str, addr: &str) -> Option<Duration> {
        let now = Instant::now();
        let map = self.map.lock();
        keys(user, addr)
            .iter()
            .filter_map(|k| map.get(k)?.blocked_until)
            .filter(|t| *t > now)
            .map(|t| t - now)
            .max()
    }

    pub fn failure(&self, user: &str, addr: &str) {
        let now = Instant::now();
        let mut map = self.map.lock();
        // Records quiet for longer than the longest wait are forgotten.
        map.retain(|_, r| now.duration_since(r.last) < MAX_WAIT * 2);
        for k in keys(user, addr) {
            let r = map.entry(k).or_insert(Record {
                failures: 0,
                last: now,
                blocked_until: None,
            });
            r.failures += 1;
            r.last = now;
            if r.failures > FREE_FAILURES {
                r.blocked_until = Some(now + wait_for(r.failures));
            }
        }
    }

    /// A successful login clears its user's record (not the address's: one
    /// known password must not reset guessing at other accounts).
    pub fn success(&self, user: &str, addr: &str) {
        let [u, _] = keys(user, addr);
        self.map.lock().remove(&u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_failures_then_growing_waits_capped() {
        let l = LoginLimiter::default();
        for _ in 0..FREE_FAILURES {
            assert!(l.check("alice", "10.0.0.1").is_none());
            l.failure("alice", "10.0.0.1");
        }
        assert!(l.check("alice", "10.0.0.1").is_none());
        l.failure("Alice", "10.0.0.1");
        let w = l.check("alice", "10.0.0.2").expect("per user");
        assert!(w > Duration::from_secs(25) && w <= FIRST_WAIT, "{w:?}");
        assert!(l.check("bob", "10.0.0.1").is_some(), "per address");
        assert!(l.check("bob", "10.0.0.9").is_none());
        assert_eq!(wait_for(FREE_FAILURES + 2), FIRST_WAIT * 2);
        assert_eq!(wait_for(100), MAX_WAIT);
        l.success("alice", "10.0.0.1");
        assert!(l.check("alice", "10.0.0.2").is_none());
        assert!(l.check("carol", "10.0.0.1").is_some(), "the address stays");
    }
}
