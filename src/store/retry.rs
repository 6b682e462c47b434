//! Retries transient failures with exponential backoff and jitter.

use super::{ListPage, ObjectInfo, ObjectStore, RangeSink, Result};
use rand::Rng;
use std::io::Read;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub struct RetryStore {
    inner: super::DynStore,
    policy: RetryPolicy,
}

impl RetryStore {
    pub fn new(inner: super::DynStore, policy: RetryPolicy) -> Self {
        RetryStore { inner, policy }
    }

    fn run<T>(&self, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if e.is_transient() && attempt + 1 < self.policy.attempts => {
                    let exp = self.policy.base * 2u32.saturating_pow(attempt);
                    let cap = exp.min(self.policy.max);
                    // Full jitter: spreads retries of many workers apart.
                    let mut wait = cap.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
                    if let super::StoreError::Transient {
                        retry_after: Some(ra),
                        ..
                    } = &e
                    {
                        // The server said when; capped so a bogus value
                        // cannot stall a writer for minutes.
                        wait = wait.max((*ra).min(Duration::from_secs(60)));
                    }
                    tracing::debug!(%e, ?wait, attempt, "{what}: retrying");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A streamed body can only be replayed if we hold it; bodies here are
    /// small enough (one block or pack) to buffer for a retry.
    fn buffered(len: u64, body: &mut dyn Read) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len as usize);
        body.take(len).read_to_end(&mut buf)?;
        Ok(buf)
    }
}

impl ObjectStore for RetryStore {
    fn auth_state(&self) -> Option<super::AuthState> {
        self.inner.auth_state()
    }
    fn capacity(&self) -> Result<Option<super::Capacity>> {
        self.inner.capacity()
    }
    fn url(&self) -> String {
        self.inner.url()
    }
    fn put_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        let buf = Self::buffered(len, body).map_err(|source| super::StoreError::Io {
            store: self.url(),
            key: key.into(),
            cause: source,
        })?;
        self.run("put", || self.inner.put_stream(key, len, &mut &buf[..]))
    }
    fn create_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        let buf = Self::buffered(len, body).map_err(|source| super::StoreError::Io {
            store: self.url(),
            key: key.into(),
            cause: source,
        })?;
        self.run("create", || {
            self.inner.create_stream(key, len, &mut &buf[..])
        })
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.run("put", || self.inner.put(key, data))
    }
    fn put_shared(&self, key: &str, data: &bytes::Bytes) -> Result<()> {
        self.run("put", || self.inner.put_shared(key, data))
    }
    fn create(&self, key: &str, data: &[u8]) -> Result<()> {
        self.run("create", || self.inner.create(key, data))
    }
    fn prepare(&self) -> Result<()> {
        self.run("prepare", || self.inner.prepare())
    }
    fn remove_container(&self) -> Result<()> {
        self.run("remove container", || self.inner.remove_container())
    }
    fn get_max(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        self.run("get", || self.inner.get_max(key, max))
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run("get_range", || self.inner.get_range(key, offset, len))
    }
    fn get_ranges(
        &self,
        key: &str,
        offset: u64,
        lens: &[u64],
        each: RangeSink<'_>,
    ) -> Result<usize> {
        // A retry asks only for what has not arrived yet.
        let mut done = 0usize;
        self.run("get_ranges", || {
            let from = offset + lens[..done].iter().sum::<u64>();
            let r = self.inner.get_ranges(key, from, &lens[done..], &mut |d| {
                done += 1;
                each(d)
            });
            r.map(|_| done)
        })
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.run("head", || self.inner.head(key))
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", || self.inner.delete(key))
    }
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.run("delete_many", || self.inner.delete_many(keys))
    }
    fn list(&self, prefix: &str, marker: Option<&str>, limit: usize) -> Result<ListPage> {
        self.run("list", || self.inner.list(prefix, marker, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;
    use crate::store::{split_ranges, StoreError};
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// A local store whose first ranged read fails after `fail_after`
    /// pieces; the others read the span at once and split it (what the
    /// trait does by default).
    #[derive(Debug)]
    struct Flaky {
        inner: LocalStore,
        fail_after: Mutex<Option<usize>>,
        asked: Mutex<Vec<(u64, usize)>>,
    }

    impl ObjectStore for Flaky {
        fn url(&self) -> String {
            self.inner.url()
        }
        fn put_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
            self.inner.put_stream(key, len, body)
        }
        fn create_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
            self.inner.create_stream(key, len, body)
        }
        fn get_max(&self, key: &str, max: u64) -> Result<Vec<u8>> {
            self.inner.get_max(key, max)
        }
        fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.get_range(key, offset, len)
        }
        fn get_ranges(
            &self,
            key: &str,
            offset: u64,
            lens: &[u64],
            each: RangeSink<'_>,
        ) -> Result<usize> {
            self.asked.lock().push((offset, lens.len()));
            let Some(k) = self.fail_after.lock().take() else {
                let data = self.get_range(key, offset, lens.iter().sum())?;
                return split_ranges(data, key, offset, lens, each);
            };
            let n = self.inner.get_ranges(key, offset, &lens[..k], each)?;
            Err(StoreError::Transient {
                store: self.url(),
                key: key.into(),
                message: format!("injected: connection reset after {n} ranges"),
                retry_after: None,
            })
        }
        fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
            self.inner.head(key)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
        fn list(&self, prefix: &str, marker: Option<&str>, limit: usize) -> Result<ListPage> {
            self.inner.list(prefix, marker, limit)
        }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        }
    }

    #[test]
    fn ranges_cut_off_midway_resume_after_what_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky {
            inner: LocalStore::open(dir.path().join("s")).unwrap(),
            fail_after: Mutex::new(Some(2)),
            asked: Mutex::new(Vec::new()),
        });
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        flaky.put("o", &data).unwrap();
        let store = RetryStore::new(flaky.clone(), quick());
        let lens = [100u64, 200, 50, 300];
        let mut got = Vec::new();
        let n = store
            .get_ranges("o", 10, &lens, &mut |d| {
                got.push(d.to_vec());
                true
            })
            .unwrap();
        assert_eq!(n, 4);
        // Each piece once, in order, with its bytes.
        let mut at = 10usize;
        for (d, &len) in got.iter().zip(&lens) {
            assert_eq!(&d[..], &data[at..at + len as usize]);
            at += len as usize;
        }
        assert_eq!(got.len(), 4);
        // The retry asked only for the two pieces that had not arrived.
        assert_eq!(*flaky.asked.lock(), vec![(10, 4), (310, 2)]);

        // Stopping early is no failure, and nothing more is read.
        let mut seen = 0;
        let n = store
            .get_ranges("o", 0, &lens, &mut |_| {
                seen += 1;
                false
            })
            .unwrap();
        assert_eq!((n, seen), (1, 1));
        // Past the end: an error, from the local store and the default.
        let long = [600u64, 600];
        assert!(flaky
            .inner
            .get_ranges("o", 0, &long, &mut |_| true)
            .is_err());
        assert!(store.get_ranges("o", 0, &long, &mut |_| true).is_err());
    }
}
