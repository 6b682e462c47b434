//! The JSON API under `/api/v1`: everything the pages do. A session
//! (plus its CSRF token in `X-CSRF-Token` on changes) or an API token
//! (`Authorization: Bearer`); errors are JSON `{kind, message, field}`.

use super::auth::Admin;
use super::error::JsonError;
use super::routes::Routes;
use super::{act, ask, AppState};
use crate::gateway::api::{
    ApiError, ErrorKind, FsTarget, GatewayApiExt, Request, Response as ApiResponse, Secret,
    ShareSpec, UserAdd, UserCredentials, UserQuery,
};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;

type ApiResult = Result<Response, JsonError>;

fn parse<T: DeserializeOwned>(b: &Bytes) -> Result<T, JsonError> {
    let b: &[u8] = if b.is_empty() { b"{}" } else { b };
    serde_json::from_slice(b).map_err(|e| {
        JsonError(ApiError::new(
            ErrorKind::Invalid,
            format!("the request body is not valid JSON for this call: {e}"),
        ))
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, JsonError> {
    q.map(|Query(t)| t).map_err(|e| {
        JsonError(ApiError::new(
            ErrorKind::Invalid,
            format!("bad query parameters: {}", e.body_text()),
        ))
    })
}

fn ok<T: serde::Serialize>(t: T) -> ApiResult {
    Ok(Json(t).into_response())
}

/// A change's answer: 200 with its message, or 202 with the job started.
fn answered(r: ApiResponse) -> ApiResult {
    match r {
        ApiResponse::Job(j) => Ok((StatusCode::ACCEPTED, Json(j)).into_response()),
        ApiResponse::Done { message } => ok(serde_json::json!({ "message": message })),
        other => ok(other),
    }
}

async fn change(st: &AppState, admin: &Admin, subject: Option<&str>, req: Request) -> ApiResult {
    let op = req.op();
    let r = act(st, admin, &op, subject, move |api| api.call(req)).await?;
    answered(r)
}

async fn session(admin: Admin) -> ApiResult {
    ok(serde_json::json!({ "user": admin.user, "csrf": admin.csrf }))
}

async fn overview(State(st): State<AppState>) -> ApiResult {
    ok(ask(&st, |api| api.overview()).await?)
}

async fn homes(State(st): State<AppState>) -> ApiResult {
    ok(ask(&st, |api| api.homes()).await?)
}

async fn users(
    State(st): State<AppState>,
    q: Result<Query<UserQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    ok(ask(&st, move |api| api.users(q)).await?)
}

async fn user(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    ok(ask(&st, move |api| api.user(&name)).await?)
}

async fn user_add(State(st): State<AppState>, admin: Admin, body: Bytes) -> ApiResult {
    let a: UserAdd = parse(&body)?;
    let name = a.user.clone();
    let r = change(&st, &admin, Some(&name), Request::UserAdd(a)).await?;
    Ok((StatusCode::CREATED, r).into_response())
}

#[derive(Deserialize, Default)]
struct PurgeQuery {
    #[serde(default)]
    purge: bool,
}

async fn user_remove(
    State(st): State<AppState>,
    admin: Admin,
    Path(user): Path<String>,
    q: Result<Query<PurgeQuery>, QueryRejection>,
) -> ApiResult {
    let purge = query(q)?.purge;
    on_user(&st, &admin, user, |user| Request::UserRemove {
        user,
        purge,
    })
    .await
}

/// A change to one user: audited with the user as its subject.
async fn on_user(
    st: &AppState,
    admin: &Admin,
    user: String,
    make: impl FnOnce(String) -> Request,
) -> ApiResult {
    let s = user.clone();
    change(st, admin, Some(&s), make(user)).await
}

async fn user_disable(
    State(st): State<AppState>,
    admin: Admin,
    Path(user): Path<String>,
) -> ApiResult {
    on_user(&st, &admin, user, |user| Request::UserSetDisabled {
        user,
        disabled: true,
    })
    .await
}

async fn user_enable(
    State(st): State<AppState>,
    admin: Admin,
    Path(user): Path<String>,
) -> ApiResult {
    on_user(&st, &admin, user, |user| Request::UserSetDisabled {
        user,
        disabled: false,
    })
    .await
}

/// `{"quota": "50G,100000"}`, `{"quota": {"bytes": N, "files": N}}`;
/// `"none"` (or null) lifts it.
#[derive(Deserialize)]
struct QuotaBody {
    #[serde(default)]
    quota: Option<crate::gateway::api::Quota>,
}

async fn user_quota(
    State(st): State<AppState>,
    admin: Admin,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: QuotaBody = parse(&body)?;
    let quota = b.quota.unwrap_or_default();
    on_user(&st, &admin, user, move |user| Request::QuotaSet {
        target: crate::gateway::api::FsTarget::User(user),
        quota,
    })
    .await
}

async fn share_quota(
    State(st): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: QuotaBody = parse(&body)?;
    let req = Request::QuotaSet {
        target: crate::gateway::api::FsTarget::Share(name.clone()),
        quota: b.quota.unwrap_or_default(),
    };
    change(&st, &admin, Some(&name), req).await
}

#[derive(Deserialize)]
struct PasswdBody {
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    credentials: Option<UserCredentials>,
}

async fn user_passwd(
    State(st): State<AppState>,
    admin: Admin,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: PasswdBody = parse(&body)?;
    on_user(&st, &admin, user, |user| Request::UserPasswd {
        user,
        password: b.password,
        credentials: b.credentials,
    })
    .await
}

async fn mount(State(st): State<AppState>, admin: Admin, Path(user): Path<String>) -> ApiResult {
    on_user(&st, &admin, user, |user| Request::Mount { user }).await
}

async fn unmount(State(st): State<AppState>, admin: Admin, Path(user): Path<String>) -> ApiResult {
    on_user(&st, &admin, user, |user| Request::Unmount { user }).await
}

async fn flush(State(st): State<AppState>, admin: Admin, Path(user): Path<String>) -> ApiResult {
    on_user(&st, &admin, user, |user| Request::Flush { user }).await
}

#[derive(Deserialize, Default)]
struct FsckBody {
    #[serde(default)]
    verify_data: bool,
}

async fn fsck(
    State(st): State<AppState>,
    admin: Admin,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: FsckBody = parse(&body)?;
    on_user(&st, &admin, user, |user| Request::Fsck {
        user,
        verify_data: b.verify_data,
    })
    .await
}

async fn user_recycle_empty(
    State(st): State<AppState>,
    admin: Admin,
    Path(user): Path<String>,
) -> ApiResult {
    on_user(&st, &admin, user, |user| Request::RecycleEmpty {
        target: FsTarget::User(user),
    })
    .await
}

#[derive(Deserialize)]
struct RecycleBody {
    /// null or absent: as configured.
    #[serde(default)]
    keep_days: Option<u32>,
}

async fn user_recycle(
    State(st): State<AppState>,
    admin: Admin,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: RecycleBody = parse(&body)?;
    on_user(&st, &admin, user, |user| Request::UserSetRecycle {
        user,
        keep_days: b.keep_days,
    })
    .await
}

async fn share_recycle_empty(
    State(st): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> ApiResult {
    let s = name.clone();
    change(
        &st,
        &admin,
        Some(&s),
        Request::RecycleEmpty {
            target: FsTarget::Share(name),
        },
    )
    .await
}

/// `{"user": NAME}` or `{"share": NAME}`; nothing: every mounted bin.
#[derive(Deserialize, Default)]
struct PurgeBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    share: Option<String>,
}

async fn recycle_purge(State(st): State<AppState>, admin: Admin, body: Bytes) -> ApiResult {
    let b: PurgeBody = parse(&body)?;
    let target = match (b.user, b.share) {
        (Some(_), Some(_)) => {
            return Err(JsonError(ApiError::invalid(
                "share",
                "give a user or a share, not both",
            )))
        }
        (Some(u), None) => Some(FsTarget::User(u)),
        (None, Some(s)) => Some(FsTarget::Share(s)),
        (None, None) => None,
    };
    let s = target.as_ref().map(|t| match t {
        FsTarget::User(n) | FsTarget::Share(n) => n.clone(),
    });
    change(&st, &admin, s.as_deref(), Request::RecyclePurge { target }).await
}

async fn shares(State(st): State<AppState>) -> ApiResult {
    ok(ask(&st, |api| api.shares()).await?)
}

async fn share(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let n = name.clone();
    let all = ask(&st, |api| api.shares()).await?;
    match all.into_iter().find(|s| s.spec.name == n) {
        Some(s) => ok(s),
        None => Err(JsonError(
            ApiError::new(ErrorKind::NotFound, format!("no team share named {name:?}")).at("name"),
        )),
    }
}

async fn share_add(State(st): State<AppState>, admin: Admin, body: Bytes) -> ApiResult {
    let spec: ShareSpec = parse(&body)?;
    let s = spec.name.clone();
    let r = change(&st, &admin, Some(&s), Request::ShareAdd(spec)).await?;
    Ok((StatusCode::CREATED, r).into_response())
}

async fn share_update(
    State(st): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut spec: ShareSpec = parse(&body)?;
    if !spec.name.is_empty() && spec.name != name {
        return Err(JsonError(ApiError::invalid(
            "name",
            "a share cannot be renamed: leave `name` out or give the one in the path",
        )));
    }
    spec.name = name.clone();
    change(&st, &admin, Some(&name), Request::ShareUpdate(spec)).await
}

async fn share_remove(
    State(st): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    q: Result<Query<PurgeQuery>, QueryRejection>,
) -> ApiResult {
    let purge = query(q)?.purge;
    let s = name.clone();
    change(&st, &admin, Some(&s), Request::ShareRemove { name, purge }).await
}

async fn cache(State(st): State<AppState>) -> ApiResult {
    ok(ask(&st, |api| api.cache()).await?)
}

#[derive(Deserialize)]
struct BudgetBody {
    size: u64,
    #[serde(default)]
    dirty_limit: Option<u64>,
}

async fn cache_budget(State(st): State<AppState>, admin: Admin, body: Bytes) -> ApiResult {
    let b: BudgetBody = parse(&body)?;
    change(
        &st,
        &admin,
        None,
        Request::CacheSetBudget {
            size: b.size,
            dirty_limit: b.dirty_limit,
        },
    )
    .await
}

#[derive(Deserialize, Default)]
struct EvictBody {
    #[serde(default)]
    user: Option<String>,
}

async fn cache_evict(State(st): State<AppState>, admin: Admin, body: Bytes) -> ApiResult {
    let b: EvictBody = parse(&body)?;
    let s = b.user.clone();
    change(
        &st,
        &admin,
        s.as_deref(),
        Request::CacheEvict { user: b.user },
    )
    .await
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    user: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn events(
    State(st): State<AppState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    ok(ask(&st, move |api| {
        api.events(q.user.as_deref(), q.limit.min(1000))
    })
    .await?)
}

async fn jobs(State(st): State<AppState>) -> ApiResult {
    ok(ask(&st, |api| api.jobs()).await?)
}

async fn job(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    // Parsed here, not by the extractor: a bad id gets a JSON error.
    let id: u64 = id.parse().map_err(|_| {
        JsonError(ApiError::invalid(
            "id",
            format!("{id:?} is not a job id (a number)"),
        ))
    })?;
    ok(ask(&st, move |api| api.job(id)).await?)
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

async fn audit(
    State(st): State<AppState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let st2 = st.clone();
    let p = tokio::task::spawn_blocking(move || st2.audit.page(q.offset, q.limit.min(1000)))
        .await
        .map_err(|e| JsonError(ApiError::new(ErrorKind::Internal, e.to_string())))?
        .map_err(|e| JsonError(ApiError::new(ErrorKind::Internal, e.to_string())))?;
    ok(serde_json::json!({ "total": p.total, "offset": q.offset, "entries": p.entries }))
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::openapi::DOCUMENT,
    )
        .into_response()
}

/// Unknown paths under /api/v1 answer JSON too.
pub async fn api_not_found() -> Response {
    JsonError(ApiError::new(
        ErrorKind::NotFound,
        "no such API call: see /api/v1/openapi.json",
    ))
    .into_response()
}

pub fn routes() -> Routes {
    Routes::protected()
        .get("/api/v1/openapi.json", openapi)
        .get("/api/v1/session", session)
        .get("/api/v1/overview", overview)
        .get("/api/v1/homes", homes)
        .get("/api/v1/users", users)
        .post("/api/v1/users", user_add)
        .get("/api/v1/users/{name}", user)
        .delete("/api/v1/users/{name}", user_remove)
        .post("/api/v1/users/{name}/disable", user_disable)
        .post("/api/v1/users/{name}/enable", user_enable)
        .post("/api/v1/users/{name}/password", user_passwd)
        .post("/api/v1/users/{name}/mount", mount)
        .post("/api/v1/users/{name}/unmount", unmount)
        .post("/api/v1/users/{name}/flush", flush)
        .post("/api/v1/users/{name}/fsck", fsck)
        .put("/api/v1/users/{name}/quota", user_quota)
        .post("/api/v1/users/{name}/recycle/empty", user_recycle_empty)
        .put("/api/v1/users/{name}/recycle", user_recycle)
        .get("/api/v1/shares", shares)
        .post("/api/v1/shares", share_add)
        .get("/api/v1/shares/{name}", share)
        .put("/api/v1/shares/{name}", share_update)
        .delete("/api/v1/shares/{name}", share_remove)
        .put("/api/v1/shares/{name}/quota", share_quota)
        .post("/api/v1/shares/{name}/recycle/empty", share_recycle_empty)
        .post("/api/v1/recycle/purge", recycle_purge)
        .get("/api/v1/cache", cache)
        .put("/api/v1/cache/budget", cache_budget)
        .post("/api/v1/cache/evict", cache_evict)
        .get("/api/v1/events", events)
        .get("/api/v1/jobs", jobs)
        .get("/api/v1/jobs/{id}", job)
        .get("/api/v1/audit", audit)
}
