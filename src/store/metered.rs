//! Counts what goes to and from the object store: requests and bytes by
//! operation and outcome, and a latency histogram. Process-wide totals
//! (atomics, fixed buckets) that the gateway reads for `/metrics` and its
//! throughput figures; every store the daemon opens is wrapped in one.
//! Wrapped around the retrying store: a request is what the caller asked,
//! its latency includes any retries.

use super::{AuthState, DynStore, ListPage, ObjectInfo, ObjectStore, RangeSink, Result};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Upper bounds of the latency buckets, in seconds (then +Inf).
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    Delete,
    List,
    Head,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Get, Op::Put, Op::Delete, Op::List, Op::Head];
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::List => "list",
            Op::Head => "head",
        }
    }
}

struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    /// Not cumulative here: one count per bucket, the last one +Inf.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Counters {
    const fn new() -> Counters {
        Counters {
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; LATENCY_BOUNDS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }
}

static TOTALS: [Counters; 5] = [const { Counters::new() }; 5];

fn record(op: Op, ok: bool, bytes: u64, started: Instant) {
    let c = &TOTALS[op as usize];
    let secs = started.elapsed().as_secs_f64();
    if ok {
        c.ok.fetch_add(1, Ordering::Relaxed);
    } else {
        c.errors.fetch_add(1, Ordering::Relaxed);
    }
    c.bytes.fetch_add(bytes, Ordering::Relaxed);
    let i = LATENCY_BOUNDS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(LATENCY_BOUNDS.len());
    c.buckets[i].fetch_add(1, Ordering::Relaxed);
    c.sum_micros
        .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
}

/// One operation's totals since the process started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpTotals {
    pub op: &'static str,
    pub ok: u64,
    pub errors: u64,
    pub bytes: u64,
    /// Cumulative: requests at or under each bound, then all (+Inf).
    pub cumulative_buckets: Vec<u64>,
    pub latency_sum_secs: f64,
}

/// Totals of every operation (get, put, delete, list, head).
pub fn totals() -> Vec<OpTotals> {
    Op::ALL
        .iter()
        .map(|&op| {
            let c = &TOTALS[op as usize];
            let mut acc = 0;
            let cumulative_buckets = c
                .buckets
                .iter()
                .map(|b| {
                    acc += b.load(Ordering::Relaxed);
                    acc
                })
                .collect();
            OpTotals {
                op: op.name(),
                ok: c.ok.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
                cumulative_buckets,
                latency_sum_secs: c.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            }
        })
        .collect()
}

/// Bytes uploaded (puts) and downloaded (gets) since the process started.
pub fn bytes_moved() -> (u64, u64) {
    (
        TOTALS[Op::Put as usize].bytes.load(Ordering::Relaxed),
        TOTALS[Op::Get as usize].bytes.load(Ordering::Relaxed),
    )
}

/// Wraps a store; counts into the process-wide totals.
#[derive(Debug)]
pub struct MeteredStore {
    inner: DynStore,
}

impl MeteredStore {
    pub fn wrap(inner: DynStore) -> DynStore {
        std::sync::Arc::new(MeteredStore { inner })
    }

    fn run<T>(
        &self,
        op: Op,
        bytes: impl Fn(&T) -> u64,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let t = Instant::now();
        let r = f();
        match &r {
            Ok(v) => record(op, true, bytes(v), t),
            // A missing object is an answer, not a failure of the store.
            Err(e) if e.is_not_found() => record(op, true, 0, t),
            Err(_) => record(op, false, 0, t),
        }
        r
    }
}

impl ObjectStore for MeteredStore {
    fn url(&self) -> String {
        self.inner.url()
    }
    fn auth_state(&self) -> Option<AuthState> {
        self.inner.auth_state()
    }
    fn capacity(&self) -> Result<Option<super::Capacity>> {
        self.inner.capacity()
    }
    fn put_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        self.run(Op::Put, |_| len, || self.inner.put_stream(key, len, body))
    }
    fn create_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        self.run(
            Op::Put,
            |_| len,
            || self.inner.create_stream(key, len, body),
        )
    }
    fn get_max(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        self.run(
            Op::Get,
            |v: &Vec<u8>| v.len() as u64,
            || self.inner.get_max(key, max),
        )
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run(
            Op::Get,
            |v: &Vec<u8>| v.len() as u64,
            || self.inner.get_range(key, offset, len),
        )
    }
    fn get_ranges(
        &self,
        key: &str,
        offset: u64,
        lens: &[u64],
        each: RangeSink<'_>,
    ) -> Result<usize> {
        let bytes = std::cell::Cell::new(0u64);
        self.run(
            Op::Get,
            |_| bytes.get(),
            || {
                self.inner.get_ranges(key, offset, lens, &mut |d| {
                    bytes.set(bytes.get() + d.len() as u64);
                    each(d)
                })
            },
        )
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.run(Op::Head, |_| 0, || self.inner.head(key))
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.run(Op::Delete, |_| 0, || self.inner.delete(key))
    }
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.run(Op::Delete, |_| 0, || self.inner.delete_many(keys))
    }
    fn list(&self, prefix: &str, marker: Option<&str>, limit: usize) -> Result<ListPage> {
        self.run(Op::List, |_| 0, || self.inner.list(prefix, marker, limit))
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let n = data.len() as u64;
        self.run(Op::Put, |_| n, || self.inner.put(key, data))
    }
    fn put_shared(&self, key: &str, data: &bytes::Bytes) -> Result<()> {
        let n = data.len() as u64;
        self.run(Op::Put, |_| n, || self.inner.put_shared(key, data))
    }
    fn create(&self, key: &str, data: &[u8]) -> Result<()> {
        let n = data.len() as u64;
        self.run(Op::Put, |_| n, || self.inner.create(key, data))
    }
    fn prepare(&self) -> Result<()> {
        self.inner.prepare()
    }
    fn remove_container(&self) -> Result<()> {
        self.inner.remove_container()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ops_bytes_outcomes_and_latency() {
        let d = tempfile::tempdir().unwrap();
        let s = MeteredStore::wrap(std::sync::Arc::new(
            crate::store::local::LocalStore::open(d.path()).unwrap(),
        ));
        let before = totals();
        s.put("data/x", &[7u8; 1000]).unwrap();
        assert_eq!(s.get("data/x").unwrap().len(), 1000);
        assert!(s.get("data/missing").unwrap_err().is_not_found());
        let after = totals();
        let (b, a) = (&before[Op::Put as usize], &after[Op::Put as usize]);
        assert!(a.ok > b.ok && a.bytes >= b.bytes + 1000);
        let (b, a) = (&before[Op::Get as usize], &after[Op::Get as usize]);
        assert!(a.ok >= b.ok + 2 && a.bytes >= b.bytes + 1000);
        // Cumulative buckets end with every request.
        assert_eq!(
            *a.cumulative_buckets.last().unwrap(),
            a.ok + a.errors,
            "{a:?}"
        );
        assert_eq!(a.cumulative_buckets.len(), LATENCY_BOUNDS.len() + 1);
    }
}
