//! Listening: plain HTTP on loopback by default, HTTPS with a configured
//! certificate. Runs on its own tokio runtime beside the daemon.

use super::{AppState, Console};
use crate::gateway::api::GatewayApi;
use crate::gateway::config::ConsoleSection;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the console cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
    #[error("the console runtime: {0}")]
    Runtime(std::io::Error),
}

/// Start the console in the background; returns its URL once it listens.
pub fn spawn(api: Arc<dyn GatewayApi>, cfg: &ConsoleSection) -> Result<String, ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("console")
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    let addr = cfg.listen.clone();
    let listener = std::net::TcpListener::bind(&addr).map_err(|cause| ServerError::Bind {
        addr: addr.clone(),
        cause,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Runtime)?;
    let local = listener.local_addr().map_err(ServerError::Runtime)?;
    let state: AppState = Arc::new(Console {
        api,
        cfg: cfg.clone(),
        tls: false,
    });
    let app = super::router(state);
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            rt.block_on(async move {
                let l = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("console: {e}");
                        return;
                    }
                };
                let svc = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
                if let Err(e) = axum::serve(l, svc).await {
                    tracing::error!("console stopped: {e}");
                }
            })
        })
        .map_err(ServerError::Runtime)?;
    let url = format!("http://{local}/");
    tracing::info!(%url, "web console listening");
    Ok(url)
}
