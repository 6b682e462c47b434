//! What happened lately (mounts, refused sessions, jobs, user and share
//! changes): a bounded ring in memory, newest first when read. Not a log
//! file: the tracing log keeps the full history.

use super::api::{Event, EventLevel};
use parking_lot::Mutex;
use std::collections::VecDeque;

/// How many events are kept.
pub const CAPACITY: usize = 2000;

#[derive(Debug, Default)]
pub struct Events {
    ring: Mutex<VecDeque<Event>>,
}

impl Events {
    pub fn push(&self, level: EventLevel, subject: Option<&str>, message: impl Into<String>) {
        let e = Event {
            at_unix: crate::clock::unix_now(),
            level,
            subject: subject.map(String::from),
            message: message.into(),
        };
        let mut r = self.ring.lock();
        if r.len() >= CAPACITY {
            r.pop_front();
        }
        r.push_back(e);
    }

    pub fn info(&self, subject: &str, message: impl Into<String>) {
        self.push(EventLevel::Info, Some(subject), message);
    }

    pub fn error(&self, subject: &str, message: impl Into<String>) {
        self.push(EventLevel::Error, Some(subject), message);
    }

    /// Newest first; of one subject, or all.
    pub fn recent(&self, subject: Option<&str>, limit: usize) -> Vec<Event> {
        self.ring
            .lock()
            .iter()
            .rev()
            .filter(|e| subject.is_none_or(|s| e.subject.as_deref() == Some(s)))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Whether `subject` had an error event containing `what` since `since_unix`.
    pub fn errors_since(&self, since_unix: u64) -> Vec<Event> {
        self.ring
            .lock()
            .iter()
            .filter(|e| e.at_unix >= since_unix && e.level == EventLevel::Error)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_first_and_filtered() {
        let ev = Events::default();
        for i in 0..CAPACITY + 10 {
            ev.info(if i % 2 == 0 { "a" } else { "b" }, format!("n{i}"));
        }
        let all = ev.recent(None, usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].message, format!("n{}", CAPACITY + 9));
        let a = ev.recent(Some("a"), 3);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|e| e.subject.as_deref() == Some("a")));
    }
}
