//! The daemon's side of the typed API: every [`Request`] dispatched to the
//! [`Gateway`]. (First cut: the rest of the requests land with the
//! gateway's jobs, events and shares.)

use super::api::*;
use super::daemon::Gateway;
use std::sync::Arc;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, e.to_string())
}

impl GatewayApi for Arc<Gateway> {
    fn call(&self, req: Request) -> Result<Response, ApiError> {
        match req {
            Request::Ping => Ok(Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
                api: API_VERSION,
            }),
            Request::Connect { user, smbd } => {
                let t = std::time::Instant::now();
                self.connect(&user, smbd)
                    .map_err(|e| ApiError::new(ErrorKind::Conflict, e.to_string()))?;
                Ok(Response::Connected {
                    ms: t.elapsed().as_millis() as u64,
                })
            }
            Request::Disconnect { user, smbd } => {
                self.disconnect(&user, smbd);
                Ok(Response::Done {
                    message: String::new(),
                })
            }
            Request::Homes => Ok(Response::Homes(self.status())),
            Request::Users { query } => {
                let homes = self.status();
                let mut all: Vec<UserSummary> = self
                    .users
                    .list()
                    .map_err(internal)?
                    .into_iter()
                    .filter(|(n, _)| n.to_lowercase().contains(&query.search.to_lowercase()))
                    .map(|(name, e)| {
                        let h = homes.iter().find(|h| h.user == name);
                        UserSummary {
                            uid: e.uid,
                            state: if e.removed {
                                UserState::Removed
                            } else if e.disabled {
                                UserState::Disabled
                            } else {
                                UserState::Active
                            },
                            mounted: h.is_some(),
                            sessions: h.map(|h| h.connections).unwrap_or(0),
                            usage: None,
                            metadata_age_secs: h.and_then(|h| h.metadata_age_secs),
                            name,
                        }
                    })
                    .collect();
                let total = all.len();
                let users: Vec<UserSummary> = all
                    .drain(..)
                    .skip(query.offset)
                    .take(query.limit())
                    .collect();
                Ok(Response::Users(UserPage {
                    total,
                    offset: query.offset,
                    users,
                }))
            }
            other => Err(ApiError::new(
                ErrorKind::Internal,
                format!("{} is not available yet", other.op()),
            )),
        }
    }
}
