//! The WebSocket handshake on `/ws`, as a warp filter. The relay completes the upgrade
//! itself (rather than through warp's `ws` filter) to take back the TCP stream hyper
//! upgraded and frame it itself (see [`crate::ws`]).

use std::future::Future;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::{header, HeaderMap, Response, StatusCode};
use warp::{Filter, Rejection};

use crate::stream::Stream;
use crate::tls::TlsSocket;

/// A WebSocket upgrade request, ready to be accepted.
pub struct Upgrade {
    key: String,
    on_upgrade: OnUpgrade,
}

/// Why a request for `/ws` is not a WebSocket upgrade the relay accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadUpgrade {
    /// `Sec-WebSocket-Version` is missing or not 13.
    #[error("unsupported WebSocket version; this relay speaks 13")]
    Version,
    /// A header the handshake needs is missing or malformed.
    #[error("not a WebSocket upgrade: {0}")]
    Malformed(&'static str),
}

impl BadUpgrade {
    /// `400 Bad Request`, saying which version the relay speaks when that was the
    /// trouble (RFC 6455, section 4.4).
    pub fn response(self) -> Response<String> {
        let mut response = Response::new(format!("{self}\n"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        if self == Self::Version {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                header::HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// Takes a `GET` request's handshake: an [`Upgrade`] when it is a WebSocket upgrade (RFC
/// 6455, section 4.2.1) the relay accepts, else why not.
pub fn websocket(
) -> impl Filter<Extract = (Result<Upgrade, BadUpgrade>,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .map(|headers: HeaderMap, on_upgrade: Option<OnUpgrade>| {
            let has = |name: header::HeaderName, token: &str| {
                headers.get_all(name).iter().any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                })
            };
            if !has(header::UPGRADE, "websocket") {
                return Err(BadUpgrade::Malformed("no Upgrade: websocket"));
            }
            if !has(header::CONNECTION, "upgrade") {
                return Err(BadUpgrade::Malformed("no Connection: Upgrade"));
            }
            if !has(header::SEC_WEBSOCKET_VERSION, "13") {
                return Err(BadUpgrade::Version);
            }
            let key = headers
                .get(header::SEC_WEBSOCKET_KEY)
                .and_then(|k| k.to_str().ok())
                .filter(|k| is_nonce(k))
                .ok_or(BadUpgrade::Malformed(
                    "no Sec-WebSocket-Key of 16 bytes in base64",
                ))?;
            let on_upgrade =
                on_upgrade.ok_or(BadUpgrade::Malformed("this connection cannot be upgraded"))?;
            Ok(Upgrade {
                key: key.to_owned(),
                on_upgrade,
            })
        })
}

/// Whether `key` is 16 bytes in base64, as a `Sec-WebSocket-Key` must be.
fn is_nonce(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

impl Upgrade {
    /// Answers `101 Switching Protocols` and, once the client has it, runs `serve` on the
    /// TCP stream with any bytes the client sent right behind its request.
    pub fn accept<F, U>(self, serve: F) -> Response<String>
    where
        F: FnOnce(Stream, Vec<u8>) -> U + Send + 'static,
        U: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        tokio::spawn(async move {
            let upgraded = match self.on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => return tracing::debug!(%error, "WebSocket upgrade failed"),
            };
            // The accept loop (crate::http) serves every connection on a TokioIo of a
            // TcpStream, or of a TLS stream over one. Hyper's read buffer, which
            // `read_buf` shares, is copied out so that it is freed now rather than held
            // for the connection's life.
            let (stream, early) = match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => (Stream::Tcp(parts.io.into_inner()), parts.read_buf.to_vec()),
                Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                    Ok(parts) => match TlsSocket::new(parts.io.into_inner()) {
                        Ok((tls, decrypted)) => {
                            let mut early = parts.read_buf.to_vec();
                            early.extend_from_slice(&decrypted);
                            (Stream::Tls(Box::new(tls)), early)
                        }
                        Err(error) => {
                            return tracing::debug!(%error, "a TLS WebSocket failed at its upgrade")
                        }
                    },
                    Err(_) => return tracing::error!("an upgraded connection of an unknown kind"),
                },
            };
            serve(stream, early).await;
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
