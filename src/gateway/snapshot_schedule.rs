//! Scheduled snapshots (`[snapshots]` in gateway.toml): each mounted home
//! and share gets one per period while it changes, and the newest of each
//! hour, day and week are kept up to the configured counts. Snapshots
//! taken by hand are never pruned here.

use super::config::{GatewayConfig, RetentionOverride, SnapshotsSection};
use super::daemon::Gateway;
use crate::meta::snapshots::SnapshotInfo;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What to keep of one filesystem's scheduled snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Week,
}

impl Period {
    pub fn label(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
        }
    }

    /// Which hour, day or ISO week (from Monday, UTC) unix time `t` is in.
    pub fn bucket(self, t: i64) -> i64 {
        match self {
            Period::Hour => t.div_euclid(3600),
            Period::Day => t.div_euclid(86400),
            // 1970-01-01 was a Thursday: shift so weeks start on Monday.
            Period::Week => (t.div_euclid(86400) + 3).div_euclid(7),
        }
    }
}

impl Retention {
    /// The policy for a mounted filesystem's key (`user` or `share:NAME`).
    pub fn for_key(cfg: &SnapshotsSection, key: &str) -> Retention {
        let o = match key.strip_prefix("share:") {
            Some(share) => cfg.share.get(share),
            None => cfg.user.get(key),
        };
        let d = RetentionOverride::default();
        let o = o.unwrap_or(&d);
        Retention {
            hourly: o.hourly.unwrap_or(cfg.hourly),
            daily: o.daily.unwrap_or(cfg.daily),
            weekly: o.weekly.unwrap_or(cfg.weekly),
        }
    }

    /// How often one is taken: the shortest period kept.
    pub fn period(&self) -> Option<Period> {
        [
            (self.hourly, Period::Hour),
            (self.daily, Period::Day),
            (self.weekly, Period::Week),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map(|(_, p)| p)
    }

    /// Whether a scheduled snapshot is due at `now`, given the newest
    /// scheduled one (`(created, changed since)`).
    pub fn due(&self, now: i64, newest: Option<(i64, bool)>) -> bool {
        let Some(p) = self.period() else {
            return false;
        };
        match newest {
            None => true,
            Some((created, changed)) => changed && p.bucket(created) != p.bucket(now),
        }
    }

    /// Ids of scheduled snapshots (`(id, created)`, any order) to delete:
    /// all but the newest of each of the last `hourly` hours, `daily` days
    /// and `weekly` weeks that have one.
    pub fn to_prune(&self, snaps: &[(i64, i64)]) -> Vec<i64> {
        let mut newest_first = snaps.to_vec();
        newest_first.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        let mut keep = BTreeSet::new();
        for (n, p) in [
            (self.hourly, Period::Hour),
            (self.daily, Period::Day),
            (self.weekly, Period::Week),
        ] {
            let mut last = None;
            let mut kept = 0;
            for &(id, t) in &newest_first {
                if kept >= n {
                    break;
                }
                let b = p.bucket(t);
                if last != Some(b) {
                    keep.insert(id);
                    last = Some(b);
                    kept += 1;
                }
            }
        }
        let mut out: Vec<i64> = newest_first
            .iter()
            .map(|&(id, _)| id)
            .filter(|id| !keep.contains(id))
            .collect();
        out.sort();
        out
    }
}

fn scheduled(s: &SnapshotInfo) -> bool {
    s.label != "manual"
}

/// One look at one filesystem: take a snapshot if due, prune the rest.
fn tick(key: &str, fs: &crate::fs::Fs, r: &Retention, now: i64) {
    let list = match fs.snapshot_list() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(fs = key, "snapshot schedule: listing failed: {e}");
            return;
        }
    };
    let newest = list.iter().rev().find(|s| scheduled(s));
    if r.due(now, newest.map(|s| (s.created, fs.changed_since(s)))) {
        let label = r.period().map(Period::label).unwrap_or("hourly");
        match fs.snapshot_create(label) {
            Ok(s) => tracing::info!(fs = key, name = %s.name, "scheduled snapshot taken"),
            Err(e) => tracing::warn!(fs = key, "scheduled snapshot failed (retried): {e}"),
        }
    }
    let list = fs.snapshot_list().unwrap_or_default();
    let auto: Vec<(i64, i64)> = list
        .iter()
        .filter(|s| scheduled(s))
        .map(|s| (s.id, s.created))
        .collect();
    for id in r.to_prune(&auto) {
        match fs.snapshot_delete(id) {
            Ok(s) => tracing::info!(fs = key, name = %s.name, "expired snapshot deleted"),
            Err(e) => tracing::warn!(fs = key, "deleting an expired snapshot failed: {e}"),
        }
    }
}

/// The background loop of `swiftgate serve`.
pub fn start(gw: Arc<Gateway>, cfg: GatewayConfig) {
    let every = cfg
        .snapshots
        .check_interval
        .max(std::time::Duration::from_secs(1));
    std::thread::Builder::new()
        .name("snapshots".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if gw.stopping() {
                return;
            }
            let now = crate::clock::unix_now() as i64;
            for (key, engine) in gw.engines() {
                tick(
                    &key,
                    &engine.fs,
                    &Retention::for_key(&cfg.snapshots, &key),
                    now,
                );
            }
        })
        .ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const D: i64 = 86400;

    #[test]
    fn buckets() {
        // 2026-11-30 is a Monday: a new ISO week starts at its midnight.
        let monday = 1_795_996_800; // 2026-11-30 00:00 UTC
        assert_eq!(
            crate::meta::snapshots::gmt_name(monday),
            "@GMT-2026.11.30-00.00.00"
        );
        assert_eq!(
            Period::Week.bucket(monday),
            Period::Week.bucket(monday + 6 * D + 23 * H)
        );
        assert_ne!(Period::Week.bucket(monday), Period::Week.bucket(monday - 1));
        assert_eq!(
            Period::Day.bucket(monday),
            Period::Day.bucket(monday + D - 1)
        );
        assert_ne!(
            Period::Hour.bucket(monday + H - 1),
            Period::Hour.bucket(monday + H)
        );
    }

    #[test]
    fn due_once_per_period_and_only_after_a_change() {
        let r = Retention {
            hourly: 24,
            daily: 14,
            weekly: 8,
        };
        let t = 1_795_996_800;
        assert!(r.due(t, None));
        assert!(!r.due(t + 59 * 60, Some((t, true))), "same hour");
        assert!(r.due(t + H, Some((t, true))));
        assert!(!r.due(t + 5 * H, Some((t, false))), "nothing changed");
        let daily = Retention {
            hourly: 0,
            daily: 7,
            weekly: 0,
        };
        assert_eq!(daily.period(), Some(Period::Day));
        assert!(!daily.due(t + 5 * H, Some((t, true))));
        assert!(daily.due(t + D, Some((t, true))));
        assert!(!Retention::default().due(t, None));
    }

    #[test]
    fn prune_keeps_the_newest_of_each_period() {
        let t0 = 1_795_996_800; // Monday 00:00
                                // One snapshot every hour for 10 days, plus a second in one hour.
        let mut snaps: Vec<(i64, i64)> = (0..240).map(|i| (i + 1, t0 + i * H)).collect();
        snaps.push((1000, t0 + 239 * H + 60));
        let r = Retention {
            hourly: 24,
            daily: 7,
            weekly: 2,
        };
        let del = r.to_prune(&snaps);
        let kept: BTreeSet<i64> = snaps
            .iter()
            .map(|s| s.0)
            .filter(|id| !del.contains(id))
            .collect();
        // The last 24 hours (the newest in the doubled hour), then the
        // newest of each earlier day up to 7 days (day k's newest has id
        // (k+1)*24), and of 2 weeks (the first ends with day 6).
        assert!(kept.contains(&1000) && !kept.contains(&240));
        assert!((217..=239).all(|id| kept.contains(&id)));
        for day in 3..9 {
            assert!(kept.contains(&((day + 1) * 24)), "day {day}");
        }
        assert!(!kept.contains(&72), "day 2 is past the 7 days");
        assert!(kept.contains(&(7 * 24)), "end of the first week");
        assert_eq!(kept.len(), 24 + 6, "{kept:?}");
        assert!(!kept.contains(&1));
        // Keeping nothing deletes all; an empty list deletes nothing.
        assert_eq!(Retention::default().to_prune(&snaps).len(), snaps.len());
        assert!(r.to_prune(&[]).is_empty());
    }

    #[test]
    fn overrides_per_user_and_share() {
        let cfg: SnapshotsSection =
            toml::from_str("hourly = 12\n[user.alice]\nhourly = 0\n[share.finance]\ndaily = 90\n")
                .unwrap();
        assert_eq!(
            Retention::for_key(&cfg, "alice"),
            Retention {
                hourly: 0,
                daily: 14,
                weekly: 8
            }
        );
        assert_eq!(
            Retention::for_key(&cfg, "share:finance"),
            Retention {
                hourly: 12,
                daily: 90,
                weekly: 8
            }
        );
        assert_eq!(
            Retention::for_key(&cfg, "bob"),
            Retention {
                hourly: 12,
                daily: 14,
                weekly: 8
            }
        );
    }
}
