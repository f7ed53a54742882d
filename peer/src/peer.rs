//! The peer's one task: it owns the relay client, the UDP socket and every call, feeds
//! each datagram to the call whose `Rtc` accepts it, and runs the calls' timers.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signalroom_client::{connect, Client, Entered, Events, Options, Update};
use signalroom_protocol::{Event, PeerId, RoomName, Signal};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::ivf::Clip;
use crate::pair::{Drained, Happening, Media, Pair};
use crate::record::Recordings;
use crate::report::{Report, Reported, Via};
use crate::turn::{self, Allocation, Received};

/// What a peer is to do.
#[derive(Debug)]
pub struct Config {
    /// The relay and how to reach it.
    pub options: Options,
    /// The room to create or join.
    pub room: RoomName,
    /// The local address to take calls on (a port is picked).
    pub bind: IpAddr,
    /// Where to record each member's video, if anywhere (the directory exists).
    pub record: Option<PathBuf>,
    /// A clip to send as the peer's camera, looped.
    pub send: Option<Arc<Clip>>,
    /// Offer only a relayed candidate, on the TURN server the relay names (what a browser
    /// does with `iceTransportPolicy: "relay"`); otherwise the host address, and a relayed
    /// one too when the relay names a TURN server.
    pub relay_only: bool,
}

/// What a program tells a running peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send a chat line to every member.
    Say(String),
    /// Hang up every call, leave the room and return.
    Stop,
}

/// Why a peer stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The relay client failed: unreachable, refused, a full room, a refusal.
    #[error(transparent)]
    Relay(#[from] signalroom_client::Error),
    /// A socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The relay client gave up for good.
    #[error("the relay client ended")]
    Ended,
    /// Only relayed candidates were asked for, and there is none.
    #[error("no relayed address: {0}")]
    NoRelay(String),
    /// An address cannot be offered as a candidate (`--bind 0.0.0.0`, say: a candidate
    /// names one address).
    #[error("{addr} cannot be offered to the other members: {why}")]
    Address {
        /// The address.
        addr: SocketAddr,
        /// Why not.
        why: String,
    },
}

/// How long a TURN server has to answer an Allocate.
const TURN_PATIENCE: Duration = Duration::from_secs(3);

/// Joins the room `config` names and takes part in its calls until [`Command::Stop`]:
/// what happens goes to `reports`, in order, and `commands` are taken as they come.
/// Returns an error when it cannot take part (or no longer can).
pub async fn run(
    config: Config,
    commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Reported>,
) -> Result<(), PeerError> {
    let socket = UdpSocket::bind(SocketAddr::new(config.bind, 0))
        .await
        .map_err(|source| PeerError::Io {
            what: format!("binding a UDP socket on {}", config.bind),
            source,
        })?;
    let local = socket.local_addr().map_err(|source| PeerError::Io {
        what: "reading the UDP socket's address".into(),
        source,
    })?;
    // Before the room sees this peer come in: an address that cannot be offered.
    let mut candidates = Vec::new();
    if !config.relay_only {
        let host = Candidate::host(local, "udp").map_err(|e| PeerError::Address {
            addr: local,
            why: e.to_string(),
        })?;
        candidates.push(host);
    }
    let (client, events) = connect::<Signal>(config.options).await?;
    let entered = client.create_or_join(config.room).await?;
    let turn = match allocate(&socket, &entered).await {
        Ok(allocation) => Some(allocation),
        Err(why) if config.relay_only => {
            client.close().await;
            return Err(PeerError::NoRelay(why));
        }
        Err(why) => {
            tracing::info!(%why, "offering the host candidate only");
            None
        }
    };
    if let Some(relayed) = turn.as_ref().and_then(Allocation::relayed) {
        let candidate =
            Candidate::relayed(relayed, local, "udp").map_err(|e| PeerError::Address {
                addr: relayed,
                why: e.to_string(),
            })?;
        candidates.push(candidate);
    }
    let mut peer = Peer {
        me: entered.peer,
        client,
        socket,
        local,
        candidates,
        turn,
        pairs: BTreeMap::new(),
        reports,
        media: Media {
            record: config.record.is_some(),
            send: config.send,
        },
        recordings: config.record.map(Recordings::new),
    };
    peer.entered(entered.room, entered.peer, entered.peers);
    if let Some((server, Some(relayed))) = peer.turn.as_ref().map(|t| (t.server(), t.relayed())) {
        peer.report(Report::Relayed { server, relayed });
    }
    peer.serve(events, commands).await
}

/// The peer: its relay client, its UDP socket, and one call per other member.
struct Peer {
    me: PeerId,
    client: Client<Signal>,
    socket: UdpSocket,
    local: SocketAddr,
    /// What each call offers as its local candidates.
    candidates: Vec<Candidate>,
    /// The allocation on the TURN server, when there is one.
    turn: Option<Allocation>,
    pairs: BTreeMap<PeerId, Pair>,
    reports: mpsc::UnboundedSender<Reported>,
    media: Media,
    /// The members' media being recorded, when asked for.
    recordings: Option<Recordings>,
}

/// Longest wait between two looks at the calls' timers.
const TICK: Duration = Duration::from_millis(100);

impl Peer {
    /// In `room` as `me`, with `peers` inside before: a call with each, in which they
    /// offer first.
    fn entered(&mut self, room: RoomName, me: PeerId, peers: Vec<PeerId>) {
        self.me = me;
        for &other in &peers {
            self.call(other);
        }
        self.report(Report::Entered {
            room,
            peer: me,
            peers,
        });
    }

    /// The pair with `other`, made if there is none.
    fn call(&mut self, other: PeerId) -> Option<&mut Pair> {
        if !self.pairs.contains_key(&other) {
            match Pair::new(self.me, other, &self.candidates, self.media.clone()) {
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

    async fn serve(
        &mut self,
        mut events: Events<Signal>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), PeerError> {
        let mut commanded = true;
        let mut buf = vec![0; 2000];
        loop {
            let wake = self.drain().await;
            tokio::select! {
                update = events.next() => match update {
                    Some(update) => self.on_update(update).await,
                    None => return Err(PeerError::Ended),
                },
                received = self.socket.recv_from(&mut buf) => {
                    let (n, source) = received.map_err(|source| PeerError::Io {
                        what: "receiving on the UDP socket".into(),
                        source,
                    })?;
                    self.on_datagram(source, &buf[..n]).await;
                }
                command = commands.recv(), if commanded => match command {
                    Some(Command::Say(line)) => self.chat(&line).await,
                    Some(Command::Stop) => break,
                    // Nobody commands any more: the calls go on.
                    None => commanded = false,
                },
                () = sleep_until(wake.into()) => self.tick(),
            }
        }
        self.hang_up_all();
        self.client.clone().close().await;
        Ok(())
    }

    fn report(&self, report: Report) {
        send_report(&self.reports, report);
    }

    /// Runs every call until it waits ([`Pair::run`]): sends its datagrams, reports what
    /// happened, and ends the calls that failed. Returns when the next timer is due.
    async fn drain(&mut self) -> Instant {
        let mut wake = Instant::now() + TICK;
        let mut failed = Vec::new();
        let mut drained = Drained::default();
        let now = Instant::now();
        let mut repairs = Vec::new();
        for (&peer, pair) in &mut self.pairs {
            match pair.run(now, &mut drained) {
                Ok((at, offer)) => {
                    wake = wake.min(at);
                    if let Some(offer) = offer {
                        repairs.push((peer, offer));
                    }
                }
                Err(error) => failed.push((peer, error.to_string())),
            }
            for transmit in drained.transmits.drain(..) {
                let relayed = self
                    .turn
                    .as_mut()
                    .filter(|t| t.relayed() == Some(transmit.source));
                let sent = match relayed {
                    // From the relayed address: wrapped for the TURN server.
                    Some(turn) => {
                        let server = turn.server();
                        let mut sent = Ok(0);
                        for datagram in turn.send(transmit.destination, &transmit.contents, now) {
                            sent = self.socket.send_to(&datagram, server).await;
                        }
                        sent
                    }
                    None => {
                        self.socket
                            .send_to(&transmit.contents, transmit.destination)
                            .await
                    }
                };
                if let Err(error) = sent {
                    tracing::debug!(%error, to = %transmit.destination, "a datagram not sent");
                }
            }
            for happening in drained.happenings.drain(..) {
                let recorded = match (&happening, self.recordings.as_mut()) {
                    (Happening::Audio { channels, data }, Some(recordings)) => {
                        Some(recordings.sound(peer, *channels, data))
                    }
                    (Happening::Video { time, data }, Some(recordings)) => {
                        Some(recordings.video(peer, *time, data))
                    }
                    _ => None,
                };
                match recorded {
                    Some(Ok(Some(started))) => send_report(&self.reports, started),
                    Some(Err(error)) => {
                        failed.push((peer, format!("recording failed: {error}")));
                    }
                    Some(Ok(None)) | None => {}
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
                    Happening::Video { .. } | Happening::Audio { .. } => continue,
                };
                send_report(&self.reports, report);
            }
        }
        if let Some(turn) = self.turn.as_mut() {
            let (refresh, next) = turn.refresh(now);
            if let Some(refresh) = refresh {
                let _ = self.socket.send_to(&refresh, turn.server()).await;
            }
            if let Some(next) = next {
                wake = wake.min(next);
            }
        }
        for (peer, reason) in failed {
            self.end_call(peer, reason);
        }
        for (peer, offer) in repairs {
            self.report(Report::Repairing { peer });
            self.send_to(peer, offer).await;
        }
        wake
    }

    fn end_call(&mut self, peer: PeerId, reason: String) {
        if self.hang_up(peer) {
            tracing::warn!(%peer, %reason, "call ended");
            self.report(Report::CallEnded { peer, reason });
        }
    }

    /// Ends the call with `peer`, if there is one, and completes its recording.
    fn hang_up(&mut self, peer: PeerId) -> bool {
        let finished = self
            .recordings
            .as_mut()
            .map(|recordings| recordings.finish(peer))
            .unwrap_or_default();
        for report in finished {
            self.report(report);
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

    /// A datagram from `source`: from the TURN server, the allocation's (and perhaps a
    /// peer's, relayed); else a peer's, for the call that accepts it.
    async fn on_datagram(&mut self, source: SocketAddr, datagram: &[u8]) {
        let turn = self.turn.as_mut().filter(|turn| turn.server() == source);
        let Some(turn) = turn else {
            return self.deliver(source, self.local, datagram);
        };
        match turn.receive(datagram) {
            Ok(Received::Relayed(peer, data)) => {
                if let Some(relayed) = turn.relayed() {
                    self.deliver(peer, relayed, &data);
                }
            }
            Ok(Received::Send(request)) => {
                let _ = self.socket.send_to(&request, source).await;
            }
            Ok(Received::Nothing | Received::Allocated(_)) => {}
            Err(error) => tracing::warn!(%error, "the TURN server"),
        }
    }

    /// A datagram from `source` to our `destination` (the socket, or the relayed address).
    fn deliver(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        // Not STUN, DTLS, RTP or RTCP: nobody's.
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
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
                self.report(Report::Reconnecting { reason });
            }
            Update::Resumed { incomplete, .. } => {
                self.report(Report::Resumed { incomplete });
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
                self.report(Report::Join { peer });
                // Members inside offer to a newcomer.
                let offer = self.call(peer).and_then(Pair::offer);
                if let Some(offer) = offer {
                    self.send_to(peer, offer).await;
                }
            }
            Event::Left { peer, .. } => {
                self.hang_up(peer);
                self.report(Report::Left { peer });
            }
            Event::Message { from, data } => self.on_signal(from, data).await,
            // A rejoin as a new peer: every call starts again.
            Event::Created { peer, room, .. } => {
                self.hang_up_all();
                self.entered(room, peer, Vec::new());
            }
            Event::Joined {
                peer, room, peers, ..
            } => {
                self.hang_up_all();
                self.entered(room, peer, peers);
            }
            other => tracing::debug!(?other, "relay event"),
        }
    }

    async fn on_signal(&mut self, from: PeerId, signal: Signal) {
        match signal {
            Signal::Text { text } => self.report(Report::Chat {
                from,
                text,
                via: Via::Relay,
            }),
            Signal::Description { sdp_type, sdp } => {
                self.report(Report::Described {
                    peer: from,
                    sdp_type,
                    outgoing: false,
                });
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
            // A page's microphone and camera marks: the peer shows no tiles.
            Signal::Media { .. } => {}
            Signal::Bye => {
                if self.hang_up(from) {
                    self.report(Report::CallEnded {
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
        if let Signal::Description { sdp_type, .. } = &signal {
            self.report(Report::Described {
                peer,
                sdp_type: *sdp_type,
                outgoing: true,
            });
        }
        if let Err(error) = self.client.send_to(peer, signal).await {
            tracing::warn!(%error, %peer, "a signal could not be sent");
        }
    }
}

/// Sends `report`, stamped with the time.
fn send_report(reports: &mpsc::UnboundedSender<Reported>, report: Report) {
    // A program that stopped reading reports has no use for more.
    let _ = reports.send(Reported {
        at: Instant::now(),
        report,
    });
}

/// Allocates a relayed address on the first TURN server (UDP) the relay names, with the
/// credential it minted; why not, when it cannot.
async fn allocate(socket: &UdpSocket, entered: &Entered) -> Result<Allocation, String> {
    let (server, username, password) = entered
        .ice_servers
        .iter()
        .find_map(|server| {
            let address = server
                .urls
                .iter()
                .find_map(|url| turn::server_address(url))?;
            Some((
                address,
                server.username.as_ref()?,
                server.credential.as_ref()?,
            ))
        })
        .ok_or("the relay names no TURN server with a credential")?;
    let (mut allocation, first) = Allocation::start(server, username, password);
    let deadline = tokio::time::Instant::now() + TURN_PATIENCE;
    socket
        .send_to(&first, server)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0; 2000];
    loop {
        let (n, source) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .map_err(|_| format!("the TURN server {server} did not answer in {TURN_PATIENCE:?}"))?
            .map_err(|e| e.to_string())?;
        if source != server {
            continue;
        }
        match allocation.receive(&buf[..n]).map_err(|e| e.to_string())? {
            Received::Send(request) => {
                socket
                    .send_to(&request, server)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Received::Allocated(relayed) => {
                tracing::info!(%server, %relayed, "relayed address allocated");
                return Ok(allocation);
            }
            Received::Nothing | Received::Relayed(..) => {}
        }
    }
}
