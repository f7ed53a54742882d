//! `calls`: native WebRTC peers (`signalroom-peer`'s library: str0m, a UDP socket each)
//! set calls up through the relay, N at once. For each call, member A is already in its
//! room; member B is started, and the call is up when both ends have the chat data channel
//! open. The time from B's start to that, and of it the relay's part on the critical path:
//! B's connect and join until A hears of it, A's offer until B has it, B's answer until A
//! has it. The rest is the peers' own work (descriptions, ICE, DTLS, SCTP) and waiting for
//! the one thread that runs them all, which those signaling times include too: a message
//! the relay delivered waits until the thread reads it. So a probe measures the relay
//! alone meanwhile: two clients on a thread of their own, one sending the other a message
//! every few milliseconds, each timed from send to receipt.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use signalroom_client::Options;
use signalroom_peer::{Command, Config, Report, Reported};
use signalroom_protocol::{RoomName, SdpType};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{ms, start, Kind, Percentiles};

/// A call not up after this long counts as failed.
const PATIENCE: Duration = Duration::from_secs(60);

/// One member of a call, running in this process.
struct Member {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<Result<(), signalroom_peer::PeerError>>,
}

/// Starts a peer in `room` at the relay at `relay`; its reports go to `all`, tagged.
fn member(
    relay: SocketAddr,
    room: &RoomName,
    tag: (usize, Side),
    all: &mpsc::UnboundedSender<((usize, Side), Reported)>,
) -> Result<Member> {
    let config = Config {
        options: Options::new(&format!("ws://{relay}"))?,
        room: room.clone(),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        record: None,
        send: None,
        relay_only: false,
    };
    let (commands, taken) = mpsc::unbounded_channel();
    let (reported, mut reports) = mpsc::unbounded_channel();
    let all = all.clone();
    tokio::spawn(async move {
        while let Some(report) = reports.recv().await {
            if all.send((tag, report)).is_err() {
                break;
            }
        }
    });
    let task = tokio::spawn(signalroom_peer::run(config, taken, reported));
    Ok(Member { commands, task })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    /// In the room first: it makes the offer.
    A,
    /// The newcomer, started at the call's start.
    B,
}

/// What one call went through, as far as timing goes.
#[derive(Debug, Default)]
struct Timeline {
    b_started: Option<Instant>,
    a_heard_join: Option<Instant>,
    offer_sent: Option<Instant>,
    offer_received: Option<Instant>,
    answer_sent: Option<Instant>,
    answer_received: Option<Instant>,
    a_open: Option<Instant>,
    b_open: Option<Instant>,
}

impl Timeline {
    fn note(&mut self, side: Side, Reported { at, report }: &Reported) {
        let at = Some(*at);
        match (side, report) {
            (Side::A, Report::Join { .. }) => self.a_heard_join = self.a_heard_join.or(at),
            (Side::A, Report::ChannelOpen { .. }) => self.a_open = self.a_open.or(at),
            (Side::B, Report::ChannelOpen { .. }) => self.b_open = self.b_open.or(at),
            (
                side,
                Report::Described {
                    sdp_type, outgoing, ..
                },
            ) => {
                let slot = match (side, sdp_type, outgoing) {
                    (Side::A, SdpType::Offer, true) => &mut self.offer_sent,
                    (Side::B, SdpType::Offer, false) => &mut self.offer_received,
                    (Side::B, SdpType::Answer, true) => &mut self.answer_sent,
                    (Side::A, SdpType::Answer, false) => &mut self.answer_received,
                    _ => return,
                };
                *slot = slot.or(at);
            }
            _ => {}
        }
    }

    fn up(&self) -> Option<Instant> {
        Some(self.a_open?.max(self.b_open?))
    }

    /// The call's setup time, and the parts of it spent in signaling: B's start until A
    /// heard of it, the offer's way from A to B, the answer's from B to A.
    fn figures(&self) -> Option<(Duration, [Duration; 3])> {
        let start = self.b_started?;
        let setup = self.up()? - start;
        let signaling = [
            self.a_heard_join? - start,
            self.offer_received? - self.offer_sent?,
            self.answer_received? - self.answer_sent?,
        ];
        Some((setup, signaling))
    }
}

/// How often the probe sends.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// Starts the probe on a thread of its own: two clients in a room of their own at the
/// relay, one sending the other a timestamped message every [`PROBE_EVERY`] until `stop`.
/// The thread returns each message's time from send to receipt.
fn probe(
    relay: SocketAddr,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<Result<Vec<Duration>>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let options = || Options::new(&format!("ws://{relay}"));
            let room = RoomName::new("probe").context("room name")?;
            let (sender, _sender_events) = signalroom_client::connect::<u64>(options()?).await?;
            sender.create_or_join(room.clone()).await?;
            let (receiver, mut arrivals) = signalroom_client::connect::<u64>(options()?).await?;
            receiver.create_or_join(room).await?;
            let base = Instant::now();
            let mut every = tokio::time::interval(PROBE_EVERY);
            let mut transits = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = every.tick() => sender.send(u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)).await?,
                    Some(update) = arrivals.next() => {
                        if let signalroom_client::Update::Event(signalroom_protocol::Event::Message { data, .. }) = update {
                            let sent = Duration::from_micros(data);
                            transits.push(base.elapsed().saturating_sub(sent));
                        }
                    }
                }
            }
            Ok(transits)
        })
    })
}

/// Runs `counts` calls set up at once, each count with a relay of its own.
pub async fn run(counts: &[usize], relay_bin: Option<&PathBuf>) -> Result<()> {
    println!("calls: N pairs of native peers (str0m, loopback UDP), all on this process's one thread; A in each room first, then every B started at once");
    println!();
    println!("| calls | set up, median | p99 | worst | signaling as the peers saw it, median: join + offer + answer | relay transit meanwhile (probe): median / p99 / worst | relay CPU per call | peers' CPU per call (both ends) | failed |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut failed = 0;
    for &count in counts {
        let (figures, failures) = calls(count, relay_bin).await?;
        println!("{figures}");
        failed += failures;
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} call(s) did not come up in {PATIENCE:?}"
    );
    Ok(())
}

/// Sets `count` calls up at once: the table's row, and how many failed.
async fn calls(count: usize, relay_bin: Option<&PathBuf>) -> Result<(String, usize)> {
    let server = start(
        Kind::Relay,
        2 * count + 100,
        Duration::from_secs(300),
        relay_bin,
    )
    .await?;
    let relay = server.addrs[0];
    let (all, mut reports) = mpsc::unbounded_channel();
    let rooms: Vec<RoomName> = (0..count)
        .map(|n| RoomName::new(format!("call-{n}")).context("room name"))
        .collect::<Result<_>>()?;

    // Every A in its room, before any call starts.
    let mut members = Vec::new();
    for (n, room) in rooms.iter().enumerate() {
        members.push(member(relay, room, (n, Side::A), &all)?);
    }
    let mut inside = 0;
    while inside < count {
        let Some(((_, _), reported)) = reports.recv().await else {
            bail!("reports ended");
        };
        if matches!(reported.report, Report::Entered { .. }) {
            inside += 1;
        }
    }

    // Then every B at once, the probe running.
    let (stop_probe, stop) = tokio::sync::oneshot::channel();
    let probing = probe(relay, stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut timelines: BTreeMap<usize, Timeline> = BTreeMap::new();
    let cpu_before = server.cpu_seconds()?;
    let peers_before = crate::proc::cpu_seconds(std::process::id())?;
    for (n, room) in rooms.iter().enumerate() {
        timelines.entry(n).or_default().b_started = Some(Instant::now());
        members.push(member(relay, room, (n, Side::B), &all)?);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut up = 0;
    while up < count {
        let next = tokio::time::timeout_at(deadline, reports.recv()).await;
        let Ok(Some(((n, side), reported))) = next else {
            break;
        };
        let timeline = timelines.entry(n).or_default();
        let was_up = timeline.up().is_some();
        timeline.note(side, &reported);
        if !was_up && timeline.up().is_some() {
            up += 1;
        }
    }
    let relay_cpu = server.cpu_seconds()? - cpu_before;
    // The probe's thread is in it too, a small part.
    let peers_cpu = crate::proc::cpu_seconds(std::process::id())? - peers_before;
    let _ = stop_probe.send(());
    let transits = probing
        .join()
        .map_err(|_| anyhow::anyhow!("the probe panicked"))??;

    for member in &members {
        let _ = member.commands.send(Command::Stop);
    }
    for member in members {
        if let Ok(Err(error)) = member.task.await {
            eprintln!("a peer failed: {error}");
        }
    }

    let mut setups = Vec::new();
    let mut signaling: [Vec<Duration>; 4] = Default::default();
    for timeline in timelines.values() {
        if let Some((setup, parts)) = timeline.figures() {
            setups.push(setup);
            for (all, part) in signaling.iter_mut().zip(parts) {
                all.push(part);
            }
            signaling[3].push(parts.iter().sum());
        }
    }
    let failed = count - setups.len();
    // Median, p99 and worst, or dashes for no sample.
    let spread = |samples: Vec<Duration>| match Percentiles::of(samples) {
        Some(p) => [ms(p.p50), ms(p.p99), ms(p.max)],
        None => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
    };
    let [setup_p50, setup_p99, setup_max] = spread(setups);
    let [transit_p50, transit_p99, transit_max] = spread(transits);
    let [total, join, offer, answer] = [3, 0, 1, 2].map(|part| {
        let [median, _, _] = spread(std::mem::take(&mut signaling[part]));
        median
    });
    let row = format!(
        "| {count} | {setup_p50} | {setup_p99} | {setup_max} | {total}: {join} + {offer} + {answer} | {transit_p50} / {transit_p99} / {transit_max} | {:.0} µs | {:.1} ms | {failed} |",
        relay_cpu * 1e6 / count as f64,
        peers_cpu * 1e3 / count as f64,
    );
    Ok((row, failed))
}
