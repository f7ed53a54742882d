//! Room membership and delivery, behind the [`Rooms`] interface.
//!
//! The room logic is written once, in [`core`]: join answers, capacity, fan-out, directed
//! delivery, eviction of a member that does not read, departures and `left`. A backend
//! only decides membership and carries frames between relays:
//!
//! - [`LocalRooms`] ([`local`]) decides in this process, under the core's lock;
//! - [`RedisRooms`] ([`redis`]) decides in Redis (one Lua script per join or departure)
//!   and applies each decision when the room's channel brings it back, so every relay
//!   applies a room's decisions in one order.
//!
//! Every event a connection receives about rooms, including the answer to its own join, is
//! pushed to its [`Outbox`] by the core, so events reach each peer in the order the backend
//! decided. The core only pushes, into the caller's [`Batch`]; the caller writes the batch
//! once the call has returned, so no socket is written under the core's lock.

mod core;
mod local;
pub(crate) mod redis;
mod sessions;

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use signalroom_protocol::{ErrorCode, PeerId, ResumeKey, RoomName};

pub use self::redis::{RedisRooms, RedisTopology};
use crate::json::RawJson;
pub use crate::outbox::{Batch, Outbox};
pub use local::LocalRooms;
pub use sessions::Resumption;

/// Why the backend refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// `create_or_join` while in a room.
    #[error("already in room {0:?}; send leave first")]
    AlreadyInRoom(RoomName),
    /// `message` or `leave` outside a room.
    #[error("join a room before sending messages")]
    NotInRoom,
    /// `to` names nobody else in the sender's room.
    #[error("peer {0} is not another member of your room")]
    UnknownPeer(PeerId),
    /// Creating a room would exceed the relay's room limit.
    #[error("the relay holds as many rooms as it may ({0}); try again later")]
    TooManyRooms(usize),
    /// The backend cannot reach what it shares rooms through, or is putting rooms back
    /// after it lost them.
    #[error("rooms are unavailable just now; try again shortly")]
    Unavailable,
    /// The backend's queue toward the other relays is full: the message was dropped.
    #[error("the relay cannot pass messages on that fast; this one was dropped")]
    Backlogged,
    /// A resume was refused; what was wrong is not said.
    #[error("cannot resume that session; join as a new peer")]
    ResumeRefused,
    /// A resume came after its session's window.
    #[error("the session's window ended; join as a new peer")]
    ResumeExpired,
    /// A resume came for a session whose kept frames outgrew its buffer.
    #[error("the session outgrew its buffer while away; join as a new peer")]
    ResumeLost,
}

impl RoomError {
    /// The wire code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AlreadyInRoom(_) => ErrorCode::AlreadyInRoom,
            Self::NotInRoom => ErrorCode::NotInRoom,
            Self::UnknownPeer(_) => ErrorCode::UnknownPeer,
            Self::TooManyRooms(_) => ErrorCode::TooManyRooms,
            Self::Unavailable => ErrorCode::Unavailable,
            Self::Backlogged => ErrorCode::RateLimited,
            Self::ResumeRefused => ErrorCode::ResumeRefused,
            Self::ResumeExpired => ErrorCode::ResumeExpired,
            Self::ResumeLost => ErrorCode::ResumeLost,
        }
    }
}

/// What became of a join, for the caller's logs (the peer has been told already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// First member.
    Created,
    /// Joined with this many members now inside.
    Joined(usize),
    /// Room at capacity.
    Full,
}

/// Counts for the stats endpoint and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Open connections.
    pub connections: usize,
    /// Rooms with at least one member on this relay.
    pub rooms: usize,
    /// Members of a room on this relay, away ones included.
    pub members: usize,
    /// Sessions waiting for a resume.
    pub away: usize,
    /// Bytes kept for resumes, in every session.
    pub retained_bytes: usize,
}

/// How a connection ended, for its seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parting {
    /// Deliberately (a close frame, a limit, the relay stopping): the seat goes too.
    Closed,
    /// Without a word (the network, a failed or stalled write, silence): a resumable
    /// session waits for a resume. The relay had received `received` counted frames.
    Lost {
        /// Counted frames received from the client in its session.
        received: u64,
    },
}

/// A session that waits for a resume: its connection's task has the backend expire it
/// ([`Rooms::expire`]) after `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Away {
    /// Which absence this is.
    pub generation: u64,
    /// How long it waits.
    pub window: Duration,
}

/// A `resume`, with what the relay knows of the connection that sent it.
pub struct Claim<'a> {
    /// The session's peer id.
    pub peer: PeerId,
    /// The key claimed.
    pub key: &'a ResumeKey,
    /// Counted frames the client received in the session.
    pub received: u64,
    /// The client's address, against which refusals are counted.
    pub from: Option<IpAddr>,
    /// Whether the connection's room token admits a room.
    pub admits: &'a (dyn Fn(&RoomName) -> bool + Sync),
}

/// Room membership and delivery. One instance is shared by every connection.
pub trait Rooms: Clone + Send + Sync + 'static {
    /// Registers a new connection and assigns its id; a `resumable` one (`/ws?resume`)
    /// gets a session when resumption is on.
    fn connect(
        &self,
        outbox: Outbox,
        resumable: bool,
    ) -> impl Future<Output = Result<PeerId, RoomError>> + Send;

    /// Puts `peer` into `room` and tells it, and the members inside, what happened.
    fn join(
        &self,
        peer: PeerId,
        room: RoomName,
        batch: &mut Batch,
    ) -> impl Future<Output = Result<JoinOutcome, RoomError>> + Send;

    /// Takes `peer` out of its room; the members left get `left`.
    fn leave(
        &self,
        peer: PeerId,
        batch: &mut Batch,
    ) -> impl Future<Output = Result<RoomName, RoomError>> + Send;

    /// Delivers `data` from `from` to the other members of its room, or only to `to`.
    fn relay(
        &self,
        from: PeerId,
        to: Option<PeerId>,
        data: RawJson<'_>,
        batch: &mut Batch,
    ) -> impl Future<Output = Result<(), RoomError>> + Send;

    /// A connection (whose outbox is `outbox`) ended. A resumable session lost while in a
    /// room goes away, keeping its seat (`Some`); otherwise the connection is forgotten,
    /// as `leave` would for its room.
    fn disconnect(
        &self,
        peer: PeerId,
        outbox: &Outbox,
        parting: Parting,
        batch: &mut Batch,
    ) -> impl Future<Output = Option<Away>> + Send;

    /// The window of `peer`'s absence `generation` ended: if no resume came, the session
    /// ends and its room gets `left`.
    fn expire(
        &self,
        peer: PeerId,
        generation: u64,
        batch: &mut Batch,
    ) -> impl Future<Output = ()> + Send;

    /// Resumes `claim`'s session on connection `conn` (with `outbox`), which then is
    /// `claim.peer`; returns its room and how many counted frames the relay had received
    /// from its client.
    fn resume(
        &self,
        conn: PeerId,
        outbox: &Outbox,
        claim: Claim<'_>,
        batch: &mut Batch,
    ) -> impl Future<Output = Result<(RoomName, u64), RoomError>> + Send;

    /// The relay is stopping: if its sessions can resume on other relays (rooms shared,
    /// resumption on), it stops taking joins, resumes and new connections, and says true;
    /// its connections are then told to go, and the caller waits, boundedly, until every
    /// session has been taken over ([`Stats::away`] and [`Stats::connections`] at zero)
    /// before [`Rooms::shutdown`]. Otherwise false: sessions end with the relay.
    fn drain(&self) -> bool {
        false
    }

    /// The relay is stopping, and every connection is about to close with 1001. Takes
    /// every member of this relay out of its room, telling the members elsewhere `left`,
    /// then stops the backend's tasks in order. Joins are refused from the start.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;

    /// Current counts.
    fn stats(&self) -> Stats;

    /// Whether the backend can take new members: false while what it shares rooms
    /// through is unreachable.
    fn ready(&self) -> bool {
        true
    }
}
