//! Static assets (CSS, JS, icons) from `web/`, embedded in the binary: the
//! appliance needs no internet and no CDN.

use super::routes::Routes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
struct Assets;

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(f) = Assets::get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", hex::encode(f.metadata.sha256_hash()));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mime = f.metadata.mimetype().to_string();
    let ct = if mime.starts_with("text/") || mime.contains("javascript") {
        format!("{mime}; charset=utf-8")
    } else {
        mime
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "public, max-age=3600".to_string()),
            (header::ETAG, etag),
        ],
        f.data.into_owned(),
    )
        .into_response()
}

pub fn routes() -> Routes {
    Routes::public().get("/static/{*name}", asset)
}
