//! The dashboard: the gateway's health at a glance, alerts in plain words,
//! the homes in use; its live part is re-fetched every few seconds.

use super::super::fmt::{self, Count};
use super::super::layout::PageCtx;
use super::super::routes::Routes;
use super::super::{ask, AppState};
use crate::gateway::api::{Alert, AlertLevel, GatewayApiExt, Overview};
use axum::extract::State;
use axum::response::Response;

pub struct AlertView {
    pub critical: bool,
    pub text: &'static str,
    pub subject: Option<String>,
    pub detail: Option<String>,
}

fn alert_view(page: &PageCtx, a: &Alert) -> AlertView {
    let code = serde_json::to_value(a.code)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    AlertView {
        critical: a.level == AlertLevel::Critical,
        text: page.t(&format!("alert.{code}")),
        subject: a.subject.clone(),
        detail: a.detail.clone(),
    }
}

/// The figures both the page and its live fragment show.
pub struct Live {
    pub ov: Option<Overview>,
    /// The gateway's error, when it could not answer.
    pub banners: Vec<super::Banner>,
    pub alerts: Vec<AlertView>,
}

impl Live {
    pub fn bytes(&self, n: impl Count) -> String {
        fmt::bytes(n.n())
    }
    pub fn pct(&self, part: impl Count, whole: impl Count) -> u64 {
        fmt::percent(part.n(), whole.n())
    }
    pub fn age(&self, page: &PageCtx, secs: impl Count) -> String {
        fmt::duration(secs.n(), page.lang)
    }
    pub fn disk_pct(&self) -> u64 {
        self.ov.as_ref().map_or(0, |o| {
            let d = &o.cache.disk;
            fmt::percent(d.total_bytes.saturating_sub(d.free_bytes), d.total_bytes)
        })
    }
    pub fn hit_ratio(&self) -> String {
        match &self.ov {
            Some(o) if o.cache_hits + o.cache_misses > 0 => format!(
                "{:.1} %",
                o.cache_hits as f64 * 100.0 / (o.cache_hits + o.cache_misses) as f64
            ),
            _ => "–".into(),
        }
    }
    /// A home's metadata is late: more than twice the interval.
    pub fn late(&self, age: impl Count) -> bool {
        let age = age.n();
        self.ov
            .as_ref()
            .is_some_and(|o| o.metadata_interval_secs > 0 && age > 2 * o.metadata_interval_secs)
    }
}

async fn live(st: &AppState, page: &PageCtx) -> Live {
    match ask(st, |api| api.overview()).await {
        Ok(ov) => Live {
            alerts: ov.alerts.iter().map(|a| alert_view(page, a)).collect(),
            ov: Some(ov),
            banners: Vec::new(),
        },
        Err(e) => Live {
            ov: None,
            alerts: Vec::new(),
            banners: vec![super::Banner::error(page, &e)],
        },
    }
}

#[derive(askama::Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    page: PageCtx,
    live: Live,
}

#[derive(askama::Template)]
#[template(path = "dashboard_live.html")]
struct DashboardLive {
    page: PageCtx,
    live: Live,
}

async fn dashboard(State(st): State<AppState>, page: PageCtx) -> Response {
    let page = page.with_nav("dashboard");
    let live = live(&st, &page).await;
    super::render(&DashboardPage { page, live })
}

async fn dashboard_live(State(st): State<AppState>, page: PageCtx) -> Response {
    let page = page.with_nav("dashboard");
    let live = live(&st, &page).await;
    super::render(&DashboardLive { page, live })
}

pub fn routes() -> Routes {
    Routes::protected()
        .get("/", dashboard)
        .get("/live/dashboard", dashboard_live)
}
