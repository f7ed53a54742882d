//! One call: the WebRTC session with one other member of the room, held by a str0m `Rtc`
//! and negotiated by the rules of [`signalroom_protocol::call`].
//!
//! A pair does no I/O. It takes signals and UDP datagrams, and hands back what to send:
//! [`Pair::drain`] gives its datagrams to the caller's socket, its signals to the relay,
//! and its happenings to the report. The caller owns the socket and the relay client.

use std::net::SocketAddr;
use std::time::Instant;

use signalroom_protocol::call::{polite, Negotiation, Step, CHAT_ID, CHAT_LABEL};
use signalroom_protocol::{PeerId, SdpType, Signal};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::media::{Direction, MediaKind};
use str0m::net::Transmit;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

/// Why a pair ended.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The other side sent a description str0m cannot read or apply.
    #[error("a bad {kind} from the peer: {error}")]
    Description {
        /// `offer` or `answer`.
        kind: &'static str,
        /// What was wrong.
        error: RtcError,
    },
    /// The WebRTC session failed.
    #[error("the WebRTC session failed: {0}")]
    Rtc(#[from] RtcError),
}

/// Something a pair tells the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happening {
    /// ICE and DTLS are up.
    Connected,
    /// The chat channel opened.
    ChannelOpen,
    /// A chat line arrived over the data channel.
    Chat(String),
    /// ICE lost the other side (it may come back).
    Disconnected,
}

/// What one drain of a pair produced.
#[derive(Debug, Default)]
pub struct Drained {
    /// Datagrams to send, in order.
    pub transmits: Vec<Transmit>,
    /// Happenings to report, in order.
    pub happenings: Vec<Happening>,
}

/// The call with one other member.
pub struct Pair {
    rtc: Rtc,
    negotiation: Negotiation,
    /// Our offer, until its answer is applied or the other side's offer replaces it; with
    /// the chat channel it adds.
    pending: Option<(SdpPendingOffer, ChannelId)>,
    /// The chat channel, once a negotiation that has it is complete.
    chat: Option<ChannelId>,
    open: bool,
}

/// The chat channel as the page creates it: pre-negotiated, ordered, reliable.
fn chat_config() -> ChannelConfig {
    ChannelConfig {
        label: CHAT_LABEL.to_owned(),
        ordered: true,
        reliability: Reliability::Reliable,
        negotiated: Some(CHAT_ID),
        protocol: String::new(),
    }
}

impl Pair {
    /// A call between `me` and `other`, reachable at `local` (our UDP socket's address,
    /// offered as our only candidate: host, UDP).
    pub fn new(me: PeerId, other: PeerId, local: SocketAddr) -> Result<Self, RtcError> {
        let mut rtc = Rtc::builder().build(Instant::now());
        let candidate = Candidate::host(local, "udp")?;
        rtc.add_local_candidate(candidate);
        Ok(Self {
            rtc,
            negotiation: Negotiation::new(polite(me, other)),
            pending: None,
            chat: None,
            open: false,
        })
    }

    /// Makes an offer (receiving the other's audio and video, and the chat channel), if
    /// one may be made now.
    pub fn offer(&mut self) -> Option<Signal> {
        if !self.negotiation.may_offer(self.pending.is_none()) {
            return None;
        }
        self.negotiation.offering();
        let mut api = self.rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let chat = api.add_channel_with_config(chat_config());
        let applied = api.apply();
        self.negotiation.offered();
        let (offer, pending) = applied?;
        self.pending = Some((pending, chat));
        Some(Signal::Description {
            sdp_type: SdpType::Offer,
            sdp: offer.to_sdp_string(),
        })
    }

    /// Takes a description from the other side; the answer to send, if it was an offer
    /// this side applies.
    pub fn on_description(
        &mut self,
        sdp_type: SdpType,
        sdp: &str,
    ) -> Result<Option<Signal>, Failure> {
        let stable = self.pending.is_none();
        let step = self.negotiation.on_description(sdp_type, stable);
        let Step::Apply { .. } = step else {
            tracing::debug!(
                ?sdp_type,
                "description ignored (a colliding offer, or stale)"
            );
            return Ok(None);
        };
        match sdp_type {
            SdpType::Offer => {
                let offer =
                    SdpOffer::from_sdp_string(sdp).map_err(|error| Failure::Description {
                        kind: "offer",
                        error: RtcError::Sdp(error),
                    })?;
                // str0m rolls our own pending offer back as it accepts theirs.
                self.pending = None;
                let answer = self.rtc.sdp_api().accept_offer(offer).map_err(|error| {
                    Failure::Description {
                        kind: "offer",
                        error,
                    }
                })?;
                if self.chat.is_none() {
                    self.chat = Some(self.rtc.direct_api().create_data_channel(chat_config()));
                }
                Ok(Some(Signal::Description {
                    sdp_type: SdpType::Answer,
                    sdp: answer.to_sdp_string(),
                }))
            }
            SdpType::Answer => {
                let Some((pending, chat)) = self.pending.take() else {
                    return Ok(None);
                };
                let answer =
                    SdpAnswer::from_sdp_string(sdp).map_err(|error| Failure::Description {
                        kind: "answer",
                        error: RtcError::Sdp(error),
                    })?;
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|error| Failure::Description {
                        kind: "answer",
                        error,
                    })?;
                self.chat.get_or_insert(chat);
                Ok(None)
            }
            // The page sends neither; a rollback is implied by an offer in str0m.
            SdpType::Pranswer | SdpType::Rollback => Ok(None),
        }
    }

    /// Takes a trickled candidate from the other side. One str0m cannot use (an mDNS
    /// `.local` name, a malformed line) is skipped: others may still connect the pair.
    pub fn on_candidate(&mut self, candidate: &str) {
        if candidate.is_empty() {
            return;
        }
        match Candidate::from_sdp_string(candidate) {
            Ok(candidate) => self.rtc.add_remote_candidate(candidate),
            Err(error) if self.negotiation.candidate_error_matters() => {
                tracing::debug!(%error, candidate, "a remote candidate skipped");
            }
            Err(_) => {}
        }
    }

    /// Sends a chat line over the data channel; false when it is not open (or its buffer
    /// is full).
    pub fn send_chat(&mut self, text: &str) -> bool {
        if !self.open {
            return false;
        }
        let Some(mut channel) = self.chat.and_then(|id| self.rtc.channel(id)) else {
            return false;
        };
        matches!(channel.write(false, text.as_bytes()), Ok(true))
    }

    /// Whether `input` (a datagram) is for this pair.
    pub fn accepts(&self, input: &Input) -> bool {
        self.rtc.accepts(input)
    }

    /// Takes a datagram or the passing of time.
    pub fn handle_input(&mut self, input: Input) -> Result<(), Failure> {
        Ok(self.rtc.handle_input(input)?)
    }

    /// Runs the session until it waits for input: what to send and report, and when it
    /// wants [`Input::Timeout`] next.
    pub fn drain(&mut self, drained: &mut Drained) -> Result<Instant, Failure> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(transmit) => drained.transmits.push(transmit),
                Output::Event(event) => {
                    if let Some(happening) = self.on_event(event) {
                        drained.happenings.push(happening);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Option<Happening> {
        match event {
            Event::Connected => Some(Happening::Connected),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                Some(Happening::Disconnected)
            }
            Event::ChannelOpen(id, _) if Some(id) == self.chat => {
                self.open = true;
                Some(Happening::ChannelOpen)
            }
            Event::ChannelData(data) if Some(data.id) == self.chat && !data.binary => Some(
                Happening::Chat(String::from_utf8_lossy(&data.data).into_owned()),
            ),
            Event::ChannelClose(id) if Some(id) == self.chat => {
                self.open = false;
                None
            }
            _ => None,
        }
    }

    /// Ends the call: nothing more goes out.
    pub fn close(&mut self) {
        self.rtc.disconnect();
    }
}
