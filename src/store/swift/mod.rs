//! OpenStack Swift behind the object-store trait.
//!
//! URL forms:
//! - `swift://CONTAINER[/PREFIX]`, credentials from flags, `OS_*`,
//!   clouds.yaml or `ST_*` (see `creds`);
//! - S3QL's `swift://HOST[:PORT]/CONTAINER[/PREFIX]` (when no auth URL is
//!   configured): tempauth at `https://HOST[:PORT]/auth/v1.0`;
//! - S3QL's `swiftks://HOST[:PORT]/REGION:CONTAINER[/PREFIX]`: Keystone at
//!   `https://HOST[:PORT]/` (version discovered), region REGION; an
//!   `OS_AUTH_URL` wins over the derived one.
//!
//! Requests run on reqwest's blocking client (tokio underneath) with a
//! connection pool and a bound on parallel requests. Transient failures
//! come back as `StoreError::Transient` for the retry wrapper; a 401 gets
//! one retry with a fresh token here.

pub mod auth;
pub mod creds;

pub use creds::{Secret, SwiftFlags};

use super::{ListPage, ObjectInfo, ObjectStore, RangeSink, Result, StoreError};
use auth::{Auth, Token};
use md5::{Digest, Md5};
use parking_lot::{Condvar, Mutex};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Characters left as-is in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Same, but '/' kept: object names have slashes.
const OBJECT: &AsciiSet = &SEGMENT.remove(b'/');

pub const DEFAULT_CONNECTIONS: usize = 16;

/// Where a `swift://` URL points, once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    container: String,
    prefix: String,
    /// Settings the URL implies (S3QL forms).
    auth_url: Option<String>,
    auth_type: Option<String>,
    region: Option<String>,
}

fn parse_url(url: &str, have_auth: bool, no_ssl: bool) -> std::result::Result<Target, String> {
    let scheme = if no_ssl { "http" } else { "https" };
    let split_prefix = |rest: &str| -> (String, String) {
        match rest.split_once('/') {
            Some((c, p)) => {
                let p = p.trim_matches('/');
                (
                    c.to_string(),
                    if p.is_empty() {
                        String::new()
                    } else {
                        format!("{p}/")
                    },
                )
            }
            None => (rest.to_string(), String::new()),
        }
    };
    if let Some(rest) = url.strip_prefix("swiftks://") {
        let (host, rest) = rest
            .split_once('/')
            .ok_or("expected swiftks://HOST[:PORT]/REGION:CONTAINER[/PREFIX]")?;
        let (region, rest) = rest
            .split_once(':')
            .ok_or("expected swiftks://HOST[:PORT]/REGION:CONTAINER[/PREFIX]")?;
        let (container, prefix) = split_prefix(rest);
        return Ok(Target {
            container,
            prefix,
            auth_url: Some(format!("{scheme}://{host}/")),
            auth_type: None,
            region: Some(region.to_string()),
        });
    }
    let rest = url
        .strip_prefix("swift://")
        .ok_or("expected swift://CONTAINER[/PREFIX]")?;
    let first = rest.split('/').next().unwrap_or("");
    let hostlike = first.contains(':') || first.contains('.') || first == "localhost";
    if !have_auth && hostlike && rest.contains('/') {
        // S3QL's form: the authority is the Swift proxy with tempauth.
        let (host, rest) = rest.split_once('/').expect("checked");
        let (container, prefix) = split_prefix(rest);
        return Ok(Target {
            container,
            prefix,
            auth_url: Some(format!("{scheme}://{host}/auth/v1.0")),
            auth_type: Some("v1password".into()),
            region: None,
        });
    }
    let (container, prefix) = split_prefix(rest);
    Ok(Target {
        container,
        prefix,
        auth_url: None,
        auth_type: None,
        region: None,
    })
}

fn validate_container(c: &str) -> std::result::Result<(), String> {
    if c.is_empty() {
        return Err("no container name: swift://CONTAINER[/PREFIX]".into());
    }
    if c.len() > 256 {
        return Err("a Swift container name is at most 256 bytes".into());
    }
    Ok(())
}

/// A counting semaphore for the parallel-request bound.
#[derive(Debug)]
struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Permits);

/// Whether an MD5 ETag must guard the bytes in transit. Over TLS, every
/// record already carries a MAC, so hashing each object twice more (once
/// to send, once on arrival; about 1.3 CPU-seconds per GiB) buys nothing;
/// over plain HTTP only the ETag catches a body damaged on the way before
/// the cache drops its copy (blocks are authenticated when read, but by
/// then the damaged object is all there is).
fn md5_guards_transit(storage_url: &str) -> bool {
    !storage_url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

impl Permits {
    fn acquire(&self) -> Permit<'_> {
        let mut f = self.free.lock();
        while *f == 0 {
            self.cv.wait(&mut f);
        }
        *f -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.cv.notify_one();
    }
}

/// The account quota from an account HEAD's headers (`header(name)`).
pub fn account_capacity(header: &dyn Fn(&str) -> Option<String>) -> Option<crate::store::Capacity> {
    let num = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
    let quota_bytes = num("x-account-quota-bytes").or_else(|| num("x-account-meta-quota-bytes"))?;
    Some(crate::store::Capacity {
        quota_bytes,
        used_bytes: num("x-account-bytes-used").unwrap_or(0),
    })
}

/// What [`SwiftStore::probe`] measured.
#[derive(Debug, Clone)]
pub struct Probe {
    pub storage_url: String,
    pub latency: Duration,
    pub server_date: Option<std::time::SystemTime>,
}

#[derive(Debug)]
pub struct SwiftStore {
    display: String,
    container: String,
    prefix: String,
    client: Client,
    auth: Auth,
    permits: Permits,
    /// `max_deletes_per_request` when the cluster offers bulk delete.
    bulk_delete: OnceLock<Option<usize>>,
}

impl SwiftStore {
    pub fn open(url: &str, flags: &SwiftFlags) -> Result<SwiftStore> {
        Self::open_with_env(url, flags, &|k| std::env::var(k).ok())
    }

    pub fn open_with_env(
        url: &str,
        flags: &SwiftFlags,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SwiftStore> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let mut settings =
            creds::resolve(flags, get).map_err(|e| StoreError::Auth(e.to_string()))?;
        let have_auth = settings.auth_url.is_some() || settings.storage_url.is_some();
        let target = parse_url(url, have_auth, flags.no_ssl).map_err(bad)?;
        validate_container(&target.container).map_err(bad)?;
        if settings.auth_url.is_none() {
            settings.auth_url = target.auth_url.clone();
            if settings.auth_type.is_none() {
                settings.auth_type = target.auth_type.clone();
            }
        }
        if settings.region_name.is_none() {
            settings.region_name = target.region.clone();
        }
        let method = auth::method_for(&settings).map_err(StoreError::Auth)?;
        let mut builder = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("swiftgate/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.cacert {
            let pem = std::fs::read(ca).map_err(|e| {
                StoreError::Auth(format!(
                    "cannot read the CA certificate {}: {e}",
                    ca.display()
                ))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                StoreError::Auth(format!("{}: not a PEM certificate: {e}", ca.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Other(format!("cannot set up the HTTP client: {e}")))?;
        let where_ = match &method {
            auth::Method::Token { storage_url, .. } => storage_url.clone(),
            _ => settings.auth_url.clone().unwrap_or_default(),
        };
        let display_name = format!(
            "swift://{}{}",
            target.container,
            if target.prefix.is_empty() {
                String::new()
            } else {
                format!("/{}", target.prefix.trim_end_matches('/'))
            }
        );
        tracing::debug!(store = %display_name, via = %where_, sources = ?settings.sources, "Swift store configured");
        Ok(SwiftStore {
            display: display_name,
            container: target.container,
            prefix: target.prefix,
            client,
            auth: Auth::new(method, settings),
            permits: Permits {
                free: Mutex::new(flags.connections.unwrap_or(DEFAULT_CONNECTIONS).max(1)),
                cv: Condvar::new(),
            },
            bulk_delete: OnceLock::new(),
        })
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    /// One authenticated HEAD of the account (a fresh token if none is
    /// cached), for `swiftgate doctor`: proves the credentials and the
    /// storage endpoint, times the round trip and reads the server's
    /// `Date` (clock skew breaks token expiry and lease times).
    pub fn probe(&self) -> Result<Probe> {
        let started = std::time::Instant::now();
        let (resp, tok) = self.send("", &|c, t| c.head(&t.storage_url))?;
        let latency = started.elapsed();
        let date = resp
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        if !resp.status().is_success() {
            return Err(self.failure("", "HEAD account", resp, &tok));
        }
        Ok(Probe {
            storage_url: tok.storage_url.clone(),
            latency,
            server_date: date,
        })
    }

    fn container_url(&self, storage_url: &str) -> String {
        format!(
            "{storage_url}/{}",
            utf8_percent_encode(&self.container, SEGMENT)
        )
    }

    fn object_url(&self, storage_url: &str, key: &str) -> String {
        format!(
            "{}/{}",
            self.container_url(storage_url),
            utf8_percent_encode(&format!("{}{key}", self.prefix), OBJECT)
        )
    }

    fn transient(&self, key: &str, message: String, retry_after: Option<Duration>) -> StoreError {
        StoreError::Transient {
            store: self.display.clone(),
            key: key.to_string(),
            message,
            retry_after,
        }
    }

    /// Send a request built by `mk` with a valid token; a 401 gets one
    /// retry with a fresh token (shared by all threads that saw it).
    fn send(
        &self,
        key: &str,
        mk: &dyn Fn(&Client, &Token) -> RequestBuilder,
    ) -> Result<(Response, Arc<Token>)> {
        for attempt in 0..2 {
            let tok = self.auth.token(&self.client)?;
            let resp = mk(&self.client, &tok)
                .header("X-Auth-Token", tok.value.expose())
                .send()
                .map_err(|e| {
                    self.transient(
                        key,
                        format!(
                            "Swift at {} unreachable: {}",
                            tok.storage_url,
                            auth::cause(&e)
                        ),
                        None,
                    )
                })?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                tracing::info!("Swift answered 401: getting a new token");
                self.auth.invalidate(&tok);
                continue;
            }
            return Ok((resp, tok));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// A failed response as an error a user understands.
    fn failure(&self, key: &str, what: &str, resp: Response, tok: &Token) -> StoreError {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs)
                    .or_else(|| {
                        httpdate::parse_http_date(v)
                            .ok()
                            .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
                    })
            });
        let body: String = resp.text().unwrap_or_default().chars().take(200).collect();
        let body = body.trim();
        let who = self.auth.who();
        match status.as_u16() {
            401 => StoreError::Auth(format!(
                "Swift at {} rejected a fresh token of {who} (401) for {what} {key}",
                tok.storage_url
            )),
            403 => StoreError::Denied(format!(
                "{who} may not access container {} at {} (403 Forbidden on {what} {key})",
                self.container, tok.storage_url
            )),
            413 => StoreError::Quota(format!(
                "Swift refused to store {key} in container {} (413): the account or container quota is used up, or the object exceeds the cluster's max_file_size; free space or raise the quota",
                self.container
            )),
            404 if what == "PUT" => StoreError::Other(format!(
                "container {} does not exist at {} (create it with `swiftgate mkfs`)",
                self.container, tok.storage_url
            )),
            // 422: the body we sent did not match its ETag (damaged in
            // transit); 408/429/498 and 5xx: the cluster is busy or down.
            422 | 408 | 429 | 498 | 500..=599 => self.transient(
                key,
                format!("Swift answered {status} to {what}{}", if body.is_empty() { String::new() } else { format!(": {body}") }),
                retry_after,
            ),
            _ => StoreError::Other(format!(
                "Swift at {} answered {status} to {what} {key} in container {}{}",
                tok.storage_url,
                self.container,
                if body.is_empty() { String::new() } else { format!(": {body}") }
            )),
        }
    }

    /// PUT `body` (shared by a possible 401 retry: a clone is a
    /// reference, not a copy).
    fn upload(&self, key: &str, body: bytes::Bytes, if_absent: bool) -> Result<()> {
        let _p = self.permits.acquire();
        let etag = std::sync::OnceLock::new();
        let data = &body[..];
        let (resp, tok) = self.send(key, &|c, t| {
            let mut r = c
                .put(self.object_url(&t.storage_url, key))
                .header("Content-Type", "application/octet-stream")
                .body(reqwest::blocking::Body::from(body.clone()));
            if md5_guards_transit(&t.storage_url) {
                r = r.header("ETag", etag.get_or_init(|| hex::encode(Md5::digest(data))));
            }
            if if_absent {
                r = r.header("If-None-Match", "*");
            }
            r
        })?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::PRECONDITION_FAILED if if_absent => Err(StoreError::AlreadyExists {
                store: self.display.clone(),
                key: key.to_string(),
            }),
            _ => Err(self.failure(key, "PUT", resp, &tok)),
        }
    }

    /// A body to send: the ETag needs all of it before the request starts.
    fn buffer(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len as usize);
        body.take(len)
            .read_to_end(&mut buf)
            .map_err(|source| StoreError::Io {
                store: self.display.clone(),
                key: key.to_string(),
                cause: source,
            })?;
        Ok(buf)
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            store: self.display.clone(),
            key: key.to_string(),
        }
    }

    /// At most `max` bytes of a response body (the server's Content-Length
    /// is a hint, not a reason to allocate).
    fn read_body(&self, key: &str, mut resp: Response, max: u64) -> Result<Vec<u8>> {
        let expect = resp.content_length().unwrap_or(0);
        crate::store::read_bounded(
            &mut resp,
            expect,
            max,
            || StoreError::TooLarge {
                store: self.url(),
                key: key.to_string(),
                max,
            },
            |e| self.transient(key, format!("download interrupted: {e}"), None),
        )
    }

    /// Bulk delete support, asked once from the cluster's `/info`.
    fn bulk_limit(&self, tok: &Token) -> Option<usize> {
        *self.bulk_delete.get_or_init(|| {
            let root = match tok.storage_url.find("/v1/") {
                Some(i) => &tok.storage_url[..i],
                None => return None,
            };
            let info: serde_json::Value = self
                .client
                .get(format!("{root}/info"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| r.json().ok())?;
            let b = info.get("bulk_delete")?;
            Some(
                b.get("max_deletes_per_request")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(1000)
                    .clamp(1, 10_000) as usize,
            )
        })
    }

    fn bulk_delete_chunk(&self, keys: &[String]) -> Result<()> {
        let _p = self.permits.acquire();
        let body: String = keys
            .iter()
            .map(|k| {
                format!(
                    "/{}/{}\n",
                    utf8_percent_encode(&self.container, SEGMENT),
                    utf8_percent_encode(&format!("{}{k}", self.prefix), OBJECT)
                )
            })
            .collect();
        let (resp, tok) = self.send("(bulk delete)", &|c, t| {
            c.post(format!("{}?bulk-delete", t.storage_url))
                .header("Content-Type", "text/plain")
                .header("Accept", "application/json")
                .body(body.clone())
        })?;
        if !resp.status().is_success() {
            return Err(self.failure("(bulk delete)", "bulk DELETE", resp, &tok));
        }
        let doc: serde_json::Value = resp.json().map_err(|e| {
            self.transient(
                "(bulk delete)",
                format!("unreadable bulk delete answer: {e}"),
                None,
            )
        })?;
        let status = doc["Response Status"].as_str().unwrap_or("");
        let errors: Vec<String> = doc["Errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        if status.starts_with('2') && errors.is_empty() {
            return Ok(());
        }
        let msg = format!("bulk delete: {status}; {}", errors.join(", "));
        if status.starts_with('5') || status.is_empty() {
            Err(self.transient("(bulk delete)", msg, None))
        } else {
            Err(StoreError::Other(msg))
        }
    }
}

impl ObjectStore for SwiftStore {
    fn auth_state(&self) -> Option<crate::store::AuthState> {
        Some(self.auth.state())
    }
    /// HEAD of the account: its quota (Swift 2.34+ shows the sysmeta one
    /// as X-Account-Quota-Bytes; older ones the X-Account-Meta- form) and
    /// X-Account-Bytes-Used. An identity with only container rights gets
    /// 403 there: no figure, not an error.
    fn capacity(&self) -> Result<Option<crate::store::Capacity>> {
        let (resp, tok) = self.send("", &|c, t| c.head(&t.storage_url))?;
        if resp.status() == StatusCode::FORBIDDEN {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.failure("", "HEAD account", resp, &tok));
        }
        Ok(account_capacity(&|name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        }))
    }
    fn url(&self) -> String {
        self.display.clone()
    }

    fn put_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        let buf = self.buffer(key, len, body)?;
        self.upload(key, buf.into(), false)
    }

    fn create_stream(&self, key: &str, len: u64, body: &mut dyn Read) -> Result<()> {
        let buf = self.buffer(key, len, body)?;
        self.upload(key, buf.into(), true)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        // The request owns its body: one copy.
        self.upload(key, bytes::Bytes::copy_from_slice(data), false)
    }

    fn put_shared(&self, key: &str, data: &bytes::Bytes) -> Result<()> {
        self.upload(key, data.clone(), false)
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<()> {
        self.upload(key, bytes::Bytes::copy_from_slice(data), true)
    }

    fn prepare(&self) -> Result<()> {
        let _p = self.permits.acquire();
        let (resp, tok) = self.send("", &|c, t| c.head(self.container_url(&t.storage_url)))?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() != StatusCode::NOT_FOUND {
            return Err(self.failure("", "HEAD container", resp, &tok));
        }
        let (resp, tok) = self.send("", &|c, t| {
            c.put(self.container_url(&t.storage_url))
                .header("Content-Length", "0")
        })?;
        match resp.status() {
            s if s.is_success() => {
                tracing::info!(container = %self.container, "created the Swift container");
                Ok(())
            }
            StatusCode::FORBIDDEN => Err(StoreError::Denied(format!(
                "{} may not create container {} at {} (403); ask the cloud's admin for the object-store operator role, or create the container with a user who may",
                self.auth.who(),
                self.container,
                tok.storage_url
            ))),
            _ => Err(self.failure("", "PUT container", resp, &tok)),
        }
    }

    fn remove_container(&self) -> Result<()> {
        let _p = self.permits.acquire();
        let (resp, tok) = self.send("", &|c, t| c.delete(self.container_url(&t.storage_url)))?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.failure("", "DELETE container", resp, &tok)),
        }
    }

    fn get_max(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let _p = self.permits.acquire();
        let (resp, tok) = self.send(key, &|c, t| c.get(self.object_url(&t.storage_url, key)))?;
        match resp.status() {
            s if s.is_success() => {
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let data = self.read_body(key, resp, max)?;
                // Plain objects carry the md5 of their bytes as ETag
                // (quoted ones are manifests: no such check).
                let etag = etag.filter(|_| md5_guards_transit(&tok.storage_url));
                if let Some(e) = etag.filter(|e| e.len() == 32 && !e.starts_with('"')) {
                    if hex::encode(Md5::digest(&data)) != e.to_ascii_lowercase() {
                        return Err(self.transient(
                            key,
                            "downloaded bytes do not match the ETag (damaged in transit)".into(),
                            None,
                        ));
                    }
                }
                Ok(data)
            }
            StatusCode::NOT_FOUND => Err(self.not_found(key)),
            _ => Err(self.failure(key, "GET", resp, &tok)),
        }
    }

    fn get_ranges(
        &self,
        key: &str,
        offset: u64,
        lens: &[u64],
        each: RangeSink<'_>,
    ) -> Result<usize> {
        let total: u64 = lens.iter().sum();
        if total == 0 {
            return Ok(0);
        }
        let _p = self.permits.acquire();
        let range = format!("bytes={}-{}", offset, offset + total - 1);
        let (resp, tok) = self.send(key, &|c, t| {
            c.get(self.object_url(&t.storage_url, key))
                .header("Range", &range)
        })?;
        let mut body: Box<dyn Read> = match resp.status() {
            StatusCode::PARTIAL_CONTENT => Box::new(resp),
            // Some proxies ignore Range and send it all: skip to it.
            StatusCode::OK => {
                let mut r = resp;
                std::io::copy(&mut (&mut r).take(offset), &mut std::io::sink())
                    .map_err(|e| self.transient(key, format!("download interrupted: {e}"), None))?;
                Box::new(r)
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(StoreError::Other(format!(
                    "range {offset}+{total} is past the end of {key}"
                )))
            }
            StatusCode::NOT_FOUND => return Err(self.not_found(key)),
            _ => return Err(self.failure(key, "GET", resp, &tok)),
        };
        crate::store::read_ranges(
            &mut body,
            lens,
            each,
            |e| self.transient(key, format!("download interrupted: {e}"), None),
            |got| {
                self.transient(
                    key,
                    format!("range read ended after {got} of {total} bytes"),
                    None,
                )
            },
        )
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let _p = self.permits.acquire();
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let (resp, tok) = self.send(key, &|c, t| {
            c.get(self.object_url(&t.storage_url, key))
                .header("Range", &range)
        })?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let data = self.read_body(key, resp, len)?;
                if data.len() as u64 != len {
                    return Err(self.transient(
                        key,
                        format!("range read returned {} bytes, expected {len}", data.len()),
                        None,
                    ));
                }
                Ok(data)
            }
            // Some proxies ignore Range and send it all.
            StatusCode::OK => {
                // Only the part up to the range's end is read.
                let mut data = Vec::new();
                resp.take(offset + len)
                    .read_to_end(&mut data)
                    .map_err(|e| self.transient(key, format!("download interrupted: {e}"), None))?;
                let end = (offset + len).min(data.len() as u64);
                if offset + len > data.len() as u64 {
                    return Err(StoreError::Other(format!(
                        "range {offset}+{len} is past the end of {key} ({} bytes)",
                        data.len()
                    )));
                }
                Ok(data[offset as usize..end as usize].to_vec())
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Err(StoreError::Other(format!(
                "range {offset}+{len} is past the end of {key}"
            ))),
            StatusCode::NOT_FOUND => Err(self.not_found(key)),
            _ => Err(self.failure(key, "GET", resp, &tok)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let _p = self.permits.acquire();
        let (resp, tok) = self.send(key, &|c, t| c.head(self.object_url(&t.storage_url, key)))?;
        match resp.status() {
            s if s.is_success() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            })),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure(key, "HEAD", resp, &tok)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let _p = self.permits.acquire();
        let (resp, tok) = self.send(key, &|c, t| c.delete(self.object_url(&t.storage_url, key)))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.failure(key, "DELETE", resp, &tok)),
        }
    }

    fn delete_many(&self, keys: &[String]) -> Result<()> {
        if keys.len() > 1 {
            let tok = self.auth.token(&self.client)?;
            if let Some(max) = self.bulk_limit(&tok) {
                for chunk in keys.chunks(max) {
                    self.bulk_delete_chunk(chunk)?;
                }
                return Ok(());
            }
        }
        for k in keys {
            self.delete(k)?;
        }
        Ok(())
    }

    fn list(&self, prefix: &str, marker: Option<&str>, limit: usize) -> Result<ListPage> {
        let _p = self.permits.acquire();
        let limit = limit.clamp(1, 10_000);
        let full_prefix = format!("{}{prefix}", self.prefix);
        let full_marker = marker.map(|m| format!("{}{m}", self.prefix));
        let (resp, tok) = self.send(prefix, &|c, t| {
            let mut q: Vec<(&str, String)> = vec![
                ("format", "json".into()),
                ("prefix", full_prefix.clone()),
                ("limit", limit.to_string()),
            ];
            if let Some(m) = &full_marker {
                q.push(("marker", m.clone()));
            }
            c.get(self.container_url(&t.storage_url)).query(&q)
        })?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NO_CONTENT => return Ok(ListPage::default()),
            StatusCode::NOT_FOUND => {
                return Err(StoreError::Other(format!(
                "container {} does not exist at {} (create the filesystem with `swiftgate mkfs`)",
                self.container, tok.storage_url
            )))
            }
            _ => return Err(self.failure(prefix, "GET container", resp, &tok)),
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            name: Option<String>,
            bytes: Option<u64>,
        }
        let entries: Vec<Entry> = resp
            .json()
            .map_err(|e| self.transient(prefix, format!("unreadable listing: {e}"), None))?;
        let full = entries.len() >= limit;
        let mut last = None;
        let mut objects = Vec::with_capacity(entries.len());
        for e in entries {
            let Some(name) = e.name else { continue };
            last = Some(name.clone());
            if let Some(k) = name.strip_prefix(&self.prefix) {
                objects.push(ObjectInfo {
                    key: k.to_string(),
                    size: e.bytes.unwrap_or(0),
                });
            }
        }
        let next_marker = if full {
            last.and_then(|l| l.strip_prefix(&self.prefix).map(str::to_string))
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_marker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_only_where_nothing_else_guards_transit() {
        assert!(md5_guards_transit("http://127.0.0.1:8080/v1/AUTH_x"));
        assert!(!md5_guards_transit("https://object.c3j1.conoha.io/v1/nc_x"));
        assert!(!md5_guards_transit("HTTPS://swift.example/v1/AUTH_x"));
        assert!(md5_guards_transit("http"));
    }

    #[test]
    fn account_quota_headers() {
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = account_capacity(&h(&[
            ("x-account-quota-bytes", "1000"),
            ("x-account-meta-quota-bytes", "5"),
            ("x-account-bytes-used", "250"),
        ]))
        .unwrap();
        assert_eq!((c.quota_bytes, c.used_bytes), (1000, 250));
        // The legacy metadata form, before Swift 2.34.
        let c = account_capacity(&h(&[("x-account-meta-quota-bytes", "5")])).unwrap();
        assert_eq!((c.quota_bytes, c.used_bytes), (5, 0));
        assert!(account_capacity(&h(&[("x-account-bytes-used", "9")])).is_none());
        assert!(account_capacity(&h(&[("x-account-quota-bytes", "lots")])).is_none());
    }

    #[test]
    fn url_forms() {
        let t = parse_url("swift://home-alice", true, false).unwrap();
        assert_eq!(
            (t.container.as_str(), t.prefix.as_str()),
            ("home-alice", "")
        );
        let t = parse_url("swift://c/some/prefix/", true, false).unwrap();
        assert_eq!(
            (t.container.as_str(), t.prefix.as_str()),
            ("c", "some/prefix/")
        );
        // With credentials configured, a dotted first part is a container.
        let t = parse_url("swift://backup.2024/x", true, false).unwrap();
        assert_eq!(t.container, "backup.2024");
        assert_eq!(t.auth_url, None);
        // Without, it is S3QL's HOST/CONTAINER form.
        let t = parse_url("swift://swift.example.com:8080/c/p", false, false).unwrap();
        assert_eq!(
            t.auth_url.as_deref(),
            Some("https://swift.example.com:8080/auth/v1.0")
        );
        assert_eq!((t.container.as_str(), t.prefix.as_str()), ("c", "p/"));
        let t = parse_url("swift://127.0.0.1:8080/c", false, true).unwrap();
        assert_eq!(
            t.auth_url.as_deref(),
            Some("http://127.0.0.1:8080/auth/v1.0")
        );
        let t = parse_url(
            "swiftks://identity.example.com/tyo1:mycont/pre",
            false,
            false,
        )
        .unwrap();
        assert_eq!(t.region.as_deref(), Some("tyo1"));
        assert_eq!(t.auth_url.as_deref(), Some("https://identity.example.com/"));
        assert_eq!(
            (t.container.as_str(), t.prefix.as_str()),
            ("mycont", "pre/")
        );
        assert!(parse_url("swiftks://h/nocolon", false, false).is_err());
    }

    #[test]
    fn object_names_are_encoded() {
        let flags = SwiftFlags::default();
        let env = |k: &str| match k {
            "OS_STORAGE_URL" => Some("http://h/v1/AUTH_x".to_string()),
            "OS_AUTH_TOKEN" => Some("tok".to_string()),
            _ => None,
        };
        let s = SwiftStore::open_with_env("swift://my cont/p q", &flags, &env).unwrap();
        assert_eq!(
            s.object_url("http://h/v1/AUTH_x", "data/00/x"),
            "http://h/v1/AUTH_x/my%20cont/p%20q/data/00/x"
        );
        assert!(!format!("{s:?}").contains("tok\""));
    }

    #[test]
    fn missing_credentials_say_what_to_do() {
        let e = SwiftStore::open_with_env("swift://c", &SwiftFlags::default(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("openrc") && e.contains("clouds.yaml"), "{e}");
    }
}
