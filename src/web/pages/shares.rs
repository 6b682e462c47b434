//! Team shares: list, create, edit members, remove; each shows the
//! smb.conf section the gateway generated and testparm's verdict.

use super::super::auth::Admin;
use super::super::layout::PageCtx;
use super::super::routes::Routes;
use super::super::{act, ask, AppState};
use super::users::Fmt;
use crate::gateway::api::{FsTarget, GatewayApiExt, Request, ShareSpec, ShareStatus};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "shares.html")]
struct SharesPage {
    page: PageCtx,
    f: Fmt,
    shares: Option<Vec<ShareStatus>>,
}

async fn list(State(st): State<AppState>, page: PageCtx, Query(q): Query<DoneQuery>) -> Response {
    let mut page = page.with_nav("shares");
    page.banners = super::done_banner(&page, q.done.as_deref());
    let shares = match ask(&st, |api| api.shares()).await {
        Ok(s) => Some(s),
        Err(e) => {
            page.error(&e);
            None
        }
    };
    super::render(&SharesPage {
        page,
        f: Fmt,
        shares,
    })
}

/// The create/edit form (members as typed: names separated by spaces or
/// commas).
#[derive(Deserialize, Default, Clone)]
struct ShareForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    members: String,
    #[serde(default)]
    read_only: String,
    /// "", "on" or "off" (empty: as configured).
    #[serde(default)]
    recycle: String,
    /// Days, or empty (as configured).
    #[serde(default)]
    recycle_keep_days: String,
}

fn names(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

impl ShareForm {
    fn spec(&self) -> ShareSpec {
        ShareSpec {
            name: self.name.trim().to_string(),
            comment: self.comment.trim().to_string(),
            group: Some(self.group.trim().to_string()).filter(|g| !g.is_empty()),
            members: Some(names(&self.members)),
            read_only: names(&self.read_only),
            recycle: match self.recycle.as_str() {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            },
            // Checked by `keep_days_ok` first.
            recycle_keep_days: self.recycle_keep_days.trim().parse().ok(),
        }
    }
    fn keep_days_ok(&self) -> bool {
        let t = self.recycle_keep_days.trim();
        t.is_empty() || t.parse::<u32>().is_ok()
    }
    fn of(s: &ShareStatus) -> ShareForm {
        ShareForm {
            name: s.spec.name.clone(),
            comment: s.spec.comment.clone(),
            group: s.group.clone(),
            members: s.members.join(" "),
            read_only: s.spec.read_only.join(" "),
            recycle: match s.spec.recycle {
                Some(true) => "on".into(),
                Some(false) => "off".into(),
                None => String::new(),
            },
            recycle_keep_days: s
                .spec
                .recycle_keep_days
                .map(|d| d.to_string())
                .unwrap_or_default(),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "share.html")]
struct SharePage {
    page: PageCtx,
    f: Fmt,
    /// None: a new share.
    status: Option<ShareStatus>,
    form: ShareForm,
    errors: BTreeMap<String, String>,
}

impl SharePage {
    fn err(&self, field: &str) -> Option<&String> {
        self.errors.get(field)
    }
    fn action(&self) -> String {
        match &self.status {
            Some(s) => format!("/shares/{}", self.f.enc(&s.spec.name)),
            None => "/new/share".into(),
        }
    }
}

async fn new_form(page: PageCtx) -> Response {
    super::render(&SharePage {
        page: page.with_nav("shares"),
        f: Fmt,
        status: None,
        form: ShareForm::default(),
        errors: BTreeMap::new(),
    })
}

async fn find(
    st: &AppState,
    name: &str,
) -> Result<Option<ShareStatus>, crate::gateway::api::ApiError> {
    let name = name.to_string();
    ask(st, move |api| api.shares())
        .await
        .map(|v| v.into_iter().find(|s| s.spec.name == name))
}

async fn show(
    st: &AppState,
    mut page: PageCtx,
    name: String,
    form: Option<ShareForm>,
    errors: BTreeMap<String, String>,
    status: StatusCode,
) -> Response {
    match find(st, &name).await {
        Ok(Some(s)) => {
            let form = form.unwrap_or_else(|| ShareForm::of(&s));
            super::render_status(
                status,
                &SharePage {
                    page,
                    f: Fmt,
                    status: Some(s),
                    form,
                    errors,
                },
            )
        }
        Ok(None) => super::not_found(axum::http::HeaderMap::new()).await,
        Err(e) => {
            page.error(&e);
            super::render_status(
                super::super::error::status_of(e.kind),
                &SharesPage {
                    page,
                    f: Fmt,
                    shares: None,
                },
            )
        }
    }
}

async fn detail(
    State(st): State<AppState>,
    page: PageCtx,
    Path(name): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let mut page = page.with_nav("shares");
    page.banners = super::done_banner(&page, q.done.as_deref());
    show(&st, page, name, None, BTreeMap::new(), StatusCode::OK).await
}

fn field_of(e: &crate::gateway::api::ApiError) -> Option<String> {
    e.field.as_deref().map(|f| match f {
        "members" | "member" => "members".to_string(),
        other => other.to_string(),
    })
}

async fn create(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Form(form): Form<ShareForm>,
) -> Response {
    let mut page = page.with_nav("shares");
    let mut errors = BTreeMap::new();
    if form.name.trim().is_empty() {
        errors.insert("name".into(), page.t("err.share_name_required").to_string());
    } else if !form.keep_days_ok() {
        errors.insert(
            "recycle_keep_days".into(),
            page.t("err.keep_days").to_string(),
        );
    } else {
        let spec = form.spec();
        let name = spec.name.clone();
        match act(&st, &admin, "share_add", Some(&name), move |api| {
            api.done(Request::ShareAdd(spec))
        })
        .await
        {
            Ok(_) => {
                return Redirect::to(&format!("/shares/{}?done=share_added", Fmt.enc(&name)))
                    .into_response()
            }
            Err(e) => match field_of(&e) {
                Some(f) => {
                    errors.insert(f, e.message.clone());
                }
                None => page.error(&e),
            },
        }
    }
    super::render_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &SharePage {
            page,
            f: Fmt,
            status: None,
            form,
            errors,
        },
    )
}

async fn update(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Path(name): Path<String>,
    Form(mut form): Form<ShareForm>,
) -> Response {
    let mut page = page.with_nav("shares");
    form.name = name.clone();
    if !form.keep_days_ok() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "recycle_keep_days".into(),
            page.t("err.keep_days").to_string(),
        );
        return show(
            &st,
            page,
            name,
            Some(form),
            errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let spec = form.spec();
    match act(&st, &admin, "share_update", Some(&name), move |api| {
        api.done(Request::ShareUpdate(spec))
    })
    .await
    {
        Ok(_) => {
            Redirect::to(&format!("/shares/{}?done=share_updated", Fmt.enc(&name))).into_response()
        }
        Err(e) => {
            let status = super::super::error::status_of(e.kind);
            let mut errors = BTreeMap::new();
            match field_of(&e) {
                Some(f) => {
                    errors.insert(f, e.message.clone());
                }
                None => page.error(&e),
            }
            show(&st, page, name, Some(form), errors, status).await
        }
    }
}

#[derive(Deserialize)]
struct QuotaForm {
    #[serde(default)]
    quota: String,
}

async fn quota(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Path(name): Path<String>,
    Form(form): Form<QuotaForm>,
) -> Response {
    let mut page = page.with_nav("shares");
    let r = match form.quota.parse::<crate::gateway::api::Quota>() {
        Ok(quota) => {
            let req = Request::QuotaSet {
                target: crate::gateway::api::FsTarget::Share(name.clone()),
                quota,
            };
            act(&st, &admin, "quota_set", Some(&name), move |api| {
                api.done(req)
            })
            .await
            .map(|_| ())
        }
        Err(e) => Err(crate::gateway::api::ApiError::invalid("quota", e)),
    };
    match r {
        Ok(()) => Redirect::to(&format!("/shares/{}?done=quota", Fmt.enc(&name))).into_response(),
        Err(e) => {
            let status = super::super::error::status_of(e.kind);
            page.error(&e);
            show(&st, page, name, None, BTreeMap::new(), status).await
        }
    }
}

#[derive(askama::Template)]
#[template(path = "share_remove.html")]
struct RemovePage {
    page: PageCtx,
    f: Fmt,
    name: String,
}

async fn remove_confirm(page: PageCtx, Path(name): Path<String>) -> Response {
    super::render(&RemovePage {
        page: page.with_nav("shares"),
        f: Fmt,
        name,
    })
}

#[derive(Deserialize, Default)]
struct RemoveForm {
    #[serde(default)]
    purge: Option<String>,
}

async fn remove(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Path(name): Path<String>,
    Form(f): Form<RemoveForm>,
) -> Response {
    let purge = f.purge.is_some();
    let n = name.clone();
    let r = act(&st, &admin, "share_remove", Some(&name), move |api| {
        api.call(Request::ShareRemove { name: n, purge })
    })
    .await;
    match r {
        Ok(crate::gateway::api::Response::Job(j)) => {
            Redirect::to(&format!("/jobs/{}", j.id)).into_response()
        }
        Ok(_) => Redirect::to("/shares?done=share_removed").into_response(),
        Err(e) => {
            let mut page = page.with_nav("shares");
            page.error(&e);
            let status = super::super::error::status_of(e.kind);
            show(&st, page, name, None, BTreeMap::new(), status).await
        }
    }
}

/// Empty the share's recycle bin: a job, followed on its page.
async fn recycle_empty(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Path(name): Path<String>,
) -> Response {
    let target = FsTarget::Share(name.clone());
    let r = act(&st, &admin, "recycle_empty", Some(&name), move |api| {
        api.start_job(Request::RecycleEmpty { target })
    })
    .await;
    match r {
        Ok(j) => Redirect::to(&format!("/jobs/{}", j.id)).into_response(),
        Err(e) => {
            let mut page = page.with_nav("shares");
            page.error(&e);
            let status = super::super::error::status_of(e.kind);
            show(&st, page, name, None, BTreeMap::new(), status).await
        }
    }
}

pub fn routes() -> Routes {
    Routes::protected()
        .get("/shares", list)
        .get("/new/share", new_form)
        .post("/new/share", create)
        .get("/shares/{name}", detail)
        .post("/shares/{name}", update)
        .post("/shares/{name}/quota", quota)
        .get("/shares/{name}/remove", remove_confirm)
        .post("/shares/{name}/remove", remove)
        .post("/shares/{name}/recycle/empty", recycle_empty)
}
