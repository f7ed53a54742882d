//! The transport: one WebSocket to the relay at a time, opened again with backoff when it
//! drops. It knows nothing of the page: what happens on a connection becomes a
//! [`RelayEvent`] handed to the callback it was made with; the page's event loop gives
//! each one back to [`Relay::receive`], which drops stragglers from an earlier connection
//! and says what the event means ([`Update`]).

use std::rc::Rc;

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::Message;
use gloo_timers::future::TimeoutFuture;
use signalroom_protocol::session::Backoff;

/// Something that happened on a relay connection, for [`Relay::receive`]. Opaque: it is
/// tagged with the connection it came from.
#[derive(Debug)]
pub struct RelayEvent {
    generation: u32,
    what: Happened,
}

#[derive(Debug)]
enum Happened {
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

enum Link {
    /// A connection is open or opening: its sending half.
    Up(SplitSink<WebSocket, Message>),
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
        self.generation += 1;
        let generation = self.generation;
        let socket = match WebSocket::open(&self.url) {
            Ok(socket) => socket,
            Err(error) => return Err(self.lost(error.to_string(), false)),
        };
        let (sink, mut stream) = socket.split();
        let post = self.post.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut reason = String::from("connection closed");
            let mut heard = false;
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        heard = true;
                        post(RelayEvent {
                            generation,
                            what: Happened::Text(text),
                        });
                    }
                    Ok(Message::Bytes(_)) => heard = true,
                    Err(error) => {
                        reason = error.to_string();
                        break;
                    }
                }
            }
            post(RelayEvent {
                generation,
                what: Happened::Closed { reason, heard },
            });
        });
        self.link = Link::Up(sink);
        Ok(())
    }

    /// What `event` means, or `None` for a straggler from an earlier connection.
    pub fn receive(&mut self, event: RelayEvent) -> Option<Update> {
        if event.generation != self.generation {
            return None;
        }
        Some(match event.what {
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

    /// Sends one frame's text; waits while the connection is still opening.
    pub async fn send(&mut self, text: String) -> Result<(), String> {
        let Link::Up(sink) = &mut self.link else {
            return Err("not connected to the relay".into());
        };
        sink.send(Message::Text(text))
            .await
            .map_err(|e| e.to_string())
    }
}
