//! The page's event loop. Relay frames, button clicks and WebRTC callbacks all
//! become [`Input`]s on one channel, handled one at a time, so no state is shared between
//! callbacks.

use futures::channel::mpsc::{unbounded, UnboundedSender};
use futures::StreamExt;
use gloo_timers::future::TimeoutFuture;
use signalroom_protocol::{IceServer, PeerId, Request, RoomName, Signal};
use web_sys::MediaStream;

use crate::call::{Call, CallEvent};
use crate::codec;
use crate::config::PageConfig;
use crate::negotiation::Step;
use crate::relay::RelayLink;
use crate::room::{Action, Phase, Room};
use crate::ui::{Badge, Ui};

/// A call not connected this long after it started (or was last nudged) restarts ICE.
const CALL_PATIENCE_MS: u32 = 8_000;

/// Reconnection delays grow from this...
const BACKOFF_MIN_MS: u32 = 500;
/// ...to this.
const BACKOFF_MAX_MS: u32 = 10_000;

/// Everything the event loop reacts to.
#[derive(Debug)]
pub enum Input {
    /// A text frame from relay connection `generation`.
    Frame {
        /// Which connection it came on.
        generation: u32,
        /// The frame.
        text: String,
    },
    /// Relay connection `generation` closed or failed.
    RelayClosed {
        /// Which connection.
        generation: u32,
        /// Why, as far as the browser says.
        reason: String,
        /// Whether the relay sent anything first; a refused upgrade (HTTP 401 for a bad
        /// room token, 403, 503) looks to the page like a relay that never answered.
        heard: bool,
    },
    /// Time to try the relay again.
    Reconnect,
    /// The user sent a chat line.
    Chat(String),
    /// The user hung up.
    HangUp,
    /// The user wants back into the room.
    Rejoin,
    /// The browser reported something about the call with `peer`.
    Call {
        /// The call's peer.
        peer: PeerId,
        /// What happened.
        event: CallEvent,
    },
}

struct App {
    ui: Ui,
    config: PageConfig,
    room: Room,
    inputs: UnboundedSender<Input>,
    relay: Option<RelayLink>,
    generation: u32,
    backoff_ms: u32,
    /// False after hang-up: the page stays out of the room until asked back in.
    wants_room: bool,
    /// Camera and microphone, when the browser gave them.
    local: Option<MediaStream>,
    ice_servers: Vec<IceServer>,
    call: Option<Call>,
}

/// Runs the page.
pub async fn run() {
    let Some(ui) = Ui::new() else { return };
    // Only the signalroom page has a status badge; anywhere else (tests) stay idle.
    if ui.element::<web_sys::HtmlElement>("status").is_none() {
        return;
    }
    let Some(window) = web_sys::window() else {
        return;
    };
    let config = PageConfig::from_location(&window.location());
    let Some(room) = ask_room(&window, config.room.as_deref(), &ui) else {
        ui.status(Badge::Error, "no room");
        ui.log("no room chosen; reload the page or open it with ?room=NAME");
        return;
    };
    let link = share_link(&window, &room, &config);
    if let Some(link) = &link {
        // Reloading, or copying the address bar, keeps the room.
        if let Ok(history) = window.history() {
            let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(link));
        }
    }
    ui.show_room(room.as_str(), link.as_deref().unwrap_or("#"));

    let (inputs, mut queue) = unbounded();
    {
        let inputs = inputs.clone();
        ui.on_chat(move |text| {
            let _ = inputs.unbounded_send(Input::Chat(text));
        });
    }
    for (id, input) in [
        ("hangup", (|| Input::HangUp) as fn() -> Input),
        ("rejoin", || Input::Rejoin),
    ] {
        let inputs = inputs.clone();
        ui.on_click(id, move || {
            let _ = inputs.unbounded_send(input());
        });
    }

    let mut app = App {
        ui,
        config,
        room: Room::new(room),
        inputs,
        relay: None,
        generation: 0,
        backoff_ms: BACKOFF_MIN_MS,
        wants_room: true,
        local: None,
        ice_servers: Vec::new(),
        call: None,
    };
    app.open_media().await;
    app.connect().await;
    while let Some(input) = queue.next().await {
        app.handle(input).await;
    }
}

/// The room from `?room=`, or else from a prompt as in the seed tutorial, asked again until
/// the name is valid or the user cancels.
fn ask_room(window: &web_sys::Window, from_address: Option<&str>, ui: &Ui) -> Option<RoomName> {
    if let Some(name) = from_address {
        match RoomName::new(name) {
            Ok(room) => return Some(room),
            Err(error) => ui.log(&format!("?room= is not a usable name: {error}")),
        }
    }
    let mut question = String::from("Enter room name:");
    loop {
        let answer = window.prompt_with_message(&question).ok()??;
        match RoomName::new(answer.trim()) {
            Ok(room) => return Some(room),
            Err(error) => question = format!("{error}. Enter room name:"),
        }
    }
}

/// This page's address with `?room=` (and `?relay=` when one was given).
fn share_link(window: &web_sys::Window, room: &RoomName, config: &PageConfig) -> Option<String> {
    let href = window.location().href().ok()?;
    let url = web_sys::Url::new(&href).ok()?;
    let params = url.search_params();
    params.set("room", room.as_str());
    if params.get("relay").is_some() {
        params.set("relay", &config.relay);
    }
    url.set_hash("");
    Some(url.href())
}

impl App {
    async fn connect(&mut self) {
        self.generation += 1;
        self.ui
            .status(Badge::Connecting, "connecting to the relay…");
        self.ui.log(&format!("connecting to {}", self.config.relay));
        // The URL opened holds the token; the one logged does not.
        match RelayLink::open(
            &self.config.relay_url(),
            self.generation,
            self.inputs.clone(),
        ) {
            Ok(link) => {
                self.relay = Some(link);
                if self.wants_room {
                    self.send(&Request::<Signal>::CreateOrJoin {
                        room: self.room.name().clone(),
                    })
                    .await;
                }
            }
            Err(error) => self.relay_lost(&error, false),
        }
    }

    /// Turns the camera on, or explains why there is none; the call then only receives.
    async fn open_media(&mut self) {
        self.ui
            .status(Badge::Connecting, "asking for camera and microphone…");
        match crate::media::local_stream().await {
            Ok(stream) => {
                self.ui.local_label("you");
                self.ui.show_local(Some(&stream));
                self.ui.media_note(None);
                self.local = Some(stream);
            }
            Err(reason) => {
                self.ui.local_label("you (no camera)");
                self.ui.log(&reason);
                self.ui.media_note(Some(&format!(
                    "{reason}. You can still see and chat with the other side."
                )));
            }
        }
    }

    fn close_media(&mut self) {
        if let Some(stream) = self.local.take() {
            crate::media::stop(&stream);
        }
        self.ui.show_local(None);
    }

    async fn send_to(&mut self, peer: PeerId, signal: Signal) {
        self.send(&Request::Message {
            data: signal,
            to: Some(peer),
        })
        .await;
    }

    /// The call with `peer`, if that is who the page is calling.
    fn call_with(&mut self, peer: PeerId) -> Option<&mut Call> {
        self.call.as_mut().filter(|call| call.peer() == peer)
    }

    fn end_call(&mut self, note: &str) {
        if let Some(call) = self.call.take() {
            self.ui
                .log(&format!("call with peer {} ended", call.peer()));
            call.close();
        }
        self.ui.show_remote(None);
        self.ui.call_state("idle");
        self.ui.remote_label(note);
    }

    async fn on_call_event(&mut self, peer: PeerId, event: CallEvent) {
        let Some(call) = self.call_with(peer) else {
            return;
        };
        match event {
            CallEvent::NegotiationNeeded => match call.offer().await {
                Ok(Some(offer)) => {
                    self.ui.log(&format!("offer to peer {peer}"));
                    self.send_to(peer, offer).await;
                }
                // The browser asks again once the exchange under way is done.
                Ok(None) => self.ui.log(&format!(
                    "negotiation needed; later (an exchange is under way, or peer {peer} offers first)"
                )),
                Err(error) => self.ui.log(&format!("could not make an offer: {error:?}")),
            },
            CallEvent::Candidate(candidate) => {
                if let Signal::Candidate { candidate, .. } = &candidate {
                    self.ui
                        .detail(&format!("candidate to peer {peer}: {candidate}"));
                }
                self.send_to(peer, candidate).await;
            }
            CallEvent::State(state) => {
                if state == "failed" {
                    call.restart_ice();
                }
                self.ui.log(&format!("call with peer {peer}: {state}"));
                self.ui.call_state(&state);
                let label = match state.as_str() {
                    "connected" => format!("peer {peer}"),
                    "failed" => format!("could not reach peer {peer}"),
                    _ => format!("connecting to peer {peer}…"),
                };
                self.ui.remote_label(&label);
                self.show_phase();
            }
            CallEvent::Overdue => {
                if call.state() != "connected" {
                    call.nudge();
                    self.ui.log(&format!(
                        "call with peer {peer} not connected after {} s; restarting ICE",
                        CALL_PATIENCE_MS / 1000
                    ));
                    self.call_timer(peer);
                }
            }
            CallEvent::ChannelOpen => self.ui.log(&format!("chat channel with peer {peer} open")),
            CallEvent::ChannelMessage(text) => {
                self.ui
                    .chat(&format!("peer {peer}"), &text, false, "datachannel")
            }
        }
    }

    async fn on_signal(&mut self, from: PeerId, signal: Signal) {
        let Some(call) = self.call_with(from) else {
            self.ui.log(&format!(
                "signal from peer {from}, who is not in the call; ignored"
            ));
            return;
        };
        let result = match signal {
            Signal::Description { sdp_type, sdp } => {
                match call.on_description(sdp_type, &sdp).await {
                    Ok((step, answer)) => {
                        let what = match step {
                            Step::Ignore => "ignored (a colliding offer, or a stale answer)",
                            Step::Apply { rollback: true, .. } => "yielded: our offer rolled back",
                            Step::Apply { .. } => "applied",
                        };
                        self.ui
                            .log(&format!("{sdp_type:?} from peer {from}: {what}"));
                        if let Some(answer) = answer {
                            self.ui.log(&format!("answer to peer {from}"));
                            self.send_to(from, answer).await;
                        }
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
            Signal::Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            } => call
                .on_candidate(&candidate, sdp_mid.as_deref(), sdp_m_line_index)
                .await
                .map(|added| {
                    let what = if added { "added" } else { "dropped" };
                    self.ui
                        .detail(&format!("candidate from peer {from} {what}: {candidate}"));
                }),
            Signal::Bye => {
                self.end_call("the other side hung up");
                Ok(())
            }
            Signal::Text { .. } => Ok(()),
        };
        if let Err(error) = result {
            self.ui
                .log(&format!("signal from peer {from} failed: {error:?}"));
        }
    }

    async fn send(&mut self, request: &Request<Signal>) {
        let Some(relay) = &mut self.relay else {
            self.ui.log("not connected to the relay; nothing sent");
            return;
        };
        if let Err(error) = relay.send(request).await {
            self.ui
                .log(&format!("could not send to the relay: {error}"));
        }
    }

    /// Checks on the call with `peer` once it has had time to connect.
    fn call_timer(&self, peer: PeerId) {
        let inputs = self.inputs.clone();
        wasm_bindgen_futures::spawn_local(async move {
            TimeoutFuture::new(CALL_PATIENCE_MS).await;
            let event = CallEvent::Overdue;
            let _ = inputs.unbounded_send(Input::Call { peer, event });
        });
    }

    /// The relay connection is gone; `heard` says whether the relay answered on it at all.
    fn relay_lost(&mut self, reason: &str, heard: bool) {
        // Whatever the dead connection still delivers is void.
        self.generation += 1;
        self.relay = None;
        self.room.disconnected();
        self.ui.chat_enabled(false);
        if !self.wants_room {
            // Out of the room by choice: the relay closes idle lobby connections, and the
            // page reconnects only when asked back in.
            self.ui.log(&format!("relay connection closed ({reason})"));
            return;
        }
        let delay = self.backoff_ms;
        self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MAX_MS);
        if heard || self.config.token.is_none() {
            self.ui
                .status(Badge::Connecting, "relay unreachable; retrying…");
        } else {
            // The browser does not say why an upgrade failed: a token the relay refuses
            // (HTTP 401) looks like a relay that is down.
            self.ui.status(
                Badge::Error,
                "relay unreachable, or it refused this link's token (expired?); retrying…",
            );
        }
        self.ui.log(&format!(
            "relay connection lost ({reason}); retrying in {delay} ms"
        ));
        let inputs = self.inputs.clone();
        wasm_bindgen_futures::spawn_local(async move {
            TimeoutFuture::new(delay).await;
            let _ = inputs.unbounded_send(Input::Reconnect);
        });
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Frame { generation, text } if generation == self.generation => {
                match codec::decode(&text) {
                    Ok(incoming) => {
                        self.backoff_ms = BACKOFF_MIN_MS;
                        let actions = self.room.apply(incoming);
                        for action in actions {
                            self.act(action).await;
                        }
                        if *self.room.phase() == Phase::Forbidden {
                            // Asking again cannot help: stay out until the user asks.
                            self.wants_room = false;
                        }
                        self.show_phase();
                    }
                    Err(error) => self
                        .ui
                        .log(&format!("unreadable frame from the relay: {error}")),
                }
            }
            Input::RelayClosed {
                generation,
                reason,
                heard,
            } if generation == self.generation => {
                self.relay_lost(&reason, heard);
            }
            Input::Frame { .. } | Input::RelayClosed { .. } => {}
            Input::Reconnect => self.connect().await,
            Input::Call { peer, event } => self.on_call_event(peer, event).await,
            Input::Chat(text) => {
                let me = self
                    .room
                    .me()
                    .map(|me| format!("you ({me})"))
                    .unwrap_or("you".into());
                // Peer to peer when the call's channel is open; through the relay otherwise.
                if self.call.as_ref().is_some_and(|call| call.send_chat(&text)) {
                    self.ui.chat(&me, &text, true, "datachannel");
                } else {
                    self.ui.chat(&me, &text, true, "relay");
                    self.send(&Request::Message {
                        data: Signal::Text { text },
                        to: None,
                    })
                    .await;
                }
            }
            Input::HangUp => {
                self.wants_room = false;
                self.send(&Request::<Signal>::Leave).await;
                for action in self.room.left() {
                    self.act(action).await;
                }
                self.end_call("you hung up");
                self.close_media();
                self.ui.log("you left the room");
                self.show_phase();
            }
            Input::Rejoin => {
                self.wants_room = true;
                self.ui.remote_label("waiting for someone to join");
                self.open_media().await;
                if self.relay.is_some() {
                    self.send(&Request::<Signal>::CreateOrJoin {
                        room: self.room.name().clone(),
                    })
                    .await;
                } else {
                    self.connect().await;
                }
            }
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Log(line) => self.ui.log(&line),
            Action::Chat { from, text } => {
                self.ui.chat(&format!("peer {from}"), &text, false, "relay")
            }
            Action::Call { peer, polite } => {
                // One call at a time: a newcomer replaces a peer that is gone for good
                // (after a relay restart, both sides come back with new ids).
                self.end_call("waiting for someone to join");
                let started = Call::start(
                    peer,
                    polite,
                    &self.ice_servers,
                    self.local.as_ref(),
                    &self.ui,
                    &self.inputs,
                );
                match started {
                    Ok(call) => {
                        self.ui.log(&format!(
                            "calling peer {peer} ({})",
                            if polite { "polite" } else { "impolite" }
                        ));
                        self.ui.call_state("new");
                        self.ui.remote_label(&format!("connecting to peer {peer}…"));
                        self.call = Some(call);
                        self.call_timer(peer);
                    }
                    Err(error) => self.ui.log(&format!("could not start a call: {error:?}")),
                }
            }
            Action::HangUp(peer) => {
                if self.call_with(peer).is_some() {
                    self.end_call(&format!("peer {peer} left; waiting for someone to join"));
                }
            }
            Action::Signal { from, signal } => self.on_signal(from, signal).await,
            Action::IceServers(servers) => self.ice_servers = servers,
        }
    }

    fn show_phase(&self) {
        let ui = &self.ui;
        let (badge, text) = match self.room.phase() {
            Phase::Connecting => (Badge::Connecting, "connecting to the relay…".to_owned()),
            Phase::Waiting => (Badge::Waiting, "waiting for someone to join".to_owned()),
            Phase::Together(peers) => match self.call.as_ref().map(Call::state).as_deref() {
                Some("connected") => (Badge::Connected, format!("in a call with {}", names(peers))),
                Some("failed") => (Badge::Error, format!("call with {} failed", names(peers))),
                _ => (
                    Badge::Connecting,
                    format!("connecting to {}…", names(peers)),
                ),
            },
            Phase::Full => (Badge::Full, "room is full".to_owned()),
            Phase::Out => (Badge::Left, "you left the room".to_owned()),
            Phase::Forbidden => (
                Badge::Error,
                "this link's token does not admit this room".to_owned(),
            ),
        };
        ui.status(badge, &text);
        let inside = matches!(self.room.phase(), Phase::Waiting | Phase::Together(_));
        ui.chat_enabled(inside);
        ui.in_room(inside || matches!(self.room.phase(), Phase::Connecting));
    }
}

fn names(peers: &[PeerId]) -> String {
    let names: Vec<String> = peers.iter().map(|p| format!("peer {p}")).collect();
    names.join(", ")
}
