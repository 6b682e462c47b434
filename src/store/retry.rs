//! Retries transient failures with exponential backoff and jitter.

use super::{ListPage, ObjectInfo, ObjectStore, Result};
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
