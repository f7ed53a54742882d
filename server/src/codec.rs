//! Decoding client frames, and telling a client precisely why one was refused.

use serde_json::Value;
use signalroom_protocol::{ErrorCode, PeerId, Request, RoomName};

use crate::json::{self, RawJson};

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
pub fn decode(text: &str) -> Result<Request<RawJson<'_>>, Refusal> {
    if let Some(message) = plain_message(text) {
        return Ok(message);
    }
    serde_json::from_str(text).map_err(|error| diagnose(text, &error))
}

/// The frame nearly every client sends, `{"type":"message","data":...}` or
/// `{"type":"message","data":...,"to":7}` as serde writes them: only `data` and `to` are
/// left to check. Any other spelling, and anything the check cannot vouch for, takes the
/// general path, which accepts exactly the same frames.
fn plain_message(text: &str) -> Option<Request<RawJson<'_>>> {
    let (data, rest) = RawJson::split_first(text.strip_prefix(r#"{"type":"message","data":"#)?)?;
    // A null `data` is refused, in the general path's words.
    if data.get() == "null" {
        return None;
    }
    let rest = json::trim_start(rest);
    let to = match rest.strip_prefix(r#","to":"#) {
        None if rest == "}" => None,
        None => return None,
        Some(to) => Some(peer_id(to.strip_suffix('}')?)?),
    };
    Some(Request::Message { data, to })
}

/// A peer id written plainly in decimal, as serde writes one.
fn peer_id(digits: &str) -> Option<PeerId> {
    let plain = digits.len() <= 16
        && digits.bytes().all(|d| d.is_ascii_digit())
        && !digits.starts_with('0');
    if !plain {
        return None;
    }
    PeerId::new(digits.parse().ok()?).ok()
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
    use serde_json::value::RawValue;

    /// A request as text, `data` as its JSON whatever type holds it.
    fn shown<D: std::fmt::Debug>(request: &Request<D>, json: impl Fn(&D) -> &str) -> String {
        match request {
            Request::Message { data, to } => {
                format!("Message {{ data: {}, to: {to:?} }}", json(data))
            }
            other => format!("{other:?}"),
        }
    }

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
    fn the_plain_message_shortcut_decodes_as_the_general_path_does() {
        for text in [
            r#"{"type":"message","data":"x"}"#,
            r#"{"type":"message","data": {"sdp":"v=0\r\n","n":[1,2.5e3,true]} }"#,
            r#"{"type":"message","data":"\u00e9\"}"}"#,
            r#"{"type":"message","data":"x","to":2}"#,
            r#"{"type":"message","data":{"sdp":"v=0\r\n"} ,"to":9007199254740991}"#,
            r#"{"type":"message","data":"x","to":9007199254740992}"#,
            r#"{"type":"message","data":"x","to":0}"#,
            r#"{"type":"message","data":"x","to":01}"#,
            r#"{"type":"message","data":"x","to":+1}"#,
            r#"{"type":"message","data":"x","to":null}"#,
            r#"{"type":"message","data":"x","to":1,"to":2}"#,
            r#"{"type":"message","data":"x","other":1}"#,
            r#"{"type":"message","data":1,"data":2}"#,
            r#"{"type":"message","data":null}"#,
            r#"{"type":"message","data":}"#,
            r#"{"type":"message","data":"x"} "#,
            r#"{"type":"message","data":"x"}}"#,
            "{\"type\":\"message\",\"data\":\"\u{1}\"}",
        ] {
            let general: Result<Request<&RawValue>, _> = serde_json::from_str(text);
            match (decode(text), general) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(shown(&ours, |d| d.get()), shown(&theirs, |d| d.get()));
                }
                (Err(_), Err(_)) => {}
                (ours, theirs) => panic!("{text}: {ours:?} but serde says {theirs:?}"),
            }
        }
        assert!(plain_message(r#"{"type":"message","data":[1]}"#).is_some());
        assert!(plain_message(r#"{"type":"message","data":[1],"to":3}"#).is_some());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let deep = "[".repeat(200_000);
        assert_eq!(code(&deep), ErrorCode::MalformedJson);
        let frame = format!(r#"{{"type":"message","data":{deep}"#);
        assert_eq!(code(&frame), ErrorCode::MalformedJson);
    }
}
