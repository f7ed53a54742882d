//! Any bytes a client can send as a text frame: decoding never panics, and a refusal always
//! carries a code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalroom_server::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(refusal) = codec::decode(text) {
            assert!(!refusal.message.is_empty());
        }
    }
});
