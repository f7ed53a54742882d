//! Room membership and delivery, behind the [`Rooms`] interface.
//!
//! [`LocalRooms`] keeps everything in this process. A backend shared by several relays
//! implements the same trait; the transport never sees the difference. Every event a
//! connection receives about rooms, including the answer to its own join, is pushed to its
//! [`Outbox`] by the backend, so events reach each peer in the order the backend decided.
//! The backend only pushes, into the caller's [`Batch`]; the caller writes the batch once
//! the call has returned, so no socket is written under the backend's lock.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;
use signalroom_protocol::{ErrorCode, Event, PeerId, RoomName};

use crate::ice::IceServers;
use crate::json::RawJson;
use crate::metrics::{self, Counter};
use crate::outbox::{encode, lock};
pub use crate::outbox::{Batch, Outbox};
use crate::spare;

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
    /// The backend cannot reach what it shares rooms through.
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
    /// Rooms with at least one member.
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

    /// The relay is stopping and every connection is about to close with 1001: departures
    /// from now on are not announced, so peers in a call keep it while they reconnect.
    fn shutdown(&self);

    /// Current counts.
    fn stats(&self) -> Stats;

    /// Whether the backend can take new members: false while what it shares rooms
    /// through is unreachable.
    fn ready(&self) -> bool {
        true
    }
}

/// The in-process backend: a map of peers and a table of rooms behind a mutex.
///
/// The mutex is a std one, held only for map updates and queue pushes (which make no
/// syscall) and never across an `.await`, so it cannot stall the runtime; every check and update of a room
/// happens under it, which is what keeps capacity exact under concurrent joins.
#[derive(Clone)]
pub struct LocalRooms {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    capacity: usize,
    max_rooms: usize,
    ice_servers: IceServers,
}

#[derive(Default)]
struct State {
    peers: HashMap<PeerId, Member, BuildHasherDefault<IdHasher>>,
    /// Room names come from clients: this map keeps std's DoS-resistant hasher. Only joins
    /// look a name up; a member holds its room's slot.
    names: HashMap<RoomName, usize>,
    /// Rooms by slot, so that relaying a frame finds the room without hashing its name.
    slots: Vec<Option<Room>>,
    /// Slots free for new rooms.
    free: Vec<usize>,
}

struct Room {
    name: RoomName,
    /// Members and their outboxes, so delivering needs no lookup per recipient.
    members: Vec<(PeerId, Outbox)>,
}

/// Hashes peer ids, which the relay assigns in sequence (no client picks them), with one
/// multiplication instead of SipHash: the one lookup per relayed message.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing spreads sequential ids over the high bits the table uses.
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

struct Member {
    outbox: Outbox,
    /// The slot of the member's room.
    room: Option<usize>,
}

impl LocalRooms {
    /// At most `max_rooms` rooms of `capacity` members, handing everyone who enters one
    /// the `ice_servers` for it (with a TURN credential of its own, if they mint them).
    pub fn new(capacity: usize, max_rooms: usize, ice_servers: IceServers) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                stopping: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                capacity,
                max_rooms,
                ice_servers,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Delivers a message's `frame` from `from` to its room, or only to `to`.
    fn deliver_message(
        &self,
        from: PeerId,
        to: Option<PeerId>,
        frame: &str,
        batch: &mut Batch,
    ) -> Result<(), RoomError> {
        let mut state = self.state();
        let room = state
            .peers
            .get(&from)
            .and_then(|m| m.room)
            .and_then(|slot| state.room(slot))
            .ok_or(RoomError::NotInRoom)?;
        let overflowed = match to {
            Some(to) if to != from => match room.members.iter().find(|(p, _)| *p == to) {
                Some(addressee) => {
                    metrics::count(Counter::Relayed);
                    deliver(std::slice::from_ref(addressee), None, frame, batch)
                }
                None => return Err(RoomError::UnknownPeer(to)),
            },
            Some(to) => return Err(RoomError::UnknownPeer(to)),
            None => {
                metrics::add(Counter::Relayed, room.members.len() as u64 - 1);
                deliver(&room.members, Some(from), frame, batch)
            }
        };
        state.evict(overflowed, batch);
        Ok(())
    }
}

/// Pushes `frame` to each of `members` but `except`; returns those whose outbox overflowed.
fn deliver(
    members: &[(PeerId, Outbox)],
    except: Option<PeerId>,
    frame: &str,
    batch: &mut Batch,
) -> Vec<PeerId> {
    members
        .iter()
        .filter(|(peer, outbox)| Some(*peer) != except && !outbox.push_text(frame, batch))
        .map(|(peer, _)| *peer)
        .collect()
}

impl State {
    fn room(&self, slot: usize) -> Option<&Room> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// The slot of room `name`, made (empty) if it does not exist.
    fn slot_for(&mut self, name: &RoomName) -> usize {
        if let Some(&slot) = self.names.get(name) {
            return slot;
        }
        let room = Room {
            name: name.clone(),
            members: Vec::new(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(room);
                slot
            }
            None => {
                self.slots.push(Some(room));
                self.slots.len() - 1
            }
        };
        self.names.insert(name.clone(), slot);
        slot
    }

    /// Removes `peer` from its room and tells the rest; returns the room it was in.
    /// Members whose outbox overflows on the way are removed as well.
    fn remove_from_room(&mut self, peer: PeerId, batch: &mut Batch) -> Option<RoomName> {
        let mut pending = vec![peer];
        let mut first_room = None;
        while let Some(gone) = pending.pop() {
            let Some(slot) = self.peers.get_mut(&gone).and_then(|m| m.room.take()) else {
                continue;
            };
            let Some(room) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            room.members.retain(|(p, _)| *p != gone);
            let name = room.name.clone();
            if room.members.is_empty() {
                self.slots[slot] = None;
                self.free.push(slot);
                self.names.remove(&name);
            } else {
                let left = encode(&Event::<()>::Left {
                    room: name.clone(),
                    peer: gone,
                });
                pending.extend(deliver(&room.members, None, &left, batch));
            }
            first_room.get_or_insert(name);
        }
        first_room
    }

    /// Drops members whose outbox overflowed from their rooms.
    fn evict(&mut self, overflowed: Vec<PeerId>, batch: &mut Batch) {
        for peer in overflowed {
            tracing::warn!(%peer, "outbox full; dropping a client that does not read");
            self.remove_from_room(peer, batch);
        }
    }
}

impl Rooms for LocalRooms {
    async fn connect(&self, outbox: Outbox) -> Result<PeerId, RoomError> {
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = PeerId::new(n).expect("2^53 connections outlast any process");
        self.state()
            .peers
            .insert(peer, Member { outbox, room: None });
        Ok(peer)
    }

    async fn join(
        &self,
        peer: PeerId,
        room: RoomName,
        batch: &mut Batch,
    ) -> Result<JoinOutcome, RoomError> {
        let mut state = self.state();
        let state = &mut *state;
        let Some(member) = state.peers.get(&peer) else {
            return Err(RoomError::NotInRoom);
        };
        if let Some(current) = member.room.and_then(|slot| state.room(slot)) {
            return Err(RoomError::AlreadyInRoom(current.name.clone()));
        }
        let others = match state.names.get(&room).and_then(|&slot| state.room(slot)) {
            Some(existing) => existing.members.as_slice(),
            None => &[],
        };
        if others.is_empty() && state.names.len() >= self.shared.max_rooms {
            return Err(RoomError::TooManyRooms(self.shared.max_rooms));
        }
        if others.len() >= self.shared.capacity {
            member.outbox.send(&Event::<()>::Full { room }, batch);
            return Ok(JoinOutcome::Full);
        }
        let ice_servers = self.shared.ice_servers.for_peer(peer, SystemTime::now());
        let (answer, outcome) = if others.is_empty() {
            let answer = Event::<()>::Created {
                room: room.clone(),
                peer,
                ice_servers,
            };
            (answer, JoinOutcome::Created)
        } else {
            let answer = Event::<()>::Joined {
                room: room.clone(),
                peer,
                peers: others.iter().map(|(p, _)| *p).collect(),
                ice_servers,
            };
            (answer, JoinOutcome::Joined(others.len() + 1))
        };
        let mut overflowed = Vec::new();
        if !member.outbox.send(&answer, batch) {
            overflowed.push(peer);
        }
        let announce = encode(&Event::<()>::Join {
            room: room.clone(),
            peer,
        });
        overflowed.extend(deliver(others, None, &announce, batch));
        let outbox = member.outbox.clone();
        let slot = state.slot_for(&room);
        if let Some(entered) = state.slots[slot].as_mut() {
            entered.members.push((peer, outbox));
        }
        if let Some(member) = state.peers.get_mut(&peer) {
            member.room = Some(slot);
        }
        state.evict(overflowed, batch);
        Ok(outcome)
    }

    async fn leave(&self, peer: PeerId, batch: &mut Batch) -> Result<RoomName, RoomError> {
        self.state()
            .remove_from_room(peer, batch)
            .ok_or(RoomError::NotInRoom)
    }

    async fn relay(
        &self,
        from: PeerId,
        to: Option<PeerId>,
        data: RawJson<'_>,
        batch: &mut Batch,
    ) -> Result<(), RoomError> {
        // Serialized once, outside the lock, whoever and however many the recipients are,
        // into a buffer this thread reuses.
        let mut frame = spare::take_string();
        signalroom_protocol::write_message_json(&mut frame, from, data.get());
        let relayed = self.deliver_message(from, to, &frame, batch);
        spare::give(frame.into_bytes());
        relayed
    }

    async fn disconnect(&self, peer: PeerId, batch: &mut Batch) {
        let mut state = self.state();
        if !self.shared.stopping.load(Ordering::Relaxed) {
            state.remove_from_room(peer, batch);
        }
        state.peers.remove(&peer);
    }

    fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }

    fn stats(&self) -> Stats {
        let state = self.state();
        Stats {
            connections: state.peers.len(),
            rooms: state.names.len(),
            members: state.slots.iter().flatten().map(|r| r.members.len()).sum(),
        }
    }
}
