//! English and Japanese: one catalog per language, picked from
//! Accept-Language or the reader's choice.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Ja,
}
