//! The audit log's page: newest first, paged.

use super::super::audit::AuditPage;
use super::super::layout::PageCtx;
use super::super::routes::Routes;
use super::super::AppState;
use super::users::Fmt;
use crate::gateway::api::{ApiError, ErrorKind};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

pub const PAGE_SIZE: usize = 50;

#[derive(askama::Template)]
#[template(path = "audit.html")]
struct AuditView {
    page: PageCtx,
    f: Fmt,
    log: Option<AuditPage>,
    page_no: usize,
    pages: usize,
}

#[derive(Deserialize, Default)]
struct Q {
    #[serde(default)]
    page: usize,
}

async fn show(State(st): State<AppState>, page: PageCtx, Query(q): Query<Q>) -> Response {
    let mut page = page.with_nav("audit");
    let st2 = st.clone();
    let offset = q.page * PAGE_SIZE;
    let log = tokio::task::spawn_blocking(move || st2.audit.page(offset, PAGE_SIZE))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let log = match log {
        Ok(l) => Some(l),
        Err(e) => {
            page.error(&ApiError::new(ErrorKind::Internal, e));
            None
        }
    };
    let pages = log
        .as_ref()
        .map(|l| l.total.div_ceil(PAGE_SIZE).max(1))
        .unwrap_or(1);
    super::render(&AuditView {
        page,
        f: Fmt,
        log,
        page_no: q.page,
        pages,
    })
}

pub fn routes() -> Routes {
    Routes::protected().get("/audit", show)
}
