//! The client's frame handling in a real browser, against the protocol crate's golden
//! vectors: what the page receives decodes to the same frame, and what it writes for the
//! relay's address. The room logic's tests, which need no browser, are in `room.rs`.

#![cfg(target_arch = "wasm32")]

use signalroom_client_wasm::codec::{self, Incoming};
use signalroom_protocol::{golden, Event, PeerId, Signal};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn peer(id: u64) -> PeerId {
    PeerId::new(id).expect("valid id")
}

fn event(incoming: Incoming) -> Event<Signal> {
    match incoming {
        Incoming::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[wasm_bindgen_test]
fn golden_events_decode_and_encode_back() {
    for line in golden::EVENTS.lines() {
        let decoded = event(codec::decode(line).expect(line));
        assert_eq!(codec::encode(&decoded), line);
    }
}

#[wasm_bindgen_test]
fn foreign_data_and_garbage_are_reported_not_fatal() {
    assert_eq!(
        codec::decode(r#"{"type":"message","from":4,"data":[1,2,3]}"#),
        Ok(Incoming::Foreign { from: peer(4) })
    );
    assert!(codec::decode("{oops").is_err());
    assert!(codec::decode(r#"{"type":"teleport"}"#).is_err());
}

#[wasm_bindgen_test]
fn the_token_goes_to_the_relay_url_encoded() {
    use signalroom_client_wasm::config::{with_token, PageConfig};
    assert_eq!(
        with_token("ws://h/ws", "a.b-c_d"),
        "ws://h/ws?token=a.b-c_d"
    );
    assert_eq!(
        with_token("ws://h/ws?x=1", "a+b/c="),
        "ws://h/ws?x=1&token=a%2Bb%2Fc%3D"
    );
    // The page always asks for a resumable session; a token comes after.
    let mut config = PageConfig {
        room: None,
        relay: "wss://h/ws".into(),
        token: None,
    };
    assert_eq!(config.relay_url(), "wss://h/ws?resume");
    config.token = Some("t".into());
    assert_eq!(config.relay_url(), "wss://h/ws?resume&token=t");
    config.relay = "wss://h/ws?x=1".into();
    assert_eq!(config.relay_url(), "wss://h/ws?x=1&resume&token=t");
}
