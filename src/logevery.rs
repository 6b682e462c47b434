//! Conditions that repeat (a full disk, an unreachable store) are logged
//! once, then at most every few seconds with how often they recurred: a
//! log on the same full disk must not be flooded (thousands of lines a
//! second were seen).

use parking_lot::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    /// When last reported, and occurrences since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    pub const fn new(every: Duration) -> Self {
        LogEvery {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Count one occurrence; `Some(n)` when it should be logged now, `n`
    /// being the occurrences since the last report (this one included).
    pub fn hit(&self) -> Option<u64> {
        let mut st = self.state.lock();
        st.1 += 1;
        if st.0.is_some_and(|t| t.elapsed() < self.every) {
            return None;
        }
        let n = std::mem::take(&mut st.1);
        st.0 = Some(Instant::now());
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_a_count_per_period() {
        let l = LogEvery::new(Duration::from_millis(200));
        assert_eq!(l.hit(), Some(1));
        for _ in 0..1000 {
            assert_eq!(l.hit(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(l.hit(), Some(1001));
        assert_eq!(l.hit(), None);
    }
}
