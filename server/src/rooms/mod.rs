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

use std::future::Future;

use serde::Serialize;
use signalroom_protocol::{ErrorCode, PeerId, RoomName};

pub use self::redis::{RedisRooms, RedisTopology};
use crate::json::RawJson;
pub use crate::outbox::{Batch, Outbox};
pub use local::LocalRooms;

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
    /// Connections inside a room.
    pub members: usize,
}

/// Room membership and delivery. One instance is shared by every connection.
pub trait Rooms: Clone + Send + Sync + 'static {
    /// Registers a new connection and assigns its id.
    fn connect(&self, outbox: Outbox) -> impl Future<Output = Result<PeerId, RoomError>> + Send;

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

    /// Forgets a closed connection, as `leave` would for its room.
    fn disconnect(&self, peer: PeerId, batch: &mut Batch) -> impl Future<Output = ()> + Send;

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
