//! Shared by the integration tests: the relay in-process on an ephemeral port, and a
//! WebSocket client that speaks the protocol crate's types.

#![allow(dead_code)] // Each test file uses its own part.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signalroom_protocol::{ErrorCode, Event, PeerId, Request, RoomName};
use signalroom_server::{Config, Stats};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long to wait for a frame that must come.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long to listen for a frame that must not come.
pub const QUIET: Duration = Duration::from_millis(150);

pub struct Relay {
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
}

impl Relay {
    pub async fn start(config: Config) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(signalroom_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop })
    }

    pub async fn default() -> Result<Self> {
        Self::start(Config::default()).await
    }

    /// A client that, like a browser, sends each frame at once (no Nagle delay).
    pub async fn client(&self) -> Result<Client> {
        client_at(self.addr).await
    }

    pub async fn stats(&self) -> Result<Stats> {
        let body = http_get(self.addr, "/stats").await?;
        let v: Value = serde_json::from_str(&body)?;
        Ok(Stats {
            connections: v["connections"].as_u64().context("connections")? as usize,
            rooms: v["rooms"].as_u64().context("rooms")? as usize,
            members: v["members"].as_u64().context("members")? as usize,
        })
    }

    /// Stats once the relay has caught up with closed connections.
    pub async fn settled_stats(&self, want: Stats) -> Result<Stats> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let stats = self.stats().await?;
            if stats == want || tokio::time::Instant::now() > deadline {
                return Ok(stats);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A client of the relay at `addr`, sending each frame at once (no Nagle delay).
pub async fn client_at(addr: SocketAddr) -> Result<Client> {
    client_at_path(addr, "/ws").await
}

/// [`client_at`] on `path`, which may carry a query (`/ws?token=...`).
pub async fn client_at_path(addr: SocketAddr, path: &str) -> Result<Client> {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    Ok(Client { ws })
}

/// A `wss://` client of the relay at `addr` that trusts `root` and nothing else.
pub async fn tls_client_at(addr: SocketAddr, root: &TestCert) -> Result<Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.der.clone())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config));
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector)).await?;
    Ok(Client { ws })
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made for one test.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCert {
    pub fn new() -> Result<Self> {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key_pair.serialize_pem(),
            der: cert.der().clone(),
        })
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A directory of the test's own under the system's temporary one, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "signalroom-{name}-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An upgrade on `path` the relay must refuse: its HTTP status, `WWW-Authenticate` header
/// (empty when absent) and body.
pub async fn refused_upgrade(addr: SocketAddr, path: &str) -> Result<(u16, String, String)> {
    use tokio_tungstenite::tungstenite::Error;
    let url = format!("ws://{addr}{path}");
    match tokio_tungstenite::connect_async_with_config(url, None, true).await {
        Ok(_) => bail!("the relay accepted a WebSocket on {path}"),
        Err(Error::Http(response)) => {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            Ok((response.status().as_u16(), challenge, body.into_owned()))
        }
        Err(other) => bail!("the upgrade failed otherwise: {other}"),
    }
}

/// The relay binary (`signalroom`, built beside the tests by `cargo test --workspace`) run
/// as a process of its own, for tests that kill it; killed when dropped.
pub struct RelayProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl RelayProcess {
    pub async fn start(args: &[String]) -> Result<Self> {
        Self::start_with(args, &[("RUST_LOG", "warn")], None).await
    }

    /// [`RelayProcess::start`] with more environment variables, its standard output and
    /// error both written to `log` when given.
    pub async fn start_with(
        args: &[String],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Result<Self> {
        let binary = relay_binary()?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut command = std::process::Command::new(binary);
        command
            .arg("--addr")
            .arg(addr.to_string())
            .args(args)
            .envs(env.iter().copied());
        if let Some(log) = log {
            let out = std::fs::File::create(log)?;
            command.stdout(out.try_clone()?).stderr(out);
        }
        let child = command.spawn().context("starting the relay")?;
        let relay = Self { addr, child };
        listening(addr, "the relay").await?;
        Ok(relay)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the relay with kill(1).
    pub fn signal(&self, signal: &str) -> Result<()> {
        send_signal(self.child.id(), signal)
    }

    /// SIGKILL: the relay stops without a word to anyone.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The relay binary beside the test binaries.
pub fn relay_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("signalroom"))
        .context("the target directory")?;
    ensure!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p signalroom-server`",
        binary.display()
    );
    Ok(binary)
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.0 GET; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    match http_status(addr, path).await? {
        (200, body) => Ok(body),
        (status, body) => bail!("GET {path}: {status} {body}"),
    }
}

/// A bare HTTP/1.0 GET; returns the status and the body.
pub async fn http_status(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl From<WebSocketStream<MaybeTlsStream<TcpStream>>> for Client {
    fn from(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { ws }
    }
}

impl Client {
    pub async fn send(&mut self, request: &Request<Value>) -> Result<()> {
        self.send_text(&serde_json::to_string(request)?).await
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        Ok(self.ws.send(Message::text(text)).await?)
    }

    pub async fn join(&mut self, room: &str) -> Result<Event<Value>> {
        self.send(&Request::CreateOrJoin {
            room: room_name(room),
        })
        .await?;
        self.recv().await
    }

    pub async fn say(&mut self, data: Value, to: Option<PeerId>) -> Result<()> {
        self.send(&Request::Message { data, to }).await
    }

    pub async fn recv(&mut self) -> Result<Event<Value>> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .context("no frame in time")?
                .context("connection closed")??;
            match frame {
                Message::Text(text) => return Ok(serde_json::from_str(&text)?),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => bail!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn expect_error(&mut self, code: ErrorCode) -> Result<()> {
        match self.recv().await? {
            Event::Error { code: got, .. } if got == code => Ok(()),
            other => bail!("expected error {code}, got {other:?}"),
        }
    }

    /// Reads until the relay closes the connection; returns the close code, if it sent one.
    pub async fn expect_close(&mut self) -> Result<Option<u16>> {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next()).await? {
                Some(Ok(Message::Close(frame))) => return Ok(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }

    /// Fails if a frame other than a heartbeat arrives within a short quiet period.
    pub async fn expect_silence(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(()),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(frame) => bail!("expected silence, got {frame:?}"),
            }
        }
    }
}

pub fn room_name(name: &str) -> RoomName {
    RoomName::new(name).expect("test room names are valid")
}

pub fn created_peer(event: Event<Value>) -> Result<PeerId> {
    match event {
        Event::Created { peer, .. } => Ok(peer),
        other => bail!("expected created, got {other:?}"),
    }
}

/// Puts `a` and then `b` into `room`; returns their ids once `a` has heard `b` come in.
pub async fn meet(a: &mut Client, b: &mut Client, room: &str) -> Result<(PeerId, PeerId)> {
    let a_id = created_peer(a.join(room).await?)?;
    let b_id = joined_peer(b, room, &[a_id]).await?;
    a.recv().await?;
    Ok((a_id, b_id))
}

pub async fn joined_peer(client: &mut Client, room: &str, inside: &[PeerId]) -> Result<PeerId> {
    match client.join(room).await? {
        Event::Joined { peer, peers, .. } if peers == inside => Ok(peer),
        other => bail!("expected joined with {inside:?}, got {other:?}"),
    }
}

/// A `redis-server` of the test's own on a free loopback port, without persistence;
/// killed when dropped.
pub struct RedisServer {
    pub url: String,
    port: u16,
    child: std::process::Child,
}

impl RedisServer {
    pub async fn start() -> Result<Self> {
        let port = free_port()?;
        let child = Self::spawn(port).await?;
        Ok(Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child,
        })
    }

    async fn spawn(port: u16) -> Result<std::process::Child> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
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
        self.child = Self::spawn(self.port).await?;
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

/// Waits until something accepts connections at `addr` (`what`, for the error).
pub async fn listening(addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not start on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Sends `signal` to process `pid` with kill(1).
fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// A local Redis Cluster of three masters without replicas on free loopback ports (and
/// their cluster-bus ports), built with `redis-cli --cluster create`; killed when dropped.
pub struct RedisCluster {
    /// Its nodes, comma-separated, as `--redis-url` takes them with `--redis-cluster`.
    pub urls: String,
    dir: std::path::PathBuf,
    children: Vec<std::process::Child>,
}

impl RedisCluster {
    pub async fn start() -> Result<Self> {
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
        while nodes.len() < 3 {
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
                ])
                .arg("--cluster-config-file")
                .arg(format!("nodes-{port}.conf"))
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("starting redis-server (scripts/setup.sh --test installs it)")?;
            cluster.children.push(child);
            listening(([127, 0, 0, 1], port).into(), "redis-server").await?;
            nodes.push(format!("127.0.0.1:{port}"));
        }
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running redis-cli --cluster create")?;
        ensure!(created.success(), "redis-cli --cluster create failed");
        // Every node must agree the cluster is up before it takes commands for any slot.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        for node in &nodes {
            let (_, port) = node.split_once(':').context("a node")?;
            loop {
                let info = std::process::Command::new("redis-cli")
                    .args(["-p", port, "cluster", "info"])
                    .output()?;
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the cluster did not come up"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster.urls = nodes
            .iter()
            .map(|n| format!("redis://{n}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(cluster)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy to `target` that a test can cut: `cut` drops every connection through it
/// and refuses new ones until `mend`, as a network partition would.
pub struct CutProxy {
    pub addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_cut, all) = (cut.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                all.lock().expect("the links").push(link.abort_handle());
            }
        });
        Ok(Self {
            addr,
            cut,
            links,
            accept,
        })
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().expect("the links").drain(..) {
            link.abort();
        }
    }

    pub fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
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

/// A port free on loopback just now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A relay's config that shares rooms through `redis`.
pub fn shared(redis: &RedisServer) -> Config {
    Config {
        redis_url: Some(redis.url.clone()),
        ..Config::default()
    }
}

/// A coturn `turnserver` of the test's own on a free loopback port, checking TURN REST
/// credentials against `secret` (coturn's `use-auth-secret`); killed when dropped. Its
/// settings, the secret included, are in a file, so `ps` shows no secret.
pub struct TurnServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

/// What `turnutils_uclient` made of a credential.
#[derive(Debug)]
pub struct TurnCheck {
    /// It allocated a relay and its packets came back through it.
    pub relayed: bool,
    /// Its exit status and output, for assertion messages.
    pub report: String,
}

impl TurnServer {
    pub async fn start(secret: &str) -> Result<Self> {
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("signalroom-turn-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        // Relay ports: 100 of them, away from the ephemeral range the other servers use.
        let relay_base = 10_000 + (port % 200) * 100;
        let settings = format!(
            "use-auth-secret\n\
             static-auth-secret={secret}\n\
             realm=signalroom.test\n\
             listening-ip=127.0.0.1\n\
             listening-port={port}\n\
             relay-ip=127.0.0.1\n\
             min-port={relay_base}\n\
             max-port={}\n\
             allow-loopback-peers\n\
             no-tls\nno-dtls\nno-cli\n\
             fingerprint\n\
             log-file=stdout\nsimple-log\n\
             userdb={}\n\
             pidfile={}\n",
            relay_base + 99,
            dir.join("turndb").display(),
            dir.join("turnserver.pid").display(),
        );
        let conf = dir.join("turnserver.conf");
        std::fs::write(&conf, settings)?;
        let log = std::fs::File::create(dir.join("turnserver.log"))?;
        let child = match std::process::Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error).context(
                    "starting turnserver: run scripts/setup.sh --test, which installs coturn",
                );
            }
        };
        let server = Self { port, dir, child };
        listening(([127, 0, 0, 1], port).into(), "turnserver").await?;
        Ok(server)
    }

    /// Its URL, as `--turn-url` takes it.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.log")).unwrap_or_default()
    }

    /// Allocates a relay on this server with `turnutils_uclient` as `username` with
    /// `password`, and sends a few packets through it to a `turnutils_peer` that echoes them.
    pub async fn check(&self, username: &str, password: &str) -> Result<TurnCheck> {
        let port = self.port;
        let (username, password) = (username.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || uclient(port, &username, &password)).await?
    }
}

/// See [`TurnServer::check`].
fn uclient(port: u16, username: &str, password: &str) -> Result<TurnCheck> {
    use std::process::{Command, Stdio};
    let peer_port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting turnutils_peer: run scripts/setup.sh --test, which installs coturn")?;
    std::thread::sleep(Duration::from_millis(200));
    let output = Command::new("timeout")
        .args(["30", "turnutils_uclient"])
        .args(["-p", &port.to_string(), "-u", username, "-w", password])
        .args([
            "-n",
            "1",
            "-m",
            "1",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
        ])
        .arg("127.0.0.1")
        .output();
    let _ = peer.kill();
    let _ = peer.wait();
    let output = output.context("running turnutils_uclient (coturn's test client)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.code() != Some(127),
        "turnutils_uclient is missing: run scripts/setup.sh --test, which installs coturn"
    );
    // Accepted: exit 0, and every packet came back through the relay. Refused: a non-zero
    // exit after "Cannot complete Allocation" (the server answered 401).
    let relayed = output.status.success() && text.contains("Total lost packets 0 (0.000000%)");
    let refused = !output.status.success() && text.contains("Cannot complete Allocation");
    ensure!(
        relayed || refused,
        "turnutils_uclient neither relayed nor was refused ({}):\n{text}",
        output.status
    );
    Ok(TurnCheck {
        relayed,
        report: format!("{}:\n{text}", output.status),
    })
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
