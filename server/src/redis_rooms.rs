//! Rooms shared by every relay on one Redis server ([`RedisRooms`]).
//!
//! Redis holds who is in each room, and each room has a pub/sub channel that carries
//! everything that happens in it, in one order: joins, departures and messages. A relay
//! subscribes to the channel of every room it has a member in, and delivers what the channel
//! says to its own members, its own events included. The channel is thus the room's single
//! sequencer, as the mutex is for [`crate::LocalRooms`]: every member, on whichever relay,
//! sees a room's events in the same order.
//!
//! - **Joining** runs one Lua script, so capacity is exact however many relays race: it
//!   checks the room's size, adds the member and publishes `J` with the members it found,
//!   all at once. The joiner's relay answers `created` or `joined` when that `J` comes back
//!   through the channel, to which it subscribed before running the script.
//! - **Leaving** (or disconnecting) runs the other script: it removes the member and, if it
//!   was there, publishes `L`. It is idempotent, so several relays may clean up at once.
//! - **Messages** are published as `M`, already framed as the members will receive them.
//! - **Peer ids** come from one Redis counter, so they are unique across relays and across
//!   a relay's restarts.
//! - **A relay that dies** stops renewing a key that expires after `relay_timeout`; the
//!   others notice it in their sweep, run the leave script for each member it had (each
//!   relay keeps the set of its members in Redis) and forget it.
//!
//! What this backend does not do yet is written in the README: Redis Cluster, a relay's own
//! rooms without a Redis hop, and recovery from a Redis outage beyond refusing requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, PushKind, Script, Value};
use signalroom_protocol::{Event, IceServer, PeerId, RoomName};
use tokio::sync::mpsc;

use crate::json::RawJson;
use crate::outbox::{encode, lock, Batch, Outbox};
use crate::rooms::{JoinOutcome, RoomError, Rooms, Stats};

/// Every key and channel starts with this.
const PREFIX: &str = "signalroom";

/// Adds `peer` to the room if it has room; publishes `J peer member,member,...` (the
/// members before it). Returns the members before it, or false when the room is full.
/// KEYS: the room's members, the relay's members, the room's channel.
/// ARGV: peer, relay, capacity, registry entry.
const JOIN: &str = r#"
local members = redis.call('HKEYS', KEYS[1])
if #members >= tonumber(ARGV[3]) then return false end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[3], 'J ' .. ARGV[1] .. ' ' .. table.concat(members, ','))
return members
"#;

/// Removes `peer` from the room; if it was there and ARGV[3] is 1, publishes `L peer`.
/// KEYS: the room's members, the relay's members, the room's channel.
/// ARGV: peer, registry entry, announce.
const LEAVE: &str = r#"
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and ARGV[3] == '1' then
  redis.call('PUBLISH', KEYS[3], 'L ' .. ARGV[1])
end
return redis.call('HLEN', KEYS[1])
"#;

/// The in-Redis backend. Cloning is cheap.
#[derive(Clone)]
pub struct RedisRooms {
    shared: Arc<Shared>,
}

struct Shared {
    redis: ConnectionManager,
    /// This relay's id, from Redis: names its liveness key and its members' set.
    relay: u64,
    capacity: usize,
    max_rooms: usize,
    ice_servers: Vec<IceServer>,
    relay_timeout: Duration,
    join: Script,
    leave: Script,
    stopping: AtomicBool,
    /// This relay's view; its lock is never held across an `.await` or a Redis call.
    state: Mutex<State>,
    /// Held while a room's interest changes and its channel is subscribed or unsubscribed,
    /// so the commands reach Redis in the order the interest changed: an unsubscribe for
    /// the last member leaving never overtakes the subscribe of the next one coming.
    subscriptions: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    peers: HashMap<PeerId, Member>,
    /// Rooms with members on this relay (or joining it), by channel name.
    rooms: HashMap<String, View>,
}

struct Member {
    outbox: Outbox,
    /// The room it joined, by channel, once the join script let it in.
    room: Option<(RoomName, String)>,
}

/// A room as this relay knows it from its channel.
struct View {
    name: RoomName,
    /// Every member, on whichever relay, as of the last event delivered.
    members: Vec<PeerId>,
    /// Members on this relay whose own `J` has come through: they receive the room's events.
    here: Vec<(PeerId, Outbox)>,
    /// Local peers in the room or on their way in: the channel is unsubscribed at zero.
    interest: usize,
}

/// The channel of room `name` (its members' key is this plus `:members`). The name is in
/// hex so that no character of it can end the key's hash tag early.
fn channel(name: &RoomName) -> String {
    use std::fmt::Write;
    let mut out = format!("{PREFIX}:room:{{");
    for byte in name.as_str().bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out.push('}');
    out
}

fn members_key(channel: &str) -> String {
    format!("{channel}:members")
}

fn relay_members_key(relay: u64) -> String {
    format!("{PREFIX}:relay:{relay}:members")
}

fn relay_alive_key(relay: u64) -> String {
    format!("{PREFIX}:relay:{relay}:alive")
}

const RELAYS_KEY: &str = "signalroom:relays";
const PEER_IDS_KEY: &str = "signalroom:peer-ids";
const RELAY_IDS_KEY: &str = "signalroom:relay-ids";

/// A member's entry in its relay's set: the peer and its room's channel.
fn registry_entry(peer: impl std::fmt::Display, channel: &str) -> String {
    format!("{peer} {channel}")
}

fn unavailable(error: redis::RedisError) -> RoomError {
    tracing::warn!(%error, "Redis request failed");
    RoomError::Unavailable
}

impl RedisRooms {
    /// Connects to Redis at `url`, registers this relay and starts its heartbeat, sweep and
    /// channel reader.
    pub async fn connect(
        url: &str,
        capacity: usize,
        max_rooms: usize,
        ice_servers: Vec<IceServer>,
        relay_timeout: Duration,
    ) -> redis::RedisResult<Self> {
        let info: redis::ConnectionInfo = url.parse()?;
        // Pushes (pub/sub messages) arrive on the same connection as replies with RESP3.
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let info = info.set_redis_settings(resp3);
        let client = redis::Client::open(info)?;
        let (pushes, received) = mpsc::unbounded_channel();
        // A request while Redis is away fails within about a second, to be refused with
        // `unavailable`; the next one tries to reconnect again.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_push_sender(pushes)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut redis = client.get_connection_manager_with_config(config).await?;
        let relay: u64 = redis.incr(RELAY_IDS_KEY, 1).await?;
        let rooms = Self {
            shared: Arc::new(Shared {
                redis,
                relay,
                capacity,
                max_rooms,
                ice_servers,
                relay_timeout,
                join: Script::new(JOIN),
                leave: Script::new(LEAVE),
                stopping: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                subscriptions: tokio::sync::Mutex::new(()),
            }),
        };
        rooms.heartbeat().await?;
        tracing::info!(relay, "sharing rooms through Redis");
        tokio::spawn(rooms.clone().read_channels(received));
        tokio::spawn(rooms.clone().keep_alive());
        Ok(rooms)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    fn redis(&self) -> ConnectionManager {
        self.shared.redis.clone()
    }

    /// Renews this relay's liveness key and registers it.
    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let relay = self.shared.relay;
        let ttl = u64::try_from(self.shared.relay_timeout.as_millis()).unwrap_or(u64::MAX);
        redis::pipe()
            .pset_ex(relay_alive_key(relay), 1, ttl)
            .ignore()
            .sadd(RELAYS_KEY, relay)
            .ignore()
            .query_async::<()>(&mut self.redis())
            .await
    }

    /// Renews the liveness key a few times per timeout and cleans up after relays whose
    /// key expired. Ends when the relay stops.
    async fn keep_alive(self) {
        let mut tick = tokio::time::interval(self.shared.relay_timeout / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.shared.stopping.load(Ordering::Relaxed) {
            tick.tick().await;
            if let Err(error) = self.heartbeat().await {
                tracing::warn!(%error, "could not renew this relay's liveness in Redis");
                continue;
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(%error, "could not clean up after stopped relays");
            }
        }
    }

    /// Takes every member of every relay whose liveness key expired out of its room.
    async fn sweep(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis();
        let relays: Vec<u64> = redis.smembers(RELAYS_KEY).await?;
        for relay in relays.into_iter().filter(|r| *r != self.shared.relay) {
            let alive: bool = redis.exists(relay_alive_key(relay)).await?;
            if alive {
                continue;
            }
            let entries: Vec<String> = redis.smembers(relay_members_key(relay)).await?;
            tracing::warn!(
                relay,
                members = entries.len(),
                "a relay stopped; its members leave"
            );
            for entry in entries {
                let Some((peer, channel)) = entry.split_once(' ') else {
                    continue;
                };
                self.leave_script(relay, peer, channel, true).await?;
            }
            redis.srem::<_, _, ()>(RELAYS_KEY, relay).await?;
        }
        Ok(())
    }

    async fn leave_script(
        &self,
        relay: u64,
        peer: &str,
        channel: &str,
        announce: bool,
    ) -> redis::RedisResult<usize> {
        self.shared
            .leave
            .key(members_key(channel))
            .key(relay_members_key(relay))
            .key(channel)
            .arg(peer)
            .arg(registry_entry(peer, channel))
            .arg(if announce { "1" } else { "0" })
            .invoke_async(&mut self.redis())
            .await
    }

    /// Takes `peer` out of its room in Redis, announced unless the relay is stopping, and
    /// drops this relay's interest in the room's channel.
    async fn depart(&self, peer: PeerId, room: (RoomName, String)) -> Result<(), RoomError> {
        let (_, channel) = room;
        {
            let mut state = self.state();
            if let Some(view) = state.rooms.get_mut(&channel) {
                view.here.retain(|(p, _)| *p != peer);
            }
        }
        let announce = !self.shared.stopping.load(Ordering::Relaxed);
        let left = self
            .leave_script(self.shared.relay, &peer.to_string(), &channel, announce)
            .await;
        self.lose_interest(&channel).await;
        left.map(|_| ()).map_err(unavailable)
    }

    /// One local peer fewer in `channel`'s room: at none, unsubscribe and forget it.
    async fn lose_interest(&self, channel: &str) {
        let _order = self.shared.subscriptions.lock().await;
        let last = {
            let mut state = self.state();
            let Some(view) = state.rooms.get_mut(channel) else {
                return;
            };
            view.interest -= 1;
            if view.interest == 0 {
                state.rooms.remove(channel);
                true
            } else {
                false
            }
        };
        if last {
            if let Err(error) = self.redis().unsubscribe(channel).await {
                tracing::warn!(%error, channel, "could not unsubscribe");
            }
        }
    }

    /// Delivers each event published in a room this relay has members in.
    async fn read_channels(self, mut received: mpsc::UnboundedReceiver<redis::PushInfo>) {
        while let Some(push) = received.recv().await {
            if push.kind != PushKind::Message {
                continue;
            }
            let [Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice()
            else {
                continue;
            };
            let (Ok(channel), Ok(payload)) =
                (std::str::from_utf8(channel), std::str::from_utf8(payload))
            else {
                continue;
            };
            let mut batch = Batch::new();
            self.deliver(channel, payload, &mut batch);
            batch.flush();
        }
    }

    /// Carries out one event of a room's channel for this relay's members.
    fn deliver(&self, channel: &str, payload: &str, batch: &mut Batch) {
        let mut state = self.state();
        let state = &mut *state;
        let Some(view) = state.rooms.get_mut(channel) else {
            return;
        };
        let (kind, rest) = payload.split_at(payload.len().min(2));
        match kind {
            "J " => {
                let (peer, before) = rest.split_once(' ').unwrap_or((rest, ""));
                let Some(peer) = parse_peer(peer) else { return };
                let announce = encode(&Event::<()>::Join {
                    room: view.name.clone(),
                    peer,
                });
                for (_, outbox) in &view.here {
                    outbox.push_text(&announce, batch);
                }
                if let Some(member) = state
                    .peers
                    .get(&peer)
                    .filter(|m| m.room.as_ref().is_some_and(|(_, c)| c == channel))
                {
                    // Our own joiner: the event's members are the room as it found it.
                    view.members = before.split(',').filter_map(parse_peer).collect();
                    let answer = if view.members.is_empty() {
                        Event::<()>::Created {
                            room: view.name.clone(),
                            peer,
                            ice_servers: self.shared.ice_servers.clone(),
                        }
                    } else {
                        Event::<()>::Joined {
                            room: view.name.clone(),
                            peer,
                            peers: view.members.clone(),
                            ice_servers: self.shared.ice_servers.clone(),
                        }
                    };
                    member.outbox.send(&answer, batch);
                    view.here.push((peer, member.outbox.clone()));
                }
                if !view.members.contains(&peer) {
                    view.members.push(peer);
                }
            }
            "L " => {
                let Some(peer) = parse_peer(rest) else { return };
                view.members.retain(|p| *p != peer);
                view.here.retain(|(p, _)| *p != peer);
                let left = encode(&Event::<()>::Left {
                    room: view.name.clone(),
                    peer,
                });
                for (_, outbox) in &view.here {
                    outbox.push_text(&left, batch);
                }
            }
            "M " => {
                let mut parts = rest.splitn(3, ' ');
                let (Some(from), Some(to), Some(frame)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return;
                };
                let from = parse_peer(from);
                let to = parse_peer(to);
                for (peer, outbox) in &view.here {
                    let addressed = match to {
                        Some(to) => *peer == to,
                        None => Some(*peer) != from,
                    };
                    if addressed {
                        outbox.push_text(frame, batch);
                    }
                }
            }
            _ => tracing::warn!(channel, "an event this relay does not know"),
        }
    }
}

fn parse_peer(text: &str) -> Option<PeerId> {
    text.parse::<u64>().ok().and_then(|n| PeerId::new(n).ok())
}

impl Rooms for RedisRooms {
    async fn connect(&self, outbox: Outbox) -> Result<PeerId, RoomError> {
        let n: u64 = self
            .redis()
            .incr(PEER_IDS_KEY, 1)
            .await
            .map_err(unavailable)?;
        let peer = PeerId::new(n).map_err(|_| RoomError::Unavailable)?;
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
        let channel = channel(&room);
        let order = self.shared.subscriptions.lock().await;
        {
            let mut state = self.state();
            let Some(member) = state.peers.get(&peer) else {
                return Err(RoomError::NotInRoom);
            };
            if let Some((current, _)) = &member.room {
                return Err(RoomError::AlreadyInRoom(current.clone()));
            }
            let known = state.rooms.len();
            match state.rooms.get_mut(&channel) {
                Some(view) => view.interest += 1,
                None if known >= self.shared.max_rooms => {
                    return Err(RoomError::TooManyRooms(self.shared.max_rooms));
                }
                None => {
                    let view = View {
                        name: room.clone(),
                        members: Vec::new(),
                        here: Vec::new(),
                        interest: 1,
                    };
                    state.rooms.insert(channel.clone(), view);
                }
            }
        }
        // Subscribed before joining, so the join's own `J` and all that follows arrive.
        let mut redis = self.redis();
        let subscribed = redis.subscribe(&channel).await;
        drop(order);
        let joined = match subscribed {
            Ok(()) => {
                let registry = registry_entry(peer, &channel);
                // Marked in the room first: the `J` may come back before the script's reply.
                if let Some(member) = self.state().peers.get_mut(&peer) {
                    member.room = Some((room.clone(), channel.clone()));
                }
                self.shared
                    .join
                    .key(members_key(&channel))
                    .key(relay_members_key(self.shared.relay))
                    .key(&channel)
                    .arg(peer.to_string())
                    .arg(self.shared.relay)
                    .arg(self.shared.capacity)
                    .arg(registry)
                    .invoke_async::<Option<Vec<String>>>(&mut redis)
                    .await
            }
            Err(error) => Err(error),
        };
        let outcome = match joined {
            Ok(Some(before)) => Ok(if before.is_empty() {
                JoinOutcome::Created
            } else {
                JoinOutcome::Joined(before.len() + 1)
            }),
            Ok(None) => {
                if let Some(member) = self.state().peers.get(&peer) {
                    member.outbox.send(&Event::<()>::Full { room }, batch);
                }
                Ok(JoinOutcome::Full)
            }
            Err(error) => Err(unavailable(error)),
        };
        if !matches!(outcome, Ok(JoinOutcome::Created | JoinOutcome::Joined(_))) {
            if let Some(member) = self.state().peers.get_mut(&peer) {
                member.room = None;
            }
            self.lose_interest(&channel).await;
        }
        outcome
    }

    async fn leave(&self, peer: PeerId, _batch: &mut Batch) -> Result<RoomName, RoomError> {
        let room = self
            .state()
            .peers
            .get_mut(&peer)
            .and_then(|m| m.room.take())
            .ok_or(RoomError::NotInRoom)?;
        let name = room.0.clone();
        self.depart(peer, room).await?;
        Ok(name)
    }

    async fn relay(
        &self,
        from: PeerId,
        to: Option<PeerId>,
        data: RawJson<'_>,
        _batch: &mut Batch,
    ) -> Result<(), RoomError> {
        let channel = {
            let state = self.state();
            let (_, channel) = state
                .peers
                .get(&from)
                .and_then(|m| m.room.as_ref())
                .ok_or(RoomError::NotInRoom)?;
            let view = state.rooms.get(channel).ok_or(RoomError::NotInRoom)?;
            if let Some(to) = to {
                if to == from || !view.members.contains(&to) {
                    return Err(RoomError::UnknownPeer(to));
                }
            }
            channel.clone()
        };
        let mut event = String::with_capacity(data.get().len() + 64);
        event.push_str("M ");
        event.push_str(&from.to_string());
        event.push(' ');
        event.push_str(&to.map_or_else(|| "-".to_owned(), |to| to.to_string()));
        event.push(' ');
        signalroom_protocol::write_message_json(&mut event, from, data.get());
        self.redis()
            .publish::<_, _, ()>(&channel, event)
            .await
            .map_err(unavailable)
    }

    async fn disconnect(&self, peer: PeerId, _batch: &mut Batch) {
        let room = self.state().peers.remove(&peer).and_then(|m| m.room);
        if let Some(room) = room {
            let _ = self.depart(peer, room).await;
        }
    }

    fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }

    fn stats(&self) -> Stats {
        let state = self.state();
        Stats {
            connections: state.peers.len(),
            rooms: state.rooms.values().filter(|v| !v.here.is_empty()).count(),
            members: state.rooms.values().map(|v| v.here.len()).sum(),
        }
    }
}
