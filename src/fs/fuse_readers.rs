//! The FUSE devices of every mount in the process, read by a few shared
//! threads (epoll), not by a thread of its own per mount: a gateway with
//! 300 homes mounted had 600 threads (fuser's reader, and the thread
//! waiting on it), most of them idle.
//!
//! Each device is non-blocking and armed one-shot: one thread at a time
//! reads a mount's requests (as its own reader did), a few at a go, then
//! re-arms it. What may block goes on to the shared pool
//! ([`super::dispatch`]); what the reader answers itself never waits on
//! the store (see `FuseFs::serve`), so one busy mount does not hold up
//! another's requests for long.

use super::fuse::FuseFs;
use fuser::{Dispatcher, Processed, RequestBuffer};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, OnceLock};

/// Threads reading the devices, at most: enough that a mount answering
/// a request itself does not stall the others on a small VM.
const MAX_READERS: usize = 4;
/// Requests read from one device before it is re-armed (others' turn).
const BATCH: usize = 32;

type OnEnd = Box<dyn FnOnce() + Send>;

struct Served {
    disp: Dispatcher<FuseFs>,
    on_end: Mutex<Option<OnEnd>>,
}

struct Readers {
    epoll: Epoll,
    served: Mutex<HashMap<u64, Arc<Served>>>,
    next_key: Mutex<u64>,
    threads: Mutex<usize>,
}

fn readers() -> std::io::Result<&'static Readers> {
    static R: OnceLock<Readers> = OnceLock::new();
    if let Some(r) = R.get() {
        return Ok(r);
    }
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    Ok(R.get_or_init(|| Readers {
        epoll,
        served: Mutex::new(HashMap::new()),
        next_key: Mutex::new(0),
        threads: Mutex::new(0),
    }))
}

/// Serve `session` until it ends (unmounted), then run `on_end` on a
/// thread of its own (it may flush and close an engine: no reader waits
/// for that), after the filesystem's `destroy`.
pub fn serve(
    session: fuser::Session<FuseFs>,
    on_end: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    let r = readers()?;
    // Non-blocking: a reader woken for a device another thread emptied
    // must not sleep in read(2) holding its turn.
    let flags = rustix::fs::fcntl_getfl(session.as_fd())?;
    rustix::fs::fcntl_setfl(session.as_fd(), flags | rustix::fs::OFlags::NONBLOCK)?;
    let served = Arc::new(Served {
        disp: session.into_dispatcher(),
        on_end: Mutex::new(Some(Box::new(on_end))),
    });
    let key = {
        let mut k = r.next_key.lock();
        *k += 1;
        *k
    };
    r.served.lock().insert(key, served.clone());
    if let Err(e) = r.epoll.add(served.disp.as_fd(), armed(key)) {
        r.served.lock().remove(&key);
        return Err(e.into());
    }
    r.grow();
    Ok(())
}

fn armed(key: u64) -> EpollEvent {
    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, key)
}

impl Readers {
    /// One more reader per mount, up to [`MAX_READERS`].
    fn grow(&'static self) {
        let mut n = self.threads.lock();
        let want = self.served.lock().len().min(MAX_READERS);
        while *n < want {
            let r = std::thread::Builder::new()
                .name("fuse-reader".into())
                .spawn(move || self.read_loop());
            match r {
                Ok(_) => *n += 1,
                Err(e) => {
                    // The ones running serve every mount, only slower.
                    tracing::warn!("cannot start a FUSE reader thread: {e}");
                    break;
                }
            }
        }
    }

    fn read_loop(&'static self) {
        let mut buf = RequestBuffer::new();
        let mut ev = [EpollEvent::empty()];
        loop {
            // One event per wait: the next device goes to another thread.
            match self.epoll.wait(&mut ev, EpollTimeout::NONE) {
                Ok(1) => {}
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("waiting on FUSE devices failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            }
            let key = ev[0].data();
            let Some(s) = self.served.lock().get(&key).cloned() else {
                continue;
            };
            if self.serve_some(&s, &mut buf) {
                let rearmed = self.epoll.modify(s.disp.as_fd(), &mut armed(key));
                if let Err(e) = rearmed {
                    tracing::error!("cannot watch a FUSE device again, ending its session: {e}");
                    self.end(key);
                }
            } else {
                self.end(key);
            }
        }
    }

    /// Up to [`BATCH`] requests of one mount; false once its session is
    /// over.
    fn serve_some(&self, s: &Served, buf: &mut RequestBuffer) -> bool {
        for _ in 0..BATCH {
            match s.disp.process(buf) {
                Ok(Processed::Request) => {}
                Ok(Processed::Idle) => return true,
                Ok(Processed::Ended) => return false,
                Err(e) => {
                    tracing::error!("FUSE session ended with an error: {e}");
                    return false;
                }
            }
        }
        true
    }

    fn end(&self, key: u64) {
        let Some(s) = self.served.lock().remove(&key) else {
            return;
        };
        let _ = self.epoll.delete(s.disp.as_fd());
        let finish = Arc::new(Mutex::new(Some(move || {
            let on_end = s.on_end.lock().take();
            // The last reference: `destroy` (requests still on the pool
            // finish), then the owner's end.
            drop(Arc::into_inner(s));
            if let Some(f) = on_end {
                f();
            }
        })));
        let theirs = finish.clone();
        let spawned = std::thread::Builder::new()
            .name("fuse-end".into())
            .spawn(move || {
                if let Some(f) = theirs.lock().take() {
                    f()
                }
            });
        if let Err(e) = spawned {
            // Here then, holding up this reader: the end must run.
            tracing::warn!("cannot start a thread to end a FUSE session: {e}");
            if let Some(f) = finish.lock().take() {
                f()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::fuse::{session, MountSettings};
    use crate::fs::testing::TestEngine;
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Detaches whatever is still mounted when the test ends, failed or not.
    struct Unmount(Vec<PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }

    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|c| c.trim_end() == name)
            .count()
    }

    #[test]
    fn many_mounts_are_served_by_a_few_shared_threads() {
        const MOUNTS: usize = 8;
        let mut guard = Unmount(Vec::new());
        let mut mounts = Vec::new();
        for _ in 0..MOUNTS {
            let te = TestEngine::new();
            let mp = tempfile::tempdir().unwrap();
            let settings = MountSettings {
                allow_other: false,
                devices_and_setuid: false,
                concurrency: 2,
            };
            let s = session(&te.engine, mp.path(), &settings).unwrap();
            guard.0.push(mp.path().to_path_buf());
            let (tx, ended) = mpsc::sync_channel(1);
            serve(s, move || {
                let _ = tx.send(());
            })
            .unwrap();
            mounts.push((te, mp, ended));
        }
        // Every mount busy at once, each from a thread of its own.
        std::thread::scope(|sc| {
            for (i, (_, mp, _)) in mounts.iter().enumerate() {
                sc.spawn(move || {
                    let data = vec![i as u8; 300_000];
                    let f = mp.path().join("f");
                    std::fs::write(&f, &data).unwrap();
                    std::fs::create_dir(mp.path().join("d")).unwrap();
                    assert_eq!(std::fs::read(&f).unwrap(), data);
                    assert_eq!(std::fs::read_dir(mp.path()).unwrap().count(), 2);
                });
            }
        });
        let readers = threads_named("fuse-reader");
        assert!(
            (1..=MAX_READERS).contains(&readers) && readers < MOUNTS,
            "{readers} reader threads for {MOUNTS} mounts"
        );
        // Unmounted, each session ends and its owner hears of it.
        for (_, mp, ended) in &mounts {
            nix::mount::umount2(mp.path(), nix::mount::MntFlags::empty()).unwrap();
            ended
                .recv_timeout(Duration::from_secs(20))
                .expect("the end of an unmounted session is reported");
        }
        assert_eq!(threads_named("fuse-reader"), readers, "readers are kept");
    }
}
