//! The web console over HTTP, against the real daemon (local store, real
//! smbd) and real PAM accounts made by the test: login only for the admin
//! group, sessions, CSRF, the rate limit, escaping, API tokens, OpenAPI,
//! /metrics access and TLS.

mod common;

use common::accounts::{PamService, TestAccount, TestGroup};
use common::gw::*;
use common::*;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use std::time::Duration;

/// A console on its own daemon, an admin group, an admin (a supplementary
/// member) and the PAM service the console uses.
struct Console {
    gw: Gw,
    /// Removed after the daemon stopped (it writes there until then).
    _store_dir: RmDir,
    url: String,
    admin: TestAccount,
    group: TestGroup,
    _svc: PamService,
}

fn console(extra: &str) -> Console {
    console_on(None, extra)
}

/// A console whose homes live in `store` (`[store]` url and extra lines),
/// or in a local store of its own.
fn console_on(store: Option<(&str, &str)>, extra: &str) -> Console {
    let svc = PamService::swiftgate();
    let group = TestGroup::new();
    let admin = TestAccount::with_groups(&[&group.name]);
    let store_dir = unique_dir("cstore");
    let local = format!("local://{}/homes/{{user}}", store_dir.display());
    let (store, store_toml) = store.unwrap_or((&local, ""));
    let gw = Gw::with_console(
        store,
        store_toml,
        &[],
        "service",
        &format!(
            "pam_service = \"{}\"\nadmin_group = \"{}\"\n{extra}",
            svc.name, group.name
        ),
    );
    let url = gw.console_url();
    Console {
        gw,
        _store_dir: RmDir(store_dir),
        url,
        admin,
        group,
        _svc: svc,
    }
}

struct RmDir(std::path::PathBuf);

impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn set_cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sg_session="))
        .map(String::from)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("sg_session=")
        .to_string()
}

/// The value of the first `name="csrf" value="..."` in a page.
fn csrf_of(html: &str) -> String {
    let i = html.find(r#"name="csrf" value=""#).expect("a csrf field");
    let rest = &html[i + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A browser-like session: its cookie and CSRF token.
struct Session {
    c: Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Session {
    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.c
            .request(method, format!("{}{path}", self.base))
            .header("Cookie", format!("sg_session={}", self.cookie))
    }
    fn get(&self, path: &str) -> Response {
        self.req(reqwest::Method::GET, path).send().unwrap()
    }
    fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.req(reqwest::Method::POST, path)
            .form(form)
            .send()
            .unwrap()
    }
}

/// The login page: a pre-login session and its CSRF token.
fn login_page(base: &str) -> (Client, String, String) {
    let c = client();
    let r = c.get(format!("{base}/login")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = cookie_value(&set_cookie(r.headers()).expect("a session cookie"));
    let csrf = csrf_of(&r.text().unwrap());
    (c, cookie, csrf)
}

fn try_login(base: &str, user: &str, password: &str) -> (Response, String) {
    let (c, pre, csrf) = login_page(base);
    let r = c
        .post(format!("{base}/login"))
        .header("Cookie", format!("sg_session={pre}"))
        .form(&[
            ("user", user),
            ("password", password),
            ("csrf", &csrf),
            ("next", "/"),
        ])
        .send()
        .unwrap();
    (r, pre)
}

fn login(base: &str, user: &str, password: &str) -> Session {
    let (r, _) = try_login(base, user, password);
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "login refused");
    let cookie = cookie_value(&set_cookie(r.headers()).unwrap());
    let c = client();
    let s = Session {
        c,
        base: base.into(),
        cookie,
        csrf: String::new(),
    };
    let page = s.get("/").text().unwrap();
    let csrf = csrf_of(&page);
    Session { csrf, ..s }
}

fn location(r: &Response) -> String {
    r.headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A concrete path for a route pattern.
fn concrete(path: &str) -> String {
    path.replace("{name}", "nobody")
        .replace("{id}", "1")
        .replace("{snapshot}", "snap")
        .replace("{*name}", "app.css")
}

#[test]
fn every_route_but_the_public_ones_needs_login() {
    let con = console("");
    let c = client();
    let table = swiftgate::web::route_table();
    let public: Vec<_> = table
        .iter()
        .filter(|r| r.public)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        public,
        [
            "GET /healthz",
            "GET /login",
            "POST /login",
            "GET /metrics",
            "GET /static/{*name}"
        ],
        "the public routes changed"
    );
    let protected: Vec<_> = table.iter().filter(|r| !r.public).collect();
    assert!(protected.len() > 40, "{protected:?}");
    for r in &protected {
        let url = format!("{}{}", con.url, concrete(r.path));
        let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
        for cookie in [None, Some("sg_session=0000forged")] {
            let mut rb = c.request(method.clone(), &url);
            if let Some(ck) = cookie {
                rb = rb.header("Cookie", ck);
            }
            let resp = rb.send().unwrap();
            let what = format!("{} {} (cookie {cookie:?})", r.method, r.path);
            if r.path.starts_with("/api/") {
                assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
                let v: serde_json::Value = resp.json().unwrap();
                assert_eq!(v["kind"], "denied", "{what}: {v}");
            } else {
                assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{what}");
                let to = location(&resp);
                assert!(to.starts_with("/login?next="), "{what}: {to}");
                // A session id the console does not know: said so.
                assert_eq!(to.contains("expired=1"), cookie.is_some(), "{what}: {to}");
            }
        }
    }
    // The public ones answer without login.
    for path in ["/healthz", "/login", "/static/app.css", "/metrics"] {
        let r = c.get(format!("{}{path}", con.url)).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // Unknown pages are a 404 page, not a login bypass or a crash.
    let r = c.get(format!("{}/no/such/page", con.url)).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[test]
fn login_renews_the_session_and_logout_ends_it() {
    let con = console("");
    let (r, pre) = try_login(&con.url, &con.admin.name, &con.admin.password);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let sc = set_cookie(r.headers()).unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(sc.contains(attr), "{sc}");
    }
    assert!(!sc.contains("Secure"), "plain HTTP: {sc}");
    let id = cookie_value(&sc);
    assert_eq!(id.len(), 64);
    assert_ne!(id, pre, "the session id must change at login");
    let c = client();
    // The id presented before login does not become a logged-in session.
    let r = c
        .get(format!("{}/", con.url))
        .header("Cookie", format!("sg_session={pre}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login"));

    let s = login(&con.url, &con.admin.name, &con.admin.password);
    let page = s.get("/").text().unwrap();
    assert!(page.contains(&con.admin.name), "the admin's name is shown");
    assert!(page.contains(r#"id="dashboard-live""#), "{page}");
    // Every page renders for the admin (no 500s, no login loops).
    for path in [
        "/",
        "/live/dashboard",
        "/users",
        "/new/user",
        "/shares",
        "/new/share",
        "/cache",
        "/jobs",
        "/live/jobs",
        "/audit",
    ] {
        let r = s.get(path);
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = s.get("/users/nosuchuser");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.text().unwrap().contains("banner-error"),
        "an error banner, not a 500"
    );
    // The audit log has the login, with who and from where.
    let audit = s.get("/audit").text().unwrap();
    assert!(audit.contains(r#"data-action="login""#), "{audit}");
    assert!(audit.contains("127.0.0.1"));

    let r = s.post_form("/logout", &[("csrf", &s.csrf)]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(r.headers()).unwrap().contains("Max-Age=0"));
    let r = s.get("/");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "logged out");
    let logline = std::fs::read_to_string(con.gw.root.join("log/audit.log")).unwrap();
    assert!(logline.contains(r#""action":"logout""#), "{logline}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(con.gw.root.join("log/audit.log"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn idle_sessions_expire_with_a_clear_page() {
    let con = console("session_idle = \"2s\"");
    let s = login(&con.url, &con.admin.name, &con.admin.password);
    assert_eq!(s.get("/").status(), StatusCode::OK);
    std::thread::sleep(Duration::from_secs(3));
    let r = s.get("/users");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.contains("expired=1"), "{to}");
    let page = client()
        .get(format!("{}{to}", con.url))
        .header("Accept-Language", "en")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("Your session has expired"), "{page}");
    // The API says it in JSON.
    let r = s.get("/api/v1/overview");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn changes_need_the_sessions_csrf_token() {
    let con = console("");
    let s = login(&con.url, &con.admin.name, &con.admin.password);
    // A form without the token, and with another one: refused, clearly.
    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s
            .req(reqwest::Method::POST, "/cache/evict")
            .header("Accept-Language", "en")
            .form(&f)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let page = r.text().unwrap();
        assert!(page.contains("This form could not be accepted"), "{page}");
    }
    // With it: done.
    let r = s.post_form("/cache/evict", &[("csrf", &s.csrf)]);
    assert_eq!(r.status(), StatusCode::OK);
    // The JSON API: the X-CSRF-Token header.
    let r = s
        .req(reqwest::Method::POST, "/api/v1/cache/evict")
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["kind"], "denied");
    assert!(v["message"].as_str().unwrap().contains("CSRF"), "{v}");
    let token: serde_json::Value = s.get("/api/v1/session").json().unwrap();
    assert_eq!(token["csrf"], s.csrf.as_str());
    let r = s
        .req(reqwest::Method::POST, "/api/v1/cache/evict")
        .header("X-CSRF-Token", &s.csrf)
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    // The login form has its own token.
    let c = client();
    let r = c
        .post(format!("{}/login", con.url))
        .form(&[
            ("user", con.admin.name.as_str()),
            ("password", con.admin.password.as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(r.headers()).is_some_and(|c| !c.contains("Max-Age=0")));
    // The refused changes are not in the audit log; the accepted ones are.
    let log = std::fs::read_to_string(con.gw.root.join("log/audit.log")).unwrap();
    assert_eq!(log.matches(r#""action":"cache_evict""#).count(), 2, "{log}");
}

#[test]
fn a_pam_user_outside_the_admin_group_is_refused() {
    let con = console("");
    let other = TestAccount::new();
    let (r, _) = try_login(&con.url, &other.name, &other.password);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().unwrap();
    assert!(page.contains("not a console administrator"), "{page}");
    assert!(page.contains(&con.group.name), "{page}");
    // Its (pre-login) cookie gives no access.
    let (_, _) = (&con.admin, &con.gw);
    let log = std::fs::read_to_string(con.gw.root.join("log/audit.log")).unwrap();
    assert!(
        log.contains(&other.name) && log.contains("not in the admin group"),
        "{log}"
    );
}

#[test]
fn wrong_passwords_are_refused_then_rate_limited() {
    let con = console("");
    let wrong = format!("{}x", con.admin.password);
    for i in 0..6 {
        let (r, _) = try_login(&con.url, &con.admin.name, &wrong);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
        let page = r.text().unwrap();
        assert!(page.contains("Wrong user name or password"), "{page}");
        assert!(!page.contains(&wrong));
    }
    // Now even the right password waits.
    let (r, _) = try_login(&con.url, &con.admin.name, &con.admin.password);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(r.text().unwrap().contains("Too many failed logins"));
    // Per address too: another account from the same address waits.
    let other = TestAccount::with_groups(&[&con.group.name]);
    let (r, _) = try_login(&con.url, &other.name, &other.password);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn names_and_comments_are_escaped_everywhere() {
    let mut con = console("");
    let s = login(&con.url, &con.admin.name, &con.admin.password);
    let payload = r#"<script>alert("x")</script>"#;
    // A share comment.
    let name = format!("x{:06x}", std::process::id() & 0xffffff);
    con.gw.shares.push(name.clone());
    let r = s
        .req(reqwest::Method::POST, "/api/v1/shares")
        .header("X-CSRF-Token", &s.csrf)
        .json(&serde_json::json!({ "name": name, "comment": payload, "members": [] }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text());
    for path in ["/shares".to_string(), format!("/shares/{name}")] {
        let page = s.get(&path).text().unwrap();
        assert!(!page.contains(payload), "{path} is not escaped");
        assert!(page.contains("&#60;script&#62;"), "{path}: {page}");
    }
    // A user name the form sends back (rejected, and shown escaped).
    let r = s.post_form(
        "/new/user",
        &[
            ("csrf", &s.csrf),
            ("user", payload),
            ("password", "Secret-1234"),
            ("password2", "Secret-1234"),
        ],
    );
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().unwrap();
    assert!(!page.contains(payload), "{page}");
    assert!(
        page.contains(r#"data-test="error-user""#),
        "the error is next to the field: {page}"
    );
    // The login form echoes the name tried.
    let (r, _) = try_login(&con.url, payload, "wrong password");
    let page = r.text().unwrap();
    assert!(
        !page.contains(payload) && page.contains("&#60;script&#62;"),
        "{page}"
    );
    // The audit page shows the attempt, escaped.
    let page = s.get("/audit").text().unwrap();
    assert!(!page.contains(payload), "{page}");
    // Every answer forbids inline scripts anyway.
    let r = s.get("/shares");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}

fn sg_token(con: &Console, args: &[&str]) -> std::process::Output {
    let mut a = vec!["token"];
    a.extend(args);
    con.gw.sg(&a, "")
}

#[test]
fn api_tokens_work_until_revoked() {
    let con = console("metrics = \"token\"");
    let o = ok(sg_token(&con, &["create", "ci"]));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("sgt_"), "{token}");
    let file = con.gw.root.join("etc/api-tokens.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&token[4..]), "only a hash is stored");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let list = ok(sg_token(&con, &["list"]));
    assert!(String::from_utf8_lossy(&list.stdout).contains("ci"));

    let c = client();
    let bearer = format!("Bearer {token}");
    let r = c
        .get(format!("{}/api/v1/overview", con.url))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().unwrap();
    assert!(v["version"].is_string(), "{v}");
    // A change needs no CSRF token with a bearer token (no cookie to ride).
    let r = c
        .post(format!("{}/api/v1/cache/evict", con.url))
        .header("Authorization", &bearer)
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    // Errors are JSON with kind, message, field and a fitting status.
    let r = c
        .get(format!("{}/api/v1/users/nosuchuser", con.url))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["kind"], "not_found", "{v}");
    let r = c
        .post(format!("{}/api/v1/users", con.url))
        .header("Authorization", &bearer)
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["kind"], "invalid", "{v}");
    let r = c
        .get(format!("{}/api/v1/jobs/abc", con.url))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (&v["kind"], &v["field"]),
        (&"invalid".into(), &"id".into()),
        "{v}"
    );
    // The served OpenAPI document covers every API route, and only those.
    let doc: serde_json::Value = c
        .get(format!("{}/api/v1/openapi.json", con.url))
        .header("Authorization", &bearer)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut documented: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {p}", m.to_uppercase()))
        })
        .collect();
    let mut routed: Vec<String> = swiftgate::web::route_table()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v1/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    // A token does not open the pages (they need a session).
    let r = c
        .get(format!("{}/", con.url))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // /metrics with `metrics = "token"`: the token, and only it.
    let r = c.get(format!("{}/metrics", con.url)).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(format!("{}/metrics", con.url))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Revoked: refused at once.
    ok(sg_token(&con, &["revoke", "ci"]));
    for path in ["/api/v1/overview", "/metrics"] {
        let r = c
            .get(format!("{}{path}", con.url))
            .header("Authorization", &bearer)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let log = std::fs::read_to_string(con.gw.root.join("log/audit.log")).unwrap();
    assert!(log.contains(r#""who":"token:ci""#), "{log}");
}

/// This machine's address that is not loopback (None: there is none).
fn outside_addr() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.254:9").ok()?;
    let a = s.local_addr().ok()?.ip();
    (!a.is_loopback() && !a.is_unspecified()).then_some(a)
}

#[test]
fn metrics_from_loopback_by_default_in_openmetrics_text() {
    let con = console("");
    let c = client();
    let r = c.get(format!("{}/metrics", con.url)).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().unwrap();
    for m in [
        "# TYPE swiftgate_cache_size_bytes gauge",
        "swiftgate_cache_size_bytes 2147483648",
        "swiftgate_cache_dirty_limit_bytes 536870912",
        "# TYPE swiftgate_store_requests counter",
        "# TYPE swiftgate_store_request_duration_seconds histogram",
        "swiftgate_homes_mounted 0",
        "swiftgate_smb_sessions 0",
        "# EOF",
    ] {
        assert!(text.contains(m), "{m} missing:\n{text}");
    }
    // Every metric the Grafana dashboard uses is served.
    let dash = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/provisioning/grafana-dashboard.json"
    ))
    .unwrap();
    let mut names: Vec<&str> = dash
        .match_indices("swiftgate_")
        .map(|(i, _)| {
            let rest = &dash[i..];
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    for n in names {
        // Per home: none is mounted here (the unit test in web::metrics
        // encodes it).
        if n == "swiftgate_metadata_age_seconds" {
            continue;
        }
        let base = n
            .trim_end_matches("_bucket")
            .trim_end_matches("_total")
            .trim_end_matches("_count")
            .trim_end_matches("_sum");
        assert!(
            text.contains(&format!("# TYPE {base} ")),
            "the dashboard uses {n}, not served:\n{text}"
        );
    }
    drop(con);
    // From another address the default refuses.
    if let Some(a) = outside_addr() {
        let con = console("listen = \"0.0.0.0:0\"");
        let port = con.url.rsplit(':').next().unwrap();
        let r = c.get(format!("http://{a}:{port}/metrics")).send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = c.get(format!("http://{a}:{port}/healthz")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    } else {
        eprintln!("no non-loopback address: the remote /metrics refusal is not checked");
    }
}

#[test]
fn tls_serves_https_with_secure_cookies() {
    let dir = unique_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let con = console(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    ));
    assert!(con.url.starts_with("https://"), "{}", con.url);
    let c = client();
    let r = c.get(format!("{}/login", con.url)).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sc = set_cookie(r.headers()).unwrap();
    assert!(sc.contains("; Secure"), "{sc}");
    let s = login(&con.url, &con.admin.name, &con.admin.password);
    assert_eq!(s.get("/").status(), StatusCode::OK);
    // Plain HTTP on the same port gets no page.
    let plain = con.url.replace("https://", "http://");
    let r = c.get(format!("{plain}/healthz")).send();
    assert!(r.map(|r| r.status() != StatusCode::OK).unwrap_or(true));
    let _ = std::fs::remove_dir_all(dir);
}

/// With the object store unreachable the console still serves every page,
/// says so on the dashboard, and an add is refused with the reason,
/// leaving nothing behind.
#[test]
fn the_console_keeps_working_while_the_store_is_down() {
    // A Keystone URL on a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let secret_dir = unique_dir("csecret");
    let secret = secret_dir.join("password");
    std::fs::write(&secret, "not-used\n").unwrap();
    let _secret_dir = RmDir(secret_dir);
    let swift = format!(
        "[store.swift]\nauth_url = \"http://127.0.0.1:{port}/v3\"\nusername = \"gw\"\npassword_file = \"{}\"\nproject_name = \"p\"\nuser_domain_name = \"Default\"\nproject_domain_name = \"Default\"\n",
        secret.display()
    );
    let con = console_on(Some(("swift://sgt-home-{user}", &swift)), "");
    let s = login(&con.url, &con.admin.name, &con.admin.password);
    // The health probe runs in the background: wait for its verdict.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v: serde_json::Value = s.get("/api/v1/overview").json().unwrap();
        if v["store"]["reachable"] == serde_json::json!(false) {
            assert!(
                v["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["code"] == "store_unreachable"),
                "{v}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store was never reported unreachable: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = s.get("/");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().unwrap();
    assert!(
        html.contains("The object store cannot be reached"),
        "no plain-words alert on the dashboard"
    );
    for page in ["/users", "/shares", "/cache", "/jobs", "/audit"] {
        assert_eq!(s.get(page).status(), StatusCode::OK, "{page}");
    }
    // Adding a user needs the store: refused with the reason, nothing kept.
    let form = s.get("/new/user").text().unwrap();
    let u = format!("sgt{}", std::process::id() % 100_000);
    let r = s.post_form(
        "/new/user",
        &[
            ("csrf", &csrf_of(&form)),
            ("user", &u),
            ("password", "Pw-for-a-new-user-1"),
            ("password2", "Pw-for-a-new-user-1"),
        ],
    );
    // 503: the store is what is missing; the form comes back with the
    // reason and what was typed.
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let html = r.text().unwrap();
    assert!(
        html.contains("127.0.0.1") && html.contains(&format!("value=\"{u}\"")),
        "the form with the reason is not shown: {html}"
    );
    assert!(
        nix::unistd::User::from_name(&u).unwrap().is_none(),
        "a Unix account was made for a user whose store is unreachable"
    );
    let page: serde_json::Value = s.get("/api/v1/users").json().unwrap();
    assert!(!page.to_string().contains(&u), "{page}");
}

/// The recycle bin in the console: a user's page and a share's page show
/// its setting and contents, the share form sets its override, and the
/// admin empties it (button and JSON API), as jobs.
#[test]
fn recycle_bins_on_the_user_and_share_pages() {
    let mut con = console("");
    let s = login(&con.url, &con.admin.name, &con.admin.password);
    let u = unique_user("cr");
    ok(con.gw.add_user(&u, "pw-cr1", &[]));
    let work_dir = RmDir(unique_dir("crwork"));
    let work = &work_dir.0;
    std::fs::write(work.join("a.txt"), b"deleted bytes").unwrap();
    smb_ok(
        con.gw
            .smbclient(&u, "pw-cr1", "put a.txt a.txt; del a.txt", work),
    );
    let api = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        s.req(method, path)
            .header("X-CSRF-Token", &s.csrf)
            .json(&body)
            .send()
            .unwrap()
    };
    let wait_job = |r: Response| -> serde_json::Value {
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text());
        let j: serde_json::Value = r.json().unwrap();
        let path = format!("/api/v1/jobs/{}", j["id"]);
        let until = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let j: serde_json::Value = s.get(&path).json().unwrap();
            if j["state"] != "running" {
                return j;
            }
            assert!(std::time::Instant::now() < until, "{j}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let r = api(
        reqwest::Method::POST,
        &format!("/api/v1/users/{u}/mount"),
        serde_json::json!({}),
    );
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    // Kept mounted while the test looks (an open directory).
    let _hold = std::fs::File::open(con.gw.home(&u)).unwrap();
    let page = s.get(&format!("/users/{u}")).text().unwrap();
    assert!(
        page.contains(r#"data-test="recycle-files">1"#)
            && page.contains("on, deleted files kept 30 days")
            && page.contains(r#"data-test="action-recycle-empty""#),
        "{page}"
    );
    let v: serde_json::Value = s.get(&format!("/api/v1/users/{u}")).json().unwrap();
    assert_eq!(
        (&v["recycle"]["files"], &v["recycle"]["bytes"]),
        (&1.into(), &13.into()),
        "{v}"
    );
    // The home's own retention, from its page.
    let r = s.post_form(
        &format!("/users/{u}/recycle"),
        &[("csrf", &s.csrf), ("keep_days", "soon")],
    );
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = s.post_form(
        &format!("/users/{u}/recycle"),
        &[("csrf", &s.csrf), ("keep_days", "7")],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = s.get(&location(&r)).text().unwrap();
    assert!(
        page.contains("on, deleted files kept 7 days")
            && page.contains(r#"name="keep_days" value="7""#),
        "{page}"
    );
    let r = api(
        reqwest::Method::PUT,
        &format!("/api/v1/users/{u}/recycle"),
        serde_json::json!({ "keep_days": null }),
    );
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    let v: serde_json::Value = s.get(&format!("/api/v1/users/{u}")).json().unwrap();
    assert_eq!(
        (&v["recycle"]["keep_days"], &v["recycle"]["own_keep_days"]),
        (&30.into(), &serde_json::Value::Null),
        "{v}"
    );
    let j = wait_job(api(
        reqwest::Method::POST,
        &format!("/api/v1/users/{u}/recycle/empty"),
        serde_json::json!({}),
    ));
    assert_eq!(j["state"], "succeeded", "{j}");
    assert!(!con.gw.home(&u).join("#recycle/a.txt").exists());

    // A team share: its own keep days from the API, then off from the form.
    let name = format!("c{:06x}", rand_u32() & 0xffffff);
    con.gw.shares.push(name.clone());
    let r = api(
        reqwest::Method::POST,
        "/api/v1/shares",
        serde_json::json!({ "name": name, "members": [u], "recycle_keep_days": 5 }),
    );
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text());
    smb_ok(
        con.gw
            .smbclient_on(&name, &u, "pw-cr1", "put a.txt b.txt; del b.txt", work),
    );
    let page = s.get(&format!("/shares/{name}")).text().unwrap();
    assert!(
        page.contains("on, deleted files kept 5 days")
            && page.contains(r#"data-test="recycle-files">1"#)
            && page.contains(r#"value="5""#),
        "{page}"
    );
    let r = s.post_form(
        &format!("/shares/{name}"),
        &[
            ("csrf", &s.csrf),
            ("members", &u),
            ("recycle", ""),
            ("recycle_keep_days", "soon"),
        ],
    );
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r
        .text()
        .unwrap()
        .contains(r#"data-test="error-recycle_keep_days""#));
    let r = s.post_form(
        &format!("/shares/{name}/recycle/empty"),
        &[("csrf", &s.csrf)],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/jobs/"), "{}", location(&r));
    let mp = con.gw.root.join("shares").join(&name);
    wait_until(
        30,
        || !mp.join("#recycle/b.txt").exists(),
        || "the share's bin was not emptied".into(),
    );
    let r = s.post_form(
        &format!("/shares/{name}"),
        &[
            ("csrf", &s.csrf),
            ("members", &u),
            ("recycle", "off"),
            ("recycle_keep_days", ""),
        ],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text());
    let v: serde_json::Value = s.get(&format!("/api/v1/shares/{name}")).json().unwrap();
    assert_eq!(v["spec"]["recycle"], false, "{v}");
    assert_eq!(v["recycle"]["enabled"], false, "{v}");
    assert!(!v["smb_conf"].as_str().unwrap().contains("recycle:"), "{v}");
    let r = api(
        reqwest::Method::POST,
        "/api/v1/recycle/purge",
        serde_json::json!({ "user": u, "share": name }),
    );
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The purge answers as a job too.
    let j = wait_job(api(
        reqwest::Method::POST,
        "/api/v1/recycle/purge",
        serde_json::json!({}),
    ));
    assert_eq!(j["state"], "succeeded", "{j}");
}

#[test]
fn snapshots_in_the_console_and_the_api() {
    let mut con = console("");
    let u = unique_user("cs");
    con.gw.users.push(u.clone());
    ok(con.gw.add_user(&u, "pw-cs", &[]));
    let token = String::from_utf8(ok(sg_token(&con, &["create", "snap"])).stdout)
        .unwrap()
        .trim()
        .to_string();
    let bearer = format!("Bearer {token}");
    let c = client();
    let r = c
        .post(format!("{}/api/v1/users/{u}/mount", con.url))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    let home = con.gw.home(&u);
    std::fs::create_dir_all(home.join("docs")).unwrap();
    std::fs::write(home.join("docs/report.txt"), b"original").unwrap();
    let api = |m: reqwest::Method, path: &str| {
        c.request(m, format!("{}/api/v1/users/{u}/snapshots{path}", con.url))
            .header("Authorization", &bearer)
    };
    let r = api(reqwest::Method::POST, "").send().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let snap: serde_json::Value = r.json().unwrap();
    let name = snap["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("@GMT-") && snap["files"] == 1, "{snap}");
    let l: serde_json::Value = api(reqwest::Method::GET, "")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(l["snapshots"][0]["name"], name.as_str(), "{l}");
    // Restore over an overwrite; a path out of the tree is refused.
    std::fs::write(home.join("docs/report.txt"), b"overwritten by mistake").unwrap();
    let r = api(reqwest::Method::POST, &format!("/{name}/restore"))
        .json(&serde_json::json!({ "path": "docs" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    assert_eq!(
        std::fs::read(home.join("docs/report.txt")).unwrap(),
        b"original"
    );
    let r = api(reqwest::Method::POST, &format!("/{name}/restore"))
        .json(&serde_json::json!({ "path": "../../etc" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (&v["kind"], &v["field"]),
        (&"invalid".into(), &"path".into()),
        "{v}"
    );

    // The page: listed, taken and deleted with the session's CSRF token.
    let s = login(&con.url, &con.admin.name, &con.admin.password);
    let page = s.get(&format!("/users/{u}")).text().unwrap();
    assert!(page.contains(&format!("/users/{u}/snapshots")), "no link");
    let page = s.get(&format!("/users/{u}/snapshots")).text().unwrap();
    assert!(
        page.contains(&name) && page.contains("snapshot-restore"),
        "{page}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = s.post_form(&format!("/users/{u}/snapshots"), &[("csrf", &s.csrf)]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&r).ends_with("done=snapshot_create"),
        "{}",
        location(&r)
    );
    let l: serde_json::Value = api(reqwest::Method::GET, "")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(l["snapshots"].as_array().unwrap().len(), 2, "{l}");
    let r = s.post_form(
        &format!("/users/{u}/snapshots/delete"),
        &[("csrf", &s.csrf), ("snapshot", &name)],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = api(reqwest::Method::DELETE, &format!("/{name}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "deleted already");
    let log = std::fs::read_to_string(con.gw.root.join("log/audit.log")).unwrap();
    for op in ["snapshot_create", "snapshot_restore", "snapshot_delete"] {
        assert!(log.contains(&format!(r#""action":"{op}""#)), "{op}: {log}");
    }
}

#[test]
fn the_quota_forms_set_and_show_a_quota() {
    let mut con = console("");
    let user = common::gw::unique_user("cq");
    ok(con
        .gw
        .add_user(&user, "Pw-quota-user-1", &["--quota", "1G,300"]));
    let s = login(&con.url, &con.admin.name, &con.admin.password);
    let page = s.get(&format!("/users/{user}")).text().unwrap();
    assert!(page.contains(r#"id="quota-form""#), "no quota form");
    assert!(
        page.contains(r#"value="1G,300""#),
        "user add --quota: {page}"
    );
    // Nonsense is refused next to what it should be, nothing saved.
    let r = s.post_form(
        &format!("/users/{user}/quota"),
        &[("csrf", &s.csrf), ("quota", "lots")],
    );
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().unwrap().contains("50G"));
    let r = s.post_form(
        &format!("/users/{user}/quota"),
        &[("csrf", &s.csrf), ("quota", "2G,5000")],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), format!("/users/{user}?done=quota"));
    let page = s.get(&location(&r)).text().unwrap();
    assert!(page.contains(r#"value="2G,5000""#), "{page}");
    assert!(page.contains("2.0 GiB") || page.contains("2 GiB"), "{page}");
    let shown =
        String::from_utf8_lossy(&ok(con.gw.sg(&["user", "show", &user], "")).stdout).to_string();
    assert!(shown.contains("quota:       2G,5000"), "{shown}");
    // Empty lifts it.
    let r = s.post_form(
        &format!("/users/{user}/quota"),
        &[("csrf", &s.csrf), ("quota", "")],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown =
        String::from_utf8_lossy(&ok(con.gw.sg(&["user", "show", &user], "")).stdout).to_string();
    assert!(shown.contains("quota:       none"), "{shown}");
    // The same for a team share.
    let name = format!("cq{:06x}", common::gw::rand_u32() & 0xffffff);
    con.gw.shares.push(name.clone());
    ok(con.gw.sg(&["share", "add", &name, "--member", &user], ""));
    let r = s.post_form(
        &format!("/shares/{name}/quota"),
        &[("csrf", &s.csrf), ("quota", "1G")],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text());
    let page = s.get(&location(&r)).text().unwrap();
    assert!(page.contains(r#"value="1G""#), "{page}");
    assert!(
        page.contains("/ 1.0 GiB") || page.contains("/ 1 GiB"),
        "{page}"
    );
}
