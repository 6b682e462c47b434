//! What every page's template gets: the reader's language, the admin
//! logged in, the CSRF token for its forms, the current section.

use super::i18n::Lang;

#[derive(Debug, Clone)]
pub struct PageCtx {
    pub lang: Lang,
    /// None on the login page.
    pub user: Option<String>,
    /// Put in every form as `csrf`.
    pub csrf: String,
    /// The nav entry to highlight (`dashboard`, `users`, ...).
    pub nav: &'static str,
}

impl PageCtx {
    /// Translated text (templates: `{{ page.t("nav.users") }}`).
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }
}
