//! One WebSocket connection, served by one task: it reads frames, enforces the
//! per-connection limits and hands requests to the rooms. Frames for the client are
//! written by whoever delivers them (see [`crate::outbox`]); this task steps in only when
//! the socket will not take them.

use std::time::Duration;

use signalroom_protocol::{ErrorCode, Event, PeerId, Request};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::codec::{self, Refusal};
use crate::outbox::{corked, Outbox, Socket, WriteError};
use crate::rooms::{JoinOutcome, RoomError, Rooms};
use crate::ws::{FrameError, Incoming, Reader};

/// The limits one connection lives under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Outbox length in frames.
    pub outbox_frames: usize,
    /// Outbox length in bytes.
    pub outbox_bytes: usize,
    /// Sustained frames per second.
    pub rate_per_sec: u32,
    /// Burst size, in frames.
    pub rate_burst: u32,
    /// Silence after which the connection is dropped.
    pub idle_timeout: Duration,
    /// Time the connection may spend outside a room.
    pub join_timeout: Duration,
}

/// WebSocket close codes the relay uses besides those of [`FrameError`].
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
}

/// Serves one upgraded connection until the client goes, breaks a limit, or the relay shuts
/// down. `early` holds bytes the client sent right behind its upgrade request.
pub async fn serve<R: Rooms>(
    stream: TcpStream,
    early: Vec<u8>,
    rooms: R,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (outbox, socket) = Outbox::new(stream, limits.outbox_frames, limits.outbox_bytes);
    let mut reader = Reader::new(limits.max_message_bytes, early);
    let peer = rooms.connect(outbox.clone()).await;
    tracing::debug!(%peer, "connected");

    let now = Instant::now();
    let mut client = Client {
        peer,
        rooms: &rooms,
        outbox: &outbox,
        limits: &limits,
        rate: TokenBucket::new(limits.rate_per_sec, limits.rate_burst),
        last_heard: now,
        outside_since: Some(now),
    };
    // One timer and one shutdown future for the connection's life, not one per wakeup.
    let beat = limits.idle_timeout / 3;
    let heartbeat = tokio::time::sleep(beat);
    let stop = shutdown.changed();
    tokio::pin!(heartbeat, stop);

    // Bytes that came with the upgrade request are handled before the first read.
    let mut ended = corked(client.handle_frames(&mut reader)).await;
    let reason = loop {
        if let Some(reason) = ended.take() {
            break reason;
        }
        tokio::select! {
            // Writes first: they free queue space other connections need.
            biased;
            () = socket.needs_attention() => {
                if let Err(error) = socket.write_waiting(limits.idle_timeout).await {
                    break write_error(error);
                }
            }
            ready = socket.readable() => {
                if ready.is_err() {
                    break "transport error";
                }
                match reader.read_from(socket.stream()) {
                    Ok(0) => break "closed by the client",
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => break "transport error",
                }
                client.last_heard = Instant::now();
                ended = corked(client.handle_frames(&mut reader)).await;
                reader.trim();
            }
            () = &mut heartbeat => {
                let now = Instant::now();
                heartbeat.as_mut().reset(now + beat);
                if now.duration_since(client.last_heard) >= limits.idle_timeout {
                    outbox.push_close(close::POLICY, "idle timeout");
                    break "idle timeout";
                }
                if client.outside_since.is_some_and(|since| now.duration_since(since) >= limits.join_timeout) {
                    outbox.push_close(close::POLICY, "join a room sooner");
                    break "join timeout";
                }
                outbox.push_ping();
            }
            _ = &mut stop => {
                // Clients reconnect on 1001.
                outbox.push_close(close::GOING_AWAY, "relay shutting down");
                break "relay shutting down";
            }
        }
    };

    corked(rooms.disconnect(peer)).await;
    drop(outbox);
    // Deliver what is still queued (a close frame, a last error), briefly, and let the
    // client answer the close before the socket goes; a client that stopped reading gets
    // nothing more.
    if reason != OVERFLOW && reason != STALLED {
        let _ = tokio::time::timeout(LAST_WORDS, async {
            if socket.write_last(LAST_WORDS).await.is_ok() {
                drain(&socket, &mut reader).await;
            }
        })
        .await;
    }
    tracing::info!(%peer, reason, "disconnected");
}

/// Why a connection whose client stopped reading was dropped.
const OVERFLOW: &str = "outbox overflow: the client does not read";

/// Why a connection whose client read nothing for the idle timeout was dropped.
const STALLED: &str = "write stalled: the client does not read";

/// How long a closing connection may take to deliver its last frames.
const LAST_WORDS: Duration = Duration::from_secs(2);

fn write_error(error: WriteError) -> &'static str {
    match error {
        WriteError::Overflowed => OVERFLOW,
        WriteError::Stalled => STALLED,
        WriteError::Failed => "write failed",
    }
}

/// Reads and discards until the client closes its side.
async fn drain(socket: &Socket, reader: &mut Reader) {
    while socket.readable().await.is_ok() {
        match reader.read_from(socket.stream()) {
            Ok(0) => return,
            Ok(_) => reader.discard(),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// What the connection's task knows about its client.
struct Client<'a, R> {
    peer: PeerId,
    rooms: &'a R,
    outbox: &'a Outbox,
    limits: &'a Limits,
    rate: TokenBucket,
    last_heard: Instant,
    /// When the client was last seen outside a room; `None` while inside.
    outside_since: Option<Instant>,
}

impl<R: Rooms> Client<'_, R> {
    /// Handles every whole frame read so far; `Some(reason)` when the connection must end.
    async fn handle_frames(&mut self, reader: &mut Reader) -> Option<&'static str> {
        loop {
            let frame = match reader.next_message() {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => return Some(self.broken(error)),
            };
            let text = match frame {
                Incoming::Text(text) => text,
                Incoming::Binary => "",
                Incoming::Ping(payload) => {
                    self.outbox.push_pong(payload);
                    continue;
                }
                // Pongs only prove liveness, which any read does.
                Incoming::Pong => continue,
                Incoming::Close(code) => {
                    self.outbox.push_close(code.map_or(close::NORMAL, echo), "");
                    return Some("closed by the client");
                }
            };
            match self.rate.admit(self.last_heard) {
                Admit::Yes => {}
                Admit::NoAndSay => {
                    refuse(
                        self.outbox,
                        Refusal::new(
                            ErrorCode::RateLimited,
                            format!("more than {} frames per second", self.limits.rate_per_sec),
                        ),
                    );
                    continue;
                }
                Admit::No => continue,
                Admit::Never => {
                    self.outbox
                        .push_close(close::POLICY, "rate limit exceeded persistently");
                    return Some("rate limit exceeded persistently");
                }
            }
            if matches!(frame, Incoming::Binary) {
                refuse(
                    self.outbox,
                    Refusal::new(ErrorCode::BinaryUnsupported, "send JSON in text frames"),
                );
                continue;
            }
            match handle(self.rooms, self.peer, text).await {
                Ok(Some(true)) => self.outside_since = None,
                Ok(Some(false)) => {
                    self.outside_since = self.outside_since.or(Some(self.last_heard));
                }
                Ok(None) => {}
                Err(refusal) => {
                    tracing::debug!(peer = %self.peer, %refusal, "refused a frame");
                    refuse(self.outbox, refusal);
                }
            }
        }
    }

    /// Tells the client which rule of the framing it broke.
    fn broken(&self, error: FrameError) -> &'static str {
        tracing::debug!(peer = %self.peer, %error, "broken framing");
        let reason = match error {
            FrameError::Protocol(_) => "protocol error",
            FrameError::TooBig(_) => "frame too large",
            FrameError::NotUtf8 => "invalid UTF-8",
        };
        self.outbox.push_close(error.close_code(), reason);
        reason
    }
}

/// The code to answer a client's close with: its own, unless it may not be sent back.
fn echo(code: u16) -> u16 {
    match code {
        1000..=1003 | 1007..=1011 | 3000..=4999 => code,
        _ => close::NORMAL,
    }
}

/// Carries out one request; `Some(inside)` when it moved the peer into or out of a room.
pub async fn handle<R: Rooms>(
    rooms: &R,
    peer: PeerId,
    text: &str,
) -> Result<Option<bool>, Refusal> {
    let refused = |e: RoomError| Refusal::new(e.code(), e.to_string());
    match codec::decode(text)? {
        Request::CreateOrJoin { room } => {
            let outcome = rooms.join(peer, room.clone()).await.map_err(refused)?;
            tracing::info!(%peer, %room, ?outcome, "join");
            Ok(Some(outcome != JoinOutcome::Full))
        }
        Request::Message { data, to } => {
            rooms.relay(peer, to, data).await.map_err(refused)?;
            Ok(None)
        }
        Request::Leave => {
            let room = rooms.leave(peer).await.map_err(refused)?;
            tracing::info!(%peer, %room, "leave");
            Ok(Some(false))
        }
    }
}

fn refuse(outbox: &Outbox, refusal: Refusal) {
    outbox.send(&Event::<()>::Error {
        code: refusal.code,
        message: refusal.message,
    });
}

/// Whether a frame may pass the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Yes,
    /// Refused, and the client should hear about it (first of a run).
    NoAndSay,
    /// Refused quietly: it was told already.
    No,
    /// The client keeps sending well over the limit: disconnect.
    Never,
}

/// A token bucket of `burst` tokens refilled at `per_sec`, plus a debt of refused frames that
/// drains at the same rate: a client over the limit only briefly is refused frames, one that
/// runs up a whole burst of debt is disconnected.
struct TokenBucket {
    tokens: f64,
    debt: f64,
    per_sec: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            debt: 0.0,
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn admit(&mut self, now: Instant) -> Admit {
        let drip = now.duration_since(self.last).as_secs_f64() * self.per_sec;
        self.last = now;
        self.tokens = (self.tokens + drip).min(self.burst);
        self.debt = (self.debt - drip).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admit::Yes;
        }
        let first = self.debt < 1.0;
        self.debt += 1.0;
        if self.debt > self.burst {
            Admit::Never
        } else if first {
            Admit::NoAndSay
        } else {
            Admit::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate_then_gives_up() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5);
        for _ in 0..5 {
            assert_eq!(bucket.admit(start), Admit::Yes);
        }
        assert_eq!(bucket.admit(start), Admit::NoAndSay);
        assert_eq!(bucket.admit(start), Admit::No);
        // A second later the debt has drained and the bucket refilled.
        let later = start + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(bucket.admit(later), Admit::Yes);
        }
        assert_eq!(bucket.admit(later), Admit::NoAndSay);
        for _ in 0..4 {
            assert_eq!(bucket.admit(later), Admit::No);
        }
        assert_eq!(bucket.admit(later), Admit::Never);
    }

    #[test]
    fn sending_at_twice_the_rate_is_refused_but_tolerated() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5);
        let mut admitted = 0;
        for i in 0..200u64 {
            let admit = bucket.admit(start + Duration::from_millis(50 * i));
            assert_ne!(admit, Admit::Never, "frame {i}");
            admitted += u32::from(admit == Admit::Yes);
        }
        assert!((100..=106).contains(&admitted), "{admitted}");
    }
}
