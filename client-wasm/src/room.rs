//! The room logic: what each relay frame means for the page, kept free of the DOM and of
//! WebRTC so it can be tested on its own.

use signalroom_protocol::{ErrorCode, Event, IceServer, PeerId, RoomName, Signal};

use crate::codec::Incoming;

/// Where the page stands, as shown in its status badge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not (yet, or no longer) connected to the relay.
    Connecting,
    /// In the room, alone.
    Waiting,
    /// In the room with these others.
    Together(Vec<PeerId>),
    /// The room was full; the page is outside it.
    Full,
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
}

/// The page's view of its room.
#[derive(Debug, Clone)]
pub struct Room {
    name: RoomName,
    me: Option<PeerId>,
    phase: Phase,
}

impl Room {
    /// A room the page is about to ask for.
    pub fn new(name: RoomName) -> Self {
        Self {
            name,
            me: None,
            phase: Phase::Connecting,
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

    /// The relay connection dropped: every id it gave is void.
    pub fn disconnected(&mut self) {
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
        peers.into_iter().map(Action::HangUp).collect()
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
            } => {
                self.me = Some(peer);
                let mut actions = vec![
                    Action::IceServers(ice_servers),
                    Action::Log(format!("joined room {room} as peer {peer} with {peers:?}")),
                ];
                actions.extend(peers.iter().map(|&other| Action::Call {
                    peer: other,
                    polite: peer > other,
                }));
                self.phase = if peers.is_empty() {
                    Phase::Waiting
                } else {
                    Phase::Together(peers)
                };
                actions
            }
            Event::Join { room, peer } => {
                let polite = self.me.is_some_and(|me| me > peer);
                let mut others = match std::mem::replace(&mut self.phase, Phase::Waiting) {
                    Phase::Together(others) => others,
                    _ => Vec::new(),
                };
                others.push(peer);
                self.phase = Phase::Together(others);
                vec![
                    Action::Log(format!("peer {peer} joined room {room}")),
                    Action::Call { peer, polite },
                ]
            }
            Event::Full { room } => {
                self.phase = Phase::Full;
                vec![Action::Log(format!("room {room} is full"))]
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
