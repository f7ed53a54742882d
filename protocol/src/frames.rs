//! The frames: [`Request`]s go from a client to the relay, [`Event`]s come from the relay.
//!
//! Both are generic over `D`, the type of a message's `data`. The relay uses a borrowed raw
//! JSON value so it never parses what it forwards; the reference page uses [`crate::Signal`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{IceServer, PeerId, ResumeKey, RoomName};

/// A frame a client sends to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[serde(
    try_from = "RequestRepr<D>",
    bound(deserialize = "D: Deserialize<'de>")
)]
pub enum Request<D> {
    /// Join `room`, creating it if nobody is in it (the seed's "create or join").
    CreateOrJoin {
        /// The room to enter.
        room: RoomName,
    },
    /// Relay `data` to the other members of the sender's room, or only to `to`.
    Message {
        /// Anything JSON but `null`; the relay forwards it verbatim.
        data: D,
        /// The one member to deliver to; every other member when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<PeerId>,
    },
    /// Leave the current room.
    Leave,
    /// The first frame of a resumable connection (`/ws?resume`) that takes over the
    /// session of `peer` after its connection dropped: the same id, the same seat.
    Resume {
        /// The id the session had.
        peer: PeerId,
        /// The session's current key (from `created`, `joined` or the last `resumed`).
        key: ResumeKey,
        /// How many counted frames this client received from the relay in the session.
        received: u64,
    },
    /// How many counted frames this client has received from the relay in its session:
    /// the relay forgets what it kept for a resume up to there.
    Ack {
        /// Counted frames received so far.
        received: u64,
    },
}

/// A frame the relay sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<D> {
    /// You created `room` and are its only member (the initiator).
    Created {
        /// The room you are in.
        room: RoomName,
        /// Your id.
        peer: PeerId,
        /// STUN/TURN servers the relay recommends; none means host candidates only.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
        /// How to resume this session, on a resumable connection (`/ws?resume`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resumable>,
    },
    /// You joined `room`, where `peers` already were.
    Joined {
        /// The room you are in.
        room: RoomName,
        /// Your id.
        peer: PeerId,
        /// The members who were inside before you, oldest first.
        peers: Vec<PeerId>,
        /// STUN/TURN servers the relay recommends; none means host candidates only.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
        /// How to resume this session, on a resumable connection (`/ws?resume`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resumable>,
    },
    /// `peer` joined your room.
    Join {
        /// Your room.
        room: RoomName,
        /// The newcomer.
        peer: PeerId,
    },
    /// `room` is at capacity; you are not in it.
    Full {
        /// The room you asked for.
        room: RoomName,
    },
    /// A member of your room sent you `data`.
    Message {
        /// The sender, as the relay knows it (never taken from the sender's frame).
        from: PeerId,
        /// What the sender put in its `message` frame, verbatim.
        data: D,
    },
    /// `peer` left your room, or its connection dropped.
    Left {
        /// Your room.
        room: RoomName,
        /// The member who is gone.
        peer: PeerId,
    },
    /// `peer`'s connection dropped; its session may resume within the window (sent to
    /// resumable connections only).
    Away {
        /// Your room.
        room: RoomName,
        /// The member who is away.
        peer: PeerId,
    },
    /// `peer`, away, resumed its session (sent to resumable connections only).
    Back {
        /// Your room.
        room: RoomName,
        /// The member who is back.
        peer: PeerId,
    },
    /// Your `resume` succeeded: this connection is `peer` in `room` again. The relay
    /// received `received` counted frames from you in the session (send again those after
    /// it); the counted frames you missed follow, then everything newer. Not counted.
    Resumed {
        /// Your room.
        room: RoomName,
        /// Your id, as before.
        peer: PeerId,
        /// Counted frames the relay received from you in the session.
        received: u64,
        /// How to resume next time: the key just used is spent.
        resume: Resumable,
        /// The relay that held the session died: frames either way may be missing. Both
        /// counts start again from zero (`received` is 0): drop what you kept, send nothing
        /// again, and repair what the missing frames carried (a page restarts ICE).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        incomplete: bool,
    },
    /// How many counted frames the relay has received from you in your session: forget
    /// what you kept for a resume up to there. Not counted.
    Ack {
        /// Counted frames received so far.
        received: u64,
    },
    /// Your last frame was refused; the connection stays usable.
    Error {
        /// What went wrong, stable for programs.
        code: ErrorCode,
        /// What went wrong, for humans; its wording may change.
        message: String,
    },
}

/// Why the relay refused a frame. Codes are stable; clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not JSON.
    MalformedJson,
    /// The frame is JSON but its `type` is none the relay knows.
    UnknownType,
    /// A field is missing or has the wrong type.
    InvalidFrame,
    /// The room name is empty, too long, or has a control character.
    InvalidRoom,
    /// `message` or `leave` was sent outside a room.
    NotInRoom,
    /// `create_or_join` was sent while already in a room; send `leave` first.
    AlreadyInRoom,
    /// `to` names nobody else in your room.
    UnknownPeer,
    /// A binary frame was sent; the protocol is text only.
    BinaryUnsupported,
    /// Frames came faster than the relay's rate limit; this one was dropped.
    RateLimited,
    /// The relay holds as many rooms as it may; only existing rooms can be joined.
    TooManyRooms,
    /// The relay cannot reach what it shares rooms through (other relays' Redis) just now;
    /// try again shortly.
    Unavailable,
    /// `create_or_join` named a room the connection's room token does not admit; other
    /// rooms (the token's own) can still be joined.
    Forbidden,
    /// `resume` was refused: no such session, or not this key (the relay does not say
    /// which), or this connection cannot resume. Join as a new peer.
    ResumeRefused,
    /// `resume` came after the session's window ended: the room was told `left`. Join as a
    /// new peer.
    ResumeExpired,
    /// The session ended while away because what the relay kept for it outgrew its
    /// buffer: the room was told `left`. Join as a new peer.
    ResumeLost,
    /// A code this version of the crate does not know yet (sent by a newer relay).
    #[serde(other)]
    Unknown,
}

/// What a resumable connection's client needs to resume its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumable {
    /// The key of the next resume; good once.
    pub key: ResumeKey,
    /// How long after the connection drops the session waits for a resume, in
    /// milliseconds.
    pub window_ms: u64,
}

impl ErrorCode {
    /// The code as it is on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidFrame => "invalid_frame",
            Self::InvalidRoom => "invalid_room",
            Self::NotInRoom => "not_in_room",
            Self::AlreadyInRoom => "already_in_room",
            Self::UnknownPeer => "unknown_peer",
            Self::BinaryUnsupported => "binary_unsupported",
            Self::RateLimited => "rate_limited",
            Self::TooManyRooms => "too_many_rooms",
            Self::Unavailable => "unavailable",
            Self::Forbidden => "forbidden",
            Self::ResumeRefused => "resume_refused",
            Self::ResumeExpired => "resume_expired",
            Self::ResumeLost => "resume_lost",
            Self::Unknown => "unknown",
        }
    }
}

impl ErrorCode {
    /// The code spelled `code` on the wire; [`ErrorCode::Unknown`] for a code this version
    /// does not know, as when deserializing.
    pub fn from_wire(code: &str) -> Self {
        match code {
            "malformed_json" => Self::MalformedJson,
            "unknown_type" => Self::UnknownType,
            "invalid_frame" => Self::InvalidFrame,
            "invalid_room" => Self::InvalidRoom,
            "not_in_room" => Self::NotInRoom,
            "already_in_room" => Self::AlreadyInRoom,
            "unknown_peer" => Self::UnknownPeer,
            "binary_unsupported" => Self::BinaryUnsupported,
            "rate_limited" => Self::RateLimited,
            "too_many_rooms" => Self::TooManyRooms,
            "unavailable" => Self::Unavailable,
            "forbidden" => Self::Forbidden,
            "resume_refused" => Self::ResumeRefused,
            "resume_expired" => Self::ResumeExpired,
            "resume_lost" => Self::ResumeLost,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON of `Event::Message { from, data }` for `data` that is already JSON text (a
/// relay forwarding what it never parsed), written without a serializer: a relay's hot path.
/// Byte for byte what serializing the event gives.
pub fn message_json(from: PeerId, data: &str) -> String {
    let mut json = String::with_capacity(data.len() + 48);
    write_message_json(&mut json, from, data);
    json
}

/// [`message_json`] appended to `out`, for a relay that reuses one buffer.
pub fn write_message_json(out: &mut String, from: PeerId, data: &str) {
    out.reserve(data.len() + 48);
    out.push_str(r#"{"type":"message","from":"#);
    push_decimal(out, from.get());
    out.push_str(r#","data":"#);
    out.push_str(data);
    out.push('}');
}

/// Appends `n` in decimal: `write!` through `fmt` costs several times more per message on
/// the relay, and `fmt`'s code is a good share of the page's WASM.
pub fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Every request's fields side by side. Requests are decoded through this flat form rather
/// than serde's internally tagged path, which buffers the frame and so cannot hand out a
/// borrowed raw `data`.
#[derive(Deserialize)]
struct RequestRepr<D> {
    #[serde(rename = "type")]
    kind: RequestKind,
    room: Option<RoomName>,
    data: Option<D>,
    to: Option<PeerId>,
    peer: Option<PeerId>,
    key: Option<ResumeKey>,
    received: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RequestKind {
    CreateOrJoin,
    Message,
    Leave,
    Resume,
    Ack,
}

/// A request named its type but lacked a field that type needs.
#[derive(Debug)]
pub struct MissingField(&'static str);

impl fmt::Display for MissingField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing field `{}`", self.0)
    }
}

impl<D> TryFrom<RequestRepr<D>> for Request<D> {
    type Error = MissingField;
    fn try_from(repr: RequestRepr<D>) -> Result<Self, Self::Error> {
        Ok(match repr.kind {
            RequestKind::CreateOrJoin => Request::CreateOrJoin {
                room: repr.room.ok_or(MissingField("room"))?,
            },
            RequestKind::Message => Request::Message {
                data: repr.data.ok_or(MissingField("data"))?,
                to: repr.to,
            },
            RequestKind::Leave => Request::Leave,
            RequestKind::Resume => Request::Resume {
                peer: repr.peer.ok_or(MissingField("peer"))?,
                key: repr.key.ok_or(MissingField("key"))?,
                received: repr.received.ok_or(MissingField("received"))?,
            },
            RequestKind::Ack => Request::Ack {
                received: repr.received.ok_or(MissingField("received"))?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code, listed once: the `match` names each (a new code is a compile error here
    /// until it is listed), and the same list makes the array. Here rather than in the
    /// integration tests, where `#[non_exhaustive]` would demand a wildcard arm.
    fn every_code() -> Vec<ErrorCode> {
        macro_rules! every {
            ($($code:ident),+ $(,)?) => {{
                let exhaustive = |code: ErrorCode| match code {
                    $(ErrorCode::$code => (),)+
                };
                let all = [$(ErrorCode::$code),+];
                all.into_iter().for_each(exhaustive);
                all.to_vec()
            }};
        }
        every!(
            MalformedJson,
            UnknownType,
            InvalidFrame,
            InvalidRoom,
            NotInRoom,
            AlreadyInRoom,
            UnknownPeer,
            BinaryUnsupported,
            RateLimited,
            TooManyRooms,
            Unavailable,
            Forbidden,
            ResumeRefused,
            ResumeExpired,
            ResumeLost,
            Unknown,
        )
    }

    #[test]
    fn every_code_is_spelled_alike_by_serde_by_hand_and_in_protocol_md() {
        let doc = include_str!("../../PROTOCOL.md");
        let mut spellings = std::collections::HashSet::new();
        for code in every_code() {
            let wire = code.as_str();
            assert!(spellings.insert(wire), "{wire} twice");
            let quoted = format!("\"{wire}\"");
            assert_eq!(serde_json::to_string(&code).expect("encodes"), quoted);
            assert_eq!(
                serde_json::from_str::<ErrorCode>(&quoted).expect("decodes"),
                code
            );
            assert_eq!(ErrorCode::from_wire(wire), code, "{wire}");
            if code != ErrorCode::Unknown {
                assert!(
                    doc.contains(&format!("| `{wire}` |")),
                    "PROTOCOL.md's table of codes lacks {wire}"
                );
            }
        }
    }
}
