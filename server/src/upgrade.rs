//! The WebSocket handshake on `/ws`, as a warp filter. The relay completes the upgrade
//! itself (rather than through warp's `ws` filter) to take back the TCP stream hyper
//! upgraded and frame it itself (see [`crate::ws`]).

use std::future::Future;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::{header, HeaderMap, Response, StatusCode};
use warp::{Filter, Rejection};

/// A WebSocket upgrade request, ready to be accepted.
pub struct Upgrade {
    key: String,
    on_upgrade: OnUpgrade,
}

/// Matches a WebSocket upgrade request (`GET` with the upgrade headers, version 13).
pub fn websocket() -> impl Filter<Extract = (Upgrade,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(
            |headers: HeaderMap, on_upgrade: Option<OnUpgrade>| async move {
                let has = |name: header::HeaderName, token: &str| {
                    headers.get_all(name).iter().any(|v| {
                        v.to_str().is_ok_and(|v| {
                            v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
                        })
                    })
                };
                let key = headers
                    .get(header::SEC_WEBSOCKET_KEY)
                    .and_then(|k| k.to_str().ok());
                match (key, on_upgrade) {
                    (Some(key), Some(on_upgrade))
                        if has(header::CONNECTION, "upgrade")
                            && has(header::UPGRADE, "websocket")
                            && has(header::SEC_WEBSOCKET_VERSION, "13") =>
                    {
                        Ok(Upgrade {
                            key: key.to_owned(),
                            on_upgrade,
                        })
                    }
                    _ => Err(warp::reject::not_found()),
                }
            },
        )
}

impl Upgrade {
    /// Answers `101 Switching Protocols` and, once the client has it, runs `serve` on the
    /// TCP stream with any bytes the client sent right behind its request.
    pub fn accept<F, U>(self, serve: F) -> Response<String>
    where
        F: FnOnce(TcpStream, Vec<u8>) -> U + Send + 'static,
        U: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        tokio::spawn(async move {
            let upgraded = match self.on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => return tracing::debug!(%error, "WebSocket upgrade failed"),
            };
            // The accept loop (crate::http) serves every connection on a TokioIo<TcpStream>.
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(hyper::upgrade::Parts { io, read_buf, .. }) => {
                    // Copied out so that hyper's read buffer, which `read_buf` shares, is
                    // freed now rather than held for the connection's life.
                    let early = read_buf.to_vec();
                    drop(read_buf);
                    serve(io.into_inner(), early).await;
                }
                Err(_) => tracing::error!("an upgraded connection is not a TCP stream"),
            }
        });
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        headers.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        if let Ok(accept) = header::HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}
