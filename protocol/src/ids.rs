//! Validated newtypes for the names on the wire. Invalid values cannot be constructed,
//! so code holding a `RoomName` or a `PeerId` never checks them again.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A peer's id, assigned by the relay per connection and never taken from a client.
///
/// On the wire it is a JSON number in `1..=2^53-1`, so JavaScript reads it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct PeerId(u64);

impl PeerId {
    /// The largest id, JavaScript's `Number.MAX_SAFE_INTEGER`.
    pub const MAX: u64 = (1 << 53) - 1;

    /// Validates `id`: it must be in `1..=PeerId::MAX`.
    pub fn new(id: u64) -> Result<Self, InvalidPeerId> {
        if (1..=Self::MAX).contains(&id) {
            Ok(Self(id))
        } else {
            Err(InvalidPeerId(id))
        }
    }

    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for PeerId {
    type Error = InvalidPeerId;
    fn try_from(id: u64) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<PeerId> for u64 {
    fn from(id: PeerId) -> u64 {
        id.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A number outside `1..=PeerId::MAX` was offered as a peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPeerId(pub u64);

impl fmt::Display for InvalidPeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer id {} is outside 1..={}", self.0, PeerId::MAX)
    }
}

impl std::error::Error for InvalidPeerId {}

/// A room's name: 1 to [`RoomName::MAX_CHARS`] characters, none of them a control character.
///
/// Names are compared exactly: `Lobby` and `lobby` are two rooms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct RoomName(String);

impl RoomName {
    /// The longest name, in characters (Unicode scalar values).
    pub const MAX_CHARS: usize = 64;

    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidRoomName> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidRoomName::Empty);
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(InvalidRoomName::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidRoomName::ControlCharacter);
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomName {
    type Error = InvalidRoomName;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl Serialize for RoomName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a valid [`RoomName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidRoomName {
    /// The name is empty.
    Empty,
    /// The name is longer than [`RoomName::MAX_CHARS`] characters.
    TooLong,
    /// The name contains a control character (such as a newline).
    ControlCharacter,
}

impl fmt::Display for InvalidRoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("room name is empty"),
            Self::TooLong => write!(
                f,
                "room name is longer than {} characters",
                RoomName::MAX_CHARS
            ),
            Self::ControlCharacter => f.write_str("room name contains a control character"),
        }
    }
}

impl std::error::Error for InvalidRoomName {}

/// A session's resume key: 32 lowercase hex digits (128 bits), drawn by the relay from a
/// CSPRNG. A secret: its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ResumeKey(String);

impl ResumeKey {
    /// The key's length in hex digits.
    pub const LEN: usize = 32;

    /// Validates `key`: [`ResumeKey::LEN`] lowercase hex digits.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidResumeKey> {
        let key = key.into();
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if key.len() == Self::LEN && key.as_bytes().iter().all(hex) {
            Ok(Self(key))
        } else {
            Err(InvalidResumeKey)
        }
    }

    /// The key as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResumeKey {
    type Error = InvalidResumeKey;
    fn try_from(key: String) -> Result<Self, Self::Error> {
        Self::new(key)
    }
}

impl Serialize for ResumeKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeKey(..)")
    }
}

/// A resume key that is not 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidResumeKey;

impl fmt::Display for InvalidResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a resume key is 32 lowercase hex digits")
    }
}

impl std::error::Error for InvalidResumeKey {}
