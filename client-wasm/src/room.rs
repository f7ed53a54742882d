//! The room logic: what each relay frame means for the page, kept free of the DOM and of
//! WebRTC so it can be tested on its own.
//!
//! The page holds a full mesh: one call per other member, up to [`MAX_PEERS`]. In each pair
//! the later arrival (the larger relay id) is the polite side, and it lets the other make
//! the first offer: a newcomer is offered to by everyone already inside
//! ([`signalroom_protocol::call::polite`]).

use signalroom_protocol::call::polite;
use signalroom_protocol::{ErrorCode, Event, IceServer, PeerId, RoomName, Signal};

use crate::codec::Incoming;

/// The most other members the page calls at once (a room of six). A newcomer that finds
/// more inside treats the room as full and leaves it; members already inside do not call a
/// newcomer beyond this.
pub const MAX_PEERS: usize = 5;

/// Where the page stands, as shown in its status badge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not (yet, or no longer) connected to the relay.
    Connecting,
    /// In the room, alone.
    Waiting,
    /// In the room with these others, oldest first, each with a call.
    Together(Vec<PeerId>),
    /// The room was full; the page is outside it.
    Full,
    /// The room held more members than the page calls at once ([`MAX_PEERS`]); the page
    /// left it.
    Crowded {
        /// The members it found inside.
        members: usize,
    },
    /// The page left the room (hung up).
    Out,
    /// The room token in the page's address does not admit this room; the page is outside.
    Forbidden,
}

/// What the page should do about a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write a line to the event log.
    Log(String),
    /// Call `peer`; `polite` says who yields when both offer at once.
    Call {
        /// The other peer.
        peer: PeerId,
        /// Whether this page is the polite side of perfect negotiation.
        polite: bool,
    },
    /// Tear down the call with `peer`.
    HangUp(PeerId),
    /// Tear down every call made before the relay connection was lost (their ids are void:
    /// everyone comes back with a new one). Until then they kept running.
    EndEarlier,
    /// Leave the room (send `leave`).
    Leave,
    /// Hand a WebRTC signal to the call with `from`.
    Signal {
        /// The sender.
        from: PeerId,
        /// What it sent.
        signal: Signal,
    },
    /// Show a chat line.
    Chat {
        /// The sender.
        from: PeerId,
        /// The text.
        text: String,
    },
    /// Use these STUN/TURN servers for calls.
    IceServers(Vec<IceServer>),
    /// `peer`'s relay connection dropped; its session may resume (its call goes on).
    Away(PeerId),
    /// `peer` resumed its session.
    Back(PeerId),
    /// Ask for the room again in a moment: a seat may free up (a member leaves, or the seat
    /// of this page's own earlier connection, on a relay that died, is given up).
    AskAgain,
}

/// Whether calls from before a lost relay connection may still be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Earlier {
    /// None: every call is with a member the relay knows now.
    None,
    /// Some may run, until the page calls someone again.
    Running,
}

/// The page's view of its room.
#[derive(Debug, Clone)]
pub struct Room {
    name: RoomName,
    me: Option<PeerId>,
    phase: Phase,
    earlier: Earlier,
}

impl Room {
    /// A room the page is about to ask for.
    pub fn new(name: RoomName) -> Self {
        Self {
            name,
            me: None,
            phase: Phase::Connecting,
            earlier: Earlier::None,
        }
    }

    /// The room's name.
    pub fn name(&self) -> &RoomName {
        &self.name
    }

    /// This page's id, once the relay assigned one.
    pub fn me(&self) -> Option<PeerId> {
        self.me
    }

    /// Where the page stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The others in the room the page is calling, oldest first.
    pub fn peers(&self) -> &[PeerId] {
        match &self.phase {
            Phase::Together(peers) => peers,
            _ => &[],
        }
    }

    /// The relay connection dropped: every id it gave is void. Calls already made keep
    /// running meanwhile (media goes peer to peer).
    pub fn disconnected(&mut self) {
        if matches!(self.phase, Phase::Together(_)) {
            self.earlier = Earlier::Running;
        }
        self.me = None;
        self.phase = Phase::Connecting;
    }

    /// The page hung up and sent `leave`.
    pub fn left(&mut self) -> Vec<Action> {
        let peers = match std::mem::replace(&mut self.phase, Phase::Out) {
            Phase::Together(peers) => peers,
            _ => Vec::new(),
        };
        self.me = None;
        let mut actions = self.end_earlier();
        actions.extend(peers.into_iter().map(Action::HangUp));
        actions
    }

    /// Ends the calls of an earlier relay connection, if any may be running.
    fn end_earlier(&mut self) -> Vec<Action> {
        match std::mem::replace(&mut self.earlier, Earlier::None) {
            Earlier::Running => vec![Action::EndEarlier],
            Earlier::None => Vec::new(),
        }
    }

    /// Calls `peer`, first ending the calls of an earlier connection.
    fn call(&mut self, me: PeerId, peer: PeerId) -> Vec<Action> {
        let mut actions = self.end_earlier();
        actions.push(Action::Call {
            peer,
            polite: polite(me, peer),
        });
        actions
    }

    /// Applies one frame from the relay.
    pub fn apply(&mut self, incoming: Incoming) -> Vec<Action> {
        let event = match incoming {
            Incoming::Event(event) => event,
            Incoming::Foreign { from } => {
                return vec![Action::Log(format!(
                    "peer {from} sent data this page does not understand"
                ))]
            }
        };
        match event {
            Event::Created {
                room,
                peer,
                ice_servers,
                ..
            } => {
                self.me = Some(peer);
                self.phase = Phase::Waiting;
                vec![
                    Action::IceServers(ice_servers),
                    Action::Log(format!(
                        "created room {room} as peer {peer}; waiting for someone to join"
                    )),
                ]
            }
            Event::Joined {
                room,
                peer,
                peers,
                ice_servers,
                ..
            } => {
                let me = peer;
                let inside: Vec<String> = peers.iter().map(PeerId::to_string).collect();
                let inside = inside.join(", ");
                let mut actions = vec![
                    Action::IceServers(ice_servers),
                    Action::Log(format!(
                        "joined room {room} as peer {me} with peers {inside}"
                    )),
                ];
                if peers.len() > MAX_PEERS {
                    self.phase = Phase::Crowded {
                        members: peers.len(),
                    };
                    actions.push(Action::Log(format!(
                        "room {room} has {} members; this page calls at most {MAX_PEERS} \
                         others, so it leaves and asks again later",
                        peers.len()
                    )));
                    actions.push(Action::Leave);
                    return actions;
                }
                self.me = Some(me);
                for &other in &peers {
                    actions.extend(self.call(me, other));
                }
                self.phase = if peers.is_empty() {
                    Phase::Waiting
                } else {
                    Phase::Together(peers)
                };
                actions
            }
            Event::Join { room, peer } => {
                let Some(me) = self.me else {
                    return vec![Action::Log(format!(
                        "peer {peer} joined room {room}, which this page is not in"
                    ))];
                };
                let mut others = match std::mem::replace(&mut self.phase, Phase::Waiting) {
                    Phase::Together(others) => others,
                    _ => Vec::new(),
                };
                if others.len() >= MAX_PEERS {
                    self.phase = Phase::Together(others);
                    return vec![Action::Log(format!(
                        "peer {peer} joined room {room}, beyond the {MAX_PEERS} others this \
                         page calls; not calling it"
                    ))];
                }
                others.push(peer);
                self.phase = Phase::Together(others);
                let mut actions = vec![Action::Log(format!("peer {peer} joined room {room}"))];
                actions.extend(self.call(me, peer));
                actions
            }
            Event::Full { room } => {
                self.phase = Phase::Full;
                vec![
                    Action::Log(format!("room {room} is full")),
                    Action::AskAgain,
                ]
            }
            Event::Left { room, peer } => {
                if let Phase::Together(others) = &mut self.phase {
                    others.retain(|p| *p != peer);
                    if others.is_empty() {
                        self.phase = Phase::Waiting;
                    }
                }
                vec![
                    Action::Log(format!("peer {peer} left room {room}")),
                    Action::HangUp(peer),
                ]
            }
            Event::Message {
                from,
                data: Signal::Text { text },
            } => vec![Action::Chat { from, text }],
            Event::Message { from, data } => vec![Action::Signal { from, signal: data }],
            Event::Away { room, peer } => vec![
                Action::Log(format!(
                    "peer {peer} of room {room} lost its relay connection; it may come back"
                )),
                Action::Away(peer),
            ],
            Event::Back { room, peer } => vec![
                Action::Log(format!("peer {peer} of room {room} is back")),
                Action::Back(peer),
            ],
            Event::Resumed { room, peer, .. } => vec![Action::Log(format!(
                "resumed as peer {peer} in room {room}"
            ))],
            Event::Ack { .. } => Vec::new(),
            Event::Error {
                code: ErrorCode::Forbidden,
                message,
            } => {
                self.phase = Phase::Forbidden;
                vec![Action::Log(format!(
                    "the room token in this page's address does not admit room {}; ask \
                     for a link to this room ({message})",
                    self.name
                ))]
            }
            Event::Error { code, message } => {
                vec![Action::Log(format!(
                    "relay refused a frame: {code}: {message}"
                ))]
            }
        }
    }
}
