//! One call: the WebRTC session with one other member of the room, held by a str0m `Rtc`
//! and negotiated by the rules of [`signalroom_protocol::call`].
//!
//! A pair does no I/O. It takes signals and UDP datagrams, and hands back what to send:
//! [`Pair::run`] gives its datagrams to the caller's socket, its signals to the relay,
//! and its happenings to the report. The caller owns the socket and the relay client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use signalroom_protocol::call::{polite, Negotiation, Step, CALL_PATIENCE_MS, CHAT_ID, CHAT_LABEL};
use signalroom_protocol::{PeerId, SdpType, Signal};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid};
use str0m::net::Transmit;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

use crate::ivf::Clip;

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
    /// An audio packet from the other side, for a recording.
    Audio {
        /// Its channels, as negotiated.
        channels: u8,
        /// The Opus packet.
        data: Arc<[u8]>,
    },
    /// A video frame from the other side, for a recording: the first is a keyframe.
    Video {
        /// Its RTP time, 90 kHz.
        time: u64,
        /// The VP8 frame.
        data: Arc<[u8]>,
    },
}

/// What media a pair handles besides chat.
#[derive(Debug, Clone, Default)]
pub struct Media {
    /// Hand the other side's video on, as [`Happening::Video`], from a keyframe on, and
    /// its audio, as [`Happening::Audio`].
    pub record: bool,
    /// Send this clip as our camera, looped, once the call is connected.
    pub send: Option<Arc<Clip>>,
}

/// Where the clip being sent stands.
#[derive(Debug, Clone, Copy)]
struct Playback {
    /// When the first pass started.
    started: Instant,
    /// The next frame to send.
    next: usize,
    /// Passes completed.
    passes: u64,
}

/// Where a call's connection stands, for its repair ([`CALL_PATIENCE_MS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Not connected since this moment (the call's start, or its last nudge).
    Waiting(Instant),
    /// Connected.
    Up,
    /// The connection was lost: restart ICE now.
    Lost,
}

/// What [`Pair::play`] did.
enum Play {
    /// Wrote a frame: the output is to be drained.
    Wrote,
    /// The next frame is due then.
    Next(Instant),
    /// Nothing is being sent.
    Idle,
}

/// Keyframe requests at most this often.
const KEYFRAME_REQUESTS: Duration = Duration::from_secs(1);

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
    /// the chat channel it adds, if it is the first.
    pending: Option<(SdpPendingOffer, Option<ChannelId>)>,
    /// Whether an offer and its answer were ever applied: later offers restart ICE.
    negotiated: bool,
    /// Where the call's connection stands.
    link: Link,
    /// Whether the call was ever connected (DTLS up).
    connected_once: bool,
    /// The chat channel, once a negotiation that has it is complete.
    chat: Option<ChannelId>,
    open: bool,
    media: Media,
    /// The video m-line: ours, when we offered, or the other side's.
    video: Option<Mid>,
    /// The audio m-line, likewise.
    audio: Option<Mid>,
    /// Whether a recording has its first keyframe.
    keyframe_seen: bool,
    last_keyframe_request: Option<Instant>,
    playback: Option<Playback>,
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
    /// A call between `me` and `other`, reachable at `candidates` (the UDP socket's
    /// address, a relayed address on a TURN server, or both).
    pub fn new(
        me: PeerId,
        other: PeerId,
        candidates: &[Candidate],
        media: Media,
    ) -> Result<Self, RtcError> {
        let mut rtc = Rtc::builder().build(Instant::now());
        for candidate in candidates {
            rtc.add_local_candidate(candidate.clone());
        }
        Ok(Self {
            rtc,
            negotiation: Negotiation::new(polite(me, other)),
            pending: None,
            negotiated: false,
            link: Link::Waiting(Instant::now()),
            connected_once: false,
            chat: None,
            open: false,
            media,
            video: None,
            audio: None,
            keyframe_seen: false,
            last_keyframe_request: None,
            playback: None,
        })
    }

    /// Makes the call's first offer (receiving the other's audio and video, sending ours
    /// if there is a clip, and the chat channel), if one may be made now.
    pub fn offer(&mut self) -> Option<Signal> {
        if self.negotiated || !self.negotiation.may_offer(self.pending.is_none()) {
            return None;
        }
        self.negotiation.offering();
        let mut api = self.rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let video = if self.media.send.is_some() {
            Direction::SendRecv
        } else {
            Direction::RecvOnly
        };
        let video = api.add_media(MediaKind::Video, video, None, None, None);
        let chat = api.add_channel_with_config(chat_config());
        let applied = api.apply();
        self.negotiation.offered();
        let (offer, pending) = applied?;
        self.video.get_or_insert(video);
        self.audio.get_or_insert(audio);
        self.pending = Some((pending, Some(chat)));
        Some(Signal::Description {
            sdp_type: SdpType::Offer,
            sdp: offer.to_sdp_string(),
        })
    }

    /// Repairs a call that lost its connection, or has not connected in good time: stops
    /// waiting for the other side's first offer and makes one, or restarts ICE. Returns the
    /// offer to send, if one is made now, and when to look again.
    fn repair(&mut self, now: Instant) -> (Option<Signal>, Option<Instant>) {
        let patience = Duration::from_millis(u64::from(CALL_PATIENCE_MS));
        match self.link {
            Link::Up => return (None, None),
            Link::Waiting(since) if now < since + patience => {
                return (None, Some(since + patience))
            }
            Link::Waiting(_) | Link::Lost => {}
        }
        self.link = Link::Waiting(now);
        self.negotiation.stop_waiting();
        let offer = if self.negotiated {
            self.restart_ice()
        } else {
            self.offer()
        };
        (offer, Some(now + patience))
    }

    /// An offer with fresh ICE credentials, if one may be made now.
    fn restart_ice(&mut self) -> Option<Signal> {
        if !self.negotiation.may_offer(self.pending.is_none()) {
            return None;
        }
        self.negotiation.offering();
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let applied = api.apply();
        self.negotiation.offered();
        let (offer, pending) = applied?;
        self.pending = Some((pending, None));
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
                self.negotiated = true;
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
                self.negotiated = true;
                if let Some(chat) = chat {
                    self.chat.get_or_insert(chat);
                }
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

    /// Drains the session's output until it waits for input: what to send and report, and
    /// when it wants [`Input::Timeout`] next.
    fn drain(&mut self, drained: &mut Drained) -> Result<Instant, Failure> {
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

    /// Runs the call until it waits for input: its own repair and the clip's frames that
    /// are due by `now` included. Each change to the `Rtc` (an offer, a frame written) is
    /// followed by draining its output before the next, as str0m asks. Returns when to
    /// come back, and the repair's offer to send, if it made one.
    pub fn run(
        &mut self,
        now: Instant,
        drained: &mut Drained,
    ) -> Result<(Instant, Option<Signal>), Failure> {
        let mut timeout = self.drain(drained)?;
        let (offer, mut wake) = self.repair(now);
        if offer.is_some() {
            timeout = self.drain(drained)?;
        }
        loop {
            match self.play(now)? {
                Play::Wrote => timeout = self.drain(drained)?,
                Play::Next(at) => {
                    wake = Some(wake.map_or(at, |wake| wake.min(at)));
                    break;
                }
                Play::Idle => break,
            }
        }
        Ok((wake.map_or(timeout, |wake| wake.min(timeout)), offer))
    }

    /// Writes the clip's next frame if it is due by `now`.
    fn play(&mut self, now: Instant) -> Result<Play, Failure> {
        let (Some(clip), Some(playback), Some(mid)) =
            (self.media.send.clone(), self.playback.as_mut(), self.video)
        else {
            return Ok(Play::Idle);
        };
        let (offset, frame) = &clip.frames[playback.next];
        let ticks = playback.passes * clip.length + offset;
        let due = playback.started + Duration::from_micros(ticks * 100 / 9);
        if due > now {
            return Ok(Play::Next(due));
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(Play::Idle);
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
        else {
            tracing::warn!("the other side takes no VP8: nothing is sent");
            self.playback = None;
            return Ok(Play::Idle);
        };
        writer.write(pt, due, MediaTime::from_90khz(ticks), frame.clone())?;
        playback.next += 1;
        if playback.next == clip.frames.len() {
            playback.next = 0;
            playback.passes += 1;
        }
        Ok(Play::Wrote)
    }

    fn on_media(&mut self, data: MediaData) -> Option<Happening> {
        if !self.media.record {
            return None;
        }
        let spec = data.params.spec();
        if Some(data.mid) == self.audio && spec.codec == Codec::Opus {
            return Some(Happening::Audio {
                channels: spec.channels.unwrap_or(2),
                data: data.data,
            });
        }
        if Some(data.mid) != self.video || spec.codec != Codec::Vp8 {
            return None;
        }
        if !data.contiguous || (!self.keyframe_seen && !data.is_keyframe()) {
            // Lost packets, or no keyframe yet: ask for one, and record from it on.
            self.keyframe_seen &= data.contiguous;
            self.request_keyframe(data.mid);
            if !data.is_keyframe() {
                return None;
            }
        }
        self.keyframe_seen = true;
        Some(Happening::Video {
            time: data
                .time
                .rebase(str0m::media::Frequency::NINETY_KHZ)
                .numer(),
            data: data.data,
        })
    }

    fn request_keyframe(&mut self, mid: Mid) {
        let now = Instant::now();
        if self
            .last_keyframe_request
            .is_some_and(|at| now < at + KEYFRAME_REQUESTS)
        {
            return;
        }
        if let Some(mut writer) = self.rtc.writer(mid) {
            if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                self.last_keyframe_request = Some(now);
                let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Option<Happening> {
        match event {
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => {
                // Back after a loss: DTLS goes on as it was, and no other event says so.
                let back = self.connected_once && self.link != Link::Up;
                self.link = Link::Up;
                back.then_some(Happening::Connected)
            }
            Event::Connected => {
                self.link = Link::Up;
                self.connected_once = true;
                if self.media.send.is_some() {
                    self.playback = Some(Playback {
                        started: Instant::now(),
                        next: 0,
                        passes: 0,
                    });
                }
                Some(Happening::Connected)
            }
            Event::MediaAdded(added) => {
                match added.kind {
                    MediaKind::Video => self.video.get_or_insert(added.mid),
                    MediaKind::Audio => self.audio.get_or_insert(added.mid),
                };
                None
            }
            Event::MediaData(data) => self.on_media(data),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.link = Link::Lost;
                Some(Happening::Disconnected)
            }
            Event::ChannelOpen(id, _) if Some(id) == self.chat && !self.open => {
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
