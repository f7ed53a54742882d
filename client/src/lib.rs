//! A Rust client of the signalroom relay: join a room, exchange messages with its other
//! members, and keep going through dropped connections, for any tokio program (a bot, a
//! recorder, a test, a native WebRTC peer).
//!
//! [`connect()`] opens a WebSocket to the relay and hands back a [`Client`], to act with, and
//! [`Events`], what happens in the room. A task of the client's own owns the connection:
//! it answers the relay's pings, acknowledges what arrives, and, when the connection
//! drops, opens it again with backoff and resumes the session (the same peer id and seat,
//! nothing lost either way), or, when the session cannot resume, enters the room again as
//! a new peer. The page does exactly the same: both follow
//! [`signalroom_protocol::session`].
//!
//! ```no_run
//! use signalroom_client::{connect, Options, Update};
//! use signalroom_protocol::{Event, RoomName};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), signalroom_client::Error> {
//! let (client, mut events) = connect::<serde_json::Value>(Options::new("ws://127.0.0.1:2013")?).await?;
//! let entered = client.create_or_join(RoomName::new("lobby").expect("a room name")).await?;
//! println!("in {} as {}, with {:?}", entered.room, entered.peer, entered.peers);
//! client.send(json!({"hello": "everyone"})).await?;
//! while let Some(update) = events.next().await {
//!     if let Update::Event(Event::Message { from, data }) = update {
//!         println!("{from}: {data}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Code map: [`connect`](mod@connect) opens sockets (URL, token, `Origin`, TLS);
//! `driver` is the task that owns the connection; [`Error`] is what fails.

pub mod connect;
mod driver;
mod error;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use signalroom_protocol::{ErrorCode, Event, IceServer, PeerId, RoomName};
use tokio::sync::{mpsc, oneshot};

pub use connect::Options;
pub use error::Error;

/// Requests the client's task has not taken yet, at most; a sender waits beyond.
const COMMANDS: usize = 64;
/// Updates a program has not read yet, at most; the client stops reading the relay
/// beyond, which in time makes the relay drop it as a client that does not read.
pub(crate) const UPDATES: usize = 256;

/// What `data` a message may carry: anything JSON, such as [`serde_json::Value`] or the
/// page's [`Signal`](signalroom_protocol::Signal).
pub trait Data: Serialize + DeserializeOwned + Send + 'static {}
impl<D: Serialize + DeserializeOwned + Send + 'static> Data for D {}

/// Connects to the relay that `options` name. Fails at once if the relay cannot be
/// reached or refuses the upgrade (a bad token is [`Error::Refused`] with 401); after
/// that, a lost connection is opened again as [`Options::reconnect`] says.
pub async fn connect<D: Data>(options: Options) -> Result<(Client<D>, Events<D>), Error> {
    let socket = options.open().await?;
    let (commands, taken) = mpsc::channel(COMMANDS);
    let (updates, events) = mpsc::channel(UPDATES);
    tokio::spawn(driver::Driver::new(options, taken, updates).run(socket));
    Ok((Client { commands }, Events { updates: events }))
}

/// What a program does with the relay. Cheap to clone; the client closes its connection
/// when every clone is dropped or [`Client::close`] is called.
#[derive(Debug)]
pub struct Client<D> {
    commands: mpsc::Sender<Command<D>>,
}

impl<D> Clone for Client<D> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
        }
    }
}

/// A request to the client's task.
#[derive(Debug)]
pub(crate) enum Command<D> {
    Join(RoomName, oneshot::Sender<Result<Entered, Error>>),
    Send(Option<PeerId>, D, oneshot::Sender<Result<(), Error>>),
    Leave,
    Close(oneshot::Sender<()>),
}

/// The client is in a room: the relay's answer to `create_or_join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    /// The room.
    pub room: RoomName,
    /// The client's id in it.
    pub peer: PeerId,
    /// The members inside before the client, oldest first: none when it created the room.
    pub peers: Vec<PeerId>,
    /// STUN and TURN servers the relay recommends for calls.
    pub ice_servers: Vec<IceServer>,
    /// How long the session can be away and resume, when it can.
    pub resumable: Option<Duration>,
}

impl<D: Data> Client<D> {
    /// Enters `room`, creating it if nobody is in it, and returns the relay's answer.
    /// [`Error::Full`] when the room is at capacity; [`Error::Relay`] for a refusal (a
    /// room the token does not admit, already in a room). An `error` from the relay that
    /// arrives while this waits is taken as its answer, but for those only a message draws
    /// (`unknown_peer`, `not_in_room`), which go to [`Events`].
    pub async fn create_or_join(&self, room: RoomName) -> Result<Entered, Error> {
        let (answer, answered) = oneshot::channel();
        self.command(Command::Join(room, answer)).await?;
        answered.await.map_err(|_| Error::Closed)?
    }

    /// Sends `data` to every other member of the room. Returns once the client's task has
    /// taken it: written to the relay, or kept to go with the session's resume.
    /// [`Error::Disconnected`] when there is no connection and no session to carry it.
    pub async fn send(&self, data: D) -> Result<(), Error> {
        self.send_message(None, data).await
    }

    /// Sends `data` to `peer` alone; as [`Client::send`].
    pub async fn send_to(&self, peer: PeerId, data: D) -> Result<(), Error> {
        self.send_message(Some(peer), data).await
    }

    async fn send_message(&self, to: Option<PeerId>, data: D) -> Result<(), Error> {
        let (done, taken) = oneshot::channel();
        self.command(Command::Send(to, data, done)).await?;
        taken.await.map_err(|_| Error::Closed)?
    }

    /// Leaves the room: the others get `left` at once, and the client stays connected,
    /// outside any room.
    pub async fn leave(&self) -> Result<(), Error> {
        self.command(Command::Leave).await
    }

    /// Closes the connection (the room gets `left` at once) and ends [`Events`]. Returns
    /// when the client's task is done.
    pub async fn close(self) {
        let (done, closed) = oneshot::channel();
        if self.command(Command::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    async fn command(&self, command: Command<D>) -> Result<(), Error> {
        self.commands.send(command).await.map_err(|_| Error::Closed)
    }
}

/// What happens on the client's connection, in order. Ends when the client is closed or
/// gives up on the relay.
#[derive(Debug)]
pub struct Events<D> {
    updates: mpsc::Receiver<Update<D>>,
}

impl<D> Events<D> {
    /// The next update, or `None` once the client has ended.
    pub async fn next(&mut self) -> Option<Update<D>> {
        self.updates.recv().await
    }
}

impl<D> futures_util::Stream for Events<D> {
    type Item = Update<D>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Update<D>>> {
        self.updates.poll_recv(cx)
    }
}

/// Something that happened on the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update<D> {
    /// A frame from the relay: `join`, `left`, `away`, `back`, `message`, an `error`
    /// that answers no `create_or_join`, and the `created`, `joined` or `full` that answer
    /// the client's own rejoin. (The client keeps `ack` and `resumed` to itself.)
    Event(Event<D>),
    /// The connection dropped. The client tries again after `retry_in`, or never (`None`):
    /// [`Options::reconnect`] is off, or the relay refused the client's token or origin.
    Disconnected {
        /// Why, as far as the client can tell.
        reason: String,
        /// When the next attempt is.
        retry_in: Option<Duration>,
    },
    /// The session resumed on a new connection: the same id, the same seat, and every
    /// frame either way delivered once and in order; unless `incomplete`: the relay that
    /// held the session had died, and frames either way may be missing (a WebRTC peer
    /// restarts ICE).
    Resumed {
        /// The client's id, as before.
        peer: PeerId,
        /// Whether frames may be missing.
        incomplete: bool,
    },
    /// The session could not resume (`code` says why; `None` for a session that was not
    /// resumable): the client enters its room again as a new peer, and the relay's answer
    /// follows as an [`Update::Event`].
    Rejoining {
        /// Why the session did not resume.
        code: Option<ErrorCode>,
    },
}
