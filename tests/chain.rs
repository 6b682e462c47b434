//! The metadata chain (full snapshots + WAL segments) over a real local
//! store: a restore equals the source database, a crash at any store call
//! of a shipment loses nothing that was committed locally, a fenced mount
//! cannot append, a damaged link is reported.

use rusqlite::Connection;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use swiftgate::meta::chain;
use swiftgate::meta::ship::{self, meta_codec, ShipError, Shipper};
use swiftgate::meta::Meta;
use swiftgate::store::{self, DynStore, ListPage, ObjectInfo, ObjectStore, StoreError};

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sg-chain-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn local(dir: &Path) -> DynStore {
    std::fs::create_dir_all(dir).unwrap();
    store::open(&format!("local://{}", dir.display())).unwrap()
}

/// Dies (every call fails, for good) at its `n`th change to the store:
/// before making it when `n` is even, after when odd: a process killed
/// just before or just after a PUT or DELETE.
#[derive(Debug)]
struct Crashing {
    inner: DynStore,
    left: AtomicI64,
    dead: AtomicBool,
}

impl Crashing {
    fn new(inner: DynStore, n: i64) -> Self {
        Crashing {
            inner,
            left: AtomicI64::new(n),
            dead: AtomicBool::new(false),
        }
    }

    fn gone(&self, key: &str) -> StoreError {
        StoreError::Transient {
            store: "crashing".into(),
            key: key.into(),
            message: "the process is dead".into(),
            retry_after: None,
        }
    }

    fn check(&self, key: &str) -> Result<(), StoreError> {
        if self.dead.load(Ordering::Acquire) {
            return Err(self.gone(key));
        }
        Ok(())
    }

    /// A change: maybe the last one.
    fn change(
        &self,
        key: &str,
        f: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.check(key)?;
        let n = self.left.fetch_sub(2, Ordering::AcqRel);
        if n == 2 || n == 1 {
            if n == 1 {
                let _ = f();
            }
            self.dead.store(true, Ordering::Release);
            return Err(self.gone(key));
        }
        f()
    }
}

impl ObjectStore for Crashing {
    fn url(&self) -> String {
        self.inner.url()
    }
    fn put_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<(), StoreError> {
        self.change(key, || self.inner.put_stream(key, len, body))
    }
    fn create_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<(), StoreError> {
        self.change(key, || self.inner.create_stream(key, len, body))
    }
    fn get_max(&self, key: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        self.check(key)?;
        self.inner.get_max(key, max)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.check(key)?;
        self.inner.get_range(key, offset, len)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.check(key)?;
        self.inner.head(key)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.change(key, || self.inner.delete(key))
    }
    fn list(
        &self,
        prefix: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.check(prefix)?;
        self.inner.list(prefix, marker, limit)
    }
}

/// User data in the database: every kv row but the shipper's own.
fn dump(db: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT key, value FROM kv WHERE key NOT IN ('shipped_gen', 'shipped_at') ORDER BY key",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// One round of changes: new rows of varied size, some deleted, some
/// rewritten (pages touched many times in one interval).
fn work(meta: &Meta, round: u32) {
    for i in 0..60u32 {
        let v = vec![(round * 7 + i) as u8; 200 + (i as usize * 37) % 3000];
        meta.kv_set(&format!("r{round}-{i}"), &v).unwrap();
    }
    for i in (0..60u32).step_by(7) {
        if round > 0 {
            meta.kv_delete(&format!("r{}-{i}", round - 1)).unwrap();
        }
        meta.kv_set("hot", format!("{round}-{i}").as_bytes())
            .unwrap();
    }
    meta.commit().unwrap();
}

struct Host {
    dir: PathBuf,
    meta: Arc<Meta>,
    shipper: Shipper,
}

fn local_gen(meta: &Meta) -> u64 {
    meta.kv_get(ship::KV_SHIPPED_GEN)
        .unwrap()
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(0)
}

/// What a mount does at start: the local copy if it is current, else a
/// rebuild from the store; then it claims the chain.
fn start(store: &DynStore, dir: &Path) -> Result<Host, ShipError> {
    std::fs::create_dir_all(dir).unwrap();
    let db = dir.join("meta.db");
    let end = chain::end(store)?;
    let gen = if db.exists() {
        let m = Meta::open(&db).unwrap();
        let g = local_gen(&m);
        assert!(
            g >= end,
            "the local copy ({g}) fell behind the store ({end}): a crash lost its generation"
        );
        g
    } else if end > 0 {
        let r = ship::restore(store, &meta_codec(None), &db)?;
        assert!(!r.is_rollback(), "{}", r.describe());
        r.gen.max(r.latest)
    } else {
        0
    };
    let meta = Arc::new(Meta::open(&db).unwrap());
    let shipper = Shipper::new(store.clone(), meta_codec(None), meta.clone(), gen);
    shipper.ship(true)?;
    Ok(Host {
        dir: dir.to_path_buf(),
        meta,
        shipper,
    })
}

fn restore_to(store: &DynStore, dir: &Path) -> (ship::Restored, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let db = dir.join("restored.db");
    let r = ship::restore(store, &meta_codec(None), &db).unwrap();
    (r, db)
}

/// The source database file once its WAL is folded in.
fn checkpointed(db: &Path) -> Vec<u8> {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(c);
    std::fs::read(db).unwrap()
}

#[test]
fn a_restore_equals_the_source_database_byte_for_byte() {
    let d = tmp();
    let store = local(&d.path().join("store"));
    let h = start(&store, &d.path().join("a")).unwrap();
    for round in 0..12 {
        work(&h.meta, round);
        if round == 5 {
            h.shipper.ship_full_now().unwrap();
        } else {
            h.shipper.ship(false).unwrap();
        }
    }
    let st = h.shipper.stats();
    assert!(st.segments >= 10 && st.full_snapshots >= 2, "{st:?}");
    let (r, db) = restore_to(&store, &d.path().join("b"));
    assert!(!r.is_rollback());
    assert_eq!(r.gen, h.shipper.shipped_gen());
    let src = h.dir.join("meta.db");
    let want = dump(&src);
    drop(h);
    assert_eq!(checkpointed(&db), checkpointed(&src));
    assert_eq!(dump(&db), want);
    let c = Connection::open(&db).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn one_small_change_in_a_large_database_ships_bytes_not_megabytes() {
    let d = tmp();
    let store = local(&d.path().join("store"));
    let h = start(&store, &d.path().join("a")).unwrap();
    // About 20 MB of rows.
    h.meta.start_batching().unwrap();
    for i in 0..20_000u32 {
        let v: Vec<u8> = (0..1000u32)
            .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
            .collect();
        h.meta.kv_set(&format!("row-{i:06}"), &v).unwrap();
    }
    h.meta.commit().unwrap();
    h.shipper.ship_full_now().unwrap();
    let before = h.shipper.stats();
    let db_size = std::fs::metadata(h.dir.join("meta.db")).unwrap().len();
    assert!(db_size > 15 << 20, "{db_size}");
    h.meta.kv_set("row-010000", b"changed").unwrap();
    h.shipper.ship(false).unwrap();
    let after = h.shipper.stats();
    assert_eq!(after.segments, before.segments + 1);
    let shipped = after.bytes - before.bytes;
    assert!(
        shipped < 64 << 10,
        "one change shipped {shipped} bytes of a {db_size}-byte database"
    );
    // Nothing changed: nothing shipped.
    h.shipper.ship(false).unwrap();
    assert_eq!(h.shipper.stats().bytes, after.bytes);
    let (_, db) = restore_to(&store, &d.path().join("b"));
    assert_eq!(dump(&db), dump(&h.dir.join("meta.db")));
}

#[test]
fn a_crash_at_any_store_call_of_a_shipment_loses_nothing() {
    let mut n = 1;
    loop {
        let d = tmp();
        let real = local(&d.path().join("store"));
        let src_dir = d.path().join("a");
        // A chain to build on, written without faults.
        let h = start(&real, &src_dir).unwrap();
        work(&h.meta, 0);
        h.shipper.ship(false).unwrap();
        drop(h);
        let crashing: DynStore = Arc::new(Crashing::new(real.clone(), n));
        let mut states = vec![dump(&src_dir.join("meta.db"))];
        let mut crashed = false;
        let h = start(&crashing, &src_dir);
        if let Ok(h) = h {
            for round in 1..6 {
                work(&h.meta, round);
                states.push(dump(&src_dir.join("meta.db")));
                let r = if round == 3 {
                    h.shipper.ship_full_now()
                } else {
                    h.shipper.ship(false)
                };
                if r.is_err() {
                    crashed = true;
                    break;
                }
            }
        } else {
            crashed = true;
        }
        if !crashed {
            // Every store call of the scenario has been a crash point.
            assert!(
                n > 20,
                "only {n} crash points: the scenario makes too few calls"
            );
            break;
        }
        // A new host sees one of the states shipped, never a mix.
        let (r, db) = restore_to(&real, &d.path().join(format!("new-{n}")));
        assert!(!r.is_rollback(), "crash point {n}: {}", r.describe());
        let got = dump(&db);
        assert!(
            states.contains(&got),
            "crash point {n}: the store holds a state the source never had"
        );
        // The same host starts again from its local copy and loses nothing.
        let h = start(&real, &src_dir).unwrap();
        let want = dump(&src_dir.join("meta.db"));
        assert_eq!(&want, states.last().unwrap(), "crash point {n}");
        work(&h.meta, 99);
        h.shipper.ship(false).unwrap();
        let want = dump(&src_dir.join("meta.db"));
        let (r, db) = restore_to(&real, &d.path().join(format!("after-{n}")));
        assert!(!r.is_rollback(), "crash point {n}: {}", r.describe());
        assert_eq!(dump(&db), want, "crash point {n}: the chain lost a change");
        n += 1;
    }
}

#[test]
fn a_fenced_mount_cannot_append() {
    let d = tmp();
    let store = local(&d.path().join("store"));
    let old = start(&store, &d.path().join("old")).unwrap();
    work(&old.meta, 0);
    old.shipper.ship(false).unwrap();
    // Another gateway takes over (the old one did not notice).
    let new = start(&store, &d.path().join("new")).unwrap();
    work(&new.meta, 1);
    new.shipper.ship(false).unwrap();
    work(&old.meta, 2);
    let e = old.shipper.ship(false).unwrap_err();
    assert!(matches!(e, ShipError::Fenced(_)), "{e}");
    assert!(e.to_string().contains("lost its lease"), "{e}");
    // It stays fenced: nothing it writes reaches the chain.
    work(&old.meta, 3);
    assert!(matches!(old.shipper.ship(true), Err(ShipError::Fenced(_))));
    assert!(matches!(
        old.shipper.ship_full_now(),
        Err(ShipError::Fenced(_))
    ));
    let (r, db) = restore_to(&store, &d.path().join("check"));
    assert!(!r.is_rollback());
    assert_eq!(dump(&db), dump(&new.dir.join("meta.db")));
}

#[test]
fn a_damaged_or_missing_link_stops_the_restore_there_and_says_so() {
    let d = tmp();
    let store = local(&d.path().join("store"));
    let h = start(&store, &d.path().join("a")).unwrap();
    let mut states = BTreeMap::new();
    for round in 0..6 {
        work(&h.meta, round);
        let g = h.shipper.ship(false).unwrap();
        states.insert(g, dump(&h.dir.join("meta.db")));
    }
    let gens: Vec<u64> = states.keys().copied().collect();
    let (mid, last) = (gens[2], *gens.last().unwrap());
    // Damaged: one byte flipped.
    let key = chain::wal_key(mid);
    let good = store.get(&key).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    store.put(&key, &bad).unwrap();
    let (r, db) = restore_to(&store, &d.path().join("b"));
    assert!(r.is_rollback());
    assert_eq!(r.gen, mid - 1);
    assert_eq!(
        r.latest,
        last,
        "{:?} {:?}",
        gens,
        store
            .list_all("meta/")
            .unwrap()
            .iter()
            .map(|o| o.key.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(r.failed[0].0, mid, "{:?}", r.failed);
    let s = r.describe();
    assert!(s.contains(&format!("{mid}..{last} are unusable")), "{s}");
    assert_eq!(&dump(&db), states.get(&(mid - 1)).unwrap());
    // Missing: said too.
    store.delete(&key).unwrap();
    let (r, _) = restore_to(&store, &d.path().join("c"));
    assert_eq!(r.gen, mid - 1);
    assert!(r.failed[0].1.contains("missing"), "{:?}", r.failed);
    // Back in place: the whole chain again.
    store.put(&key, &good).unwrap();
    let (r, db) = restore_to(&store, &d.path().join("e"));
    assert!(!r.is_rollback());
    assert_eq!(&dump(&db), states.get(&last).unwrap());
}

#[test]
fn a_large_wal_is_folded_in_and_reused_and_the_chain_carries_on() {
    let d = tmp();
    let store = local(&d.path().join("store"));
    let h = start(&store, &d.path().join("a")).unwrap();
    let wal = h.dir.join("meta.db-wal");
    let mut max_len = 0;
    for round in 0..30u32 {
        for i in 0..400u32 {
            let v = vec![(round + i) as u8; 1500];
            h.meta
                .kv_set(&format!("k{}", (round * 400 + i) % 5000), &v)
                .unwrap();
        }
        h.meta.commit().unwrap();
        h.shipper.ship(false).unwrap();
        max_len = max_len.max(std::fs::metadata(&wal).unwrap().len());
    }
    // About 18 MB went through the WAL; folded in past 4 MiB each time,
    // the file was reused instead of growing.
    assert!(
        max_len < 3 * ship::CHECKPOINT_AT,
        "WAL grew to {max_len} bytes"
    );
    assert_eq!(
        h.shipper.stats().full_snapshots,
        1,
        "{:?}",
        h.shipper.stats()
    );
    let (r, db) = restore_to(&store, &d.path().join("b"));
    assert!(!r.is_rollback());
    let src = h.dir.join("meta.db");
    let want = dump(&src);
    drop(h);
    assert_eq!(dump(&db), want);
    assert_eq!(checkpointed(&db), checkpointed(&src));
}
