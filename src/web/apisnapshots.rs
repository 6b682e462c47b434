//! `/api/v1/{users,shares}/{name}/snapshots`: a home's or share's snapshots
//! in JSON (the same gateway requests as the console's page).

use super::auth::Admin;
use super::error::JsonError;
use super::routes::Routes;
use super::{act, ask, AppState};
use crate::gateway::api::{ApiError, ErrorKind, FsTarget, GatewayApiExt, Request, Response as R};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

type ApiResult = Result<Response, JsonError>;

fn target(kind: &str, name: String) -> FsTarget {
    if kind == "shares" {
        FsTarget::Share(name)
    } else {
        FsTarget::User(name)
    }
}

async fn list(st: AppState, t: FsTarget) -> ApiResult {
    Ok(Json(ask(&st, move |api| api.snapshots(t)).await?).into_response())
}

async fn change(st: AppState, admin: Admin, subject: String, req: Request) -> ApiResult {
    let op = req.op();
    let r = act(&st, &admin, &op, Some(&subject), move |api| api.call(req)).await?;
    Ok(match r {
        R::Snapshot(s) if op == "snapshot_create" => (StatusCode::CREATED, Json(s)).into_response(),
        R::Snapshot(s) => Json(s).into_response(),
        R::Done { message } => Json(serde_json::json!({ "message": message })).into_response(),
        other => Json(other).into_response(),
    })
}

#[derive(Deserialize)]
struct RestoreBody {
    path: String,
}

fn parse_restore(b: &Bytes) -> Result<RestoreBody, JsonError> {
    serde_json::from_slice(b).map_err(|e| {
        JsonError(
            ApiError::new(
                ErrorKind::Invalid,
                format!("the body must be {{\"path\": \"folder/file\"}}: {e}"),
            )
            .at("path"),
        )
    })
}

macro_rules! routes_for {
    ($r:expr, $kind:literal) => {
        $r.get(
            concat!("/api/v1/", $kind, "/{name}/snapshots"),
            |State(st): State<AppState>, Path(name): Path<String>| list(st, target($kind, name)),
        )
        .post(
            concat!("/api/v1/", $kind, "/{name}/snapshots"),
            |State(st): State<AppState>, admin: Admin, Path(name): Path<String>| {
                let req = Request::SnapshotCreate {
                    target: target($kind, name.clone()),
                };
                change(st, admin, name, req)
            },
        )
        .delete(
            concat!("/api/v1/", $kind, "/{name}/snapshots/{snapshot}"),
            |State(st): State<AppState>,
             admin: Admin,
             Path((name, snapshot)): Path<(String, String)>| {
                let req = Request::SnapshotDelete {
                    target: target($kind, name.clone()),
                    name: snapshot,
                };
                change(st, admin, name, req)
            },
        )
        .post(
            concat!("/api/v1/", $kind, "/{name}/snapshots/{snapshot}/restore"),
            |State(st): State<AppState>,
             admin: Admin,
             Path((name, snapshot)): Path<(String, String)>,
             body: Bytes| async move {
                let b = parse_restore(&body)?;
                let req = Request::SnapshotRestore {
                    target: target($kind, name.clone()),
                    name: snapshot,
                    path: b.path,
                };
                change(st, admin, name, req).await
            },
        )
    };
}

pub fn routes() -> Routes {
    let r = routes_for!(Routes::protected(), "users");
    routes_for!(r, "shares")
}
