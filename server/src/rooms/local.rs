//! The in-process backend: the core behind one mutex, deciding membership as it applies it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use signalroom_protocol::{PeerId, RoomName};

use crate::ice::IceServers;
use crate::json::RawJson;
use crate::outbox::{lock, Batch, Outbox};
use crate::rooms::core::{self, Core, Fanout, Parted};
use crate::rooms::{Away, Claim, JoinOutcome, Parting, Resumption, RoomError, Rooms, Stats};
use crate::spare;

/// Rooms kept in this process.
///
/// The mutex is a std one, held only for map updates and queue pushes and never across an
/// `.await`; every check and update of a room happens under it, which is what keeps
/// capacity exact under concurrent joins.
#[derive(Clone)]
pub struct LocalRooms {
    shared: Arc<Shared>,
}

struct Shared {
    /// Guards every room and connection of the relay. Lock order: this, then an outbox's
    /// queue.
    core: Mutex<Core>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    capacity: usize,
    max_rooms: usize,
    ice_servers: IceServers,
}

impl LocalRooms {
    /// At most `max_rooms` rooms of `capacity` members, handing everyone who enters one
    /// the `ice_servers` for it (with a TURN credential of its own, if they mint them).
    /// Resumable connections resume by `resumption`.
    pub fn new(
        capacity: usize,
        max_rooms: usize,
        ice_servers: IceServers,
        resumption: Resumption,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                core: Mutex::new(Core::new(resumption)),
                stopping: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                capacity,
                max_rooms,
                ice_servers,
            }),
        }
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.shared.core)
    }
}

/// Decides the departures of members evicted meanwhile, as announced ones; each may evict
/// more.
fn settle(core: &mut Core, batch: &mut Batch) {
    loop {
        let evicted = core.take_evicted();
        if evicted.is_empty() {
            return;
        }
        for (peer, room) in evicted {
            core.apply_left(&room, peer, batch);
        }
    }
}

impl Rooms for LocalRooms {
    async fn connect(&self, outbox: Outbox, resumable: bool) -> Result<PeerId, RoomError> {
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = PeerId::new(n).map_err(|_| RoomError::Unavailable)?;
        self.core().connect(peer, outbox, resumable);
        Ok(peer)
    }

    async fn join(
        &self,
        peer: PeerId,
        room: RoomName,
        batch: &mut Batch,
    ) -> Result<JoinOutcome, RoomError> {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(RoomError::Unavailable);
        }
        let ice_servers = self.shared.ice_servers.for_peer(peer, SystemTime::now());
        let mut core = self.core();
        let rooms_before = core.rooms();
        let entry = core.begin_join(peer, &room, ice_servers)?;
        if entry.first && rooms_before >= self.shared.max_rooms {
            core.abandon_join(peer, None, batch);
            return Err(RoomError::TooManyRooms(self.shared.max_rooms));
        }
        if entry.known >= self.shared.capacity {
            core.abandon_join(peer, Some(&room), batch);
            return Ok(JoinOutcome::Full);
        }
        let outcome = core.apply_join(&room, peer, None, batch);
        settle(&mut core, batch);
        outcome.ok_or(RoomError::NotInRoom)
    }

    async fn leave(&self, peer: PeerId, batch: &mut Batch) -> Result<RoomName, RoomError> {
        let mut core = self.core();
        let room = core.depart(peer).ok_or(RoomError::NotInRoom)?;
        core.apply_left(&room, peer, batch);
        settle(&mut core, batch);
        Ok(room)
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
        let relayed = {
            let mut core = self.core();
            // Every member is here: nothing is ever for elsewhere.
            let relayed = core.relay(from, to, &frame, batch).map(|_: Fanout| ());
            settle(&mut core, batch);
            relayed
        };
        spare::give(frame.into_bytes());
        relayed
    }

    async fn disconnect(
        &self,
        peer: PeerId,
        outbox: &Outbox,
        parting: Parting,
        batch: &mut Batch,
    ) -> Option<Away> {
        // While the relay stops, every member is closing: no session can wait, and nobody
        // is left to tell.
        let stopping = self.shared.stopping.load(Ordering::Relaxed);
        let parting = if stopping { Parting::Closed } else { parting };
        let mut core = self.core();
        match core.part(peer, outbox, parting, batch) {
            Parted::Away(away) => {
                settle(&mut core, batch);
                Some(away)
            }
            Parted::Gone(Some(room)) if !stopping => {
                core.apply_left(&room, peer, batch);
                settle(&mut core, batch);
                None
            }
            // Sessions do not leave a relay of its own.
            Parted::Gone(_) | Parted::NotOwner | Parted::HandedOver(..) => None,
        }
    }

    async fn expire(&self, peer: PeerId, generation: u64, batch: &mut Batch) {
        let mut core = self.core();
        if let Some(room) = core.expire(peer, generation) {
            core.apply_left(&room, peer, batch);
            settle(&mut core, batch);
        }
    }

    async fn resume(
        &self,
        conn: PeerId,
        outbox: &Outbox,
        claim: Claim<'_>,
        _batch: &mut Batch,
    ) -> Result<(RoomName, u64), RoomError> {
        core::resume(&self.shared.core, conn, outbox, &claim, &|_| {}).await
    }

    async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }

    fn stats(&self) -> Stats {
        self.core().stats()
    }
}
