//! Login through PAM (members of the admin group only), logout, the
//! session cookie. The guard ([`super::guard`]) checks sessions and CSRF
//! tokens on every other route.

use super::layout::{lang_of, PageCtx};
use super::routes::Routes;
use super::session::{constant_time_eq, Lookup};
use super::AppState;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

pub const COOKIE: &str = "sg_session";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Session,
    Token,
}

/// A logged-in admin (or an API token): what a handler gets to know.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The Unix user, or `token:NAME`.
    pub user: String,
    /// The session's CSRF token, for forms (empty for a token).
    pub csrf: String,
    /// The client address.
    pub addr: String,
    pub via: Via,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        // Set by the guard; a route outside it has no admin (fail closed).
        parts
            .extensions
            .get::<Admin>()
            .cloned()
            .ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())
    }
}

/// The session id the browser presented.
pub fn session_cookie(h: &HeaderMap) -> Option<String> {
    cookie(h, COOKIE)
}

pub fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(st: &AppState, id: &str) -> HeaderValue {
    let secure = if st.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie(st: &AppState) -> HeaderValue {
    let secure = if st.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Only a path on this site (no `//host`, no scheme): no open redirect.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: PageCtx,
    next: String,
    user: String,
    /// A message key (`login.expired`, ...) and whether it is an error.
    notice: Option<(&'static str, bool)>,
    /// Extra words (the wait, for a rate limit).
    detail: String,
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
    expired: Option<String>,
    out: Option<String>,
}

async fn login_form(
    State(st): State<AppState>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&headers);
    // Logged in already: nothing to do here.
    let existing = session_cookie(&headers).map(|id| (st.sessions.get(&id), id));
    let (id, csrf) = match existing {
        Some((Lookup::Valid(s), _)) if s.user.is_some() => {
            return Redirect::to(&safe_next(q.next.as_deref())).into_response()
        }
        Some((Lookup::Valid(s), id)) => (id, s.csrf),
        _ => {
            let (id, s) = st.sessions.create(None);
            (id, s.csrf)
        }
    };
    let notice = if q.expired.is_some() {
        Some(("login.expired", true))
    } else if q.out.is_some() {
        Some(("login.logged_out", false))
    } else {
        None
    };
    let page = LoginPage {
        page: PageCtx::anonymous(lang, csrf),
        next: safe_next(q.next.as_deref()),
        user: String::new(),
        notice,
        detail: String::new(),
    };
    let mut r = super::pages::render(&page);
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&st, &id));
    r
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// Whether `user` is in `group` (primary or supplementary).
pub fn in_group(user: &str, group: &str) -> bool {
    use nix::unistd::{getgrouplist, Group, User};
    let (Ok(Some(u)), Ok(Some(g))) = (User::from_name(user), Group::from_name(group)) else {
        return false;
    };
    if u.gid == g.gid || g.mem.iter().any(|m| m == user) {
        return true;
    }
    let Ok(name) = std::ffi::CString::new(user) else {
        return false;
    };
    getgrouplist(&name, u.gid).is_ok_and(|gs| gs.contains(&g.gid))
}

async fn login(State(st): State<AppState>, req: Request) -> Response {
    let addr = super::guard::client_addr(&req);
    let headers = req.headers().clone();
    let lang = lang_of(&headers);
    let form: LoginForm = match axum::Form::<LoginForm>::from_request(req, &st).await {
        Ok(axum::Form(f)) => f,
        Err(e) => return e.into_response(),
    };
    let password = zeroize::Zeroizing::new(form.password.clone());
    let next = safe_next(form.next.as_deref());
    // The login form's own pre-login session and its CSRF token: a login
    // cannot be forced from another site.
    let old = session_cookie(&headers);
    let pre = old.as_deref().map(|id| st.sessions.get(id));
    let csrf_ok = matches!(&pre, Some(Lookup::Valid(s)) if constant_time_eq(&s.csrf, &form.csrf));
    let again = |st: &AppState, status: StatusCode, key: &'static str, detail: String| {
        let (id, s) = st.sessions.create(None);
        let page = LoginPage {
            page: PageCtx::anonymous(lang, s.csrf),
            next: next.clone(),
            user: form.user.clone(),
            notice: Some((key, true)),
            detail,
        };
        let mut r = super::pages::render(&page);
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::SET_COOKIE, set_cookie(st, &id));
        if let Some(old) = &old {
            st.sessions.remove(old);
        }
        r
    };
    if !csrf_ok {
        return again(
            &st,
            StatusCode::FORBIDDEN,
            "login.form_expired",
            String::new(),
        );
    }
    let user = form.user.trim().to_string();
    if user.is_empty() || password.is_empty() {
        return again(&st, StatusCode::BAD_REQUEST, "login.missing", String::new());
    }
    if let Some(wait) = st.limiter.check(&user, &addr) {
        let secs = wait.as_secs().max(1);
        super::record(&st, &user, &addr, "login", None, Err("rate limited".into()));
        let mut r = again(
            &st,
            StatusCode::TOO_MANY_REQUESTS,
            "login.rate_limited",
            super::fmt::duration(secs, lang),
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).unwrap_or(HeaderValue::from_static("60")),
        );
        return r;
    }
    let service = st.cfg.pam_service.clone();
    let (u2, a2, pw) = (user.clone(), addr.clone(), password.clone());
    let pam = tokio::task::spawn_blocking(move || {
        super::pam::authenticate(&service, &u2, &pw, Some(&a2))
    })
    .await;
    match pam {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            st.limiter.failure(&user, &addr);
            super::record(&st, &user, &addr, "login", None, Err(e.to_string()));
            let key = match e {
                super::pam::PamError::AccountRefused { .. } => "login.account_refused",
                super::pam::PamError::Service { .. } => "login.pam_broken",
                _ => "login.denied",
            };
            return again(&st, StatusCode::UNAUTHORIZED, key, String::new());
        }
        Err(_) => {
            return again(
                &st,
                StatusCode::INTERNAL_SERVER_ERROR,
                "login.pam_broken",
                String::new(),
            )
        }
    }
    let group = st.cfg.admin_group.clone();
    let u3 = user.clone();
    let admin = tokio::task::spawn_blocking(move || in_group(&u3, &group))
        .await
        .unwrap_or(false);
    if !admin {
        super::record(
            &st,
            &user,
            &addr,
            "login",
            None,
            Err(format!("not in the admin group {}", st.cfg.admin_group)),
        );
        return again(
            &st,
            StatusCode::FORBIDDEN,
            "login.not_admin",
            st.cfg.admin_group.clone(),
        );
    }
    st.limiter.success(&user, &addr);
    let (id, _) = st.sessions.login(old.as_deref(), &user);
    super::record(&st, &user, &addr, "login", None, Ok(String::new()));
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&st, &id));
    r
}

async fn logout(State(st): State<AppState>, admin: Admin, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        st.sessions.remove(&id);
    }
    super::record(
        &st,
        &admin.user,
        &admin.addr,
        "logout",
        None,
        Ok(String::new()),
    );
    let mut r = Redirect::to("/login?out=1").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(&st));
    r
}

#[derive(Deserialize)]
struct LangQuery {
    set: String,
    #[serde(default)]
    back: Option<String>,
}

/// The language switch: a cookie, then back to the page.
async fn set_lang(Query(q): Query<LangQuery>) -> Response {
    let lang = super::i18n::Lang::from_code(&q.set).unwrap_or_default();
    let mut r = Redirect::to(&safe_next(q.back.as_deref())).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}={}; Path=/; SameSite=Strict; Max-Age=31536000",
        super::layout::LANG_COOKIE,
        lang.code()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub fn public_routes() -> Routes {
    Routes::public()
        .get("/login", login_form)
        .post("/login", login)
}

pub fn routes() -> Routes {
    Routes::protected()
        .post("/logout", logout)
        .get("/lang", set_lang)
}

impl Drop for LoginForm {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}
