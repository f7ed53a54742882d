//! What crosses Redis, typed: the keys, a room's channel, the events published on it
//! ([`BusEvent`]) and the entries of a relay's registry ([`RegistryEntry`]), each with its
//! codec. Nothing else in the backend formats or splits these strings.

use std::fmt::Write;

use signalroom_protocol::{PeerId, RoomName};

use crate::rooms::sessions::{Digest, Ending};

/// Every key and channel starts with this.
const PREFIX: &str = "signalroom";

// The relays' own keys share one hash tag, so in a cluster they sit in one slot and go
// together in a script or a pipeline; each room's keys and channel share the room's tag.
pub(super) const EPOCH_KEY: &str = "{signalroom}:epoch";
pub(super) const HOLD_KEY: &str = "{signalroom}:hold";
pub(super) const RELAYS_KEY: &str = "{signalroom}:relays";
pub(super) const PEER_IDS_KEY: &str = "{signalroom}:peer-ids";
pub(super) const RELAY_IDS_KEY: &str = "{signalroom}:relay-ids";
/// The hash tag of the relays' own keys.
pub(super) const RELAYS_TAG: &str = "signalroom";

pub(super) fn relay_members_key(relay: u64) -> String {
    format!("{{{PREFIX}}}:relay:{relay}:members")
}

pub(super) fn relay_alive_key(relay: u64) -> String {
    format!("{{{PREFIX}}}:relay:{relay}:alive")
}

/// The record of `peer`'s resumable session ([`SessionRecord`]), so that any relay can
/// take a resume for it. In the peer's own hash slot.
pub(super) fn session_key(peer: PeerId) -> String {
    format!("{PREFIX}:session:{{{peer}}}")
}

/// The channel of room `name` (its members' key is this plus `:members`). The name is in
/// hex so that no character of it can end the key's hash tag early.
pub(super) fn channel(name: &RoomName) -> String {
    // Once per message for members elsewhere: a table, not the formatter.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(PREFIX.len() + 8 + 2 * name.as_str().len());
    out.push_str(PREFIX);
    out.push_str(":room:{");
    for byte in name.as_str().bytes() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte % 16)]));
    }
    out.push('}');
    out
}

/// The room whose channel is `channel`, if it is one.
pub(super) fn room_of(channel: &str) -> Option<RoomName> {
    let hex = channel
        .strip_prefix(PREFIX)?
        .strip_prefix(":room:{")?
        .strip_suffix('}')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    RoomName::new(String::from_utf8(bytes).ok()?).ok()
}

pub(super) fn members_key(channel: &str) -> String {
    format!("{channel}:members")
}

/// The hash tag of `key`: what stands between its first `{` and the next `}`.
pub(super) fn hash_tag(key: &str) -> &str {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or(key, |(tag, _)| tag)
}

/// One event of a room's channel. The Lua scripts publish `Joined` and `Left`; relays
/// publish `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BusEvent<'a> {
    /// `J peer before,...`: `peer` entered, finding `before` inside.
    Joined { peer: PeerId, before: Vec<PeerId> },
    /// `L peer`: `peer` left.
    Left { peer: PeerId },
    /// `M relay from to frame` (`-` for no `to`): a message from `from`, sent by relay
    /// `relay`, already framed as members receive it.
    Message {
        relay: u64,
        from: PeerId,
        to: Option<PeerId>,
        frame: &'a str,
    },
    /// `N relay peer frame`: an `away` or `back` event about `peer` (framed as clients
    /// receive it), from relay `relay`, for the resumable members elsewhere.
    Notice {
        relay: u64,
        peer: PeerId,
        frame: &'a str,
    },
    /// `H peer from to members,...`: `peer`'s session moves from relay `from` to relay
    /// `to` (published by claim.lua), the room's members being `members` (`peer` too).
    /// From here on, `from` delivers nothing more to it: what follows reaches `to`.
    Handover {
        peer: PeerId,
        from: u64,
        to: u64,
        members: Vec<PeerId>,
    },
    /// `F peer from`: relay `from` applied the `H` that moved `peer`'s seat away from it:
    /// what it publishes from here on was not delivered to `peer` there. (What it
    /// published between the `H` and this was, and is in the session's retention.)
    Fence { peer: PeerId, from: u64 },
    /// `T peer to received sent LEN:FRAME...`, or `T peer to -`: what relay `to` needs to
    /// resume `peer`'s session, sent by the relay it left once its connection there is
    /// gone (`None`: it cannot be resumed).
    Transfer {
        peer: PeerId,
        to: u64,
        carried: Option<Carried<'a>>,
    },
}

/// What a session carries from one relay to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Carried<'a> {
    /// Counted frames the relay had received from the client.
    pub received: u64,
    /// Counted frames the session had been sent.
    pub sent: u64,
    /// The last of those, which the client may not have: the session's retention.
    pub frames: Vec<&'a str>,
}

impl<'a> BusEvent<'a> {
    /// Reads one event; what Redis delivers is never trusted to be well formed.
    pub(super) fn decode(text: &'a str) -> Option<Self> {
        let (kind, rest) = text.split_once(' ')?;
        match kind {
            "J" => {
                let (peer, before) = rest.split_once(' ').unwrap_or((rest, ""));
                let before = before
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(parse_peer)
                    .collect::<Option<Vec<_>>>()?;
                Some(Self::Joined {
                    peer: parse_peer(peer)?,
                    before,
                })
            }
            "L" => Some(Self::Left {
                peer: parse_peer(rest)?,
            }),
            "M" => {
                let mut parts = rest.splitn(4, ' ');
                let relay = parts.next()?.parse().ok()?;
                let from = parse_peer(parts.next()?)?;
                let to = match parts.next()? {
                    "-" => None,
                    to => Some(parse_peer(to)?),
                };
                let frame = parts.next()?;
                Some(Self::Message {
                    relay,
                    from,
                    to,
                    frame,
                })
            }
            "H" => {
                let mut parts = rest.splitn(4, ' ');
                let peer = parse_peer(parts.next()?)?;
                let from = parts.next()?.parse().ok()?;
                let to = parts.next()?.parse().ok()?;
                let members = parts
                    .next()?
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(parse_peer)
                    .collect::<Option<Vec<_>>>()?;
                Some(Self::Handover {
                    peer,
                    from,
                    to,
                    members,
                })
            }
            "N" => {
                let mut parts = rest.splitn(3, ' ');
                Some(Self::Notice {
                    relay: parts.next()?.parse().ok()?,
                    peer: parse_peer(parts.next()?)?,
                    frame: parts.next()?,
                })
            }
            "F" => {
                let (peer, from) = rest.split_once(' ')?;
                Some(Self::Fence {
                    peer: parse_peer(peer)?,
                    from: from.parse().ok()?,
                })
            }
            "T" => {
                let mut parts = rest.splitn(3, ' ');
                let peer = parse_peer(parts.next()?)?;
                let to = parts.next()?.parse().ok()?;
                let tail = parts.next()?;
                let carried = if tail == "-" {
                    None
                } else {
                    let mut parts = tail.splitn(3, ' ');
                    let received = parts.next()?.parse().ok()?;
                    let sent = parts.next()?.parse().ok()?;
                    let frames = parts.next()?;
                    let mut kept = Vec::new();
                    let mut rest = frames;
                    while !rest.is_empty() {
                        let (len, tail) = rest.split_once(':')?;
                        let len: usize = len.parse().ok()?;
                        kept.push(tail.get(..len)?);
                        rest = tail.get(len..)?;
                    }
                    Some(Carried {
                        received,
                        sent,
                        frames: kept,
                    })
                };
                Some(Self::Transfer { peer, to, carried })
            }
            _ => None,
        }
    }

    /// Writes a transfer event (`T`), as [`BusEvent::decode`] reads it.
    pub(super) fn transfer(peer: PeerId, to: u64, carried: Option<Carried<'_>>) -> String {
        let Some(carried) = carried else {
            return format!("T {peer} {to} -");
        };
        let bytes: usize = carried.frames.iter().map(|f| f.len() + 8).sum();
        let mut out = String::with_capacity(64 + bytes);
        let _ = write!(out, "T {peer} {to} {} {} ", carried.received, carried.sent);
        for frame in carried.frames {
            push_event(&mut out, frame);
        }
        out
    }

    /// Writes the event as [`BusEvent::decode`] reads it. The relay itself writes message
    /// heads ([`BusEvent::message_head`]), fences and transfers; the scripts the rest.
    pub(super) fn encode(&self, out: &mut String) {
        match self {
            Self::Joined { peer, before } => {
                let _ = write!(out, "J {peer} ");
                for (i, p) in before.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{p}");
                }
            }
            Self::Left { peer } => {
                let _ = write!(out, "L {peer}");
            }
            Self::Message {
                relay,
                from,
                to,
                frame,
            } => {
                Self::message_head(out, *relay, *from, *to);
                out.push_str(frame);
            }
            Self::Handover {
                peer,
                from,
                to,
                members,
            } => {
                let members: Vec<String> = members.iter().map(PeerId::to_string).collect();
                let _ = write!(out, "H {peer} {from} {to} {}", members.join(","));
            }
            Self::Notice { relay, peer, frame } => {
                let _ = write!(out, "N {relay} {peer} {frame}");
            }
            Self::Fence { peer, from } => {
                let _ = write!(out, "F {peer} {from}");
            }
            Self::Transfer { peer, to, carried } => {
                out.push_str(&Self::transfer(*peer, *to, carried.clone()));
            }
        }
    }

    /// Writes a message event's head (`M relay from to `), after which its frame follows.
    pub(super) fn message_head(out: &mut String, relay: u64, from: PeerId, to: Option<PeerId>) {
        let _ = match to {
            Some(to) => write!(out, "M {relay} {from} {to} "),
            None => write!(out, "M {relay} {from} - "),
        };
    }
}

fn parse_peer(text: &str) -> Option<PeerId> {
    text.parse::<u64>().ok().and_then(|n| PeerId::new(n).ok())
}

/// A member's entry in its relay's registry: the peer and its room.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RegistryEntry {
    pub peer: PeerId,
    pub room: RoomName,
}

impl RegistryEntry {
    /// `peer channel`.
    pub(super) fn encode(&self) -> String {
        format!("{} {}", self.peer, channel(&self.room))
    }

    pub(super) fn decode(text: &str) -> Option<Self> {
        let (peer, channel) = text.split_once(' ')?;
        Some(Self {
            peer: parse_peer(peer)?,
            room: room_of(channel)?,
        })
    }
}

/// What Redis keeps of a resumable session ([`session_key`]): where it lives and its
/// key's digest, or, for a while after it ended, how it ended.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum SessionRecord {
    /// `S relay digest channel`: on relay `relay`, in `room`.
    Live {
        relay: u64,
        digest: Digest,
        room: RoomName,
    },
    /// `E digest` (the window ended) or `X digest` (its frames outgrew the buffer).
    Ended { how: Ending, digest: Digest },
}

impl SessionRecord {
    /// How a live record on relay `relay` starts.
    pub(super) fn live_prefix(relay: u64) -> String {
        format!("S {relay} ")
    }

    pub(super) fn encode(&self) -> String {
        match self {
            Self::Live {
                relay,
                digest,
                room,
            } => format!("S {relay} {} {}", hex(digest), channel(room)),
            Self::Ended { how, digest } => {
                let tag = match how {
                    Ending::Expired => 'E',
                    Ending::Lost => 'X',
                };
                format!("{tag} {}", hex(digest))
            }
        }
    }

    pub(super) fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let record = match parts.next()? {
            "S" => Self::Live {
                relay: parts.next()?.parse().ok()?,
                digest: unhex(parts.next()?)?,
                room: room_of(parts.next()?)?,
            },
            tag @ ("E" | "X") => Self::Ended {
                how: if tag == "E" {
                    Ending::Expired
                } else {
                    Ending::Lost
                },
                digest: unhex(parts.next()?)?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(record)
    }
}

fn hex(digest: &Digest) -> String {
    digest.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Digest> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Digest(bytes))
}

/// Appends one event to a published batch of them: `LEN:EVENT`, the length in bytes.
pub(super) fn push_event(events: &mut String, event: &str) {
    let _ = write!(events, "{}:", event.len());
    events.push_str(event);
}

/// The events of a published payload (see [`push_event`]); a payload that is not such a
/// batch is one event by itself (the scripts publish those).
pub(super) fn events(payload: &str) -> impl Iterator<Item = &str> {
    let mut rest = payload;
    let batched = payload.starts_with(|c: char| c.is_ascii_digit());
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if !batched {
            return Some(std::mem::take(&mut rest));
        }
        let (len, tail) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let event = tail.get(..len)?;
        rest = &tail[len..];
        Some(event)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u64) -> PeerId {
        PeerId::new(n).expect("a valid id")
    }

    #[test]
    fn every_event_comes_back_as_it_was_encoded() {
        let room = RoomName::new("a room: {é}").expect("a valid name");
        let samples = [
            BusEvent::Joined {
                peer: peer(7),
                before: vec![peer(1), peer(2)],
            },
            BusEvent::Joined {
                peer: peer(3),
                before: vec![],
            },
            BusEvent::Left { peer: peer(12) },
            BusEvent::Message {
                relay: 3,
                from: peer(1),
                to: None,
                frame: "{\"a\":\"1:2 x\"}",
            },
            BusEvent::Message {
                relay: 3,
                from: peer(1),
                to: Some(peer(9)),
                frame: "[\"é\\n9:\"]",
            },
        ];
        let samples = samples.into_iter().chain([
            BusEvent::Handover {
                peer: peer(4),
                from: 1,
                to: 2,
                members: vec![peer(3), peer(4)],
            },
            BusEvent::Notice {
                relay: 2,
                peer: peer(4),
                frame: "{\"type\":\"away\",\"room\":\"a b\",\"peer\":4}",
            },
            BusEvent::Fence {
                peer: peer(4),
                from: 1,
            },
            BusEvent::Transfer {
                peer: peer(4),
                to: 2,
                carried: None,
            },
            BusEvent::Transfer {
                peer: peer(4),
                to: 2,
                carried: Some(Carried {
                    received: 17,
                    sent: 40,
                    frames: vec!["{\"a\":\"1:2 x\"}", "", "[\"é\"]"],
                }),
            },
            BusEvent::Transfer {
                peer: peer(4),
                to: 2,
                carried: Some(Carried {
                    received: 0,
                    sent: 0,
                    frames: vec![],
                }),
            },
        ]);
        for event in samples {
            // Each variant is named here, so a new one cannot go untested.
            match &event {
                BusEvent::Joined { .. }
                | BusEvent::Left { .. }
                | BusEvent::Message { .. }
                | BusEvent::Notice { .. }
                | BusEvent::Handover { .. }
                | BusEvent::Fence { .. }
                | BusEvent::Transfer { .. } => {}
            }
            let mut text = String::new();
            event.encode(&mut text);
            assert_eq!(BusEvent::decode(&text), Some(event), "{text}");
        }
        let entry = RegistryEntry {
            peer: peer(5),
            room,
        };
        assert_eq!(RegistryEntry::decode(&entry.encode()), Some(entry));
    }

    #[test]
    fn a_session_record_comes_back_as_it_was_written() {
        let digest = Digest([0xa5; 32]);
        let room = RoomName::new("a room: {é}").expect("a valid name");
        for record in [
            SessionRecord::Live {
                relay: 12,
                digest,
                room,
            },
            SessionRecord::Ended {
                how: Ending::Expired,
                digest,
            },
            SessionRecord::Ended {
                how: Ending::Lost,
                digest,
            },
        ] {
            let text = record.encode();
            assert!(SessionRecord::decode(&text) == Some(record), "{text}");
        }
        let live = SessionRecord::Live {
            relay: 12,
            digest,
            room: RoomName::new("r").expect("a valid name"),
        };
        assert!(live.encode().starts_with(&SessionRecord::live_prefix(12)));
        assert!(!live.encode().starts_with(&SessionRecord::live_prefix(1)));
        for junk in ["", "S 1 00 x", "E", "E 0", "Q 00", "S x y z"] {
            assert!(SessionRecord::decode(junk).is_none(), "{junk:?}");
        }
        assert_eq!(session_key(peer(9)), "signalroom:session:{9}");
    }

    #[test]
    fn what_the_scripts_publish_reads_as_events() {
        // join.lua, rejoin.lua and leave.lua write these by hand.
        assert_eq!(
            BusEvent::decode("J 7 1,2"),
            Some(BusEvent::Joined {
                peer: peer(7),
                before: vec![peer(1), peer(2)]
            })
        );
        assert_eq!(
            BusEvent::decode("J 7 "),
            Some(BusEvent::Joined {
                peer: peer(7),
                before: vec![]
            })
        );
        assert_eq!(
            BusEvent::decode("L 4"),
            Some(BusEvent::Left { peer: peer(4) })
        );
        for junk in ["", "J", "J x", "L 0", "M 1 2", "Q 1", "J 7 1,,x"] {
            assert_eq!(BusEvent::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn a_rooms_channel_names_it_whatever_it_holds() {
        for name in ["lobby", "}{", "ü ß {x}", "a:b"] {
            let room = RoomName::new(name).expect("a valid name");
            let channel = channel(&room);
            assert_eq!(room_of(&channel), Some(room));
            assert_eq!(hash_tag(&channel).len(), 2 * name.len());
        }
        assert_eq!(room_of("signalroom:room:{6}"), None);
        assert_eq!(room_of("other:{61}"), None);
    }

    #[test]
    fn batched_events_come_apart_whole_whatever_they_hold() {
        let single = [
            "J 7 1,2",
            "M 3 1 - {\"a\":\"1:2 x\"}",
            "M 3 1 - [\"é\\n9:\"]",
        ];
        let mut batch = String::new();
        for event in single {
            push_event(&mut batch, event);
        }
        assert_eq!(events(&batch).collect::<Vec<_>>(), single);
        // What the scripts publish is one event.
        assert_eq!(events("L 12").collect::<Vec<_>>(), ["L 12"]);
        // A cut batch yields what is whole and stops.
        assert_eq!(events(&batch[..batch.len() - 1]).count(), 2);
    }
}
