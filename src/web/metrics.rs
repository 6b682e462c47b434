//! `/metrics`: the gateway's counters in the OpenMetrics text format
//! (prometheus-client), from one [`MetricsSnapshot`] per scrape. Who may
//! scrape is configured: loopback clients (or a token), a token only, or
//! anyone.

use super::guard::client_addr;
use super::routes::Routes;
use super::{ask, AppState};
use crate::gateway::api::{GatewayApiExt, MetricsSnapshot};
use crate::gateway::config::MetricsAccess;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpOutcome {
    op: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Home {
    home: String,
}

/// The store latency histogram, straight from the snapshot's buckets (the
/// daemon counts; we only encode).
#[derive(Debug)]
struct Latency {
    ops: Vec<OpLatency>,
}

#[derive(Debug)]
struct OpLatency {
    op: String,
    sum: f64,
    count: u64,
    /// Each bucket's own count, by upper bound.
    buckets: Vec<(f64, u64)>,
}

impl Collector for Latency {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = enc.encode_descriptor(
            "swiftgate_store_request_duration_seconds",
            "Object store request latency",
            None,
            MetricType::Histogram,
        )?;
        for o in &self.ops {
            let labels = Op { op: o.op.clone() };
            let fam = m.encode_family(&labels)?;
            Hist {
                sum: o.sum,
                count: o.count,
                buckets: &o.buckets,
            }
            .encode(fam)?;
        }
        Ok(())
    }
}

struct Hist<'a> {
    sum: f64,
    count: u64,
    buckets: &'a [(f64, u64)],
}

impl EncodeMetric for Hist<'_> {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            self.buckets,
            None,
        )
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    reg.register(name, help, ConstCounter::new(v));
}

/// The snapshot as OpenMetrics text.
pub fn encode(s: &MetricsSnapshot) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    gauge(
        &mut reg,
        "swiftgate_cache_size_bytes",
        "Cache budget",
        s.cache_size,
    );
    gauge(
        &mut reg,
        "swiftgate_cache_dirty_limit_bytes",
        "Dirty data allowed in the cache",
        s.cache_dirty_limit,
    );
    gauge(
        &mut reg,
        "swiftgate_cache_used_bytes",
        "Cache bytes used (dirty plus clean)",
        s.cache_used_bytes,
    );
    gauge(
        &mut reg,
        "swiftgate_cache_dirty_bytes",
        "Cache bytes not yet in the store",
        s.cache_dirty_bytes,
    );
    counter(
        &mut reg,
        "swiftgate_cache_hits",
        "Block reads served from the cache",
        s.cache_hits,
    );
    counter(
        &mut reg,
        "swiftgate_cache_misses",
        "Block reads fetched from the store",
        s.cache_misses,
    );
    gauge(
        &mut reg,
        "swiftgate_homes_mounted",
        "Mounted homes and team shares",
        s.homes_mounted,
    );
    gauge(
        &mut reg,
        "swiftgate_smb_sessions",
        "Open SMB sessions",
        s.sessions,
    );
    gauge(&mut reg, "swiftgate_users", "Gateway users", s.users_total);
    counter(
        &mut reg,
        "swiftgate_errors",
        "Errors counted by the daemon (mounts, uploads, requests)",
        s.errors,
    );

    let requests = Family::<OpOutcome, prometheus_client::metrics::counter::Counter>::default();
    let bytes = Family::<Op, prometheus_client::metrics::counter::Counter>::default();
    let mut lat = Latency { ops: Vec::new() };
    for o in &s.store_ops {
        requests
            .get_or_create(&OpOutcome {
                op: o.op.clone(),
                outcome: "ok".into(),
            })
            .inc_by(o.ok);
        requests
            .get_or_create(&OpOutcome {
                op: o.op.clone(),
                outcome: "error".into(),
            })
            .inc_by(o.errors);
        bytes
            .get_or_create(&Op { op: o.op.clone() })
            .inc_by(o.bytes);
        // Cumulative counts in the snapshot; the encoder wants each
        // bucket's own count.
        let mut prev = 0;
        let mut per = Vec::new();
        for (i, c) in o.latency_buckets.iter().enumerate() {
            let bound = s
                .latency_bounds_secs
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            per.push((bound, c.saturating_sub(prev)));
            prev = *c;
        }
        if per.last().is_none_or(|(b, _)| b.is_finite()) {
            per.push((f64::INFINITY, 0));
        }
        lat.ops.push(OpLatency {
            op: o.op.clone(),
            sum: o.latency_sum_secs,
            count: o.ok + o.errors,
            buckets: per,
        });
    }
    reg.register(
        "swiftgate_store_requests",
        "Object store requests by op and outcome",
        requests,
    );
    reg.register(
        "swiftgate_store_bytes",
        "Payload bytes moved to and from the store by op",
        bytes,
    );
    reg.register_collector(Box::new(lat));

    let age = Family::<Home, Gauge<f64, AtomicU64>>::default();
    for (home, secs) in &s.metadata_age_secs {
        age.get_or_create(&Home { home: home.clone() })
            .set(*secs as f64);
    }
    reg.register(
        "swiftgate_metadata_age_seconds",
        "Seconds since each mounted home's metadata reached the store",
        age,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}

fn allowed(st: &AppState, req: &Request) -> bool {
    let token = || {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| st.tokens.verify(t.trim()))
            .is_some()
    };
    match st.cfg.metrics {
        MetricsAccess::Open => true,
        MetricsAccess::Token => token(),
        MetricsAccess::Loopback => {
            let loopback = client_addr(req)
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
            loopback || token()
        }
    }
}

async fn metrics(State(st): State<AppState>, req: Request) -> Response {
    if !allowed(&st, &req) {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            "metrics: give an API token (Authorization: Bearer, see `swiftgate token create`), or scrape from the gateway itself\n",
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let snap = match ask(&st, |api| api.metrics()).await {
        Ok(s) => s,
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("metrics: {e}\n")).into_response()
        }
    };
    match encode(&snap) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics: encoding failed\n",
        )
            .into_response(),
    }
}

pub fn routes() -> Routes {
    Routes::public().get("/metrics", metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::api::StoreOpStats;

    #[test]
    fn snapshot_encodes_as_openmetrics_with_histogram() {
        let s = MetricsSnapshot {
            latency_bounds_secs: vec![0.01, 0.1, 1.0],
            store_ops: vec![StoreOpStats {
                op: "put".into(),
                ok: 9,
                errors: 1,
                bytes: 4096,
                latency_buckets: vec![2, 7, 9, 10],
                latency_sum_secs: 1.5,
            }],
            cache_size: 1 << 30,
            cache_used_bytes: 12345,
            metadata_age_secs: vec![("alice".into(), 42)],
            sessions: 3,
            ..Default::default()
        };
        let t = encode(&s).unwrap();
        for needle in [
            "swiftgate_cache_size_bytes 1073741824",
            "swiftgate_cache_used_bytes 12345",
            "swiftgate_smb_sessions 3",
            r#"swiftgate_store_requests_total{op="put",outcome="ok"} 9"#,
            r#"swiftgate_store_requests_total{op="put",outcome="error"} 1"#,
            r#"swiftgate_store_bytes_total{op="put"} 4096"#,
            r#"swiftgate_store_request_duration_seconds_bucket{le="0.01",op="put"} 2"#,
            r#"swiftgate_store_request_duration_seconds_bucket{le="0.1",op="put"} 7"#,
            r#"swiftgate_store_request_duration_seconds_bucket{le="+Inf",op="put"} 10"#,
            r#"swiftgate_store_request_duration_seconds_count{op="put"} 10"#,
            r#"swiftgate_metadata_age_seconds{home="alice"} 42"#,
            "# EOF",
        ] {
            assert!(t.contains(needle), "{needle} missing in\n{t}");
        }
    }
}
