//! Frames to and from text. Decoding lets the browser's own `JSON.parse` do the parsing and
//! reads the fields off the resulting object; encoding writes JSON text directly. Neither
//! goes through a JSON library or serde's deserializers (whose buffering of internally
//! tagged enums and error messages would make up a good part of the page's WASM).

use js_sys::{Array, Reflect};
use serde::ser::{self, Serialize};
use signalroom_protocol::{
    ErrorCode, Event, IceServer, PeerId, Resumable, ResumeKey, RoomName, SdpType, Signal,
};
use wasm_bindgen::{JsCast, JsValue};

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

/// Parses a relay frame. Like serde: unknown fields are ignored, optional fields may be
/// absent or `null`, and names and ids are validated.
pub fn decode(text: &str) -> Result<Incoming, DecodeError> {
    let value = js_sys::JSON::parse(text).map_err(|error| {
        DecodeError(
            error
                .dyn_into::<js_sys::Error>()
                .map(|e| String::from(e.message()))
                .unwrap_or_else(|_| "not JSON".into()),
        )
    })?;
    let frame = Fields::of(value).ok_or_else(|| DecodeError("not a JSON object".into()))?;
    let kind = frame.field("type", as_string)?;
    let event = match kind.as_str() {
        "created" => Event::Created {
            room: frame.field("room", as_room)?,
            peer: frame.field("peer", as_peer)?,
            ice_servers: frame.defaulted("ice_servers", as_ice_servers)?,
            resume: frame.optional("resume", as_resumable)?,
        },
        "joined" => Event::Joined {
            room: frame.field("room", as_room)?,
            peer: frame.field("peer", as_peer)?,
            peers: frame.field("peers", |v| as_list(v, as_peer))?,
            ice_servers: frame.defaulted("ice_servers", as_ice_servers)?,
            resume: frame.optional("resume", as_resumable)?,
        },
        "join" => Event::Join {
            room: frame.field("room", as_room)?,
            peer: frame.field("peer", as_peer)?,
        },
        "full" => Event::Full {
            room: frame.field("room", as_room)?,
        },
        "message" => {
            let from = frame.field("from", as_peer)?;
            // Data that is not a signal is another client's business, not an error.
            match frame.field("data", |v| Some(as_signal(v)))? {
                Some(data) => Event::Message { from, data },
                None => return Ok(Incoming::Foreign { from }),
            }
        }
        "left" => Event::Left {
            room: frame.field("room", as_room)?,
            peer: frame.field("peer", as_peer)?,
        },
        "away" => Event::Away {
            room: frame.field("room", as_room)?,
            peer: frame.field("peer", as_peer)?,
        },
        "back" => Event::Back {
            room: frame.field("room", as_room)?,
            peer: frame.field("peer", as_peer)?,
        },
        "resumed" => Event::Resumed {
            room: frame.field("room", as_room)?,
            peer: frame.field("peer", as_peer)?,
            received: frame.field("received", as_count)?,
            resume: frame.field("resume", as_resumable)?,
            incomplete: frame.optional("incomplete", |v| v.as_bool())? == Some(true),
        },
        "ack" => Event::Ack {
            received: frame.field("received", as_count)?,
        },
        "error" => Event::Error {
            code: frame.field("code", |v| Some(ErrorCode::from_wire(&as_string(v)?)))?,
            message: frame.field("message", as_string)?,
        },
        _ => return Err(DecodeError(["unknown frame type `", &kind, "`"].concat())),
    };
    Ok(Incoming::Event(event))
}

/// A JSON object's fields.
struct Fields(JsValue);

impl Fields {
    fn of(value: JsValue) -> Option<Self> {
        value.is_object().then_some(Self(value))
    }

    /// The field `name`, unless it is absent. (`Reflect.get` also sees inherited properties;
    /// no field name of the protocol is one of `Object.prototype`'s.)
    fn get(&self, name: &str) -> Option<JsValue> {
        Reflect::get(&self.0, &JsValue::from_str(name))
            .ok()
            .filter(|v| !v.is_undefined())
    }

    /// The required field `name`, read by `read`.
    fn field<T>(
        &self,
        name: &str,
        read: impl FnOnce(JsValue) -> Option<T>,
    ) -> Result<T, DecodeError> {
        self.get(name).and_then(read).ok_or_else(|| invalid(name))
    }

    /// The field `name`, read by `read`; the type's default when it is absent.
    fn defaulted<T: Default>(
        &self,
        name: &str,
        read: impl FnOnce(JsValue) -> Option<T>,
    ) -> Result<T, DecodeError> {
        match self.get(name) {
            Some(value) => read(value).ok_or_else(|| invalid(name)),
            None => Ok(T::default()),
        }
    }

    /// The optional field `name` (absent or `null` is `None`), read by `read`.
    fn optional<T>(
        &self,
        name: &str,
        read: impl FnOnce(JsValue) -> Option<T>,
    ) -> Result<Option<T>, DecodeError> {
        match self.get(name) {
            Some(value) if !value.is_null() => read(value).map(Some).ok_or_else(|| invalid(name)),
            _ => Ok(None),
        }
    }
}

/// Field `name` is missing or unreadable.
#[inline(never)]
fn invalid(name: &str) -> DecodeError {
    DecodeError(["missing or invalid field `", name, "`"].concat())
}

fn as_string(value: JsValue) -> Option<String> {
    value.as_string()
}

/// A JSON number that is an integer no larger than `max`.
fn as_integer(value: JsValue, max: u64) -> Option<u64> {
    let number = value.as_f64()?;
    // Saturating: negative numbers become 0 and huge ones u64::MAX, neither equal to them.
    let integer = number as u64;
    (integer as f64 == number && integer <= max).then_some(integer)
}

fn as_peer(value: JsValue) -> Option<PeerId> {
    PeerId::new(as_integer(value, PeerId::MAX)?).ok()
}

/// A frame count: an integer JavaScript holds exactly.
fn as_count(value: JsValue) -> Option<u64> {
    as_integer(value, (1 << 53) - 1)
}

fn as_resumable(value: JsValue) -> Option<Resumable> {
    let grant = Fields::of(value)?;
    Some(Resumable {
        key: grant
            .field("key", |v| ResumeKey::new(v.as_string()?).ok())
            .ok()?,
        window_ms: grant.field("window_ms", as_count).ok()?,
    })
}

fn as_room(value: JsValue) -> Option<RoomName> {
    RoomName::new(value.as_string()?).ok()
}

fn as_list<T>(value: JsValue, read: impl Fn(JsValue) -> Option<T>) -> Option<Vec<T>> {
    let array = value.dyn_into::<Array>().ok()?;
    let mut list = Vec::new();
    for item in array.iter() {
        list.push(read(item)?);
    }
    Some(list)
}

fn as_ice_servers(value: JsValue) -> Option<Vec<IceServer>> {
    as_list(value, |server| {
        let server = Fields::of(server)?;
        Some(IceServer {
            urls: server.field("urls", |v| as_list(v, as_string)).ok()?,
            username: server.optional("username", as_string).ok()?,
            credential: server.optional("credential", as_string).ok()?,
        })
    })
}

/// The [`Signal`] in a message's data, if that is what it holds.
#[inline(never)] // called twice: one copy (the page's size)
fn as_signal(value: JsValue) -> Option<Signal> {
    let data = Fields::of(value)?;
    let text = |name| data.field(name, as_string).ok();
    let kind = text("kind")?;
    Some(match kind.as_str() {
        "text" => Signal::Text {
            text: text("text")?,
        },
        "description" => Signal::Description {
            sdp_type: SdpType::from_wire(&text("sdp_type")?)?,
            sdp: text("sdp")?,
        },
        "candidate" => Signal::Candidate {
            candidate: text("candidate")?,
            sdp_mid: data.optional("sdp_mid", as_string).ok()?,
            sdp_m_line_index: data
                .optional("sdp_m_line_index", |v| {
                    as_integer(v, u16::MAX.into()).map(|i| i as u16)
                })
                .ok()?,
        },
        "bye" => Signal::Bye,
        "media" => Signal::Media {
            audio: data.field("audio", |v| v.as_bool()).ok()?,
            video: data.field("video", |v| v.as_bool()).ok()?,
        },
        _ => return None,
    })
}

/// The [`Signal`] in `text` (a data channel's binary message), if it holds one.
pub fn decode_signal(text: &str) -> Option<Signal> {
    as_signal(js_sys::JSON::parse(text).ok()?)
}

/// Serializes any frame to the exact text a native serializer (`serde_json`) writes.
pub fn encode<T: Serialize + ?Sized>(frame: &T) -> String {
    let mut writer = JsonWriter(String::new());
    // Our own types always serialize; an empty frame would be refused, not misread.
    match frame.serialize(&mut writer) {
        Ok(()) => writer.0,
        Err(Unsupported) => String::new(),
    }
}

/// `value` as a JavaScript value, through its JSON: for handing protocol types to browser
/// APIs (the ICE servers of an `RTCConfiguration`) without serde-wasm-bindgen's serializer.
pub fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    js_sys::JSON::parse(&encode(value))
}

/// A value serde offered that frames never hold (maps, floats, bytes, tuples).
#[derive(Debug)]
struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unsupported value")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

/// Writes compact JSON, as `serde_json::to_string` does, for what frames are made of:
/// structs, sequences, strings, integers, booleans, options and unit variants.
struct JsonWriter(String);

impl JsonWriter {
    fn string(&mut self, text: &str) {
        let out = &mut self.0;
        out.reserve(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if c < ' ' => {
                    let hex = b"0123456789abcdef";
                    out.push_str("\\u00");
                    out.push(char::from(hex[c as usize >> 4]));
                    out.push(char::from(hex[c as usize & 15]));
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn integer(&mut self, n: u64) {
        signalroom_protocol::push_decimal(&mut self.0, n);
    }
}

/// A struct or sequence being written; `first` until its first element is.
struct Compound<'a> {
    writer: &'a mut JsonWriter,
    first: bool,
}

impl Compound<'_> {
    fn separate(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.writer.0.push(',');
        }
    }
}

impl<'a> ser::Serializer for &'a mut JsonWriter {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = ser::Impossible<(), Unsupported>;
    type SerializeTupleStruct = ser::Impossible<(), Unsupported>;
    type SerializeTupleVariant = ser::Impossible<(), Unsupported>;
    type SerializeMap = ser::Impossible<(), Unsupported>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = ser::Impossible<(), Unsupported>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        self.0.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Unsupported> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Unsupported> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Unsupported> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Unsupported> {
        if v < 0 {
            self.0.push('-');
        }
        self.integer(v.unsigned_abs());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Unsupported> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Unsupported> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Unsupported> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Unsupported> {
        self.integer(v);
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_f64(self, _: f64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        self.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_none(self) -> Result<(), Unsupported> {
        self.serialize_unit()
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.0.push_str("null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unsupported> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Unsupported> {
        self.0.push('[');
        Ok(Compound {
            writer: self,
            first: true,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Unsupported> {
        self.0.push('{');
        Ok(Compound {
            writer: self,
            first: true,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.separate();
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.writer.0.push(']');
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.separate();
        self.writer.string(key);
        self.writer.0.push(':');
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.writer.0.push('}');
        Ok(())
    }
}

#[cfg(all(test, target_arch = "wasm32"))]
mod tests {
    use serde::de::IgnoredAny;
    use signalroom_protocol::{golden, Request};
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    use super::*;

    wasm_bindgen_test_configure!(run_in_browser);

    /// How the page decoded frames before: serde's derived decoders over the parsed value.
    fn through_serde(text: &str) -> Option<Incoming> {
        let value = js_sys::JSON::parse(text).ok()?;
        match serde_wasm_bindgen::from_value::<Event<Signal>>(value.clone()) {
            Ok(event) => Some(Incoming::Event(event)),
            Err(_) => match serde_wasm_bindgen::from_value::<Event<IgnoredAny>>(value) {
                Ok(Event::Message { from, .. }) => Some(Incoming::Foreign { from }),
                _ => None,
            },
        }
    }

    const ODD_FRAMES: &[&str] = &[
        r#"{"type":"created","room":"foo","peer":1,"ice_servers":[]}"#,
        r#"{"type":"created","room":"foo","peer":1,"ice_servers":null}"#,
        r#"{"type":"created","room":"foo","peer":1,"ice_servers":[{"urls":[]}]}"#,
        r#"{"type":"created","room":"foo","peer":1,"ice_servers":[{"urls":["a"],"username":null}]}"#,
        r#"{"type":"created","room":"foo","peer":1,"ice_servers":[{"urls":"a"}]}"#,
        r#"{"type":"created","room":"foo","peer":1,"ice_servers":[{}]}"#,
        r#"{"type":"created","room":"foo","peer":1,"ice_servers":[{"urls":[1]}]}"#,
        r#"{"type":"created","room":"foo","peer":1,"ice_servers":{}}"#,
        r#"{"peer":1,"type":"created","room":"foo","extra":[1,2]}"#,
        r#"{"type":"created","room":"","peer":1}"#,
        r#"{"type":"created","room":"a\u0007b","peer":1}"#,
        r#"{"type":"created","room":7,"peer":1}"#,
        r#"{"type":"created","room":"foo"}"#,
        r#"{"type":"created","room":"foo","peer":0}"#,
        r#"{"type":"created","room":"foo","peer":-1}"#,
        r#"{"type":"created","room":"foo","peer":1.5}"#,
        r#"{"type":"created","room":"foo","peer":1.0}"#,
        r#"{"type":"created","room":"foo","peer":1e3}"#,
        r#"{"type":"created","room":"foo","peer":"1"}"#,
        r#"{"type":"created","room":"foo","peer":9007199254740991}"#,
        r#"{"type":"created","room":"foo","peer":9007199254740992}"#,
        r#"{"type":"created","room":"foo","peer":1e300}"#,
        r#"{"type":"created","room":"foo","peer":null}"#,
        r#"{"type":"joined","room":"foo","peer":2,"peers":[]}"#,
        r#"{"type":"joined","room":"foo","peer":3,"peers":[1,2]}"#,
        r#"{"type":"joined","room":"foo","peer":3,"peers":[1,0]}"#,
        r#"{"type":"joined","room":"foo","peer":3}"#,
        r#"{"type":"joined","room":"foo","peer":3,"peers":null}"#,
        r#"{"type":"joined","room":"foo","peer":3,"peers":{"0":1}}"#,
        r#"{"type":"join","room":"foo"}"#,
        r#"{"type":"full"}"#,
        r#"{"type":"left","room":"foo","peer":2,"why":"gone"}"#,
        r#"{"type":"message","from":4,"data":[1,2,3]}"#,
        r#"{"type":"message","from":4,"data":null}"#,
        r#"{"type":"message","from":4,"data":"text"}"#,
        r#"{"type":"message","from":4}"#,
        r#"{"type":"message","data":{"kind":"bye"}}"#,
        r#"{"type":"message","from":0,"data":{"kind":"bye"}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"bye","extra":1}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"dance"}}"#,
        r#"{"type":"message","from":4,"data":{"kind":7}}"#,
        r#"{"type":"message","from":4,"data":{"text":"no kind"}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"text"}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"text","text":null}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"text","text":"é 🎥 \u0000 \"q\""}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"description","sdp_type":"offer","sdp":"v=0"}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"description","sdp_type":"rollback","sdp":""}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"description","sdp_type":"Offer","sdp":"v=0"}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"description","sdp":"v=0"}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"candidate","candidate":""}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"candidate","candidate":"c","sdp_mid":null,"sdp_m_line_index":null}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"candidate","candidate":"c","sdp_mid":"0","sdp_m_line_index":65535}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"candidate","candidate":"c","sdp_m_line_index":65536}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"candidate","candidate":"c","sdp_m_line_index":-1}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"candidate","candidate":"c","sdp_m_line_index":0.5}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"candidate","candidate":"c","sdp_mid":0}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"candidate"}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"media","audio":false,"video":true}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"media","audio":true}}"#,
        r#"{"type":"message","from":4,"data":{"kind":"media","audio":1,"video":true}}"#,
        r#"{"type":"error","code":"not_in_room","message":"m"}"#,
        r#"{"type":"error","code":"forbidden","message":"no"}"#,
        r#"{"type":"error","code":"from_the_future","message":"x","id":1}"#,
        r#"{"type":"error","code":3,"message":"x"}"#,
        r#"{"type":"error","code":"forbidden"}"#,
        r#"{"type":"teleport"}"#,
        r#"{"type":7}"#,
        r#"{"room":"foo","peer":1}"#,
        r#"{"type":"created","room":"foo","peer":1"#,
        "{oops",
        "[]",
        "null",
        "42",
        r#""created""#,
    ];

    #[wasm_bindgen_test]
    fn decodes_every_frame_as_serde_did() {
        for text in golden::EVENTS.lines().chain(ODD_FRAMES.iter().copied()) {
            assert_eq!(decode(text).ok(), through_serde(text), "{text}");
        }
    }

    #[wasm_bindgen_test]
    fn a_channels_binary_message_holds_a_signal() {
        let media = decode_signal(r#"{"kind":"media","audio":true,"video":false,"x":1}"#);
        assert_eq!(
            media,
            Some(Signal::Media {
                audio: true,
                video: false
            })
        );
        assert_eq!(decode_signal("hello"), None);
        assert_eq!(decode_signal(r#"{"kind":"dance"}"#), None);
    }

    #[wasm_bindgen_test]
    fn refusals_name_the_problem() {
        let error = |text| decode(text).err().map(|e| e.to_string());
        assert_eq!(
            error(r#"{"type":"join","room":"foo"}"#).as_deref(),
            Some("missing or invalid field `peer`")
        );
        assert_eq!(
            error(r#"{"type":"teleport"}"#).as_deref(),
            Some("unknown frame type `teleport`")
        );
        assert!(error("{oops").is_some_and(|e| !e.is_empty()));
    }

    #[wasm_bindgen_test]
    fn strings_are_written_as_json_stringify_writes_them() {
        let mut text: String = (0..0x80u8).map(char::from).collect();
        text.push_str("é ß \u{2028} \u{feff} 🎥 \\ \" / </script>");
        let written = encode(&Signal::Text { text: text.clone() });
        let expected = js_sys::JSON::stringify(&JsValue::from_str(&text))
            .ok()
            .and_then(|s| s.as_string())
            .expect("stringifies");
        assert_eq!(
            written,
            [r#"{"kind":"text","text":"#, &expected, "}"].concat()
        );
        let parsed = js_sys::JSON::parse(&written).expect("valid JSON");
        let read = Reflect::get(&parsed, &"text".into()).expect("has text");
        assert_eq!(read.as_string(), Some(text));
    }

    #[wasm_bindgen_test]
    fn ice_servers_become_what_serde_wasm_bindgen_made_of_them() {
        let servers = vec![
            IceServer {
                urls: vec!["stun:s".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:t".into(), "turns:t".into()],
                username: Some("u".into()),
                credential: Some("p\"".into()),
            },
        ];
        let ours = to_js(servers.as_slice()).expect("converts");
        let theirs = serde_wasm_bindgen::to_value(&servers).expect("converts");
        let json = |v: &JsValue| js_sys::JSON::stringify(v).ok().and_then(|s| s.as_string());
        assert_eq!(json(&ours), json(&theirs));
        assert!(js_sys::Array::is_array(&ours));
        assert!(to_js(&1.5f64).is_err());
    }

    #[wasm_bindgen_test]
    fn requests_and_numbers_are_written_compactly() {
        let frame = Request::Message {
            data: Signal::Candidate {
                candidate: String::new(),
                sdp_mid: None,
                sdp_m_line_index: Some(u16::MAX),
            },
            to: Some(PeerId::new(PeerId::MAX).expect("valid")),
        };
        assert_eq!(
            encode(&frame),
            r#"{"type":"message","data":{"kind":"candidate","candidate":"","sdp_m_line_index":65535},"to":9007199254740991}"#
        );
        assert_eq!(encode(&(-12i32, true, ())), "");
        assert_eq!(encode(&vec![Some(-12i64), None]), "[-12,null]");
        assert_eq!(encode(&Vec::<u8>::new()), "[]");
        assert_eq!(encode(&1.5f64), "");
    }
}
