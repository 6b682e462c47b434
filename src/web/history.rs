//! The samples behind the dashboard's charts: a task asks the gateway for
//! its [`Overview`] every few seconds and keeps the last hour at full
//! resolution and the last day in 5-minute buckets. In memory only: the
//! charts start empty when the console starts, which they say.

use crate::gateway::api::{GatewayApi, GatewayApiExt, Overview};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Points kept for the hour view (10 s apart).
pub const HOUR_POINTS: usize = 360;
/// Buckets kept for the day view.
pub const DAY_POINTS: usize = 288;
/// The day view's bucket width.
pub const DAY_BUCKET_SECS: u64 = 300;

/// What the sampler reads from the gateway at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When, in milliseconds since the epoch (rates need sub-second
    /// precision: ticks drift).
    pub at_ms: u64,
    /// Cumulative bytes to and from the store since the daemon started.
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
    pub cache_used_bytes: u64,
    pub sessions: u64,
}

impl Sample {
    pub fn from_overview(o: &Overview, at_ms: u64) -> Sample {
        Sample {
            at_ms,
            uploaded_bytes: o.uploaded_bytes,
            downloaded_bytes: o.downloaded_bytes,
            cache_used_bytes: o.cache.used_bytes,
            sessions: o.sessions as u64,
        }
    }
}

/// One point of a chart.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    at_unix: u64,
    upload_bps: f64,
    download_bps: f64,
    cache_used: f64,
    sessions: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Hour,
    Day,
}

impl Range {
    pub fn span_secs(self) -> u64 {
        match self {
            Range::Hour => 3600,
            Range::Day => 86_400,
        }
    }
}

/// Columns for a chart: `times[i]` (unix seconds) goes with the i-th value
/// of every other column. Throughput in bytes per second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub times: Vec<u64>,
    pub upload_bps: Vec<f64>,
    pub download_bps: Vec<f64>,
    pub cache_used: Vec<f64>,
    pub sessions: Vec<f64>,
    /// The window the columns cover: `[end_unix - span_secs, end_unix]`.
    pub end_unix: u64,
    pub span_secs: u64,
}

/// A 5-minute bucket being filled: throughput is averaged over it, cache
/// use and sessions keep their peak (a short spike matters to an admin).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    key: u64,
    n: u32,
    up_sum: f64,
    down_sum: f64,
    cache_max: f64,
    sessions_max: f64,
}

impl Bucket {
    fn new(key: u64) -> Bucket {
        Bucket {
            key,
            n: 0,
            up_sum: 0.0,
            down_sum: 0.0,
            cache_max: 0.0,
            sessions_max: 0.0,
        }
    }

    fn add(&mut self, p: &Point) {
        self.n += 1;
        self.up_sum += p.upload_bps;
        self.down_sum += p.download_bps;
        self.cache_max = self.cache_max.max(p.cache_used);
        self.sessions_max = self.sessions_max.max(p.sessions);
    }

    fn point(&self) -> Point {
        let n = f64::from(self.n.max(1));
        Point {
            // The bucket's middle.
            at_unix: self.key * DAY_BUCKET_SECS + DAY_BUCKET_SECS / 2,
            upload_bps: self.up_sum / n,
            download_bps: self.down_sum / n,
            cache_used: self.cache_max,
            sessions: self.sessions_max,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    last: Option<Sample>,
    hour: VecDeque<Point>,
    day: VecDeque<Point>,
    bucket: Option<Bucket>,
}

/// The console's chart history (shared by the sampler and the handlers).
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bytes per second between two readings of a cumulative counter. A
/// counter that went down means the daemon restarted in between: it
/// counted `cur` bytes since, within `secs`, so `cur / secs` is a true
/// (lower) figure, never negative nor the wrap-around of a subtraction.
fn rate(prev: u64, cur: u64, secs: f64) -> f64 {
    let moved = if cur >= prev { cur - prev } else { cur };
    moved as f64 / secs
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Adds a reading. The first one (and one not later than the last) only
    /// sets the baseline: a rate needs two readings.
    pub fn record(&self, s: Sample) {
        let mut g = self.inner.lock();
        let Some(prev) = g.last.replace(s) else {
            return;
        };
        if s.at_ms <= prev.at_ms {
            // The clock went back: start over from this reading.
            return;
        }
        let secs = (s.at_ms - prev.at_ms) as f64 / 1000.0;
        let p = Point {
            at_unix: s.at_ms / 1000,
            upload_bps: rate(prev.uploaded_bytes, s.uploaded_bytes, secs),
            download_bps: rate(prev.downloaded_bytes, s.downloaded_bytes, secs),
            cache_used: s.cache_used_bytes as f64,
            sessions: s.sessions as f64,
        };
        if g.hour.len() == HOUR_POINTS {
            g.hour.pop_front();
        }
        g.hour.push_back(p);

        let key = p.at_unix / DAY_BUCKET_SECS;
        match g.bucket {
            Some(ref mut b) if b.key == key => b.add(&p),
            Some(b) if b.key > key => {} // an older bucket: already closed
            other => {
                if let Some(done) = other {
                    if g.day.len() == DAY_POINTS {
                        g.day.pop_front();
                    }
                    g.day.push_back(done.point());
                }
                let mut b = Bucket::new(key);
                b.add(&p);
                g.bucket = Some(b);
            }
        }
    }

    /// The chart columns for `range`, ending now.
    pub fn series(&self, range: Range) -> Series {
        self.series_at(range, now_ms() / 1000)
    }

    /// The chart columns for `range` ending at `now_unix`: only points in
    /// the window (after a stall of the sampler, old points are not "the
    /// last hour"). The day view includes the bucket still being filled.
    pub fn series_at(&self, range: Range, now_unix: u64) -> Series {
        let span = range.span_secs();
        let from = now_unix.saturating_sub(span);
        let g = self.inner.lock();
        let current = match range {
            Range::Day => g.bucket.map(|b| b.point()),
            Range::Hour => None,
        };
        let points: Box<dyn Iterator<Item = &Point>> = match range {
            Range::Hour => Box::new(g.hour.iter()),
            Range::Day => Box::new(g.day.iter()),
        };
        let mut s = Series {
            end_unix: now_unix,
            span_secs: span,
            ..Series::default()
        };
        for p in points.chain(current.as_ref()) {
            // A bucket's middle may lie a little after now.
            let t = p.at_unix.min(now_unix);
            if t < from {
                continue;
            }
            s.times.push(t);
            s.upload_bps.push(p.upload_bps);
            s.download_bps.push(p.download_bps);
            s.cache_used.push(p.cache_used);
            s.sessions.push(p.sessions);
        }
        s
    }

    /// Samples the gateway every `every` on a tokio runtime, until this
    /// history is dropped. The API is blocking: each call runs on the
    /// blocking pool. A failed call is logged and skipped (the next good
    /// reading's rate spans the gap).
    pub fn spawn_sampler(
        self: Arc<Self>,
        api: Arc<dyn GatewayApi>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak: Weak<History> = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                if weak.strong_count() == 0 {
                    return;
                }
                let api = api.clone();
                let got = tokio::task::spawn_blocking(move || api.overview()).await;
                let Some(h) = weak.upgrade() else { return };
                match got {
                    Ok(Ok(o)) => {
                        if failing {
                            tracing::info!("chart sampler: the gateway answers again");
                            failing = false;
                        }
                        h.record(Sample::from_overview(&o, now_ms()));
                    }
                    Ok(Err(e)) => {
                        // Once per outage, not every 10 s.
                        if !failing {
                            tracing::warn!("chart sampler: no overview from the gateway: {e}");
                            failing = true;
                        }
                    }
                    Err(e) => tracing::error!("chart sampler: the sampling task failed: {e}"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::api::{
        ApiError, CacheOverview, DiskInfo, ErrorKind, Request, Response, StoreHealth,
    };
    use std::sync::atomic::{AtomicU64, Ordering};

    fn s(at_secs: u64, up: u64, down: u64) -> Sample {
        Sample {
            at_ms: at_secs * 1000,
            uploaded_bytes: up,
            downloaded_bytes: down,
            cache_used_bytes: 100,
            sessions: 1,
        }
    }

    const T0: u64 = 1_700_000_100; // a multiple of 300

    #[test]
    fn rates_are_differences_per_second() {
        let h = History::new();
        h.record(s(T0, 1000, 0));
        assert!(h.series_at(Range::Hour, T0).times.is_empty(), "one reading");
        h.record(s(T0 + 10, 11_000, 5_000));
        h.record(Sample {
            at_ms: T0 * 1000 + 20_500,
            ..s(0, 11_000 + 21_000, 5_000)
        });
        let r = h.series_at(Range::Hour, T0 + 21);
        assert_eq!(r.times, vec![T0 + 10, T0 + 20]);
        assert_eq!(r.upload_bps, vec![1000.0, 2000.0]);
        assert_eq!(r.download_bps, vec![500.0, 0.0]);
        assert_eq!(r.cache_used, vec![100.0, 100.0]);
        assert_eq!(r.sessions, vec![1.0, 1.0]);
        assert_eq!((r.end_unix, r.span_secs), (T0 + 21, 3600));
    }

    #[test]
    fn a_counter_reset_gives_no_negative_or_huge_rate() {
        let h = History::new();
        h.record(s(T0, 5_000_000_000, 7_000_000));
        // The daemon restarted: counters start again from (almost) zero.
        h.record(s(T0 + 10, 2_000, 0));
        h.record(s(T0 + 20, 12_000, 100));
        let r = h.series_at(Range::Hour, T0 + 20);
        assert_eq!(r.upload_bps, vec![200.0, 1000.0]);
        assert_eq!(r.download_bps, vec![0.0, 10.0]);
        for v in r.upload_bps.iter().chain(&r.download_bps) {
            assert!(v.is_finite() && *v >= 0.0 && *v < 1e6, "{v}");
        }
    }

    #[test]
    fn a_clock_going_back_or_standing_still_divides_by_nothing() {
        let h = History::new();
        h.record(s(T0, 0, 0));
        h.record(s(T0, 1000, 0));
        h.record(s(T0 - 50, 2000, 0));
        assert!(h.series_at(Range::Hour, T0).times.is_empty());
        h.record(s(T0 - 40, 3000, 0));
        let r = h.series_at(Range::Hour, T0);
        assert_eq!(r.upload_bps, vec![100.0]);
    }

    #[test]
    fn the_hour_ring_keeps_the_last_360_points() {
        let h = History::new();
        for i in 0..=400u64 {
            h.record(s(T0 + i * 10, i * 10_000, 0));
        }
        let end = T0 + 4000;
        let r = h.series_at(Range::Hour, end);
        assert_eq!(r.times.len(), HOUR_POINTS);
        assert_eq!(*r.times.last().unwrap(), end);
        assert_eq!(r.times[0], end - 359 * 10);
        assert!(r.upload_bps.iter().all(|v| *v == 1000.0));
        // An hour later with no samples (the gateway was down): empty.
        assert!(h.series_at(Range::Hour, end + 3601).times.is_empty());
    }

    #[test]
    fn the_day_view_averages_throughput_and_keeps_peaks_per_5_minutes() {
        let h = History::new();
        h.record(s(T0, 0, 0));
        let mut up = 0;
        // 10 minutes at 10 s: the first five at 1000 B/s, then 3000 B/s;
        // one session spike to 9 in the second bucket.
        for i in 1..=60u64 {
            up += if i <= 30 { 10_000 } else { 30_000 };
            let mut x = s(T0 + i * 10, up, 0);
            if i == 45 {
                x.sessions = 9;
            }
            x.cache_used_bytes = i * 1000;
            h.record(x);
        }
        let r = h.series_at(Range::Day, T0 + 600);
        // Buckets [T0, T0+300): i = 1..=29; [T0+300, T0+600): i = 30..=59;
        // and the one just begun with i = 60.
        assert_eq!(r.times, vec![T0 + 150, T0 + 450, T0 + 600]);
        assert_eq!(r.upload_bps[0], 1000.0);
        assert!((r.upload_bps[1] - (1000.0 + 29.0 * 3000.0) / 30.0).abs() < 1e-9);
        assert_eq!(r.upload_bps[2], 3000.0);
        assert_eq!(r.sessions, vec![1.0, 9.0, 1.0]);
        assert_eq!(r.cache_used, vec![29_000.0, 59_000.0, 60_000.0]);
        assert_eq!(r.span_secs, 86_400);
    }

    #[test]
    fn the_day_ring_keeps_288_buckets() {
        let h = History::new();
        // One sample every 5 minutes for 300 buckets.
        for i in 0..=300u64 {
            h.record(s(T0 + i * DAY_BUCKET_SECS, i * 300, 0));
        }
        let end = T0 + 300 * DAY_BUCKET_SECS;
        let r = h.series_at(Range::Day, end);
        // 288 closed buckets + the current one, but only those in the
        // last 24 h.
        assert!(r.times.len() <= DAY_POINTS + 1, "{}", r.times.len());
        assert!(r.times.len() >= DAY_POINTS, "{}", r.times.len());
        assert!(r.times.iter().all(|t| *t >= end - 86_400));
        assert!(r.times.windows(2).all(|w| w[0] < w[1]));
        assert!(r.upload_bps.iter().all(|v| *v == 1.0));
    }

    /// A gateway whose counters grow 1 MiB per call, failing every third.
    struct Fake {
        calls: AtomicU64,
    }

    impl GatewayApi for Fake {
        fn call(&self, req: Request) -> Result<Response, ApiError> {
            assert!(matches!(req, Request::Overview));
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n.is_multiple_of(3) {
                return Err(ApiError::new(ErrorKind::Unavailable, "daemon busy"));
            }
            Ok(Response::Overview(Box::new(Overview {
                version: "t".into(),
                uptime_secs: n,
                store: StoreHealth::default(),
                cache: CacheOverview {
                    size: 1 << 30,
                    dirty_limit: 1 << 29,
                    used_bytes: n * 4096,
                    dirty_bytes: 0,
                    clean_bytes: 0,
                    uploading_bytes: 0,
                    upload_queue: 0,
                    disk: DiskInfo::default(),
                    homes: vec![],
                },
                users_total: 1,
                homes_mounted: 1,
                sessions: 2,
                metadata_interval_secs: 60,
                homes: vec![],
                alerts: vec![],
                uploaded_bytes: n << 20,
                downloaded_bytes: 0,
                cache_hits: 0,
                cache_misses: 0,
            })))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sampler_records_from_the_api_and_stops_with_the_history() {
        let h = Arc::new(History::new());
        let api = Arc::new(Fake {
            calls: AtomicU64::new(0),
        });
        let task = h
            .clone()
            .spawn_sampler(api.clone(), Duration::from_millis(20));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = h.series(Range::Hour);
            if r.times.len() >= 4 {
                assert!(r.upload_bps.iter().all(|v| *v > 0.0), "{r:?}");
                assert!(r.sessions.iter().all(|v| *v == 2.0));
                assert!(r.cache_used.windows(2).all(|w| w[0] < w[1]));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no samples: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(h);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the sampler outlived its history")
            .unwrap();
    }
}
