//! The room logic, written once for every backend.
//!
//! [`Core`] is this relay's view of the rooms it has members in: who is in each room (on
//! whichever relay), which of them are here (with their outboxes), and where each of this
//! relay's connections stands (outside, on its way in, inside). A backend *decides*
//! membership (a join fits or not, a departure happened) and the core *applies* each
//! decision: it answers the joiner, tells the members here `join` or `left`, and fans
//! messages out. `LocalRooms` decides under the same lock it applies under; `RedisRooms`
//! decides in Redis and applies what a room's channel brings back, in the channel's order.
//!
//! The core never blocks and never writes a socket: it pushes into outboxes, through the
//! caller's [`Batch`]. A member whose outbox overflows is taken out of delivery at once,
//! whichever backend: it receives nothing more, and the backend announces its departure
//! ([`Core::take_evicted`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use tokio::sync::oneshot;

use signalroom_protocol::{Event, IceServer, PeerId, RoomName};
use signalroom_wsframe::{CloseCode, CustomCode};

use crate::metrics::{self, Counter};
use crate::outbox::{encode, Batch, Outbox, Push, Retention};
use crate::rooms::sessions::{Digest, Ending, Late, Presence, Resumption, Session, Sessions};
use crate::rooms::{Away, Claim, JoinOutcome, Parting, RoomError, Stats};

/// The close code and reason for a member the relay took out of its room without its
/// asking (another relay gave this one up, or its seat was lost with Redis's data).
pub(crate) const SEAT_LOST: (CloseCode, &str) = (
    CloseCode::ServiceRestart,
    "the relay lost your seat; join again",
);

/// The close code and reason for a connection whose session was resumed on another one
/// (the half-open case: this one still looked alive).
pub(crate) const TAKEN_OVER: (u16, &str) = (4000, "session resumed on another connection");

/// What became of a connection that ended.
pub(crate) enum Parted {
    /// It is gone, and so is its seat in this room, if any: the backend decides the
    /// departure.
    Gone(Option<RoomName>),
    /// Its session keeps its seat, away, until a resume or the window's end.
    Away(Away),
    /// The connection no longer holds its peer id (its session was resumed elsewhere).
    NotOwner,
    /// Its session was resumed on another relay while it still looked alive: what the
    /// session carries goes there ([`Transfer`]), and the room's slot here was let go
    /// (`true`) or not.
    HandedOver(Transfer, bool),
}

/// A session leaving this relay for relay `to`, which resumes it.
pub(crate) struct Transfer {
    pub peer: PeerId,
    pub to: u64,
    pub room: RoomName,
    /// The count of counted frames received from the client, and the session's
    /// retention; `None` when the session cannot go on (its connection closed on purpose).
    pub carried: Option<(u64, Box<Retention>)>,
}

/// What the core tells a backend that shares sessions with other relays
/// ([`Core::sharing`]): each is written where every relay reads it.
pub(crate) enum SessionNews {
    /// `peer`'s session, in `room` on this relay, has a key whose digest is `digest`.
    Granted {
        peer: PeerId,
        room: RoomName,
        digest: Digest,
    },
    /// `peer`'s session ended: `how` (with its last key's digest) for a resume that comes
    /// late, or on purpose (`None`: nothing to say).
    Ended {
        peer: PeerId,
        how: Option<(Ending, Digest)>,
    },
}

/// A resume this relay takes over from another relay: it waits for the room's channel to
/// bring the seat (`H`) and then what the session carries (`T`).
struct Incoming {
    /// The connection that asked, which becomes the session's.
    conn: PeerId,
    outbox: Outbox,
    /// Counted frames its client had received.
    received: u64,
    slot: usize,
    /// The relay the session comes from.
    from: u64,
    /// Whether its seat is taken here ([`Core::claim_seat`]).
    seated: bool,
    /// Where the outcome goes: the room and the relay's count, or why not.
    reply: oneshot::Sender<Result<(RoomName, u64), RoomError>>,
}

/// What giving up a resume from another relay leaves the backend to do.
pub(crate) enum Cancelled {
    /// Nothing.
    Kept,
    /// The room is no longer tracked here: its channel can go.
    Released(RoomName),
    /// The seat had come: the backend decides its departure from this room.
    Depart(RoomName),
}

/// What became of a resume taken over from another relay, once its transfer came.
pub(crate) enum Arrival {
    /// Resumed: nothing for the backend to do.
    Resumed,
    /// It cannot resume: the backend decides `peer`'s departure from `room`.
    Failed(PeerId, RoomName),
}

/// This relay's view of its rooms and connections. Held behind one mutex by each backend.
#[derive(Default)]
pub(crate) struct Core {
    peers: HashMap<PeerId, Member, BuildHasherDefault<IdHasher>>,
    /// Room names come from clients: this map keeps std's DoS-resistant hasher. Only joins
    /// and events from other relays look a name up; a member holds its room's slot.
    names: HashMap<RoomName, usize>,
    /// Rooms by slot, so that relaying a frame finds the room without hashing its name.
    slots: Vec<Option<Room>>,
    /// Slots free for new rooms.
    free: Vec<usize>,
    /// Members taken out of delivery because their outbox overflowed, whose departure the
    /// backend has yet to decide.
    evicted: Vec<(PeerId, RoomName)>,
    /// The ICE servers for the answer of each join on its way (minted before the lock, so
    /// that no HMAC runs under it).
    answers: HashMap<PeerId, Vec<IceServer>, BuildHasherDefault<IdHasher>>,
    /// Resumable sessions' rules, keys and records of those that ended.
    sessions: Sessions,
    /// What the backend is to tell other relays of sessions, when it shares them.
    news: Option<Vec<SessionNews>>,
    /// `away` and `back` events for resumable members on other relays, when sessions are
    /// shared.
    notices: Vec<(RoomName, PeerId, String)>,
    /// Resumes taken over from other relays, by the session's peer id.
    incoming: HashMap<PeerId, Incoming, BuildHasherDefault<IdHasher>>,
    /// Sessions whose seat is moving here ([`Moving`]): until the move is through the
    /// room's channel, messages published around it need sorting ([`Core::deliver`]).
    moving: HashMap<PeerId, Moving, BuildHasherDefault<IdHasher>>,
}

/// A session whose seat is moving here from relay `from`: from the moment this relay
/// queued its claim (behind everything it had published) until `from`'s fence (`F`) comes
/// back through the room's channel. The session is a member here from that moment on, and
/// this relay's own messages reach it directly; of what other relays publish, what comes
/// before the `H` reached it on `from`, and so did what `from` itself published before its
/// fence (it is in the retention that comes with `T`).
struct Moving {
    slot: usize,
    from: u64,
    /// Whether the `H` came (`from`'s fence, which follows, ends the move).
    seated: bool,
}

/// A room with members here, or joins on their way in. What relaying reads comes first
/// (`here`, then `members`), in that order in memory.
#[repr(C)]
struct Room {
    /// The members on this relay, with their outboxes: they receive the room's events.
    here: Vec<(PeerId, Outbox)>,
    /// Every member, on whichever relay, in the order they came.
    members: Vec<PeerId>,
    /// Connections of this relay on their way in: the room is kept while any are.
    joining: u32,
    /// Decisions applied so far (wrapping), so that a backend reading the room again can
    /// tell whether any came meanwhile.
    events: u32,
    name: RoomName,
}

struct Member {
    outbox: Outbox,
    seat: Seat,
    /// A resumable connection's session.
    session: Option<Box<Session>>,
}

/// Where a connection stands. A state machine: `Outside` → `Joining` → `Inside` → `Outside`.
/// Small (it sits in every member's entry, read for every relayed message): the ICE servers
/// of a join on its way wait in `Core::answers`.
#[derive(Clone, Copy)]
enum Seat {
    Outside,
    /// A join was asked for and is being decided, into the room in this slot.
    Joining(usize),
    Inside(usize),
}

/// Hashes peer ids, which the relays assign in sequence (no client picks them), with one
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

/// A join on its way in.
pub(crate) struct Entry {
    /// The members this relay knows to be inside (all of them, for `LocalRooms`).
    pub known: usize,
    /// Whether the room was not tracked here before: the first interest in its channel.
    pub first: bool,
}

/// Whether a relayed message must also reach members on other relays.
pub(crate) enum Fanout<'a> {
    /// Everyone it is for is here: delivered.
    Done,
    /// Delivered here; members of this room elsewhere are to get it too.
    Elsewhere(&'a RoomName),
}

impl Core {
    /// A core whose resumable connections resume by `rules`.
    pub fn new(rules: Resumption) -> Self {
        Self {
            sessions: Sessions::new(rules),
            ..Self::default()
        }
    }

    /// A core whose sessions may resume on other relays too: it notes what they need to
    /// know ([`Core::take_news`]).
    pub fn sharing(rules: Resumption) -> Self {
        Self {
            news: Some(Vec::new()),
            ..Self::new(rules)
        }
    }

    /// What the backend is to tell other relays of sessions since the last call.
    pub fn take_news(&mut self) -> Vec<SessionNews> {
        self.news.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// How sessions resume here.
    pub fn rules(&self) -> Resumption {
        self.sessions.rules
    }

    /// Whether `peer` is a connection or a session of this relay.
    pub fn holds(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Whether a resume from `from` may be tried now.
    pub fn may_try(&mut self, from: Option<std::net::IpAddr>) -> bool {
        self.sessions.may_try(from, Instant::now())
    }

    /// Counts a refused resume against `from`.
    pub fn failed(&mut self, from: Option<std::net::IpAddr>) {
        self.sessions.failed(from, Instant::now());
    }

    /// Registers a new connection, outside any room; a resumable one (`/ws?resume`) gets
    /// a session when resumption is on.
    pub fn connect(&mut self, peer: PeerId, outbox: Outbox, resumable: bool) {
        let seat = Seat::Outside;
        let session = resumable.then(|| self.sessions.open()).flatten();
        if session.is_some() {
            let rules = self.sessions.rules;
            outbox.retain(Retention::new(rules.buffer, rules.frames));
        }
        self.peers.insert(
            peer,
            Member {
                outbox,
                seat,
                session,
            },
        );
    }

    /// Rooms tracked here (with members here or joins on their way).
    pub fn rooms(&self) -> usize {
        self.names.len()
    }

    /// Every room tracked here.
    pub fn room_names(&self) -> impl Iterator<Item = &RoomName> {
        self.names.keys()
    }

    /// Every member of this relay inside a room, with the room.
    pub fn inside(&self) -> impl Iterator<Item = (PeerId, &RoomName)> {
        self.peers
            .iter()
            .filter_map(|(peer, member)| match member.seat {
                Seat::Inside(slot) => self.room(slot).map(|room| (*peer, &room.name)),
                _ => None,
            })
    }

    /// Starts `peer`'s join of `name`: checks it may ask, and tracks the room meanwhile.
    /// The backend then decides ([`Core::apply_join`], or [`Core::abandon_join`]).
    pub fn begin_join(
        &mut self,
        peer: PeerId,
        name: &RoomName,
        ice_servers: Vec<IceServer>,
    ) -> Result<Entry, RoomError> {
        let member = self.peers.get(&peer).ok_or(RoomError::NotInRoom)?;
        match member.seat {
            Seat::Outside => {}
            Seat::Joining(slot) | Seat::Inside(slot) => {
                let current = self.room(slot).map(|room| room.name.clone());
                return Err(RoomError::AlreadyInRoom(
                    current.unwrap_or_else(|| name.clone()),
                ));
            }
        }
        let first = !self.names.contains_key(name);
        let (slot, room) = self.slot_for(name);
        room.joining += 1;
        let known = room.members.len();
        if let Some(member) = self.peers.get_mut(&peer) {
            member.seat = Seat::Joining(slot);
            self.answers.insert(peer, ice_servers);
        }
        Ok(Entry { known, first })
    }

    /// The members this relay knows of in room `name`.
    pub fn members(&self, name: &RoomName) -> &[PeerId] {
        self.names
            .get(name)
            .and_then(|&slot| self.room(slot))
            .map_or(&[], |room| room.members.as_slice())
    }

    /// `peer`'s join was refused (or failed): it is outside again. Tells it `full` when
    /// that is why. Returns true when the room is no longer tracked here.
    pub fn abandon_join(
        &mut self,
        peer: PeerId,
        full: Option<&RoomName>,
        batch: &mut Batch,
    ) -> bool {
        let Some(member) = self.peers.get_mut(&peer) else {
            return false;
        };
        let Seat::Joining(slot) = member.seat else {
            return false;
        };
        member.seat = Seat::Outside;
        self.answers.remove(&peer);
        if let Some(room) = full {
            let _ = member
                .outbox
                .send(&Event::<()>::Full { room: room.clone() }, batch);
        }
        if let Some(room) = self.slots[slot].as_mut() {
            room.joining -= 1;
        }
        self.drop_if_unused(slot)
    }

    /// Applies the decision that `peer` entered room `name`, whose members were then
    /// `before` (`None`: as this relay knows them). A joiner of this relay gets `created`
    /// or `joined`; the members here get `join`.
    pub fn apply_join(
        &mut self,
        name: &RoomName,
        peer: PeerId,
        before: Option<Vec<PeerId>>,
        batch: &mut Batch,
    ) -> Option<JoinOutcome> {
        let slot = *self.names.get(name)?;
        let room = self.slots[slot].as_mut()?;
        let member = self.peers.get_mut(&peer);
        let ours = member
            .as_ref()
            .is_some_and(|m| matches!(m.seat, Seat::Joining(s) if s == slot));
        if !ours && room.members.contains(&peer) {
            // Known already (a member put back after Redis lost it): nothing happened.
            return None;
        }
        room.events = room.events.wrapping_add(1);
        let mut overflowed = Vec::new();
        let announce = encode(&Event::<()>::Join {
            room: name.clone(),
            peer,
        });
        push_all(&room.here, None, &announce, batch, &mut overflowed);
        let mut outcome = None;
        if let Some(member) = member.filter(|_| ours) {
            // Our own joiner: the decision's members are the room as it found it.
            if let Some(before) = before {
                room.members = before;
            }
            room.members.retain(|p| *p != peer);
            member.seat = Seat::Inside(slot);
            let ice_servers = self.answers.remove(&peer).unwrap_or_default();
            let resume = member
                .session
                .as_deref_mut()
                .and_then(|session| self.sessions.grant(session));
            note_grant(&mut self.news, peer, name, member.session.as_deref());
            let granted = resume.is_some();
            let answer = if room.members.is_empty() {
                outcome = Some(JoinOutcome::Created);
                Event::<()>::Created {
                    room: name.clone(),
                    peer,
                    ice_servers,
                    resume,
                }
            } else {
                outcome = Some(JoinOutcome::Joined(room.members.len() + 1));
                Event::<()>::Joined {
                    room: name.clone(),
                    peer,
                    peers: room.members.clone(),
                    ice_servers,
                    resume,
                }
            };
            let pushed = if granted {
                member.outbox.send_granting(&answer, batch)
            } else {
                member.outbox.send(&answer, batch)
            };
            if pushed == Push::Overflowed {
                overflowed.push(peer);
            }
            room.joining -= 1;
            room.here.push((peer, member.outbox.clone()));
        }
        room.members.push(peer);
        self.evict(overflowed);
        outcome
    }

    /// Stops tracking room `name` if nobody here is in it or on the way: true then.
    pub fn release(&mut self, name: &RoomName) -> bool {
        match self.names.get(name) {
            Some(&slot) => self.drop_if_unused(slot),
            None => false,
        }
    }

    /// Takes `peer` out of delivery for a departure it asked for (or its connection's
    /// end): it is outside at once, and the backend decides the departure. Returns the
    /// room it was in.
    pub fn depart(&mut self, peer: PeerId) -> Option<RoomName> {
        let member = self.peers.get_mut(&peer)?;
        let Seat::Inside(slot) = std::mem::replace(&mut member.seat, Seat::Outside) else {
            return None;
        };
        if let (Some(news), Some(Some(_))) =
            (&mut self.news, member.session.as_ref().map(|s| s.key))
        {
            news.push(SessionNews::Ended { peer, how: None });
        }
        let room = self.slots[slot].as_mut()?;
        room.here.retain(|(p, _)| *p != peer);
        Some(room.name.clone())
    }

    /// Forgets a closed connection; returns the room it was in, whose departure the
    /// backend decides.
    pub fn forget(&mut self, peer: PeerId) -> Option<RoomName> {
        let room = self.depart(peer);
        self.peers.remove(&peer);
        self.answers.remove(&peer);
        room
    }

    /// A connection of this relay ended. A resumable one that was lost (not closed) while
    /// inside a room goes away: its seat, id and kept frames wait for a resume, and the
    /// resumable members here are told `away`. Any other is forgotten, and the backend
    /// decides its departure. `outbox` tells the connection that holds `peer` from one
    /// whose session was resumed on another.
    pub fn part(
        &mut self,
        peer: PeerId,
        outbox: &Outbox,
        parting: Parting,
        batch: &mut Batch,
    ) -> Parted {
        let Some(member) = self.peers.get_mut(&peer) else {
            return Parted::NotOwner;
        };
        if !member.outbox.same(outbox) {
            return Parted::NotOwner;
        }
        if let (Some(Presence::Leaving { to }), Seat::Inside(slot)) =
            (member.session.as_ref().map(|s| s.presence), member.seat)
        {
            // Resumed on relay `to`: the session goes there with the count it ends with.
            let retention = member.outbox.take_retention();
            let carried = match parting {
                Parting::Lost { received } => retention.map(|r| (received, r)),
                Parting::Closed => None,
            };
            self.peers.remove(&peer);
            let Some(room) = self.slots[slot].as_mut() else {
                return Parted::NotOwner;
            };
            room.joining -= 1;
            let transfer = Transfer {
                peer,
                to,
                room: room.name.clone(),
                carried,
            };
            return Parted::HandedOver(transfer, self.drop_if_unused(slot));
        }
        let resumable = member.session.as_ref().is_some_and(|s| s.key.is_some());
        if let (Parting::Lost { received }, Seat::Inside(slot), true) =
            (parting, member.seat, resumable)
        {
            if let Some(retention) = member.outbox.take_retention() {
                let detached = Outbox::detached(retention);
                member.outbox = detached.clone();
                let (generation, presence) = self.sessions.away(received);
                if let Some(session) = member.session.as_deref_mut() {
                    session.presence = presence;
                }
                let Some(room) = self.slots[slot].as_mut() else {
                    return Parted::Gone(None);
                };
                if let Some(entry) = room.here.iter_mut().find(|(p, _)| *p == peer) {
                    entry.1 = detached;
                }
                let away = Event::<()>::Away {
                    room: room.name.clone(),
                    peer,
                };
                self.tell_resumable(slot, peer, &away, batch);
                tracing::info!(%peer, "away; the session waits for a resume");
                return Parted::Away(Away {
                    generation,
                    window: self.sessions.rules.window,
                });
            }
        }
        Parted::Gone(self.forget(peer))
    }

    /// The window of `peer`'s absence `generation` ended: if it is still that absence, the
    /// session ends (a later resume is told `resume_expired`) and the backend decides
    /// the departure from the room returned.
    pub fn expire(&mut self, peer: PeerId, generation: u64) -> Option<RoomName> {
        let member = self.peers.get(&peer)?;
        let session = member.session.as_deref()?;
        match session.presence {
            Presence::Away { generation: g, .. } if g == generation => {
                let key = session.key;
                self.sessions.ended(peer, key, Ending::Expired);
                note_end(
                    &mut self.news,
                    peer,
                    key.map(|k| (Ending::Expired, Digest::of(&k))),
                );
                if let Some(member) = self.peers.get_mut(&peer) {
                    member.session = None;
                }
                tracing::info!(%peer, "session expired");
                self.forget(peer)
            }
            _ => None,
        }
    }

    /// Resumes `claim`'s session on connection `conn` (whose `outbox` it is, fresh and
    /// outside any room). `Ok(Some(room))`: `conn` is gone and its connection is
    /// `claim.peer` again, told `resumed`, then sent the counted frames its client missed;
    /// the resumable members here are told `back`. `Ok(None)`: the session's old
    /// connection still looked alive and is told to go ([`TAKEN_OVER`]); ask again once
    /// it has. Refusals say nothing of what was wrong, save a session that ended.
    pub fn resume(
        &mut self,
        conn: PeerId,
        outbox: &Outbox,
        claim: &Claim<'_>,
        batch: &mut Batch,
    ) -> Result<Option<(RoomName, u64)>, RoomError> {
        let now = Instant::now();
        if !self.sessions.may_try(claim.from, now) {
            return Err(RoomError::ResumeRefused);
        }
        let fresh = self.peers.get(&conn).is_some_and(|m| {
            matches!(m.seat, Seat::Outside)
                && m.outbox.same(outbox)
                && m.session.as_ref().is_some_and(|s| s.key.is_none())
        });
        let target = self.peers.get(&claim.peer).filter(|m| {
            m.session
                .as_deref()
                .is_some_and(|s| Sessions::matches(s, claim.key))
        });
        let (slot, presence) = match target {
            Some(member) if fresh && conn != claim.peer => match (member.seat, &member.session) {
                (Seat::Inside(slot), Some(session)) => (slot, session.presence),
                _ => {
                    self.sessions.failed(claim.from, now);
                    return Err(RoomError::ResumeRefused);
                }
            },
            Some(_) => {
                self.sessions.failed(claim.from, now);
                return Err(RoomError::ResumeRefused);
            }
            None => {
                return Err(
                    match self.sessions.late(claim.peer, claim.key, claim.from) {
                        Late::Ended(Ending::Expired) => RoomError::ResumeExpired,
                        Late::Ended(Ending::Lost) => RoomError::ResumeLost,
                        Late::Nothing => RoomError::ResumeRefused,
                    },
                );
            }
        };
        let Some(name) = self.room(slot).map(|room| room.name.clone()) else {
            return Err(RoomError::ResumeRefused);
        };
        if !(claim.admits)(&name) {
            self.sessions.failed(claim.from, now);
            return Err(RoomError::ResumeRefused);
        }
        let received = match presence {
            Presence::Away { received, .. } => received,
            Presence::Leaving { .. } => return Err(RoomError::ResumeRefused),
            Presence::Here => {
                // Half-open: the client saw the cut first. The old connection ends (and
                // goes away with its count of what it received); then the resume goes on.
                if let Some(member) = self.peers.get(&claim.peer) {
                    let (code, reason) = TAKEN_OVER;
                    if let Some(code) = CustomCode::new(code) {
                        let _ = member
                            .outbox
                            .push_end(CloseCode::Custom(code), reason, batch);
                    }
                }
                return Ok(None);
            }
        };
        // The connection's own entry goes: it is `claim.peer` from now on.
        self.peers.remove(&conn);
        let Some(member) = self.peers.get_mut(&claim.peer) else {
            return Err(RoomError::ResumeRefused);
        };
        let retention = member.outbox.take_retention().unwrap_or_else(|| {
            let rules = self.sessions.rules;
            Retention::new(rules.buffer, rules.frames)
        });
        let Some(session) = member.session.as_deref_mut() else {
            return Err(RoomError::ResumeRefused);
        };
        session.presence = Presence::Here;
        let Some(resume) = self.sessions.grant(session) else {
            return Err(RoomError::ResumeRefused);
        };
        note_grant(&mut self.news, claim.peer, &name, Some(session));
        let resumed = encode(&Event::<()>::Resumed {
            room: name.clone(),
            peer: claim.peer,
            received,
            resume,
            incomplete: false,
        });
        let _ = outbox.adopt(retention, claim.received, &resumed, batch);
        member.outbox = outbox.clone();
        if let Some(room) = self.slots[slot].as_mut() {
            if let Some(entry) = room.here.iter_mut().find(|(p, _)| *p == claim.peer) {
                entry.1 = outbox.clone();
            }
        }
        let back = Event::<()>::Back {
            room: name.clone(),
            peer: claim.peer,
        };
        self.tell_resumable(slot, claim.peer, &back, batch);
        Ok(Some((name, received)))
    }

    /// Starts taking over `peer`'s session, which lives on relay `from` in room `name`,
    /// for connection `conn` (fresh, with `outbox`), whose client had received `received`
    /// counted frames. The room is tracked meanwhile; then the backend takes the seat as
    /// it claims it ([`Core::claim_seat`]), and the outcome goes to `reply` once the
    /// session came ([`Core::apply_transfer`]), or the backend gives up
    /// ([`Core::cancel_handover`]). Returns whether the room was not tracked before (its
    /// channel is to be subscribed).
    pub fn begin_handover(
        &mut self,
        conn: PeerId,
        outbox: &Outbox,
        (peer, from): (PeerId, u64),
        received: u64,
        name: &RoomName,
        reply: oneshot::Sender<Result<(RoomName, u64), RoomError>>,
    ) -> Result<bool, RoomError> {
        let fresh = self.peers.get(&conn).is_some_and(|m| {
            matches!(m.seat, Seat::Outside)
                && m.outbox.same(outbox)
                && m.session.as_ref().is_some_and(|s| s.key.is_none())
        });
        if !fresh
            || conn == peer
            || self.peers.contains_key(&peer)
            || self.incoming.contains_key(&peer)
        {
            return Err(RoomError::ResumeRefused);
        }
        let first = !self.names.contains_key(name);
        let (slot, room) = self.slot_for(name);
        room.joining += 1;
        if let Some(member) = self.peers.get_mut(&conn) {
            member.seat = Seat::Joining(slot);
        }
        self.incoming.insert(
            peer,
            Incoming {
                conn,
                outbox: outbox.clone(),
                received,
                slot,
                from,
                seated: false,
                reply,
            },
        );
        Ok(first)
    }

    /// Gives up taking over `peer`'s session: `moved` if its seat did move here (its session
    /// never came: the backend decides its departure), or not (the claim failed: the seat
    /// stays where it is, and nothing is said). The reply is dropped.
    pub fn cancel_handover(&mut self, peer: PeerId, moved: bool) -> Cancelled {
        let Some(incoming) = self.incoming.remove(&peer) else {
            return Cancelled::Kept;
        };
        self.moving.remove(&peer);
        if let Some(member) = self.peers.get_mut(&incoming.conn) {
            member.seat = Seat::Outside;
        }
        if incoming.seated {
            if moved {
                return match self.forget(peer) {
                    Some(room) => Cancelled::Depart(room),
                    None => Cancelled::Kept,
                };
            }
            // Quietly: the session is not this relay's, nor ended.
            self.peers.remove(&peer);
            if let Some(room) = self.slots[incoming.slot].as_mut() {
                room.here.retain(|(p, _)| *p != peer);
            }
        }
        let Some(room) = self.slots[incoming.slot].as_mut() else {
            return Cancelled::Kept;
        };
        if !incoming.seated {
            room.joining -= 1;
        }
        let name = room.name.clone();
        if self.drop_if_unused(incoming.slot) {
            Cancelled::Released(name)
        } else {
            Cancelled::Kept
        }
    }

    /// Takes `peer`'s seat here as the backend queues its claim, under the same lock, so
    /// that what this relay publishes before the claim reaches the session on the relay it
    /// leaves, and what this relay sends after reaches it here: it is a member here from
    /// now on, kept until the session comes. False if no resume waits for it.
    pub fn claim_seat(&mut self, peer: PeerId) -> bool {
        let rules = self.sessions.rules;
        let Some(incoming) = self.incoming.get_mut(&peer).filter(|i| !i.seated) else {
            return false;
        };
        incoming.seated = true;
        let (slot, from, conn) = (incoming.slot, incoming.from, incoming.conn);
        self.moving.insert(
            peer,
            Moving {
                slot,
                from,
                seated: false,
            },
        );
        let detached = Outbox::detached(Retention::new(rules.buffer, rules.frames));
        self.peers.insert(
            peer,
            Member {
                outbox: detached.clone(),
                seat: Seat::Inside(slot),
                session: Some(Box::new(Session {
                    key: None,
                    presence: Presence::Away {
                        generation: 0,
                        received: 0,
                    },
                })),
            },
        );
        if let Some(member) = self.peers.get_mut(&conn) {
            member.seat = Seat::Outside;
        }
        if let Some(room) = self.slots[slot].as_mut() {
            room.joining -= 1;
            room.here.push((peer, detached));
        }
        true
    }

    /// Applies the decision that `peer`'s seat in room `name` moved from relay `from` to
    /// relay `to`, this one being `me`; the room's members are `members`. Nothing changes
    /// for the room: no `left`, no `join`.
    ///
    /// - On `to`, whose seat it is since its claim: messages published from here on that
    ///   are not `from`'s reach it.
    /// - On `from`, nothing more is delivered to the session: an away one leaves at once
    ///   (`Some(transfer)`); one whose connection still looks alive is told to go, and
    ///   leaves when it has ([`Parted::HandedOver`]); one that is not here any more goes
    ///   with nothing, so that `to` is not left waiting.
    ///
    /// Returns the transfer to send, and whether the room is no longer tracked here.
    pub fn apply_handover(
        &mut self,
        name: &RoomName,
        peer: PeerId,
        (from, to, me): (u64, u64, u64),
        members: Vec<PeerId>,
        batch: &mut Batch,
    ) -> (Option<Transfer>, bool) {
        let Some(&slot) = self.names.get(name) else {
            let transfer = (from == me).then(|| Transfer {
                peer,
                to,
                room: name.clone(),
                carried: None,
            });
            return (transfer, false);
        };
        if let Some(room) = self.slots[slot].as_mut() {
            room.events = room.events.wrapping_add(1);
        }
        if to == me {
            if let Some(moving) = self.moving.get_mut(&peer).filter(|m| m.slot == slot) {
                moving.seated = true;
                if let Some(room) = self.slots[slot].as_mut() {
                    room.members = members;
                    if !room.members.contains(&peer) {
                        room.members.push(peer);
                    }
                }
            }
            return (None, false);
        }
        if from != me {
            return (None, false);
        }
        let nothing = Transfer {
            peer,
            to,
            room: name.clone(),
            carried: None,
        };
        let Some(room) = self.slots[slot].as_mut() else {
            return (Some(nothing), false);
        };
        room.here.retain(|(p, _)| *p != peer);
        let Some(member) = self
            .peers
            .get_mut(&peer)
            .filter(|m| matches!(m.seat, Seat::Inside(s) if s == slot))
        else {
            return (Some(nothing), self.drop_if_unused(slot));
        };
        let Some(session) = member.session.as_deref_mut() else {
            // Not resumable (a claim.lua would not have matched a key): it goes.
            self.forget(peer);
            return (Some(nothing), self.drop_if_unused(slot));
        };
        match session.presence {
            Presence::Away { received, .. } => {
                let carried = member.outbox.take_retention().map(|r| (received, r));
                self.peers.remove(&peer);
                let transfer = Transfer { carried, ..nothing };
                (Some(transfer), self.drop_if_unused(slot))
            }
            Presence::Here => {
                // Half-open: the connection here is told to go; its seat (and room slot)
                // stay until it has, so that what it still reads is relayed and counted.
                session.presence = Presence::Leaving { to };
                room.joining += 1;
                let (code, reason) = TAKEN_OVER;
                if let Some(code) = CustomCode::new(code) {
                    let _ = member
                        .outbox
                        .push_end(CloseCode::Custom(code), reason, batch);
                }
                (None, false)
            }
            Presence::Leaving { .. } => (None, false),
        }
    }

    /// Relay `from` applied the move of `peer`'s seat away from it: what it publishes from
    /// here on reaches the session here.
    pub fn apply_fence(&mut self, peer: PeerId, from: u64) {
        if self
            .moving
            .get(&peer)
            .is_some_and(|m| m.from == from && m.seated)
        {
            self.moving.remove(&peer);
        }
    }

    /// Applies what `peer`'s session carried from the relay it left, for relay `to`, this
    /// one being `me`: the resume it waits for goes on (`resumed`, then every frame its
    /// client missed, from the other relay's retention then this one's), or fails. An
    /// `incomplete` one (the relay it left died: `carried` is zeros) goes on with both
    /// counts from zero and what was kept here since the claim.
    pub fn apply_transfer(
        &mut self,
        peer: PeerId,
        (to, me): (u64, u64),
        carried: Option<(u64, u64, Vec<&str>)>,
        incomplete: bool,
        batch: &mut Batch,
    ) -> Option<Arrival> {
        if to != me || !self.incoming.get(&peer).is_some_and(|i| i.seated) {
            return None;
        }
        let incoming = self.incoming.remove(&peer)?;
        let rules = self.sessions.rules;
        let member = self.peers.get_mut(&peer)?;
        let Seat::Inside(slot) = member.seat else {
            return None;
        };
        let name = self.slots[slot].as_ref()?.name.clone();
        let here = member.outbox.take_retention();
        let resumed = match (carried, here) {
            (Some((received, sent, frames)), Some(mut here)) => {
                let before = sent.saturating_sub(frames.len() as u64);
                let mut retention = Retention::continuing(before, rules.buffer, rules.frames);
                let fits = retention.keep_all(frames.iter().map(|f| f.as_bytes()))
                    && retention.keep_all(here.frames());
                fits.then_some((received, retention))
            }
            _ => None,
        };
        let granted = member.session.as_deref_mut().and_then(|session| {
            session.presence = Presence::Here;
            self.sessions.grant(session)
        });
        let (Some((received, retention)), Some(resume)) = (resumed, granted) else {
            let _ = incoming.reply.send(Err(RoomError::ResumeLost));
            let room = self.forget(peer)?;
            return Some(Arrival::Failed(peer, room));
        };
        note_grant(&mut self.news, peer, &name, member.session.as_deref());
        let event = encode(&Event::<()>::Resumed {
            room: name.clone(),
            peer,
            received,
            resume,
            incomplete,
        });
        let client_received = if incomplete { 0 } else { incoming.received };
        let _ = incoming
            .outbox
            .adopt(retention, client_received, &event, batch);
        member.outbox = incoming.outbox.clone();
        self.peers.remove(&incoming.conn);
        if let Some(room) = self.slots[slot].as_mut() {
            if let Some(entry) = room.here.iter_mut().find(|(p, _)| *p == peer) {
                entry.1 = incoming.outbox.clone();
            }
        }
        let back = Event::<()>::Back {
            room: name.clone(),
            peer,
        };
        self.tell_resumable(slot, peer, &back, batch);
        let _ = incoming.reply.send(Ok((name, received)));
        if incomplete {
            tracing::warn!(%peer, "resumed a session whose relay died; frames may be missing");
        } else {
            tracing::info!(%peer, "resumed a session from another relay");
        }
        Some(Arrival::Resumed)
    }

    /// Pushes `event` (`away` or `back` of `except`) to the resumable members here in room
    /// `slot` but `except`; for a backend that shares sessions, notes it for those on
    /// other relays too ([`Core::take_notices`]).
    fn tell_resumable(
        &mut self,
        slot: usize,
        except: PeerId,
        event: &Event<()>,
        batch: &mut Batch,
    ) {
        let Some(room) = self.room(slot) else { return };
        let frame = encode(event);
        let mut overflowed = Vec::new();
        for (peer, outbox) in &room.here {
            let resumable = self.peers.get(peer).is_some_and(|m| m.session.is_some());
            if *peer != except && resumable && outbox.push_text(&frame, batch) == Push::Overflowed {
                overflowed.push(*peer);
            }
        }
        if self.news.is_some() && room.members.len() > room.here.len() {
            self.notices.push((room.name.clone(), except, frame));
        }
        self.evict(overflowed);
    }

    /// `away` and `back` events (their room, whom they are about, the frame) for the
    /// resumable members on other relays, since the last call.
    pub fn take_notices(&mut self) -> Vec<(RoomName, PeerId, String)> {
        std::mem::take(&mut self.notices)
    }

    /// Applies the decision that `peer` left room `name`: the members here get `left`. A
    /// member of this relay still inside did not ask to go: it is told so by a close
    /// frame ([`SEAT_LOST`]). Returns true when the room is no longer tracked here.
    pub fn apply_left(&mut self, name: &RoomName, peer: PeerId, batch: &mut Batch) -> bool {
        let Some(&slot) = self.names.get(name) else {
            return false;
        };
        let Some(room) = self.slots[slot].as_mut() else {
            return false;
        };
        room.events = room.events.wrapping_add(1);
        let known = room.members.len();
        room.members.retain(|p| *p != peer);
        if room.members.len() == known {
            // Not a member as far as this relay knows: nothing to tell anyone.
            return false;
        }
        room.here.retain(|(p, _)| *p != peer);
        let mut overflowed = Vec::new();
        let left = encode(&Event::<()>::Left {
            room: name.clone(),
            peer,
        });
        push_all(&room.here, None, &left, batch, &mut overflowed);
        if let Some(member) = self.peers.get_mut(&peer) {
            if matches!(member.seat, Seat::Inside(inside) if inside == slot) {
                member.seat = Seat::Outside;
                let (code, reason) = SEAT_LOST;
                let _ = member.outbox.push_end(code, reason, batch);
            }
        }
        self.evict(overflowed);
        self.drop_if_unused(slot)
    }

    /// Delivers a message's `frame` from `from` to the members here it is for: the rest of
    /// its room, or only `to`. The hot path: inlined into each backend's `relay`.
    #[inline]
    pub fn relay(
        &mut self,
        from: PeerId,
        to: Option<PeerId>,
        frame: &str,
        batch: &mut Batch,
    ) -> Result<Fanout<'_>, RoomError> {
        let slot = match self.peers.get(&from).map(|m| &m.seat) {
            Some(Seat::Inside(slot)) => *slot,
            _ => return Err(RoomError::NotInRoom),
        };
        let room = self.room(slot).ok_or(RoomError::NotInRoom)?;
        let mut overflowed = Vec::new();
        let elsewhere = match to {
            Some(to) if to == from => return Err(RoomError::UnknownPeer(to)),
            Some(to) => match room.here.iter().find(|(p, _)| *p == to) {
                Some(addressee) => {
                    metrics::count(Counter::Relayed);
                    push_all(
                        std::slice::from_ref(addressee),
                        None,
                        frame,
                        batch,
                        &mut overflowed,
                    );
                    false
                }
                None if room.members.contains(&to) => true,
                None => return Err(RoomError::UnknownPeer(to)),
            },
            None => {
                let sent = push_all(&room.here, Some(from), frame, batch, &mut overflowed);
                metrics::add(Counter::Relayed, sent);
                room.members.len() > room.here.len()
            }
        };
        self.evict(overflowed);
        // Eviction takes members out of delivery but keeps the room: it is still there.
        match self.room(slot) {
            Some(room) if elsewhere => Ok(Fanout::Elsewhere(&room.name)),
            _ => Ok(Fanout::Done),
        }
    }

    /// Delivers a message relay `relay` published (this one being `me`): to `to` if it is
    /// here, or to every member here but `from`. A message of this relay's own was
    /// delivered here when it was sent. A session whose seat is moving here gets what it
    /// did not get on the relay it leaves ([`Moving`]).
    pub fn deliver(
        &mut self,
        name: &RoomName,
        (relay, me): (u64, u64),
        from: Option<PeerId>,
        to: Option<PeerId>,
        frame: &str,
        batch: &mut Batch,
    ) {
        self.deliver_to(name, (relay, me), (from, to), frame, false, batch);
    }

    /// Delivers an `away` or `back` event relay `relay` published about `peer` to the
    /// resumable members here (as [`Core::deliver`] delivers a message).
    pub fn deliver_notice(
        &mut self,
        name: &RoomName,
        (relay, me): (u64, u64),
        peer: PeerId,
        frame: &str,
        batch: &mut Batch,
    ) {
        self.deliver_to(name, (relay, me), (Some(peer), None), frame, true, batch);
    }

    #[inline]
    fn deliver_to(
        &mut self,
        name: &RoomName,
        (relay, me): (u64, u64),
        (from, to): (Option<PeerId>, Option<PeerId>),
        frame: &str,
        resumable_only: bool,
        batch: &mut Batch,
    ) {
        if relay == me {
            return;
        }
        let Some(&slot) = self.names.get(name) else {
            return;
        };
        let Some(room) = self.room(slot) else {
            return;
        };
        let mut overflowed = Vec::new();
        let skip: Vec<PeerId> = if self.moving.is_empty() {
            Vec::new()
        } else {
            self.moving
                .iter()
                .filter(|(_, m)| m.slot == slot && (!m.seated || m.from == relay))
                .map(|(p, _)| *p)
                .collect()
        };
        if !skip.is_empty() || resumable_only {
            let resumable = |p: &PeerId| self.peers.get(p).is_some_and(|m| m.session.is_some());
            let sent = room
                .here
                .iter()
                .filter(|(p, _)| match to {
                    Some(to) => *p == to,
                    None => Some(*p) != from,
                })
                .filter(|(p, _)| !skip.contains(p) && (!resumable_only || resumable(p)))
                .map(|entry| {
                    push_all(
                        std::slice::from_ref(entry),
                        None,
                        frame,
                        batch,
                        &mut overflowed,
                    )
                })
                .sum();
            if !resumable_only {
                metrics::add(Counter::Relayed, sent);
            }
            self.evict(overflowed);
            return;
        }
        let sent = match to {
            Some(to) => match room.here.iter().find(|(p, _)| *p == to) {
                Some(addressee) => push_all(
                    std::slice::from_ref(addressee),
                    None,
                    frame,
                    batch,
                    &mut overflowed,
                ),
                None => 0,
            },
            None => push_all(&room.here, from, frame, batch, &mut overflowed),
        };
        metrics::add(Counter::Relayed, sent);
        self.evict(overflowed);
    }

    /// Members taken out of delivery since the last call, and their rooms: the backend
    /// decides each one's departure.
    pub fn take_evicted(&mut self) -> Vec<(PeerId, RoomName)> {
        std::mem::take(&mut self.evicted)
    }

    /// Sets room `name`'s members to what the backend read, telling the members here who
    /// left and who came meanwhile; members of this relay are its own to know. Returns
    /// false, changing nothing, when decisions were applied since `seen` events.
    pub fn catch_up(
        &mut self,
        name: &RoomName,
        inside: &[PeerId],
        seen: u32,
        batch: &mut Batch,
    ) -> bool {
        let Some(&slot) = self.names.get(name) else {
            return true;
        };
        let events = self.room(slot).map_or(seen, |room| room.events);
        if events != seen {
            return false;
        }
        let here = |p: &PeerId| self.peers.contains_key(p);
        let members = self.members(name);
        let gone: Vec<PeerId> = members
            .iter()
            .filter(|p| !inside.contains(p) && !here(p))
            .copied()
            .collect();
        let came: Vec<PeerId> = inside
            .iter()
            .filter(|p| !members.contains(p) && !here(p))
            .copied()
            .collect();
        for peer in gone {
            self.apply_left(name, peer, batch);
        }
        for peer in came {
            self.apply_join(name, peer, None, batch);
        }
        true
    }

    /// The decisions applied so far in room `name`.
    pub fn events(&self, name: &RoomName) -> Option<u32> {
        let slot = *self.names.get(name)?;
        self.room(slot).map(|room| room.events)
    }

    pub fn stats(&self) -> Stats {
        let rooms = self.slots.iter().flatten().filter(|r| !r.here.is_empty());
        let away = self
            .peers
            .values()
            .filter(|m| {
                m.session
                    .as_ref()
                    .is_some_and(|s| matches!(s.presence, Presence::Away { .. }))
            })
            .count();
        Stats {
            connections: self.peers.len() - away,
            rooms: rooms.clone().count(),
            members: rooms.map(|r| r.here.len()).sum(),
            away,
            retained_bytes: self.peers.values().map(|m| m.outbox.retained_bytes()).sum(),
        }
    }

    fn room(&self, slot: usize) -> Option<&Room> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// The slot of room `name`, and the room, made (empty) if it is not tracked.
    fn slot_for(&mut self, name: &RoomName) -> (usize, &mut Room) {
        let slot = match self.names.get(name) {
            Some(&slot) => slot,
            None => {
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.slots.len() - 1
                });
                self.names.insert(name.clone(), slot);
                slot
            }
        };
        let room = self.slots[slot].get_or_insert_with(|| Room {
            name: name.clone(),
            members: Vec::new(),
            here: Vec::new(),
            joining: 0,
            events: 0,
        });
        (slot, room)
    }

    /// Stops tracking the room in `slot` if nobody here is in it or on the way: true then.
    fn drop_if_unused(&mut self, slot: usize) -> bool {
        let Some(room) = self.slots[slot].as_ref() else {
            return false;
        };
        if !room.here.is_empty() || room.joining > 0 {
            return false;
        }
        self.names.remove(&room.name);
        self.slots[slot] = None;
        self.free.push(slot);
        true
    }

    /// Takes members whose outbox overflowed out of delivery; their departures wait in
    /// `evicted` for the backend.
    fn evict(&mut self, overflowed: Vec<PeerId>) {
        for peer in overflowed {
            let session = self.peers.get_mut(&peer).and_then(|m| m.session.take());
            match &session {
                Some(session) if session.key.is_some() => {
                    tracing::warn!(%peer, "session buffer full; the session cannot resume");
                    self.sessions.ended(peer, session.key, Ending::Lost);
                    let how = session.key.map(|k| (Ending::Lost, Digest::of(&k)));
                    note_end(&mut self.news, peer, how);
                }
                _ => tracing::warn!(%peer, "outbox full; dropping a client that does not read"),
            }
            if let Some(room) = self.depart(peer) {
                self.evicted.push((peer, room));
            }
            if session.is_some_and(|s| matches!(s.presence, Presence::Away { .. })) {
                // Nobody's connection holds it any more.
                self.peers.remove(&peer);
            }
        }
    }
}

/// Notes that `peer`'s session in `room` has a new key, for a backend that shares sessions.
fn note_grant(
    news: &mut Option<Vec<SessionNews>>,
    peer: PeerId,
    room: &RoomName,
    session: Option<&Session>,
) {
    if let (Some(news), Some(key)) = (news, session.and_then(|s| s.key)) {
        news.push(SessionNews::Granted {
            peer,
            room: room.clone(),
            digest: Digest::of(&key),
        });
    }
}

/// Notes that `peer`'s session ended (`how`, with its last key's digest), for a backend
/// that shares sessions.
fn note_end(news: &mut Option<Vec<SessionNews>>, peer: PeerId, how: Option<(Ending, Digest)>) {
    if let (Some(news), Some(how)) = (news, how) {
        news.push(SessionNews::Ended {
            peer,
            how: Some(how),
        });
    }
}

/// Pushes `frame` to each of `here` but `except`; notes those whose outbox overflowed.
/// Returns how many it was pushed to.
#[inline]
fn push_all(
    here: &[(PeerId, Outbox)],
    except: Option<PeerId>,
    frame: &str,
    batch: &mut Batch,
    overflowed: &mut Vec<PeerId>,
) -> u64 {
    let mut sent = 0;
    for (peer, outbox) in here {
        if Some(*peer) == except {
            continue;
        }
        sent += 1;
        if outbox.push_text(frame, batch) == Push::Overflowed {
            overflowed.push(*peer);
        }
    }
    sent
}

/// How long a resume waits for the old connection it told to go (the half-open case).
const TAKEOVER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// [`Core::resume`] under `core`'s lock (then `settle`, the backend's follow-up, under the
/// same lock), waiting (boundedly) for an old connection that still looked alive to go
/// first. The same for every backend: a session lives on the relay
/// that holds its connection.
pub(crate) async fn resume(
    core: &std::sync::Mutex<Core>,
    conn: PeerId,
    outbox: &Outbox,
    claim: &Claim<'_>,
    settle: &(dyn Fn(&mut Core) + Sync),
) -> Result<(RoomName, u64), RoomError> {
    let deadline = Instant::now() + TAKEOVER_PATIENCE;
    loop {
        let mut batch = Batch::new();
        let step = {
            let mut core = crate::outbox::lock(core);
            let step = core.resume(conn, outbox, claim, &mut batch);
            // Under the same lock: what the resume tells other relays follows it in order.
            settle(&mut core);
            step
        };
        batch.flush();
        match step? {
            Some(resumed) => return Ok(resumed),
            None if Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            None => return Err(RoomError::ResumeRefused),
        }
    }
}
