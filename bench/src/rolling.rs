//! A rolling restart under load: relays sharing rooms through a `redis-server` of the
//! benchmark's own are stopped one after another with SIGTERM (each drains its sessions into
//! the others) and started again, while resumable clients in rooms of two send each other
//! numbered messages. Every client checks that its partner's numbers arrive in order and
//! once, and that nobody comes or goes; the report says how long each relay took to drain.
//!
//! The clients are `signalroom-client`'s, as a program would use them: they reach the
//! relays through a balancer of the benchmark's own (`balancer.rs`), which sends each new
//! connection to a relay that is up, as an operator's does once `/readyz` fails; the
//! client resumes its session on whatever connection it gets.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use signalroom_client::{connect, Client, Events, Options, Update};
use signalroom_protocol::{Event, PeerId, RoomName};
use tokio::net::TcpStream;

use crate::balancer::{self, Live};

/// How long a client waits for anything before it takes the run for stuck.
const PATIENCE: Duration = Duration::from_secs(10);

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

/// What one side of a pair sent, for its partner to know when it has everything.
#[derive(Default)]
struct Side {
    sent: AtomicU64,
    stopped: AtomicBool,
}

/// One client of a pair: its id, its handle and what it hears.
struct Member {
    peer: PeerId,
    client: Client<Value>,
    events: Events<Value>,
}

impl Member {
    /// Enters `room` through the balancer at `addr`, resumably.
    async fn join(addr: SocketAddr, room: &RoomName) -> Result<Self> {
        let (client, events) = connect::<Value>(Options::new(&format!("ws://{addr}"))?).await?;
        let entered = client.create_or_join(room.clone()).await?;
        ensure!(entered.resumable.is_some(), "the relay offers no session");
        Ok(Self {
            peer: entered.peer,
            client,
            events,
        })
    }

    /// The next update, within [`PATIENCE`].
    async fn next(&mut self) -> Result<Update<Value>> {
        tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .with_context(|| format!("{} heard nothing in {PATIENCE:?}", self.peer))?
            .with_context(|| format!("{}'s client ended", self.peer))
    }
}

/// Sends `partner` a number every `every`, checks the partner's, and counts the resumes
/// its client made; returns how many numbers it checked, how many resumes it saw, and the
/// client, still in its room: closing it here would make its partner, which may still be
/// checking, hear it leave.
async fn drive(
    mut member: Member,
    partner: PeerId,
    (me, other): (Arc<Side>, Arc<Side>),
    stop: Arc<AtomicBool>,
    every: Duration,
) -> Result<(u64, u64, Member)> {
    let (id, mut next, mut resumes) = (member.peer, 1u64, 0u64);
    let mut tick = tokio::time::interval(every);
    loop {
        if stop.load(Ordering::SeqCst) {
            me.stopped.store(true, Ordering::SeqCst);
        }
        let stopped = me.stopped.load(Ordering::SeqCst);
        if stopped
            && other.stopped.load(Ordering::SeqCst)
            && next > other.sent.load(Ordering::SeqCst)
        {
            return Ok((next - 1, resumes, member));
        }
        tokio::select! {
            update = member.next() => match update? {
                Update::Event(Event::Message { from, data }) => {
                    ensure!(from == partner, "{id} got a number from {from}");
                    let n = data["n"].as_u64();
                    ensure!(n == Some(next), "{id} got {n:?} from {from}, expected {next}");
                    next += 1;
                }
                Update::Event(Event::Away { .. } | Event::Back { .. }) | Update::Disconnected { .. } => {}
                Update::Resumed { peer, incomplete } => {
                    ensure!(peer == id, "{id} resumed as {peer}");
                    ensure!(!incomplete, "{id}'s session lost frames on the way");
                    resumes += 1;
                }
                other => bail!("{id} got {other:?}"),
            },
            // Stopped, it still wakes each tick to see whether its partner is done.
            _ = tick.tick() => if !stopped {
                let n = me.sent.load(Ordering::SeqCst) + 1;
                member.client.send_to(partner, json!({ "n": n })).await?;
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
    let live = Live::new(fleet.relays.iter().map(|(a, _)| *a).collect());
    let balancer = balancer::start(live.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut pairs = Vec::new();
    for pair in 0..rooms {
        let room = RoomName::new(format!("rolling-{pair}")).context("room name")?;
        // The balancer takes turns: the two of a pair land on two relays.
        let mut a = Member::join(balancer.addr, &room).await?;
        let b = Member::join(balancer.addr, &room).await?;
        match a.next().await? {
            Update::Event(Event::Join { peer, .. }) if peer == b.peer => {}
            other => bail!("expected the partner's join, got {other:?}"),
        }
        pairs.push((a, b));
    }
    // Every pair in its room, they all start sending.
    let mut drivers = Vec::new();
    for (a, b) in pairs {
        let (a_side, b_side) = (Arc::new(Side::default()), Arc::new(Side::default()));
        let (a_id, b_id) = (a.peer, b.peer);
        let sides = (a_side.clone(), b_side.clone());
        drivers.push(tokio::spawn(drive(a, b_id, sides, stop.clone(), every)));
        drivers.push(tokio::spawn(drive(
            b,
            a_id,
            (b_side, a_side),
            stop.clone(),
            every,
        )));
    }
    println!(
        "rolling restart: {rooms} rooms of two on {relays} relays, each client sending every {every:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..relays {
        // Its readiness check fails at once: the balancer sends it nothing new.
        live.remove(fleet.relays[i].0);
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
        live.add(relay.0);
        fleet.relays[i] = relay;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut checked, mut resumes, mut done) = (0, 0, Vec::new());
    for driver in drivers {
        let (numbers, took, member) = tokio::time::timeout(Duration::from_secs(60), driver)
            .await
            .context("a client did not finish")???;
        checked += numbers;
        resumes += took;
        done.push(member);
    }
    for member in done {
        member.client.close().await;
    }
    println!(
        "rolling restart: {checked} numbered messages checked, none lost, duplicated or reordered; \
         {resumes} resumes, every id kept, no left or join"
    );
    drop(balancer);
    Ok(())
}
