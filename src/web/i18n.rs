//! English and Japanese: one catalog per language (`web/i18n/*.toml`,
//! embedded), picked from the reader's choice (a cookie) or
//! Accept-Language.

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Ja,
}

const EN: &str = include_str!("../../web/i18n/en.toml");
const JA: &str = include_str!("../../web/i18n/ja.toml");

fn catalog(lang: Lang) -> &'static HashMap<String, String> {
    static CATALOGS: OnceLock<[HashMap<String, String>; 2]> = OnceLock::new();
    let all = CATALOGS.get_or_init(|| {
        // Embedded and checked by the tests below: a broken catalog is a
        // build-time mistake, not a runtime condition.
        let parse = |s: &str| toml::from_str::<HashMap<String, String>>(s).unwrap_or_default();
        [parse(EN), parse(JA)]
    });
    &all[lang as usize]
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Ja];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    pub fn from_code(s: &str) -> Option<Lang> {
        match s {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    /// The first language of an Accept-Language header we have (by
    /// q-value), else English.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',') {
            let mut it = part.trim().split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|v| v.parse::<f32>().ok())
                })
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            if let Some(l) = Lang::from_code(primary) {
                if best.is_none_or(|(bq, _)| q > bq) {
                    best = Some((q, l));
                }
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }

    /// The text for `key`; a key missing from the catalog shows as itself
    /// (the tests keep both catalogs complete).
    pub fn t(self, key: &str) -> &'static str {
        match catalog(self).get(key) {
            Some(v) => v.as_str(),
            None => {
                tracing::warn!(key, lang = self.code(), "missing translation");
                // Leaked once per missing key and call: only reachable
                // through a catalog bug the tests catch.
                Box::leak(key.to_string().into_boxed_str())
            }
        }
    }

    /// Every key of the catalog (for tests).
    pub fn keys(self) -> Vec<&'static str> {
        catalog(self).keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_parse_and_have_the_same_keys() {
        for (name, text) in [("en", EN), ("ja", JA)] {
            toml::from_str::<HashMap<String, String>>(text)
                .unwrap_or_else(|e| panic!("web/i18n/{name}.toml: {e}"));
        }
        let mut en = Lang::En.keys();
        let mut ja = Lang::Ja.keys();
        en.sort();
        ja.sort();
        let only_en: Vec<_> = en.iter().filter(|k| !ja.contains(k)).collect();
        let only_ja: Vec<_> = ja.iter().filter(|k| !en.contains(k)).collect();
        assert!(
            only_en.is_empty() && only_ja.is_empty(),
            "missing in ja: {only_en:?}; missing in en: {only_ja:?}"
        );
    }

    #[test]
    fn accept_language_picks_the_best_we_have() {
        assert_eq!(
            Lang::from_accept_language("ja-JP,ja;q=0.9,en;q=0.8"),
            Lang::Ja
        );
        assert_eq!(
            Lang::from_accept_language("en-US,en;q=0.9,ja;q=0.8"),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language("fr-FR,ja;q=0.5"), Lang::Ja);
        assert_eq!(Lang::from_accept_language("fr"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }
}
