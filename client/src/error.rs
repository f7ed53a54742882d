//! What can go wrong, for a program to match on.

use signalroom_protocol::{ErrorCode, RoomName};

/// Why a call on a [`Client`](crate::Client) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay's address is not a `ws://` or `wss://` URL.
    #[error("invalid relay URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A certificate authority given for `wss://` could not be read.
    #[error("invalid certificate authority: {0}")]
    InvalidCa(String),
    /// The relay could not be reached, or the WebSocket handshake failed.
    #[error("could not reach the relay: {0}")]
    Unreachable(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The relay answered the upgrade with an HTTP error: 401 for a missing or invalid
    /// room token, 403 for an origin it does not allow, 503 while it drains or is full.
    #[error("the relay refused the connection: HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The relay's explanation, if it gave one.
        body: String,
    },
    /// The room is at capacity: the client is not in it.
    #[error("room {0} is full")]
    Full(RoomName),
    /// The relay refused a request; `code` is stable, `message` is for humans.
    #[error("the relay refused: {message} ({code:?})")]
    Relay {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, in words.
        message: String,
    },
    /// The client is not connected and has no session that could carry the frame later.
    #[error("not connected to the relay")]
    Disconnected,
    /// The client was closed, or gave up on the relay.
    #[error("the client is closed")]
    Closed,
    /// A frame could not be encoded as JSON.
    #[error("could not encode a frame: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    /// The relay's error code, for an error the relay sent.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Relay { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(error: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as Ws;
        match error {
            Ws::Http(response) => Self::Refused {
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .trim()
                    .to_owned(),
            },
            other => Self::Unreachable(Box::new(other)),
        }
    }
}
