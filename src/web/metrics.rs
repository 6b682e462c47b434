//! (to be written)

use super::AppState;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
}
