//! One WebSocket connection, served by one task: it reads frames, enforces the
//! per-connection limits and hands requests to the rooms. Frames for the client are
//! written by whoever delivers them (see [`crate::outbox`]); this task steps in only when
//! the socket will not take them.

use std::net::IpAddr;
use std::time::Duration;

use signalroom_protocol::{ErrorCode, Event, PeerId, Request, ResumeKey, RoomName};
use signalroom_wsframe::{CloseCode, CustomCode};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::Admits;
use crate::codec::{self, Refusal};
use crate::metrics::{self, Closed, Counter, Frame};
use crate::outbox::{encode, Batch, Outbox, Socket, WriteError};
use crate::rooms::{Claim, JoinOutcome, Parting, RoomError, Rooms};
use crate::stream::Stream;
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

/// Counted frames from a resumable client after which the relay acknowledges them at once
/// (otherwise at the next heartbeat); rarer than the page's, since each is a write of its own.
const ACK_EVERY: u32 = 128;

/// Where the relay stands in its life, as every connection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Serving,
    /// Stopping, and handing sessions over to other relays first: a resumable member
    /// inside a room is told to resume elsewhere ([`DRAINING`]), any other connection to go.
    Draining,
    /// Stopping: every connection is told to go (1001).
    Stopping,
}

/// The close code and reason that tell a resumable client to resume its session on another
/// relay at once: this one is stopping.
pub const DRAINING: (u16, &str) = (4001, "relay draining: resume your session at once");

/// What the connection's request says of the client, besides its token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    /// It asked for a resumable session (`/ws?resume`).
    pub resumable: bool,
    /// Its address, against which refused resumes count.
    pub addr: Option<IpAddr>,
}

/// Why a connection ends, which says what the client is told on the way out (its close
/// code and reason) and how the metrics count it: both are exhaustive matches, so a new
/// way to end has both or does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent a close frame: the relay answers with its code and shuts its side
    /// of TCP as soon as the answer is written (RFC 6455, section 7.1.1: the server closes
    /// first).
    ClientClosed(Option<CloseCode>),
    /// The client broke the framing: the relay fails the connection.
    Broken(FrameError),
    /// The client was silent for the idle timeout.
    IdleTimeout,
    /// The client stayed outside a room for the join timeout.
    JoinTimeout,
    /// The client kept sending well over the rate limit.
    RateLimit,
    /// The rooms backend could not take the connection.
    Unavailable,
    /// The relay is shutting down.
    Shutdown,
    /// The relay is stopping and hands its sessions over: this one goes away, to be
    /// resumed on another relay.
    Draining,
    /// The client's stream ended or failed: there is nobody to tell.
    Lost(Loss),
    /// The client does not read: dropped without a last word.
    Dropped(WriteError),
    /// The rooms backend took the member out of its room and queued the close frame that
    /// tells it why (it lost its seat): the relay sees that frame out and closes.
    Ended,
    /// The session was resumed on another connection, while this one still looked alive
    /// (its close frame is queued already).
    TakenOver,
}

/// How a client's stream went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// The client closed TCP without a close frame.
    Closed,
    /// Reading failed.
    Failed,
}

impl End {
    /// The close frame the client gets, code and reason, after every frame already
    /// queued; `None` when it gets none.
    fn close_frame(self) -> Option<(CloseCode, &'static str)> {
        match self {
            Self::ClientClosed(code) => Some((code.unwrap_or(CloseCode::Normal), "")),
            Self::Broken(error) => Some((
                error.close_code(),
                match error {
                    FrameError::Protocol(_) => "protocol error",
                    FrameError::TooBig(_) => "frame too large",
                    FrameError::NotUtf8 => "invalid UTF-8",
                },
            )),
            Self::IdleTimeout => Some((CloseCode::PolicyViolation, "idle timeout")),
            Self::JoinTimeout => Some((CloseCode::PolicyViolation, "join a room sooner")),
            Self::RateLimit => Some((
                CloseCode::PolicyViolation,
                "rate limit exceeded persistently",
            )),
            Self::Unavailable => Some((CloseCode::TryAgainLater, "rooms unavailable")),
            // Clients reconnect on 1001.
            Self::Shutdown => Some((CloseCode::GoingAway, "relay shutting down")),
            Self::Draining => {
                let (code, reason) = DRAINING;
                CustomCode::new(code).map(|code| (CloseCode::Custom(code), reason))
            }
            Self::Lost(_) | Self::Dropped(_) | Self::Ended | Self::TakenOver => None,
        }
    }

    /// What the end means for a resumable session: an end the client did not ask for
    /// (a network cut looks like silence, a reset, a failed or stalled write) keeps it.
    fn parting(self, received: u64) -> Parting {
        match self {
            Self::Lost(_)
            | Self::Dropped(WriteError::Failed | WriteError::Stalled)
            | Self::IdleTimeout
            | Self::Draining
            | Self::Ended => Parting::Lost { received },
            Self::ClientClosed(_)
            | Self::Broken(_)
            | Self::JoinTimeout
            | Self::RateLimit
            | Self::Unavailable
            | Self::Shutdown
            | Self::Dropped(WriteError::Overflowed)
            | Self::TakenOver => Parting::Closed,
        }
    }

    /// How the metrics count it.
    fn counted_as(self) -> Closed {
        match self {
            Self::ClientClosed(_) => Closed::ClientClosed,
            Self::Broken(_) => Closed::ProtocolError,
            Self::IdleTimeout => Closed::IdleTimeout,
            Self::JoinTimeout => Closed::JoinTimeout,
            Self::RateLimit => Closed::RateLimit,
            Self::Unavailable => Closed::Unavailable,
            Self::Shutdown => Closed::Shutdown,
            Self::Draining => Closed::Drained,
            Self::Lost(_) => Closed::Lost,
            Self::Dropped(WriteError::Overflowed) => Closed::OutboxOverflow,
            Self::Dropped(WriteError::Stalled) => Closed::OutboxStall,
            Self::Dropped(WriteError::Failed) => Closed::WriteFailed,
            Self::Ended => Closed::SeatLost,
            Self::TakenOver => Closed::TakenOver,
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientClosed(_) => f.write_str("closed by the client"),
            Self::Broken(_)
            | Self::IdleTimeout
            | Self::JoinTimeout
            | Self::RateLimit
            | Self::Unavailable
            | Self::Shutdown
            | Self::Draining => match self.close_frame() {
                Some((code, reason)) => write!(f, "{reason} ({code})"),
                None => Ok(()),
            },
            Self::Lost(Loss::Closed) => f.write_str("the client closed TCP"),
            Self::Lost(Loss::Failed) => f.write_str("transport error"),
            Self::Dropped(WriteError::Overflowed) => {
                f.write_str("outbox overflow: the client does not read")
            }
            Self::Dropped(WriteError::Stalled) => {
                f.write_str("write stalled: the client does not read")
            }
            Self::Dropped(WriteError::Failed) => f.write_str("write failed"),
            Self::Ended => f.write_str("the relay lost its seat in its room"),
            Self::TakenOver => f.write_str("its session was resumed on another connection"),
        }
    }
}

/// Serves one upgraded connection until the client goes, breaks a limit, or the relay shuts
/// down. `early` holds bytes the client sent right behind its upgrade request; `admits`
/// are the rooms its token lets it enter; `client` whether it asked to be resumable, and
/// from where.
pub async fn serve<R: Rooms>(
    stream: Stream,
    early: Vec<u8>,
    rooms: R,
    admits: Admits,
    limits: Limits,
    client: Peer,
    mut shutdown: watch::Receiver<Phase>,
) {
    let phase = shutdown.clone();
    let (outbox, socket) = Outbox::new(stream, limits.outbox_frames, limits.outbox_bytes);
    let mut reader = Reader::new(limits.max_message_bytes, early);
    let peer = match rooms.connect(outbox.clone(), client.resumable).await {
        Ok(peer) => peer,
        Err(error) => {
            tracing::warn!(%error, "refused a connection");
            let end = End::Unavailable;
            metrics::count(Counter::Closed(end.counted_as()));
            last_words(end, &outbox, &socket, &mut reader).await;
            return;
        }
    };
    tracing::debug!(%peer, "connected");

    let now = Instant::now();
    let mut client = Client {
        peer,
        rooms: &rooms,
        admits: &admits,
        outbox: &outbox,
        limits: &limits,
        rate: TokenBucket::new(limits.rate_per_sec, limits.rate_burst),
        last_heard: now,
        outside_since: Some(now),
        resumable: client.resumable,
        addr: client.addr,
        received: 0,
        unacked: 0,
    };
    // One timer and one shutdown future for the connection's life, not one per wakeup.
    let beat = limits.idle_timeout / 3;
    let heartbeat = tokio::time::sleep(beat);
    let stop = shutdown.changed();
    tokio::pin!(heartbeat, stop);

    // Bytes that came with the upgrade request are handled before the first read.
    let mut ended = client.handle_read(&mut reader).await;
    let end = loop {
        if let Some(end) = ended.take() {
            break end;
        }
        tokio::select! {
            // Writes first: they free queue space other connections need.
            biased;
            () = socket.needs_attention() => {
                if socket.ended() {
                    break End::Ended;
                }
                if let Err(error) = socket.write_waiting(limits.idle_timeout).await {
                    break End::Dropped(error);
                }
            }
            ready = socket.readable() => {
                if ready.is_err() {
                    break End::Lost(Loss::Failed);
                }
                match reader.read_from(socket.stream()) {
                    Ok(0) => break End::Lost(Loss::Closed),
                    Ok(read) => metrics::add(Counter::BytesReceived, read as u64),
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => break End::Lost(Loss::Failed),
                }
                client.last_heard = Instant::now();
                socket.write_stream_output();
                ended = client.handle_read(&mut reader).await;
                reader.trim();
            }
            () = &mut heartbeat => {
                let now = Instant::now();
                heartbeat.as_mut().reset(now + beat);
                if now.duration_since(client.last_heard) >= limits.idle_timeout {
                    break End::IdleTimeout;
                }
                if client.outside_since.is_some_and(|since| now.duration_since(since) >= limits.join_timeout) {
                    break End::JoinTimeout;
                }
                let mut batch = Batch::new();
                let _ = outbox.push_ping(&mut batch);
                client.acknowledge(&mut batch);
                batch.flush();
                outbox.rest();
            }
            _ = &mut stop => {
                let inside = client.outside_since.is_none();
                break match *phase.borrow() {
                    Phase::Draining if client.resumable && inside => End::Draining,
                    _ => End::Shutdown,
                };
            }
        }
    };

    let (peer, received) = (client.peer, client.received);
    let mut batch = Batch::new();
    let away = rooms
        .disconnect(peer, &outbox, end.parting(received), &mut batch)
        .await;
    batch.flush();
    // A close the relay queued while the session stays: it was resumed elsewhere.
    let end = match (end, away) {
        (End::Ended, Some(_)) => End::TakenOver,
        (end, _) => end,
    };
    if let Some(away) = away {
        // The session's seat waits for a resume; this task's end frees the connection.
        let rooms = rooms.clone();
        tokio::spawn(async move {
            tokio::time::sleep(away.window).await;
            let mut batch = Batch::new();
            rooms.expire(peer, away.generation, &mut batch).await;
            batch.flush();
        });
    }
    last_words(end, &outbox, &socket, &mut reader).await;
    drop(outbox);
    metrics::count(Counter::Closed(end.counted_as()));
    tracing::info!(%peer, reason = %end, away = away.is_some(), "disconnected");
}

/// How long a closing connection may take to deliver its last frames, and then to see the
/// client close its side.
const LAST_WORDS: Duration = Duration::from_secs(2);

/// Delivers what is still queued and the close frame `end` calls for, then closes the
/// relay's side of TCP at once (RFC 6455, section 7.1.1: the server closes first) and
/// discards what the client still sends until it closes too, within [`LAST_WORDS`]. A
/// client that stopped reading or is gone gets nothing more.
///
/// The relay does not wait for the client's close frame: when it failed the connection it
/// must not read one (section 7.1.7), and a client that closed first has sent its own. The
/// FIN after the close frame tells the client at once; reading on until the client's own
/// FIN keeps unread bytes from turning the close into a reset that could cost the client
/// the close frame.
async fn last_words(end: End, outbox: &Outbox, socket: &Socket, reader: &mut Reader) {
    let close = match end {
        End::Lost(_) | End::Dropped(_) => return,
        // Its close frame is queued already.
        End::Ended | End::TakenOver => None,
        _ => end.close_frame(),
    };
    if let Some((code, reason)) = close {
        let mut batch = Batch::new();
        let _ = outbox.push_close(code, reason, &mut batch);
        batch.flush();
    }
    let _ = tokio::time::timeout(LAST_WORDS, async {
        if socket.write_last(LAST_WORDS).await.is_ok() && socket.shut_writes().is_ok() {
            drain(socket, reader).await;
        }
    })
    .await;
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
    admits: &'a Admits,
    outbox: &'a Outbox,
    limits: &'a Limits,
    rate: TokenBucket,
    last_heard: Instant,
    /// When the client was last seen outside a room; `None` while inside.
    outside_since: Option<Instant>,
    /// It asked for a resumable session.
    resumable: bool,
    /// Its address.
    addr: Option<IpAddr>,
    /// Counted frames received from it in its session (every text frame but `ack` and
    /// `resume`; binary frames are not text).
    received: u64,
    /// Counted frames received since the relay last acknowledged.
    unacked: u32,
}

impl<R: Rooms> Client<'_, R> {
    /// Tells a resumable client how many counted frames the relay received, if it has not
    /// yet.
    fn acknowledge(&mut self, batch: &mut Batch) {
        if self.resumable && self.unacked > 0 {
            self.unacked = 0;
            let ack = Event::<()>::Ack {
                received: self.received,
            };
            let _ = self.outbox.push_uncounted(&encode(&ack), batch);
        }
    }

    /// Counts a frame the client sent.
    fn counted(&mut self, batch: &mut Batch) {
        self.received += 1;
        self.unacked += 1;
        if self.unacked >= ACK_EVERY {
            self.acknowledge(batch);
        }
    }

    /// Counts a frame the rate limit dropped, unless it is an `ack` (rare enough to decode).
    fn counted_unless_ack(&mut self, frame: &Incoming<'_>, text: &str, batch: &mut Batch) {
        let binary = matches!(frame, Incoming::Binary);
        if !binary && !matches!(codec::decode(text), Ok(Request::Ack { .. })) {
            self.counted(batch);
        }
    }

    /// Resumes `peer`'s session on this connection, as its first frame.
    async fn resume(&mut self, peer: PeerId, key: &ResumeKey, received: u64, batch: &mut Batch) {
        let first = self.received == 0 && self.outside_since.is_some();
        let admits = |room: &RoomName| self.admits.admits(room);
        let claim = Claim {
            peer,
            key,
            received,
            from: self.addr,
            admits: &admits,
        };
        let resumed = if first && self.resumable {
            self.rooms
                .resume(self.peer, self.outbox, claim, batch)
                .await
        } else {
            Err(RoomError::ResumeRefused)
        };
        match resumed {
            Ok((room, received)) => {
                tracing::info!(conn = %self.peer, %peer, %room, "resumed");
                self.peer = peer;
                self.received = received;
                self.unacked = 0;
                self.outside_since = None;
            }
            Err(error) => {
                tracing::info!(conn = %self.peer, %peer, %error, "refused a resume");
                let refusal = Refusal::new(error.code(), error.to_string());
                refuse(self.outbox, refusal, batch);
            }
        }
    }

    /// Handles every whole frame read so far, then writes what that pushed to every
    /// recipient, one write each; `Some(end)` when the connection must end.
    async fn handle_read(&mut self, reader: &mut Reader) -> Option<End> {
        let mut batch = Batch::new();
        let end = self.handle_frames(reader, &mut batch).await;
        batch.flush();
        end
    }

    async fn handle_frames(&mut self, reader: &mut Reader, batch: &mut Batch) -> Option<End> {
        loop {
            let frame = match reader.next_message() {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "broken framing");
                    return Some(End::Broken(error));
                }
            };
            let text = match frame {
                Incoming::Text(text) => text,
                Incoming::Binary => {
                    metrics::count(Counter::Received(Frame::Binary));
                    ""
                }
                Incoming::Ping(payload) => {
                    metrics::count(Counter::Received(Frame::Ping));
                    let _ = self.outbox.push_pong(payload, batch);
                    continue;
                }
                // Pongs only prove liveness, which any read does.
                Incoming::Pong => {
                    metrics::count(Counter::Received(Frame::Pong));
                    continue;
                }
                Incoming::Close(code) => {
                    metrics::count(Counter::Received(Frame::Close));
                    return Some(End::ClientClosed(code));
                }
            };
            match self.rate.admit(self.last_heard) {
                Admit::Yes => {}
                Admit::NoAndSay => {
                    metrics::count(Counter::RateLimited);
                    let limit = format!("more than {} frames per second", self.limits.rate_per_sec);
                    let refusal = Refusal::new(ErrorCode::RateLimited, limit);
                    refuse(self.outbox, refusal, batch);
                    self.counted_unless_ack(&frame, text, batch);
                    continue;
                }
                Admit::No => {
                    metrics::count(Counter::RateLimited);
                    self.counted_unless_ack(&frame, text, batch);
                    continue;
                }
                Admit::Never => {
                    metrics::count(Counter::RateLimited);
                    return Some(End::RateLimit);
                }
            }
            if matches!(frame, Incoming::Binary) {
                let refusal =
                    Refusal::new(ErrorCode::BinaryUnsupported, "send JSON in text frames");
                refuse(self.outbox, refusal, batch);
                continue;
            }
            let handled = handle(self.rooms, self.admits, self.peer, text, batch).await;
            if let Handled::Resume {
                peer,
                key,
                received,
            } = handled
            {
                self.resume(peer, &key, received, batch).await;
                continue;
            }
            if !matches!(handled, Handled::Acked(_)) {
                self.counted(batch);
            }
            match handled {
                Handled::Resume { .. } => {}
                Handled::Acked(received) => {
                    if !self.outbox.ack(received) && self.resumable {
                        tracing::debug!(peer = %self.peer, received, "an ack beyond what was sent");
                    }
                }
                Handled::Inside => self.outside_since = None,
                Handled::Outside => {
                    self.outside_since = self.outside_since.or(Some(self.last_heard));
                }
                Handled::Unmoved => {}
                Handled::Refused(refusal) => {
                    tracing::debug!(peer = %self.peer, %refusal, "refused a frame");
                    refuse(self.outbox, refusal, batch);
                }
            }
        }
    }
}

/// What a request did.
#[derive(Debug)]
pub enum Handled {
    /// A `resume`: the connection's task carries it out, as the connection's first frame.
    Resume {
        /// The session's id.
        peer: PeerId,
        /// The key claimed.
        key: ResumeKey,
        /// Counted frames the client received.
        received: u64,
    },
    /// An `ack` of this many counted frames.
    Acked(u64),
    /// The peer is now in a room.
    Inside,
    /// The peer is now outside any room: it left, or the room it asked for was full.
    Outside,
    /// The peer stayed where it was (it sent a message).
    Unmoved,
    /// The request was refused; the client is to be told why.
    Refused(Refusal),
}

/// Carries out one request, pushing what it causes into `batch`. `create_or_join` for a
/// room `admits` does not include is refused with `forbidden`.
pub async fn handle<R: Rooms>(
    rooms: &R,
    admits: &Admits,
    peer: PeerId,
    text: &str,
    batch: &mut Batch,
) -> Handled {
    let refused = |e: RoomError| Handled::Refused(Refusal::new(e.code(), e.to_string()));
    let request = match codec::decode(text) {
        Ok(request) => request,
        Err(refusal) => {
            metrics::count(Counter::Received(Frame::Invalid));
            return Handled::Refused(refusal);
        }
    };
    metrics::count(Counter::Received(match request {
        Request::CreateOrJoin { .. } => Frame::CreateOrJoin,
        Request::Message { .. } => Frame::Message,
        Request::Leave => Frame::Leave,
        Request::Resume { .. } => Frame::Resume,
        Request::Ack { .. } => Frame::Ack,
    }));
    match request {
        Request::CreateOrJoin { room } if !admits.admits(&room) => Handled::Refused(Refusal::new(
            ErrorCode::Forbidden,
            format!("your room token does not admit room {:?}", room.as_str()),
        )),
        Request::CreateOrJoin { room } => match timed_join(rooms, peer, &room, batch).await {
            Ok(outcome) => {
                tracing::info!(%peer, %room, ?outcome, "join");
                if outcome == JoinOutcome::Full {
                    Handled::Outside
                } else {
                    Handled::Inside
                }
            }
            Err(error) => refused(error),
        },
        Request::Message { data, to } => match rooms.relay(peer, to, data, batch).await {
            Ok(()) => Handled::Unmoved,
            Err(error) => refused(error),
        },
        Request::Leave => match rooms.leave(peer, batch).await {
            Ok(room) => {
                tracing::info!(%peer, %room, "leave");
                Handled::Outside
            }
            Err(error) => refused(error),
        },
        Request::Resume {
            peer,
            key,
            received,
        } => Handled::Resume {
            peer,
            key,
            received,
        },
        Request::Ack { received } => Handled::Acked(received),
    }
}

/// `rooms.join`, its time recorded in the metrics.
async fn timed_join<R: Rooms>(
    rooms: &R,
    peer: PeerId,
    room: &RoomName,
    batch: &mut Batch,
) -> Result<JoinOutcome, RoomError> {
    let start = std::time::Instant::now();
    let outcome = rooms.join(peer, room.clone(), batch).await;
    metrics::join_took(start.elapsed());
    outcome
}

fn refuse(outbox: &Outbox, refusal: Refusal, batch: &mut Batch) {
    metrics::count(Counter::Refused(refusal.code));
    let error = Event::<()>::Error {
        code: refusal.code,
        message: refusal.message,
    };
    let _ = outbox.send(&error, batch);
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
