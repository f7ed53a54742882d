//! Rooms shared by every relay on one Redis server or Redis Cluster ([`RedisRooms`]).
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
//! - **Messages** go straight to the members on this relay, without Redis; they are
//!   published as `M` (already framed as the members will receive them) only when the room
//!   has members elsewhere, whose relays deliver them. So a room whose members all sit on
//!   one relay relays as fast as the in-process rooms.
//! - **One queue toward Redis**, bounded in commands and bytes, carries the scripts and
//!   publishes in the order the relay decided them; one task sends what waits in one
//!   pipeline. A message that finds it full is refused (`rate_limited`), never buffered.
//! - **Peer ids** come from one Redis counter, reserved in blocks, so they are unique across
//!   relays and across a relay's restarts.
//! - **A relay that dies** stops renewing a key that expires after `relay_timeout`; the
//!   others notice it in their sweep, run the leave script for each member it had (each
//!   relay keeps the set of its members in Redis) and forget it.
//! - **Redis restarted empty**: the heartbeat sees the epoch key gone, and the relay puts
//!   its members back, unannounced, and the id counters past what it handed out; the
//!   connection manager reconnects and resubscribes. A relay that was given up for dead
//!   (paused past its timeout) closes the members it lost with 1012 instead.
//! - **On a cluster**, each script touches one room's slot (its members and channel share
//!   the room's hash tag), rooms use sharded pub/sub, and the relays' own keys share the
//!   `{signalroom}` tag; see `Link` and `Command::tag`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, Pipeline, PushKind, RedisFuture, Value};
use signalroom_protocol::{Event, PeerId, RoomName};
use tokio::sync::{mpsc, oneshot};

use crate::ice::IceServers;
use crate::json::RawJson;
use crate::metrics::{self, Counter};
use crate::outbox::{encode, lock, Batch, Outbox};
use crate::rooms::{JoinOutcome, RoomError, Rooms, Stats};

/// Every key and channel starts with this.
const PREFIX: &str = "signalroom";

/// Adds `peer` to the room if it has room; publishes `J peer member,member,...` (the
/// members before it). Returns the members before it, or false when the room is full.
/// KEYS: the room's members, the room's channel (one hash slot).
/// ARGV: peer, relay, capacity, the publish command (`PUBLISH`, or `SPUBLISH` in a cluster).
const JOIN: &str = r#"
local members = redis.call('HKEYS', KEYS[1])
if #members >= tonumber(ARGV[3]) then return false end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call(ARGV[4], KEYS[2], 'J ' .. ARGV[1] .. ' ' .. table.concat(members, ','))
return members
"#;

/// Removes `peer` from the room; if it was there and ARGV[2] is 1, publishes `L peer`.
/// KEYS: the room's members, the room's channel (one hash slot).
/// ARGV: peer, announce, the publish command.
const LEAVE: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and ARGV[2] == '1' then
  redis.call(ARGV[3], KEYS[2], 'L ' .. ARGV[1])
end
return redis.call('HLEN', KEYS[1])
"#;

/// The in-Redis backend. Cloning is cheap.
#[derive(Clone)]
pub struct RedisRooms {
    shared: Arc<Shared>,
}

struct Shared {
    redis: Link,
    /// This relay's id, from Redis: names its liveness key and its members' set.
    relay: u64,
    capacity: usize,
    max_rooms: usize,
    ice_servers: IceServers,
    relay_timeout: Duration,
    /// The queue toward Redis, and the bytes in it.
    commands: mpsc::Sender<Command>,
    queued_bytes: AtomicUsize,
    /// Whether Redis answered the last pipeline or heartbeat: while it does not, messages
    /// for other relays are refused rather than queued to be lost.
    reachable: AtomicBool,
    /// The connection to Redis was lost: events published meanwhile never arrived, and the
    /// rooms' views are to be read again from Redis once it answers.
    resync: AtomicBool,
    /// Peer ids reserved from Redis and not handed out yet.
    ids: Mutex<std::ops::Range<u64>>,
    /// The epoch of Redis's data when this relay last registered: a new one means Redis
    /// lost its data.
    epoch: Mutex<String>,
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
    /// Events delivered from the channel so far, so that a resync can tell whether any
    /// came while it read the members from Redis.
    events: u64,
}

impl View {
    /// Tells every member here of `event` (a join or a departure in the room).
    fn tell(&self, event: &Event<()>, batch: &mut Batch) {
        let text = encode(event);
        for (_, outbox) in &self.here {
            outbox.push_text(&text, batch);
        }
    }
}

/// The channel of room `name` (its members' key is this plus `:members`). The name is in
/// hex so that no character of it can end the key's hash tag early.
fn channel(name: &RoomName) -> String {
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
    format!("{{{PREFIX}}}:relay:{relay}:members")
}

fn relay_alive_key(relay: u64) -> String {
    format!("{{{PREFIX}}}:relay:{relay}:alive")
}

/// Commands the queue toward Redis holds at most.
const QUEUED_COMMANDS: usize = 4096;
/// Bytes of messages the queue toward Redis holds at most.
const QUEUED_BYTES: usize = 4 << 20;
/// Commands sent in one pipeline at most.
const PIPELINE: usize = 256;
/// Peer ids reserved from Redis at a time: one round trip per this many connections.
const ID_BLOCK: u64 = 64;

/// What the queue toward Redis carries, in the order the relay decided it.
enum Command {
    /// A room event: `channel` gets `payload`.
    Publish { channel: String, payload: String },
    /// Any other command, on keys of hash tag `tag`; its reply (or failure) goes to
    /// `reply` when someone waits for it.
    Call {
        cmd: Cmd,
        tag: String,
        reply: Option<oneshot::Sender<Result<Value, ()>>>,
    },
}

impl Command {
    /// The hash tag of the keys it touches: commands of one tag are in one slot.
    fn tag(&self) -> &str {
        match self {
            Command::Publish { channel, .. } => hash_tag(channel),
            Command::Call { tag, .. } => tag,
        }
    }
}

/// The hash tag of `key`: what stands between its first `{` and the next `}`.
fn hash_tag(key: &str) -> &str {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or(key, |(tag, _)| tag)
}

/// The connection to Redis: one server, or a cluster.
#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    fn cluster(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }

    /// The command that publishes to a room's channel: sharded in a cluster, so that a
    /// message goes to the shard that holds the room, not to every node.
    fn publish_command(&self) -> &'static str {
        if self.cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Link::Single(redis) => redis.subscribe(channel).await,
            Link::Cluster(redis) => redis.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Link::Single(redis) => redis.unsubscribe(channel).await,
            Link::Cluster(redis) => redis.sunsubscribe(channel).await,
        }
    }
}

impl redis::aio::ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(redis) => redis.req_packed_command(cmd),
            Link::Cluster(redis) => redis.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(redis) => redis.req_packed_commands(pipeline, offset, count),
            Link::Cluster(redis) => redis.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(redis) => redis.get_db(),
            Link::Cluster(redis) => redis.get_db(),
        }
    }
}

/// Raises KEYS[1] to ARGV[1] if it is lower (or missing).
const RAISE: &str = r#"
if (tonumber(redis.call('GET', KEYS[1])) or 0) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
"#;

// The relays' own keys share one hash tag, so in a cluster they sit in one slot and go
// together in a pipeline; each room's keys and channel share the room's tag.
const EPOCH_KEY: &str = "{signalroom}:epoch";
const RELAYS_KEY: &str = "{signalroom}:relays";
const PEER_IDS_KEY: &str = "{signalroom}:peer-ids";
const RELAY_IDS_KEY: &str = "{signalroom}:relay-ids";
/// The hash tag of the relays' own keys.
const RELAYS_TAG: &str = "signalroom";

/// A member's entry in its relay's set: the peer and its room's channel.
fn registry_entry(peer: impl std::fmt::Display, channel: &str) -> String {
    format!("{peer} {channel}")
}

/// A Lua script on a room's members and channel, and the hash tag they share.
fn room_script(code: &str, channel: &str, args: &[String]) -> (Cmd, String) {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(code)
        .arg(2)
        .arg(members_key(channel))
        .arg(channel)
        .arg(args);
    (cmd, hash_tag(channel).to_owned())
}

/// Adds `entry` to `relay`'s set of members, or takes it out.
fn registry(relay: u64, entry: String, add: bool) -> Command {
    let mut cmd = redis::cmd(if add { "SADD" } else { "SREM" });
    cmd.arg(relay_members_key(relay)).arg(entry);
    Command::Call {
        cmd,
        tag: RELAYS_TAG.to_owned(),
        reply: None,
    }
}

impl RedisRooms {
    /// Connects to Redis at `url` (with `cluster`, to the Redis Cluster whose nodes `url`
    /// lists, comma-separated), registers this relay and starts its heartbeat, sweep,
    /// channel reader and the sender of its queue.
    pub async fn connect(
        url: &str,
        cluster: bool,
        capacity: usize,
        max_rooms: usize,
        ice_servers: IceServers,
        relay_timeout: Duration,
    ) -> redis::RedisResult<Self> {
        let (pushes, received) = mpsc::unbounded_channel();
        // Pushes (pub/sub messages) arrive on the same connections as replies with RESP3.
        // A request while Redis is away fails within about a second, to be refused with
        // `unavailable`; the next one tries to reconnect again.
        let mut redis = if cluster {
            let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
                .connection_timeout(Duration::from_millis(500))
                .response_timeout(Duration::from_secs(1))
                .retries(1)
                .build()?;
            Link::Cluster(client.get_async_connection().await?)
        } else {
            let info: redis::ConnectionInfo = url.parse()?;
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(resp3))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_push_sender(pushes)
                .set_automatic_resubscription()
                .set_connection_timeout(Some(Duration::from_millis(500)))
                .set_response_timeout(Some(Duration::from_secs(1)))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Link::Single(client.get_connection_manager_with_config(config).await?)
        };
        let relay: u64 = redis.incr(RELAY_IDS_KEY, 1).await?;
        let (commands, queued) = mpsc::channel(QUEUED_COMMANDS);
        let rooms = Self {
            shared: Arc::new(Shared {
                redis,
                relay,
                capacity,
                max_rooms,
                ice_servers,
                relay_timeout,
                commands,
                queued_bytes: AtomicUsize::new(0),
                reachable: AtomicBool::new(true),
                resync: AtomicBool::new(false),
                ids: Mutex::new(0..0),
                epoch: Mutex::new(String::new()),
                stopping: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                subscriptions: tokio::sync::Mutex::new(()),
            }),
        };
        rooms.register().await?;
        tracing::info!(relay, "sharing rooms through Redis");
        tokio::spawn(rooms.clone().read_channels(received));
        tokio::spawn(rooms.clone().keep_alive());
        tokio::spawn(rooms.clone().send_commands(queued));
        Ok(rooms)
    }

    /// Sends the queue's commands to Redis, each time all that wait (up to [`PIPELINE`])
    /// in one pipeline: one write carries many frames. In a cluster, a pipeline holds one
    /// hash slot's commands, so what waits goes as runs of one tag each, in order.
    async fn send_commands(self, mut queued: mpsc::Receiver<Command>) {
        let mut redis = self.redis();
        let mut batch = Vec::with_capacity(PIPELINE);
        while queued.recv_many(&mut batch, PIPELINE).await > 0 {
            let mut runs: Vec<Vec<Command>> = Vec::new();
            for command in batch.drain(..) {
                match runs.last_mut() {
                    Some(run) if !redis.cluster() || run[0].tag() == command.tag() => {
                        run.push(command);
                    }
                    _ => runs.push(vec![command]),
                }
            }
            for run in runs {
                self.send_run(&mut redis, run).await;
            }
        }
    }

    /// Sends `run` in one pipeline, events in a row for one room in one publish (`events`
    /// takes them apart), and hands each waiting command its reply.
    async fn send_run(&self, redis: &mut Link, run: Vec<Command>) {
        let publish = redis.publish_command();
        let mut pipe = redis::pipe();
        let mut bytes = 0;
        let mut replies_to = Vec::new();
        let mut pending: Option<(String, String)> = None;
        for command in run {
            match command {
                Command::Publish { channel, payload } => {
                    bytes += payload.len();
                    if let Some((_, events)) = pending.as_mut().filter(|(to, _)| *to == channel) {
                        push_event(events, &payload);
                        continue;
                    }
                    publish_pending(&mut pipe, publish, &mut pending);
                    let mut events = String::with_capacity(2 * payload.len() + 8);
                    push_event(&mut events, &payload);
                    pending = Some((channel, events));
                }
                Command::Call { cmd, reply, .. } => {
                    publish_pending(&mut pipe, publish, &mut pending);
                    pipe.add_command(cmd);
                    match reply {
                        Some(reply) => replies_to.push(reply),
                        None => {
                            pipe.ignore();
                        }
                    }
                }
            }
        }
        publish_pending(&mut pipe, publish, &mut pending);
        let replies = pipe.query_async::<Vec<Value>>(redis).await;
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.shared
            .reachable
            .store(replies.is_ok(), Ordering::Relaxed);
        if let Err(error) = &replies {
            tracing::warn!(%error, "Redis refused a pipeline");
        }
        let mut replies = replies.ok().map(Vec::into_iter);
        for reply in replies_to {
            let value = replies.as_mut().and_then(Iterator::next).ok_or(());
            let _ = reply.send(value);
        }
    }

    /// Queues `command` after everything queued before it.
    async fn queue(&self, command: Command) -> Result<(), RoomError> {
        self.shared
            .commands
            .send(command)
            .await
            .map_err(|_| RoomError::Unavailable)
    }

    /// Queues `cmd`, on keys of hash tag `tag`, and waits for its reply.
    async fn call(&self, (cmd, tag): (Cmd, String)) -> Result<Value, RoomError> {
        let (reply, replied) = oneshot::channel();
        let reply = Some(reply);
        self.queue(Command::Call { cmd, tag, reply }).await?;
        replied
            .await
            .map_err(|_| RoomError::Unavailable)?
            .map_err(|()| RoomError::Unavailable)
    }

    /// A request Redis did not answer: refused, and remembered until Redis answers again.
    fn unavailable(&self, error: redis::RedisError) -> RoomError {
        tracing::warn!(%error, "Redis request failed");
        self.shared.reachable.store(false, Ordering::Relaxed);
        RoomError::Unavailable
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    fn redis(&self) -> Link {
        self.shared.redis.clone()
    }

    /// Registers this relay: its liveness key and its place among the relays, and the
    /// epoch of Redis's data (set by the first relay to come, kept by the rest).
    async fn register(&self) -> redis::RedisResult<()> {
        let relay = self.shared.relay;
        let fresh = format!("{relay}-{:?}", std::time::SystemTime::now());
        let (epoch,): (String,) = redis::pipe()
            .pset_ex(relay_alive_key(relay), 1, self.ttl_ms())
            .ignore()
            .sadd(RELAYS_KEY, relay)
            .ignore()
            .cmd("SET")
            .arg(EPOCH_KEY)
            .arg(fresh)
            .arg("NX")
            .ignore()
            .get(EPOCH_KEY)
            .query_async(&mut self.redis())
            .await?;
        *lock(&self.shared.epoch) = epoch;
        Ok(())
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.shared.relay_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Renews this relay's liveness key, only while it exists. A key gone means Redis lost
    /// its data (restarted empty: the epoch is gone or new) or the other relays gave this
    /// one up for dead and took its members out of their rooms. After a loss of data the
    /// relay registers itself and its members again, unannounced, as they were, so no page
    /// notices; members the others took out are closed with 1012, and their pages
    /// reconnect and join again.
    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let relay = self.shared.relay;
        let (renewed, epoch): (Option<String>, Option<String>) = redis::pipe()
            .cmd("SET")
            .arg(relay_alive_key(relay))
            .arg(1)
            .arg("PX")
            .arg(self.ttl_ms())
            .arg("XX")
            .get(EPOCH_KEY)
            .query_async(&mut self.redis())
            .await?;
        if renewed.is_some() {
            return Ok(());
        }
        let lost = epoch.as_deref() != Some(lock(&self.shared.epoch).as_str());
        self.register().await?;
        if lost {
            tracing::warn!(
                relay,
                "Redis lost its data; registering this relay's members again"
            );
            self.register_members().await
        } else {
            tracing::warn!(
                relay,
                "this relay was given up for dead; closing what it lost"
            );
            self.close_lost_members().await
        }
    }

    /// Puts every member of this relay back into its room in Redis, and the id counters
    /// past every peer id this relay handed out and past its own id.
    async fn register_members(&self) -> redis::RedisResult<()> {
        let relay = self.shared.relay;
        let members: Vec<(PeerId, String)> = self
            .state()
            .peers
            .iter()
            .filter_map(|(peer, m)| m.room.as_ref().map(|(_, channel)| (*peer, channel.clone())))
            .collect();
        // One command at a time: in a cluster, the rooms' keys are in many slots.
        let mut redis = self.redis();
        for (peer, channel) in members {
            redis
                .hset::<_, _, _, ()>(members_key(&channel), peer.get(), relay)
                .await?;
            redis
                .sadd::<_, _, ()>(relay_members_key(relay), registry_entry(peer, &channel))
                .await?;
        }
        let handed_out = lock(&self.shared.ids).end;
        for (counter, at_least) in [(PEER_IDS_KEY, handed_out), (RELAY_IDS_KEY, relay)] {
            redis::cmd("EVAL")
                .arg(RAISE)
                .arg(1)
                .arg(counter)
                .arg(at_least)
                .exec_async(&mut redis)
                .await?;
        }
        Ok(())
    }

    /// Closes (1012) the members of this relay that Redis no longer has in their rooms.
    async fn close_lost_members(&self) -> redis::RedisResult<()> {
        let registered: std::collections::HashSet<String> = self
            .redis()
            .smembers(relay_members_key(self.shared.relay))
            .await?;
        let mut batch = Batch::new();
        for (peer, member) in &self.state().peers {
            if let Some((_, channel)) = &member.room {
                if !registered.contains(&registry_entry(peer, channel)) {
                    member.outbox.push_close(
                        signalroom_wsframe::CloseCode::ServiceRestart,
                        "the relay lost its rooms; join again",
                        &mut batch,
                    );
                }
            }
        }
        batch.flush();
        Ok(())
    }

    /// Renews the liveness key a few times per timeout and cleans up after relays whose
    /// key expired. Ends when the relay stops.
    async fn keep_alive(self) {
        let mut tick = tokio::time::interval(self.shared.relay_timeout / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.shared.stopping.load(Ordering::Relaxed) {
            tick.tick().await;
            let beat = self.heartbeat().await;
            self.shared.reachable.store(beat.is_ok(), Ordering::Relaxed);
            if let Err(error) = beat {
                tracing::warn!(%error, "could not renew this relay's liveness in Redis");
                continue;
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(%error, "could not clean up after stopped relays");
            }
            if self.shared.resync.swap(false, Ordering::Relaxed) {
                if let Err(error) = self.resync().await {
                    tracing::warn!(%error, "could not read the rooms again after a lost connection");
                    self.shared.resync.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// After the connection to Redis was lost (and is back, resubscribed), events published
    /// meanwhile never arrived: each room's view is read again from its members in Redis,
    /// and the members here are told who left and who came, as the lost events would have.
    /// A room whose channel delivered events while its members were read is left for the
    /// next heartbeat.
    async fn resync(&self) -> redis::RedisResult<()> {
        let rooms: Vec<(String, u64)> = self
            .state()
            .rooms
            .iter()
            .map(|(channel, view)| (channel.clone(), view.events))
            .collect();
        let mut redis = self.redis();
        for (channel, seen) in rooms {
            let ids: Vec<u64> = redis.hkeys(members_key(&channel)).await?;
            let inside: Vec<PeerId> = ids
                .into_iter()
                .filter_map(|n| PeerId::new(n).ok())
                .collect();
            let mut batch = Batch::new();
            {
                let mut state = self.state();
                let state = &mut *state;
                let Some(view) = state.rooms.get_mut(&channel) else {
                    continue;
                };
                if view.events != seen {
                    self.shared.resync.store(true, Ordering::Relaxed);
                    continue;
                }
                // Members here are this relay's to know; Redis speaks for the others.
                let here = |p: &PeerId| state.peers.contains_key(p);
                let gone: Vec<PeerId> = view
                    .members
                    .iter()
                    .filter(|p| !inside.contains(p) && !here(p))
                    .copied()
                    .collect();
                let came: Vec<PeerId> = inside
                    .iter()
                    .filter(|p| !view.members.contains(p) && !here(p))
                    .copied()
                    .collect();
                for peer in gone {
                    view.members.retain(|p| *p != peer);
                    let room = view.name.clone();
                    view.tell(&Event::Left { room, peer }, &mut batch);
                }
                for peer in came {
                    view.members.push(peer);
                    let room = view.name.clone();
                    view.tell(&Event::Join { room, peer }, &mut batch);
                }
            }
            batch.flush();
        }
        Ok(())
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
                let args = [
                    peer.to_owned(),
                    "1".to_owned(),
                    redis.publish_command().to_owned(),
                ];
                if self.call(room_script(LEAVE, channel, &args)).await.is_err() {
                    return Ok(());
                }
                let _ = self.queue(registry(relay, entry.clone(), false)).await;
            }
            redis.srem::<_, _, ()>(RELAYS_KEY, relay).await?;
        }
        Ok(())
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
        let args = [
            peer.to_string(),
            String::from(if announce { "1" } else { "0" }),
            self.shared.redis.publish_command().to_owned(),
        ];
        let left = self.call(room_script(LEAVE, &channel, &args)).await;
        // Out of the registry after the room: a relay that dies in between leaves an entry
        // whose leave does nothing.
        let entry = registry_entry(peer, &channel);
        let _ = self.queue(registry(self.shared.relay, entry, false)).await;
        self.lose_interest(&channel).await;
        left.map(|_| ())
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
        let mut pushes = Vec::with_capacity(PIPELINE);
        // All the events that arrived together are delivered under one lock, and what
        // they push leaves in one write per member.
        while received.recv_many(&mut pushes, PIPELINE).await > 0 {
            let mut batch = Batch::new();
            {
                let mut state = self.state();
                for push in pushes.drain(..) {
                    if push.kind == PushKind::Disconnection {
                        self.shared.resync.store(true, Ordering::Relaxed);
                    }
                    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
                        continue;
                    }
                    let [Value::BulkString(channel), Value::BulkString(payload)] =
                        push.data.as_slice()
                    else {
                        continue;
                    };
                    let (Ok(channel), Ok(payload)) =
                        (std::str::from_utf8(channel), std::str::from_utf8(payload))
                    else {
                        continue;
                    };
                    for event in events(payload) {
                        self.deliver(&mut state, channel, event, &mut batch);
                    }
                }
            }
            batch.flush();
        }
    }

    /// Carries out one event of a room's channel for this relay's members.
    fn deliver(&self, state: &mut State, channel: &str, payload: &str, batch: &mut Batch) {
        let Some(view) = state.rooms.get_mut(channel) else {
            return;
        };
        view.events += 1;
        // What Redis delivers is read, never trusted to be well formed.
        let (Some(kind), Some(rest)) = (payload.get(..2), payload.get(2..)) else {
            return;
        };
        match kind {
            "J " => {
                let (peer, before) = rest.split_once(' ').unwrap_or((rest, ""));
                let Some(peer) = parse_peer(peer) else { return };
                let room = view.name.clone();
                view.tell(&Event::Join { room, peer }, batch);
                if let Some(member) = state
                    .peers
                    .get(&peer)
                    .filter(|m| m.room.as_ref().is_some_and(|(_, c)| c == channel))
                {
                    // Our own joiner: the event's members are the room as it found it.
                    view.members = before.split(',').filter_map(parse_peer).collect();
                    let ice_servers = self.shared.ice_servers.for_peer(peer, SystemTime::now());
                    let answer = if view.members.is_empty() {
                        Event::<()>::Created {
                            room: view.name.clone(),
                            peer,
                            ice_servers,
                        }
                    } else {
                        Event::<()>::Joined {
                            room: view.name.clone(),
                            peer,
                            peers: view.members.clone(),
                            ice_servers,
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
                let room = view.name.clone();
                view.tell(&Event::Left { room, peer }, batch);
            }
            "M " => {
                let mut parts = rest.splitn(4, ' ');
                let (Some(relay), Some(from), Some(to), Some(frame)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return;
                };
                if relay.parse() == Ok(self.shared.relay) {
                    // Delivered here already, when it was sent.
                    return;
                }
                let from = parse_peer(from);
                let to = parse_peer(to);
                let mut relayed = 0;
                for (peer, outbox) in &view.here {
                    let addressed = match to {
                        Some(to) => *peer == to,
                        None => Some(*peer) != from,
                    };
                    if addressed {
                        outbox.push_text(frame, batch);
                        relayed += 1;
                    }
                }
                metrics::add(Counter::Relayed, relayed);
            }
            _ => tracing::warn!(channel, "an event this relay does not know"),
        }
    }
}

/// Adds the events waiting for one channel, if any, to `pipe` as one publish.
fn publish_pending(pipe: &mut Pipeline, publish: &str, pending: &mut Option<(String, String)>) {
    if let Some((to, events)) = pending.take() {
        pipe.cmd(publish).arg(to).arg(events).ignore();
    }
}

/// Appends one event to a published batch of them: `LEN:EVENT`, the length in bytes.
fn push_event(events: &mut String, event: &str) {
    events.push_str(&event.len().to_string());
    events.push(':');
    events.push_str(event);
}

/// The events of a published payload (see [`push_event`]); a payload that is not such a
/// batch is one event by itself (the scripts publish those).
fn events(payload: &str) -> impl Iterator<Item = &str> {
    let mut rest = payload;
    let batched = payload.starts_with(|c: char| c.is_ascii_digit());
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if !batched {
            return Some(std::mem::take(&mut rest));
        }
        let (len, tail) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let event = tail.get(..len)?;
        rest = &tail[len..];
        Some(event)
    })
}

fn parse_peer(text: &str) -> Option<PeerId> {
    text.parse::<u64>().ok().and_then(|n| PeerId::new(n).ok())
}

impl Rooms for RedisRooms {
    async fn connect(&self, outbox: Outbox) -> Result<PeerId, RoomError> {
        let reserved = lock(&self.shared.ids).next();
        let n = match reserved {
            Some(n) => n,
            None => {
                // A block of ids at a time: one round trip per [`ID_BLOCK`] connections.
                let last: u64 = self
                    .redis()
                    .incr(PEER_IDS_KEY, ID_BLOCK)
                    .await
                    .map_err(|error| self.unavailable(error))?;
                let mut ids = lock(&self.shared.ids);
                *ids = last + 1 - ID_BLOCK..last + 1;
                ids.next().ok_or(RoomError::Unavailable)?
            }
        };
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
                        events: 0,
                    };
                    state.rooms.insert(channel.clone(), view);
                }
            }
        }
        // Subscribed before joining, so the join's own `J` and all that follows arrive.
        let subscribed = self.redis().subscribe(&channel).await;
        drop(order);
        let joined = match subscribed {
            Ok(()) => {
                // Marked in the room first: the `J` may come back before the script's reply.
                if let Some(member) = self.state().peers.get_mut(&peer) {
                    member.room = Some((room.clone(), channel.clone()));
                }
                // Into the registry before the room: a relay that dies in between leaves an
                // entry whose leave does nothing, never a member nobody would take out.
                let entry = registry_entry(peer, &channel);
                let args = [
                    peer.to_string(),
                    self.shared.relay.to_string(),
                    self.shared.capacity.to_string(),
                    self.shared.redis.publish_command().to_owned(),
                ];
                match self.queue(registry(self.shared.relay, entry, true)).await {
                    Ok(()) => self.call(room_script(JOIN, &channel, &args)).await,
                    Err(error) => Err(error),
                }
                .and_then(|reply| {
                    redis::from_redis_value::<Option<Vec<String>>>(reply)
                        .map_err(|_| RoomError::Unavailable)
                })
            }
            Err(error) => Err(self.unavailable(error)),
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
            Err(error) => Err(error),
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
        batch: &mut Batch,
    ) -> Result<(), RoomError> {
        // The frame as members receive it, written once, after the event's head if it
        // goes to Redis too: `M relay from to `.
        let mut event = String::with_capacity(data.get().len() + 96);
        let relay = self.shared.relay;
        let _ = match to {
            Some(to) => write!(event, "M {relay} {from} {to} "),
            None => write!(event, "M {relay} {from} - "),
        };
        let head = event.len();
        signalroom_protocol::write_message_json(&mut event, from, data.get());
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
            // Members here get it now; Redis carries it only to members elsewhere.
            let frame = &event[head..];
            let mut relayed = 0;
            for (peer, outbox) in &view.here {
                let addressed = match to {
                    Some(to) => *peer == to,
                    None => *peer != from,
                };
                if addressed {
                    outbox.push_text(frame, batch);
                    relayed += 1;
                }
            }
            metrics::add(Counter::Relayed, relayed);
            let elsewhere = |p: &PeerId| *p != from && !view.here.iter().any(|(h, _)| h == p);
            let needs_redis = match to {
                Some(to) => elsewhere(&to),
                None => view.members.iter().any(elsewhere),
            };
            if !needs_redis {
                return Ok(());
            }
            channel.clone()
        };
        if !self.shared.reachable.load(Ordering::Relaxed) {
            return Err(RoomError::Unavailable);
        }
        // Bounded in bytes and in commands: a full queue refuses, it never grows.
        let len = event.len();
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let sent = queued + len <= QUEUED_BYTES
            && self
                .shared
                .commands
                .try_send(Command::Publish {
                    channel,
                    payload: event,
                })
                .is_ok();
        if !sent {
            self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(RoomError::Backlogged);
        }
        Ok(())
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

    fn ready(&self) -> bool {
        self.shared.reachable.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_events_come_apart_whole_whatever_they_hold() {
        let single = [
            "J 7 1,2",
            "M 3 1 - {\"a\":\"1:2 x\"}",
            "M 3 1 - [\"é\\n9:\"]",
        ];
        let mut batch = String::new();
        for event in single {
            push_event(&mut batch, event);
        }
        assert_eq!(events(&batch).collect::<Vec<_>>(), single);
        // What the scripts publish is one event.
        assert_eq!(events("L 12").collect::<Vec<_>>(), ["L 12"]);
        // A cut batch yields what is whole and stops.
        assert_eq!(events(&batch[..batch.len() - 1]).count(), 2);
    }
}
