//! Clients of the relay: a WebSocket client that speaks the protocol crate's types, and
//! bare HTTP requests.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signalroom_protocol::{ErrorCode, Event, PeerId, Request, RoomName};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{PATIENCE, QUIET};

/// A client of the relay at `addr`, sending each frame at once (no Nagle delay).
pub async fn client_at(addr: SocketAddr) -> Result<Client> {
    client_at_path(addr, "/ws").await
}

/// [`client_at`] on `path`, which may carry a query (`/ws?token=...`).
pub async fn client_at_path(addr: SocketAddr, path: &str) -> Result<Client> {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    Ok(Client { ws })
}

/// An upgrade on `path` the relay must refuse: its HTTP status, `WWW-Authenticate` header
/// (empty when absent) and body.
pub async fn refused_upgrade(addr: SocketAddr, path: &str) -> Result<(u16, String, String)> {
    use tokio_tungstenite::tungstenite::Error;
    let url = format!("ws://{addr}{path}");
    match tokio_tungstenite::connect_async_with_config(url, None, true).await {
        Ok(_) => bail!("the relay accepted a WebSocket on {path}"),
        Err(Error::Http(response)) => {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            Ok((response.status().as_u16(), challenge, body.into_owned()))
        }
        Err(other) => bail!("the upgrade failed otherwise: {other}"),
    }
}

/// A bare HTTP/1.0 GET; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    match http_status(addr, path).await? {
        (200, body) => Ok(body),
        (status, body) => bail!("GET {path}: {status} {body}"),
    }
}

/// A bare HTTP/1.0 GET; returns the status and the body.
pub async fn http_status(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl From<WebSocketStream<MaybeTlsStream<TcpStream>>> for Client {
    fn from(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { ws }
    }
}

impl Client {
    pub async fn send(&mut self, request: &Request<Value>) -> Result<()> {
        self.send_text(&serde_json::to_string(request)?).await
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        Ok(self.ws.send(Message::text(text)).await?)
    }

    pub async fn join(&mut self, room: &str) -> Result<Event<Value>> {
        self.send(&Request::CreateOrJoin {
            room: room_name(room),
        })
        .await?;
        self.recv().await
    }

    pub async fn say(&mut self, data: Value, to: Option<PeerId>) -> Result<()> {
        self.send(&Request::Message { data, to }).await
    }

    pub async fn recv(&mut self) -> Result<Event<Value>> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .context("no frame in time")?
                .context("connection closed")??;
            match frame {
                Message::Text(text) => return Ok(serde_json::from_str(&text)?),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => bail!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn expect_error(&mut self, code: ErrorCode) -> Result<()> {
        match self.recv().await? {
            Event::Error { code: got, .. } if got == code => Ok(()),
            other => bail!("expected error {code}, got {other:?}"),
        }
    }

    /// Reads until the relay closes the connection; returns the close code, if it sent one.
    pub async fn expect_close(&mut self) -> Result<Option<u16>> {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next()).await? {
                Some(Ok(Message::Close(frame))) => return Ok(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }

    /// Fails if a frame other than a heartbeat arrives within a short quiet period.
    pub async fn expect_silence(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(()),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(frame) => bail!("expected silence, got {frame:?}"),
            }
        }
    }
}

pub fn room_name(name: &str) -> RoomName {
    RoomName::new(name).expect("test room names are valid")
}

pub fn created_peer(event: Event<Value>) -> Result<PeerId> {
    match event {
        Event::Created { peer, .. } => Ok(peer),
        other => bail!("expected created, got {other:?}"),
    }
}

/// Puts `a` and then `b` into `room`; returns their ids once `a` has heard `b` come in.
pub async fn meet(a: &mut Client, b: &mut Client, room: &str) -> Result<(PeerId, PeerId)> {
    let a_id = created_peer(a.join(room).await?)?;
    let b_id = joined_peer(b, room, &[a_id]).await?;
    a.recv().await?;
    Ok((a_id, b_id))
}

pub async fn joined_peer(client: &mut Client, room: &str, inside: &[PeerId]) -> Result<PeerId> {
    match client.join(room).await? {
        Event::Joined { peer, peers, .. } if peers == inside => Ok(peer),
        other => bail!("expected joined with {inside:?}, got {other:?}"),
    }
}
