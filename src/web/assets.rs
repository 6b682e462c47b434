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

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(name: &str) -> Response {
        asset(Path(name.to_string()), HeaderMap::new()).await
    }

    #[tokio::test]
    async fn the_style_script_and_icon_are_served_with_their_types() {
        for (name, ct, needle) in [
            ("app.css", "text/css", "Class reference"),
            ("app.js", "text/javascript", "data-live"),
            ("favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let r = get(name).await;
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            let got = r.headers()[header::CONTENT_TYPE].to_str().unwrap();
            assert!(got.starts_with(ct), "{name}: {got}");
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            assert!(String::from_utf8_lossy(&body).contains(needle), "{name}");
        }
        assert_eq!(get("nope.js").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(get("../Cargo.toml").await.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_unchanged_asset_is_not_sent_again() {
        let r = get("app.css").await;
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        let r = asset(Path("app.css".into()), h).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }
}
