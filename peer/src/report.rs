//! What the peer tells its user: one line per happening on standard output, for a person
//! or, with `--json`, one JSON object per line for a program.

use std::fmt;

use serde::Serialize;
use signalroom_protocol::{PeerId, RoomName, SdpType};

/// Which way a chat line travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The pair's data channel, peer to peer.
    Datachannel,
    /// The relay (the channel was not open).
    Relay,
}

/// One happening, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    /// In the room, with these members inside before us.
    Entered {
        room: RoomName,
        peer: PeerId,
        peers: Vec<PeerId>,
    },
    /// A relayed address was allocated on the TURN server the relay named, and is offered
    /// to every call.
    Relayed {
        server: std::net::SocketAddr,
        relayed: std::net::SocketAddr,
    },
    /// A member came in.
    Join { peer: PeerId },
    /// A member went.
    Left { peer: PeerId },
    /// The call with `peer` is connected (ICE and DTLS).
    Connected { peer: PeerId },
    /// The chat channel with `peer` is open.
    ChannelOpen { peer: PeerId },
    /// ICE lost `peer` (it may come back).
    Disconnected { peer: PeerId },
    /// The call with `peer` failed, or has not connected in good time: this side offers
    /// (again, with fresh ICE credentials once it was negotiated).
    Repairing { peer: PeerId },
    /// A session description went to `peer` (`outgoing`) or came from it: for measuring
    /// how long signaling takes; the command line does not print it.
    Described {
        peer: PeerId,
        sdp_type: SdpType,
        outgoing: bool,
    },
    /// A chat line.
    Chat {
        from: PeerId,
        text: String,
        via: Via,
    },
    /// The call with `peer` ended for this reason; the peer stays in the room.
    CallEnded { peer: PeerId, reason: String },
    /// `peer`'s video is being recorded into `path`, at its first keyframe's size.
    Recording {
        peer: PeerId,
        path: String,
        width: u16,
        height: u16,
    },
    /// `peer`'s audio is being recorded into `path` (Opus in Ogg).
    RecordingAudio { peer: PeerId, path: String },
    /// `peer`'s recording (video or audio) is complete: `frames` frames or packets in
    /// `path`.
    Recorded {
        peer: PeerId,
        path: String,
        frames: u32,
    },
    /// The connection to the relay dropped; the calls go on.
    Reconnecting { reason: String },
    /// The session resumed on a new connection.
    Resumed { incomplete: bool },
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entered { room, peer, peers } if peers.is_empty() => {
                write!(f, "in room {room} as peer {peer}, alone")
            }
            Self::Entered { room, peer, peers } => {
                let peers: Vec<_> = peers.iter().map(PeerId::to_string).collect();
                write!(
                    f,
                    "in room {room} as peer {peer}, with {}",
                    peers.join(", ")
                )
            }
            Self::Relayed { server, relayed } => {
                write!(
                    f,
                    "relayed address {relayed} allocated on the TURN server {server}"
                )
            }
            Self::Join { peer } => write!(f, "peer {peer} came in"),
            Self::Left { peer } => write!(f, "peer {peer} left"),
            Self::Connected { peer } => write!(f, "call with peer {peer} connected"),
            Self::ChannelOpen { peer } => write!(f, "chat with peer {peer} open"),
            Self::Disconnected { peer } => write!(f, "call with peer {peer} lost its path"),
            Self::Repairing { peer } => {
                write!(f, "call with peer {peer} not connected; offering again")
            }
            Self::Described {
                peer,
                sdp_type,
                outgoing: true,
            } => write!(f, "{} to peer {peer}", sdp_type.as_str()),
            Self::Described { peer, sdp_type, .. } => {
                write!(f, "{} from peer {peer}", sdp_type.as_str())
            }
            Self::Chat { from, text, via } => match via {
                Via::Datachannel => write!(f, "peer {from}: {text}"),
                Via::Relay => write!(f, "peer {from} (via the relay): {text}"),
            },
            Self::CallEnded { peer, reason } => write!(f, "call with peer {peer} ended: {reason}"),
            Self::Recording {
                peer,
                path,
                width,
                height,
            } => write!(
                f,
                "recording peer {peer}'s video ({width}x{height}) into {path}"
            ),
            Self::RecordingAudio { peer, path } => {
                write!(f, "recording peer {peer}'s audio into {path}")
            }
            Self::Recorded { peer, path, frames } => {
                write!(
                    f,
                    "recorded {frames} frames of peer {peer}'s video into {path}"
                )
            }
            Self::Reconnecting { reason } => {
                write!(f, "relay connection lost ({reason}); reconnecting")
            }
            Self::Resumed { incomplete: false } => write!(f, "relay connection back"),
            Self::Resumed { incomplete: true } => {
                write!(f, "relay connection back; frames may have been lost")
            }
        }
    }
}

/// A report and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// When it happened.
    pub at: std::time::Instant,
    /// What happened.
    pub report: Report,
}

/// Prints reports as a person or a program wants them.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
}

impl Printer {
    /// Prints `report`, but for those only a measurement wants ([`Report::Described`]).
    pub fn print(self, report: &Report) {
        if matches!(report, Report::Described { .. }) {
            return;
        }
        if self.json {
            match serde_json::to_string(report) {
                Ok(line) => println!("{line}"),
                Err(error) => tracing::error!(%error, "a report could not be written"),
            }
        } else {
            println!("{report}");
        }
    }
}
