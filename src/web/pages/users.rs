//! Users: the list (search, paging), adding one, a user's detail with its
//! actions (mount, unmount, flush, fsck, disable, password, remove).

use super::super::auth::Admin;
use super::super::fmt::{self, Count};
use super::super::layout::PageCtx;
use super::super::routes::Routes;
use super::super::{act, ask, AppState};
use super::Banner;
use crate::gateway::api::{
    ApiError, FsTarget, GatewayApiExt, JobInfo, Quota, RecycleInfo, Request, Secret, Usage,
    UserAdd, UserCredentials, UserDetail, UserPage, UserQuery, UserState, UserSummary,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const PAGE_SIZE: usize = 50;

/// Helpers the user templates call.
pub struct Fmt;

impl Fmt {
    pub fn bytes(&self, n: impl Count) -> String {
        fmt::bytes(n.n())
    }
    pub fn age(&self, page: &PageCtx, s: impl Count) -> String {
        fmt::duration(s.n(), page.lang)
    }
    pub fn time(&self, t: impl Count) -> String {
        fmt::time(t.n())
    }
    pub fn job_label(&self, page: &PageCtx, j: &JobInfo) -> &'static str {
        page.t(&format!("job.{}", self.job_state(j)))
    }
    pub fn state(&self, page: &PageCtx, s: &UserState) -> &'static str {
        match s {
            UserState::Active => page.t("user.active"),
            UserState::Disabled => page.t("user.disabled"),
            UserState::Removed => page.t("user.removed"),
        }
    }
    pub fn state_class(&self, s: &UserState) -> &'static str {
        match s {
            UserState::Active => "ok",
            UserState::Disabled => "warn",
            UserState::Removed => "muted",
        }
    }
    pub fn job_class(&self, j: &JobInfo) -> &'static str {
        match j.state {
            crate::gateway::api::JobState::Running => "info",
            crate::gateway::api::JobState::Succeeded => "ok",
            crate::gateway::api::JobState::Failed => "crit",
        }
    }
    pub fn disabled(&self, u: &UserSummary) -> bool {
        u.state == UserState::Disabled
    }
    pub fn job_state(&self, j: &JobInfo) -> &'static str {
        match j.state {
            crate::gateway::api::JobState::Running => "running",
            crate::gateway::api::JobState::Succeeded => "succeeded",
            crate::gateway::api::JobState::Failed => "failed",
        }
    }
    pub fn dedup(&self, u: &UserSummary) -> String {
        fmt::ratio(u.usage.as_ref().and_then(|u| u.dedup_ratio()))
    }
    pub fn compression(&self, u: &UserSummary) -> String {
        fmt::ratio(u.usage.as_ref().and_then(|u| u.compression_ratio()))
    }
    pub fn logical(&self, u: &UserSummary) -> String {
        u.usage
            .as_ref()
            .map(|x| fmt::bytes(x.logical_bytes))
            .unwrap_or_else(|| "–".into())
    }
    pub fn stored(&self, u: &UserSummary) -> String {
        u.usage
            .as_ref()
            .map(|x| fmt::bytes(x.stored_bytes))
            .unwrap_or_else(|| "–".into())
    }
    pub fn quota(&self, u: &UserSummary) -> String {
        fmt::quota_use(&u.quota, u.usage.as_ref())
    }
    pub fn quota_warn(&self, u: &UserSummary) -> bool {
        fmt::quota_warn(&u.quota, u.usage.as_ref())
    }
    /// The quota as the form shows it (empty: none).
    pub fn quota_text(&self, u: &UserSummary) -> String {
        self.quota_value(&u.quota)
    }
    pub fn quota_value(&self, q: &Quota) -> String {
        if q.is_none() {
            String::new()
        } else {
            q.to_string()
        }
    }
    pub fn quota_of(&self, q: &Quota, u: &Option<Usage>) -> String {
        fmt::quota_use(q, u.as_ref())
    }
    pub fn quota_warn_of(&self, q: &Quota, u: &Option<Usage>) -> bool {
        fmt::quota_warn(q, u.as_ref())
    }
    /// A finished job's bar is full even when it had nothing to count (a
    /// flush with nothing left to upload: 0 of 0), as the page's script
    /// draws it.
    pub fn pct(&self, j: &JobInfo) -> u64 {
        match j.state {
            crate::gateway::api::JobState::Succeeded => 100,
            _ => fmt::percent(j.done, j.total),
        }
    }
    /// A recycle bin's setting in words.
    pub fn recycle_setting(&self, page: &PageCtx, r: &RecycleInfo) -> String {
        match (r.enabled, r.keep_days) {
            (false, _) => page.t("recycle.off").to_string(),
            (true, 0) => page.t("recycle.on_forever").to_string(),
            (true, d) => page.t("recycle.on_days").replace("{days}", &d.to_string()),
        }
    }
    /// Its files and bytes ("–" while not mounted).
    pub fn recycle_files(&self, r: &RecycleInfo) -> String {
        r.files.map(|n| n.to_string()).unwrap_or_else(|| "–".into())
    }
    /// The home's own retention for the form (empty: as configured).
    pub fn own_days(&self, r: &RecycleInfo) -> String {
        r.own_keep_days.map(|d| d.to_string()).unwrap_or_default()
    }
    pub fn recycle_bytes(&self, r: &RecycleInfo) -> String {
        r.bytes.map(fmt::bytes).unwrap_or_else(|| "–".into())
    }
    pub fn enc(&self, s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
    #[serde(default)]
    done: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "users.html")]
struct UsersPage {
    page: PageCtx,
    f: Fmt,
    q: String,
    list: Option<UserPage>,
    page_no: usize,
    pages: usize,
}

impl UsersPage {
    fn href(&self, page_no: usize) -> String {
        format!("/users?q={}&page={page_no}", self.f.enc(&self.q))
    }
}

async fn list(State(st): State<AppState>, page: PageCtx, Query(q): Query<ListQuery>) -> Response {
    let mut page = page.with_nav("users");
    page.banners = super::done_banner(&page, q.done.as_deref());
    let query = UserQuery {
        search: q.q.trim().to_string(),
        offset: q.page * PAGE_SIZE,
        limit: PAGE_SIZE,
    };
    let list = match ask(&st, move |api| api.users(query)).await {
        Ok(l) => Some(l),
        Err(e) => {
            page.error(&e);
            None
        }
    };
    let pages = list
        .as_ref()
        .map(|l| l.total.div_ceil(PAGE_SIZE).max(1))
        .unwrap_or(1);
    super::render(&UsersPage {
        page,
        f: Fmt,
        q: q.q,
        list,
        page_no: q.page,
        pages,
    })
}

/// The add-user form's values (never the passwords: those are not sent
/// back to the browser) and its errors, by field.
#[derive(Deserialize, Default)]
struct AddForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
    #[serde(default)]
    adopt: Option<String>,
    #[serde(default)]
    ks_username: String,
    #[serde(default)]
    ks_password: String,
    #[serde(default)]
    ks_project: String,
    #[serde(default)]
    ks_user_domain: String,
    #[serde(default)]
    ks_project_domain: String,
    #[serde(default)]
    ks_app_id: String,
    #[serde(default)]
    ks_app_secret: String,
}

impl Drop for AddForm {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.password.zeroize();
        self.password2.zeroize();
        self.ks_password.zeroize();
        self.ks_app_secret.zeroize();
    }
}

#[derive(askama::Template)]
#[template(path = "user_new.html")]
struct AddPage {
    page: PageCtx,
    user: String,
    adopt: bool,
    ks_username: String,
    ks_project: String,
    ks_user_domain: String,
    ks_project_domain: String,
    ks_app_id: String,
    errors: BTreeMap<String, String>,
}

impl AddPage {
    fn err(&self, field: &str) -> Option<&String> {
        self.errors.get(field)
    }
}

async fn add_form(page: PageCtx) -> Response {
    super::render(&AddPage {
        page: page.with_nav("users"),
        user: String::new(),
        adopt: false,
        ks_username: String::new(),
        ks_project: String::new(),
        ks_user_domain: String::new(),
        ks_project_domain: String::new(),
        ks_app_id: String::new(),
        errors: BTreeMap::new(),
    })
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Keystone credentials from the form (None: the service identity).
fn credentials(f: &AddForm) -> Option<UserCredentials> {
    let any = [
        &f.ks_username,
        &f.ks_password,
        &f.ks_project,
        &f.ks_app_id,
        &f.ks_app_secret,
    ]
    .iter()
    .any(|s| !s.trim().is_empty());
    any.then(|| UserCredentials {
        username: opt(&f.ks_username),
        password: (!f.ks_password.is_empty()).then(|| f.ks_password.clone()),
        project_name: opt(&f.ks_project),
        user_domain_name: opt(&f.ks_user_domain),
        project_domain_name: opt(&f.ks_project_domain),
        application_credential_id: opt(&f.ks_app_id),
        application_credential_secret: (!f.ks_app_secret.is_empty())
            .then(|| f.ks_app_secret.clone()),
        ..Default::default()
    })
}

/// Checks the gateway cannot make (the two password fields agree); the
/// gateway validates the rest and names the field at fault.
fn validate(page: &PageCtx, f: &AddForm) -> BTreeMap<String, String> {
    let mut e = BTreeMap::new();
    if f.user.trim().is_empty() {
        e.insert("user".into(), page.t("err.user_required").into());
    }
    if f.password.is_empty() {
        e.insert("password".into(), page.t("err.password_required").into());
    } else if f.password != f.password2 {
        e.insert("password2".into(), page.t("err.password_mismatch").into());
    }
    if !f.ks_username.trim().is_empty() && f.ks_password.is_empty() {
        e.insert(
            "ks_password".into(),
            page.t("err.ks_password_required").into(),
        );
    }
    e
}

async fn add(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Form(f): Form<AddForm>,
) -> Response {
    let mut page = page.with_nav("users");
    let mut errors = validate(&page, &f);
    let user = f.user.trim().to_string();
    if errors.is_empty() {
        let req = UserAdd {
            user: user.clone(),
            password: Secret::new(f.password.clone()),
            credentials: credentials(&f),
            adopt: f.adopt.is_some(),
        };
        let r = act(&st, &admin, "user_add", Some(&user), move |api| {
            api.done(Request::UserAdd(req))
        })
        .await;
        match r {
            Ok(_) => {
                return Redirect::to(&format!("/users/{}?done=user_added", Fmt.enc(&user)))
                    .into_response()
            }
            Err(e) => match e.field.as_deref() {
                Some(field) => {
                    let field = if field == "credentials" {
                        "ks_username"
                    } else {
                        field
                    };
                    errors.insert(field.to_string(), e.message.clone());
                }
                None => page.error(&e),
            },
        }
    }
    let status = if errors.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    super::render_status(
        status,
        &AddPage {
            page,
            user: f.user.clone(),
            adopt: f.adopt.is_some(),
            ks_username: f.ks_username.clone(),
            ks_project: f.ks_project.clone(),
            ks_user_domain: f.ks_user_domain.clone(),
            ks_project_domain: f.ks_project_domain.clone(),
            ks_app_id: f.ks_app_id.clone(),
            errors,
        },
    )
}

#[derive(askama::Template)]
#[template(path = "user.html")]
struct DetailPage {
    page: PageCtx,
    f: Fmt,
    name: String,
    u: Option<UserDetail>,
    /// The password form's error.
    password_error: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "user_live.html")]
struct DetailLive {
    page: PageCtx,
    f: Fmt,
    u: Option<UserDetail>,
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn detail_page(
    st: &AppState,
    mut page: PageCtx,
    name: String,
    banners: Vec<Banner>,
    password_error: Option<String>,
    status: StatusCode,
) -> Response {
    page.banners.extend(banners);
    let n = name.clone();
    let u = match ask(st, move |api| api.user(&n)).await {
        Ok(u) => Some(u),
        Err(e) => {
            let nf = e.kind == crate::gateway::api::ErrorKind::NotFound;
            page.error(&e);
            if nf {
                return super::render_status(
                    StatusCode::NOT_FOUND,
                    &DetailPage {
                        page,
                        f: Fmt,
                        name,
                        u: None,
                        password_error,
                    },
                );
            }
            None
        }
    };
    super::render_status(
        status,
        &DetailPage {
            page,
            f: Fmt,
            name,
            u,
            password_error,
        },
    )
}

async fn detail(
    State(st): State<AppState>,
    page: PageCtx,
    Path(name): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let page = page.with_nav("users");
    let b = super::done_banner(&page, q.done.as_deref());
    detail_page(&st, page, name, b, None, StatusCode::OK).await
}

async fn detail_live(
    State(st): State<AppState>,
    page: PageCtx,
    Path(name): Path<String>,
) -> Response {
    let mut page = page.with_nav("users");
    let u = match ask(&st, move |api| api.user(&name)).await {
        Ok(u) => Some(u),
        Err(e) => {
            page.error(&e);
            None
        }
    };
    super::render(&DetailLive { page, f: Fmt, u })
}

/// Every action form on the detail page posts its CSRF token (checked by
/// the guard) and maybe a checkbox.
#[derive(Deserialize, Default)]
struct ActionForm {
    #[serde(default)]
    verify_data: Option<String>,
    #[serde(default)]
    purge: Option<String>,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
    #[serde(default)]
    quota: String,
    /// The recycle bin's retention: days, or empty (as configured).
    #[serde(default)]
    keep_days: String,
}

impl Drop for ActionForm {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.password.zeroize();
        self.password2.zeroize();
    }
}

/// The outcome of an action: a job's page, or back to the user with a
/// banner (what was done, or the error).
async fn finish(
    st: &AppState,
    page: PageCtx,
    name: String,
    r: Result<Option<JobInfo>, ApiError>,
    done: &str,
) -> Response {
    match r {
        Ok(Some(job)) => Redirect::to(&format!("/jobs/{}", job.id)).into_response(),
        Ok(None) => Redirect::to(&format!("/users/{}?done={done}", Fmt.enc(&name))).into_response(),
        Err(e) => {
            let b = Banner::error(&page, &e);
            let status = super::super::error::status_of(e.kind);
            detail_page(st, page, name, vec![b], None, status).await
        }
    }
}

async fn action(
    State(st): State<AppState>,
    admin: Admin,
    page: PageCtx,
    Path(name): Path<String>,
    Form(f): Form<ActionForm>,
    what: &'static str,
) -> Response {
    let page = page.with_nav("users");
    let user = name.clone();
    let (op, req, job) = match what {
        "mount" => ("mount", Request::Mount { user }, false),
        "unmount" => ("unmount", Request::Unmount { user }, false),
        "flush" => ("flush", Request::Flush { user }, true),
        "recycle_empty" => (
            "recycle_empty",
            Request::RecycleEmpty {
                target: FsTarget::User(user),
            },
            true,
        ),
        "recycle" => {
            let t = f.keep_days.trim();
            let keep_days = match t.parse::<u32>() {
                _ if t.is_empty() => None,
                Ok(d) => Some(d),
                Err(_) => {
                    let b = Banner::error(
                        &page,
                        &ApiError::invalid("keep_days", page.t("err.keep_days")),
                    );
                    return detail_page(
                        &st,
                        page,
                        name,
                        vec![b],
                        None,
                        StatusCode::UNPROCESSABLE_ENTITY,
                    )
                    .await;
                }
            };
            (
                "user_set_recycle",
                Request::UserSetRecycle { user, keep_days },
                false,
            )
        }
        "fsck" => (
            "fsck",
            Request::Fsck {
                user,
                verify_data: f.verify_data.is_some(),
            },
            true,
        ),
        "disable" => (
            "user_disable",
            Request::UserSetDisabled {
                user,
                disabled: true,
            },
            false,
        ),
        "enable" => (
            "user_enable",
            Request::UserSetDisabled {
                user,
                disabled: false,
            },
            false,
        ),
        "remove" => (
            "user_remove",
            Request::UserRemove {
                user,
                purge: f.purge.is_some(),
            },
            true,
        ),
        "password" => {
            if f.password.is_empty() || f.password != f.password2 {
                let key = if f.password.is_empty() {
                    "err.password_required"
                } else {
                    "err.password_mismatch"
                };
                let msg = page.t(key).to_string();
                return detail_page(
                    &st,
                    page,
                    name,
                    Vec::new(),
                    Some(msg),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
            (
                "user_passwd",
                Request::UserPasswd {
                    user,
                    password: Some(Secret::new(f.password.clone())),
                    credentials: None,
                },
                false,
            )
        }
        "quota" => match f.quota.parse::<crate::gateway::api::Quota>() {
            Ok(quota) => (
                "quota_set",
                Request::QuotaSet {
                    target: crate::gateway::api::FsTarget::User(user),
                    quota,
                },
                false,
            ),
            Err(e) => {
                let e = ApiError::invalid("quota", e);
                return finish(&st, page, name, Err(e), what).await;
            }
        },
        _ => {
            return (StatusCode::NOT_FOUND, "no such action").into_response();
        }
    };
    let r = act(&st, &admin, op, Some(&name), move |api| {
        if job {
            api.start_job(req).map(Some)
        } else {
            api.done(req).map(|_| None)
        }
    })
    .await;
    finish(&st, page, name, r, what).await
}

#[derive(askama::Template)]
#[template(path = "user_remove.html")]
struct RemovePage {
    page: PageCtx,
    name: String,
}

async fn remove_confirm(page: PageCtx, Path(name): Path<String>) -> Response {
    super::render(&RemovePage {
        page: page.with_nav("users"),
        name,
    })
}

pub fn routes() -> Routes {
    Routes::protected()
        .get("/users", list)
        .get("/new/user", add_form)
        .post("/new/user", add)
        .get("/users/{name}", detail)
        .get("/live/users/{name}", detail_live)
        .get("/users/{name}/remove", remove_confirm)
        .post("/users/{name}/mount", a("mount"))
        .post("/users/{name}/unmount", a("unmount"))
        .post("/users/{name}/flush", a("flush"))
        .post("/users/{name}/fsck", a("fsck"))
        .post("/users/{name}/disable", a("disable"))
        .post("/users/{name}/enable", a("enable"))
        .post("/users/{name}/password", a("password"))
        .post("/users/{name}/quota", a("quota"))
        .post("/users/{name}/remove", a("remove"))
        .post("/users/{name}/recycle/empty", a("recycle_empty"))
        .post("/users/{name}/recycle", a("recycle"))
}

/// The handler of one action route.
#[allow(clippy::type_complexity)]
fn a(
    what: &'static str,
) -> impl Fn(
    State<AppState>,
    Admin,
    PageCtx,
    Path<String>,
    Form<ActionForm>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>
       + Clone
       + Send
       + 'static {
    move |st, admin, page, path, form| Box::pin(action(st, admin, page, path, form, what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::api::JobState;

    fn job(state: JobState, done: u64, total: u64) -> JobInfo {
        JobInfo {
            id: 1,
            kind: "flush".into(),
            subject: "u".into(),
            state,
            started_unix: 0,
            finished_unix: None,
            phase: String::new(),
            done,
            total,
            message: None,
        }
    }

    #[test]
    fn a_succeeded_job_with_nothing_to_count_shows_a_full_bar() {
        assert_eq!(Fmt.pct(&job(JobState::Succeeded, 0, 0)), 100);
        assert_eq!(Fmt.pct(&job(JobState::Running, 0, 0)), 0);
        assert_eq!(Fmt.pct(&job(JobState::Running, 1, 4)), 25);
    }
}
