//! Rooms shared by every relay on one Redis server or Redis Cluster ([`RedisRooms`]).
//!
//! Redis holds who is in each room and *decides* membership: a join runs `join.lua`, which
//! checks the room's size, adds the member and publishes `J` with the members it found in
//! one atomic step, so capacity is exact however many relays race; a departure runs
//! `leave.lua`, which publishes `L`. Each room has a pub/sub channel, to which every relay
//! with a member in the room subscribes, and every relay *applies* what the channel brings
//! (its own joins and departures included) to its core, in the channel's order: the channel
//! is the room's one sequencer, as the mutex is for `LocalRooms`.
//!
//! A message goes to the members on the sender's relay at once and is published (as `M`,
//! already framed) only when the room has members elsewhere, so a room on one relay never
//! waits for Redis.
//!
//! The parts, each in its own module: `link` the connection (and the one handle that may
//! write), `writer` the ordered queue toward Redis and its task, `bus` what crosses Redis
//! (keys, channels, events, registry entries), `channels` the subscriber and the reader,
//! `registry` liveness, heartbeat and sweep, `recovery` what follows a lost connection or
//! lost data, `shared` the state they work on.

mod bus;
mod channels;
mod handover;
mod link;
mod recovery;
mod registry;
mod shared;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use redis::Value;
use signalroom_protocol::{PeerId, RoomName};
use tokio::sync::{mpsc, Notify};

pub use link::RedisTopology;

use self::bus::{BusEvent, PEER_IDS_KEY, RELAYS_TAG, RELAY_IDS_KEY};
use self::link::Shape;
use self::shared::{patiently, registry, Guarded, Shared, Tasks, JOIN, RESERVE};
use self::writer::Queue;
use crate::ice::IceServers;
use crate::json::RawJson;
use crate::outbox::{lock, Batch, Outbox};
use crate::rooms::core::{self, Core, Fanout, Parted};
use crate::rooms::{Away, Claim, JoinOutcome, Parting, Resumption, RoomError, Rooms, Stats};

/// Peer ids reserved from Redis at a time: one round trip per this many connections.
const ID_BLOCK: u64 = 64;
/// How long a connection waits for its id while Redis does not answer.
const REDIS_PATIENCE: Duration = Duration::from_secs(2);
/// How long shutdown waits for the departures it queued to reach Redis.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The in-Redis backend. Cloning is cheap.
#[derive(Clone)]
pub struct RedisRooms {
    shared: Arc<Shared>,
}

impl RedisRooms {
    /// Connects to Redis, registers this relay and starts its tasks: the writer, the
    /// subscriber, the channel reader and the heartbeat (with the sweep and recovery).
    pub async fn connect(
        topology: &RedisTopology,
        capacity: usize,
        max_rooms: usize,
        ice_servers: IceServers,
        relay_timeout: Duration,
        resumption: Resumption,
    ) -> redis::RedisResult<Self> {
        let (pushes, received) = mpsc::unbounded_channel();
        let (writer, reader) = link::connect(topology, pushes).await?;
        let (queue, queued) = Queue::new();
        let (subscriptions, asked) = mpsc::unbounded_channel();
        let mut shared = Shared {
            relay: 0,
            capacity,
            max_rooms,
            ice_servers,
            relay_timeout,
            core: Mutex::new(Core::sharing(resumption)),
            queue: Arc::new(queue),
            reader: reader.clone(),
            subscriptions,
            ids: Mutex::new(0..0),
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            wake: Notify::new(),
            tasks: Mutex::new(None),
        };
        // The relay's id comes first, before the writer task takes the writer.
        let mut writer = writer;
        let relay: u64 = writer
            .query(&Shared::relays_script(
                RESERVE,
                &[RELAY_IDS_KEY],
                &["1".into()],
            ))
            .await?;
        shared.relay = relay;
        let shared = Arc::new(shared);
        let writer = tokio::spawn(writer::run(writer, shared.queue.clone(), queued));
        let subscriber = tokio::spawn(channels::subscribe(reader, asked));
        let reader = tokio::spawn(channels::read(shared.clone(), received));
        let epoch = registry::register(&shared).await.map_err(|error| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "could not register",
                error.to_string(),
            ))
        })?;
        let keep_alive = tokio::spawn(registry::keep_alive(shared.clone(), epoch));
        *lock(&shared.tasks) = Some(Tasks {
            keep_alive,
            reader,
            subscriber,
            writer,
        });
        tracing::info!(relay, "sharing rooms through Redis");
        Ok(Self { shared })
    }

    /// Takes the next peer id, reserving a block from Redis when none is left.
    async fn next_id(&self) -> Result<PeerId, RoomError> {
        if let Some(n) = lock(&self.shared.ids).next() {
            return PeerId::new(n).map_err(|_| RoomError::Unavailable);
        }
        let shared = &self.shared;
        let cmd = Shared::relays_script(RESERVE, &[PEER_IDS_KEY], &[ID_BLOCK.to_string()]);
        let reserved = tokio::time::timeout(REDIS_PATIENCE, shared.queue.call(cmd, RELAYS_TAG));
        let Ok(Ok(Value::Int(last))) = reserved.await else {
            return Err(RoomError::Unavailable);
        };
        let last = u64::try_from(last).map_err(|_| RoomError::Unavailable)?;
        let mut ids = lock(&shared.ids);
        *ids = last + 1 - ID_BLOCK..last + 1;
        let n = ids.next().ok_or(RoomError::Unavailable)?;
        PeerId::new(n).map_err(|_| RoomError::Unavailable)
    }

    /// Runs the join script until it decides (or Redis's hold outlasts the patience).
    async fn decide_join(
        &self,
        peer: PeerId,
        room: &RoomName,
        may_create: bool,
    ) -> Result<Guarded, RoomError> {
        let shared = &self.shared;
        // Into the registry before the room: a relay that dies in between leaves an entry
        // whose leave does nothing, never a member nobody would take out.
        shared.queue.send(registry(shared.relay, peer, room, true));
        let args = [
            peer.to_string(),
            shared.relay.to_string(),
            shared.capacity.to_string(),
            shared.publish_command().to_owned(),
            String::from(if may_create { "1" } else { "0" }),
        ];
        // On one server the join is guarded by the epoch and the hold (join.lua); in a
        // cluster they sit in another slot than the room.
        let guard: &[&str] = if shared.reader.cluster() {
            &[]
        } else {
            &[bus::EPOCH_KEY, bus::HOLD_KEY]
        };
        patiently(shared, || {
            let (cmd, tag) = shared.room_script(JOIN, room, guard, &args);
            shared.queue.request(cmd, &tag)
        })
        .await
    }
}

impl Rooms for RedisRooms {
    async fn connect(&self, outbox: Outbox, resumable: bool) -> Result<PeerId, RoomError> {
        let peer = self.next_id().await?;
        self.shared.core().connect(peer, outbox, resumable);
        Ok(peer)
    }

    async fn join(
        &self,
        peer: PeerId,
        room: RoomName,
        batch: &mut Batch,
    ) -> Result<JoinOutcome, RoomError> {
        let shared = &self.shared;
        if shared.closing() {
            return Err(RoomError::Unavailable);
        }
        let ice_servers = shared.ice_servers.for_peer(peer, SystemTime::now());
        let (subscribed, may_create) = {
            let mut core = shared.core();
            let rooms_before = core.rooms();
            let entry = core.begin_join(peer, &room, ice_servers)?;
            // The limit counts new rooms: a room that exists elsewhere may still be joined.
            let may_create = !entry.first || rooms_before < shared.max_rooms;
            // Subscribed before joining, so the join's own `J` and all that follows
            // arrive; asked for under the lock, in order with unsubscribes.
            let subscribed = shared.subscribed(&room, entry.first);
            (subscribed, may_create)
        };
        let subscribed = subscribed.await;
        let decided = if subscribed {
            // Bounded: a join queued behind an outage is answered `unavailable`; if Redis
            // takes it later, the departure queued below follows it.
            let patience = shared.hold_patience() + REDIS_PATIENCE;
            tokio::time::timeout(patience, self.decide_join(peer, &room, may_create))
                .await
                .unwrap_or(Err(RoomError::Unavailable))
        } else {
            shared.queue.set_reachable(false);
            Err(RoomError::Unavailable)
        };
        let refused = match decided {
            Ok(Guarded::Done(Value::Array(before))) => {
                // The answer goes out when the `J` comes back through the channel.
                return Ok(if before.is_empty() {
                    JoinOutcome::Created
                } else {
                    JoinOutcome::Joined(before.len() + 1)
                });
            }
            Ok(Guarded::Refused(why)) if why == "full" => Ok(JoinOutcome::Full),
            Ok(Guarded::Refused(why)) if why == "many" => {
                Err(RoomError::TooManyRooms(shared.max_rooms))
            }
            Ok(_) => Err(RoomError::Unavailable),
            Err(error) => Err(error),
        };
        let mut core = shared.core();
        let full = matches!(refused, Ok(JoinOutcome::Full)).then_some(&room);
        if core.abandon_join(peer, full, batch) {
            shared.unsubscribe(&room);
        }
        // Out of the registry, and out of the room should a join that timed out reach
        // Redis after all: queued after it, so it follows.
        shared.queue_departure(peer, &room);
        refused
    }

    async fn leave(&self, peer: PeerId, _batch: &mut Batch) -> Result<RoomName, RoomError> {
        let mut core = self.shared.core();
        let room = core.depart(peer).ok_or(RoomError::NotInRoom)?;
        self.shared.departed(&mut core, peer, &room);
        Ok(room)
    }

    async fn relay(
        &self,
        from: PeerId,
        to: Option<PeerId>,
        data: RawJson<'_>,
        batch: &mut Batch,
    ) -> Result<(), RoomError> {
        let shared = &self.shared;
        // The frame as members receive it, written once, after the event's head in case
        // it goes to Redis too.
        let mut event = String::with_capacity(data.get().len() + 96);
        BusEvent::message_head(&mut event, shared.relay, from, to);
        let head = event.len();
        signalroom_protocol::write_message_json(&mut event, from, data.get());
        let mut core = shared.core();
        let channel = core
            .relay(from, to, &event[head..], batch)
            .map(|fanout| match fanout {
                Fanout::Done => None,
                Fanout::Elsewhere(room) => Some(bus::channel(room)),
            });
        shared.settle(&mut core);
        // Queued under the lock: a session's seat moving to another relay (`H`) is
        // applied under it too, so what this relay delivered to the session before comes
        // before its fence (`F`) in the room's channel, and what it did not, after.
        match channel? {
            None => Ok(()),
            Some(channel) => shared.queue.publish(channel, event),
        }
    }

    async fn disconnect(
        &self,
        peer: PeerId,
        outbox: &Outbox,
        parting: Parting,
        batch: &mut Batch,
    ) -> Option<Away> {
        let parting = if self.shared.stopping() {
            Parting::Closed
        } else {
            parting
        };
        let mut core = self.shared.core();
        match core.part(peer, outbox, parting, batch) {
            Parted::Away(away) => {
                self.shared.settle(&mut core);
                Some(away)
            }
            Parted::Gone(Some(room)) => {
                self.shared.departed(&mut core, peer, &room);
                None
            }
            Parted::HandedOver(transfer, released) => {
                let room = transfer.room.clone();
                self.shared.send_transfer(transfer);
                if released {
                    self.shared.unsubscribe(&room);
                }
                None
            }
            Parted::Gone(None) | Parted::NotOwner => None,
        }
    }

    async fn expire(&self, peer: PeerId, generation: u64, _batch: &mut Batch) {
        let mut core = self.shared.core();
        if let Some(room) = core.expire(peer, generation) {
            self.shared.departed(&mut core, peer, &room);
        }
        self.shared.settle(&mut core);
    }

    async fn resume(
        &self,
        conn: PeerId,
        outbox: &Outbox,
        claim: Claim<'_>,
        _batch: &mut Batch,
    ) -> Result<(RoomName, u64), RoomError> {
        let shared = &self.shared;
        let here = shared.core().holds(claim.peer);
        if here {
            let settle = |core: &mut Core| shared.settle(core);
            core::resume(&shared.core, conn, outbox, &claim, &settle).await
        } else {
            let resumed = handover::take_over(shared, conn, outbox, &claim).await;
            shared.settle(&mut shared.core());
            resumed
        }
    }

    /// With resumption on: refuses joins and resumes from now on, so that every session
    /// of this relay can go to another.
    fn drain(&self) -> bool {
        let on = self.shared.core().rules().on();
        if on {
            self.shared.draining.store(true, Ordering::Relaxed);
        }
        on
    }

    /// Refuses joins, takes every member of this relay out of its room (the members
    /// elsewhere get `left` at once), deregisters the relay, waits (boundedly) for all of
    /// that to reach Redis, then stops the tasks: heartbeat, reader, subscriber, writer.
    async fn shutdown(&self) {
        let shared = &self.shared;
        if shared.stopping.swap(true, Ordering::Relaxed) {
            return;
        }
        {
            let mut core = shared.core();
            let inside: Vec<(PeerId, RoomName)> =
                core.inside().map(|(p, r)| (p, r.clone())).collect();
            for (peer, room) in inside {
                core.depart(peer);
                shared.queue_departure(peer, &room);
            }
        }
        registry::deregister(shared);
        if tokio::time::timeout(SHUTDOWN_FLUSH, shared.queue.flush())
            .await
            .is_err()
        {
            tracing::warn!("Redis did not take this relay's departures within {SHUTDOWN_FLUSH:?}");
        }
        let tasks = lock(&shared.tasks).take();
        if let Some(tasks) = tasks {
            for task in [
                tasks.keep_alive,
                tasks.reader,
                tasks.subscriber,
                tasks.writer,
            ] {
                task.abort();
                let _ = task.await;
            }
        }
        tracing::info!(
            relay = shared.relay,
            "left Redis: members out, relay deregistered"
        );
    }

    fn ready(&self) -> bool {
        self.shared.queue.reachable() && !self.shared.closing()
    }

    fn stats(&self) -> Stats {
        self.shared.core().stats()
    }
}
