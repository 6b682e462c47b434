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
    /// The cache budget as a stacked bar: clean and dirty bytes, the
    /// dirty limit marked.
    pub fn cache_bar(&self, page: &PageCtx) -> String {
        use super::super::charts::{stacked_bar, BarPart};
        let Some(o) = &self.ov else {
            return String::new();
        };
        let c = &o.cache;
        stacked_bar(
            page.t("dash.cache"),
            &[
                BarPart {
                    name: page.t("cache.clean"),
                    value: c.used_bytes.saturating_sub(c.dirty_bytes) as f64,
                    color: "used",
                },
                BarPart {
                    name: page.t("dash.dirty"),
                    value: c.dirty_bytes as f64,
                    color: "dirty",
                },
            ],
            c.size as f64,
            Some((page.t("cache.dirty_limit"), c.dirty_limit as f64)),
        )
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

/// The charts of the last hour or day, as SVG (the chart module escapes
/// every label it draws).
pub struct Charts {
    pub day: bool,
    pub throughput: String,
    pub cache: String,
    pub sessions: String,
}

fn charts(st: &AppState, page: &PageCtx, day: bool) -> Charts {
    use super::super::charts::{time_chart, ChartText, Line, TimeChart, Unit};
    use super::super::history::Range;
    let s = st
        .history
        .series(if day { Range::Day } else { Range::Hour });
    let text = ChartText {
        now: page.t("chart.now"),
        no_data: page.t("chart.no_data"),
        minutes: page.t("chart.min"),
        hours: page.t("chart.h"),
    };
    let chart = |title: &str, unit: Unit, lines: Vec<Line>, area: bool| {
        time_chart(&TimeChart {
            title,
            unit,
            times: &s.times,
            lines,
            end_unix: s.end_unix,
            span_secs: s.span_secs,
            area,
            text: text.clone(),
        })
    };
    Charts {
        day,
        throughput: chart(
            page.t("chart.throughput"),
            Unit::BytesPerSec,
            vec![
                Line {
                    name: page.t("chart.upload"),
                    values: &s.upload_bps,
                },
                Line {
                    name: page.t("chart.download"),
                    values: &s.download_bps,
                },
            ],
            false,
        ),
        cache: chart(
            page.t("chart.cache"),
            Unit::Bytes,
            vec![Line {
                name: page.t("chart.cache_used"),
                values: &s.cache_used,
            }],
            true,
        ),
        sessions: chart(
            page.t("chart.sessions"),
            Unit::Count,
            vec![Line {
                name: page.t("chart.sessions"),
                values: &s.sessions,
            }],
            false,
        ),
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
    charts: Charts,
}

#[derive(askama::Template)]
#[template(path = "dashboard_live.html")]
struct DashboardLive {
    page: PageCtx,
    live: Live,
    charts: Charts,
}

#[derive(serde::Deserialize, Default)]
struct RangeQuery {
    #[serde(default)]
    range: String,
}

async fn dashboard(
    State(st): State<AppState>,
    page: PageCtx,
    axum::extract::Query(q): axum::extract::Query<RangeQuery>,
) -> Response {
    let page = page.with_nav("dashboard");
    let live = live(&st, &page).await;
    let charts = charts(&st, &page, q.range == "day");
    super::render(&DashboardPage { page, live, charts })
}

async fn dashboard_live(
    State(st): State<AppState>,
    page: PageCtx,
    axum::extract::Query(q): axum::extract::Query<RangeQuery>,
) -> Response {
    let page = page.with_nav("dashboard");
    let live = live(&st, &page).await;
    let charts = charts(&st, &page, q.range == "day");
    super::render(&DashboardLive { page, live, charts })
}

pub fn routes() -> Routes {
    Routes::protected()
        .get("/", dashboard)
        .get("/live/dashboard", dashboard_live)
}
