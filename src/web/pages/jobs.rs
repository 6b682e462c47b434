//! Jobs: long actions (fsck, flush, removals) with live progress.

use super::super::layout::PageCtx;
use super::super::routes::Routes;
use super::super::{ask, AppState};
use super::users::Fmt;
use crate::gateway::api::{GatewayApiExt, JobInfo};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

#[derive(askama::Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    page: PageCtx,
    f: Fmt,
    jobs: Option<Vec<JobInfo>>,
}

#[derive(askama::Template)]
#[template(path = "jobs_live.html")]
struct JobsLive {
    page: PageCtx,
    f: Fmt,
    jobs: Option<Vec<JobInfo>>,
}

#[derive(askama::Template)]
#[template(path = "job.html")]
struct JobPage {
    page: PageCtx,
    f: Fmt,
    id: u64,
    job: Option<JobInfo>,
}

#[derive(askama::Template)]
#[template(path = "job_live.html")]
struct JobLive {
    page: PageCtx,
    f: Fmt,
    job: Option<JobInfo>,
}

async fn jobs_of(st: &AppState, page: &mut PageCtx) -> Option<Vec<JobInfo>> {
    match ask(st, |api| api.jobs()).await {
        Ok(mut j) => {
            j.sort_by_key(|x| std::cmp::Reverse(x.id));
            Some(j)
        }
        Err(e) => {
            page.error(&e);
            None
        }
    }
}

async fn list(State(st): State<AppState>, page: PageCtx) -> Response {
    let mut page = page.with_nav("jobs");
    let jobs = jobs_of(&st, &mut page).await;
    super::render(&JobsPage { page, f: Fmt, jobs })
}

async fn list_live(State(st): State<AppState>, page: PageCtx) -> Response {
    let mut page = page.with_nav("jobs");
    let jobs = jobs_of(&st, &mut page).await;
    super::render(&JobsLive { page, f: Fmt, jobs })
}

async fn job_of(st: &AppState, page: &mut PageCtx, id: u64) -> (Option<JobInfo>, StatusCode) {
    match ask(st, move |api| api.job(id)).await {
        Ok(j) => (Some(j), StatusCode::OK),
        Err(e) => {
            page.error(&e);
            (None, super::super::error::status_of(e.kind))
        }
    }
}

async fn detail(State(st): State<AppState>, page: PageCtx, Path(id): Path<u64>) -> Response {
    let mut page = page.with_nav("jobs");
    let (job, status) = job_of(&st, &mut page, id).await;
    super::render_status(
        status,
        &JobPage {
            page,
            f: Fmt,
            id,
            job,
        },
    )
}

async fn detail_live(State(st): State<AppState>, page: PageCtx, Path(id): Path<u64>) -> Response {
    let mut page = page.with_nav("jobs");
    let (job, _) = job_of(&st, &mut page, id).await;
    super::render(&JobLive { page, f: Fmt, job })
}

pub fn routes() -> Routes {
    Routes::protected()
        .get("/jobs", list)
        .get("/live/jobs", list_live)
        .get("/jobs/{id}", detail)
        .get("/live/jobs/{id}", detail_live)
}
