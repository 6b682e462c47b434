//! Static assets (CSS, JS, icons) from `web/`, embedded in the binary: the
//! appliance needs no internet and no CDN.

use super::AppState;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[(
    "app.css",
    "text/css; charset=utf-8",
    include_bytes!("../../web/app.css"),
)];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, body)) => (
            [
                (header::CONTENT_TYPE, *ct),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/static/{name}", axum::routing::get(asset))
}
