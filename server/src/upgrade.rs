//! The WebSocket handshake on `/ws`, as a warp filter. The relay completes the upgrade
//! itself (rather than through warp's `ws` filter) to choose the WebSocket buffer sizes:
//! signaling frames are small, and per-connection buffers are most of an idle relay's memory.

use std::future::Future;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, HeaderMap, Response, StatusCode};
use warp::{Filter, Rejection};

/// An upgraded connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

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
    /// socket configured by `config`.
    pub fn accept<F, U>(self, config: WebSocketConfig, serve: F) -> Response<String>
    where
        F: FnOnce(Socket) -> U + Send + 'static,
        U: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        tokio::spawn(async move {
            match self.on_upgrade.await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    let socket =
                        WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                    serve(socket).await;
                }
                Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
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
