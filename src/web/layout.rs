//! What every page's template gets: the reader's language, the admin
//! logged in, the CSRF token for its forms, the current section.

use super::auth::{cookie, Admin};
use super::i18n::Lang;
use super::AppState;
use crate::gateway::api::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::Response;

pub const LANG_COOKIE: &str = "sg_lang";

/// The reader's language: their choice (cookie), else Accept-Language.
pub fn lang_of(h: &HeaderMap) -> Lang {
    if let Some(l) = cookie(h, LANG_COOKIE).and_then(|c| Lang::from_code(&c)) {
        return l;
    }
    h.get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(Lang::from_accept_language)
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct PageCtx {
    pub lang: Lang,
    /// None on the login page.
    pub user: Option<String>,
    /// Put in every form as `csrf`.
    pub csrf: String,
    /// The nav entry to highlight (`dashboard`, `users`, ...).
    pub nav: &'static str,
    /// This page's path and query (the language switch comes back here).
    pub here: String,
    /// Messages at the top of the page (errors, what was done).
    pub banners: Vec<Banner>,
}

/// A message shown at the top of a page.
#[derive(Debug, Clone)]
pub struct Banner {
    /// `error`, `warning` or `ok` (a CSS class).
    pub level: &'static str,
    pub text: String,
}

impl Banner {
    pub fn error(page: &PageCtx, e: &ApiError) -> Banner {
        // The gateway's words, introduced in the reader's language.
        let lead = match e.kind {
            crate::gateway::api::ErrorKind::Unavailable
            | crate::gateway::api::ErrorKind::NotRunning => page.t("banner.unavailable"),
            _ => page.t("banner.failed"),
        };
        Banner {
            level: "error",
            text: format!("{lead} {}", e.message),
        }
    }
    /// app.css's alert class for this level.
    pub fn class(&self) -> &'static str {
        match self.level {
            "error" => "critical",
            "warning" => "warning",
            _ => "info",
        }
    }

    pub fn is_error(&self) -> bool {
        self.level == "error"
    }

    pub fn ok(text: impl Into<String>) -> Banner {
        Banner {
            level: "ok",
            text: text.into(),
        }
    }
}

impl PageCtx {
    pub fn error(&mut self, e: &ApiError) {
        let b = Banner::error(self, e);
        self.banners.push(b);
    }

    pub fn with_nav(mut self, nav: &'static str) -> PageCtx {
        self.nav = nav;
        self
    }

    /// Translated text (templates: `{{ page.t("nav.users") }}`).
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }

    pub fn is_nav(&self, key: &str) -> bool {
        self.nav == key
    }

    pub fn is_en(&self) -> bool {
        self.lang == Lang::En
    }

    pub fn anonymous(lang: Lang, csrf: String) -> PageCtx {
        PageCtx {
            lang,
            user: None,
            csrf,
            nav: "",
            here: "/".into(),
            banners: Vec::new(),
        }
    }

    pub fn for_admin(lang: Lang, admin: &Admin, nav: &'static str) -> PageCtx {
        PageCtx {
            lang,
            user: Some(admin.user.clone()),
            csrf: admin.csrf.clone(),
            nav,
            here: "/".into(),
            banners: Vec::new(),
        }
    }

    /// The language switch's link for `to`.
    pub fn lang_href(&self, to: &str) -> String {
        format!(
            "/lang?set={to}&back={}",
            percent_encoding::utf8_percent_encode(&self.here, percent_encoding::NON_ALPHANUMERIC)
        )
    }

    pub fn nav_items(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        [
            ("dashboard", "/"),
            ("users", "/users"),
            ("shares", "/shares"),
            ("cache", "/cache"),
            ("jobs", "/jobs"),
            ("audit", "/audit"),
        ]
        .into_iter()
        .map(|(k, href)| (k, href, self.t(&format!("nav.{k}"))))
        .collect()
    }
}

/// A page handler's context: the admin (set by the guard) and language.
impl FromRequestParts<AppState> for PageCtx {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let admin = Admin::from_request_parts(parts, st).await?;
        let mut p = PageCtx::for_admin(lang_of(&parts.headers), &admin, "");
        p.here = parts
            .uri
            .path_and_query()
            .map(|x| x.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(p)
    }
}
