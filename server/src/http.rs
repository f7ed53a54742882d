//! The accept loop: TCP connections in, HTTP/1.1 (and WebSocket upgrades) served by hyper
//! with the warp routes as the service. Owning the loop lets the relay bound the HTTP
//! handshake (in time and in size), ride out running short of file descriptors, and shut down gracefully.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use warp::Filter;

use crate::tls;

/// The largest request head (request line and headers) a client may send; a larger one is
/// answered 431 and the connection closed.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long to pause accepting after the process ran out of file descriptors.
const DESCRIPTOR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `routes` on `listener` until `stop` turns true; then stops accepting and asks
/// each HTTP connection to finish its request in flight. With `tls`, every connection
/// first completes a TLS handshake within `handshake_timeout`. Every connection task holds
/// a clone of `stop` until it ends, so the caller can wait for them by waiting for the
/// sender's receivers to be gone.
pub async fn serve<F>(
    listener: TcpListener,
    routes: F,
    handshake_timeout: Duration,
    tls: Option<TlsAcceptor>,
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
        .header_read_timeout(handshake_timeout)
        .max_header_size(MAX_HEAD_BYTES);

    loop {
        let (stream, addr) = tokio::select! {
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
        let (builder, stop) = (builder.clone(), stop.clone());
        let service = WithAddr {
            inner: service.clone(),
            addr: ClientAddr(addr),
        };
        match &tls {
            None => {
                tokio::spawn(serve_connection(
                    builder,
                    TokioIo::new(stream),
                    service,
                    stop,
                ));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let handshake = tls::handshake(&acceptor, stream);
                    match tokio::time::timeout(handshake_timeout, handshake).await {
                        Ok(Some(stream)) => {
                            serve_connection(builder, TokioIo::new(stream), service, stop).await
                        }
                        Ok(None) => {}
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Serves HTTP/1.1 on one connection until it ends, or until `stop` turns true and its
/// request in flight is answered.
async fn serve_connection<I, S>(
    builder: http1::Builder,
    io: I,
    service: S,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder.serve_connection(io, service).with_upgrades();
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
}

/// The address a request came from, in its extensions (`warp::ext`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// A service that puts the connection's [`ClientAddr`] into each request's extensions.
#[derive(Clone)]
struct WithAddr<S> {
    inner: S,
    addr: ClientAddr,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithAddr<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.addr);
        self.inner.call(request)
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
