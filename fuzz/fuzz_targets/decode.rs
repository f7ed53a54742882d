//! Any bytes a client can send as a text frame: decoding never panics, a refusal always
//! carries a message, and the relay's shortcut for plain messages decides as serde does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use signalroom_protocol::Request;
use signalroom_server::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let general: Result<Request<&RawValue>, _> = serde_json::from_str(text);
        match (decode(text), general) {
            (Ok(Request::Message { data, to }), Ok(Request::Message { data: raw, to: raw_to })) => {
                assert_eq!((data.get(), to), (raw.get(), raw_to));
            }
            (Ok(ours), Ok(theirs)) => assert_eq!(format!("{ours:?}"), format!("{theirs:?}")),
            (Err(refusal), Err(_)) => assert!(!refusal.message.is_empty()),
            (ours, theirs) => panic!("{text:?}: relay {ours:?}, serde {theirs:?}"),
        }
    }
});
