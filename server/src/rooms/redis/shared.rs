//! The state every part of the Redis backend works on, and the scripts it runs.
//!
//! **Locks**, each a std mutex never held across an `.await`: `core` guards this relay's
//! view of its rooms and connections; `ids` the block of peer ids reserved and not handed
//! out; `tasks` the backend's tasks until shutdown takes them. None is taken while another
//! is held, except an outbox's queue under `core` (the core pushes frames), and the queue
//! toward Redis, which takes no lock, is sent to under `core`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::{Cmd, Value};
use signalroom_protocol::{PeerId, RoomName};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::bus::{self, BusEvent, Carried, RegistryEntry, SessionRecord, RELAYS_TAG};
use super::link::{Reader, Shape};
use super::writer::{Command, Queue};
use crate::ice::IceServers;
use crate::outbox::lock;
use crate::rooms::core::{Core, SessionNews, Transfer};
use crate::rooms::RoomError;

pub(super) const JOIN: &str = include_str!("scripts/join.lua");
pub(super) const LEAVE: &str = include_str!("scripts/leave.lua");
pub(super) const CLAIM: &str = include_str!("scripts/claim.lua");
pub(super) const FORGET: &str = include_str!("scripts/forget.lua");
pub(super) const REJOIN: &str = include_str!("scripts/rejoin.lua");
pub(super) const RESERVE: &str = include_str!("scripts/reserve.lua");
pub(super) const REGISTER: &str = include_str!("scripts/register.lua");
pub(super) const BEAT: &str = include_str!("scripts/beat.lua");
pub(super) const RECOVER: &str = include_str!("scripts/recover.lua");

/// A change of subscriptions, carried out by one task in the order they were asked for.
pub(super) enum Subscription {
    /// Subscribe to a channel; the outcome goes to the sender, if any.
    Subscribe(String, Option<oneshot::Sender<Result<(), ()>>>),
    Unsubscribe(String),
    /// Answered once every change asked for before is done: a join or a resume into a room
    /// another one just started to track waits for that one's subscribe.
    Sync(oneshot::Sender<()>),
}

/// The backend's tasks, stopped in this order at shutdown.
pub(super) struct Tasks {
    pub keep_alive: JoinHandle<()>,
    pub reader: JoinHandle<()>,
    pub subscriber: JoinHandle<()>,
    pub writer: JoinHandle<()>,
}

pub(super) struct Shared {
    /// This relay's id, from Redis: names its liveness key and its registry.
    pub relay: u64,
    pub capacity: usize,
    pub max_rooms: usize,
    pub ice_servers: IceServers,
    pub relay_timeout: Duration,
    pub core: Mutex<Core>,
    pub queue: Arc<Queue>,
    pub reader: Reader,
    pub subscriptions: mpsc::UnboundedSender<Subscription>,
    /// Peer ids reserved from Redis and not handed out yet.
    pub ids: Mutex<std::ops::Range<u64>>,
    pub stopping: AtomicBool,
    /// The relay is stopping and hands its sessions over first: it takes no joins and no
    /// sessions from other relays.
    pub draining: AtomicBool,
    /// A connection to Redis was lost since the relay last subscribed again, put its
    /// members back and read its rooms again: recovery is due.
    pub lost: AtomicBool,
    /// Wakes the heartbeat early: recovery is due, or a join met data lost.
    pub wake: Notify,
    pub tasks: Mutex<Option<Tasks>>,
}

impl Shared {
    pub fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Whether the relay takes no new members: draining, or stopping.
    pub fn closing(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.stopping()
    }

    /// Notes that recovery is due, and wakes the heartbeat to see to it.
    pub fn recovery_due(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// How long joins and id reservations wait out a hold after Redis lost its data: the
    /// hold lasts one relay timeout.
    pub fn hold_patience(&self) -> Duration {
        self.relay_timeout + Duration::from_secs(2)
    }

    pub fn ttl_ms(&self) -> u64 {
        u64::try_from(self.relay_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// A Lua script on a room's members and channel (then `extra` keys), and the hash
    /// tag they share.
    pub fn room_script(
        &self,
        code: &str,
        room: &RoomName,
        extra: &[&str],
        args: &[String],
    ) -> (Cmd, String) {
        let channel = bus::channel(room);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(code)
            .arg(2 + extra.len())
            .arg(bus::members_key(&channel))
            .arg(&channel)
            .arg(extra)
            .arg(args);
        (cmd, bus::hash_tag(&channel).to_owned())
    }

    /// A Lua script on the relays' own keys (one hash slot).
    pub fn relays_script(code: &str, keys: &[&str], args: &[String]) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(code).arg(keys.len()).arg(keys).arg(args);
        cmd
    }

    pub fn publish_command(&self) -> &'static str {
        self.reader.publish_command()
    }

    /// Queues `peer`'s departure from `room`: out of the room (announced to the members
    /// left) then out of this relay's registry (a relay that dies in between leaves an
    /// entry whose leave does nothing). Called under the `core` lock, together with the
    /// change that took the member out, so no later re-assertion can see it inside.
    pub fn queue_departure(&self, peer: PeerId, room: &RoomName) {
        let args = [peer.to_string(), self.publish_command().to_owned()];
        let (cmd, tag) = self.room_script(LEAVE, room, &[], &args);
        self.queue.send(Command::call(cmd, &tag));
        self.queue.send(registry(self.relay, peer, room, false));
    }

    /// Asks, under the rooms lock, for `room`'s channel to be subscribed: by this caller if
    /// it is the `first` to track the room, or by whoever was. The future says whether it
    /// is, once it is: a join or a resume waits for it, so that its own event comes back.
    pub fn subscribed(
        &self,
        room: &RoomName,
        first: bool,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (reply, replied) = oneshot::channel();
        let (sync, synced) = oneshot::channel();
        let asked = if first {
            Subscription::Subscribe(bus::channel(room), Some(reply))
        } else {
            drop(reply);
            Subscription::Sync(sync)
        };
        let _ = self.subscriptions.send(asked);
        async move {
            if first {
                matches!(replied.await, Ok(Ok(())))
            } else {
                synced.await.is_ok()
            }
        }
    }

    /// Unsubscribes from `room`'s channel (after the core stopped tracking it).
    pub fn unsubscribe(&self, room: &RoomName) {
        let _ = self
            .subscriptions
            .send(Subscription::Unsubscribe(bus::channel(room)));
    }

    /// `peer`, out of delivery in `room`, departs: its departure queued, and the room let
    /// go if nobody here is in it any more. Under the `core` lock.
    pub fn departed(&self, core: &mut Core, peer: PeerId, room: &RoomName) {
        self.queue_departure(peer, room);
        if core.release(room) {
            self.unsubscribe(room);
        }
        self.tell_sessions(core);
    }

    /// Decides the departures of members the core evicted (their outbox overflowed), and
    /// writes what other relays need to know of this relay's sessions.
    pub fn settle(&self, core: &mut Core) {
        for (peer, room) in core.take_evicted() {
            self.departed(core, peer, &room);
        }
        self.tell_sessions(core);
        for (room, peer, frame) in core.take_notices() {
            let mut event = String::with_capacity(frame.len() + 32);
            let _ = write!(event, "N {} {peer} {frame}", self.relay);
            // Like a message: dropped rather than queued past the bound, or to be lost.
            let _ = self.queue.publish(bus::channel(&room), event);
        }
    }

    /// Writes what other relays need to know of this relay's sessions: where each lives
    /// and its key's digest, so that a resume may come to any relay; how one ended.
    pub fn tell_sessions(&self, core: &mut Core) {
        let news = core.take_news();
        if news.is_empty() {
            return;
        }
        // An ended session is remembered as long as this relay remembers its own.
        let kept_for = core.rules().window * crate::rooms::sessions::ENDINGS_WINDOWS;
        for news in news {
            let (peer, record) = match news {
                SessionNews::Granted { peer, room, digest } => (
                    peer,
                    Some(SessionRecord::Live {
                        relay: self.relay,
                        digest,
                        room,
                    }),
                ),
                SessionNews::Ended {
                    peer,
                    how: Some((how, digest)),
                } => (peer, Some(SessionRecord::Ended { how, digest })),
                SessionNews::Ended { peer, how: None } => (peer, None),
            };
            let key = bus::session_key(peer);
            let mut cmd = redis::cmd(if record.is_some() { "SET" } else { "DEL" });
            cmd.arg(&key);
            match &record {
                Some(record @ SessionRecord::Ended { .. }) => {
                    let ms = u64::try_from(kept_for.as_millis()).unwrap_or(u64::MAX);
                    cmd.arg(record.encode()).arg("PX").arg(ms.max(1));
                }
                Some(record) => {
                    cmd.arg(record.encode());
                }
                None => {}
            }
            self.queue.send(Command::call(cmd, bus::hash_tag(&key)));
        }
    }

    /// Tells the relay that resumes `peer` that this one delivers nothing more to it.
    pub fn send_fence(&self, room: &RoomName, peer: PeerId) {
        let channel = bus::channel(room);
        let mut fence = String::new();
        BusEvent::Fence {
            peer,
            from: self.relay,
        }
        .encode(&mut fence);
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(&channel).arg(fence);
        self.queue.send(Command::call(cmd, bus::hash_tag(&channel)));
    }

    /// Sends what a session carries to the relay that resumes it, through its room's
    /// channel (after the `H` that moved its seat), and takes it out of this relay's
    /// registry. Never refused: it is one of the commands a member is bounded to.
    pub fn send_transfer(&self, transfer: Transfer) {
        let Transfer {
            peer,
            to,
            room,
            carried,
        } = transfer;
        let mut carried = carried;
        let counts = carried
            .as_ref()
            .map(|(received, retention)| (*received, retention.sent()));
        let frames: Option<Vec<&str>> = carried.as_mut().and_then(|(_, retention)| {
            retention
                .frames()
                .map(|f| std::str::from_utf8(f).ok())
                .collect()
        });
        let carried = match (counts, frames) {
            (Some((received, sent)), Some(frames)) => Some(Carried {
                received,
                sent,
                frames,
            }),
            _ => None,
        };
        let payload = BusEvent::transfer(peer, to, carried);
        let channel = bus::channel(&room);
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(&channel).arg(payload);
        self.queue.send(Command::call(cmd, bus::hash_tag(&channel)));
        self.queue.send(registry(self.relay, peer, &room, false));
    }

    /// The commands that put every member of this relay back into its room as the core
    /// has them when the writer reaches this point.
    pub fn reassert(self: &Arc<Self>) -> Command {
        let shared = self.clone();
        Command::Reassert(Box::new(move || {
            let mut commands = Vec::new();
            let core = shared.core();
            for (peer, room) in core.inside() {
                commands.push(registry(shared.relay, peer, room, true));
                let args = [
                    peer.to_string(),
                    shared.relay.to_string(),
                    shared.capacity.to_string(),
                    shared.publish_command().to_owned(),
                ];
                let (cmd, tag) = shared.room_script(REJOIN, room, &[], &args);
                commands.push(Command::call(cmd, &tag));
            }
            commands
        }))
    }
}

/// Adds `peer`'s entry (in `room`) to `relay`'s registry, or takes it out.
pub(super) fn registry(relay: u64, peer: PeerId, room: &RoomName, add: bool) -> Command {
    let entry = RegistryEntry {
        peer,
        room: room.clone(),
    };
    let mut cmd = redis::cmd(if add { "SADD" } else { "SREM" });
    cmd.arg(bus::relay_members_key(relay)).arg(entry.encode());
    Command::call(cmd, RELAYS_TAG)
}

/// What a guarded script (join.lua) answered.
pub(super) enum Guarded {
    /// Done; the script's own reply.
    Done(Value),
    /// Refused for a reason of its own ('full', 'many').
    Refused(String),
    /// Redis lost its data, or the relays are putting their members back: try again soon.
    Wait,
}

impl Guarded {
    pub fn read(value: Value) -> Self {
        let text = match &value {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::SimpleString(text) => text.clone(),
            _ => return Self::Done(value),
        };
        match text.as_str() {
            "lost" | "hold" => Self::Wait,
            _ => Self::Refused(text),
        }
    }
}

/// Runs `attempt` until it is not told to wait, or `patience` runs out (then
/// `unavailable`). A wait wakes the heartbeat: if Redis lost its data, recovery starts.
pub(super) async fn patiently<F, Fut>(shared: &Shared, mut attempt: F) -> Result<Guarded, RoomError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, RoomError>>,
{
    let deadline = tokio::time::Instant::now() + shared.hold_patience();
    loop {
        match Guarded::read(attempt().await?) {
            Guarded::Wait if tokio::time::Instant::now() < deadline && !shared.stopping() => {
                shared.wake.notify_one();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Guarded::Wait => return Err(RoomError::Unavailable),
            done => return Ok(done),
        }
    }
}
