//! The signalroom wire protocol, version [`PROTOCOL_VERSION`].
//!
//! A client opens a WebSocket to the relay at `GET /ws` and exchanges one JSON object per
//! text frame, tagged by `"type"` in snake_case. [`Request`]s go to the relay; [`Event`]s
//! come from it. Receivers ignore fields they do not know. `PROTOCOL.md` at the repository
//! root walks through every frame with examples; the examples are the golden vectors in
//! `protocol/golden/`, which this crate's tests and the browser client's tests both check.
//! A relay that requires room tokens takes one as `GET /ws?token=JWT` and answers a missing
//! or invalid one with HTTP 401; a valid one for another room gets
//! [`ErrorCode::Forbidden`] on `create_or_join`.
//!
//! Rooms: the first member of a room gets [`Event::Created`]; each later one gets
//! [`Event::Joined`] while the members inside get [`Event::Join`]; past the relay's capacity
//! (two by default) a client gets [`Event::Full`] and stays outside. A connection is in at
//! most one room: `create_or_join` while inside one is refused with
//! [`ErrorCode::AlreadyInRoom`]; send `leave` first. When a member leaves or drops, those
//! remaining get [`Event::Left`]; an empty room ceases to exist.
//!
//! Messages: a `message` goes to the other members of the sender's room (or only to `to`),
//! never back to the sender and never outside the room. The relay stamps it with `from`,
//! the sender's relay-assigned [`PeerId`]. What `data` holds is up to the peers; the
//! reference page sends a [`Signal`].
//!
//! Sessions: a client that connects to `GET /ws?resume` gets, with `created` or `joined`, a
//! [`Resumable`]: a key and a window. Should its connection drop without a close, it
//! connects again within the window and sends [`Request::Resume`] first: it is the same
//! peer in the same seat, and what it missed follows [`Event::Resumed`]. Each side counts
//! the *counted* frames it receives (every text frame but `ack`, `resume` and `resumed`)
//! and says so with `ack` now and then; each keeps what it sent until the other's count
//! covers it, and sends again, after a resume, what the other's count does not. The room
//! meanwhile sees no `left` and no `join`; resumable members get [`Event::Away`] and
//! [`Event::Back`].
//!
//! Errors: a refused frame gets [`Event::Error`] with a stable [`ErrorCode`]; the connection
//! stays usable.
//!
//! This crate depends on nothing but serde and builds for `wasm32-unknown-unknown`.

pub mod call;
mod frames;
mod ids;
pub mod session;
mod signal;

pub use frames::{
    message_json, push_decimal, write_message_json, ErrorCode, Event, MissingField, Request,
    Resumable,
};
pub use ids::{InvalidPeerId, InvalidResumeKey, InvalidRoomName, PeerId, ResumeKey, RoomName};
pub use signal::{IceServer, SdpType, Signal};

/// The protocol's version.
///
/// Additive changes (a new optional field, a new error code, a new event a client may
/// ignore) keep the version. A change that an existing peer would misread (a renamed or
/// removed field, a changed meaning) bumps it, and the relay then serves the new version at
/// its own path (`/ws/v2`) beside the old one for as long as old clients are around.
pub const PROTOCOL_VERSION: u32 = 1;

/// The query parameter of `/ws` that makes a connection resumable: `GET /ws?resume`.
pub const RESUME_PARAM: &str = "resume";

/// The WebSocket path of this version.
pub const WS_PATH: &str = "ws";

/// Canonical examples of every frame, one JSON object per line, in the exact form a
/// serializer of this crate writes them. `PROTOCOL.md` quotes them; tests on both sides of
/// the wire check them.
pub mod golden {
    /// Every [`Request`](crate::Request), with [`Signal`](crate::Signal) data.
    pub const REQUESTS: &str = include_str!("../golden/requests.jsonl");
    /// Every [`Event`](crate::Event), with [`Signal`](crate::Signal) data.
    pub const EVENTS: &str = include_str!("../golden/events.jsonl");
}
