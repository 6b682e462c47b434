//! A home's or a share's snapshots (Previous Versions): the list with what
//! each holds and costs, taking one now, deleting one, and restoring a
//! file or folder from one.

use super::super::auth::Admin;
use super::super::fmt;
use super::super::layout::PageCtx;
use super::super::routes::Routes;
use super::super::{act, ask, AppState};
use super::Banner;
use crate::gateway::api::{FsTarget, GatewayApiExt, Request, SnapshotList};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

pub struct Fmt;

impl Fmt {
    pub fn bytes(&self, n: &u64) -> String {
        fmt::bytes(*n)
    }
    pub fn enc(&self, s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }
}

#[derive(askama::Template)]
#[template(path = "snapshots.html")]
struct SnapshotsPage {
    page: PageCtx,
    f: Fmt,
    /// `users` or `shares`: where the page sits.
    kind: &'static str,
    name: String,
    list: Option<SnapshotList>,
    /// The restore form, as sent (kept on an error).
    restore_path: String,
}

impl SnapshotsPage {
    fn nav_key(&self) -> &'static str {
        if self.kind == "shares" {
            "nav.shares"
        } else {
            "nav.users"
        }
    }
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

#[derive(Deserialize, Default)]
struct ActionForm {
    #[serde(default)]
    snapshot: String,
    #[serde(default)]
    path: String,
}

fn target(kind: &str, name: &str) -> FsTarget {
    if kind == "shares" {
        FsTarget::Share(name.to_string())
    } else {
        FsTarget::User(name.to_string())
    }
}

async fn render(
    st: &AppState,
    mut page: PageCtx,
    kind: &'static str,
    name: String,
    restore_path: String,
    status: StatusCode,
) -> Response {
    let t = target(kind, &name);
    let list = match ask(st, move |api| api.snapshots(t)).await {
        Ok(l) => Some(l),
        Err(e) => {
            page.error(&e);
            None
        }
    };
    let status = if list.is_none() && status == StatusCode::OK {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    super::render_status(
        status,
        &SnapshotsPage {
            page,
            f: Fmt,
            kind,
            name,
            list,
            restore_path,
        },
    )
}

async fn show(
    State(st): State<AppState>,
    page: PageCtx,
    Path(name): Path<String>,
    Query(q): Query<DoneQuery>,
    kind: &'static str,
) -> Response {
    let mut page = page.with_nav(kind);
    page.banners
        .extend(super::done_banner(&page, q.done.as_deref()));
    render(&st, page, kind, name, String::new(), StatusCode::OK).await
}

async fn action(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Path(name): Path<String>,
    Form(f): Form<ActionForm>,
    kind: &'static str,
    what: &'static str,
) -> Response {
    let page = page.with_nav(kind);
    let target = target(kind, &name);
    let (op, req) = match what {
        "create" => ("snapshot_create", Request::SnapshotCreate { target }),
        "delete" => (
            "snapshot_delete",
            Request::SnapshotDelete {
                target,
                name: f.snapshot.clone(),
            },
        ),
        _ => (
            "snapshot_restore",
            Request::SnapshotRestore {
                target,
                name: f.snapshot.clone(),
                path: f.path.clone(),
            },
        ),
    };
    let r = act(&st, &admin, op, Some(&name), move |api| api.call(req)).await;
    match r {
        Ok(_) => Redirect::to(&format!(
            "/{kind}/{}/snapshots?done=snapshot_{what}",
            Fmt.enc(&name)
        ))
        .into_response(),
        Err(e) => {
            let mut page = page;
            let status = super::super::error::status_of(e.kind);
            page.banners.push(Banner::error(&page, &e));
            render(&st, page, kind, name, f.path, status).await
        }
    }
}

macro_rules! handlers {
    ($kind:literal) => {{
        let show = |st, page, path, q| Box::pin(show(st, page, path, q, $kind));
        let create = |st, admin, page, path, form| {
            Box::pin(action(st, admin, page, path, form, $kind, "create"))
        };
        let delete = |st, admin, page, path, form| {
            Box::pin(action(st, admin, page, path, form, $kind, "delete"))
        };
        let restore = |st, admin, page, path, form| {
            Box::pin(action(st, admin, page, path, form, $kind, "restore"))
        };
        (show, create, delete, restore)
    }};
}

pub fn routes() -> Routes {
    let (us, uc, ud, ur) = handlers!("users");
    let (ss, sc, sd, sr) = handlers!("shares");
    Routes::protected()
        .get("/users/{name}/snapshots", us)
        .post("/users/{name}/snapshots", uc)
        .post("/users/{name}/snapshots/delete", ud)
        .post("/users/{name}/snapshots/restore", ur)
        .get("/shares/{name}/snapshots", ss)
        .post("/shares/{name}/snapshots", sc)
        .post("/shares/{name}/snapshots/delete", sd)
        .post("/shares/{name}/snapshots/restore", sr)
}
