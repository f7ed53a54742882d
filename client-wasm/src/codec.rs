//! Frames to and from text, through the browser's own JSON and serde-wasm-bindgen, so no
//! JSON library ships in the WASM.

use serde::de::IgnoredAny;
use serde::Serialize;
use signalroom_protocol::{Event, PeerId, Signal};
use wasm_bindgen::JsValue;

/// A relay frame as the page understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A frame whose data, if any, is a [`Signal`].
    Event(Event<Signal>),
    /// A message whose data is not a [`Signal`] (another kind of client sent it).
    Foreign {
        /// Who sent it.
        from: PeerId,
    },
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn describe(error: impl Into<JsValue>) -> DecodeError {
    let error: JsValue = error.into();
    DecodeError(
        js_sys::Error::from(error.clone())
            .message()
            .as_string()
            .or_else(|| error.as_string())
            .unwrap_or_else(|| "unreadable frame".into()),
    )
}

/// Serializes any frame to the exact text a native serializer would write.
pub fn encode<T: Serialize>(frame: &T) -> String {
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    frame
        .serialize(&serializer)
        .ok()
        .and_then(|value| js_sys::JSON::stringify(&value).ok())
        .and_then(|text| text.as_string())
        // Our own types always serialize; an empty frame would be refused, not misread.
        .unwrap_or_default()
}

/// Parses a relay frame.
pub fn decode(text: &str) -> Result<Incoming, DecodeError> {
    let value = js_sys::JSON::parse(text).map_err(describe)?;
    match serde_wasm_bindgen::from_value::<Event<Signal>>(value.clone()) {
        Ok(event) => Ok(Incoming::Event(event)),
        Err(error) => match serde_wasm_bindgen::from_value::<Event<IgnoredAny>>(value) {
            Ok(Event::Message { from, .. }) => Ok(Incoming::Foreign { from }),
            _ => Err(describe(error)),
        },
    }
}
