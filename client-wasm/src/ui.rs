//! The page's elements: status, room, chat, log, videos and buttons. Everything shown in
//! the log also goes to the browser console.

use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Document, HtmlElement, HtmlInputElement, HtmlVideoElement, MediaStream};

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

    /// Shows the call's connection state on the remote tile (`data-call`).
    pub fn call_state(&self, state: &str) {
        if let Some(tile) = self.element::<HtmlElement>("remote-tile") {
            let _ = tile.set_attribute("data-call", state);
        }
    }

    /// Shows the local camera, or nothing.
    pub fn show_local(&self, stream: Option<&MediaStream>) {
        if let Some(video) = self.element::<HtmlVideoElement>("local-video") {
            video.set_src_object(stream);
        }
    }

    /// Shows the peer's stream, or nothing. Browsers may refuse to autoplay sound before
    /// the user has interacted with the page: then the video plays muted until clicked.
    pub fn show_remote(&self, stream: Option<&MediaStream>) {
        let Some(video) = self.element::<HtmlVideoElement>("remote-video") else {
            return;
        };
        video.set_src_object(stream);
        if stream.is_none() {
            return;
        }
        let Ok(playing) = video.play() else { return };
        let ui = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if JsFuture::from(playing).await.is_err() {
                video.set_muted(true);
                let _ = video.play();
                ui.remote_label("muted by the browser: click the video to hear the peer");
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

    /// Sets the caption under the remote video.
    pub fn remote_label(&self, text: &str) {
        self.set_text("remote-label", text);
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
