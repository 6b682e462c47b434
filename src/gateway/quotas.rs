//! Quotas of homes and team shares as the gateway keeps them: set in the
//! user map or the share list (so they are in the recovery bundle and
//! survive a rebuild), handed to mounted engines at once, and watched
//! for the 90 % warning.

use super::api::{Alert, AlertCode, AlertLevel, FsTarget, Quota};
use super::daemon::{share_key, Gateway};
use super::shares::{self, ShareError};
use super::usermap::UserMapError;

pub use super::api::QUOTA_WARN_FILL as WARN_FILL;

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Map(#[from] UserMapError),
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// Set (an empty quota: lift) the quota of a home or a share.
pub fn set(gw: &Gateway, target: &FsTarget, q: Quota) -> Result<String, QuotaError> {
    let (key, live) = match target {
        FsTarget::User(u) => {
            gw.users.set_quota(u, q)?;
            (u.clone(), gw.push_quota(u, q))
        }
        FsTarget::Share(s) => {
            // shares::set_quota pushes it (under the share list's lock).
            shares::set_quota(gw, s, q)?;
            let key = share_key(s);
            let live = gw.sessions_of(&key).is_some();
            (key, live)
        }
    };
    let what = target.to_string();
    let text = if q.is_none() {
        format!("quota of {what} lifted")
    } else {
        format!("quota of {what} set to {q}")
    };
    gw.events.info(&key, text.clone());
    Ok(if live {
        format!("{text} (in force now)")
    } else {
        format!("{text} (in force from its next mount)")
    })
}

/// Warnings for mounted homes and shares at 90 % of a quota or more
/// (critical once full). Only mounted ones: others cannot grow.
pub fn alerts(gw: &Gateway) -> Vec<Alert> {
    let mut v = Vec::new();
    for (key, engine) in gw.engines() {
        let q = engine.fs.quota();
        let Ok(u) = engine.fs.usage() else { continue };
        let Some(fill) = q.fill(&u) else { continue };
        if fill < WARN_FILL {
            continue;
        }
        v.push(Alert {
            level: if fill >= 1.0 {
                AlertLevel::Critical
            } else {
                AlertLevel::Warning
            },
            code: AlertCode::QuotaNearlyFull,
            subject: Some(key),
            detail: Some(format!(
                "{:.0} % of the quota {q} used ({} bytes, {} files)",
                fill * 100.0,
                u.bytes,
                u.files
            )),
        });
    }
    v
}
