//! The cache: the global budget and each home's share of it; change the
//! budget online; evict clean blocks.

use super::super::auth::Admin;
use super::super::layout::PageCtx;
use super::super::routes::Routes;
use super::super::{act, ask, AppState};
use super::users::Fmt;
use crate::gateway::api::{CacheOverview, GatewayApiExt, Request};
use crate::gateway::config::parse_size;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(askama::Template)]
#[template(path = "cache.html")]
struct CachePage {
    page: PageCtx,
    f: Fmt,
    cache: Option<CacheOverview>,
    size: String,
    dirty_limit: String,
    errors: BTreeMap<String, String>,
}

impl CachePage {
    fn err(&self, field: &str) -> Option<&String> {
        self.errors.get(field)
    }
    fn pct(&self, a: impl super::super::fmt::Count, b: impl super::super::fmt::Count) -> u64 {
        super::super::fmt::percent(a.n(), b.n())
    }
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn page_with(
    st: &AppState,
    mut page: PageCtx,
    form: Option<BudgetForm>,
    errors: BTreeMap<String, String>,
    status: StatusCode,
) -> Response {
    let cache = match ask(st, |api| api.cache()).await {
        Ok(c) => Some(c),
        Err(e) => {
            page.error(&e);
            None
        }
    };
    let (size, dirty_limit) = match (&form, &cache) {
        (Some(f), _) => (f.size.clone(), f.dirty_limit.clone()),
        (None, Some(c)) => (
            super::super::fmt::bytes(c.size)
                .replace(' ', "")
                .replace("iB", ""),
            super::super::fmt::bytes(c.dirty_limit)
                .replace(' ', "")
                .replace("iB", ""),
        ),
        _ => (String::new(), String::new()),
    };
    super::render_status(
        status,
        &CachePage {
            page,
            f: Fmt,
            cache,
            size,
            dirty_limit,
            errors,
        },
    )
}

async fn show(State(st): State<AppState>, page: PageCtx, Query(q): Query<DoneQuery>) -> Response {
    let mut page = page.with_nav("cache");
    page.banners = super::done_banner(&page, q.done.as_deref());
    page_with(&st, page, None, BTreeMap::new(), StatusCode::OK).await
}

#[derive(Deserialize, Default, Clone)]
struct BudgetForm {
    #[serde(default)]
    size: String,
    #[serde(default)]
    dirty_limit: String,
}

async fn set_budget(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Form(form): Form<BudgetForm>,
) -> Response {
    let mut page = page.with_nav("cache");
    let mut errors = BTreeMap::new();
    let size = parse_size(form.size.trim()).map_err(|e| {
        errors.insert("size".into(), format!("{} ({e})", page.t("err.size")));
    });
    let dirty = if form.dirty_limit.trim().is_empty() {
        Ok(None)
    } else {
        parse_size(form.dirty_limit.trim()).map(Some).map_err(|e| {
            errors.insert(
                "dirty_limit".into(),
                format!("{} ({e})", page.t("err.size")),
            );
        })
    };
    if let (Ok(size), Ok(dirty_limit)) = (size, dirty) {
        let r = act(&st, &admin, "cache_set_budget", None, move |api| {
            api.done(Request::CacheSetBudget { size, dirty_limit })
        })
        .await;
        match r {
            Ok(_) => return Redirect::to("/cache?done=budget_set").into_response(),
            Err(e) => match e.field.as_deref() {
                Some(f @ ("size" | "dirty_limit")) => {
                    errors.insert(f.to_string(), e.message.clone());
                }
                _ => page.error(&e),
            },
        }
    }
    page_with(
        &st,
        page,
        Some(form),
        errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

#[derive(Deserialize, Default)]
struct EvictForm {
    #[serde(default)]
    user: Option<String>,
}

async fn evict(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Form(f): Form<EvictForm>,
) -> Response {
    let mut page = page.with_nav("cache");
    let user = f.user.filter(|u| !u.is_empty());
    let u2 = user.clone();
    let r = act(&st, &admin, "cache_evict", user.as_deref(), move |api| {
        api.done(Request::CacheEvict { user: u2 })
    })
    .await;
    match r {
        Ok(msg) => {
            page.banners.push(super::Banner::ok(msg));
            page_with(&st, page, None, BTreeMap::new(), StatusCode::OK).await
        }
        Err(e) => {
            page.error(&e);
            let status = super::super::error::status_of(e.kind);
            page_with(&st, page, None, BTreeMap::new(), status).await
        }
    }
}

pub fn routes() -> Routes {
    Routes::protected()
        .get("/cache", show)
        .post("/cache/budget", set_budget)
        .post("/cache/evict", evict)
}
