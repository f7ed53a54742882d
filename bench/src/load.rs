//! The load generator: rooms of two, each pair keeping some messages in flight. A sends, B
//! echoes the data back through the relay, A times the round trip.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::net::TcpSocket;

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::wire::{self, Conn, Io};

/// Loopback source addresses client sockets are spread over, so that tens of thousands of
/// connections do not exhaust one address's ephemeral ports.
const SOURCES: u8 = 16;

/// Opens a WebSocket to `target` from a loopback address picked by `n`, over TLS with
/// `tls`, resumable (`/ws?resume`) with `resumable`.
pub async fn connect(
    target: SocketAddr,
    n: usize,
    tls: Option<&TlsConnector>,
    resumable: bool,
) -> Result<Conn> {
    let source = Ipv4Addr::new(127, 0, 10 + (n % usize::from(SOURCES)) as u8, 1);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let io = match tls {
        None => Io::Plain(stream),
        Some(tls) => {
            let name = ServerName::try_from("localhost").expect("a DNS name");
            Io::Tls(Box::new(tls.connect(name, stream).await?))
        }
    };
    let path = if resumable { "/ws?resume" } else { "/ws" };
    Conn::upgrade(io, &target.to_string(), path).await
}

/// The server under load: the relay (rooms, ids), or one of the forwarders that pair
/// connections by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The signalroom relay.
    Relay,
    /// The signalroom relay serving TLS (`wss://`) with a certificate of the benchmark's own.
    RelayTls,
    /// The signalroom relay with resumable clients (`/ws?resume`), which acknowledge what
    /// they receive every 16 frames, as the page does.
    RelayResume,
    /// The signalroom relay with its metrics listener on, scraped every second.
    RelayMetrics,
    /// Another build of the relay (`--baseline-bin`).
    Baseline,
    /// `RelayTls` with the other build (`--baseline-bin`).
    BaselineTls,
    /// The relay in the clear behind nginx, which terminates TLS (a configuration the
    /// benchmark writes): what an operator would run instead of the relay's own TLS.
    NginxTls,
    /// A plain tokio-tungstenite forwarder (`floor.rs`).
    Floor,
    /// The least any forwarder can do (`bare.rs`).
    Bare,
    /// One relay sharing rooms through a `redis-server`, both pages of a pair on it.
    RedisLocal,
    /// Two relays sharing rooms through a `redis-server`, every pair split across them.
    RedisSplit,
    /// `RedisLocal` with the other build (`--baseline-bin`).
    BaselineRedisLocal,
    /// `RedisSplit` with the other build (`--baseline-bin`).
    BaselineRedisSplit,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Relay => "relay",
            Kind::RelayTls => "relay-tls",
            Kind::RelayResume => "relay-resume",
            Kind::RelayMetrics => "relay-metrics",
            Kind::Baseline => "baseline",
            Kind::BaselineTls => "baseline-tls",
            Kind::NginxTls => "nginx-tls",
            Kind::Floor => "floor",
            Kind::Bare => "bare",
            Kind::RedisLocal => "redis-local",
            Kind::RedisSplit => "redis-split",
            Kind::BaselineRedisLocal => "baseline-redis-local",
            Kind::BaselineRedisSplit => "baseline-redis-split",
        }
    }

    /// Whether it runs the other build (`--baseline-bin`).
    pub fn baseline(self) -> bool {
        matches!(
            self,
            Kind::Baseline
                | Kind::BaselineTls
                | Kind::BaselineRedisLocal
                | Kind::BaselineRedisSplit
        )
    }

    /// Whether its clients speak TLS.
    pub fn tls(self) -> bool {
        matches!(self, Kind::RelayTls | Kind::BaselineTls | Kind::NginxTls)
    }

    /// Whether its clients are resumable.
    pub fn resumable(self) -> bool {
        self == Kind::RelayResume
    }

    /// Whether it has rooms to join (the forwarders pair by arrival).
    pub fn has_rooms(self) -> bool {
        !matches!(self, Kind::Floor | Kind::Bare)
    }
}

/// Opens the two connections of pair `n`, A's to `a` and B's to `b`.
pub async fn connect_pair(
    a: SocketAddr,
    b: SocketAddr,
    n: usize,
    tls: Option<&TlsConnector>,
    resumable: bool,
) -> Result<(Conn, Conn)> {
    Ok((
        connect(a, 2 * n, tls, resumable).await?,
        connect(b, 2 * n + 1, tls, resumable).await?,
    ))
}

/// A resumable client's count of what it received, acknowledged every [`ACK_EVERY`].
struct Acks {
    on: bool,
    received: u64,
    unacked: u64,
}

/// Counted frames after which a resumable client acknowledges, as the page does.
const ACK_EVERY: u64 = 16;

impl Acks {
    /// A client that received `received` counted frames while joining.
    fn new(on: bool, received: u64) -> Self {
        Self {
            on,
            received,
            unacked: received,
        }
    }

    /// Counts `n` frames; the `ack` to send, when due.
    fn received(&mut self, n: usize) -> Option<Vec<u8>> {
        if !self.on {
            return None;
        }
        self.received += n as u64;
        self.unacked += n as u64;
        (self.unacked >= ACK_EVERY).then(|| {
            self.unacked = 0;
            wire::text_frame(&format!(r#"{{"type":"ack","received":{}}}"#, self.received))
        })
    }
}

/// Puts pair `n` into room `n`; returns the two join latencies (A creates, B joins).
pub async fn join_pair(a: &mut Conn, b: &mut Conn, n: usize) -> Result<[Duration; 2]> {
    let join = wire::text_frame(&format!(
        r#"{{"type":"create_or_join","room":"bench-{n}"}}"#
    ));
    let start = Instant::now();
    a.send(&join).await?;
    let created = a.next_text().await?;
    let a_took = start.elapsed();
    let start = Instant::now();
    b.send(&join).await?;
    let joined = b.next_text().await?;
    let b_took = start.elapsed();
    let announced = a.next_text().await?;
    if !created.contains(r#""created""#)
        || !joined.contains(r#""joined""#)
        || !announced.contains(r#""join""#)
    {
        bail!("room {n}: unexpected {created} / {joined} / {announced}");
    }
    Ok([a_took, b_took])
}

/// Counters shared by every pair.
#[derive(Default)]
pub struct Tally {
    /// Set while the measured window is open.
    pub measuring: AtomicBool,
    /// Set when the run is over.
    pub stop: AtomicBool,
    /// Round trips completed in the window.
    pub round_trips: AtomicU64,
    /// The longest round trip of the whole run, warm-up and wind-down included, in
    /// nanoseconds: one frame left waiting shows here, whatever the percentiles say.
    pub longest_ns: AtomicU64,
}

impl Tally {
    /// The longest round trip seen so far.
    pub fn longest(&self) -> Duration {
        Duration::from_nanos(self.longest_ns.load(Ordering::Relaxed))
    }
}

/// Drives one pair until told to stop; returns the round-trip times seen in the window.
/// A sends, B answers every message with the same data, A times each round trip. Both
/// answer everything one read brought with one write, as an efficient client would, so the
/// generator leaves the cores to the server under test.
pub async fn drive(
    mut a: Conn,
    mut b: Conn,
    in_flight: usize,
    payload: usize,
    writes: Writes,
    resumable: bool,
    tally: Arc<Tally>,
) -> Result<Vec<Duration>> {
    // Every message carries the same data, so B's echo of it is the same prebuilt frame:
    // the generator spends its CPU on the sockets, not on formatting or masking.
    let frame = wire::text_frame(&format!(
        r#"{{"type":"message","data":"{}"}}"#,
        "x".repeat(payload)
    ));
    let frames = frame.repeat(in_flight);
    let echo_frames = frames.clone();
    let size = frame.len();
    // While joining, A received `created` and `join`, B `joined`.
    let mut b_acks = Acks::new(resumable, 1);
    let mut a_acks = Acks::new(resumable, 2);
    let echo = tokio::spawn(async move {
        while let Ok(received) = b.texts().await {
            let ack = b_acks.received(received);
            if send_many(&mut b, ack, &echo_frames, size, received, writes)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut sent_at = std::collections::VecDeque::with_capacity(in_flight);
    let mut rtts = Vec::new();
    sent_at.extend(std::iter::repeat_n(Instant::now(), in_flight));
    a.send(&frames).await?;
    while !tally.stop.load(Ordering::Relaxed) {
        let echoed = a.texts().await?;
        let measuring = tally.measuring.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut longest = Duration::ZERO;
        for _ in 0..echoed {
            let sent = sent_at.pop_front().context("an echo nobody sent")?;
            let rtt = now - sent;
            longest = longest.max(rtt);
            if measuring {
                rtts.push(rtt);
            }
            sent_at.push_back(now);
        }
        let longest = u64::try_from(longest.as_nanos()).unwrap_or(u64::MAX);
        tally.longest_ns.fetch_max(longest, Ordering::Relaxed);
        if measuring {
            tally
                .round_trips
                .fetch_add(echoed as u64, Ordering::Relaxed);
        }
        let ack = a_acks.received(echoed);
        send_many(&mut a, ack, &frames, size, echoed, writes).await?;
    }
    echo.abort();
    Ok(rtts)
}

/// How a client sends the frames it has ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Writes {
    /// All in one write, as an efficient client does: the least work for the server.
    Batched,
    /// One write per frame, as a browser sends each `send()`: frames arrive in quick
    /// succession, often while the server is reading the one before.
    PerFrame,
}

/// Sends `count` copies of the frame of `size` bytes that `frames` repeats, after `ack`
/// (a resumable client's acknowledgement; in the same write when writes are batched).
async fn send_many(
    conn: &mut Conn,
    ack: Option<Vec<u8>>,
    frames: &[u8],
    size: usize,
    count: usize,
    writes: Writes,
) -> Result<()> {
    let batch = match writes {
        Writes::Batched => frames.len() / size,
        Writes::PerFrame => 1,
    };
    let mut left = count;
    if let Some(mut ack) = ack {
        if writes == Writes::Batched {
            let now = left.min(batch);
            ack.extend_from_slice(&frames[..now * size]);
            left -= now;
        }
        conn.send(&ack).await?;
    }
    while left > 0 {
        let now = left.min(batch);
        conn.send(&frames[..now * size]).await?;
        left -= now;
    }
    Ok(())
}
