//! The page's elements: status, room, chat, log, videos and buttons. Everything shown in
//! the log also goes to the browser console.
//!
//! Remote videos are tiles in the grid `#remote-grid`, one per peer (`data-peer`, its
//! connection state in `data-call`), before the local tile; the grid's `data-count` (the
//! number of remote tiles) sets its columns. The first tile is always `#remote-tile`, with
//! `#remote-video` and `#remote-label`; with nobody to show it stays, as a placeholder
//! (`data-call="idle"`) with a note.

use signalroom_protocol::PeerId;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Document, Element, HtmlElement, HtmlInputElement, HtmlVideoElement, MediaStream};

/// What the status badge says, and its colour (`data-state` in the stylesheet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Badge {
    /// Reaching the relay or a peer.
    Connecting,
    /// Alone in the room.
    Waiting,
    /// In a call.
    Connected,
    /// The room is full.
    Full,
    /// Out of the room.
    Left,
    /// Something failed.
    Error,
}

impl Badge {
    fn state(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Waiting => "waiting",
            Self::Connected => "connected",
            Self::Full => "full",
            Self::Left => "left",
            Self::Error => "error",
        }
    }
}

/// Handles on the page's elements.
#[derive(Clone)]
pub struct Ui {
    document: Document,
}

impl Ui {
    /// The current page.
    pub fn new() -> Option<Self> {
        let document = web_sys::window()?.document()?;
        Some(Self { document })
    }

    /// The element with `id`, as type `T`. The ids are in www/index.html.
    pub fn element<T: JsCast>(&self, id: &str) -> Option<T> {
        self.document.get_element_by_id(id)?.dyn_into().ok()
    }

    fn set_text(&self, id: &str, text: &str) {
        if let Some(el) = self.element::<HtmlElement>(id) {
            el.set_text_content(Some(text));
        }
    }

    fn set_hidden(&self, id: &str, hidden: bool) {
        if let Some(el) = self.element::<HtmlElement>(id) {
            el.set_hidden(hidden);
        }
    }

    fn set_disabled(&self, id: &str, disabled: bool) {
        if let Some(el) = self.element::<HtmlElement>(id) {
            let _ = if disabled {
                el.set_attribute("disabled", "")
            } else {
                el.remove_attribute("disabled")
            };
        }
    }

    /// Shows the room's name and a link that opens the page in the same room.
    pub fn show_room(&self, name: &str, link: &str) {
        self.set_text("room-name", &format!("Room: {name}"));
        if let Some(a) = self.element::<HtmlElement>("share-link") {
            let _ = a.set_attribute("href", link);
            a.set_text_content(Some("share link"));
            a.set_hidden(false);
        }
    }

    /// Sets the status badge.
    pub fn status(&self, badge: Badge, text: &str) {
        if let Some(el) = self.element::<HtmlElement>("status") {
            let _ = el.set_attribute("data-state", badge.state());
            el.set_text_content(Some(text));
        }
    }

    /// Appends a line to the event log and the console.
    pub fn log(&self, line: &str) {
        web_sys::console::log_1(&line.into());
        self.append("log", None, line, false);
    }

    /// Writes a detail to the console only (ICE candidates): too many for the event log.
    pub fn detail(&self, line: &str) {
        web_sys::console::debug_1(&line.into());
    }

    /// The tile showing `peer`, if any.
    fn tile(&self, peer: PeerId) -> Option<Element> {
        let grid = self.element::<Element>("remote-grid")?;
        grid.query_selector(&format!("[data-peer=\"{peer}\"]"))
            .ok()
            .flatten()
    }

    /// Shows a tile for `peer`: the placeholder if it is free, a new one otherwise.
    pub fn add_tile(&self, peer: PeerId) {
        if self.tile(peer).is_some() {
            return;
        }
        let (Some(grid), Some(first)) = (
            self.element::<Element>("remote-grid"),
            self.element::<Element>("remote-tile"),
        ) else {
            return;
        };
        let tile = if first.has_attribute("data-peer") {
            let Some(copy) = first
                .clone_node_with_deep(true)
                .ok()
                .and_then(|n| n.dyn_into::<Element>().ok())
            else {
                return;
            };
            set_ids(&copy, Place::Later);
            clear_marks(&copy);
            let local = self.element::<Element>("local-tile");
            let _ = grid.insert_before(&copy, local.as_ref().map(|l| l.as_ref()));
            copy
        } else {
            first
        };
        let _ = tile.set_attribute("data-peer", &peer.to_string());
        self.tile_state(peer, "new", &format!("connecting to peer {peer}…"));
        self.count_tiles(&grid);
    }

    /// Shows `peer`'s connection state on its tile (`data-call`) and its caption.
    pub fn tile_state(&self, peer: PeerId, state: &str, label: &str) {
        if let Some(tile) = self.tile(peer) {
            let _ = tile.set_attribute("data-call", state);
            if let Ok(Some(caption)) = tile.query_selector("figcaption") {
                caption.set_text_content(Some(label));
            }
        }
    }

    /// Takes `peer`'s tile away; the last one stays as the placeholder, showing `note`.
    pub fn drop_tile(&self, peer: PeerId, note: &str) {
        let (Some(tile), Some(grid)) = (self.tile(peer), self.element::<Element>("remote-grid"))
        else {
            return;
        };
        if let Ok(Some(video)) = tile.query_selector("video") {
            if let Ok(video) = video.dyn_into::<HtmlVideoElement>() {
                video.set_src_object(None);
            }
        }
        let next = tile
            .next_element_sibling()
            .filter(|next| next.has_attribute("data-peer"));
        match (tile.id() == "remote-tile", next) {
            (false, _) => tile.remove(),
            // The next tile becomes the first.
            (true, Some(next)) => {
                tile.remove();
                set_ids(&next, Place::First);
            }
            (true, None) => {
                clear_marks(&tile);
                let _ = tile.remove_attribute("data-peer");
                let _ = tile.set_attribute("data-call", "idle");
                self.set_text("remote-label", note);
            }
        }
        self.count_tiles(&grid);
    }

    /// Sets the grid's `data-count`: its remote tiles (the placeholder counts).
    fn count_tiles(&self, grid: &Element) {
        let count = grid.child_element_count().saturating_sub(1).max(1);
        let _ = grid.set_attribute("data-count", &count.to_string());
    }

    /// Shows the local camera, or nothing.
    pub fn show_local(&self, stream: Option<&MediaStream>) {
        if let Some(video) = self.element::<HtmlVideoElement>("local-video") {
            video.set_src_object(stream);
        }
    }

    /// Shows `peer`'s stream on its tile. Browsers may refuse to autoplay sound before
    /// the user has interacted with the page: then the video plays muted until clicked.
    pub fn show_remote(&self, peer: PeerId, stream: &MediaStream) {
        let Some(tile) = self.tile(peer) else { return };
        let Some(video) = tile
            .query_selector("video")
            .ok()
            .flatten()
            .and_then(|v| v.dyn_into::<HtmlVideoElement>().ok())
        else {
            return;
        };
        // Each of the stream's tracks reports it; start it once.
        if video.src_object().as_ref() == Some(stream) {
            return;
        }
        video.set_src_object(Some(stream));
        let Ok(playing) = video.play() else { return };
        wasm_bindgen_futures::spawn_local(async move {
            if JsFuture::from(playing).await.is_err() {
                video.set_muted(true);
                let _ = video.play();
                if let Ok(Some(caption)) = tile.query_selector("figcaption") {
                    caption.set_text_content(Some(
                        "muted by the browser: click the video to hear the peer",
                    ));
                }
                let unmute = Closure::<dyn FnMut()>::new({
                    let video = video.clone();
                    move || video.set_muted(false)
                });
                video.set_onclick(Some(unmute.as_ref().unchecked_ref()));
                unmute.forget();
            }
        });
    }

    /// Appends a chat line; `via` says how it travelled (`relay` or `datachannel`).
    pub fn chat(&self, who: &str, text: &str, mine: bool, via: &str) {
        web_sys::console::log_1(&format!("chat {who} via {via}: {text}").into());
        if let Some(item) = self.append("chat", Some(who), text, mine) {
            let _ = item.set_attribute("data-via", via);
        }
    }

    fn append(
        &self,
        list: &str,
        who: Option<&str>,
        text: &str,
        mine: bool,
    ) -> Option<web_sys::Element> {
        let list = self.element::<HtmlElement>(list)?;
        let item = self.document.create_element("li").ok()?;
        if mine {
            item.set_class_name("mine");
        }
        if let (Some(who), Ok(span)) = (who, self.document.create_element("span")) {
            span.set_class_name("who");
            span.set_text_content(Some(who));
            let _ = item.append_child(&span);
        }
        let _ = item.append_child(&self.document.create_text_node(text));
        let _ = list.append_child(&item);
        list.set_scroll_top(list.scroll_height());
        Some(item)
    }

    /// Enables or disables the chat box.
    pub fn chat_enabled(&self, enabled: bool) {
        self.set_disabled("chat-input", !enabled);
        self.set_disabled("chat-send", !enabled);
    }

    /// Enables the hang-up button while in a room; offers "join again" once out.
    pub fn in_room(&self, inside: bool) {
        self.set_disabled("hangup", !inside);
        self.set_hidden("rejoin", inside);
    }

    /// Shows (or with `None` hides) a note about the camera and microphone.
    pub fn media_note(&self, note: Option<&str>) {
        self.set_text("media-note", note.unwrap_or_default());
        self.set_hidden("media-note", note.is_none());
    }

    /// Sets the caption under the local video.
    pub fn local_label(&self, text: &str) {
        self.set_text("local-label", text);
    }

    /// Sets the placeholder's caption, shown while no peer has a tile.
    pub fn remote_label(&self, text: &str) {
        if let Some(tile) = self.element::<Element>("remote-tile") {
            if !tile.has_attribute("data-peer") {
                self.set_text("remote-label", text);
            }
        }
    }

    /// Calls `on_submit` with the chat box's text when the user sends it, then clears it.
    pub fn on_chat(&self, mut on_submit: impl FnMut(String) + 'static) {
        let Some(form) = self.element::<HtmlElement>("chat-form") else {
            return;
        };
        let input = self.element::<HtmlInputElement>("chat-input");
        let handler = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            event.prevent_default();
            if let Some(input) = &input {
                let text = input.value();
                if !text.trim().is_empty() {
                    on_submit(text);
                    input.set_value("");
                }
            }
        });
        let _ = form.add_event_listener_with_callback("submit", handler.as_ref().unchecked_ref());
        // The form lives as long as the page.
        handler.forget();
    }

    /// Shows whether the toggle button `id` is on (`aria-pressed`).
    pub fn pressed(&self, id: &str, on: bool) {
        if let Some(button) = self.element::<Element>(id) {
            let _ = button.set_attribute("aria-pressed", if on { "true" } else { "false" });
        }
    }

    /// Marks `peer`'s tile (or, with `None`, the local one) as sending no sound (`data-audio`)
    /// or no video (`data-video`).
    pub fn media_marks(&self, peer: Option<PeerId>, audio: bool, video: bool) {
        let tile = match peer {
            Some(peer) => self.tile(peer),
            None => self.element::<Element>("local-tile"),
        };
        if let Some(tile) = tile {
            for (name, on) in [("data-audio", audio), ("data-video", video)] {
                let _ = if on {
                    tile.remove_attribute(name)
                } else {
                    tile.set_attribute(name, "off")
                };
            }
        }
    }

    /// Shows how the call with `peer` is doing: `good` or not, its figures as attributes
    /// (`data-rtt`, `data-loss`, `data-res`, `data-fps`) and as `text`.
    pub fn quality(&self, peer: PeerId, good: bool, figures: &[(&str, String)], text: &str) {
        let Some(tile) = self.tile(peer) else { return };
        let _ = tile.set_attribute("data-quality", if good { "good" } else { "poor" });
        for (name, value) in figures {
            let _ = tile.set_attribute(name, value);
        }
        if let Ok(Some(stats)) = tile.query_selector(".stats") {
            stats.set_text_content(Some(text));
        }
    }

    /// Lists the `devices` (`MediaDeviceInfo`s) of `kind` in the select `id`, the one
    /// labelled `current` selected.
    pub fn devices(&self, id: &str, kind: &str, devices: &js_sys::Array, current: Option<&str>) {
        let Some(select) = self.element::<web_sys::HtmlSelectElement>(id) else {
            return;
        };
        select.set_text_content(None);
        let mut count = 0;
        for device in devices.iter() {
            let text = |name: &str| {
                js_sys::Reflect::get(&device, &name.into())
                    .ok()
                    .and_then(|v| v.as_string())
                    .unwrap_or_default()
            };
            let (Ok(option), true) = (self.document.create_element("option"), text("kind") == kind)
            else {
                continue;
            };
            count += 1;
            let label = text("label");
            let _ = option.set_attribute("value", &text("deviceId"));
            option.set_text_content(Some(&label));
            if Some(label.as_str()) == current {
                let _ = option.set_attribute("selected", "");
            }
            let _ = select.append_child(&option);
        }
        select.set_disabled(count < 2);
    }

    /// Calls `on_change` with the select `id`'s value when the user changes it.
    pub fn on_change(&self, id: &str, mut on_change: impl FnMut(String) + 'static) {
        let Some(select) = self.element::<web_sys::HtmlSelectElement>(id) else {
            return;
        };
        let handler = Closure::<dyn FnMut()>::new({
            let select = select.clone();
            move || on_change(select.value())
        });
        select.set_onchange(Some(handler.as_ref().unchecked_ref()));
        handler.forget();
    }

    /// Calls `on_key` with each key pressed outside the chat box and the selects, without
    /// a modifier.
    pub fn on_key(&self, mut on_key: impl FnMut(String) + 'static) {
        let handler = Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(
            move |event: web_sys::KeyboardEvent| {
                let typing = event
                    .target()
                    .and_then(|t| t.dyn_into::<Element>().ok())
                    .is_some_and(|t| matches!(t.tag_name().as_str(), "INPUT" | "SELECT"));
                if !typing && !event.ctrl_key() && !event.meta_key() && !event.alt_key() {
                    on_key(event.key());
                }
            },
        );
        let _ = self
            .document
            .add_event_listener_with_callback("keydown", handler.as_ref().unchecked_ref());
        handler.forget();
    }

    /// Shows `tile` (the first remote one when `None`) full screen, or leaves full screen.
    pub fn full_screen(&self, tile: Option<Element>) {
        if self.document.fullscreen_element().is_some() {
            self.document.exit_fullscreen();
            return;
        }
        if let Some(tile) = tile.or_else(|| self.element("remote-tile")) {
            let _ = tile.request_fullscreen();
        }
    }

    /// Shows a tile full screen when its full-screen button is clicked.
    pub fn on_full_screen(&self) {
        let Some(grid) = self.element::<Element>("remote-grid") else {
            return;
        };
        let ui = self.clone();
        let handler = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            let button = event
                .target()
                .and_then(|t| t.dyn_into::<Element>().ok())
                .filter(|t| t.class_name() == "full");
            if let Some(button) = button {
                ui.full_screen(button.closest("figure").ok().flatten());
            }
        });
        let _ = grid.add_event_listener_with_callback("click", handler.as_ref().unchecked_ref());
        handler.forget();
    }

    /// Calls `on_click` when the button with `id` is clicked.
    pub fn on_click(&self, id: &str, on_click: impl FnMut() + 'static) {
        let Some(button) = self.element::<HtmlElement>(id) else {
            return;
        };
        let handler = Closure::<dyn FnMut()>::new(on_click);
        button.set_onclick(Some(handler.as_ref().unchecked_ref()));
        handler.forget();
    }
}

/// Where a remote tile stands in the grid.
#[derive(Clone, Copy)]
enum Place {
    /// First: it has the ids `remote-tile`, `remote-video` and `remote-label`.
    First,
    /// After the first: no ids.
    Later,
}

/// Takes the media marks and the call's figures off `tile` (another peer's, or nobody's).
fn clear_marks(tile: &Element) {
    for name in [
        "data-audio",
        "data-video",
        "data-quality",
        "data-rtt",
        "data-loss",
        "data-res",
        "data-fps",
    ] {
        let _ = tile.remove_attribute(name);
    }
    if let Ok(Some(stats)) = tile.query_selector(".stats") {
        stats.set_text_content(None);
    }
}

/// Gives `tile`, its video and its caption the ids its place calls for.
fn set_ids(tile: &Element, place: Place) {
    for (selector, id) in [
        (None, "remote-tile"),
        (Some("video"), "remote-video"),
        (Some("figcaption"), "remote-label"),
    ] {
        let element = match selector {
            None => Some(tile.clone()),
            Some(selector) => tile.query_selector(selector).ok().flatten(),
        };
        if let Some(element) = element {
            match place {
                Place::First => element.set_id(id),
                Place::Later => {
                    let _ = element.remove_attribute("id");
                }
            }
        }
    }
}
