//! The page's event loop. Relay frames, button clicks and WebRTC callbacks all
//! become [`Input`]s on one channel, handled one at a time, so no state is shared between
//! callbacks. This is the one module that knows the transport ([`crate::relay`]), the calls
//! ([`crate::call`]) and the page ([`crate::ui`]); they know only their own events.

use gloo_timers::future::TimeoutFuture;
use signalroom_protocol::{ErrorCode, Event, IceServer, PeerId, Request, RoomName, Signal};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{MediaStream, MediaStreamTrack};

use web_sys::RtcPeerConnectionState as State;

use crate::call::{state_name, Call, CallEvent, Quality, Sending};
use crate::codec::{self, Incoming};
use crate::config::PageConfig;
use crate::inbox::{inbox, Sender};
use crate::media;
use crate::relay::{Reconnect, Relay, RelayEvent, Update};
use crate::room::{Action, Phase, Room, MAX_PEERS};
use crate::ui::{Badge, Ui};
use signalroom_protocol::call::{Step, CALL_PATIENCE_MS};
use signalroom_protocol::session::{AckDue, Outgoing, Session, ACK_AFTER_MS};

/// A page turned away as `full` asks again this often while it stays connected (the relay
/// closes it after its join timeout, and it then reconnects and asks as ever).
const ASK_AGAIN_MS: u32 = 2_000;

/// How often the calls' quality is shown, and how many looks apart it is also logged.
const STATS_EVERY_MS: u32 = 1_000;
const LOG_STATS_EVERY: u32 = 10;

/// A call is `good` below this round-trip time and packet loss (of the last second).
const GOOD_RTT_MS: f64 = 400.0;
const GOOD_LOSS_PERCENT: f64 = 3.0;

/// A control of the call, by button or key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Microphone off or on (`m`).
    Mute,
    /// Camera off or on (`v`).
    Video,
    /// Share the screen, or stop (`s`).
    Share,
}

/// Everything the event loop reacts to.
#[derive(Debug)]
pub enum Input {
    /// Something happened on the relay connection.
    Relay(RelayEvent),
    /// The user sent a chat line.
    Chat(String),
    /// The user hung up.
    HangUp,
    /// The user wants back into the room.
    Rejoin,
    /// The browser reported something about call number `serial`, with `peer`.
    Call {
        /// The call's peer.
        peer: PeerId,
        /// Which call (a peer may be called again; stragglers of an ended call are void).
        serial: u32,
        /// What happened.
        event: CallEvent,
    },
    /// Call number `serial` has had time to connect.
    Overdue {
        /// The call's peer.
        peer: PeerId,
        /// Which call.
        serial: u32,
    },
    /// Time to ask a full room again; `ask` numbers the request (only the latest counts).
    AskAgain {
        /// Which request to ask again.
        ask: u32,
    },
    /// Time to acknowledge what the relay sent.
    AckDue,
    /// The user pressed a control.
    Control(Control),
    /// The user chose the device of `kind` (`"audio"`, `"video"`) with this id.
    Device(&'static str, String),
    /// The track of `kind` from the device the user chose, or why there is none.
    Track(&'static str, Result<MediaStreamTrack, String>),
    /// A device was plugged in or out.
    DevicesChanged,
    /// The devices present (`MediaDeviceInfo`s).
    Devices(js_sys::Array),
    /// The screen the user chose to share, or why there is none.
    Screen(Result<MediaStreamTrack, String>),
    /// The shared screen ended (stopped from the browser's own bar, say).
    ScreenEnded,
    /// Time to show the calls' quality.
    StatsDue,
}

/// Whether the page wants to be in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wish {
    /// In the room: join on every (re)connection.
    In,
    /// Out, after hang-up (or a token that does not admit the room) until asked back in.
    Out,
}

/// Which relay connection a call was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The current one: its peer id is valid, and it signals through the relay.
    Current,
    /// One that was lost: its peer id is void (the relay may give it to someone else), so
    /// it never signals; it keeps running until the page calls someone again.
    Earlier,
}

/// The call with one peer: one pair of the mesh.
struct Pair {
    peer: PeerId,
    serial: u32,
    origin: Origin,
    call: Call,
    /// The call's quality at the last look (loss is counted between looks), how many looks
    /// there were, and whether the last was good.
    seen: Quality,
    looks: u32,
    good: Option<bool>,
}

struct App {
    ui: Ui,
    config: PageConfig,
    room: Room,
    inputs: Sender<Input>,
    relay: Relay,
    wish: Wish,
    /// Camera and microphone, when the browser gave them.
    local: Option<MediaStream>,
    /// Whether the user has the microphone and the camera on (their tracks `enabled`).
    audio_on: bool,
    video_on: bool,
    /// The shared screen, sent instead of the camera while there is one, and what hears
    /// of its end.
    screen: Option<(MediaStreamTrack, Closure<dyn FnMut()>)>,
    ice_servers: Vec<IceServer>,
    /// One call per other member (and, after a lost relay connection, the earlier calls).
    pairs: Vec<Pair>,
    /// The last call's serial.
    serial: u32,
    /// The last request to ask a full room again.
    asks: u32,
    /// The resumable session with the relay.
    session: Session,
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

    let (inputs, mut queue) = inbox();
    {
        let inputs = inputs.clone();
        ui.on_chat(move |text| {
            inputs.send(Input::Chat(text));
        });
    }
    for (id, input) in [
        ("hangup", (|| Input::HangUp) as fn() -> Input),
        ("rejoin", || Input::Rejoin),
        ("mute", || Input::Control(Control::Mute)),
        ("video-off", || Input::Control(Control::Video)),
        ("share", || Input::Control(Control::Share)),
    ] {
        let inputs = inputs.clone();
        ui.on_click(id, move || {
            inputs.send(input());
        });
    }
    {
        let (inputs, keys_ui) = (inputs.clone(), ui.clone());
        ui.on_key(move |key| {
            let control = match key.as_str() {
                "m" => Control::Mute,
                "v" => Control::Video,
                "s" => Control::Share,
                "f" => return keys_ui.full_screen(None),
                _ => return,
            };
            inputs.send(Input::Control(control));
        });
    }
    ui.on_full_screen();
    for (id, kind) in [("mic-select", "audio"), ("cam-select", "video")] {
        let inputs = inputs.clone();
        ui.on_change(id, move |device| {
            inputs.send(Input::Device(kind, device));
        });
    }
    {
        let inputs = inputs.clone();
        media::on_device_change(move || {
            inputs.send(Input::DevicesChanged);
        });
    }
    {
        let inputs = inputs.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                TimeoutFuture::new(STATS_EVERY_MS).await;
                inputs.send(Input::StatsDue);
            }
        });
    }

    let relay = {
        let inputs = inputs.clone();
        Relay::new(config.relay_url(), move |event| {
            inputs.send(Input::Relay(event));
        })
    };
    let mut app = App {
        ui,
        config,
        room: Room::new(room),
        inputs,
        relay,
        wish: Wish::In,
        local: None,
        audio_on: true,
        video_on: true,
        screen: None,
        ice_servers: Vec::new(),
        pairs: Vec::new(),
        serial: 0,
        asks: 0,
        session: Session::default(),
    };
    app.open_media().await;
    app.connect().await;
    loop {
        let input = queue.next().await;
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
        match self.relay.open() {
            Ok(()) => self.opening().await,
            Err(lost) => self.on_relay(lost).await,
        }
    }

    /// A relay connection is opening: resume the session, or ask for the room, at once
    /// (the frame waits for it).
    async fn opening(&mut self) {
        self.ui
            .status(Badge::Connecting, "connecting to the relay…");
        // The URL opened holds the token; the one logged does not.
        self.ui.log(&format!("connecting to {}", self.config.relay));
        if let Some(resume) = self.session.resume() {
            self.ui.log("resuming the session");
            self.send(&resume).await;
        } else if self.wish == Wish::In {
            self.session.restart();
            self.ask_for_room().await;
        }
    }

    /// What a frame means for the session; `false` when it is the session's alone (`ack`,
    /// `resumed`) and goes no further.
    async fn on_session(&mut self, incoming: &Incoming) -> bool {
        let event = match incoming {
            Incoming::Event(event) => event,
            Incoming::Foreign { .. } => return self.counted().await,
        };
        match event {
            Event::Ack { received } => {
                let _ = self.session.acknowledged(*received);
                return false;
            }
            Event::Resumed {
                received,
                resume,
                incomplete,
                ..
            } => {
                let again = self.session.resumed(*received, resume.clone(), *incomplete);
                self.ui.log(&format!(
                    "session resumed; sending again {} frame(s) the relay missed",
                    again.len()
                ));
                if *incomplete {
                    // Its relay died: signals either way may be lost. Fresh candidates
                    // and a new offer and answer repair every call.
                    self.ui
                        .log("frames may be missing (its relay died); restarting ICE");
                    for pair in &self.pairs {
                        if pair.origin == Origin::Current {
                            pair.call.restart_ice();
                        }
                    }
                }
                for text in again {
                    let _ = self.relay.send(text);
                }
                self.relay.retry_at_once(true);
                return false;
            }
            Event::Created {
                peer,
                resume: Some(grant),
                ..
            }
            | Event::Joined {
                peer,
                resume: Some(grant),
                ..
            } => {
                self.session.granted(*peer, grant.clone());
                self.relay.retry_at_once(true);
            }
            Event::Error {
                code: ErrorCode::ResumeRefused | ErrorCode::ResumeExpired | ErrorCode::ResumeLost,
                ..
            } => {
                // The session is gone: its ids are void, as after any lost connection;
                // join as a new peer (the calls keep running until then).
                self.session.end();
                self.relay.retry_at_once(false);
                self.void_ids();
                if self.wish == Wish::In {
                    self.ask_for_room().await;
                }
            }
            _ => {}
        }
        self.counted().await
    }

    /// Counts a frame the relay sent, acknowledging when due.
    async fn counted(&mut self) -> bool {
        match self.session.received() {
            AckDue::Now => self.acknowledge().await,
            AckDue::Later => self.after(ACK_AFTER_MS, Input::AckDue),
            AckDue::No => {}
        }
        true
    }

    async fn acknowledge(&mut self) {
        if let Some(ack) = self.session.ack() {
            self.send(&ack).await;
        }
    }

    /// The relay's ids are void: the room starts over, and the calls made so far are
    /// earlier ones (they run until the page calls someone again).
    fn void_ids(&mut self) {
        self.room.disconnected();
        for pair in &mut self.pairs {
            pair.origin = Origin::Earlier;
        }
    }

    /// Asks the relay for the page's room.
    async fn ask_for_room(&mut self) {
        let room = self.room.name().clone();
        self.send(&Request::<Signal>::CreateOrJoin { room }).await;
    }

    async fn on_relay(&mut self, update: Update) {
        match update {
            Update::Opening => self.opening().await,
            Update::Frame(text) => match codec::decode(&text) {
                Ok(incoming) => {
                    if !self.on_session(&incoming).await {
                        self.show_phase();
                        return;
                    }
                    let actions = self.room.apply(incoming);
                    for action in actions {
                        self.act(action).await;
                    }
                    if *self.room.phase() == Phase::Forbidden {
                        // Asking again cannot help: stay out until the user asks.
                        self.stay_out();
                    }
                    self.show_phase();
                }
                Err(error) => {
                    self.counted().await;
                    self.ui
                        .log(&format!("unreadable frame from the relay: {error}"))
                }
            },
            Update::Lost {
                reason,
                heard,
                retry_ms,
            } => self.relay_lost(&reason, heard, retry_ms),
        }
    }

    fn stay_out(&mut self) {
        self.wish = Wish::Out;
        self.relay.set_reconnect(Reconnect::Never);
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
                self.list_devices();
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
        if let Some((screen, _)) = self.screen.take() {
            screen.stop();
        }
        (self.audio_on, self.video_on) = (true, true);
        for id in ["mute", "video-off", "share"] {
            self.ui.pressed(id, false);
        }
        self.ui.media_marks(None, true, true);
        self.ui.show_local(None);
    }

    /// What the page sends now, for the other members' marks.
    fn media(&self) -> Signal {
        let local = self.local.as_ref();
        Signal::Media {
            audio: self.audio_on && media::track(local, "audio").is_some(),
            video: self.video_on
                && (self.screen.is_some() || media::track(local, "video").is_some()),
        }
    }

    /// Tells every member what the page sends: over each call's data channel where it is
    /// open, through the relay otherwise.
    async fn tell_media(&mut self) {
        let media = self.media();
        if let Signal::Media { audio, video } = media {
            self.ui.media_marks(None, audio, video);
        }
        for peer in self.room.peers().to_vec() {
            if !self
                .call_with(peer)
                .is_some_and(|call| call.send_signal(&media))
            {
                self.send_to(peer, media.clone()).await;
            }
        }
    }

    /// What every call sends of `kind` (`"audio"`, `"video"`): `track` instead.
    fn send_instead(&self, kind: &str, track: Option<&MediaStreamTrack>) {
        for pair in &self.pairs {
            pair.call.replace(kind, track);
        }
    }

    async fn on_control(&mut self, control: Control) {
        let local = self.local.clone();
        match control {
            Control::Mute | Control::Video => {
                let (kind, button, what, on) = match control {
                    Control::Mute => ("audio", "mute", "microphone", &mut self.audio_on),
                    _ => ("video", "video-off", "camera", &mut self.video_on),
                };
                *on = !*on;
                let on = *on;
                // The camera's track, and the screen's while it is shared instead.
                let screen = self.screen.as_ref().filter(|_| kind == "video");
                for track in local
                    .iter()
                    .flat_map(|l| media::tracks(l, kind))
                    .chain(screen.map(|(track, _)| track.clone()))
                {
                    track.set_enabled(on);
                }
                self.ui.pressed(button, !on);
                self.ui
                    .log(&format!("{what} {}", if on { "on" } else { "off" }));
            }
            Control::Share if self.screen.is_some() => {
                if let Some((screen, _)) = self.screen.take() {
                    screen.stop();
                }
                self.screen_stopped();
            }
            Control::Share => {
                self.later(async {
                    Input::Screen(media::screen().await.map_err(|e| format!("{e:?}")))
                });
                return;
            }
        }
        self.tell_media().await;
    }

    /// Hands the loop `input` in `ms` milliseconds.
    fn after(&self, ms: u32, input: Input) {
        self.later(async move {
            TimeoutFuture::new(ms).await;
            input
        });
    }

    /// Runs `task` beside the event loop, and hands the loop its answer.
    fn later(&self, task: impl std::future::Future<Output = Input> + 'static) {
        self.run_later(Box::pin(task));
    }

    // One copy of the spawning, whatever the task (the page's size).
    fn run_later(&self, task: std::pin::Pin<Box<dyn std::future::Future<Output = Input>>>) {
        let inputs = self.inputs.clone();
        wasm_bindgen_futures::spawn_local(async move {
            inputs.send(task.await);
        });
    }

    /// The screen the user picked goes out instead of the camera.
    async fn share(&mut self, screen: MediaStreamTrack) {
        screen.set_enabled(self.video_on);
        let ended = Closure::<dyn FnMut()>::new({
            let inputs = self.inputs.clone();
            move || {
                inputs.send(Input::ScreenEnded);
            }
        });
        screen.set_onended(Some(ended.as_ref().unchecked_ref()));
        self.send_instead("video", Some(&screen));
        if let Ok(preview) = MediaStream::new() {
            preview.add_track(&screen);
            self.ui.show_local(Some(&preview));
        }
        if let Some((earlier, _)) = self.screen.replace((screen, ended)) {
            earlier.stop();
        }
        self.ui.pressed("share", true);
        self.ui.log("sharing the screen");
        self.tell_media().await;
    }

    /// The screen is no longer shared: the camera (if any) goes out again.
    fn screen_stopped(&mut self) {
        let local = self.local.clone();
        self.send_instead("video", media::track(local.as_ref(), "video").as_ref());
        self.ui.show_local(local.as_ref());
        self.ui.pressed("share", false);
        self.ui.log("screen sharing stopped");
    }

    /// Switches the microphone or camera (`kind`) to `track`, in every call.
    fn switch_device(&mut self, kind: &'static str, track: MediaStreamTrack) {
        let (on, what) = match kind {
            "audio" => (self.audio_on, "microphone"),
            _ => (self.video_on, "camera"),
        };
        track.set_enabled(on);
        if let Some(local) = &self.local {
            for old in media::tracks(local, kind) {
                local.remove_track(&old);
                old.stop();
            }
            local.add_track(&track);
        }
        if kind == "audio" || self.screen.is_none() {
            self.send_instead(kind, Some(&track));
        }
        self.ui.log(&format!("{what}: {}", track.label()));
    }

    /// Asks which microphones and cameras are present.
    fn list_devices(&self) {
        self.later(async { Input::Devices(media::devices().await) });
    }

    /// Lists the microphones and cameras present, the ones in use selected.
    fn show_devices(&self, devices: &js_sys::Array) {
        for (select, listed, kind) in [
            ("mic-select", "audioinput", "audio"),
            ("cam-select", "videoinput", "video"),
        ] {
            let label = media::track(self.local.as_ref(), kind).map(|t| t.label());
            self.ui.devices(select, listed, devices, label.as_deref());
        }
    }

    /// Shows how call number `serial` is doing; logs it when that changes, and every few
    /// looks.
    fn show_quality(&mut self, serial: u32, now: Quality) {
        let Some(pair) = self.pairs.iter_mut().find(|pair| pair.serial == serial) else {
            return;
        };
        let (lost, received) = (now.lost - pair.seen.lost, now.received - pair.seen.received);
        let loss = if lost > 0.0 {
            100.0 * lost / (lost + received.max(0.0))
        } else {
            0.0
        };
        pair.seen = now;
        // Whole numbers (and loss in tenths): formatting floats would cost the page
        // some 14 kB of WASM.
        let rtt = now.rtt_ms.unwrap_or_default() as u32;
        let tenths = (loss * 10.0).round() as u32;
        let loss = format!("{}.{}", tenths / 10, tenths % 10);
        let good = f64::from(rtt) < GOOD_RTT_MS && f64::from(tenths) < GOOD_LOSS_PERCENT * 10.0;
        let mut figures = vec![("data-rtt", rtt.to_string()), ("data-loss", loss.clone())];
        let mut text = format!(
            "{} · {rtt} ms · {loss}% lost",
            if good { "good" } else { "poor" }
        );
        if let Some((width, height, fps)) = now.video {
            let (width, height, fps) = (width as u32, height as u32, fps.round() as u32);
            figures.push(("data-res", format!("{width}x{height}")));
            figures.push(("data-fps", fps.to_string()));
            text.push_str(&format!(" · {width}x{height} · {fps} fps"));
        }
        self.ui.quality(pair.peer, good, &figures, &text);
        if pair.good != Some(good) || pair.looks % LOG_STATS_EVERY == 0 {
            self.ui
                .log(&format!("call with peer {}: {text}", pair.peer));
        }
        pair.good = Some(good);
        pair.looks += 1;
    }

    /// Asks each current call how it is doing.
    fn measure_calls(&self) {
        for pair in &self.pairs {
            if pair.origin == Origin::Current && pair.call.state() == State::Connected {
                pair.call.measure();
            }
        }
    }

    async fn send_to(&mut self, peer: PeerId, signal: Signal) {
        self.send(&Request::Message {
            data: signal,
            to: Some(peer),
        })
        .await;
    }

    /// The current call with `peer`, if the page is calling it.
    fn call_with(&mut self, peer: PeerId) -> Option<&mut Call> {
        self.pairs
            .iter_mut()
            .find(|pair| pair.peer == peer && pair.origin == Origin::Current)
            .map(|pair| &mut pair.call)
    }

    /// Call number `serial`, if it is still on.
    fn pair_number(&mut self, serial: u32) -> Option<&mut Pair> {
        self.pairs.iter_mut().find(|pair| pair.serial == serial)
    }

    /// Ends the calls `which` picks, each taking its tile; the last tile shows `note`.
    fn end_calls(&mut self, which: &dyn Fn(&Pair) -> bool, note: &str) {
        let mut i = 0;
        while i < self.pairs.len() {
            if !which(&self.pairs[i]) {
                i += 1;
                continue;
            }
            let pair = self.pairs.remove(i);
            self.ui.log(&format!("call with peer {} ended", pair.peer));
            pair.call.close();
            self.ui.drop_tile(pair.peer, note);
        }
        self.ui.remote_label(note);
    }

    async fn on_call_event(&mut self, peer: PeerId, serial: u32, event: CallEvent) {
        // What the page sends, for a newly open channel (the pair borrows `self` below).
        let media = matches!(event, CallEvent::ChannelOpen).then(|| self.media());
        let Some(pair) = self.pair_number(serial) else {
            return;
        };
        let (call, origin) = (&mut pair.call, pair.origin);
        match event {
            // An earlier connection's call says nothing: its peer's id is void.
            CallEvent::NegotiationNeeded | CallEvent::Candidate(_)
                if origin == Origin::Earlier => {}
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
                let name = state_name(state);
                if state == State::Failed && origin == Origin::Current {
                    // For this pair alone.
                    call.restart_ice();
                }
                self.ui.log(&format!("call with peer {peer}: {name}"));
                if state == State::Failed && origin == Origin::Earlier {
                    // It cannot renegotiate without a valid id.
                    let note = "waiting for someone to join";
                    self.end_calls(&|pair| pair.serial == serial, note);
                    return;
                }
                let label = match state {
                    State::Connected => format!("peer {peer}"),
                    State::Failed => format!("could not reach peer {peer}"),
                    State::Disconnected => format!("peer {peer}: connection interrupted…"),
                    _ => format!("connecting to peer {peer}…"),
                };
                self.ui.tile_state(peer, name, &label);
                self.show_phase();
            }
            CallEvent::Track(stream) => self.ui.show_remote(peer, &stream),
            CallEvent::ChannelOpen => {
                // What the page sends, for the peer's marks on its tile.
                if let Some(media) = &media {
                    call.send_signal(media);
                }
                self.ui.log(&format!("chat channel with peer {peer} open"));
            }
            CallEvent::ChannelSignal(Signal::Media { audio, video }) => {
                self.show_media(peer, audio, video)
            }
            CallEvent::ChannelSignal(_) => {}
            CallEvent::Quality(quality) => self.show_quality(serial, quality),
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
                self.end_calls(
                    &|pair| pair.peer == from && pair.origin == Origin::Current,
                    "the other side hung up",
                );
                Ok(())
            }
            Signal::Media { audio, video } => {
                self.show_media(from, audio, video);
                Ok(())
            }
            Signal::Text { .. } => Ok(()),
        };
        if let Err(error) = result {
            self.ui
                .log(&format!("signal from peer {from} failed: {error:?}"));
        }
    }

    /// Marks `peer`'s tile with what it sends.
    fn show_media(&self, peer: PeerId, audio: bool, video: bool) {
        let on = |on| if on { "on" } else { "off" };
        self.ui.log(&format!(
            "peer {peer}: microphone {}, video {}",
            on(audio),
            on(video)
        ));
        self.ui.media_marks(Some(peer), audio, video);
    }

    /// Call number `serial` has had time to connect: if it has not, unstick it.
    fn on_overdue(&mut self, peer: PeerId, serial: u32) {
        let Some(pair) = self.pair_number(serial) else {
            return;
        };
        if pair.origin == Origin::Current && pair.call.state() != State::Connected {
            pair.call.nudge();
            self.ui.log(&format!(
                "call with peer {peer} not connected after {} s; restarting ICE",
                CALL_PATIENCE_MS / 1000
            ));
            self.call_timer(peer, serial);
        }
    }

    /// Sends a frame; a counted one is kept for a resume, and one sent while the relay is
    /// unreachable, or while a resume is unanswered, goes out after it.
    async fn send(&mut self, request: &Request<Signal>) {
        let text = codec::encode(request);
        if !matches!(request, Request::Ack { .. } | Request::Resume { .. })
            && self.session.sending(&text) == Outgoing::Held
        {
            return;
        }
        if let Err(error) = self.relay.send(text) {
            if self.session.window_ms().is_none() {
                self.ui
                    .log(&format!("could not send to the relay: {error}"));
            }
        }
    }

    /// Checks on call number `serial` once it has had time to connect.
    fn call_timer(&self, peer: PeerId, serial: u32) {
        self.after(CALL_PATIENCE_MS, Input::Overdue { peer, serial });
    }

    /// The relay connection is gone; `heard` says whether the relay answered on it at all,
    /// `retry_ms` when the transport tries again.
    fn relay_lost(&mut self, reason: &str, heard: bool, retry_ms: Option<u32>) {
        if let (Some(window), Some(delay)) = (self.session.window_ms(), retry_ms) {
            // The session keeps the page's id and seat for `window`: the calls go on, and
            // so does signaling, once resumed.
            self.ui
                .status(Badge::Connecting, "reconnecting to the relay…");
            self.ui.log(&format!(
                "relay connection lost ({reason}); resuming the session within {} s, retrying in {delay} ms",
                window / 1000
            ));
            return;
        }
        self.void_ids();
        self.ui.chat_enabled(false);
        let Some(delay) = retry_ms else {
            // Out of the room by choice: the relay closes idle lobby connections, and the
            // page reconnects only when asked back in.
            self.ui.log(&format!("relay connection closed ({reason})"));
            return;
        };
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
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Relay(event) => {
                if let Some(update) = self.relay.receive(event) {
                    self.on_relay(update).await;
                }
            }
            Input::Call {
                peer,
                serial,
                event,
            } => self.on_call_event(peer, serial, event).await,
            Input::Overdue { peer, serial } => self.on_overdue(peer, serial),
            Input::AskAgain { ask } => {
                let still_outside = *self.room.phase() == Phase::Full;
                if ask == self.asks && still_outside && self.wish == Wish::In && self.relay.is_up()
                {
                    self.ask_for_room().await;
                }
            }
            Input::Chat(text) => {
                let me = self
                    .room
                    .me()
                    .map(|me| format!("you ({me})"))
                    .unwrap_or("you".into());
                // To each member once: peer to peer where the pair's channel is open,
                // through the relay (to that member alone) otherwise.
                let mut via = "datachannel";
                for peer in self.room.peers().to_vec() {
                    if !self
                        .call_with(peer)
                        .is_some_and(|call| call.send_chat(&text))
                    {
                        via = "relay";
                        let data = Signal::Text { text: text.clone() };
                        self.send_to(peer, data).await;
                    }
                }
                if self.room.peers().is_empty() {
                    via = "relay";
                }
                self.ui.chat(&me, &text, true, via);
            }
            Input::AckDue => self.acknowledge().await,
            Input::Control(control) => self.on_control(control).await,
            Input::Device(kind, id) => self.later(async move {
                let track = media::device_track(kind, &id).await;
                Input::Track(kind, track.map_err(|e| format!("{e:?}")))
            }),
            Input::Track(kind, Ok(track)) => self.switch_device(kind, track),
            Input::Screen(Ok(screen)) => self.share(screen).await,
            Input::Track(_, Err(error)) | Input::Screen(Err(error)) => self
                .ui
                .log(&format!("no such device, or not allowed: {error}")),
            Input::DevicesChanged => self.list_devices(),
            Input::Devices(devices) => self.show_devices(&devices),
            Input::ScreenEnded => {
                if self.screen.take().is_some() {
                    self.screen_stopped();
                    self.tell_media().await;
                }
            }
            Input::StatsDue => self.measure_calls(),
            Input::HangUp => {
                self.stay_out();
                // Ended first, the session holds nothing back, even with a resume
                // unanswered: the leave goes now.
                self.session.end();
                self.send(&Request::<Signal>::Leave).await;
                self.relay.retry_at_once(false);
                for action in self.room.left() {
                    self.act(action).await;
                }
                self.end_calls(&|_| true, "you hung up");
                self.close_media();
                self.ui.log("you left the room");
                self.show_phase();
            }
            Input::Rejoin => {
                self.wish = Wish::In;
                self.relay.set_reconnect(Reconnect::WithBackoff);
                self.ui.remote_label("waiting for someone to join");
                self.open_media().await;
                if self.relay.is_up() {
                    self.ask_for_room().await;
                } else {
                    self.connect().await;
                }
            }
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Log(line) => self.ui.log(&line),
            Action::AskAgain => {
                self.asks += 1;
                self.after(ASK_AGAIN_MS, Input::AskAgain { ask: self.asks });
            }
            Action::Chat { from, text } => {
                self.ui.chat(&format!("peer {from}"), &text, false, "relay")
            }
            Action::Call { peer, polite } => {
                // Never two calls with one peer.
                self.end_calls(
                    &|pair| pair.peer == peer && pair.origin == Origin::Current,
                    "waiting for someone to join",
                );
                self.serial += 1;
                let serial = self.serial;
                let inputs = self.inputs.clone();
                let local = self.local.as_ref();
                let Some(stream) = local.cloned().or_else(|| MediaStream::new().ok()) else {
                    return;
                };
                let outgoing = Sending {
                    stream: &stream,
                    audio: media::track(local, "audio"),
                    video: match &self.screen {
                        Some((screen, _)) => Some(screen.clone()),
                        None => media::track(local, "video"),
                    },
                };
                let started = Call::start(polite, &self.ice_servers, &outgoing, move |event| {
                    inputs.send(Input::Call {
                        peer,
                        serial,
                        event,
                    });
                });
                match started {
                    Ok(call) => {
                        self.ui.log(&format!(
                            "calling peer {peer} ({})",
                            if polite { "polite" } else { "impolite" }
                        ));
                        self.ui.add_tile(peer);
                        self.pairs.push(Pair {
                            peer,
                            serial,
                            origin: Origin::Current,
                            call,
                            seen: Quality::default(),
                            looks: 0,
                            good: None,
                        });
                        self.call_timer(peer, serial);
                    }
                    Err(error) => self.ui.log(&format!("could not start a call: {error:?}")),
                }
            }
            Action::HangUp(peer) => self.end_calls(
                &|pair| pair.peer == peer && pair.origin == Origin::Current,
                &format!("peer {peer} left; waiting for someone to join"),
            ),
            Action::EndEarlier => self.end_calls(
                &|pair| pair.origin == Origin::Earlier,
                "waiting for someone to join",
            ),
            Action::Leave => {
                self.session.end();
                self.send(&Request::<Signal>::Leave).await;
            }
            Action::Away(peer) => {
                self.ui
                    .tile_state(peer, "away", &format!("peer {peer}: reconnecting…"));
            }
            Action::Back(peer) => {
                if let Some(call) = self.call_with(peer) {
                    let state = call.state();
                    let label = if state == State::Connected {
                        format!("peer {peer}")
                    } else {
                        format!("connecting to peer {peer}…")
                    };
                    self.ui.tile_state(peer, state_name(state), &label);
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
            Phase::Together(peers) => {
                // "peer 2, peer 3": the connected ones, and the others.
                let (mut connected, mut others, mut failed) = (String::new(), String::new(), true);
                for peer in peers {
                    let state = self
                        .pairs
                        .iter()
                        .find(|pair| pair.peer == *peer && pair.origin == Origin::Current)
                        .map(|pair| pair.call.state());
                    let list = if state == Some(State::Connected) {
                        &mut connected
                    } else {
                        failed &= state == Some(State::Failed);
                        &mut others
                    };
                    if !list.is_empty() {
                        list.push_str(", ");
                    }
                    list.push_str(&format!("peer {peer}"));
                }
                match (connected.is_empty(), others.is_empty()) {
                    (false, true) => (Badge::Connected, format!("in a call with {connected}")),
                    (false, false) => (
                        Badge::Connected,
                        format!("in a call with {connected}; connecting to {others}…"),
                    ),
                    (true, _) if failed => (Badge::Error, format!("call with {others} failed")),
                    (true, _) => (Badge::Connecting, format!("connecting to {others}…")),
                }
            }
            Phase::Full => (Badge::Full, "room is full".to_owned()),
            Phase::Crowded { members } => (
                Badge::Full,
                format!("room is full: {members} inside, and this page calls at most {MAX_PEERS}"),
            ),
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
