//! Decoding client frames, and telling a client precisely why one was refused.

use serde_json::value::RawValue;
use serde_json::Value;
use signalroom_protocol::{ErrorCode, Request, RoomName};

/// A refused frame: the code and the human sentence the client gets back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// Stable code.
    pub code: ErrorCode,
    /// Explanation.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Decodes one text frame. `data` stays a borrowed, unparsed slice of `text`.
pub fn decode(text: &str) -> Result<Request<&RawValue>, Refusal> {
    serde_json::from_str(text).map_err(|error| diagnose(text, &error))
}

/// Works out which rule a frame broke. Only refused frames come here, so it may parse again.
fn diagnose(text: &str, error: &serde_json::Error) -> Refusal {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(syntax) => return Refusal::new(ErrorCode::MalformedJson, syntax.to_string()),
    };
    let kind = value.get("type").and_then(Value::as_str);
    match kind {
        None => Refusal::new(
            ErrorCode::InvalidFrame,
            "a frame is a JSON object with a string field \"type\"",
        ),
        Some("create_or_join" | "message" | "leave") => {
            if let (Some("create_or_join"), Some(Value::String(room))) = (kind, value.get("room")) {
                if let Err(invalid) = RoomName::new(room.as_str()) {
                    return Refusal::new(ErrorCode::InvalidRoom, invalid.to_string());
                }
            }
            Refusal::new(ErrorCode::InvalidFrame, error.to_string())
        }
        Some(other) => Refusal::new(
            ErrorCode::UnknownType,
            format!("unknown frame type {other:?}; expected create_or_join, message or leave"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode(text).expect_err(text).code
    }

    #[test]
    fn each_mistake_has_its_code() {
        assert_eq!(code("{"), ErrorCode::MalformedJson);
        assert_eq!(code("hello"), ErrorCode::MalformedJson);
        assert_eq!(code("[1]"), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"create_or_join"}"#),
            ErrorCode::InvalidFrame
        );
        assert_eq!(
            code(r#"{"type":"create_or_join","room":""}"#),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            code(r#"{"type":"message","to":1}"#),
            ErrorCode::InvalidFrame
        );
        assert_eq!(
            code(r#"{"type":"message","data":1,"to":-1}"#),
            ErrorCode::InvalidFrame
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let deep = "[".repeat(200_000);
        assert_eq!(code(&deep), ErrorCode::MalformedJson);
        let frame = format!(r#"{{"type":"message","data":{deep}"#);
        assert_eq!(code(&frame), ErrorCode::MalformedJson);
    }
}
