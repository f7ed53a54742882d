//! A resumable client (`/ws?resume`) that keeps the protocol's side of a session the way
//! PROTOCOL.md asks of a client, through the protocol crate's `session::Session`: it counts
//! the counted frames it receives, keeps what it sent until the relay's `ack` covers it,
//! acknowledges every 16 frames, and on `resume` sends again what the relay says it did
//! not receive.

use std::net::SocketAddr;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signalroom_protocol::session::{self, AckDue, Outgoing};
use signalroom_protocol::{ErrorCode, Event, PeerId, Request, ResumeKey, RoomName};
use tokio_tungstenite::tungstenite::Message;

use crate::{client_at_path, room_name, Client, PATIENCE};

/// A resumable client's connection and its session, kept by the protocol crate's
/// [`session::Session`], as the page and `signalroom-client` keep theirs.
pub struct Session {
    pub client: Client,
    pub peer: PeerId,
    pub room: RoomName,
    pub window_ms: u64,
    state: session::Session,
    /// An `ack` is due before the next read.
    ack_due: bool,
}

/// What a resume got.
#[derive(Debug, PartialEq, Eq)]
pub enum Resumed {
    /// The session goes on; the relay had received this many counted frames. `incomplete`:
    /// its relay had died, frames either way may be missing, and both counts start again.
    Yes {
        relay_received: u64,
        incomplete: bool,
    },
    /// Refused with this code.
    No(ErrorCode),
}

impl Session {
    /// Connects resumably to `addr` and enters `room`; returns the session and the answer
    /// (`created` or `joined`).
    pub async fn join(addr: SocketAddr, room: &str) -> Result<(Self, Event<Value>)> {
        let client = client_at_path(addr, "/ws?resume").await?;
        let mut pending = Self {
            client,
            peer: PeerId::new(1)?,
            room: room_name(room),
            window_ms: 0,
            state: session::Session::default(),
            ack_due: false,
        };
        pending
            .send(&Request::CreateOrJoin {
                room: room_name(room),
            })
            .await?;
        let answer = pending.recv().await?;
        let (peer, grant) = match &answer {
            Event::Created { peer, resume, .. } | Event::Joined { peer, resume, .. } => {
                (*peer, resume.clone())
            }
            other => bail!("expected created or joined, got {other:?}"),
        };
        let grant = grant.context("a resumable connection gets a resume grant")?;
        pending.peer = peer;
        pending.window_ms = grant.window_ms;
        pending.state.granted(peer, grant);
        Ok((pending, answer))
    }

    /// The key of the next resume.
    pub fn key(&self) -> &ResumeKey {
        self.state.key().expect("a session joined is granted a key")
    }

    /// Sends a counted frame, keeping it until acknowledged. A connection that is gone
    /// does not fail it: the resume sends it again.
    pub async fn send(&mut self, request: &Request<Value>) -> Result<()> {
        let text = serde_json::to_string(request)?;
        if self.state.sending(&text) == Outgoing::Now {
            let _ = self.client.ws.send(Message::text(text)).await;
        }
        Ok(())
    }

    /// Sends `data` to the room (or to `to`).
    pub async fn say(&mut self, data: Value, to: Option<PeerId>) -> Result<()> {
        self.send(&Request::Message { data, to }).await
    }

    /// The next counted frame from the relay, handling the relay's `ack`s on the way.
    /// Cancel-safe: a frame is counted only when it is returned (an `ack` due is sent at
    /// the next call, before reading).
    pub async fn recv(&mut self) -> Result<Event<Value>> {
        loop {
            if self.ack_due {
                self.ack().await;
            }
            let frame = tokio::time::timeout(PATIENCE, self.client.ws.next())
                .await
                .context("no frame in time")?
                .context("connection closed")??;
            let text = match frame {
                Message::Text(text) => text,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => bail!("unexpected frame {other:?}"),
            };
            let event: Event<Value> = serde_json::from_str(&text)?;
            if let Event::Ack { received } = event {
                self.acknowledged(received)?;
                continue;
            }
            // Acknowledged at once after a burst; a test acknowledges the rest itself.
            self.ack_due = self.state.received() == AckDue::Now;
            return Ok(event);
        }
    }

    /// Tells the relay how many counted frames arrived, if any since it was last told.
    pub async fn ack(&mut self) {
        self.ack_due = false;
        if let Some(ack) = self.state.ack::<Value>() {
            if let Ok(text) = serde_json::to_string(&ack) {
                let _ = self.client.ws.send(Message::text(text)).await;
            }
        }
    }

    /// Frames sent and not yet acknowledged by the relay.
    pub fn kept(&self) -> usize {
        self.state.kept()
    }

    fn acknowledged(&mut self, received: u64) -> Result<()> {
        ensure!(
            self.state.acknowledged(received),
            "the relay acknowledged {received} frames, more than were sent"
        );
        Ok(())
    }

    /// Connects to `addr` again and resumes; on success sends again what the relay did not
    /// receive.
    pub async fn resume(&mut self, addr: SocketAddr) -> Result<Resumed> {
        self.client = client_at_path(addr, "/ws?resume").await?;
        self.resume_here().await
    }

    /// Resumes on the connection the session has (a new one).
    pub async fn resume_here(&mut self) -> Result<Resumed> {
        self.ack_due = false;
        let Some(Request::Resume { key, received, .. }) = self.state.resume::<Value>() else {
            bail!("a granted session resumes");
        };
        // As `self.peer` says: a test may claim another's id.
        let resume = Request::<Value>::Resume {
            peer: self.peer,
            key,
            received,
        };
        self.client.send(&resume).await?;
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.client.ws.next())
                .await
                .context("no answer to resume in time")?
                .context("connection closed")??;
            let Message::Text(text) = frame else { continue };
            match serde_json::from_str::<Event<Value>>(&text)? {
                Event::Resumed {
                    peer,
                    received,
                    resume,
                    incomplete,
                    ..
                } => {
                    if peer != self.peer {
                        bail!("resumed as {peer}, not {}", self.peer);
                    }
                    for text in self.state.resumed(received, resume, incomplete) {
                        self.client.send_text(&text).await?;
                    }
                    return Ok(Resumed::Yes {
                        relay_received: received,
                        incomplete,
                    });
                }
                Event::Error { code, .. } => return Ok(Resumed::No(code)),
                Event::Ack { received } => self.acknowledged(received)?,
                other => bail!("expected resumed, got {other:?}"),
            }
        }
    }
}
