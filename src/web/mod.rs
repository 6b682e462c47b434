//! The web console: admins run the gateway from a browser. Pages (askama
//! templates in `templates/`), a JSON API under `/api/v1`, `/metrics` and
//! `/healthz`, served by `swiftgate serve`. Everything here drives the
//! gateway through its typed API ([`crate::gateway::api`]) only.

pub mod apisnapshots;
pub mod apiv1;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod charts;
pub mod error;
pub mod fmt;
pub mod guard;
pub mod history;
pub mod i18n;
pub mod layout;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod pam;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod session;
pub mod tokens;

use crate::gateway::api::{ApiError, ErrorKind, GatewayApi};
use crate::gateway::config::ConsoleSection;
use auth::Admin;
use std::sync::Arc;

/// What every handler shares.
pub struct Console {
    pub api: Arc<dyn GatewayApi>,
    pub cfg: ConsoleSection,
    /// Served over HTTPS (cookies get `Secure`).
    pub tls: bool,
    pub sessions: session::Sessions,
    pub limiter: ratelimit::LoginLimiter,
    pub tokens: tokens::Tokens,
    pub audit: audit::AuditLog,
    /// The dashboard charts' figures (sampled in the background).
    pub history: Arc<history::History>,
}

pub type AppState = Arc<Console>;

impl Console {
    pub fn new(api: Arc<dyn GatewayApi>, cfg: ConsoleSection, tls: bool) -> Console {
        Console {
            api,
            sessions: session::Sessions::new(cfg.session_idle),
            limiter: ratelimit::LoginLimiter::default(),
            tokens: tokens::Tokens::new(&cfg.tokens_file),
            audit: audit::AuditLog::new(&cfg.audit_log),
            history: Arc::new(history::History::new()),
            cfg,
            tls,
        }
    }
}

/// Ask the gateway (its calls block: run them off the async workers).
pub async fn ask<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn GatewayApi) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let api = state.api.clone();
    tokio::task::spawn_blocking(move || f(&*api))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::new(
                ErrorKind::Internal,
                format!("the console's worker failed: {e}"),
            ))
        })
}

/// Change something: ask the gateway and write the audit log (who, from
/// where, what, the result) whatever the outcome.
pub async fn act<T: Send + 'static>(
    state: &AppState,
    admin: &Admin,
    action: &str,
    subject: Option<&str>,
    f: impl FnOnce(&dyn GatewayApi) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let r = ask(state, f).await;
    record(
        state,
        &admin.user,
        &admin.addr,
        action,
        subject,
        r.as_ref().map(|_| String::new()).map_err(|e| e.to_string()),
    );
    r
}

/// One audit line; a log that cannot be written is reported in the
/// daemon's log (the action itself already happened).
pub fn record(
    state: &AppState,
    who: &str,
    from: &str,
    action: &str,
    subject: Option<&str>,
    result: Result<String, String>,
) {
    let (ok, message) = match result {
        Ok(m) => (true, m),
        Err(m) => (false, m),
    };
    let e = audit::AuditEntry {
        at_unix: crate::clock::unix_now(),
        who: who.into(),
        from: from.into(),
        action: action.into(),
        subject: subject.map(String::from),
        ok,
        message,
    };
    if let Err(err) = state.audit.append(&e) {
        tracing::error!("{err}");
    }
}

/// The public and the protected routes (without their guard layer).
fn build() -> (routes::Routes, routes::Routes) {
    let public = routes::Routes::public()
        .get("/healthz", healthz)
        .merge(auth::public_routes())
        .merge(metrics::routes())
        .merge(assets::routes());
    let protected = routes::Routes::protected()
        .merge(auth::routes())
        .merge(pages::routes())
        .merge(apiv1::routes())
        .merge(apisnapshots::routes());
    (public, protected)
}

/// Every route of the console, as served.
pub fn route_table() -> Vec<routes::RouteInfo> {
    let (a, b) = build();
    a.table.into_iter().chain(b.table).collect()
}

/// The console's router: protected routes behind the login guard (which
/// also checks CSRF tokens on every change).
pub fn router(state: AppState) -> axum::Router {
    let (public, protected) = build();
    let guarded = protected
        .router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ));
    public
        .router
        .merge(guarded)
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(guard::headers))
        .with_state(state)
}

/// Public: the console process answers (says nothing about the gateway).
async fn healthz() -> &'static str {
    "ok\n"
}
