//! How two peers call each other, the rules every client of the relay that makes calls
//! follows: the reference page and `signalroom-peer` alike. A pair of peers that disagree
//! on any of them does not connect, so they live here once.
//!
//! - **Who offers first**: in each pair the earlier arrival (the smaller relay id) is
//!   impolite and makes the first offer; the later one is polite and waits for it
//!   ([`polite`]). A newcomer is thus offered to by everyone already inside.
//! - **Perfect negotiation** ([`Negotiation`]): both may offer at once. The polite one
//!   yields: it rolls its own offer back and answers. The impolite one ignores the
//!   colliding offer and waits for the answer to its own. See
//!   <https://w3c.github.io/webrtc-pc/#perfect-negotiation-example>.
//! - **Repair** ([`CALL_PATIENCE_MS`]): a call that fails, or has not connected in good
//!   time, restarts ICE.
//! - **The chat channel** ([`CHAT_LABEL`], [`CHAT_ID`]): one ordered, reliable data
//!   channel that both sides create pre-negotiated (`negotiated: true`, the same id), so
//!   neither waits for the other's; chat lines go as text messages, and binary messages
//!   hold a [`Signal`](crate::Signal) as JSON (the page's `media` marks).
//! - **Signaling**: the [`Signal`](crate::Signal) kinds in a `message`'s `data`; the
//!   description and the candidates go `to` the one peer they are for.

use crate::{PeerId, SdpType};

/// A call not connected this long after it started, or after it was last nudged, is
/// nudged: its side stops waiting for the other's first offer and restarts ICE, which
/// renegotiates with fresh candidates. A side whose connection fails restarts ICE at once.
pub const CALL_PATIENCE_MS: u32 = 8_000;

/// The label of the chat data channel.
pub const CHAT_LABEL: &str = "chat";

/// The stream id of the chat data channel, which both sides create pre-negotiated.
pub const CHAT_ID: u16 = 0;

/// Whether `me` is the polite side of its pair with `other`: the later arrival (the larger
/// id) is, and it waits for the other's first offer.
pub fn polite(me: PeerId, other: PeerId) -> bool {
    me > other
}

/// Where this side's own offer stands, as far as negotiation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    polite: bool,
    making_offer: bool,
    ignore_offer: bool,
    /// The polite side lets the other make the first offer (it always does: its connection
    /// is new too), so a call does not start with colliding offers.
    waiting_for_offer: bool,
}

/// What to do with a description from the other peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Drop it: an offer colliding with ours while we are impolite, or a stale answer.
    Ignore,
    /// Apply it; first roll back our own pending offer if `rollback`; then, if it was an
    /// offer, answer it.
    Apply {
        /// Roll back our own offer before applying.
        rollback: bool,
        /// Create and send an answer after applying.
        answer: bool,
    },
}

impl Negotiation {
    /// Negotiation for the polite or the impolite side.
    pub fn new(polite: bool) -> Self {
        Self {
            polite,
            making_offer: false,
            ignore_offer: false,
            waiting_for_offer: polite,
        }
    }

    /// Whether this side yields on collisions.
    pub fn polite(&self) -> bool {
        self.polite
    }

    /// Whether to make an offer now; `stable` is whether the connection's signaling state
    /// is `stable`. The page asks on the browser's `negotiationneeded`, which it handles
    /// after whatever was queued before it, so the connection may have left `stable`
    /// meanwhile (an offer of ours is out, or one of the peer's is being answered): two
    /// offers in a row would draw two answers, the second landing in `stable`. The browser
    /// fires the event again once back in `stable` if negotiation is still needed.
    pub fn may_offer(&self, stable: bool) -> bool {
        stable && !self.making_offer && !self.waiting_for_offer
    }

    /// Stops waiting for the other side's first offer (it is overdue).
    pub fn stop_waiting(&mut self) {
        self.waiting_for_offer = false;
    }

    /// We start creating an offer.
    pub fn offering(&mut self) {
        self.making_offer = true;
    }

    /// Our offer is set locally (or failed).
    pub fn offered(&mut self) {
        self.making_offer = false;
    }

    /// Decides about a remote description; `stable` is whether the connection's signaling
    /// state is `stable`.
    pub fn on_description(&mut self, sdp_type: SdpType, stable: bool) -> Step {
        let offer = sdp_type == SdpType::Offer;
        if !offer && stable {
            // An answer to no offer of ours (one we replaced or rolled back): stale.
            return Step::Ignore;
        }
        let collision = offer && (self.making_offer || !stable);
        self.ignore_offer = !self.polite && collision;
        if self.ignore_offer {
            return Step::Ignore;
        }
        self.waiting_for_offer = false;
        Step::Apply {
            rollback: collision,
            answer: offer,
        }
    }

    /// Whether a failure to add a remote candidate matters: candidates of an offer we
    /// ignored are expected to fail.
    pub fn candidate_error_matters(&self) -> bool {
        !self.ignore_offer
    }
}
