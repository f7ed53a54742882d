//! Redis for relays that share rooms: a server, a cluster, and configs and flags for them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use signalroom_server::Config;

use crate::process::send_signal;
use crate::{free_port, listening, PATIENCE};

/// A `redis-server` of the test's own on a free loopback port, without persistence;
/// killed when dropped.
pub struct RedisServer {
    pub url: String,
    port: u16,
    child: std::process::Child,
    flags: Vec<String>,
}

impl RedisServer {
    pub async fn start() -> Result<Self> {
        Self::start_with(&[]).await
    }

    /// With more flags for `redis-server`.
    pub async fn start_with(flags: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
        let child = Self::spawn(port, &flags).await?;
        Ok(Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child,
            flags,
        })
    }

    async fn spawn(port: u16, flags: &[String]) -> Result<std::process::Child> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            // A replica's full sync still writes a snapshot: into the temporary directory,
            // not the tests' working directory.
            .arg("--dir")
            .arg(std::env::temp_dir())
            .args(["--dbfilename", &format!("signalroom-test-{port}.rdb")])
            .args(flags)
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/setup.sh --test installs it)")?;
        listening(([127, 0, 0, 1], port).into(), "redis-server").await?;
        Ok(child)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the server with kill(1).
    pub fn signal(&self, signal: &str) -> Result<()> {
        send_signal(self.child.id(), signal)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Kills the server and starts a new one, empty, on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.child = Self::spawn(self.port, &self.flags).await?;
        Ok(())
    }

    /// The server's pid, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local Redis Cluster of three masters (with a replica each, or none) on free loopback
/// ports (and their cluster-bus ports), built with `redis-cli --cluster create`; killed
/// when dropped.
pub struct RedisCluster {
    /// Its nodes, comma-separated, as `--redis-url` takes them with `--redis-cluster`.
    pub urls: String,
    dir: std::path::PathBuf,
    children: Vec<(u16, std::process::Child)>,
}

impl RedisCluster {
    /// Three masters, no replica.
    pub async fn start() -> Result<Self> {
        Self::start_with(0, 15_000).await
    }

    /// Three masters with `replicas` each; a node is failed after `node_timeout_ms`.
    pub async fn start_with(replicas: usize, node_timeout_ms: u32) -> Result<Self> {
        static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("signalroom-cluster-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Self {
            urls: String::new(),
            dir,
            children: Vec::new(),
        };
        let mut nodes = Vec::new();
        while nodes.len() < 3 * (1 + replicas) {
            let port = free_port()?;
            // The cluster bus listens 10000 above.
            if port > 55_000 || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    &node_timeout_ms.to_string(),
                ])
                .arg("--cluster-config-file")
                .arg(format!("nodes-{port}.conf"))
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("starting redis-server (scripts/setup.sh --test installs it)")?;
            cluster.children.push((port, child));
            listening(([127, 0, 0, 1], port).into(), "redis-server").await?;
            nodes.push(format!("127.0.0.1:{port}"));
        }
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running redis-cli --cluster create")?;
        ensure!(created.success(), "redis-cli --cluster create failed");
        // Every node must agree the cluster is up before it takes commands for any slot.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        for node in &nodes {
            let (_, port) = node.split_once(':').context("a node")?;
            let up = |info: &str| info.contains("cluster_state:ok");
            redis_cli_until(
                port,
                &["cluster", "info"],
                up,
                deadline,
                "the cluster came up",
            )
            .await?;
        }
        // A replica that never synced with its master is not eligible for a failover.
        for node in &nodes {
            let (_, port) = node.split_once(':').context("a node")?;
            let synced =
                |info: &str| info.contains("role:master") || info.contains("master_link_status:up");
            let by = deadline + PATIENCE;
            redis_cli_until(
                port,
                &["info", "replication"],
                synced,
                by,
                "a replica synced",
            )
            .await?;
        }
        cluster.urls = nodes
            .iter()
            .map(|n| format!("redis://{n}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(cluster)
    }
}

impl RedisCluster {
    /// Kills (SIGKILL) the master that serves `key`'s slot; returns its port.
    pub fn kill_master_of(&mut self, key: &str) -> Result<u16> {
        let (port, _) = self.children.first().context("no node")?;
        let slot = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "keyslot", key])
            .output()?;
        let slot: u16 = String::from_utf8_lossy(&slot.stdout).trim().parse()?;
        let nodes = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "nodes"])
            .output()?;
        let nodes = String::from_utf8_lossy(&nodes.stdout);
        let master = nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .find(|line| {
                line.split_whitespace().skip(8).any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(f), Ok(t)) if f <= slot && slot <= t)
                })
            })
            .context("no master serves the slot")?;
        let port: u16 = master
            .split_whitespace()
            .nth(1)
            .and_then(|addr| addr.split(['@', ':']).nth(1))
            .context("a node's address")?
            .parse()?;
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(p, _)| *p == port)
            .context("the master is not one of ours")?;
        child.kill()?;
        child.wait()?;
        Ok(port)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, a replica of it and a Redis Sentinel watching them (as `signalroom`), on free
/// loopback ports; killed when dropped. The Sentinel fails the primary over after one
/// second without an answer.
pub struct RedisSentinel {
    /// The Sentinel, as `--redis-url` takes it with `--redis-sentinel`.
    pub url: String,
    dir: std::path::PathBuf,
    primary: RedisServer,
    replica: RedisServer,
    sentinel: std::process::Child,
}

impl RedisSentinel {
    /// The primary's name at the Sentinel.
    pub const MASTER: &'static str = "signalroom";

    pub async fn start() -> Result<Self> {
        let primary = RedisServer::start().await?;
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()])
                .await?;
        // Synced before anything may fail over to it.
        redis_cli_until(
            &replica.port.to_string(),
            &["info", "replication"],
            |info| info.contains("master_link_status:up"),
            tokio::time::Instant::now() + PATIENCE,
            "the replica synced",
        )
        .await?;
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("signalroom-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {master} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 5000\n",
                dir.display(),
                master = Self::MASTER,
                primary = primary.port,
            ),
        )?;
        let sentinel = std::process::Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting redis-sentinel (scripts/setup.sh --test installs it)")?;
        listening(([127, 0, 0, 1], port).into(), "redis-sentinel").await?;
        Ok(Self {
            url: format!("redis://127.0.0.1:{port}"),
            dir,
            primary,
            replica,
            sentinel,
        })
    }

    /// Kills (SIGKILL) the primary; the Sentinel promotes the replica.
    pub fn kill_primary(&mut self) -> Result<()> {
        self.primary.child.kill()?;
        self.primary.child.wait()?;
        Ok(())
    }

    /// Waits until the Sentinel names the replica as the primary.
    pub async fn failed_over(&self) -> Result<()> {
        let port = self.url.rsplit(':').next().context("a port")?;
        let replica = self.replica.port.to_string();
        redis_cli_until(
            port,
            &["sentinel", "get-master-addr-by-name", Self::MASTER],
            |addr| addr.contains(&replica),
            tokio::time::Instant::now() + 4 * PATIENCE,
            "the Sentinel failed over",
        )
        .await
    }

    /// A relay's config that shares rooms through the Sentinel's primary.
    pub fn config(&self) -> Config {
        Config {
            redis_url: Some(self.url.clone()),
            redis_sentinel: Some(Self::MASTER.to_owned()),
            ..Config::default()
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `redis-cli -p port ARGS` every 50 ms until `done` says yes to its output; fails
/// once `deadline` passes, saying what did not happen (`what`).
async fn redis_cli_until(
    port: &str,
    args: &[&str],
    done: impl Fn(&str) -> bool,
    deadline: tokio::time::Instant,
    what: &str,
) -> Result<()> {
    loop {
        let output = std::process::Command::new("redis-cli")
            .args(["-p", port])
            .args(args)
            .output()
            .context("running redis-cli")?;
        if done(&String::from_utf8_lossy(&output.stdout)) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not in time: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What relays share rooms through in a test: one Redis server or a cluster.
pub enum SharedRedis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl SharedRedis {
    pub async fn server() -> Result<Self> {
        Ok(Self::Server(RedisServer::start().await?))
    }

    pub async fn cluster() -> Result<Self> {
        Ok(Self::Cluster(RedisCluster::start().await?))
    }

    /// A relay's config that shares rooms through it.
    pub fn config(&self) -> Config {
        match self {
            Self::Server(redis) => shared(redis),
            Self::Cluster(cluster) => Config {
                redis_url: Some(cluster.urls.clone()),
                redis_cluster: true,
                ..Config::default()
            },
        }
    }

    /// The flags that make a relay process share rooms through it.
    pub fn relay_args(&self) -> Vec<String> {
        match self {
            Self::Server(redis) => vec!["--redis-url".into(), redis.url.clone()],
            Self::Cluster(cluster) => vec![
                "--redis-url".into(),
                cluster.urls.clone(),
                "--redis-cluster".into(),
            ],
        }
    }
}

/// A relay's config that shares rooms through `redis`.
pub fn shared(redis: &RedisServer) -> Config {
    Config {
        redis_url: Some(redis.url.clone()),
        ..Config::default()
    }
}
