//! The console's pages (askama templates in `templates/`). A gateway
//! error never becomes a 500 page: it shows as a banner on the page.

pub mod audit;
pub mod cache;
pub mod dashboard;
pub mod errors;
pub mod jobs;
pub mod shares;
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
        .merge(cache::routes())
        .merge(jobs::routes())
        .merge(audit::routes())
}
