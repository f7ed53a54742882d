//! The WebRTC session with one other peer: an `RTCPeerConnection` carrying camera,
//! microphone and a chat data channel, negotiated through the relay with perfect
//! negotiation. It knows neither the page nor the relay: browser callbacks hand
//! [`CallEvent`]s to the callback the call was started with (the page's event loop), which
//! calls back into [`Call`] one event at a time.

use std::rc::Rc;

use signalroom_protocol::{IceServer, SdpType, Signal};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, MediaStreamTrack, MessageEvent, RtcConfiguration, RtcDataChannel,
    RtcDataChannelInit, RtcDataChannelState, RtcDataChannelType, RtcIceCandidateInit,
    RtcPeerConnection, RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcRtpTransceiver,
    RtcRtpTransceiverInit, RtcSdpType, RtcSessionDescriptionInit, RtcSignalingState, RtcTrackEvent,
};

use signalroom_protocol::call::{Negotiation, Step, CHAT_ID, CHAT_LABEL};

#[wasm_bindgen]
extern "C" {
    /// An `RTCPeerConnection`, for the one method web-sys has no binding for yet.
    type IceRestart;
    #[wasm_bindgen(method, js_name = restartIce)]
    fn restart_ice(this: &IceRestart);
}

/// What the browser reported about a call.
#[derive(Debug)]
pub enum CallEvent {
    /// The connection needs (re)negotiating: make an offer.
    NegotiationNeeded,
    /// A local ICE candidate to send to the peer.
    Candidate(Signal),
    /// The connection's state changed.
    State(RtcPeerConnectionState),
    /// A remote track arrived, in this stream.
    Track(MediaStream),
    /// The chat data channel opened.
    ChannelOpen,
    /// A chat line arrived over the data channel.
    ChannelMessage(String),
    /// A [`Signal`] arrived over the data channel (a binary message).
    ChannelSignal(Signal),
    /// How the call is doing, as [`Call::measure`] asked.
    Quality(Quality),
}

/// What a call sends: a track of each kind, or none (its transceiver is there all the same,
/// sending nothing, so that a track can take its place later without renegotiating), both
/// in `stream` for the other side.
pub struct Sending<'a> {
    /// The stream the tracks belong to.
    pub stream: &'a MediaStream,
    /// The microphone.
    pub audio: Option<MediaStreamTrack>,
    /// The camera or the shared screen.
    pub video: Option<MediaStreamTrack>,
}

/// How a call is doing, from its `getStats()`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Quality {
    /// The round-trip time of the candidate pair in use, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Packets received, over every inbound stream, since the call began.
    pub received: f64,
    /// Packets lost, likewise.
    pub lost: f64,
    /// The video received: width, height and frames per second.
    pub video: Option<(f64, f64, f64)>,
}

/// A call with one peer.
pub struct Call {
    pc: RtcPeerConnection,
    channel: RtcDataChannel,
    negotiation: Negotiation,
    post: Rc<dyn Fn(CallEvent)>,
    // Kept alive as long as the connection may call them.
    _callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Call {
    /// Sets up a connection, sending `outgoing`; what the browser reports about it goes to
    /// `post`.
    pub fn start(
        polite: bool,
        ice_servers: &[IceServer],
        outgoing: &Sending,
        post: impl Fn(CallEvent) + 'static,
    ) -> Result<Self, JsValue> {
        let config = RtcConfiguration::new();
        let servers = crate::codec::to_js(ice_servers)?;
        config.set_ice_servers(&servers);
        let pc = RtcPeerConnection::new_with_configuration(&config)?;

        let post: Rc<dyn Fn(CallEvent)> = Rc::new(post);
        let mut callbacks = Vec::new();
        let mut on = |post_event: Box<dyn Fn(JsValue) -> Option<CallEvent>>| {
            let post = post.clone();
            let callback = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                if let Some(event) = post_event(event) {
                    post(event);
                }
            });
            let function = callback
                .as_ref()
                .unchecked_ref::<js_sys::Function>()
                .clone();
            callbacks.push(callback);
            function
        };

        pc.set_onnegotiationneeded(Some(&on(Box::new(|_| Some(CallEvent::NegotiationNeeded)))));
        pc.set_onicecandidate(Some(&on(Box::new(|event| {
            let candidate = event
                .dyn_into::<RtcPeerConnectionIceEvent>()
                .ok()?
                .candidate()?;
            Some(CallEvent::Candidate(Signal::Candidate {
                candidate: candidate.candidate(),
                sdp_mid: candidate.sdp_mid(),
                sdp_m_line_index: candidate.sdp_m_line_index(),
            }))
        }))));
        {
            let pc2 = pc.clone();
            pc.set_onconnectionstatechange(Some(&on(Box::new(move |_| {
                Some(CallEvent::State(pc2.connection_state()))
            }))));
        }
        pc.set_ontrack(Some(&on(Box::new(|event| {
            let event = event.dyn_into::<RtcTrackEvent>().ok()?;
            let stream = match event.streams().get(0).dyn_into::<MediaStream>() {
                Ok(stream) => stream,
                Err(_) => {
                    let stream = MediaStream::new().ok()?;
                    stream.add_track(&event.track());
                    stream
                }
            };
            Some(CallEvent::Track(stream))
        }))));

        // A track by addTrack, whose transceiver the other side's offer can take up; for a
        // track the page lacks, a transceiver sending and receiving (the default) nothing.
        let init = RtcRtpTransceiverInit::new();
        init.set_streams(&js_sys::Array::of1(outgoing.stream));
        for (kind, track) in [("audio", &outgoing.audio), ("video", &outgoing.video)] {
            match track {
                Some(track) => drop(pc.add_track_0(track, outgoing.stream)),
                None => drop(pc.add_transceiver_with_str_and_init(kind, &init)),
            }
        }

        // Both sides create the same pre-negotiated channel, so neither waits for the other's.
        let init = RtcDataChannelInit::new();
        init.set_negotiated(true);
        init.set_id(CHAT_ID);
        let channel = pc.create_data_channel_with_data_channel_dict(CHAT_LABEL, &init);
        channel.set_onopen(Some(&on(Box::new(|_| Some(CallEvent::ChannelOpen)))));
        channel.set_binary_type(RtcDataChannelType::Arraybuffer);
        channel.set_onmessage(Some(&on(Box::new(|event| {
            let data = event.dyn_into::<MessageEvent>().ok()?.data();
            if let Some(text) = data.as_string() {
                return Some(CallEvent::ChannelMessage(text));
            }
            let bytes = js_sys::Uint8Array::new(&data).to_vec();
            let signal = crate::codec::decode_signal(std::str::from_utf8(&bytes).ok()?)?;
            Some(CallEvent::ChannelSignal(signal))
        }))));

        Ok(Self {
            pc,
            channel,
            negotiation: Negotiation::new(polite),
            post,
            _callbacks: callbacks,
        })
    }

    /// The connection's state.
    pub fn state(&self) -> RtcPeerConnectionState {
        self.pc.connection_state()
    }

    /// Makes an offer and returns it for the relay, unless one may not be made now.
    pub async fn offer(&mut self) -> Result<Option<Signal>, JsValue> {
        let stable = self.pc.signaling_state() == RtcSignalingState::Stable;
        if !self.negotiation.may_offer(stable) {
            return Ok(None);
        }
        self.negotiation.offering();
        let result = self.make_offer().await;
        self.negotiation.offered();
        result.map(Some)
    }

    async fn make_offer(&self) -> Result<Signal, JsValue> {
        let offer = JsFuture::from(self.pc.create_offer()).await?;
        let offer: RtcSessionDescriptionInit = offer.unchecked_into();
        JsFuture::from(self.pc.set_local_description(&offer)).await?;
        self.local_description()
    }

    fn local_description(&self) -> Result<Signal, JsValue> {
        let description = self
            .pc
            .local_description()
            .ok_or_else(|| JsValue::from_str("no local description"))?;
        let sdp_type = match description.type_() {
            RtcSdpType::Offer => SdpType::Offer,
            RtcSdpType::Answer => SdpType::Answer,
            RtcSdpType::Pranswer => SdpType::Pranswer,
            _ => SdpType::Rollback,
        };
        Ok(Signal::Description {
            sdp_type,
            sdp: description.sdp(),
        })
    }

    /// Applies the peer's description, unless negotiation says to drop it; returns the step
    /// taken and our answer if it was an offer.
    pub async fn on_description(
        &mut self,
        sdp_type: SdpType,
        sdp: &str,
    ) -> Result<(Step, Option<Signal>), JsValue> {
        let stable = self.pc.signaling_state() == RtcSignalingState::Stable;
        let step = self.negotiation.on_description(sdp_type, stable);
        let Step::Apply { rollback, answer } = step else {
            return Ok((step, None));
        };
        if rollback {
            let init = RtcSessionDescriptionInit::new(RtcSdpType::Rollback);
            JsFuture::from(self.pc.set_local_description(&init)).await?;
        }
        let init = RtcSessionDescriptionInit::new(rtc_sdp_type(sdp_type));
        init.set_sdp(sdp);
        JsFuture::from(self.pc.set_remote_description(&init)).await?;
        if !answer {
            return Ok((step, None));
        }
        let answer = JsFuture::from(self.pc.create_answer()).await?;
        let answer: RtcSessionDescriptionInit = answer.unchecked_into();
        JsFuture::from(self.pc.set_local_description(&answer)).await?;
        Ok((step, Some(self.local_description()?)))
    }

    /// Adds the peer's ICE candidate; false if it belonged to an offer we ignored.
    pub async fn on_candidate(
        &mut self,
        candidate: &str,
        sdp_mid: Option<&str>,
        sdp_m_line_index: Option<u16>,
    ) -> Result<bool, JsValue> {
        let init = RtcIceCandidateInit::new(candidate);
        init.set_sdp_mid(sdp_mid);
        init.set_sdp_m_line_index(sdp_m_line_index);
        let added = JsFuture::from(
            self.pc
                .add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)),
        )
        .await;
        match added {
            Err(error) if self.negotiation.candidate_error_matters() => Err(error),
            Err(_) => Ok(false),
            Ok(_) => Ok(true),
        }
    }

    /// Gathers fresh ICE candidates and renegotiates, the remedy for a `failed` connection
    /// (a network change, a candidate pair gone).
    pub fn restart_ice(&self) {
        self.pc.unchecked_ref::<IceRestart>().restart_ice();
    }

    /// Unsticks a call that has not connected in good time: stops waiting for the other
    /// side's first offer and restarts ICE, which renegotiates with fresh candidates.
    pub fn nudge(&mut self) {
        self.negotiation.stop_waiting();
        self.restart_ice();
    }

    /// Sends a chat line over the data channel; false if it is not open.
    pub fn send_chat(&self, text: &str) -> bool {
        self.channel.ready_state() == RtcDataChannelState::Open
            && self.channel.send_with_str(text).is_ok()
    }

    /// Sends `signal` over the data channel, as a binary message; false if it is not open.
    pub fn send_signal(&self, signal: &Signal) -> bool {
        self.channel.ready_state() == RtcDataChannelState::Open
            && self
                .channel
                .send_with_u8_array(crate::codec::encode(signal).as_bytes())
                .is_ok()
    }

    /// Sends `track` (or nothing) in place of what the call sends of `kind` (`"audio"` or
    /// `"video"`), without renegotiating.
    pub fn replace(&self, kind: &str, track: Option<&MediaStreamTrack>) {
        for transceiver in self.pc.get_transceivers().iter() {
            let transceiver: RtcRtpTransceiver = transceiver.unchecked_into();
            if transceiver.receiver().track().kind() == kind {
                let _ = transceiver.sender().replace_track(track);
            }
        }
    }

    /// Asks how the call is doing; the answer comes as [`CallEvent::Quality`].
    pub fn measure(&self) {
        let (pc, post) = (self.pc.clone(), self.post.clone());
        wasm_bindgen_futures::spawn_local(async move {
            if let Some(quality) = quality(&pc).await {
                post(CallEvent::Quality(quality));
            }
        });
    }

    /// Ends the call: stops delivery to the page and closes the connection.
    pub fn close(self) {
        self.pc.set_onnegotiationneeded(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_ontrack(None);
        self.channel.set_onopen(None);
        self.channel.set_onmessage(None);
        self.channel.close();
        self.pc.close();
    }
}

/// The figures of `pc`'s `getStats()` that say how its call is doing.
async fn quality(pc: &RtcPeerConnection) -> Option<Quality> {
    let report = JsFuture::from(pc.get_stats()).await.ok()?;
    let mut quality = Quality::default();
    // The transport names the candidate pair in use (more than one may be nominated).
    let (mut selected, mut pairs) = (String::new(), Vec::new());
    report
        .unchecked_into::<js_sys::Map>()
        .for_each(&mut |stat, _| {
            let get = |name: &str| js_sys::Reflect::get(&stat, &name.into()).ok();
            let number = |name| get(name).and_then(|v| v.as_f64());
            let text = |name| get(name).and_then(|v| v.as_string()).unwrap_or_default();
            match text("type").as_str() {
                "transport" => selected = text("selectedCandidatePairId"),
                "candidate-pair" => pairs.push((text("id"), number("currentRoundTripTime"))),
                "inbound-rtp" => {
                    quality.received += number("packetsReceived").unwrap_or_default();
                    quality.lost += number("packetsLost").unwrap_or_default();
                    if text("kind") == "video" {
                        if let (Some(w), Some(h)) = (number("frameWidth"), number("frameHeight")) {
                            let fps = number("framesPerSecond").unwrap_or_default();
                            quality.video = Some((w, h, fps));
                        }
                    }
                }
                _ => {}
            }
        });
    quality.rtt_ms = pairs
        .into_iter()
        .find(|(id, _)| *id == selected)
        .and_then(|(_, rtt)| rtt)
        .map(|seconds| seconds * 1000.0);
    Some(quality)
}

fn rtc_sdp_type(sdp_type: SdpType) -> RtcSdpType {
    match sdp_type {
        SdpType::Offer => RtcSdpType::Offer,
        SdpType::Pranswer => RtcSdpType::Pranswer,
        SdpType::Answer => RtcSdpType::Answer,
        SdpType::Rollback => RtcSdpType::Rollback,
    }
}

/// A connection state as `RTCPeerConnectionState` spells it.
pub fn state_name(state: RtcPeerConnectionState) -> &'static str {
    match state {
        RtcPeerConnectionState::New => "new",
        RtcPeerConnectionState::Connecting => "connecting",
        RtcPeerConnectionState::Connected => "connected",
        RtcPeerConnectionState::Disconnected => "disconnected",
        RtcPeerConnectionState::Failed => "failed",
        RtcPeerConnectionState::Closed => "closed",
        _ => "unknown",
    }
}
