//! The web console: admins run the gateway from a browser. Pages (askama
//! templates in `templates/`), a JSON API under `/api/v1`, `/metrics` and
//! `/healthz`, served by `swiftgate serve`. Everything here drives the
//! gateway through its typed API ([`crate::gateway::api`]) only.

pub mod apiv1;
pub mod assets;
pub mod auth;
pub mod charts;
pub mod history;
pub mod i18n;
pub mod layout;
pub mod metrics;
pub mod pages;
pub mod pam;
pub mod server;

use crate::gateway::api::GatewayApi;
use crate::gateway::config::ConsoleSection;
use std::sync::Arc;

/// What every handler shares.
pub struct Console {
    pub api: Arc<dyn GatewayApi>,
    pub cfg: ConsoleSection,
    /// Served over HTTPS (cookies get `Secure`).
    pub tls: bool,
}

pub type AppState = Arc<Console>;

/// Every route of the console.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .merge(auth::routes())
        .merge(pages::routes())
        .merge(apiv1::routes())
        .merge(metrics::routes())
        .merge(assets::routes())
        .with_state(state)
}

/// Public: the console process answers (says nothing about the gateway).
async fn healthz() -> &'static str {
    "ok\n"
}
