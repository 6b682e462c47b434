//! Pages that explain a refusal: a form without a valid CSRF token, a
//! page that does not exist.

use super::super::auth::Admin;
use super::super::i18n::Lang;
use super::super::layout::{lang_of, PageCtx};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

#[derive(askama::Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub page: PageCtx,
    pub title: &'static str,
    pub text: &'static str,
    pub link: (&'static str, &'static str),
}

pub fn csrf_page(lang: Lang, admin: &Admin) -> Response {
    let page = PageCtx::for_admin(lang, admin, "");
    let m = MessagePage {
        title: page.t("csrf.title"),
        text: page.t("csrf.text"),
        link: ("/", page.t("csrf.back")),
        page,
    };
    super::render_status(StatusCode::FORBIDDEN, &m)
}

pub async fn not_found(headers: HeaderMap) -> Response {
    let lang = lang_of(&headers);
    let page = PageCtx::anonymous(lang, String::new());
    let m = MessagePage {
        title: page.t("notfound.title"),
        text: page.t("notfound.text"),
        link: ("/", page.t("notfound.back")),
        page,
    };
    super::render_status(StatusCode::NOT_FOUND, &m)
}
