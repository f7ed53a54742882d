//! One WebSocket connection: a reader loop that decodes frames, enforces the per-connection
//! limits and hands requests to the rooms, and a writer task that drains the connection's
//! outbox onto the socket.

use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use signalroom_protocol::{ErrorCode, Event, PeerId, Request};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use warp::ws::{Message, WebSocket};

use crate::codec::{self, Refusal};
use crate::rooms::{JoinOutcome, Outbox, OutboxQueue, RoomError, Rooms};

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
    socket: WebSocket,
    rooms: R,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (sink, mut stream) = socket.split();
    let (outbox, queue) = Outbox::new(limits.outbox_frames, limits.outbox_bytes);
    let peer = rooms.connect(outbox.clone()).await;
    tracing::debug!(%peer, "connected");
    let writer = tokio::spawn(write(sink, queue));

    let mut rate = TokenBucket::new(limits.rate_per_sec, limits.rate_burst);
    let mut last_heard = Instant::now();
    let mut outside_since = Some(Instant::now());
    let mut heartbeat = tokio::time::interval(limits.idle_timeout / 3);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    heartbeat.reset();

    let reason = loop {
        tokio::select! {
            frame = stream.next() => {
                last_heard = Instant::now();
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) => break transport_error(&outbox, &error),
                    None => break "closed by the client",
                };
                if frame.is_close() {
                    break "closed by the client";
                }
                if !frame.is_text() && !frame.is_binary() {
                    // Pings are answered by the transport; pongs only prove liveness.
                    continue;
                }
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
                let Ok(text) = frame.to_str() else {
                    refuse(&outbox, Refusal::new(ErrorCode::BinaryUnsupported, "send JSON in text frames"));
                    continue;
                };
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
            () = outbox.overflowed() => break "outbox overflow: the client does not read",
            _ = shutdown.changed() => {
                // Clients reconnect on 1001.
                outbox.push_close(close::GOING_AWAY, "relay shutting down");
                break "relay shutting down";
            }
        }
    };

    rooms.disconnect(peer).await;
    // The writer ends once the rooms and this task have dropped their outboxes.
    drop(outbox);
    let _ = writer.await;
    tracing::info!(%peer, reason, "disconnected");
}

/// Tells the client why the transport gave up on it, when it is a protocol violation.
fn transport_error(outbox: &Outbox, error: &warp::Error) -> &'static str {
    use tungstenite::error::{CapacityError, Error};
    let source = std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>());
    match source {
        Some(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
            outbox.push_close(close::TOO_BIG, "frame too large");
            "frame too large"
        }
        Some(Error::Utf8(_)) => {
            outbox.push_close(close::INVALID_PAYLOAD, "text frame is not UTF-8");
            "invalid UTF-8"
        }
        _ => "transport error",
    }
}

async fn write(mut sink: SplitSink<WebSocket, Message>, mut queue: OutboxQueue) {
    while let Some(frame) = queue.recv().await {
        let closing = frame.is_close();
        // Queue what else is waiting and flush once.
        let mut result = sink.feed(frame).await;
        while result.is_ok() && !closing {
            let Some(more) = queue.try_recv() else { break };
            let last = more.is_close();
            result = sink.feed(more).await;
            if last {
                break;
            }
        }
        if result.is_err() || sink.flush().await.is_err() || closing {
            break;
        }
    }
    let _ = sink.close().await;
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
