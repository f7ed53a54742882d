//! One WebSocket connection, served by one task: it reads frames, enforces the
//! per-connection limits, hands requests to the rooms, and writes what the rooms queued in
//! its outbox.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use signalroom_protocol::{ErrorCode, Event, PeerId, Request};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::Message;

use crate::codec::{self, Refusal};
use crate::rooms::{JoinOutcome, Next, Outbox, OutboxQueue, RoomError, Rooms};
use crate::upgrade::Socket;

/// The limits one connection lives under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
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

/// WebSocket close codes the relay uses.
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// Serves one upgraded connection until the client goes, breaks a limit, or the relay shuts
/// down.
pub async fn serve<R: Rooms>(
    mut socket: Socket,
    rooms: R,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (outbox, queue) = Outbox::new(limits.outbox_frames, limits.outbox_bytes);
    let peer = rooms.connect(outbox.clone()).await;
    tracing::debug!(%peer, "connected");

    let mut rate = TokenBucket::new(limits.rate_per_sec, limits.rate_burst);
    let mut last_heard = Instant::now();
    let mut outside_since = Some(last_heard);
    let mut heartbeat = tokio::time::interval(limits.idle_timeout / 3);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    heartbeat.reset();

    let reason = loop {
        tokio::select! {
            // Frames for the client first: they free queue space other connections need.
            biased;
            next = queue.recv() => {
                let Next::Frame(frame) = next else { break OVERFLOW };
                // A client that stopped reading stalls the write: it goes when its queue
                // overflows, or when nothing moved for the idle timeout.
                let written = tokio::select! {
                    biased;
                    written = write(&mut socket, &queue, frame) => written,
                    () = queue.overflowed() => Err(OVERFLOW),
                    () = tokio::time::sleep(limits.idle_timeout) => Err(STALLED),
                };
                if let Err(reason) = written {
                    break reason;
                }
            }
            frame = socket.next() => {
                last_heard = Instant::now();
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) => break transport_error(&outbox, &error),
                    None => break "closed by the client",
                };
                let text = match &frame {
                    Message::Text(text) => text.as_str(),
                    Message::Binary(_) => "",
                    Message::Close(_) => break "closed by the client",
                    // Pings are answered by the transport; pongs only prove liveness.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                match rate.admit(last_heard) {
                    Admit::Yes => {}
                    Admit::NoAndSay => {
                        refuse(&outbox, Refusal::new(
                            ErrorCode::RateLimited,
                            format!("more than {} frames per second", limits.rate_per_sec),
                        ));
                        continue;
                    }
                    Admit::No => continue,
                    Admit::Never => {
                        outbox.push_close(close::POLICY, "rate limit exceeded persistently");
                        break "rate limit exceeded persistently";
                    }
                }
                if frame.is_binary() {
                    refuse(&outbox, Refusal::new(ErrorCode::BinaryUnsupported, "send JSON in text frames"));
                    continue;
                }
                match handle(&rooms, peer, text).await {
                    Ok(Some(true)) => outside_since = None,
                    Ok(Some(false)) => outside_since = outside_since.or(Some(last_heard)),
                    Ok(None) => {}
                    Err(refusal) => {
                        tracing::debug!(%peer, %refusal, "refused a frame");
                        refuse(&outbox, refusal);
                    }
                }
            }
            _ = heartbeat.tick() => {
                let now = Instant::now();
                if now.duration_since(last_heard) >= limits.idle_timeout {
                    outbox.push_close(close::POLICY, "idle timeout");
                    break "idle timeout";
                }
                if outside_since.is_some_and(|since| now.duration_since(since) >= limits.join_timeout) {
                    outbox.push_close(close::POLICY, "join a room sooner");
                    break "join timeout";
                }
                outbox.push_ping();
            }
            _ = shutdown.changed() => {
                // Clients reconnect on 1001.
                outbox.push_close(close::GOING_AWAY, "relay shutting down");
                break "relay shutting down";
            }
        }
    };

    rooms.disconnect(peer).await;
    drop(outbox);
    // Deliver what is still queued (a close frame, a last error), briefly; a client that
    // stopped reading gets nothing more.
    if reason != OVERFLOW && reason != STALLED {
        let _ = tokio::time::timeout(LAST_WORDS, async {
            while let Some(frame) = queue.try_recv() {
                if write(&mut socket, &queue, frame).await.is_err() {
                    break;
                }
            }
            let _ = socket.close(None).await;
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

/// Writes `frame` and whatever else is queued, then flushes once.
async fn write(
    socket: &mut Socket,
    queue: &OutboxQueue,
    frame: Message,
) -> Result<(), &'static str> {
    let mut closing = frame.is_close();
    let mut result = socket.feed(frame).await;
    while result.is_ok() && !closing {
        let Some(more) = queue.try_recv() else { break };
        closing = more.is_close();
        result = socket.feed(more).await;
    }
    match result.and(socket.flush().await) {
        Err(_) => Err("write failed"),
        Ok(()) if closing => Err("closed by the relay"),
        Ok(()) => Ok(()),
    }
}

/// Tells the client why the transport gave up on it, when it is a protocol violation.
fn transport_error(outbox: &Outbox, error: &WsError) -> &'static str {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            outbox.push_close(close::TOO_BIG, "frame too large");
            "frame too large"
        }
        WsError::Utf8(_) => {
            outbox.push_close(close::INVALID_PAYLOAD, "text frame is not UTF-8");
            "invalid UTF-8"
        }
        _ => "transport error",
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
