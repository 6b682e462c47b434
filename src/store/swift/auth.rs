//! Getting a token and a storage URL: Keystone v3 (password, application
//! credential), Keystone v2.0 (password), tempauth (v1), or a token the
//! caller already has. Tokens are cached and refreshed before they expire;
//! one refresh serves every thread that needed it.

use super::creds::{Secret, Settings};
use crate::store::StoreError;
use parking_lot::Mutex;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A token and where to use it.
#[derive(Debug)]
pub struct Token {
    pub value: Secret,
    pub storage_url: String,
    /// Local deadline, computed from the server's stated lifetime so that
    /// clock skew between us and Keystone does not matter.
    pub deadline: Option<Instant>,
    pub lifetime: Option<Duration>,
}

impl Token {
    fn needs_refresh(&self) -> bool {
        match (self.deadline, self.lifetime) {
            (Some(d), Some(l)) => {
                // Refresh a quarter-life early (at most 5 min) so requests in
                // flight never carry a token that dies on the way.
                let margin = (l / 4).min(Duration::from_secs(300));
                Instant::now() + margin >= d
            }
            _ => false,
        }
    }
    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityVersion {
    V2,
    V3,
}

/// How to authenticate, decided once from the settings.
#[derive(Debug, Clone)]
pub enum Method {
    TempAuth {
        url: String,
        user: String,
        key: Secret,
    },
    Password {
        url: String,
        version: Option<IdentityVersion>,
    },
    AppCredential {
        url: String,
    },
    /// A pre-authenticated token with its storage URL; `fallback` is used
    /// once Swift rejects the token.
    Token {
        token: Secret,
        storage_url: String,
        fallback: Option<Box<Method>>,
    },
}

fn version_from_url(url: &str) -> Option<IdentityVersion> {
    let path = url
        .split("://")
        .nth(1)
        .and_then(|r| r.find('/').map(|i| &r[i..]))
        .unwrap_or("");
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if last.starts_with("v3") {
        Some(IdentityVersion::V3)
    } else if last.starts_with("v2") {
        Some(IdentityVersion::V2)
    } else {
        None
    }
}

fn looks_like_tempauth(url: &str) -> bool {
    let u = url.trim_end_matches('/');
    u.ends_with("/auth/v1.0") || u.ends_with("/v1.0") || u.ends_with("/auth/v1")
}

/// Settings → method, or a message saying what is missing and where to set it.
pub fn method_for(s: &Settings) -> Result<Method, String> {
    let auth_type = s.auth_type.as_deref().map(|t| t.to_ascii_lowercase());
    let from_creds = || -> Result<Option<Method>, String> {
        let Some(url) = s.auth_url.clone() else {
            return Ok(None);
        };
        let forced = match s.identity_api_version.as_deref().map(str::trim) {
            Some("2") | Some("2.0") => Some(IdentityVersion::V2),
            Some("3") | Some("3.0") => Some(IdentityVersion::V3),
            Some(v) => {
                return Err(format!(
                    "identity API version {v:?} is not supported (use 3 or 2.0)"
                ))
            }
            None => None,
        };
        let m = match auth_type.as_deref() {
            Some("v1password") | Some("tempauth") | Some("v1") => Method::TempAuth {
                user: s.username.clone().ok_or("tempauth needs a user: set ST_USER (account:user) or OS_USERNAME")?,
                key: s.password.clone().ok_or("tempauth needs a key: set ST_KEY or OS_PASSWORD")?,
                url,
            },
            Some("v3applicationcredential") | Some("applicationcredential") => {
                Method::AppCredential { url }
            }
            Some("v3password") => Method::Password {
                url,
                version: Some(IdentityVersion::V3),
            },
            Some("v2password") => Method::Password {
                url,
                version: Some(IdentityVersion::V2),
            },
            Some("password") | None => {
                if s.application_credential_secret.is_some()
                    && s.password.is_none()
                    && auth_type.is_none()
                {
                    Method::AppCredential { url }
                } else if auth_type.is_none() && looks_like_tempauth(&url) {
                    Method::TempAuth {
                        user: s.username.clone().ok_or("tempauth needs a user: set ST_USER (account:user) or OS_USERNAME")?,
                        key: s.password.clone().ok_or("tempauth needs a key: set ST_KEY or OS_PASSWORD")?,
                        url,
                    }
                } else {
                    Method::Password {
                        version: forced.or_else(|| version_from_url(&url)),
                        url,
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "auth type {other:?} is not supported; use password, v3password, v2password, v3applicationcredential or v1password (tempauth)"
                ))
            }
        };
        match &m {
            Method::Password { .. } => {
                if s.username.is_none() && s.user_id.is_none() {
                    return Err(
                        "Keystone password auth needs a user: set OS_USERNAME or OS_USER_ID".into(),
                    );
                }
                if s.password.is_none() {
                    return Err("Keystone password auth needs a password: set OS_PASSWORD (or --os-password-file)".into());
                }
            }
            Method::AppCredential { .. } => {
                if s.application_credential_secret.is_none() {
                    return Err(
                        "application credential auth needs OS_APPLICATION_CREDENTIAL_SECRET".into(),
                    );
                }
                if s.application_credential_id.is_none()
                    && (s.application_credential_name.is_none()
                        || (s.username.is_none() && s.user_id.is_none()))
                {
                    return Err("application credential auth needs OS_APPLICATION_CREDENTIAL_ID, or its name with OS_USERNAME/OS_USER_ID".into());
                }
            }
            _ => {}
        }
        Ok(Some(m))
    };
    match (&s.auth_token, &s.storage_url) {
        (Some(tok), Some(url)) => Ok(Method::Token {
            token: tok.clone(),
            storage_url: url.clone(),
            fallback: from_creds()?.map(Box::new),
        }),
        _ => from_creds()?.ok_or_else(|| {
            "no Swift credentials: source your cloud's openrc file (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME ...), or use --os-cloud NAME with a clouds.yaml, or set ST_AUTH/ST_USER/ST_KEY for tempauth, or OS_STORAGE_URL with OS_AUTH_TOKEN".to_string()
        }),
    }
}

/// The token cache in front of a method.
#[derive(Debug)]
pub struct Auth {
    method: Method,
    settings: Settings,
    current: Mutex<Option<Arc<Token>>>,
    refresh: Mutex<()>,
    preauth_rejected: AtomicBool,
}

fn transient(what: String) -> StoreError {
    StoreError::Transient {
        store: String::new(),
        key: String::new(),
        message: what,
        retry_after: None,
    }
}

/// A reqwest error with its causes ("connection refused"), no secrets:
/// tokens travel in headers, never in URLs.
pub fn cause(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(s) = src {
        let m = s.to_string();
        if m != last {
            out.push_str(": ");
            out.push_str(&m);
            last = m;
        }
        src = s.source();
    }
    out
}

impl Auth {
    pub fn new(method: Method, settings: Settings) -> Self {
        Auth {
            method,
            settings,
            current: Mutex::new(None),
            refresh: Mutex::new(()),
            preauth_rejected: AtomicBool::new(false),
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The method's name and the current token's remaining life, read
    /// without contacting anyone.
    pub fn state(&self) -> crate::store::AuthState {
        let method = match &self.method {
            Method::TempAuth { .. } => "tempauth",
            Method::Password {
                version: Some(IdentityVersion::V2),
                ..
            } => "keystone v2",
            Method::Password { .. } => "keystone v3",
            Method::AppCredential { .. } => "keystone application credential",
            Method::Token { .. } => "token",
        };
        let left = self.current.lock().as_ref().and_then(|t| {
            let d = t.deadline?;
            let now = Instant::now();
            Some(if d >= now {
                (d - now).as_secs() as i64
            } else {
                -((now - d).as_secs() as i64)
            })
        });
        crate::store::AuthState {
            method: method.into(),
            token_expires_in_secs: left,
        }
    }

    /// "user alice in project alice-project", for messages.
    pub fn who(&self) -> String {
        let s = &self.settings;
        match &self.method {
            Method::TempAuth { user, .. } => format!("user {user}"),
            Method::Token { fallback: None, .. } => "the holder of the given token".into(),
            Method::AppCredential { .. } => format!(
                "application credential {}",
                s.application_credential_id
                    .clone()
                    .or_else(|| s.application_credential_name.clone())
                    .unwrap_or_default()
            ),
            _ => {
                let user = s
                    .username
                    .clone()
                    .or_else(|| s.user_id.clone())
                    .unwrap_or_else(|| "?".into());
                match s.project_name.clone().or_else(|| s.project_id.clone()) {
                    Some(p) => format!("user {user} in project {p}"),
                    None => format!("user {user}"),
                }
            }
        }
    }

    /// A valid token, refreshing it if it is close to expiry.
    pub fn token(&self, client: &Client) -> Result<Arc<Token>, StoreError> {
        if let Some(t) = self.current.lock().clone() {
            if !t.needs_refresh() {
                return Ok(t);
            }
        }
        let _one = self.refresh.lock();
        let cur = self.current.lock().clone();
        if let Some(t) = &cur {
            if !t.needs_refresh() {
                return Ok(t.clone()); // another thread refreshed meanwhile
            }
        }
        match self.authenticate(client) {
            Ok(t) => {
                let t = Arc::new(t);
                *self.current.lock() = Some(t.clone());
                Ok(t)
            }
            // Keystone down while the old token still has life in it:
            // keep using it rather than failing requests early.
            Err(e) if cur.as_ref().is_some_and(|t| !t.expired()) && e.is_transient() => {
                tracing::warn!("token refresh failed, using the current token a while longer: {e}");
                Ok(cur.expect("checked"))
            }
            Err(e) => Err(e),
        }
    }

    /// Swift answered 401 to `t`: forget it (unless already replaced).
    pub fn invalidate(&self, t: &Arc<Token>) {
        let mut cur = self.current.lock();
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, t)) {
            *cur = None;
            if matches!(self.method, Method::Token { .. }) {
                self.preauth_rejected.store(true, Ordering::Release);
            }
        }
    }

    fn authenticate(&self, client: &Client) -> Result<Token, StoreError> {
        let mut t = self.run(&self.method, client)?;
        // OS_STORAGE_URL overrides the catalog (e.g. a different account).
        if let (Some(u), false) = (
            &self.settings.storage_url,
            matches!(self.method, Method::Token { .. }),
        ) {
            t.storage_url = u.clone();
        }
        t.storage_url = t.storage_url.trim_end_matches('/').to_string();
        tracing::info!(storage_url = %t.storage_url, lifetime = ?t.lifetime, "authenticated to Swift");
        Ok(t)
    }

    fn run(&self, m: &Method, client: &Client) -> Result<Token, StoreError> {
        match m {
            Method::Token {
                token,
                storage_url,
                fallback,
            } => {
                if !self.preauth_rejected.load(Ordering::Acquire) {
                    return Ok(Token {
                        value: token.clone(),
                        storage_url: storage_url.clone(),
                        deadline: None,
                        lifetime: None,
                    });
                }
                match fallback {
                    Some(f) => self.run(f, client),
                    None => Err(StoreError::Auth(format!(
                        "Swift at {storage_url} rejected the pre-authenticated token (OS_AUTH_TOKEN) with 401: it has probably expired; get a new one or give credentials instead"
                    ))),
                }
            }
            Method::TempAuth { url, user, key } => self.tempauth(client, url, user, key),
            Method::Password { .. } | Method::AppCredential { .. } => {
                let (url, version, app) = match m {
                    Method::Password { url, version } => (url, *version, false),
                    Method::AppCredential { url } => (url, None, true),
                    _ => unreachable!("matched above"),
                };
                let (ver, base) = match version {
                    Some(v) => (v, url.clone()),
                    None => discover(client, url, app)?,
                };
                match ver {
                    IdentityVersion::V3 => self.keystone_v3(client, &base, app),
                    IdentityVersion::V2 if app => Err(StoreError::Auth(format!(
                        "Keystone at {url} speaks identity v2.0, which has no application credentials; use a v3 auth URL"
                    ))),
                    IdentityVersion::V2 => self.keystone_v2(client, &base),
                }
            }
        }
    }

    fn tempauth(
        &self,
        client: &Client,
        url: &str,
        user: &str,
        key: &Secret,
    ) -> Result<Token, StoreError> {
        let resp = client
            .get(url)
            .header("X-Auth-User", user)
            .header("X-Auth-Key", key.expose())
            .send()
            .map_err(|e| {
                transient(format!(
                    "cannot reach the Swift auth service at {url}: {}",
                    cause(&e)
                ))
            })?;
        let status = resp.status();
        if status == 401 || status == 403 {
            return Err(StoreError::Auth(format!(
                "tempauth at {url} rejected the credentials of user {user} ({}); check ST_USER (account:user) and ST_KEY",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(http_failure("tempauth", url, status, resp));
        }
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let token = h("x-auth-token")
            .or_else(|| h("x-storage-token"))
            .ok_or_else(|| {
                StoreError::Auth(format!("tempauth at {url} answered without X-Auth-Token"))
            })?;
        let storage_url = h("x-storage-url").ok_or_else(|| {
            StoreError::Auth(format!("tempauth at {url} answered without X-Storage-Url"))
        })?;
        let lifetime = h("x-auth-token-expires")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|s| Duration::from_secs_f64(s.max(0.0)));
        Ok(Token {
            value: Secret::new(token),
            storage_url,
            deadline: lifetime.map(|l| Instant::now() + l),
            lifetime,
        })
    }

    fn keystone_v3(&self, client: &Client, base: &str, app: bool) -> Result<Token, StoreError> {
        let s = &self.settings;
        let url = format!("{}/auth/tokens", base.trim_end_matches('/'));
        let domain = |id: &Option<String>, name: &Option<String>| -> Value {
            match (id, name) {
                (Some(id), _) => json!({ "id": id }),
                (None, Some(n)) => json!({ "name": n }),
                // openrc files of single-domain clouds often leave it out.
                (None, None) => json!({ "id": "default" }),
            }
        };
        let user = || -> Value {
            match (&s.user_id, &s.username) {
                (Some(id), _) => json!({ "id": id }),
                (None, n) => json!({
                    "name": n.clone().unwrap_or_default(),
                    "domain": domain(&s.user_domain_id, &s.user_domain_name),
                }),
            }
        };
        let body = if app {
            let mut ac = json!({ "secret": s.application_credential_secret.as_ref().map(|x| x.expose()).unwrap_or("") });
            match &s.application_credential_id {
                Some(id) => ac["id"] = json!(id),
                None => {
                    ac["name"] = json!(s.application_credential_name.clone().unwrap_or_default());
                    ac["user"] = user();
                }
            }
            // An application credential carries its own project scope.
            json!({ "auth": { "identity": { "methods": ["application_credential"], "application_credential": ac } } })
        } else {
            let mut pw = user();
            pw["password"] = json!(s.password.as_ref().map(|x| x.expose()).unwrap_or(""));
            let mut auth =
                json!({ "identity": { "methods": ["password"], "password": { "user": pw } } });
            match (&s.project_id, &s.project_name) {
                (Some(id), _) => auth["scope"] = json!({ "project": { "id": id } }),
                (None, Some(n)) => {
                    let pd = if s.project_domain_id.is_none() && s.project_domain_name.is_none() {
                        // keystoneauth's habit: the project lives in the user's domain.
                        domain(&s.user_domain_id, &s.user_domain_name)
                    } else {
                        domain(&s.project_domain_id, &s.project_domain_name)
                    };
                    auth["scope"] = json!({ "project": { "name": n, "domain": pd } });
                }
                // Unscoped: Keystone scopes to the user's default project.
                (None, None) => {}
            }
            json!({ "auth": auth })
        };
        let sent = Instant::now();
        let resp = post_keystone(client, &url, &body)?;
        let status = resp.status();
        if status == 401 || status == 403 {
            return Err(StoreError::Auth(format!(
                "Keystone at {base} rejected the credentials of {} ({}); check {}",
                self.who(),
                status.as_u16(),
                if app {
                    "OS_APPLICATION_CREDENTIAL_ID/_NAME and _SECRET (the credential may have expired or been deleted)"
                } else {
                    "OS_USERNAME/OS_USER_ID, OS_PASSWORD, OS_PROJECT_NAME/OS_PROJECT_ID and the domains"
                }
            )));
        }
        if status == 404 && app {
            return Err(StoreError::Auth(format!(
                "Keystone at {base} does not know {} (404): it was deleted, or the id/name is wrong",
                self.who()
            )));
        }
        if status == 404 {
            return Err(StoreError::Auth(format!(
                "{url} is not a Keystone v3 token endpoint (404); check OS_AUTH_URL"
            )));
        }
        if !status.is_success() {
            return Err(http_failure("Keystone", &url, status, resp));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::Auth(format!(
                    "Keystone at {url} answered without X-Subject-Token"
                ))
            })?;
        let doc = read_keystone(resp, &url)?;
        let t = &doc["token"];
        let lifetime = lifetime_of(t["issued_at"].as_str(), t["expires_at"].as_str());
        let mut offered = Vec::new();
        for svc in t["catalog"].as_array().into_iter().flatten() {
            if svc["type"] != "object-store" {
                continue;
            }
            for ep in svc["endpoints"].as_array().into_iter().flatten() {
                offered.push(Endpoint {
                    region: ep["region_id"]
                        .as_str()
                        .or(ep["region"].as_str())
                        .unwrap_or("")
                        .to_string(),
                    region_name: ep["region"].as_str().unwrap_or("").to_string(),
                    interface: ep["interface"].as_str().unwrap_or("").to_string(),
                    url: ep["url"].as_str().unwrap_or("").to_string(),
                });
            }
        }
        let services: Vec<String> = t["catalog"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["type"].as_str().map(str::to_string))
            .collect();
        self.token_from(token, &offered, &services, base, sent, lifetime)
    }

    /// The token and the storage URL the catalog offers for our region and
    /// interface (none needed when the storage URL is overridden).
    fn token_from(
        &self,
        token: String,
        offered: &[Endpoint],
        services: &[String],
        base: &str,
        sent: Instant,
        lifetime: Option<Duration>,
    ) -> Result<Token, StoreError> {
        let s = &self.settings;
        let storage_url = if s.storage_url.is_some() {
            String::new() // replaced by the override
        } else {
            pick_endpoint(offered, services, s, base)?
        };
        Ok(Token {
            value: Secret::new(token),
            storage_url,
            deadline: lifetime.map(|l| sent + l),
            lifetime,
        })
    }

    fn keystone_v2(&self, client: &Client, base: &str) -> Result<Token, StoreError> {
        let s = &self.settings;
        let url = format!("{}/tokens", base.trim_end_matches('/'));
        let mut auth = json!({ "passwordCredentials": {
            "username": s.username.clone().or_else(|| s.user_id.clone()).unwrap_or_default(),
            "password": s.password.as_ref().map(|x| x.expose()).unwrap_or(""),
        }});
        if let Some(id) = &s.project_id {
            auth["tenantId"] = json!(id);
        } else if let Some(n) = &s.project_name {
            auth["tenantName"] = json!(n);
        }
        let sent = Instant::now();
        let resp = post_keystone(client, &url, &json!({ "auth": auth }))?;
        let status = resp.status();
        if status == 401 || status == 403 {
            return Err(StoreError::Auth(format!(
                "Keystone at {base} rejected the credentials of {} ({}); check OS_USERNAME, OS_PASSWORD and OS_TENANT_NAME/OS_TENANT_ID",
                self.who(),
                status.as_u16()
            )));
        }
        if status == 404 {
            return Err(StoreError::Auth(format!(
                "Keystone at {base} does not serve identity v2.0 (404 for {url}); give the v3 auth URL"
            )));
        }
        if !status.is_success() {
            return Err(http_failure("Keystone", &url, status, resp));
        }
        let doc = read_keystone(resp, &url)?;
        let a = &doc["access"];
        let token = a["token"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::Auth(format!(
                    "Keystone at {url} answered without access.token.id"
                ))
            })?;
        let lifetime = lifetime_of(
            a["token"]["issued_at"].as_str(),
            a["token"]["expires"].as_str(),
        );
        let mut offered = Vec::new();
        let mut services = Vec::new();
        for svc in a["serviceCatalog"].as_array().into_iter().flatten() {
            services.push(svc["type"].as_str().unwrap_or("").to_string());
            if svc["type"] != "object-store" {
                continue;
            }
            for ep in svc["endpoints"].as_array().into_iter().flatten() {
                let region = ep["region"].as_str().unwrap_or("").to_string();
                for (iface, key) in [
                    ("public", "publicURL"),
                    ("internal", "internalURL"),
                    ("admin", "adminURL"),
                ] {
                    if let Some(u) = ep[key].as_str() {
                        offered.push(Endpoint {
                            region: region.clone(),
                            region_name: region.clone(),
                            interface: iface.into(),
                            url: u.to_string(),
                        });
                    }
                }
            }
        }
        self.token_from(token, &offered, &services, base, sent, lifetime)
    }
}

fn post_keystone(
    client: &Client,
    url: &str,
    body: &Value,
) -> Result<reqwest::blocking::Response, StoreError> {
    client
        .post(url)
        .json(body)
        .send()
        .map_err(|e| transient(format!("cannot reach Keystone at {url}: {}", cause(&e))))
}

fn read_keystone(resp: reqwest::blocking::Response, url: &str) -> Result<Value, StoreError> {
    resp.json().map_err(|e| {
        transient(format!(
            "Keystone at {url}: unreadable answer: {}",
            cause(&e)
        ))
    })
}

#[derive(Debug, Clone)]
struct Endpoint {
    region: String,
    region_name: String,
    interface: String,
    url: String,
}

fn normalize_interface(i: &str) -> String {
    i.trim().trim_end_matches("URL").to_ascii_lowercase()
}

/// The object-store endpoint for the wanted region and interface, or an
/// error listing what the catalog offers.
fn pick_endpoint(
    offered: &[Endpoint],
    services: &[String],
    s: &Settings,
    base: &str,
) -> Result<String, StoreError> {
    if offered.is_empty() {
        return Err(StoreError::Auth(format!(
            "the service catalog from Keystone at {base} has no object-store (Swift) endpoint{}; services offered: {}",
            if services.is_empty() { " (the token may be unscoped: set OS_PROJECT_NAME or OS_PROJECT_ID)" } else { "" },
            if services.is_empty() { "none".to_string() } else { services.join(", ") }
        )));
    }
    let iface = normalize_interface(s.interface.as_deref().unwrap_or("public"));
    let matches: Vec<&Endpoint> = offered
        .iter()
        .filter(|e| e.interface == iface)
        .filter(|e| match &s.region_name {
            Some(r) => &e.region == r || &e.region_name == r,
            None => true,
        })
        .collect();
    let list = || {
        let mut v: Vec<String> = offered
            .iter()
            .map(|e| format!("region {} interface {}", e.region, e.interface))
            .collect();
        v.sort();
        v.dedup();
        v.join("; ")
    };
    let mut regions: Vec<&str> = matches.iter().map(|e| e.region.as_str()).collect();
    regions.sort();
    regions.dedup();
    match (matches.first(), regions.len()) {
        (None, _) => Err(StoreError::Auth(format!(
            "no object-store endpoint in region {} with interface {iface}; the catalog offers: {}. Set OS_REGION_NAME / OS_INTERFACE",
            s.region_name.as_deref().unwrap_or("(any)"),
            list()
        ))),
        (Some(e), 1) => Ok(e.url.clone()),
        (Some(_), _) => Err(StoreError::Auth(format!(
            "the catalog has object-store endpoints in several regions ({}); set OS_REGION_NAME to one of them",
            regions.join(", ")
        ))),
    }
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let t = s.trim().trim_end_matches('Z');
    let t = t.strip_suffix("+00:00").unwrap_or(t);
    humantime::parse_rfc3339_weak(t).ok()
}

/// Token lifetime from the server's own issued/expiry stamps (no clock
/// skew); without `issued`, against our clock.
fn lifetime_of(issued: Option<&str>, expires: Option<&str>) -> Option<Duration> {
    let exp = parse_time(expires?)?;
    let from = issued.and_then(parse_time).unwrap_or_else(SystemTime::now);
    Some(exp.duration_since(from).unwrap_or_default())
}

fn http_failure(
    what: &str,
    url: &str,
    status: reqwest::StatusCode,
    resp: reqwest::blocking::Response,
) -> StoreError {
    let body: String = resp.text().unwrap_or_default().chars().take(200).collect();
    let msg = format!("{what} at {url} answered {status}: {}", body.trim());
    if status.is_server_error() || status == 429 {
        transient(msg)
    } else {
        StoreError::Auth(msg)
    }
}

/// Which identity version to speak: read the version document at `url`.
fn discover(
    client: &Client,
    url: &str,
    app: bool,
) -> Result<(IdentityVersion, String), StoreError> {
    let resp = client
        .get(url)
        .header("Accept", "application/json")
        .send()
        .map_err(|e| transient(format!("cannot reach Keystone at {url}: {}", cause(&e))))?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(http_failure("Keystone", url, status, resp));
    }
    let doc: Value = resp.json().unwrap_or(Value::Null);
    let mut found: Vec<(String, String)> = Vec::new();
    let mut take = |v: &Value| {
        let id = v["id"].as_str().unwrap_or("").to_string();
        let href = v["links"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["rel"] == "self")
            .and_then(|l| l["href"].as_str())
            .unwrap_or("")
            .to_string();
        if !id.is_empty() {
            found.push((id, href));
        }
    };
    match &doc["versions"] {
        Value::Object(o) => o
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .for_each(&mut take),
        Value::Array(a) => a.iter().for_each(&mut take),
        _ => {}
    }
    if doc["version"].is_object() {
        take(&doc["version"]);
    }
    let pick = |prefix: &str| found.iter().find(|(id, _)| id.starts_with(prefix)).cloned();
    let chosen = pick("v3")
        .map(|(_, h)| (IdentityVersion::V3, h))
        .or_else(|| {
            if app {
                None
            } else {
                pick("v2").map(|(_, h)| (IdentityVersion::V2, h))
            }
        });
    match chosen {
        Some((v, href)) => Ok((v, if href.is_empty() { url.to_string() } else { href })),
        None => Err(StoreError::Auth(format!(
            "{url} does not look like a Keystone identity endpoint ({status}{}); set OS_AUTH_URL to it, e.g. https://identity.example.com/v3",
            if found.is_empty() {
                ", no version document".to_string()
            } else {
                format!(", versions offered: {}", found.iter().map(|f| f.0.clone()).collect::<Vec<_>>().join(", "))
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_urls() {
        assert_eq!(
            version_from_url("https://identity.tyo1.conoha.io/v2.0"),
            Some(IdentityVersion::V2)
        );
        assert_eq!(
            version_from_url("https://h/identity/v3/"),
            Some(IdentityVersion::V3)
        );
        assert_eq!(version_from_url("http://h:5000"), None);
        assert_eq!(version_from_url("http://h:5000/"), None);
        assert!(looks_like_tempauth("http://127.0.0.1:8080/auth/v1.0"));
    }

    #[test]
    fn lifetimes_ignore_our_clock() {
        let l = lifetime_of(
            Some("2026-11-25T12:00:09.000000Z"),
            Some("2026-11-25T13:00:09.000000Z"),
        );
        assert_eq!(l, Some(Duration::from_secs(3600)));
        let l = lifetime_of(Some("2015-01-01T00:00:00Z"), Some("2015-01-02T00:00:00Z"));
        assert_eq!(l, Some(Duration::from_secs(86400)));
    }

    fn ep(r: &str, i: &str) -> Endpoint {
        Endpoint {
            region: r.into(),
            region_name: r.into(),
            interface: i.into(),
            url: format!("http://{r}/{i}"),
        }
    }

    #[test]
    fn endpoint_choice_and_its_errors() {
        let offered = vec![
            ep("tyo1", "public"),
            ep("tyo1", "internal"),
            ep("sin1", "public"),
        ];
        let mut s = Settings::default();
        let e = pick_endpoint(&offered, &[], &s, "k")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sin1") && e.contains("tyo1") && e.contains("OS_REGION_NAME"),
            "{e}"
        );
        s.region_name = Some("tyo1".into());
        assert_eq!(
            pick_endpoint(&offered, &[], &s, "k").unwrap(),
            "http://tyo1/public"
        );
        s.interface = Some("internalURL".into());
        assert_eq!(
            pick_endpoint(&offered, &[], &s, "k").unwrap(),
            "http://tyo1/internal"
        );
        s.region_name = Some("lon1".into());
        let e = pick_endpoint(&offered, &[], &s, "k")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("region lon1") && e.contains("region sin1 interface public"),
            "{e}"
        );
    }

    #[test]
    fn methods_from_settings() {
        let mut s = Settings {
            auth_url: Some("http://k:5000/v3".into()),
            username: Some("u".into()),
            ..Default::default()
        };
        let e = method_for(&s).unwrap_err();
        assert!(e.contains("OS_PASSWORD"), "{e}");
        s.password = Some(Secret::new("p"));
        assert!(matches!(
            method_for(&s).unwrap(),
            Method::Password {
                version: Some(IdentityVersion::V3),
                ..
            }
        ));
        s.auth_url = Some("http://k:8080/auth/v1.0".into());
        assert!(matches!(method_for(&s).unwrap(), Method::TempAuth { .. }));
        let s = Settings {
            auth_url: Some("http://k:5000".into()),
            application_credential_id: Some("id".into()),
            application_credential_secret: Some(Secret::new("x")),
            ..Default::default()
        };
        assert!(matches!(
            method_for(&s).unwrap(),
            Method::AppCredential { .. }
        ));
        let e = method_for(&Settings::default()).unwrap_err();
        assert!(e.contains("openrc"), "{e}");
    }
}
