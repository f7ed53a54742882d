//! A rolling restart under load: relays sharing rooms through a `redis-server` of the
//! benchmark's own are stopped one after another with SIGTERM (each drains its sessions into
//! the others) and started again, while resumable clients in rooms of two send each other
//! numbered messages. Every client checks that its partner's numbers arrive in order and
//! once, and that nobody comes or goes; the report says how long each relay took to drain.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalroom_protocol::{Event, PeerId, Request, ResumeKey};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Counted frames after which a client acknowledges, as the page does.
const ACK_EVERY: u64 = 16;
/// How long a client waits for a frame before it takes its connection for dead.
const PATIENCE: Duration = Duration::from_secs(5);

/// The relays under test and the Redis they share. Killed when dropped.
struct Fleet {
    redis: Child,
    relays: Vec<(SocketAddr, Child)>,
    redis_url: String,
    relay_bin: std::path::PathBuf,
}

impl Fleet {
    async fn start(relays: usize, relay_bin: std::path::PathBuf) -> Result<Self> {
        let addr = crate::free_addr()?;
        let redis = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        listening(addr).await?;
        let mut fleet = Self {
            redis,
            relays: Vec::new(),
            redis_url: format!("redis://{addr}"),
            relay_bin,
        };
        for _ in 0..relays {
            let relay = fleet.relay().await?;
            fleet.relays.push(relay);
        }
        Ok(fleet)
    }

    /// A new relay process on this Redis.
    async fn relay(&self) -> Result<(SocketAddr, Child)> {
        let addr = crate::free_addr()?;
        let child = Command::new(&self.relay_bin)
            .args(["--addr", &addr.to_string(), "--redis-url", &self.redis_url])
            // The benchmark measures the restart, not the abuse limits.
            .args(["--rate-per-sec", "1000000", "--rate-burst", "1000000"])
            .args(["--max-connections", "50000", "--max-rooms", "50000"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting a relay")?;
        listening(addr).await?;
        Ok((addr, child))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.relays {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.redis.kill();
        let _ = self.redis.wait();
    }
}

async fn listening(addr: SocketAddr) -> Result<()> {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("nothing listens on {addr}")
}

/// One resumable client: the protocol's side of a session, as PROTOCOL.md asks of a client.
struct Client {
    ws: Ws,
    peer: PeerId,
    key: ResumeKey,
    received: u64,
    unacked: u64,
    sent: u64,
    /// Counted frames sent and not yet acknowledged, with their numbers.
    kept: std::collections::VecDeque<(u64, String)>,
}

async fn open(addr: SocketAddr) -> Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?resume")).await?;
    Ok(ws)
}

async fn next_event(ws: &mut Ws) -> Result<Event<Value>> {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .context("no frame in time")?
            .context("closed")??;
        match frame {
            Message::Text(text) => return Ok(serde_json::from_str(&text)?),
            Message::Ping(_) | Message::Pong(_) => {}
            other => bail!("{other:?}"),
        }
    }
}

impl Client {
    /// Joins `room` on the relay at `addr`.
    async fn join(addr: SocketAddr, room: &str) -> Result<Self> {
        let mut ws = open(addr).await?;
        let join = json!({ "type": "create_or_join", "room": room });
        ws.send(Message::text(join.to_string())).await?;
        let (peer, grant) = match next_event(&mut ws).await? {
            Event::Created { peer, resume, .. } | Event::Joined { peer, resume, .. } => {
                (peer, resume.context("a resumable connection gets a key")?)
            }
            other => bail!("expected created or joined, got {other:?}"),
        };
        Ok(Self {
            ws,
            peer,
            key: grant.key,
            received: 1,
            unacked: 1,
            sent: 1,
            kept: Default::default(),
        })
    }

    /// Sends a counted frame, keeping it until acknowledged; a dead connection does not
    /// fail it (the resume sends it again).
    async fn send(&mut self, text: String) {
        self.sent += 1;
        let _ = self.ws.send(Message::text(text.clone())).await;
        self.kept.push_back((self.sent, text));
    }

    /// The next counted frame. Cancel-safe: a due `ack` goes before the next read.
    async fn recv(&mut self) -> Result<Event<Value>> {
        loop {
            if self.unacked >= ACK_EVERY {
                self.unacked = 0;
                let ack = json!({ "type": "ack", "received": self.received });
                let _ = self.ws.send(Message::text(ack.to_string())).await;
            }
            match next_event(&mut self.ws).await? {
                Event::Ack { received } => self.acknowledged(received),
                event => {
                    self.received += 1;
                    self.unacked += 1;
                    return Ok(event);
                }
            }
        }
    }

    fn acknowledged(&mut self, received: u64) {
        while self.kept.front().is_some_and(|(n, _)| *n <= received) {
            self.kept.pop_front();
        }
    }

    /// Resumes on the relay at `addr`: `Ok(false)` if it cannot be reached (or is stopping).
    async fn resume(&mut self, addr: SocketAddr) -> Result<bool> {
        let Ok(mut ws) = open(addr).await else {
            return Ok(false);
        };
        let resume = Request::<Value>::Resume {
            peer: self.peer,
            key: self.key.clone(),
            received: self.received,
        };
        ws.send(Message::text(serde_json::to_string(&resume)?))
            .await?;
        loop {
            match next_event(&mut ws).await {
                Ok(Event::Resumed {
                    peer,
                    received,
                    resume,
                    incomplete,
                    ..
                }) => {
                    ensure!(peer == self.peer, "resumed as {peer}, not {}", self.peer);
                    ensure!(!incomplete, "{peer}'s session lost frames on the way");
                    self.key = resume.key;
                    self.unacked = 0;
                    self.acknowledged(received);
                    for (_, text) in &self.kept {
                        ws.send(Message::text(text.clone())).await?;
                    }
                    self.ws = ws;
                    return Ok(true);
                }
                Ok(Event::Ack { received }) => self.acknowledged(received),
                Ok(Event::Error { code, .. }) => {
                    bail!("{}'s resume was refused: {code}", self.peer)
                }
                Ok(other) => bail!("expected resumed, got {other:?}"),
                Err(_) => return Ok(false),
            }
        }
    }
}

/// What one side of a pair sent, for its partner to know when it has everything.
#[derive(Default)]
struct Side {
    sent: AtomicU64,
    stopped: AtomicBool,
}

/// The relays a client may resume on.
type Live = Arc<Mutex<Vec<SocketAddr>>>;

/// Sends `partner` a number every `every`, checks the partner's, resumes whenever the
/// connection ends; returns how many numbers it checked and how many resumes it took.
async fn drive(
    mut client: Client,
    partner: PeerId,
    (me, other): (Arc<Side>, Arc<Side>),
    (stop, live): (Arc<AtomicBool>, Live),
    every: Duration,
) -> Result<(u64, u64)> {
    let (id, mut next, mut resumes) = (client.peer, 1u64, 0u64);
    let mut tick = tokio::time::interval(every);
    let mut pick = u64::from(id);
    loop {
        if stop.load(Ordering::SeqCst) {
            me.stopped.store(true, Ordering::SeqCst);
        }
        let stopped = me.stopped.load(Ordering::SeqCst);
        if stopped
            && other.stopped.load(Ordering::SeqCst)
            && next > other.sent.load(Ordering::SeqCst)
        {
            return Ok((next - 1, resumes));
        }
        tokio::select! {
            event = client.recv() => match event {
                Ok(Event::Message { from, data }) => {
                    ensure!(from == partner, "{id} got a number from {from}");
                    let n = data["n"].as_u64();
                    ensure!(n == Some(next), "{id} got {n:?} from {from}, expected {next}");
                    next += 1;
                }
                Ok(Event::Away { .. } | Event::Back { .. }) => {}
                Ok(other) => bail!("{id} got {other:?}"),
                Err(_) => {
                    for attempt in 0.. {
                        ensure!(attempt < 200, "{id} found no relay to resume on");
                        pick = pick.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let addr = {
                            let live = live.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                            live[(pick >> 33) as usize % live.len()]
                        };
                        if client.resume(addr).await? {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    resumes += 1;
                }
            },
            _ = tick.tick(), if !stopped => {
                let n = me.sent.load(Ordering::SeqCst) + 1;
                let message = json!({ "type": "message", "data": { "n": n }, "to": partner });
                client.send(message.to_string()).await;
                me.sent.store(n, Ordering::SeqCst);
            }
        }
    }
}

/// Runs the rolling restart: `rooms` rooms of two on `relays` relays, each client sending
/// every `every`; prints each relay's drain time and what the clients checked.
pub async fn run(
    rooms: usize,
    relays: usize,
    every: Duration,
    relay_bin: std::path::PathBuf,
) -> Result<()> {
    ensure!(relays >= 2, "a rolling restart needs two relays at least");
    let mut fleet = Fleet::start(relays, relay_bin).await?;
    let live: Live = Arc::new(Mutex::new(fleet.relays.iter().map(|(a, _)| *a).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::new();
    for pair in 0..rooms {
        let room = format!("rolling-{pair}");
        let a_addr = fleet.relays[pair % relays].0;
        let b_addr = fleet.relays[(pair + 1) % relays].0;
        let mut a = Client::join(a_addr, &room).await?;
        let b = Client::join(b_addr, &room).await?;
        match a.recv().await? {
            Event::Join { peer, .. } if peer == b.peer => {}
            other => bail!("expected the partner's join, got {other:?}"),
        }
        let (a_side, b_side) = (Arc::new(Side::default()), Arc::new(Side::default()));
        let (a_id, b_id) = (a.peer, b.peer);
        let shared = (stop.clone(), live.clone());
        let sides = (a_side.clone(), b_side.clone());
        drivers.push(tokio::spawn(drive(a, b_id, sides, shared.clone(), every)));
        drivers.push(tokio::spawn(drive(
            b,
            a_id,
            (b_side, a_side),
            shared,
            every,
        )));
    }
    println!(
        "rolling restart: {rooms} rooms of two on {relays} relays, each client sending every {every:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..relays {
        let addr = fleet.relays[i].0;
        live.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .retain(|a| *a != addr);
        let started = Instant::now();
        let pid = fleet.relays[i].1.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        loop {
            if fleet.relays[i].1.try_wait()?.is_some() {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "relay {i} did not exit"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("relay {i}: drained and exited in {:?}", started.elapsed());
        let relay = fleet.relay().await?;
        live.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(relay.0);
        fleet.relays[i] = relay;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut checked, mut resumes) = (0, 0);
    for driver in drivers {
        let (numbers, took) = tokio::time::timeout(Duration::from_secs(60), driver)
            .await
            .context("a client did not finish")???;
        checked += numbers;
        resumes += took;
    }
    println!(
        "rolling restart: {checked} numbered messages checked, none lost, duplicated or reordered; \
         {resumes} resumes, every id kept, no left or join"
    );
    Ok(())
}
