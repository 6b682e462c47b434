//! The console's pages (askama templates in `templates/`). A gateway
//! error never becomes a 500 page: it shows as a banner on the page.

pub mod audit;
pub mod cache;
pub mod dashboard;
pub mod errors;
pub mod jobs;
pub mod shares;
pub mod snapshots;
pub mod users;

pub use super::layout::Banner;
use super::layout::PageCtx;
use super::routes::Routes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

pub use errors::not_found;

/// Render a template; a template that fails is a bug, said plainly.
pub fn render<T: askama::Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("page rendering failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "This page could not be rendered (a bug: see the gateway's log).",
            )
                .into_response()
        }
    }
}

/// Render with a status (an error page, a form with errors).
pub fn render_status<T: askama::Template>(status: StatusCode, t: &T) -> Response {
    let mut r = render(t);
    if r.status().is_success() {
        *r.status_mut() = status;
    }
    r
}

/// The `?done=KEY` of a redirect after a change: a translated banner.
pub fn done_banner(page: &PageCtx, done: Option<&str>) -> Vec<Banner> {
    match done {
        Some(k) if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            vec![Banner::ok(page.t(&format!("done.{k}")))]
        }
        _ => Vec::new(),
    }
}

/// Whether the request asked for HTML only for a part of a page (live
/// updates fetch fragments).
pub fn wants_fragment(h: &HeaderMap) -> bool {
    h.get("x-fragment").is_some()
}

pub fn routes() -> Routes {
    Routes::protected()
        .merge(dashboard::routes())
        .merge(users::routes())
        .merge(shares::routes())
        .merge(snapshots::routes())
        .merge(cache::routes())
        .merge(jobs::routes())
        .merge(audit::routes())
}

#[cfg(test)]
mod tests {
    use crate::web::i18n::Lang;

    /// Every key a template or handler asks for is in the catalogs (a
    /// missing one would show as its key).
    #[test]
    fn every_key_used_is_translated() {
        let mut used = Vec::new();
        let dirs = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/src/web"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/src/web/pages"),
        ];
        for d in dirs {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                for (i, _) in text.match_indices(".t(\"") {
                    let rest = &text[i + 4..];
                    let key = &rest[..rest.find('"').unwrap_or(0)];
                    if key.contains('.') && !key.contains(' ') && !key.ends_with(".html") {
                        used.push(key.to_string());
                    }
                }
            }
        }
        // Keys built at run time.
        for code in [
            "store_unreachable",
            "token_expiring",
            "dirty_near_limit",
            "metadata_not_shipped",
            "cache_disk_nearly_full",
            "mount_failed",
            "upload_errors",
        ] {
            used.push(format!("alert.{code}"));
        }
        for s in ["running", "succeeded", "failed"] {
            used.push(format!("job.{s}"));
        }
        for d in [
            "user_added",
            "mount",
            "unmount",
            "disable",
            "enable",
            "password",
        ] {
            used.push(format!("done.{d}"));
        }
        assert!(used.len() > 100, "{used:?}");
        let keys = Lang::En.keys();
        let missing: Vec<_> = used
            .iter()
            .filter(|k| !keys.contains(&k.as_str()))
            .collect();
        assert!(missing.is_empty(), "not in the catalogs: {missing:?}");
    }

    #[test]
    fn alert_codes_have_the_keys_assumed_above() {
        use crate::gateway::api::AlertCode::*;
        for c in [
            StoreUnreachable,
            TokenExpiring,
            DirtyNearLimit,
            MetadataNotShipped,
            CacheDiskNearlyFull,
            MountFailed,
            UploadErrors,
        ] {
            let code = serde_json::to_value(c).unwrap();
            let key = format!("alert.{}", code.as_str().unwrap());
            assert!(Lang::Ja.keys().contains(&key.as_str()), "{key}");
        }
    }
}
