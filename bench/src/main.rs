//! `signalroom-bench`: measures the relay against a floor on the same machine and reports
//! throughput, latency, CPU per relayed message and memory per connection.
//!
//! The relay (release build) and the forwarders run as processes of their own, so the CPU and
//! memory read from `/proc` are theirs alone. See the README's performance section.

mod balancer;
mod bare;
mod calls;
mod floor;
mod load;
mod nginx;
mod proc;
mod rolling;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use load::{Kind, Tally, Writes};

#[derive(Parser)]
#[command(
    name = "signalroom-bench",
    about = "Benchmarks the signalroom relay against plain and bare WebSocket forwarders"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Rooms of two with messages in flight: throughput, round trips, joins, CPU, memory.
    Load {
        /// Room counts to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        rooms: Vec<usize>,
        /// Messages each pair keeps in flight.
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 200)]
        payload: usize,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Runs of each server, alternating them; the median run is reported.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Also run the bare forwarder, the least any forwarder can do for this work (no
        /// validation, ids or rooms): the machine's ceiling.
        #[arg(long)]
        bare: bool,
        /// The relay's --idle-timeout, in seconds: it pings every third of it. Far away, so
        /// that a frame left unread until the heartbeat shows as a stall.
        #[arg(long, default_value_t = 300.0)]
        idle_timeout: f64,
        /// A run whose longest round trip exceeds this many seconds is reported broken and
        /// the benchmark fails: a healthy relay answers within milliseconds even at 5000
        /// rooms, and a frame left waiting for the heartbeat takes seconds.
        #[arg(long, default_value_t = 1.0)]
        stall: f64,
        /// How clients write the frames they have ready.
        #[arg(long, value_enum, default_value_t = Writes::Batched)]
        writes: Writes,
        /// Also run relays sharing rooms through a `redis-server` of the benchmark's own:
        /// one relay with both pages of each pair on it, and two relays with every pair
        /// split across them (their CPU and memory include redis-server's).
        #[arg(long)]
        redis: bool,
        /// Also run the relay serving TLS (`wss://`, a certificate of the benchmark's own;
        /// the clients' TLS work is theirs, the relay's is in its CPU).
        #[arg(long)]
        tls: bool,
        /// Also run the relay with resumable clients (`/ws?resume`), acknowledging every 16
        /// frames as the page does.
        #[arg(long)]
        resume: bool,
        /// Also run the relay with its metrics listener on (`--metrics-addr`), scraped every
        /// second as Prometheus would.
        #[arg(long)]
        metrics: bool,
        /// The relay binary to measure; by default the `signalroom` beside this benchmark.
        /// Another build's, to compare two versions on the same machine.
        #[arg(long)]
        relay_bin: Option<PathBuf>,
        /// Also run this other build of the relay, alternating with this one: what a change
        /// costs, measured in one run (with --redis, on Redis too: baseline-redis-local and
        /// baseline-redis-split).
        #[arg(long)]
        baseline_bin: Option<PathBuf>,
    },
    /// Connections joined in rooms of two and held: the relay's memory per connection.
    Idle {
        /// Connections to hold.
        #[arg(long, default_value_t = 18_000)]
        connections: usize,
        /// Over TLS (`wss://`): each connection also holds its TLS session.
        #[arg(long)]
        tls: bool,
        /// With --tls: nginx terminates TLS in front of the plain relay (their memory and
        /// descriptors summed).
        #[arg(long, requires = "tls")]
        nginx: bool,
        /// Resumable connections (`/ws?resume`): each also holds its session.
        #[arg(long)]
        resume: bool,
        /// The relay binary to measure; by default the `signalroom` beside this benchmark.
        #[arg(long)]
        relay_bin: Option<PathBuf>,
    },
    /// A rolling restart under load: relays on a `redis-server` of the benchmark's own are
    /// stopped one after another with SIGTERM (each drains its sessions into the others)
    /// and started again, while resumable clients in rooms of two send each other numbered
    /// messages; each relay's drain time, and what the clients checked (nothing lost,
    /// duplicated or reordered, no one coming or going).
    Rolling {
        /// Rooms of two.
        #[arg(long, default_value_t = 1000)]
        rooms: usize,
        /// Relays, restarted one after another.
        #[arg(long, default_value_t = 3)]
        relays: usize,
        /// Milliseconds between two messages of one client.
        #[arg(long, default_value_t = 100)]
        every_ms: u64,
        /// The relay binary; by default the `signalroom` beside this benchmark.
        #[arg(long)]
        relay_bin: Option<PathBuf>,
    },
    /// Calls set up at once by native WebRTC peers (str0m) through the relay: the time from
    /// a newcomer's start to the data channel open at both ends, the relay's part of it,
    /// and the relay's CPU per call.
    Calls {
        /// How many calls to start at once, comma-separated; one relay for each count.
        #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
        calls: Vec<usize>,
        /// The relay binary; by default the `signalroom` beside this benchmark.
        #[arg(long)]
        relay_bin: Option<PathBuf>,
    },
    /// A short run of each, so the benchmark never rots (part of the test command).
    Smoke,
    /// Runs the floor forwarder (used by `load`).
    #[command(hide = true)]
    Floor {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Runs the bare forwarder (used by `load --bare`).
    #[command(hide = true)]
    Bare {
        #[arg(long)]
        addr: SocketAddr,
    },
}

fn main() -> Result<()> {
    // Each connection is a descriptor; take all the process may have.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let cli = Cli::parse();
    let runtime = match cli.command {
        // The forwarders are servers under test: they get what the relay gets.
        Cmd::Floor { .. } | Cmd::Bare { .. } => tokio::runtime::Runtime::new()?,
        // The load generator runs on one thread: no wakeups between its own threads.
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async {
        match cli.command {
            Cmd::Floor { addr } => floor::run(tokio::net::TcpListener::bind(addr).await?).await,
            Cmd::Bare { addr } => bare::run(tokio::net::TcpListener::bind(addr).await?).await,
            Cmd::Load { rooms, in_flight, payload, warmup, seconds, runs, bare, redis, tls, resume, metrics, idle_timeout, stall, writes, relay_bin, baseline_bin } => {
                let work = Work { in_flight, payload, warmup: Duration::from_secs_f64(warmup), window: Duration::from_secs_f64(seconds), runs: runs.max(1), bare, redis, tls, resume, metrics, idle_timeout: Duration::from_secs_f64(idle_timeout), stall: Duration::from_secs_f64(stall), writes, relay_bin, baseline_bin };
                println!("work: rooms of two, {in_flight} in flight per pair, {payload}-byte payloads, {seconds} s measured, {} run(s) each; relay pings every {:.0} s", work.runs, idle_timeout / 3.0);
                let mut broken = 0;
                for rooms in rooms {
                    broken += compare(rooms, &work).await?;
                }
                ensure!(broken == 0, "{broken} run(s) stalled: a round trip took longer than {stall} s");
                Ok(())
            }
            Cmd::Idle {
                connections,
                tls,
                nginx,
                resume,
                relay_bin,
            } => idle(connections, tls, nginx, resume, relay_bin.as_ref()).await,
            Cmd::Rolling {
                rooms,
                relays,
                every_ms,
                relay_bin,
            } => {
                let relay = match relay_bin {
                    Some(path) => path,
                    None => sibling("signalroom").context("relay binary")?,
                };
                rolling::run(rooms, relays, Duration::from_millis(every_ms), relay).await
            }
            Cmd::Calls { calls, relay_bin } => calls::run(&calls, relay_bin.as_ref()).await,
            Cmd::Smoke => {
                let work = Work { in_flight: 2, payload: 200, warmup: Duration::from_millis(200), window: Duration::from_secs(1), runs: 1, bare: true, redis: false, tls: true, resume: true, metrics: true, idle_timeout: Duration::from_secs(300), stall: Duration::from_secs(1), writes: Writes::PerFrame, relay_bin: None, baseline_bin: None };
                ensure!(compare(20, &work).await? == 0, "a run stalled");
                idle(200, false, false, false, None).await?;
                idle(200, false, false, true, None).await?;
                idle(200, true, false, false, None).await?;
                rolling::run(20, 2, Duration::from_millis(50), sibling("signalroom")?).await?;
                calls::run(&[2], None).await
            }
        }
    })
}

/// What each pair does under load.
struct Work {
    in_flight: usize,
    payload: usize,
    warmup: Duration,
    window: Duration,
    /// Runs of each server.
    runs: usize,
    /// Whether the bare forwarder runs too.
    bare: bool,
    /// Whether relays sharing rooms through Redis run too.
    redis: bool,
    /// Whether the relay serving TLS runs too.
    tls: bool,
    /// Whether the relay with resumable clients runs too.
    resume: bool,
    /// Whether the relay with metrics on runs too.
    metrics: bool,
    /// The relay's idle timeout (it pings every third of it).
    idle_timeout: Duration,
    /// The longest round trip a healthy run has.
    stall: Duration,
    /// How clients write.
    writes: Writes,
    /// The relay binary, if not the one beside the benchmark.
    relay_bin: Option<PathBuf>,
    /// Another build of the relay to run too.
    baseline_bin: Option<PathBuf>,
}

/// The processes of a server under test (a redis-server first, where there is one), and
/// where pairs connect: A to the first address, B to the last. Killed when dropped.
struct Server {
    children: Vec<Child>,
    addrs: Vec<SocketAddr>,
    /// How clients reach a TLS relay, and the folder of its certificate.
    tls: Option<(tokio_rustls::TlsConnector, PathBuf)>,
    /// Where the relay serves its metrics, when it does.
    metrics: Option<SocketAddr>,
}

impl Server {
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Its processes and their children (nginx's workers).
    fn processes(&self) -> Result<Vec<u32>> {
        let mut pids = self.pids();
        for pid in self.pids() {
            pids.extend(proc::children(pid)?);
        }
        Ok(pids)
    }

    /// The CPU seconds of all its processes.
    fn cpu_seconds(&self) -> Result<f64> {
        self.processes()?.into_iter().map(proc::cpu_seconds).sum()
    }

    /// The resident memory of all its processes.
    fn rss_kib(&self) -> Result<u64> {
        self.processes()?.into_iter().map(proc::rss_kib).sum()
    }

    /// The file descriptors all its processes hold.
    fn descriptors(&self) -> Result<usize> {
        self.processes()?.into_iter().map(proc::descriptors).sum()
    }

    /// Starts `command` as one more process and waits for it to listen on `addr`.
    async fn spawn(&mut self, mut command: Command, addr: SocketAddr) -> Result<()> {
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .context("starting a server")?;
        self.children.push(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("{command:?} did not start on {addr}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            // nginx's workers outlive a killed master: they go first.
            let workers = proc::children(child.id()).unwrap_or_default();
            for worker in workers {
                let _ = Command::new("kill")
                    .args(["-KILL", &worker.to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((_, dir)) = &self.tls {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(name))
}

fn free_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

async fn start(
    kind: Kind,
    max_connections: usize,
    idle_timeout: Duration,
    relay_bin: Option<&PathBuf>,
) -> Result<Server> {
    let mut server = Server {
        children: Vec::new(),
        addrs: Vec::new(),
        tls: None,
        metrics: None,
    };
    let (relays, redis) = match kind {
        Kind::Floor | Kind::Bare => {
            let addr = free_addr()?;
            let mut c = Command::new(std::env::current_exe()?);
            c.args([kind.name(), "--addr", &addr.to_string()]);
            server.spawn(c, addr).await?;
            server.addrs.push(addr);
            return Ok(server);
        }
        Kind::Relay
        | Kind::RelayTls
        | Kind::RelayResume
        | Kind::RelayMetrics
        | Kind::Baseline
        | Kind::BaselineTls
        | Kind::NginxTls => (1, false),
        Kind::RedisLocal | Kind::BaselineRedisLocal => (1, true),
        Kind::RedisSplit | Kind::BaselineRedisSplit => (2, true),
    };
    let mut redis_url = None;
    if redis {
        let addr = free_addr()?;
        let mut c = Command::new("redis-server");
        c.args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"]);
        c.args(["--save", "", "--appendonly", "no"]);
        server.spawn(c, addr).await?;
        redis_url = Some(format!("redis://{addr}"));
    }
    for _ in 0..relays {
        let addr = free_addr()?;
        let relay = match relay_bin {
            Some(path) => path.clone(),
            None => sibling("signalroom").context("relay binary")?,
        };
        let mut c = Command::new(relay);
        let max = max_connections.to_string();
        c.args([
            "--addr",
            &addr.to_string(),
            "--max-connections",
            &max,
            "--max-rooms",
            &max,
        ]);
        // The benchmark measures forwarding, not the abuse limits.
        c.args(["--rate-per-sec", "1000000", "--rate-burst", "1000000"]);
        let idle = idle_timeout.as_secs_f64().to_string();
        c.args(["--idle-timeout", &idle, "--join-timeout", &idle]);
        if let Some(url) = &redis_url {
            c.args(["--redis-url", url]);
        }
        if kind == Kind::RelayMetrics {
            let metrics = free_addr()?;
            c.args(["--metrics-addr", &metrics.to_string()]);
            server.metrics = Some(metrics);
        }
        if kind.tls() {
            let (connector, dir) = tls_files()?;
            if kind != Kind::NginxTls {
                c.arg("--tls-cert").arg(dir.join("cert.pem"));
                c.arg("--tls-key").arg(dir.join("key.pem"));
            }
            server.tls = Some((connector, dir));
        }
        c.env("RUST_LOG", "warn");
        server.spawn(c, addr).await?;
        server.addrs.push(addr);
    }
    if kind == Kind::NginxTls {
        let relay = server.addrs.pop().context("no relay")?;
        let dir = server
            .tls
            .as_ref()
            .map(|(_, dir)| dir.clone())
            .context("no certificate")?;
        let addr = free_addr()?;
        let mut c = Command::new("nginx");
        c.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(nginx::config(&dir, addr, relay)?);
        server.spawn(c, addr).await?;
        server.addrs.push(addr);
    }
    Ok(server)
}

/// Scrapes `GET /metrics` at `addr` every second, as Prometheus would, until aborted;
/// returns (ending the task) on the first failure.
async fn scrape_every_second(addr: SocketAddr) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        ensure!(response.starts_with(b"HTTP/1.0 200"), "metrics not served");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A self-signed certificate for `localhost` in a fresh folder (`cert.pem`, `key.pem`),
/// and a client that trusts it.
fn tls_files() -> Result<(tokio_rustls::TlsConnector, PathBuf)> {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(["localhost".to_owned()])?;
    let dir = std::env::temp_dir().join(format!(
        "signalroom-bench-tls-{}-{}",
        std::process::id(),
        free_addr()?.port()
    ));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key_pair.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone())?;
    // The cipher suites in a browser's order (Chromium's, on a machine with AES
    // instructions): AES-128-GCM first. rustls's own order starts with AES-256-GCM, which
    // browsers do not pick, and which costs the server under test more per record.
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), dir))
}

/// Figures of one run.
struct Figures {
    messages_per_sec: f64,
    rtt: Percentiles,
    /// The longest round trip of the whole run, warm-up and wind-down included.
    longest: Duration,
    join: Option<Percentiles>,
    cpu_us_per_message: f64,
    /// The load generator's own CPU: the rest of the machine's budget.
    generator_cpu_us_per_message: f64,
    /// TCP segments sent per relayed message, machine-wide, and of them those without data.
    segments_per_message: f64,
    dataless_segments_per_message: f64,
    rss_kib: u64,
}

struct Percentiles {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run(kind: Kind, rooms: usize, work: &Work) -> Result<Figures> {
    let relay_bin = if kind.baseline() {
        work.baseline_bin.as_ref()
    } else {
        work.relay_bin.as_ref()
    };
    let server = start(kind, 2 * rooms + 100, work.idle_timeout, relay_bin).await?;
    let mut pairs = connect_all(&server, kind, rooms).await?;
    // The forwarders have no rooms: their pairs are made by arrival.
    let joins = if kind.has_rooms() {
        join_all(&mut pairs).await?
    } else {
        Vec::new()
    };
    let tally = Arc::new(Tally::default());
    let drivers: Vec<_> = pairs
        .into_iter()
        .map(|(a, b)| {
            tokio::spawn(load::drive(
                a,
                b,
                work.in_flight,
                work.payload,
                work.writes,
                kind.resumable(),
                tally.clone(),
            ))
        })
        .collect();
    let scraper = server
        .metrics
        .map(|addr| tokio::spawn(scrape_every_second(addr)));
    tokio::time::sleep(work.warmup).await;
    let cpu_before = server.cpu_seconds()?;
    let generator_before = proc::cpu_seconds(std::process::id())?;
    let segments_before = proc::Segments::now()?;
    let started = Instant::now();
    tally.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(work.window).await;
    tally.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu_before;
    let generator_cpu = proc::cpu_seconds(std::process::id())? - generator_before;
    let segments = proc::Segments::now()?.since(segments_before);
    let rss_kib = server.rss_kib()?;
    tally.stop.store(true, Ordering::Relaxed);
    if let Some(scraper) = scraper {
        scraper.abort();
        ensure!(
            scraper.await.is_err_and(|e| e.is_cancelled()),
            "scraping the metrics failed"
        );
    }
    let mut rtts = Vec::new();
    for driver in drivers {
        rtts.extend(driver.await??);
    }
    // Each round trip is two relayed messages: A to B and back.
    let messages = 2.0 * tally.round_trips.load(Ordering::Relaxed) as f64;
    let per_message = |x: f64| x / messages.max(1.0);
    Ok(Figures {
        messages_per_sec: messages / elapsed,
        rtt: Percentiles::of(rtts).context("no round trip completed")?,
        longest: tally.longest(),
        join: Percentiles::of(joins),
        cpu_us_per_message: per_message(cpu * 1e6),
        generator_cpu_us_per_message: per_message(generator_cpu * 1e6),
        segments_per_message: per_message(segments.sent as f64),
        dataless_segments_per_message: per_message(
            segments.sent.saturating_sub(segments.with_data) as f64,
        ),
        rss_kib,
    })
}

/// Opens `rooms` pairs of connections. The forwarders pair by arrival, so for them they connect
/// strictly one pair at a time.
async fn connect_all(
    server: &Server,
    kind: Kind,
    rooms: usize,
) -> Result<Vec<(wire::Conn, wire::Conn)>> {
    let at_once = if kind.has_rooms() { 64 } else { 1 };
    let (a, b) = (server.addrs[0], server.addrs[server.addrs.len() - 1]);
    let tls = server.tls.as_ref().map(|(connector, _)| connector);
    stream::iter(0..rooms)
        .map(|n| load::connect_pair(a, b, n, tls, kind.resumable()))
        .buffered(at_once)
        .try_collect()
        .await
}

/// Joins every pair into its room, a few rooms at a time (as users arrive, not as a storm);
/// returns the join latencies.
async fn join_all(pairs: &mut [(wire::Conn, wire::Conn)]) -> Result<Vec<Duration>> {
    let latencies: Vec<[Duration; 2]> = stream::iter(pairs.iter_mut().enumerate())
        .map(|(n, (a, b))| load::join_pair(a, b, n))
        .buffer_unordered(JOINS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(latencies.into_iter().flatten().collect())
}

/// The relay's idle timeout while it holds idle connections: longer than the measurement.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Rooms joining at the same moment while join latency is measured.
const JOINS_AT_ONCE: usize = 8;

/// Runs of one server, sorted by throughput.
struct Runs(Vec<Figures>);

impl Runs {
    fn sorted(mut runs: Vec<Figures>) -> Self {
        runs.sort_by(|a, b| a.messages_per_sec.total_cmp(&b.messages_per_sec));
        Self(runs)
    }

    /// The run of median throughput.
    fn median(&self) -> &Figures {
        &self.0[self.0.len() / 2]
    }

    /// The slowest and the fastest run's throughput.
    fn range(&self) -> String {
        let rate = |f: &Figures| format!("{:.0}", f.messages_per_sec);
        format!(
            "{} to {}",
            rate(&self.0[0]),
            rate(&self.0[self.0.len() - 1])
        )
    }
}

/// The relay's ratio to each other server in `of`, run by run (each run beside the other's
/// run of the same round, minutes apart at most): the median ratio, then the lowest and the
/// highest. Steadier than the ratio of the medians when the machine drifts between rounds.
fn paired_ratios(runs: &[Vec<Figures>], of: fn(&Figures) -> f64) -> Vec<String> {
    runs[1..]
        .iter()
        .map(|other| {
            let mut ratios: Vec<f64> = runs[0]
                .iter()
                .zip(other)
                .map(|(relay, other)| of(relay) / of(other))
                .collect();
            ratios.sort_by(f64::total_cmp);
            format!(
                "{:.2} ({:.2} to {:.2})",
                ratios[ratios.len() / 2],
                ratios[0],
                ratios[ratios.len() - 1]
            )
        })
        .collect()
}

/// Runs the relay and the forwarders in turn and prints a table of their median runs: a
/// column each, then the relay's ratio to each forwarder. Returns how many runs stalled.
async fn compare(rooms: usize, work: &Work) -> Result<usize> {
    let mut kinds = vec![Kind::Relay, Kind::Floor];
    if work.bare {
        kinds.push(Kind::Bare);
    }
    if work.redis {
        kinds.extend([Kind::RedisLocal, Kind::RedisSplit]);
    }
    if work.tls {
        kinds.extend([Kind::RelayTls, Kind::NginxTls]);
    }
    if work.resume {
        kinds.push(Kind::RelayResume);
    }
    if work.metrics {
        kinds.push(Kind::RelayMetrics);
    }
    if work.baseline_bin.is_some() {
        kinds.push(Kind::Baseline);
        if work.tls {
            kinds.push(Kind::BaselineTls);
        }
        if work.redis {
            kinds.extend([Kind::BaselineRedisLocal, Kind::BaselineRedisSplit]);
        }
    }
    // Alternating spreads the machine's slow moments over all of them.
    let mut runs: Vec<Vec<Figures>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..work.runs {
        for (kind, runs) in kinds.iter().zip(&mut runs) {
            runs.push(run(*kind, rooms, work).await?);
        }
    }
    let paired = paired_ratios(&runs, |f| f.cpu_us_per_message);
    let runs: Vec<Runs> = runs.into_iter().map(Runs::sorted).collect();
    let medians: Vec<&Figures> = runs.iter().map(Runs::median).collect();
    let others = kinds.len() - 1;
    let blank = || vec![String::new(); others];

    println!();
    println!("{rooms} rooms ({} connections)", 2 * rooms);
    let names: Vec<_> = kinds.iter().map(|k| k.name()).collect();
    let ratios: Vec<_> = names[1..].iter().map(|n| format!("relay / {n}")).collect();
    row("", names.iter().map(|n| n.to_string()).collect(), ratios);
    println!("|---|{}", "---|".repeat(kinds.len() + others));
    let ratio = |of: fn(&Figures) -> f64| -> Vec<String> {
        let relay = of(medians[0]);
        medians[1..]
            .iter()
            .map(|f| format!("{:.2}", relay / of(f)))
            .collect()
    };
    let each = |cell: &dyn Fn(&Figures) -> String| medians.iter().map(|f| cell(f)).collect();
    row(
        "relayed messages/s",
        each(&|f| format!("{:.0}", f.messages_per_sec)),
        ratio(|f| f.messages_per_sec),
    );
    if work.runs > 1 {
        let ranges = runs.iter().map(Runs::range).collect();
        row(&format!("over {} runs", work.runs), ranges, blank());
    }
    row(
        "CPU per message",
        each(&|f| format!("{:.2} µs", f.cpu_us_per_message)),
        ratio(|f| f.cpu_us_per_message),
    );
    if work.runs > 1 {
        let cells = vec![String::new(); kinds.len()];
        row("CPU per message, run by run", cells, paired);
    }
    row(
        "load generator CPU per message",
        each(&|f| format!("{:.2} µs", f.generator_cpu_us_per_message)),
        blank(),
    );
    row(
        "TCP segments per message (no data)",
        each(&|f| {
            format!(
                "{:.3} ({:.3})",
                f.segments_per_message, f.dataless_segments_per_message
            )
        }),
        blank(),
    );
    row("round trip p50", each(&|f| ms(f.rtt.p50)), blank());
    row("round trip p99", each(&|f| ms(f.rtt.p99)), blank());
    row("round trip max", each(&|f| ms(f.rtt.max)), blank());
    // Every run's, not the median's: a stall must not hide behind the runs that had none.
    let longest = runs.iter().map(|r| {
        r.0.iter()
            .map(|f| ms(f.longest))
            .collect::<Vec<_>>()
            .join(", ")
    });
    row("longest round trip, each run", longest.collect(), blank());
    // The forwarders have no joins.
    let join = |f: &Figures| match &f.join {
        Some(join) => format!("{} / {}", ms(join.p50), ms(join.p99)),
        None => String::new(),
    };
    row("join p50 / p99", each(&join), blank());
    row(
        "resident memory",
        each(&|f| format!("{} KiB", f.rss_kib)),
        blank(),
    );
    let mut stalled = 0;
    for (kind, runs) in kinds.iter().zip(&runs) {
        for f in runs.0.iter().filter(|f| f.longest > work.stall) {
            println!(
                "BROKEN: a {} run's longest round trip was {} (more than {}): a frame waited",
                kind.name(),
                ms(f.longest),
                ms(work.stall)
            );
            stalled += 1;
        }
    }
    Ok(stalled)
}

/// Prints one row of a Markdown table.
fn row(name: &str, cells: Vec<String>, ratios: Vec<String>) {
    let cells: Vec<_> = cells.into_iter().chain(ratios).collect();
    println!("| {name} | {} |", cells.join(" | "));
}

async fn idle(
    connections: usize,
    tls: bool,
    nginx: bool,
    resume: bool,
    relay_bin: Option<&PathBuf>,
) -> Result<()> {
    let rooms = connections / 2;
    let kind = match (tls, nginx, resume) {
        (true, true, _) => Kind::NginxTls,
        (true, false, _) => Kind::RelayTls,
        (false, _, true) => Kind::RelayResume,
        (false, _, false) => Kind::Relay,
    };
    let server = start(kind, connections + 100, IDLE_TIMEOUT, relay_bin).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib()?;
    let descriptors_before = server.descriptors()?;
    let mut pairs = connect_all(&server, kind, rooms).await?;
    join_all(&mut pairs).await?;
    if resume {
        // As the page does within a second: acknowledge what joining brought (A: created
        // and B's join; B: joined), so that the relay keeps nothing at rest.
        let (a_ack, b_ack) = (
            wire::text_frame(r#"{"type":"ack","received":2}"#),
            wire::text_frame(r#"{"type":"ack","received":1}"#),
        );
        for (a, b) in &mut pairs {
            a.send(&a_ack).await?;
            b.send(&b_ack).await?;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib()?;
    let descriptors = server.descriptors()?;
    let held = 2 * pairs.len();
    println!();
    println!(
        "idle: {held} {} connections joined in rooms of two",
        kind.name()
    );
    println!(
        "relay resident memory {before} KiB before, {after} KiB after: {:.2} KiB per connection",
        (after.saturating_sub(before)) as f64 / held as f64
    );
    println!(
        "descriptors {descriptors_before} before, {descriptors} after: {:.2} per connection",
        descriptors.saturating_sub(descriptors_before) as f64 / held as f64
    );
    drop(pairs);
    Ok(())
}
