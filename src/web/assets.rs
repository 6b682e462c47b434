//! Static assets (CSS, JS, icons) from `web/`, embedded in the binary: the
//! appliance needs no internet and no CDN.

use super::AppState;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../web/favicon.svg"),
    ),
];

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

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(name: &str) -> Response {
        asset(Path(name.to_string())).await
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
}
