//! `signalroom-peer`: a WebRTC peer on the command line. It joins a room through the relay
//! and calls every other member, as the page does (full mesh, perfect negotiation, the
//! pre-negotiated chat channel); lines on standard input go to every member over the
//! pair's data channel, and what arrives is printed with its sender.
//!
//! Code map: `main` reads the arguments and runs [`Peer`], the one task that owns the
//! relay client, the UDP socket and every call; `pair` is one call (str0m, no I/O);
//! `report` prints what happens.

mod ivf;
mod pair;
mod report;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use signalroom_client::{connect, Client, Entered, Error, Events, Options, Update};
use signalroom_protocol::{Event, PeerId, RoomName, Signal};
use str0m::net::{Protocol, Receive};
use str0m::Input;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::time::sleep_until;

use ivf::{Clip, Recorder};
use pair::{Drained, Happening, Media, Pair};
use report::{Printer, Report, Via};

const EXITS: &str = "\
Exit status:
  0  stopped by Ctrl-C or SIGTERM (the room sees the peer leave)
  1  any other failure (a bad argument, a broken socket, the relay gone for good)
  3  the relay cannot be reached
  4  the relay refused the connection (a bad or missing token, a refused origin)
  5  the room is full, or the relay refused to let the peer in

Examples:
  signalroom-peer lobby
  signalroom-peer --relay wss://relay.example.com --token \"$JWT\" --json lobby";

/// Joins a signalroom room and calls every member (WebRTC, data channel chat).
///
/// Each line on standard input is sent to every member: over the call's data channel once
/// it is open, through the relay before. What arrives is printed, one line each, with its
/// sender. The peer takes calls on one UDP port of `--bind`, offered as its only ICE
/// candidate (host); it keeps its calls when the relay connection drops and resumes.
#[derive(Debug, Parser)]
#[command(name = "signalroom-peer", version, after_help = EXITS)]
struct Args {
    /// The room to create or join.
    room: String,
    /// The relay: ws://host:port or wss://host, with or without the /ws path.
    #[arg(long, default_value = "ws://127.0.0.1:2013")]
    relay: String,
    /// A room token (JWT), for a relay that requires one.
    #[arg(long, env = "SIGNALROOM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The Origin header to send, for a relay that admits only some origins.
    #[arg(long)]
    origin: Option<String>,
    /// A PEM file of the certificate authority that signed the relay's certificate, for a
    /// wss:// relay the system does not trust.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The local address to take calls on (a port is picked). It must be one the other
    /// members can reach: loopback only reaches this machine.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Print one JSON object per line (`{"event": ...}`) instead of sentences.
    #[arg(long)]
    json: bool,
    /// Record each member's video into DIR/peer-<id>.ivf (VP8 in IVF, from its first
    /// keyframe, asked for with a PLI). A member who comes back starts a new file.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Send this VP8 IVF file as the peer's camera, looped, to every member (make one with
    /// `ffmpeg -i in.mp4 -c:v libvpx -g 30 out.ivf`).
    #[arg(long, value_name = "FILE.ivf")]
    send_video: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "signalroom_peer=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("signalroom-peer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ran = runtime.block_on(run(args));
    // The read of standard input blocks a thread of the runtime's that cannot be
    // cancelled: leave it behind rather than wait for a line that may never come.
    runtime.shutdown_background();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("signalroom-peer: {}", explain(&error));
            let code = match error.downcast_ref::<Error>() {
                Some(Error::Unreachable(_)) => 3,
                Some(Error::Refused { .. }) => 4,
                Some(Error::Full(_) | Error::Relay { .. }) => 5,
                _ => 1,
            };
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, each told once: a cause whose text its effect already
/// quotes (the WebSocket library's I/O errors do) is left out.
fn explain(error: &anyhow::Error) -> String {
    let mut told = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !told.contains(&text) {
            if !told.is_empty() {
                told.push_str(": ");
            }
            told.push_str(&text);
        }
    }
    told
}

async fn run(args: Args) -> anyhow::Result<()> {
    let room = RoomName::new(&args.room).with_context(|| format!("room {:?}", args.room))?;
    let mut options = Options::new(&args.relay)?;
    if let Some(token) = args.token {
        options = options.token(token);
    }
    if let Some(origin) = args.origin {
        options = options.origin(origin);
    }
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        options = options.ca_pem(&pem)?;
    }
    let send = match &args.send_video {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let clip = Clip::parse(&bytes).with_context(|| format!("{}", path.display()))?;
            Some(std::sync::Arc::new(clip))
        }
        None => None,
    };
    if let Some(dir) = &args.record {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let socket = UdpSocket::bind(SocketAddr::new(args.bind, 0))
        .await
        .with_context(|| format!("binding a UDP socket on {}", args.bind))?;
    let local = socket.local_addr()?;
    let (client, events) = connect::<Signal>(options).await?;
    let entered = client.create_or_join(room).await?;
    let printer = Printer { json: args.json };
    let mut peer = Peer {
        me: entered.peer,
        client,
        socket,
        local,
        pairs: BTreeMap::new(),
        printer,
        media: Media {
            record: args.record.is_some(),
            send,
        },
        record: args.record,
        recordings: BTreeMap::new(),
    };
    peer.entered(&entered);
    peer.serve(events).await
}

/// The peer: its relay client, its UDP socket, and one call per other member.
struct Peer {
    me: PeerId,
    client: Client<Signal>,
    socket: UdpSocket,
    local: SocketAddr,
    pairs: BTreeMap<PeerId, Pair>,
    printer: Printer,
    media: Media,
    /// Where recordings go, when asked for.
    record: Option<PathBuf>,
    /// The recording of each member whose video is being recorded.
    recordings: BTreeMap<PeerId, Recording>,
}

/// A member's video being recorded.
struct Recording {
    path: PathBuf,
    recorder: Recorder<BufWriter<File>>,
}

/// Longest wait between two looks at the calls' timers.
const TICK: Duration = Duration::from_millis(100);

impl Peer {
    fn entered(&mut self, entered: &Entered) {
        self.me = entered.peer;
        if !entered.ice_servers.is_empty() {
            // str0m gathers nothing: no STUN, and no TURN client. Members behind TURN still
            // reach this peer's host candidate through their own relayed ones.
            tracing::info!(
                servers = entered.ice_servers.len(),
                "the relay offers ICE servers; this peer offers its host candidate only"
            );
        }
        self.printer.print(&Report::Entered {
            room: entered.room.clone(),
            peer: entered.peer,
            peers: entered.peers.clone(),
        });
        // A newcomer is the polite side with everyone inside: they offer first.
        for &other in &entered.peers {
            self.call(other);
        }
    }

    /// The pair with `other`, made if there is none.
    fn call(&mut self, other: PeerId) -> Option<&mut Pair> {
        if !self.pairs.contains_key(&other) {
            match Pair::new(self.me, other, self.local, self.media.clone()) {
                Ok(pair) => {
                    self.pairs.insert(other, pair);
                }
                Err(error) => {
                    tracing::warn!(%error, %other, "could not start a call");
                    return None;
                }
            }
        }
        self.pairs.get_mut(&other)
    }

    async fn serve(&mut self, mut events: Events<Signal>) -> anyhow::Result<()> {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        let mut buf = vec![0; 2000];
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let wake = self.drain().await;
            tokio::select! {
                update = events.next() => match update {
                    Some(update) => self.on_update(update).await,
                    None => anyhow::bail!("the relay client ended"),
                },
                received = self.socket.recv_from(&mut buf) => {
                    let (n, source) = received.context("receiving on the UDP socket")?;
                    self.on_datagram(source, &buf[..n]);
                }
                line = lines.next_line(), if stdin_open => match line {
                    Ok(Some(line)) => self.chat(&line).await,
                    // Standard input ended: the calls go on until a signal stops them.
                    Ok(None) | Err(_) => stdin_open = false,
                },
                () = sleep_until(wake.into()) => self.tick(),
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
            }
        }
        self.hang_up_all();
        self.client.clone().close().await;
        Ok(())
    }

    /// Runs every call until it waits: sends its datagrams, reports what happened, and
    /// ends the calls that failed. Returns when the next timer is due.
    async fn drain(&mut self) -> Instant {
        let mut wake = Instant::now() + TICK;
        let mut failed = Vec::new();
        let mut drained = Drained::default();
        let now = Instant::now();
        let mut repairs = Vec::new();
        for (&peer, pair) in &mut self.pairs {
            let (offer, look_again) = pair.repair(now);
            if let Some(at) = look_again {
                wake = wake.min(at);
            }
            if let Some(offer) = offer {
                repairs.push((peer, offer));
            }
            match pair.play(now) {
                Ok(Some(at)) => wake = wake.min(at),
                Ok(None) => {}
                Err(error) => failed.push((peer, error.to_string())),
            }
            match pair.drain(&mut drained) {
                Ok(at) => wake = wake.min(at),
                Err(error) => failed.push((peer, error.to_string())),
            }
            for transmit in drained.transmits.drain(..) {
                if let Err(error) = self
                    .socket
                    .send_to(&transmit.contents, transmit.destination)
                    .await
                {
                    tracing::debug!(%error, to = %transmit.destination, "a datagram not sent");
                }
            }
            for happening in drained.happenings.drain(..) {
                if let Happening::Video { time, data } = happening {
                    if let Err(error) = record(
                        &self.record,
                        &mut self.recordings,
                        &self.printer,
                        peer,
                        time,
                        &data,
                    ) {
                        tracing::warn!(%error, %peer, "recording failed");
                        failed.push((peer, format!("recording failed: {error}")));
                    }
                    continue;
                }
                let report = match happening {
                    Happening::Connected => Report::Connected { peer },
                    Happening::ChannelOpen => Report::ChannelOpen { peer },
                    Happening::Disconnected => Report::Disconnected { peer },
                    Happening::Chat(text) => Report::Chat {
                        from: peer,
                        text,
                        via: Via::Datachannel,
                    },
                    Happening::Video { .. } => continue,
                };
                self.printer.print(&report);
            }
        }
        for (peer, reason) in failed {
            self.end_call(peer, reason);
        }
        for (peer, offer) in repairs {
            self.printer.print(&Report::Repairing { peer });
            self.send_to(peer, offer).await;
        }
        wake
    }

    fn end_call(&mut self, peer: PeerId, reason: String) {
        if self.hang_up(peer) {
            tracing::warn!(%peer, %reason, "call ended");
            self.printer.print(&Report::CallEnded { peer, reason });
        }
    }

    /// Ends the call with `peer`, if there is one, and completes its recording.
    fn hang_up(&mut self, peer: PeerId) -> bool {
        if let Some(recording) = self.recordings.remove(&peer) {
            match recording.recorder.finish() {
                Ok(frames) => self.printer.print(&Report::Recorded {
                    peer,
                    path: recording.path.display().to_string(),
                    frames,
                }),
                Err(error) => tracing::warn!(%error, %peer, "the recording could not be completed"),
            }
        }
        match self.pairs.remove(&peer) {
            Some(mut pair) => {
                pair.close();
                true
            }
            None => false,
        }
    }

    fn hang_up_all(&mut self) {
        let peers: Vec<PeerId> = self.pairs.keys().copied().collect();
        for peer in peers {
            self.hang_up(peer);
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let mut failed = Vec::new();
        for (&peer, pair) in &mut self.pairs {
            if let Err(error) = pair.handle_input(Input::Timeout(now)) {
                failed.push((peer, error.to_string()));
            }
        }
        for (peer, reason) in failed {
            self.end_call(peer, reason);
        }
    }

    fn on_datagram(&mut self, source: SocketAddr, data: &[u8]) {
        // Not STUN, DTLS, RTP or RTCP: nobody's.
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        let Some((&peer, pair)) = self.pairs.iter_mut().find(|(_, pair)| pair.accepts(&input))
        else {
            tracing::trace!(%source, "a datagram for no call");
            return;
        };
        if let Err(error) = pair.handle_input(input) {
            self.end_call(peer, error.to_string());
        }
    }

    async fn on_update(&mut self, update: Update<Signal>) {
        match update {
            Update::Event(event) => self.on_event(event).await,
            Update::Disconnected { reason, .. } => {
                self.printer.print(&Report::Reconnecting { reason });
            }
            Update::Resumed { incomplete, .. } => {
                self.printer.print(&Report::Resumed { incomplete });
            }
            Update::Rejoining { code } => {
                tracing::info!(?code, "the session did not resume; entering the room again");
            }
            _ => {}
        }
    }

    async fn on_event(&mut self, event: Event<Signal>) {
        match event {
            Event::Join { peer, .. } => {
                self.printer.print(&Report::Join { peer });
                // Members inside offer to a newcomer.
                let offer = self.call(peer).and_then(Pair::offer);
                if let Some(offer) = offer {
                    self.send_to(peer, offer).await;
                }
            }
            Event::Left { peer, .. } => {
                self.hang_up(peer);
                self.printer.print(&Report::Left { peer });
            }
            Event::Message { from, data } => self.on_signal(from, data).await,
            Event::Created { peer, room, .. } => {
                // A rejoin as a new peer: every call starts again.
                self.hang_up_all();
                self.me = peer;
                self.printer.print(&Report::Entered {
                    room,
                    peer,
                    peers: Vec::new(),
                });
            }
            Event::Joined {
                peer, room, peers, ..
            } => {
                self.hang_up_all();
                self.me = peer;
                self.printer.print(&Report::Entered {
                    room,
                    peer,
                    peers: peers.clone(),
                });
                for other in peers {
                    self.call(other);
                }
            }
            other => tracing::debug!(?other, "relay event"),
        }
    }

    async fn on_signal(&mut self, from: PeerId, signal: Signal) {
        match signal {
            Signal::Text { text } => self.printer.print(&Report::Chat {
                from,
                text,
                via: Via::Relay,
            }),
            Signal::Description { sdp_type, sdp } => {
                let Some(pair) = self.call(from) else { return };
                match pair.on_description(sdp_type, &sdp) {
                    Ok(Some(answer)) => self.send_to(from, answer).await,
                    Ok(None) => {}
                    Err(error) => self.end_call(from, error.to_string()),
                }
            }
            Signal::Candidate { candidate, .. } => {
                if let Some(pair) = self.pairs.get_mut(&from) {
                    pair.on_candidate(&candidate);
                }
            }
            Signal::Bye => {
                if self.hang_up(from) {
                    self.printer.print(&Report::CallEnded {
                        peer: from,
                        reason: "the peer hung up".into(),
                    });
                }
            }
        }
    }

    /// Sends a chat line to every member: over the data channel where it is open, through
    /// the relay to the rest.
    async fn chat(&mut self, line: &str) {
        let mut by_relay = Vec::new();
        for (&peer, pair) in &mut self.pairs {
            if !pair.send_chat(line) {
                by_relay.push(peer);
            }
        }
        for peer in by_relay {
            self.send_to(
                peer,
                Signal::Text {
                    text: line.to_owned(),
                },
            )
            .await;
        }
    }

    async fn send_to(&self, peer: PeerId, signal: Signal) {
        if let Err(error) = self.client.send_to(peer, signal).await {
            tracing::warn!(%error, %peer, "a signal could not be sent");
        }
    }
}

/// Adds a video frame from `peer` to its recording, starting the recording (in `dir`) at
/// its first frame, a keyframe.
fn record(
    dir: &Option<PathBuf>,
    recordings: &mut BTreeMap<PeerId, Recording>,
    printer: &Printer,
    peer: PeerId,
    time: u64,
    data: &[u8],
) -> std::io::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let recording = match recordings.entry(peer) {
        std::collections::btree_map::Entry::Occupied(recording) => recording.into_mut(),
        std::collections::btree_map::Entry::Vacant(vacant) => {
            let Some((width, height)) = ivf::keyframe_size(data) else {
                return Ok(());
            };
            let path = recording_path(dir, peer);
            let recorder = Recorder::start(BufWriter::new(File::create(&path)?), width, height)?;
            printer.print(&Report::Recording {
                peer,
                path: path.display().to_string(),
                width,
                height,
            });
            vacant.insert(Recording { path, recorder })
        }
    };
    recording.recorder.frame(time, data)
}

/// Where `peer`'s video is recorded in `dir`.
fn recording_path(dir: &Path, peer: PeerId) -> PathBuf {
    dir.join(format!("peer-{peer}.ivf"))
}
