//! What the reference page puts in a `message` frame's `data`: the WebRTC handshake and a
//! text chat fallback. The relay never looks inside; any Rust peer can speak the same.

use serde::{Deserialize, Serialize};

/// One signaling payload between two peers, tagged by `"kind"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    /// A line of chat, sent through the relay.
    Text {
        /// The text.
        text: String,
    },
    /// An SDP offer or answer (`RTCSessionDescription`).
    Description {
        /// `offer`, `answer`, `pranswer` or `rollback`.
        sdp_type: SdpType,
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate (`RTCIceCandidate`).
    Candidate {
        /// The candidate line; empty marks the end of candidates.
        candidate: String,
        /// The media stream's identification tag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// The index of the m-line the candidate belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_m_line_index: Option<u16>,
    },
    /// The sender hangs up the call but stays in the room.
    Bye,
    /// What the sender sends now: whether its microphone and its video (camera or shared
    /// screen) are on. Sent when either changes, and when a call's chat channel opens; the
    /// other side marks the sender's tile. A track turned off stays in the call, sending
    /// silence or black frames.
    Media {
        /// Sound goes out.
        audio: bool,
        /// Video goes out.
        video: bool,
    },
}

/// The type of a session description, as `RTCSdpType` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdpType {
    /// An offer.
    Offer,
    /// A provisional answer.
    Pranswer,
    /// A final answer.
    Answer,
    /// Rolls back an offer (used by perfect negotiation).
    Rollback,
}

impl SdpType {
    /// The type as WebRTC spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Pranswer => "pranswer",
            Self::Answer => "answer",
            Self::Rollback => "rollback",
        }
    }

    /// The type spelled `sdp_type` on the wire, if it is one.
    pub fn from_wire(sdp_type: &str) -> Option<Self> {
        Some(match sdp_type {
            "offer" => Self::Offer,
            "pranswer" => Self::Pranswer,
            "answer" => Self::Answer,
            "rollback" => Self::Rollback,
            _ => return None,
        })
    }
}

/// A STUN or TURN server, as `RTCIceServer` spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
