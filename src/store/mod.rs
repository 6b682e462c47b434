//! Object-store layer: the trait every backend implements, plus wrappers.
//!
//! The trait mirrors what Swift offers (PUT with known length, ranged GET,
//! HEAD, DELETE, bulk delete, paginated LIST, `If-None-Match: *` create) so
//! the Swift backend can be a thin mapping. It is synchronous: callers are
//! FUSE worker threads and upload threads, never an async executor.

pub mod fault;
pub mod local;
pub mod metered;
pub mod retry;
pub mod swift;

use std::io::Read;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found in {store}")]
    NotFound { store: String, key: String },
    #[error("object {key} already exists in {store}")]
    AlreadyExists { store: String, key: String },
    #[error("I/O error on {store} ({key}): {cause}")]
    Io {
        store: String,
        key: String,
        cause: std::io::Error,
    },
    /// A failure worth retrying (connection reset, 5xx, throttling, injected fault).
    #[error("{}{message}", context(store, key))]
    Transient {
        store: String,
        key: String,
        message: String,
        /// What the server asked for (`Retry-After`), if anything.
        retry_after: Option<std::time::Duration>,
    },
    /// Credentials rejected or unusable; retrying will not help.
    #[error("{0}")]
    Auth(String),
    /// Authenticated, but not allowed (HTTP 403).
    #[error("{0}")]
    Denied(String),
    /// The store refuses more data (quota, object too large).
    #[error("{0}")]
    Quota(String),
    /// An object larger than anything swiftgate writes under that name: a
    /// damaged or tampered store. Never read into memory whole.
    #[error("object {key} in {store} is larger than the {max} bytes swiftgate ever writes there; the store may be damaged or tampered with")]
    TooLarge {
        store: String,
        key: String,
        max: u64,
    },
    #[error("invalid store URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{0}")]
    Other(String),
}

fn context(store: &str, key: &str) -> String {
    match (store.is_empty(), key.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!("{store}: "),
        (false, false) => format!("{store} ({key}): "),
    }
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Transient { .. } => true,
            // Local disk errors such as EIO may clear up; ENOSPC etc. will not.
            StoreError::Io { cause: source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The largest object swiftgate reads whole (a metadata snapshot: its
/// record length is a u32, plus header). Swift's own limit is 5 GiB.
pub const MAX_OBJECT: u64 = (4 << 30) + (1 << 20);

/// Read at most `max` bytes of `body`; more is [`StoreError::TooLarge`].
/// `expect` (a Content-Length, say) sizes the buffer, never beyond 64 MiB
/// up front: a claim is not a reason to allocate.
pub fn read_bounded(
    body: &mut dyn Read,
    expect: u64,
    max: u64,
    too_large: impl FnOnce() -> StoreError,
    io: impl FnOnce(std::io::Error) -> StoreError,
) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(expect.min(max).min(64 << 20) as usize);
    body.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > max {
        return Err(too_large());
    }
    Ok(buf)
}

/// Where [`ObjectStore::get_ranges`] hands each range; false stops it.
pub type RangeSink<'a> = &'a mut dyn FnMut(&mut [u8]) -> bool;

/// Read consecutive pieces of `lens` bytes from `body` into `each`, all
/// through one buffer sized by what was asked for (never by what a server
/// claims) and reused piece after piece: a fresh multi-MiB buffer per
/// piece costs more in page faults and zeroing than the bytes' copy.
/// A body that ends early is `short(bytes read in all)`.
pub fn read_ranges(
    body: &mut dyn Read,
    lens: &[u64],
    each: RangeSink<'_>,
    io: impl Fn(std::io::Error) -> StoreError,
    short: impl Fn(u64) -> StoreError,
) -> Result<usize> {
    let mut buf = Vec::new();
    let mut n = 0;
    for &len in lens {
        let len = len as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let piece = &mut buf[..len];
        let mut got = 0;
        while got < len {
            match body.read(&mut piece[got..]) {
                Ok(0) => {
                    return Err(short(lens[..n].iter().sum::<u64>() + got as u64));
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        n += 1;
        if !each(piece) {
            break;
        }
    }
    Ok(n)
}

/// Hand `data` (read from `offset` of `key`) to `each` in pieces of
/// `lens` bytes: [`ObjectStore::get_ranges`] for a store that reads the
/// whole span at once.
pub fn split_ranges(
    mut data: Vec<u8>,
    key: &str,
    offset: u64,
    lens: &[u64],
    each: RangeSink<'_>,
) -> Result<usize> {
    // Handed out where they lie in `data`: no copy.
    let mut at = 0usize;
    let mut n = 0;
    for &len in lens {
        let end = at.saturating_add(len as usize);
        let Some(piece) = data.get_mut(at..end) else {
            let total: u64 = lens.iter().sum();
            return Err(StoreError::Other(format!(
                "range {offset}+{total} is past the end of {key}"
            )));
        };
        at = end;
        n += 1;
        if !each(piece) {
            break;
        }
    }
    Ok(n)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// Pass as `marker` to get the next page; `None` when this was the last.
    pub next_marker: Option<String>,
}

pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Human-readable location, used in messages ("local:///srv/x").
    fn url(&self) -> String;
    /// Store `len` bytes read from `body` under `key`, replacing any object.
    fn put_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()>;
    /// Like `put_stream` but fails with `AlreadyExists` if `key` exists.
    fn create_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()>;
    /// The whole object, refused ([`StoreError::TooLarge`]) past `max`
    /// bytes without reading more than that.
    fn get_max(&self, key: &str, max: u64) -> Result<Vec<u8>>;
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.get_max(key, MAX_OBJECT)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// The consecutive ranges of `lens` bytes from `offset` on, in one
    /// request: each is handed to `each` as soon as it has arrived, so the
    /// first can be used while the rest stream in. `each` returns false
    /// to stop early. Returns how many were handed over (all of them, or
    /// fewer when stopped); a failure midway leaves the rest undelivered.
    fn get_ranges(
        &self,
        key: &str,
        offset: u64,
        lens: &[u64],
        each: RangeSink<'_>,
    ) -> Result<usize> {
        let data = self.get_range(key, offset, lens.iter().sum())?;
        split_ranges(data, key, offset, lens, each)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;
    /// Deleting a missing object is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        for k in keys {
            self.delete(k)?;
        }
        Ok(())
    }
    /// Keys starting with `prefix`, sorted, strictly after `marker`.
    fn list(&self, prefix: &str, marker: Option<&str>, limit: usize) -> Result<ListPage>;

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_stream(key, data.len() as u64, &mut &data[..])
    }
    /// [`put`](Self::put) of bytes the caller keeps a handle on: a store
    /// whose requests must own their body (Swift) shares them instead of
    /// copying, and the caller can take the buffer back afterwards.
    fn put_shared(&self, key: &str, data: &bytes::Bytes) -> Result<()> {
        self.put(key, data)
    }
    /// Make the store ready to hold a new filesystem (Swift: create the
    /// container). Called by mkfs only.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }
    fn create(&self, key: &str, data: &[u8]) -> Result<()> {
        self.create_stream(key, data.len() as u64, &mut &data[..])
    }
    /// Remove the container (Swift) or directory (local) once it is
    /// empty: undoing a `prepare` for a filesystem that was never kept.
    fn remove_container(&self) -> Result<()> {
        Ok(())
    }
    /// How the store authenticates and how long its token has left (for
    /// health pages); None: no authentication (a local store).
    fn auth_state(&self) -> Option<AuthState> {
        None
    }
    /// The account's quota and use, if the store has one (Swift's
    /// account quota); None: no limit known. One request: callers cache.
    fn capacity(&self) -> Result<Option<Capacity>> {
        Ok(None)
    }
    /// All keys under `prefix`, following pagination. Listings may be
    /// eventually consistent on Swift: only fsck and GC hints rely on them.
    fn list_all(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self.list(prefix, marker.as_deref(), 1000)?;
            out.extend(page.objects);
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => return Ok(out),
            }
        }
    }
}

pub type DynStore = Arc<dyn ObjectStore>;

/// An account's limit and use in stored (physical) bytes, as the store
/// reports them (Swift: eventually consistent, shared by every container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub quota_bytes: u64,
    pub used_bytes: u64,
}

/// Read-only view of a store's authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthState {
    /// "keystone v3", "keystone v2", "application credential", "tempauth", "token".
    pub method: String,
    /// Seconds left on the current token (None: no token yet, or no stated
    /// lifetime); negative once expired.
    pub token_expires_in_secs: Option<i64>,
}

/// Open a store from its URL with credentials from the environment only.
pub fn open(url: &str) -> Result<DynStore> {
    open_with(url, &OpenOptions::default())
}

/// How to reach a store beyond its URL: Swift credentials and limits.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub swift: swift::SwiftFlags,
    /// Take credentials from `swift` only, not from `OS_*`/`ST_*`/clouds.yaml
    /// (a gateway opening one user's store with that user's identity).
    pub ignore_env: bool,
}

/// Open a store from its URL: `local:///abs/path`, `swift://CONTAINER[/PREFIX]`
/// (or S3QL's `swift://HOST[:PORT]/CONTAINER[/PREFIX]` and
/// `swiftks://HOST[:PORT]/REGION:CONTAINER[/PREFIX]`).
pub fn open_with(url: &str, opts: &OpenOptions) -> Result<DynStore> {
    let bad = |reason: &str| StoreError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let store: DynStore = if let Some(rest) = url.strip_prefix("local://") {
        if !rest.starts_with('/') {
            return Err(bad(
                "a local store needs an absolute path: local:///srv/swiftgate/store",
            ));
        }
        Arc::new(local::LocalStore::open(rest)?)
    } else if url.starts_with("swift://") || url.starts_with("swiftks://") {
        if opts.ignore_env {
            Arc::new(swift::SwiftStore::open_with_env(url, &opts.swift, &|_| {
                None
            })?)
        } else {
            Arc::new(swift::SwiftStore::open(url, &opts.swift)?)
        }
    } else {
        return Err(bad(
            "expected local:///absolute/path or swift://CONTAINER[/PREFIX]",
        ));
    };
    // Test hook: SWIFTGATE_FAULTS injects failures into a running mount.
    let store = match std::env::var("SWIFTGATE_FAULTS") {
        Ok(spec) if !spec.is_empty() => {
            let cfg = fault::FaultConfig::parse(&spec).map_err(|e| bad(&e))?;
            Arc::new(fault::FaultStore::new(store, cfg)) as DynStore
        }
        _ => store,
    };
    Ok(Arc::new(retry::RetryStore::new(
        store,
        retry::RetryPolicy::default(),
    )))
}
