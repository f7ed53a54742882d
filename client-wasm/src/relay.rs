//! The transport: one WebSocket to the relay at a time, opened again with backoff when it
//! drops. It knows nothing of the page: what happens on a connection becomes a
//! [`RelayEvent`] handed to the callback it was made with; the page's event loop gives
//! each one back to [`Relay::receive`], which drops stragglers from an earlier connection
//! and says what the event means ([`Update`]).

use std::cell::Cell;
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use signalroom_protocol::session::Backoff;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CloseEvent, MessageEvent, WebSocket};

/// Something that happened on a relay connection, for [`Relay::receive`]. Opaque: it is
/// tagged with the connection it came from.
#[derive(Debug)]
pub struct RelayEvent {
    generation: u32,
    what: Happened,
}

#[derive(Debug)]
enum Happened {
    Open,
    Text(String),
    Closed { reason: String, heard: bool },
    RetryDue,
}

/// What a [`RelayEvent`] means to the page.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    /// A connection is opening (a retry came due): frames sent now go out once it is open.
    Opening,
    /// A text frame arrived.
    Frame(String),
    /// The connection is gone.
    Lost {
        /// Why, as far as the browser says.
        reason: String,
        /// Whether the relay sent anything first; a refused upgrade (HTTP 401 for a bad
        /// room token, 403, 503) looks to the page like a relay that never answered.
        heard: bool,
        /// When the transport tries again, or `None` when it was told not to.
        retry_ms: Option<u32>,
    },
}

/// Whether a lost connection is opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Yes, with backoff.
    WithBackoff,
    /// No: the page stays off the relay until it calls [`Relay::open`].
    Never,
}

/// A browser WebSocket and what the transport keeps with it.
struct Socket {
    socket: WebSocket,
    /// Frames sent while it was still connecting, in order: they go out once it is open,
    /// before any later one.
    waiting: Vec<String>,
    /// Its open, message and close handlers, alive as long as the socket may call them.
    handlers: [Closure<dyn FnMut(JsValue)>; 3],
}

impl Socket {
    fn flush(&mut self) -> Result<(), String> {
        for text in self.waiting.drain(..) {
            self.socket
                .send_with_str(&text)
                .map_err(|e| format!("{e:?}"))?;
        }
        Ok(())
    }
}

enum Link {
    /// A connection is open or opening.
    Up(Socket),
    /// Down; a retry is scheduled.
    Retrying,
    /// Down, and staying down until [`Relay::open`].
    Down,
}

/// The page's connection to the relay.
pub struct Relay {
    url: String,
    post: Rc<dyn Fn(RelayEvent)>,
    generation: u32,
    backoff: Backoff,
    link: Link,
    reconnect: Reconnect,
}

impl Relay {
    /// A transport for `url` (which may hold a room token: never show it) that hands what
    /// happens to `post`. Nothing is opened yet.
    pub fn new(url: String, post: impl Fn(RelayEvent) + 'static) -> Self {
        Self {
            url,
            post: Rc::new(post),
            generation: 0,
            backoff: Backoff::default(),
            link: Link::Down,
            reconnect: Reconnect::WithBackoff,
        }
    }

    /// Whether lost connections are opened again from now on.
    pub fn set_reconnect(&mut self, reconnect: Reconnect) {
        self.reconnect = reconnect;
    }

    /// Whether a lost connection that worked is tried again at once and then often (a
    /// session that can resume), or with the usual backoff ([`Backoff::resuming`]).
    pub fn retry_at_once(&mut self, at_once: bool) {
        self.backoff.resuming(at_once);
    }

    /// Whether a connection is open or opening.
    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up(_))
    }

    /// Opens a new connection now, voiding whatever the previous one still delivers. Frames
    /// sent meanwhile wait until it is open. `Err` is [`Update::Lost`] when the browser
    /// refused at once (a retry is then scheduled as for any lost connection).
    pub fn open(&mut self) -> Result<(), Update> {
        self.close();
        self.generation += 1;
        let generation = self.generation;
        let socket = match WebSocket::new(&self.url) {
            Ok(socket) => socket,
            Err(error) => return Err(self.lost(format!("{error:?}"), false)),
        };
        let heard = Rc::new(Cell::new(false));
        let handler = |what: fn(JsValue, &Cell<bool>) -> Option<Happened>| {
            let (post, heard) = (self.post.clone(), heard.clone());
            Closure::<dyn FnMut(JsValue)>::new(move |event| {
                if let Some(what) = what(event, &heard) {
                    post(RelayEvent { generation, what });
                }
            })
        };
        let handlers = [
            handler(|_, _| Some(Happened::Open)),
            handler(|event, heard| {
                heard.set(true);
                let text = event.dyn_into::<MessageEvent>().ok()?.data().as_string()?;
                Some(Happened::Text(text))
            }),
            handler(|event, heard| {
                let event = event.dyn_into::<CloseEvent>().ok()?;
                let mut reason = format!("closed, code {}", event.code());
                if !event.reason().is_empty() {
                    reason = format!("{reason}: {}", event.reason());
                }
                Some(Happened::Closed {
                    reason,
                    heard: heard.get(),
                })
            }),
        ];
        let [open, message, close] = &handlers;
        socket.set_onopen(Some(open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(close.as_ref().unchecked_ref()));
        self.link = Link::Up(Socket {
            socket,
            waiting: Vec::new(),
            handlers,
        });
        Ok(())
    }

    /// Silences and closes the current socket, if any (the link is then down).
    fn close(&mut self) {
        if let Link::Up(up) = std::mem::replace(&mut self.link, Link::Down) {
            up.socket.set_onopen(None);
            up.socket.set_onmessage(None);
            up.socket.set_onclose(None);
            let _ = up.socket.close();
            drop(up.handlers);
        }
    }

    /// What `event` means, or `None` for a straggler from an earlier connection.
    pub fn receive(&mut self, event: RelayEvent) -> Option<Update> {
        if event.generation != self.generation {
            return None;
        }
        Some(match event.what {
            Happened::Open => {
                if let Link::Up(up) = &mut self.link {
                    let _ = up.flush();
                }
                return None;
            }
            Happened::Text(text) => {
                self.backoff.connected();
                Update::Frame(text)
            }
            Happened::Closed { reason, heard } => self.lost(reason, heard),
            Happened::RetryDue => match self.open() {
                Ok(()) => Update::Opening,
                Err(lost) => lost,
            },
        })
    }

    /// The connection is gone: schedules the next attempt unless told not to.
    fn lost(&mut self, reason: String, heard: bool) -> Update {
        // Whatever the dead connection still delivers is void.
        self.close();
        self.generation += 1;
        let retry_ms = match self.reconnect {
            Reconnect::Never => {
                self.link = Link::Down;
                None
            }
            Reconnect::WithBackoff => {
                self.link = Link::Retrying;
                let delay = self.backoff.next_delay_ms();
                let (post, generation) = (self.post.clone(), self.generation);
                wasm_bindgen_futures::spawn_local(async move {
                    TimeoutFuture::new(delay).await;
                    post(RelayEvent {
                        generation,
                        what: Happened::RetryDue,
                    });
                });
                Some(delay)
            }
        };
        Update::Lost {
            reason,
            heard,
            retry_ms,
        }
    }

    /// Sends one frame's text; one sent while the connection is still opening goes out once
    /// it is open.
    pub fn send(&mut self, text: String) -> Result<(), String> {
        let Link::Up(up) = &mut self.link else {
            return Err("not connected to the relay".into());
        };
        if up.socket.ready_state() == WebSocket::CONNECTING {
            up.waiting.push(text);
            return Ok(());
        }
        up.flush()?;
        up.socket.send_with_str(&text).map_err(|e| format!("{e:?}"))
    }
}
