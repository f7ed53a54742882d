//! Arbitrary bytes as what a client sent after the upgrade, through the relay's WebSocket
//! framing. Checked: nothing panics, every message taken is within the size limit, and the
//! reader stops (a message or an error per frame, never a loop).
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalroom_server::{Incoming, Reader};

const MAX_MESSAGE: usize = 512;

fuzz_target!(|data: &[u8]| {
    let mut reader = Reader::new(MAX_MESSAGE, data.to_vec());
    // Each message needs at least a two-byte header and a four-byte mask.
    for _ in 0..=data.len() / 6 {
        match reader.next_message() {
            Ok(Some(Incoming::Text(text))) => assert!(text.len() <= MAX_MESSAGE),
            Ok(Some(Incoming::Ping(payload))) => assert!(payload.len() <= 125),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    assert!(
        !matches!(reader.next_message(), Ok(Some(_))),
        "more messages than the bytes can hold"
    );
});
