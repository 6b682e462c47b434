//! Gateway errors as HTTP: JSON with `kind`, `message`, `field` and a
//! status that fits.

use crate::gateway::api::{ApiError, ErrorKind};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable | ErrorKind::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Denied => StatusCode::FORBIDDEN,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An API error as the JSON API answers it.
pub struct JsonError(pub ApiError);

impl From<ApiError> for JsonError {
    fn from(e: ApiError) -> Self {
        JsonError(e)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        (status_of(self.0.kind), axum::Json(self.0)).into_response()
    }
}
