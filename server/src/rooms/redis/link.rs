//! The connection to Redis, and the two handles it is split into: the [`Writer`], which
//! alone changes Redis's data (owned by the writer task), and the [`Reader`], which reads
//! and subscribes. The connection type is private to this module, so no other code can
//! send a write: the type system, not a convention, keeps one writer.
//!
//! Reconnecting is the client's (redis-rs): a single server's `ConnectionManager`
//! reconnects with backoff and resubscribes; the cluster client routes by slot, follows a
//! failover when a request meets it, and resubscribes sharded channels. Both hand every
//! push (pub/sub messages, and `Disconnection`) to one channel. The relay does not rely on
//! either resubscription alone: after any lost connection it subscribes again itself
//! (`recovery.rs`). And since the cluster client follows a failover only when a live node
//! redirects it, the writer opens a new link when a cluster keeps failing ([`Writer::reopen`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use std::sync::{Arc, Mutex};

use redis::{Cmd, Pipeline, PushInfo, PushKind, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

use crate::outbox::lock;

/// Where the rooms are kept: one Redis server, a primary watched by Redis Sentinel, or a
/// Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (`redis://HOST:PORT[/DB]`).
    Single(String),
    /// The primary that these Sentinels name `master` (they fail it over to a replica).
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
    /// A Redis Cluster, reached through any of these nodes.
    Cluster(Vec<String>),
}

impl RedisTopology {
    /// From `--redis-url`, and `--redis-cluster` or `--redis-sentinel NAME` (then the URL
    /// lists nodes, or Sentinels, comma-separated).
    pub fn from_flags(url: &str, cluster: bool, sentinel: Option<&str>) -> Self {
        let list = || url.split(',').map(|node| node.trim().to_owned()).collect();
        match (cluster, sentinel) {
            (true, _) => Self::Cluster(list()),
            (false, Some(master)) => Self::Sentinel {
                sentinels: list(),
                master: master.to_owned(),
            },
            (false, None) => Self::Single(url.to_owned()),
        }
    }

    /// Whether a broken link is to be replaced, not only reconnected: a cluster's or a
    /// Sentinel's primary may have moved to another address.
    fn moves(&self) -> bool {
        !matches!(self, Self::Single(_))
    }
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The one handle that writes. Not `Clone`: the writer task owns it.
pub(super) struct Writer {
    connection: Arc<Connection>,
}

/// Reads and subscriptions. Cloning is cheap (the same multiplexed connection).
#[derive(Clone)]
pub(super) struct Reader {
    connection: Arc<Connection>,
}

/// The link in use, and what it takes to open another.
struct Connection {
    topology: RedisTopology,
    pushes: mpsc::UnboundedSender<PushInfo>,
    /// Guards the link in use, which only the writer replaces; held for a clone, never
    /// across an `.await`.
    link: Mutex<Link>,
}

impl Connection {
    fn link(&self) -> Link {
        lock(&self.link).clone()
    }
}

/// Connects to `topology`, with every push (pub/sub messages, disconnections) sent to
/// `pushes`. A request while Redis is away fails within about a second; the next one tries
/// to reconnect again.
pub(super) async fn connect(
    topology: &RedisTopology,
    pushes: mpsc::UnboundedSender<PushInfo>,
) -> RedisResult<(Writer, Reader)> {
    let link = open(topology, pushes.clone()).await?;
    let connection = Arc::new(Connection {
        topology: topology.clone(),
        pushes,
        link: Mutex::new(link),
    });
    let reader = Reader {
        connection: connection.clone(),
    };
    Ok((Writer { connection }, reader))
}

async fn open(
    topology: &RedisTopology,
    pushes: mpsc::UnboundedSender<PushInfo>,
) -> RedisResult<Link> {
    let link = match topology {
        RedisTopology::Cluster(nodes) => {
            let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
                .connection_timeout(Duration::from_millis(500))
                .response_timeout(Duration::from_secs(1))
                .retries(1)
                .build()?;
            Link::Cluster(client.get_async_connection().await?)
        }
        RedisTopology::Sentinel { sentinels, master } => {
            let mut sentinel = redis::sentinel::SentinelClient::build(
                sentinels.clone(),
                master.clone(),
                None,
                redis::sentinel::SentinelServerType::Master,
            )?;
            let primary = sentinel.async_get_client().await?;
            Link::Single(manager(primary.get_connection_info().clone(), pushes).await?)
        }
        RedisTopology::Single(url) => Link::Single(manager(url.parse()?, pushes).await?),
    };
    Ok(link)
}

/// A reconnecting connection to the server at `info`, speaking RESP3 (pushes arrive on it).
async fn manager(
    info: redis::ConnectionInfo,
    pushes: mpsc::UnboundedSender<PushInfo>,
) -> RedisResult<ConnectionManager> {
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
    client.get_connection_manager_with_config(config).await
}

/// What a handle knows of the deployment.
pub(super) trait Shape {
    /// Whether the link is to a cluster: a pipeline then holds one hash slot's commands.
    fn cluster(&self) -> bool;

    /// The command that publishes to a room's channel: sharded in a cluster, so that a
    /// message goes to the shard that holds the room, not to every node.
    fn publish_command(&self) -> &'static str {
        if self.cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

impl Shape for Writer {
    fn cluster(&self) -> bool {
        matches!(self.connection.topology, RedisTopology::Cluster(_))
    }
}

impl Shape for Reader {
    fn cluster(&self) -> bool {
        matches!(self.connection.topology, RedisTopology::Cluster(_))
    }
}

impl Writer {
    /// Sends one command and reads its reply.
    pub(super) async fn query<T: redis::FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        cmd.query_async(&mut self.connection.link()).await
    }

    /// Sends `pipe` and returns its replies.
    pub(super) async fn send(&mut self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        pipe.query_async(&mut self.connection.link()).await
    }

    /// Opens a new link where the primary may have moved under the one in use: the
    /// cluster client follows a failover only when a live node redirects it (a request to
    /// a dead master's slots meets none), and a Sentinel's primary is asked for only when a
    /// link opens. The new link learns the slots afresh from any node, or asks the
    /// Sentinels; the reader is told (as a `Disconnection`) that subscriptions are to be
    /// made again. A single server's link reconnects by itself: nothing to do.
    pub(super) async fn reopen(&mut self) -> RedisResult<()> {
        if !self.connection.topology.moves() {
            return Ok(());
        }
        let connection = &self.connection;
        let fresh = open(&connection.topology, connection.pushes.clone()).await?;
        *lock(&connection.link) = fresh;
        tracing::info!("opened a new link to Redis");
        let lost = PushInfo {
            kind: PushKind::Disconnection,
            data: Vec::new(),
        };
        let _ = connection.pushes.send(lost);
        Ok(())
    }
}

impl Reader {
    /// The fields of hash `key`.
    pub(super) async fn hkeys(&self, key: &str) -> RedisResult<Vec<String>> {
        redis::cmd("HKEYS")
            .arg(key)
            .query_async(&mut self.connection.link())
            .await
    }

    /// The members of set `key`.
    pub(super) async fn smembers<T: redis::FromRedisValue>(
        &self,
        key: &str,
    ) -> RedisResult<Vec<T>> {
        redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.connection.link())
            .await
    }

    /// Whether `key` exists.
    pub(super) async fn exists(&self, key: &str) -> RedisResult<bool> {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut self.connection.link())
            .await
    }

    /// Subscribes to a room's channel (sharded in a cluster). Subscribing again to a
    /// channel already subscribed changes nothing.
    pub(super) async fn subscribe(&self, channel: &str) -> RedisResult<()> {
        match self.connection.link() {
            Link::Single(mut redis) => redis.subscribe(channel).await,
            Link::Cluster(mut redis) => redis.ssubscribe(channel).await,
        }
    }

    pub(super) async fn unsubscribe(&self, channel: &str) -> RedisResult<()> {
        match self.connection.link() {
            Link::Single(mut redis) => redis.unsubscribe(channel).await,
            Link::Cluster(mut redis) => redis.sunsubscribe(channel).await,
        }
    }
}

impl ConnectionLike for Link {
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
