//! Login through PAM, sessions, CSRF tokens, the login rate limit.

use super::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};

/// A logged-in admin: what a page or an API handler gets to know.
#[derive(Debug, Clone)]
pub struct Admin {
    pub user: String,
    /// The session's CSRF token, for forms.
    pub csrf: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;
    async fn from_request_parts(
        _parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Err(Redirect::to("/login").into_response())
    }
}

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
}
