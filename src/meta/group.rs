//! A SQLite connection whose writes are grouped into transactions (group
//! commit, as a journaling filesystem does). Each write is a savepoint,
//! undone whole on error, inside one transaction that is committed within
//! [`BATCH_WINDOW`]: a commit per operation (WAL frames, locks, checkpoints)
//! cost most of the time of small-file workloads. Until batching is
//! started, every write commits on its own.

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a group of changes may stay uncommitted: what a process crash
/// can lose of operations nobody fsynced.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// The connection and the transaction it may hold open.
pub struct Db {
    conn: Connection,
    /// When the open group began; `None` when none is open.
    open_since: Option<Instant>,
    /// Committed before each commit here: changes here may refer to its
    /// (the metadata's file sizes to the cache's block bytes).
    first: Option<Arc<Group>>,
    /// Room freed just before a commit on a full disk.
    reserve: Option<Arc<super::reserve::Reserve>>,
    /// Kept after `conn` (fields drop in order): SQLite calls into it.
    pub(super) wal_watch: Option<Arc<super::walwatch::WalWatch>>,
}

impl std::ops::Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Db {
    fn run(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    fn commit_first(&self) -> rusqlite::Result<()> {
        self.commit_first_if(true).map(|_| ())
    }

    /// Commits `first`; without `wait`, false (nothing done) when its
    /// connection is held.
    fn commit_first_if(&self, wait: bool) -> rusqlite::Result<bool> {
        let first = match &self.first {
            Some(g) if wait => Some(g.db.lock()),
            Some(g) => match g.db.try_lock() {
                Some(c) => Some(c),
                None => return Ok(false),
            },
            None => None,
        };
        if let Some(r) = &self.reserve {
            r.release_if_low();
        }
        if let Some(mut c) = first {
            c.commit()?;
        }
        Ok(true)
    }

    pub fn commit(&mut self) -> rusqlite::Result<()> {
        self.commit_if(true).map(|_| ())
    }

    /// As `commit`; without `wait`, false (nothing done) when `first`'s
    /// connection is held: the committer must not wait on one database's
    /// long operation while the others' groups stay open.
    fn commit_if(&mut self, wait: bool) -> rusqlite::Result<bool> {
        if self.open_since.is_some() {
            if !self.commit_first_if(wait)? {
                return Ok(false);
            }
            if let Err(e) = self.run("COMMIT") {
                if self.conn.is_autocommit() {
                    Group::lost(self, "a commit failed");
                }
                return Err(e);
            }
            self.open_since = None;
        }
        Ok(true)
    }
}

pub struct Group {
    db: Mutex<Db>,
    batching: AtomicBool,
    /// Registered with the committer (batching may be switched back on).
    committer: AtomicBool,
}

impl Group {
    pub fn new(conn: Connection) -> Group {
        Group {
            db: Mutex::new(Db {
                conn,
                open_since: None,
                first: None,
                reserve: None,
                wal_watch: None,
            }),
            batching: AtomicBool::new(false),
            committer: AtomicBool::new(false),
        }
    }

    /// Direct access (reads see the uncommitted group: same connection).
    pub fn lock(&self) -> MutexGuard<'_, Db> {
        self.db.lock()
    }

    /// Whether someone holds the connection right now.
    pub fn busy(&self) -> bool {
        self.db.is_locked()
    }

    /// One operation, atomic: a savepoint inside the open group.
    pub fn write<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut c = self.db.lock();
        let batching = self.batching.load(Ordering::Acquire);
        if !batching && c.open_since.is_none() {
            // A transaction of its own: no savepoint needed.
            c.run("BEGIN IMMEDIATE")?;
            let r = f(&c.conn).and_then(|v| {
                c.commit_first()
                    .and_then(|_| c.run("COMMIT"))
                    .map(|_| v)
                    .map_err(E::from)
            });
            if r.is_err() && !c.conn.is_autocommit() {
                let _ = c.run("ROLLBACK");
            }
            return r;
        }
        if c.open_since.is_none() {
            c.run("BEGIN IMMEDIATE")?;
            c.open_since = Some(Instant::now());
            if batching {
                committer().wake();
            }
        }
        c.run("SAVEPOINT op")?;
        let out = match f(&c.conn) {
            Ok(v) => v,
            Err(e) => {
                if c.conn.is_autocommit() {
                    // SQLite rolled the whole transaction back itself (a
                    // full disk, an I/O error): the group is gone.
                    Self::lost(&mut c, "an operation failed");
                    return Err(e);
                }
                let undo = c.run("ROLLBACK TO op").and_then(|_| c.run("RELEASE op"));
                if let Err(u) = undo {
                    // The transaction is in an unknown state: drop it whole.
                    tracing::error!("database rollback failed: {u}");
                    let _ = c.run("ROLLBACK");
                    c.open_since = None;
                }
                if !batching {
                    c.commit()?;
                }
                return Err(e);
            }
        };
        c.run("RELEASE op")?;
        if !batching || c.open_since.is_some_and(|t| t.elapsed() >= BATCH_WINDOW) {
            c.commit()?;
        }
        Ok(out)
    }

    /// Commit `first` before every commit here, so nothing committed here
    /// refers to what `first` has not committed yet.
    pub fn commit_first(&self, first: Arc<Group>) {
        self.db.lock().first = Some(first);
    }

    /// Keep `r`'s room for this database's commits.
    pub fn set_reserve(&self, r: Arc<super::reserve::Reserve>) {
        self.db.lock().reserve = Some(r);
    }

    pub fn reserve(&self) -> Option<Arc<super::reserve::Reserve>> {
        self.db.lock().reserve.clone()
    }

    /// Commit the open group, if any.
    pub fn commit(&self) -> rusqlite::Result<()> {
        self.db.lock().commit()
    }

    fn lost(c: &mut Db, why: &str) {
        if let Some(t) = c.open_since.take() {
            tracing::error!(
                "{why} and the database dropped the changes of the last {} ms \
                 (is the cache disk full or failing?)",
                t.elapsed().as_millis()
            );
        }
    }

    /// Commit each write on its own while `on` is false: when the disk is
    /// nearly full, a failed group commit would drop many operations
    /// already answered, a failed single one only itself.
    pub fn set_batching(&self, on: bool) -> rusqlite::Result<()> {
        let on = on && self.committer.load(Ordering::Acquire);
        if self.batching.swap(on, Ordering::AcqRel) && !on {
            return self.commit();
        }
        Ok(())
    }

    /// Make every change so far durable (fsync of the WAL): the connection
    /// runs with synchronous=NORMAL for speed, so this commits at FULL.
    /// `marker` is a write for when no group is open, so the WAL is synced.
    pub fn sync(&self, marker: &str) -> rusqlite::Result<()> {
        let mut c = self.db.lock();
        // The safety level cannot change inside a transaction: commit the
        // group first; the marker's commit at FULL then syncs the WAL with
        // everything before it.
        c.commit()?;
        c.pragma_update(None, "synchronous", "FULL")?;
        let r = c.execute(marker, []).map(|_| ());
        c.pragma_update(None, "synchronous", "NORMAL")?;
        r
    }

    /// Group writes from now on. The process's committer thread commits
    /// each group within [`BATCH_WINDOW`] (one thread for every database:
    /// a gateway's hundreds of homes do not each keep two threads polling);
    /// it forgets `group` once it is dropped everywhere else.
    pub fn start_batching(group: &Arc<Group>) -> std::io::Result<()> {
        committer().register(group)?;
        group.batching.store(true, Ordering::Release);
        group.committer.store(true, Ordering::Release);
        Ok(())
    }

    /// Drop the open group as a crash would; commit each write on its own
    /// from now on.
    pub fn abandon(&self) {
        self.batching.store(false, Ordering::Release);
        let mut c = self.db.lock();
        if c.open_since.take().is_some() {
            let _ = c.run("ROLLBACK");
        }
    }
}

/// The thread that commits every batching group in the process.
struct Committer {
    st: Mutex<CommitterState>,
    cv: Condvar,
}

#[derive(Default)]
struct CommitterState {
    groups: Vec<std::sync::Weak<Group>>,
    /// Bumped by each wake: a scan that began before it is not followed by
    /// a sleep.
    epoch: u64,
    started: bool,
}

fn committer() -> &'static Committer {
    static C: std::sync::OnceLock<Committer> = std::sync::OnceLock::new();
    C.get_or_init(|| Committer {
        st: Mutex::new(CommitterState::default()),
        cv: Condvar::new(),
    })
}

impl Committer {
    fn register(&'static self, g: &Arc<Group>) -> std::io::Result<()> {
        let mut st = self.st.lock();
        if !st.started {
            std::thread::Builder::new()
                .name("db-commit".into())
                .spawn(move || self.run())?;
            st.started = true;
        }
        st.groups.push(Arc::downgrade(g));
        Ok(())
    }

    fn wake(&self) {
        self.st.lock().epoch += 1;
        self.cv.notify_one();
    }

    fn run(&self) {
        loop {
            let (epoch, groups) = {
                let mut st = self.st.lock();
                st.groups.retain(|g| g.strong_count() > 0);
                (st.epoch, st.groups.clone())
            };
            // Nothing open: sleep until a group opens (the timeout is a
            // safety net only).
            let mut next = Duration::from_secs(10);
            for g in groups {
                let Some(g) = g.upgrade() else { continue };
                // A database busy with a long operation must not hold up
                // the others' commits: look again shortly.
                let Some(mut c) = g.db.try_lock() else {
                    next = next.min(Duration::from_millis(5));
                    continue;
                };
                match c.open_since {
                    None => {}
                    Some(t) if t.elapsed() < BATCH_WINDOW => {
                        next = next.min(BATCH_WINDOW - t.elapsed());
                    }
                    Some(_) => {
                        match c.commit_if(false) {
                            Ok(true) => {}
                            // `first` is busy: look again shortly.
                            Ok(false) => next = next.min(Duration::from_millis(5)),
                            Err(e) => {
                                static FAILED: crate::logevery::LogEvery =
                                    crate::logevery::LogEvery::new(Duration::from_secs(5));
                                if let Some(n) = FAILED.hit() {
                                    tracing::error!(
                                        times = n,
                                        "committing a group of changes failed: {e}"
                                    );
                                }
                                next = next.min(BATCH_WINDOW);
                            }
                        }
                    }
                }
            }
            let mut st = self.st.lock();
            if st.epoch == epoch {
                self.cv.wait_for(&mut st, next);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Err(e) = self.db.get_mut().commit() {
            tracing::error!("committing at close failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group on a fresh database with table t(x); `committer` starts
    /// the commit thread, else batching is on with nobody committing.
    fn fresh(committer: bool) -> (tempfile::TempDir, std::path::PathBuf, Arc<Group>) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g.db");
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t(x INTEGER PRIMARY KEY)")
            .unwrap();
        let g = Arc::new(Group::new(c));
        if committer {
            Group::start_batching(&g).unwrap();
        } else {
            g.batching.store(true, Ordering::Release);
        }
        (d, p, g)
    }

    fn insert(g: &Group, x: i64) {
        g.write(|c| c.execute("INSERT INTO t VALUES(?1)", [x]).map(|_| ()))
            .unwrap();
    }

    fn count(path: &std::path::Path) -> i64 {
        // A second connection sees only what is committed.
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn failed_write_is_undone_whole_and_the_group_survives() {
        let (_d, p, g) = fresh(true);
        insert(&g, 1);
        let r: rusqlite::Result<()> = g.write(|c| {
            c.execute("INSERT INTO t VALUES(2)", [])?;
            c.execute("INSERT INTO t VALUES(1)", []).map(|_| ()) // duplicate
        });
        assert!(r.is_err());
        g.commit().unwrap();
        let rows: Vec<i64> = {
            let c = g.lock();
            let mut s = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
            let r = s.query_map([], |r| r.get(0)).unwrap();
            r.map(|x| x.unwrap()).collect()
        };
        assert_eq!(rows, vec![1]);
        assert_eq!(count(&p), 1);
    }

    #[test]
    fn groups_are_committed_within_the_window() {
        let (_d, p, g) = fresh(true);
        insert(&g, 7);
        assert_eq!(count(&p), 0, "not committed at once");
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&p) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(count(&p), 1, "committed by the committer");
    }

    /// One committer for many databases: each group is committed, and a
    /// database whose lock is held (a long operation) holds up no other.
    #[test]
    fn one_committer_serves_many_groups_and_a_busy_one_blocks_none() {
        let all: Vec<_> = (0..20).map(|_| fresh(true)).collect();
        let busy = all[0].2.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            insert(&busy, 1);
            let _held = busy.lock();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        rx.recv().unwrap();
        for (i, (_, _, g)) in all.iter().enumerate().skip(1) {
            insert(g, i as i64);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while all[1..].iter().any(|(_, p, _)| count(p) == 0) {
            assert!(
                Instant::now() < deadline,
                "a busy database held up the others"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(count(&all[0].1), 0, "the busy one waits for its lock");
        holder.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&all[0].1) == 0 {
            assert!(
                Instant::now() < deadline,
                "the busy one was never committed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A group whose `first` is held (a long operation there) waits for it,
    /// as it may not commit before it; the committer does not wait with
    /// it, so every other database's group is committed meanwhile.
    #[test]
    fn a_busy_first_holds_up_only_the_group_that_depends_on_it() {
        let (_df, _pf, first) = fresh(false);
        let (_da, pa, a) = fresh(true);
        a.commit_first(first.clone());
        let others: Vec<_> = (0..5).map(|_| fresh(true)).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let held = first.clone();
        let holder = std::thread::spawn(move || {
            let _held = held.lock();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        rx.recv().unwrap();
        insert(&a, 1);
        // The committer reaches `a` (its window passes) before the others
        // have anything open.
        std::thread::sleep(BATCH_WINDOW * 3);
        for (i, (_, _, g)) in others.iter().enumerate() {
            insert(g, i as i64);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while others.iter().any(|(_, p, _)| count(p) == 0) {
            assert!(
                Instant::now() < deadline,
                "a busy first database held up the committer"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(count(&pa), 0, "not committed before its first");
        holder.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&pa) == 0 {
            assert!(
                Instant::now() < deadline,
                "the group was never committed after its first"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_first_group_is_committed_before_this_one() {
        let (_d1, data_path, data) = fresh(false);
        let (_d2, meta_path, meta) = fresh(false);
        meta.commit_first(data.clone());
        insert(&data, 1);
        insert(&meta, 1);
        meta.commit().unwrap();
        assert_eq!(count(&data_path), 1, "the first group went first");
        assert_eq!(count(&meta_path), 1);
        // Also when this group commits each write on its own.
        meta.set_batching(false).unwrap();
        insert(&data, 2);
        insert(&meta, 2);
        assert_eq!(count(&data_path), 2);
        assert_eq!(count(&meta_path), 2);
        // The first group alone does not drag this one along.
        meta.batching.store(true, Ordering::Release);
        insert(&meta, 3);
        data.commit().unwrap();
        assert_eq!(count(&meta_path), 2);
    }

    #[test]
    fn sync_commits_an_open_group() {
        let (_d, p, g) = fresh(false);
        g.lock()
            .execute_batch("CREATE TABLE m(id INTEGER PRIMARY KEY, n INTEGER)")
            .unwrap();
        insert(&g, 1);
        g.sync("INSERT INTO m VALUES(1, 1) ON CONFLICT(id) DO UPDATE SET n=n+1")
            .unwrap();
        assert_eq!(count(&p), 1);
    }

    #[test]
    fn abandon_loses_the_open_group_like_a_crash() {
        let (_d, p, g) = fresh(false);
        insert(&g, 1);
        g.abandon();
        assert_eq!(count(&p), 0);
        insert(&g, 2);
        assert_eq!(count(&p), 1, "after abandon each write commits");
    }
}
