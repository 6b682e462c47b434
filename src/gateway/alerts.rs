//! Problems worth an admin's attention, computed from the figures the
//! daemon already has against fixed thresholds.

use super::api::{Alert, AlertCode, AlertLevel, CacheOverview, HomeStatus, StoreHealth};
use crate::clock::unix_now;

/// A token with less life than this is about to expire.
pub const TOKEN_WARN_SECS: i64 = 300;
/// A failed mount is shown this long.
pub const MOUNT_FAILURE_WINDOW_SECS: u64 = 15 * 60;

pub struct Inputs<'a> {
    pub store: &'a StoreHealth,
    pub cache: &'a CacheOverview,
    pub homes: &'a [HomeStatus],
    pub metadata_interval_secs: u64,
    /// (subject, message, at_unix) of recent failed mounts.
    pub failed_mounts: Vec<(String, String, u64)>,
}

fn alert(level: AlertLevel, code: AlertCode, subject: Option<&str>, detail: String) -> Alert {
    Alert {
        level,
        code,
        subject: subject.map(String::from),
        detail: Some(detail),
    }
}

pub fn compute(i: &Inputs<'_>) -> Vec<Alert> {
    let mut v = Vec::new();
    if i.store.reachable == Some(false) {
        v.push(alert(
            AlertLevel::Critical,
            AlertCode::StoreUnreachable,
            None,
            format!(
                "{}: {}",
                i.store.url,
                i.store.error.clone().unwrap_or_default()
            ),
        ));
    }
    if let Some(left) = i.store.token_expires_in_secs {
        if left < TOKEN_WARN_SECS {
            v.push(alert(
                if left <= 0 {
                    AlertLevel::Critical
                } else {
                    AlertLevel::Warning
                },
                AlertCode::TokenExpiring,
                None,
                format!("{left} s left"),
            ));
        }
    }
    for h in i.homes {
        let c = &h.cache;
        if c.dirty_limit > 0 && c.dirty_bytes * 10 > c.dirty_limit * 9 {
            v.push(alert(
                AlertLevel::Warning,
                AlertCode::DirtyNearLimit,
                Some(&h.user),
                format!("{} of {} bytes", c.dirty_bytes, c.dirty_limit),
            ));
        }
        if let Some(age) = h.metadata_age_secs {
            if i.metadata_interval_secs > 0 && age > 2 * i.metadata_interval_secs {
                v.push(alert(
                    AlertLevel::Warning,
                    AlertCode::MetadataNotShipped,
                    Some(&h.user),
                    format!("{age} s (interval {} s)", i.metadata_interval_secs),
                ));
            }
        }
        if let Some(e) = &c.last_error {
            v.push(alert(
                AlertLevel::Warning,
                AlertCode::UploadErrors,
                Some(&h.user),
                e.clone(),
            ));
        }
    }
    let d = &i.cache.disk;
    if d.total_bytes > 0 && d.free_bytes * 10 < d.total_bytes {
        v.push(alert(
            AlertLevel::Warning,
            AlertCode::CacheDiskNearlyFull,
            None,
            format!(
                "{}: {} of {} bytes free",
                d.path.display(),
                d.free_bytes,
                d.total_bytes
            ),
        ));
    }
    let since = unix_now().saturating_sub(MOUNT_FAILURE_WINDOW_SECS);
    for (who, msg, at) in &i.failed_mounts {
        if *at >= since {
            v.push(alert(
                AlertLevel::Warning,
                AlertCode::MountFailed,
                Some(who),
                msg.clone(),
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::api::DiskInfo;

    fn cache(total: u64, free: u64) -> CacheOverview {
        CacheOverview {
            size: 0,
            dirty_limit: 0,
            used_bytes: 0,
            dirty_bytes: 0,
            clean_bytes: 0,
            uploading_bytes: 0,
            upload_queue: 0,
            disk: DiskInfo {
                path: "/c".into(),
                total_bytes: total,
                free_bytes: free,
            },
            homes: vec![],
        }
    }

    fn home(dirty: u64, limit: u64, age: u64, err: Option<&str>) -> HomeStatus {
        HomeStatus {
            user: "alice".into(),
            mountpoint: "/h".into(),
            store: "s".into(),
            connections: 0,
            smbd_pids: vec![],
            idle_secs: None,
            mounted_secs: 0,
            cache: crate::cache::CacheStats {
                dirty_bytes: dirty,
                dirty_limit: limit,
                last_error: err.map(String::from),
                ..Default::default()
            },
            metadata_age_secs: Some(age),
            metadata_generation: 1,
            quota: Default::default(),
            quota_use: None,
        }
    }

    #[test]
    fn thresholds() {
        let ok_store = StoreHealth {
            reachable: Some(true),
            token_expires_in_secs: Some(3600),
            ..Default::default()
        };
        let c = cache(100, 50);
        let quiet = [home(10, 100, 10, None)];
        let none = compute(&Inputs {
            store: &ok_store,
            cache: &c,
            homes: &quiet,
            metadata_interval_secs: 30,
            failed_mounts: vec![],
        });
        assert!(none.is_empty(), "{none:?}");
        let bad_store = StoreHealth {
            reachable: Some(false),
            token_expires_in_secs: Some(100),
            ..Default::default()
        };
        let c = cache(100, 5);
        let loud = [home(95, 100, 61, Some("503"))];
        let codes: Vec<AlertCode> = compute(&Inputs {
            store: &bad_store,
            cache: &c,
            homes: &loud,
            metadata_interval_secs: 30,
            failed_mounts: vec![
                ("bob".into(), "x".into(), unix_now()),
                ("old".into(), "x".into(), 0),
            ],
        })
        .into_iter()
        .map(|a| a.code)
        .collect();
        assert_eq!(
            codes,
            vec![
                AlertCode::StoreUnreachable,
                AlertCode::TokenExpiring,
                AlertCode::DirtyNearLimit,
                AlertCode::MetadataNotShipped,
                AlertCode::UploadErrors,
                AlertCode::CacheDiskNearlyFull,
                AlertCode::MountFailed,
            ]
        );
    }
}
