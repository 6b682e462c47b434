//! Fault injection for tests: errors, latency and truncated uploads that a
//! real server cannot be made to produce on demand.

use super::{ListPage, ObjectInfo, ObjectStore, RangeSink, Result, StoreError};
use parking_lot::Mutex;
use rand::Rng;
use std::io::Read;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Probability (0..1) that any call fails with a transient error.
    pub error_rate: f64,
    /// Added to every call.
    pub latency: Duration,
    /// Uploads abort (transient error) after this many body bytes.
    pub fail_after_bytes: Option<u64>,
    /// Every call fails while set (simulates an outage).
    pub down: bool,
    /// An upload that reached the store does not return while this is
    /// set, and then fails: it freezes the caller between the PUT and
    /// what it does next, as a crash there would (tests restart the
    /// caller meanwhile, then clear it to let the frozen thread go).
    pub stall_after_put: bool,
    /// An upload reaches the store and then fails anyway, as when the
    /// reply is lost in an outage: the caller cannot know it landed.
    pub lose_put_reply: bool,
    /// Added to every read of a data object (blocks): a slow store as
    /// readers see it, with the metadata's own traffic left fast.
    pub data_get_latency: Duration,
}

impl FaultConfig {
    /// `error_rate=0.1,latency_ms=5,fail_after_bytes=1000,down=1`
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        let mut c = FaultConfig::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("fault spec {part:?}: expected key=value"))?;
            let bad = || format!("fault spec {part:?}: bad value");
            match k {
                "error_rate" => c.error_rate = v.parse().map_err(|_| bad())?,
                "latency_ms" => c.latency = Duration::from_millis(v.parse().map_err(|_| bad())?),
                "fail_after_bytes" => c.fail_after_bytes = Some(v.parse().map_err(|_| bad())?),
                "down" => c.down = v == "1" || v == "true",
                "stall_after_put" => c.stall_after_put = v == "1" || v == "true",
                "lose_put_reply" => c.lose_put_reply = v == "1" || v == "true",
                "data_get_latency_ms" => {
                    c.data_get_latency = Duration::from_millis(v.parse().map_err(|_| bad())?)
                }
                _ => return Err(format!("fault spec: unknown key {k:?}")),
            }
        }
        Ok(c)
    }
}

#[derive(Debug)]
pub struct FaultStore {
    inner: super::DynStore,
    pub config: Mutex<FaultConfig>,
    /// Uploads that stored their object and are (or were) frozen by
    /// `stall_after_put`.
    pub stalled: std::sync::atomic::AtomicU64,
    /// Ranged reads asked for (each one request to a real store).
    pub range_gets: std::sync::atomic::AtomicU64,
    /// Uploads stored whose reply `lose_put_reply` turned into an error.
    pub lost_replies: std::sync::atomic::AtomicU64,
}

impl FaultStore {
    pub fn new(inner: super::DynStore, config: FaultConfig) -> Self {
        FaultStore {
            inner,
            config: Mutex::new(config),
            stalled: Default::default(),
            range_gets: Default::default(),
            lost_replies: Default::default(),
        }
    }

    fn before(&self, key: &str) -> Result<()> {
        let c = self.config.lock().clone();
        if !c.latency.is_zero() {
            std::thread::sleep(c.latency);
        }
        if c.down || (c.error_rate > 0.0 && rand::thread_rng().gen_bool(c.error_rate.min(1.0))) {
            return Err(StoreError::Transient {
                store: self.url(),
                key: key.to_string(),
                message: "injected fault".into(),
                retry_after: None,
            });
        }
        Ok(())
    }

    fn before_get(&self, key: &str) -> Result<()> {
        let slow = self.config.lock().data_get_latency;
        if !slow.is_zero() && key.starts_with("data/") {
            std::thread::sleep(slow);
        }
        self.before(key)
    }

    fn upload(
        &self,
        key: &str,
        len: u64,
        body: &mut dyn Read,
        f: impl FnOnce(&mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        self.before(key)?;
        let limit = self.config.lock().fail_after_bytes;
        match limit {
            Some(n) if n < len => {
                // Consume part of the body as a real aborted upload would.
                let mut sink = Vec::new();
                let _ = body.take(n).read_to_end(&mut sink);
                Err(StoreError::Transient {
                    store: self.url(),
                    key: key.to_string(),
                    message: format!("injected connection reset after {n} bytes"),
                    retry_after: None,
                })
            }
            _ => {
                f(body)?;
                if self.config.lock().lose_put_reply {
                    self.lost_replies
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return Err(StoreError::Transient {
                        store: self.url(),
                        key: key.to_string(),
                        message: "injected: the upload was stored but its reply was lost".into(),
                        retry_after: None,
                    });
                }
                if !self.config.lock().stall_after_put {
                    return Ok(());
                }
                self.stalled
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while self.config.lock().stall_after_put {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(StoreError::Transient {
                    store: self.url(),
                    key: key.to_string(),
                    message: "injected: the caller stalled after its upload was stored".into(),
                    retry_after: None,
                })
            }
        }
    }
}

impl ObjectStore for FaultStore {
    fn auth_state(&self) -> Option<super::AuthState> {
        self.inner.auth_state()
    }
    fn capacity(&self) -> Result<Option<super::Capacity>> {
        self.inner.capacity()
    }
    fn url(&self) -> String {
        self.inner.url()
    }
    fn prepare(&self) -> Result<()> {
        self.inner.prepare()
    }
    fn remove_container(&self) -> Result<()> {
        self.inner.remove_container()
    }
    fn put_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        self.upload(key, len, body, |b| self.inner.put_stream(key, len, b))
    }
    fn create_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        self.upload(key, len, body, |b| self.inner.create_stream(key, len, b))
    }
    fn get_max(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        self.before_get(key)?;
        self.inner.get_max(key, max)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.range_gets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.before_get(key)?;
        self.inner.get_range(key, offset, len)
    }
    fn get_ranges(
        &self,
        key: &str,
        offset: u64,
        lens: &[u64],
        each: RangeSink<'_>,
    ) -> Result<usize> {
        self.range_gets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.before_get(key)?;
        self.inner.get_ranges(key, offset, lens, each)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.before(key)?;
        self.inner.head(key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.before(key)?;
        self.inner.delete(key)
    }
    fn list(&self, prefix: &str, marker: Option<&str>, limit: usize) -> Result<ListPage> {
        self.before(prefix)?;
        self.inner.list(prefix, marker, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::FaultConfig;

    #[test]
    fn spec_parses_every_key_and_refuses_unknown_ones() {
        let c = FaultConfig::parse(
            "error_rate=0.5,latency_ms=7,fail_after_bytes=9,down=1,stall_after_put=1,lose_put_reply=1,data_get_latency_ms=3",
        )
        .unwrap();
        assert!(c.lose_put_reply);
        assert_eq!(c.error_rate, 0.5);
        assert_eq!(c.latency.as_millis(), 7);
        assert_eq!(c.fail_after_bytes, Some(9));
        assert!(c.down && c.stall_after_put);
        assert_eq!(c.data_get_latency.as_millis(), 3);
        assert!(FaultConfig::parse("stall=1").is_err());
    }
}
