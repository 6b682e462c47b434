//! Listening: plain HTTP on loopback by default, HTTPS with a configured
//! certificate (rustls). Runs on its own tokio runtime beside the daemon.

use super::{AppState, Console};
use crate::gateway::api::GatewayApi;
use crate::gateway::config::ConsoleSection;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the console cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
    #[error("the console runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the console's TLS certificate {cert} or key {key}: {cause} (give a PEM certificate chain and its PEM private key)")]
    Tls {
        cert: String,
        key: String,
        cause: std::io::Error,
    },
}

/// Start the console in the background; returns its URL once it listens.
pub fn spawn(api: Arc<dyn GatewayApi>, cfg: &ConsoleSection) -> Result<String, ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("console")
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(
            rt.block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(
                cert, key,
            ))
            .map_err(|cause| ServerError::Tls {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
                cause,
            })?,
        ),
        _ => None,
    };
    let addr = cfg.listen.clone();
    let listener = std::net::TcpListener::bind(&addr).map_err(|cause| ServerError::Bind {
        addr: addr.clone(),
        cause,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Runtime)?;
    let local = listener.local_addr().map_err(ServerError::Runtime)?;
    let state: AppState = Arc::new(Console::new(api, cfg.clone(), tls.is_some()));
    {
        // Chart samples every 10 s, for as long as the console runs.
        let _rt = rt.enter();
        state
            .history
            .clone()
            .spawn_sampler(state.api.clone(), std::time::Duration::from_secs(10));
    }
    let app = super::router(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            rt.block_on(async move {
                let svc = app.into_make_service_with_connect_info::<SocketAddr>();
                let r = match tls {
                    Some(tls) => match axum_server::from_tcp_rustls(listener, tls) {
                        Ok(s) => s.serve(svc).await,
                        Err(e) => Err(e),
                    },
                    None => match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => axum::serve(l, svc).await,
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = r {
                    tracing::error!("console stopped: {e}");
                }
            })
        })
        .map_err(ServerError::Runtime)?;
    let url = format!("{scheme}://{local}/");
    tracing::info!(%url, "web console listening");
    Ok(url)
}
