//! The accept loop: TCP connections in, HTTP/1.1 (and WebSocket upgrades) served by hyper
//! with the warp routes as the service. Owning the loop lets the relay bound the HTTP
//! handshake, ride out running short of file descriptors, and shut down gracefully.

use std::io;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::Filter;

/// How long to pause accepting after the process ran out of file descriptors.
const DESCRIPTOR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `routes` on `listener` until `stop` turns true; then stops accepting and asks
/// each HTTP connection to finish its request in flight. Every connection task holds a
/// clone of `stop` until it ends, so the caller can wait for them by waiting for the
/// sender's receivers to be gone.
pub async fn serve<F>(
    listener: TcpListener,
    routes: F,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let service = TowerToHyperService::new(warp::service(routes));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A client that never finishes its request (or upgrade) head is dropped.
        .header_read_timeout(handshake_timeout);

    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = builder
            .serve_connection(TokioIo::new(stream), service.clone())
            .with_upgrades();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

/// Out of descriptors: wait for some to free up instead of spinning; other errors concern
/// one connection only.
async fn accept_failed(error: &io::Error) {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    if matches!(error.raw_os_error(), Some(EMFILE | ENFILE)) {
        tracing::warn!(%error, "out of file descriptors; pausing accepts");
        tokio::time::sleep(DESCRIPTOR_BACKOFF).await;
    } else {
        tracing::debug!(%error, "accept failed");
    }
}
