//! The gate in front of every protected route: a logged-in admin (session
//! cookie) or an API token, and on every change a CSRF token matching the
//! session's (form field `csrf` or header `X-CSRF-Token`). Plus the
//! security headers every answer carries.

use super::auth::{session_cookie, Admin, Via};
use super::session::{constant_time_eq, Lookup};
use super::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use std::net::SocketAddr;

/// Forms are small; anything bigger is not one of ours.
const MAX_FORM: usize = 1 << 20;

pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn client_addr(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({ "kind": kind, "message": message })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// Not logged in: the API says so; a page sends the reader to log in
/// (telling them when their session ended).
fn unauthenticated(req: &Request, expired: bool) -> Response {
    let path = req.uri().path();
    if is_api(path) {
        let msg = if expired {
            "the session has expired: log in again, or use an API token (Authorization: Bearer)"
        } else {
            "log in first, or use an API token (Authorization: Bearer)"
        };
        return api_error(StatusCode::UNAUTHORIZED, "denied", msg);
    }
    let next = if req.method() == Method::GET {
        req.uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into())
    } else {
        "/".into()
    };
    let mut to = format!(
        "/login?next={}",
        percent_encoding::utf8_percent_encode(&next, percent_encoding::NON_ALPHANUMERIC)
    );
    if expired {
        to.push_str("&expired=1");
    }
    Redirect::to(&to).into_response()
}

async fn csrf_token_of(req: Request) -> Result<(Option<String>, Request), Response> {
    if let Some(h) = req.headers().get(CSRF_HEADER) {
        let t = h.to_str().ok().map(String::from);
        return Ok((t, req));
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((None, req));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
    let token = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let addr = client_addr(&req);
    let api = is_api(req.uri().path());
    // API tokens: the JSON API only (a page has a session).
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        if !api {
            return unauthenticated(&req, false);
        }
        let presented = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let st2 = st.clone();
        let name = match presented {
            Some(t) => tokio::task::spawn_blocking(move || st2.tokens.verify(&t))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        return match name {
            Some(name) => {
                req.extensions_mut().insert(Admin {
                    user: format!("token:{name}"),
                    csrf: String::new(),
                    addr,
                    via: Via::Token,
                });
                next.run(req).await
            }
            None => api_error(
                StatusCode::UNAUTHORIZED,
                "denied",
                "the API token is not valid (revoked, or mistyped): create one with `swiftgate token create NAME`",
            ),
        };
    }
    let session = match session_cookie(req.headers()) {
        None => return unauthenticated(&req, false),
        Some(id) => match st.sessions.get(&id) {
            Lookup::Valid(s) if s.user.is_some() => s,
            Lookup::Valid(_) => return unauthenticated(&req, false),
            Lookup::Expired | Lookup::Unknown => return unauthenticated(&req, true),
        },
    };
    let admin = Admin {
        user: session.user.clone().unwrap_or_default(),
        csrf: session.csrf.clone(),
        addr,
        via: Via::Session,
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let (token, r) = match csrf_token_of(req).await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
        req = r;
        if !token.is_some_and(|t| constant_time_eq(&t, &session.csrf)) {
            tracing::warn!(user = %admin.user, from = %admin.addr, path = %req.uri().path(), "CSRF token missing or wrong");
            if api {
                return api_error(
                    StatusCode::FORBIDDEN,
                    "denied",
                    "missing or wrong CSRF token: send the session's token (GET /api/v1/session) in the X-CSRF-Token header",
                );
            }
            let lang = super::layout::lang_of(req.headers());
            return super::pages::errors::csrf_page(lang, &admin);
        }
    }
    req.extensions_mut().insert(admin);
    next.run(req).await
}

/// Headers for every answer: no framing, no sniffing, no inline script,
/// nothing cached but the static files.
pub async fn headers(req: Request, next: Next) -> Response {
    let is_static = req.uri().path().starts_with("/static/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !is_static {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
