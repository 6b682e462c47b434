//! Long actions (flush, fsck, removing a user or a share) on a thread of
//! their own, with live progress, kept for a while after they finish.

use super::api::{JobInfo, JobState};
use crate::clock::unix_now;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Finished jobs kept (the running ones are always kept).
pub const KEEP_FINISHED: usize = 200;

/// What a running job reports through.
#[derive(Clone)]
pub struct Progress {
    info: Arc<Mutex<JobInfo>>,
}

impl Progress {
    pub fn set(&self, phase: &str, done: u64, total: u64) {
        let mut j = self.info.lock();
        if j.phase != phase {
            j.phase = phase.to_string();
        }
        j.done = done;
        j.total = total;
    }
}

#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    list: Mutex<VecDeque<Arc<Mutex<JobInfo>>>>,
}

impl Jobs {
    /// Start `work` on a thread; its Ok is the summary, its Err the failure.
    /// `done` runs after it (events, bookkeeping).
    pub fn start(
        &self,
        kind: &str,
        subject: &str,
        work: impl FnOnce(&Progress) -> Result<String, String> + Send + 'static,
        done: impl FnOnce(&JobInfo) + Send + 'static,
    ) -> Result<JobInfo, std::io::Error> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(Mutex::new(JobInfo {
            id,
            kind: kind.into(),
            subject: subject.into(),
            state: JobState::Running,
            started_unix: unix_now(),
            finished_unix: None,
            phase: "starting".into(),
            done: 0,
            total: 0,
            message: None,
        }));
        {
            let mut l = self.list.lock();
            l.push_back(info.clone());
            // Forget the oldest finished jobs beyond the bound.
            let finished = l
                .iter()
                .filter(|j| j.lock().state != JobState::Running)
                .count();
            let mut extra = finished.saturating_sub(KEEP_FINISHED);
            l.retain(|j| {
                if extra > 0 && j.lock().state != JobState::Running {
                    extra -= 1;
                    false
                } else {
                    true
                }
            });
        }
        let p = Progress { info: info.clone() };
        let snapshot = info.lock().clone();
        std::thread::Builder::new()
            .name(format!("job-{id}"))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&p)))
                    .unwrap_or_else(|_| Err("the job crashed (see the daemon log)".into()));
                let fin = {
                    let mut j = p.info.lock();
                    j.finished_unix = Some(unix_now());
                    match r {
                        Ok(m) => {
                            j.state = JobState::Succeeded;
                            j.phase = "done".into();
                            j.message = Some(m);
                        }
                        Err(e) => {
                            j.state = JobState::Failed;
                            j.message = Some(e);
                        }
                    }
                    j.clone()
                };
                done(&fin);
            })?;
        Ok(snapshot)
    }

    /// Newest first.
    pub fn list(&self) -> Vec<JobInfo> {
        self.list
            .lock()
            .iter()
            .rev()
            .map(|j| j.lock().clone())
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<JobInfo> {
        self.list
            .lock()
            .iter()
            .find(|j| j.lock().id == id)
            .map(|j| j.lock().clone())
    }

    /// A running job of this kind on this subject, if any.
    pub fn running(&self, kind: &str, subject: &str) -> Option<JobInfo> {
        self.list
            .lock()
            .iter()
            .map(|j| j.lock().clone())
            .find(|j| j.state == JobState::Running && j.kind == kind && j.subject == subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_outcome_and_bound() {
        let jobs = Jobs::default();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let j = jobs
            .start(
                "flush",
                "alice",
                move |p| {
                    p.set("uploading", 1, 4);
                    rx.recv().ok();
                    Ok("flushed".into())
                },
                |_| {},
            )
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while jobs.get(j.id).unwrap().done != 1 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let now = jobs.get(j.id).unwrap();
        assert_eq!(
            (now.state, now.phase.as_str(), now.total),
            (JobState::Running, "uploading", 4)
        );
        assert!(jobs.running("flush", "alice").is_some());
        tx.send(()).unwrap();
        while jobs.get(j.id).unwrap().state == JobState::Running {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(jobs.get(j.id).unwrap().message.as_deref(), Some("flushed"));
        for _ in 0..KEEP_FINISHED + 5 {
            jobs.start("x", "y", |_| Err("no".into()), |_| {}).unwrap();
        }
        while jobs.list().iter().any(|j| j.state == JobState::Running) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        jobs.start("x", "y", |_| Ok(String::new()), |_| {}).unwrap();
        assert!(jobs.list().len() <= KEEP_FINISHED + 2);
    }
}
