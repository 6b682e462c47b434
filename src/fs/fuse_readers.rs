//! The FUSE devices of every mount in the process, read by a few shared
//! threads (epoll), not by a thread of its own per mount: a gateway with
//! 300 homes mounted had 600 threads (fuser's reader, and the thread
//! waiting on it), most of them idle.
//!
//! Each device belongs to one reader thread (the one with the fewest when
//! it is mounted), which watches its devices with an epoll of its own and
//! reads up to [`BATCH`] requests of each ready device per round. A device
//! staying with one thread keeps a mount's requests in order and in one
//! cache, as its own reader did: a first version woke whichever of the
//! shared threads had waited longest, and hot reads answered on the reader
//! cost about a quarter more CPU. What may block goes on to the shared
//! pool ([`super::dispatch`]); what a reader answers itself waits neither
//! on the store nor on a database in use (see `FuseFs::serve`), so one
//! busy mount holds up the others on its thread only briefly.

use super::fuse::FuseFs;
use fuser::{Dispatcher, Processed, RequestBuffer};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Threads reading the devices, at most: enough that a mount answering
/// a request itself does not stall the others on a small VM.
const MAX_READERS: usize = 4;
/// Ready devices taken from one wait.
const EVENTS: usize = 16;
/// Requests read from a ready device before the next one's turn: a
/// streaming reader's next request is usually queued already, and reading
/// it at once saves a trip through epoll.
const BATCH: usize = 8;

/// Told why a session ended: `None` when unmounted, the error if the
/// device failed.
type OnEnd = Box<dyn FnOnce(Option<String>) + Send>;

struct Served {
    disp: Dispatcher<FuseFs>,
    on_end: Mutex<Option<OnEnd>>,
}

/// One reader thread and the devices it watches.
struct Reader {
    epoll: Epoll,
    served: Mutex<HashMap<u64, Arc<Served>>>,
}

/// Reader threads and the devices each watches.
pub struct Readers {
    max: usize,
    /// Their threads' name.
    name: &'static str,
    /// The readers started so far (never more than `max`; they stay).
    readers: Mutex<Vec<&'static Reader>>,
}

/// The process's readers: every mount is served by these.
static SHARED: Readers = Readers::new(MAX_READERS, "fuse-reader");
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Serve `session` until it ends (unmounted, or the device failed), then
/// run `on_end` on a thread of its own (it may flush and close an engine:
/// no reader waits for that), after the filesystem's `destroy`. It is
/// given the device's error, if that is what ended the session.
pub fn serve(
    session: fuser::Session<FuseFs>,
    on_end: impl FnOnce(Option<String>) + Send + 'static,
) -> std::io::Result<()> {
    SHARED.serve(session, on_end)
}

impl Readers {
    /// At most `max` reader threads, called `name`.
    pub const fn new(max: usize, name: &'static str) -> Readers {
        Readers {
            max,
            name,
            readers: Mutex::new(Vec::new()),
        }
    }

    /// See [`serve`].
    pub fn serve(
        &self,
        session: fuser::Session<FuseFs>,
        on_end: impl FnOnce(Option<String>) + Send + 'static,
    ) -> std::io::Result<()> {
        // Non-blocking: a reader goes back to its epoll when a device is
        // empty.
        let flags = rustix::fs::fcntl_getfl(session.as_fd())?;
        rustix::fs::fcntl_setfl(session.as_fd(), flags | rustix::fs::OFlags::NONBLOCK)?;
        let served = Arc::new(Served {
            disp: session.into_dispatcher(),
            on_end: Mutex::new(Some(Box::new(on_end))),
        });
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let reader = self.reader_for_one_more()?;
        reader.served.lock().insert(key, served.clone());
        let ev = EpollEvent::new(EpollFlags::EPOLLIN, key);
        if let Err(e) = reader.epoll.add(served.disp.as_fd(), ev) {
            reader.served.lock().remove(&key);
            return Err(e.into());
        }
        Ok(())
    }

    /// The reader with the fewest devices, or a new one while there are
    /// fewer than `max` and every one has a device.
    fn reader_for_one_more(&self) -> std::io::Result<&'static Reader> {
        let mut readers = self.readers.lock();
        let least = readers
            .iter()
            .copied()
            .min_by_key(|r| r.served.lock().len());
        if let Some(r) = least {
            if readers.len() >= self.max || r.served.lock().is_empty() {
                return Ok(r);
            }
        }
        let r: &'static Reader = Box::leak(Box::new(Reader {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            served: Mutex::new(HashMap::new()),
        }));
        let spawned = std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || r.read_loop());
        match spawned {
            Ok(_) => {
                readers.push(r);
                Ok(r)
            }
            // The ones running serve this mount too, only slower.
            Err(e) => match least {
                Some(l) => {
                    tracing::warn!("cannot start a FUSE reader thread: {e}");
                    Ok(l)
                }
                None => Err(e),
            },
        }
    }
}

/// Up to [`BATCH`] requests of one device; `Err` once its session is
/// over, with the device's error if that ended it.
fn serve_some(s: &Served, buf: &mut RequestBuffer) -> Result<(), Option<String>> {
    for _ in 0..BATCH {
        match s.disp.process(buf) {
            Ok(Processed::Request) => {}
            Ok(Processed::Idle) => return Ok(()),
            Ok(Processed::Ended) => return Err(None),
            Err(e) => {
                tracing::error!("FUSE session ended with an error: {e}");
                return Err(Some(e.to_string()));
            }
        }
    }
    Ok(())
}

impl Reader {
    fn read_loop(&'static self) {
        let mut buf = RequestBuffer::new();
        let mut events = [EpollEvent::empty(); EVENTS];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("waiting on FUSE devices failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            // A few requests of each ready device, then wait again (level-
            // triggered: a device with more is ready at once).
            for ev in &events[..n] {
                let key = ev.data();
                let Some(s) = self.served.lock().get(&key).cloned() else {
                    continue;
                };
                if let Err(why) = serve_some(&s, &mut buf) {
                    // This reference goes first: the end thread's must be
                    // the last, for `destroy` to run there, not here.
                    drop(s);
                    self.end(key, why);
                }
            }
        }
    }

    /// Take the session's reference from this reader and end it on a
    /// thread of its own.
    fn end(&self, key: u64, why: Option<String>) {
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
                f(why);
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
    use crate::test_support::threads_named;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A fresh filesystem and where it is mounted. Dropped (the test
    /// passed or not), whatever is mounted there is detached first.
    struct Mounted {
        mp: tempfile::TempDir,
        te: TestEngine,
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.mp.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// A fresh filesystem mounted at a fresh place, its session not
    /// served yet.
    fn mounted() -> (Mounted, fuser::Session<FuseFs>) {
        let m = Mounted {
            mp: tempfile::tempdir().unwrap(),
            te: TestEngine::new(),
        };
        let settings = MountSettings {
            allow_other: false,
            devices_and_setuid: false,
            concurrency: 2,
        };
        let s = session(&m.te.engine, m.mp.path(), &settings).unwrap();
        (m, s)
    }

    #[test]
    fn many_mounts_are_served_by_a_few_shared_threads() {
        const MOUNTS: usize = 8;
        let mut mounts = Vec::new();
        for _ in 0..MOUNTS {
            let (m, s) = mounted();
            let (tx, ended) = mpsc::sync_channel(1);
            serve(s, move |why| {
                let _ = tx.send(why);
            })
            .unwrap();
            mounts.push((m, ended));
        }
        // Every mount busy at once, each from a thread of its own.
        std::thread::scope(|sc| {
            for (i, (m, _)) in mounts.iter().enumerate() {
                let mp = &m.mp;
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
        for (m, ended) in &mounts {
            nix::mount::umount2(m.mp.path(), nix::mount::MntFlags::empty()).unwrap();
            let why = ended
                .recv_timeout(Duration::from_secs(20))
                .expect("the end of an unmounted session is reported");
            assert_eq!(why, None, "an unmount is a clean end");
        }
        assert_eq!(threads_named("fuse-reader"), readers, "readers are kept");
    }

    /// The daemon unmounts a home itself, then its session ends; a new
    /// mount at the same place (the user connecting again) must survive
    /// the old session's drop (fuser 0.18 unmounted it: vendor/fuser).
    #[test]
    fn an_ended_session_leaves_a_later_mount_at_its_place_alone() {
        let (m, s) = mounted();
        let mp = &m.mp;
        let disp = s.into_dispatcher();
        nix::mount::umount2(mp.path(), nix::mount::MntFlags::empty()).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            mp.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        std::fs::write(mp.path().join("later"), b"x").unwrap();
        drop(disp);
        assert!(
            mp.path().join("later").exists(),
            "the later mount was unmounted by the old session"
        );
    }

    /// A reader shared by two mounts keeps serving one while the other's
    /// database is held (a long scan, a commit): what would wait for it
    /// goes to the pool.
    #[test]
    fn a_busy_database_holds_up_no_other_mount_on_its_reader() {
        let one: &'static Readers = Box::leak(Box::new(Readers::new(1, "test-reader")));
        let mut mounts = Vec::new();
        for _ in 0..2 {
            let (m, s) = mounted();
            one.serve(s, |_| {}).unwrap();
            mounts.push(m);
        }
        let (a, b) = (&mounts[0], &mounts[1]);
        let held = a.te.fs().meta().hold();
        let a_path = a.mp.path().join("asked-while-held");
        let waiting = std::thread::spawn(move || std::fs::metadata(a_path).is_err());
        std::thread::sleep(Duration::from_millis(200));
        // B's lookups and its directory go through the same reader.
        let (tx, rx) = mpsc::channel();
        let b_path = b.mp.path().to_path_buf();
        std::thread::spawn(move || {
            let r = std::fs::metadata(b_path.join("never-there")).is_err()
                && std::fs::read_dir(&b_path).map(|d| d.count()).ok() == Some(0);
            let _ = tx.send(r);
        });
        let answered = rx.recv_timeout(Duration::from_secs(5));
        drop(held);
        assert_eq!(answered, Ok(true), "mount B waited for A's database");
        assert!(waiting.join().unwrap(), "A's lookup answers once released");
    }
}
