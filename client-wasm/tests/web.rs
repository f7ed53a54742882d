//! The client's frame handling in a real browser, against the protocol crate's golden
//! vectors: what the page sends is byte-for-byte the golden request, what it receives
//! decodes to the same frame, and the room logic reacts to each as the protocol says.

#![cfg(target_arch = "wasm32")]

use signalroom_client::codec::{self, Incoming};
use signalroom_client::room::{Action, Phase, Room};
use signalroom_protocol::{golden, Event, PeerId, Request, RoomName, Signal};
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
fn requests_encode_to_the_golden_bytes() {
    for line in golden::REQUESTS.lines() {
        let value = js_sys::JSON::parse(line).expect("golden lines are JSON");
        let request: Request<Signal> =
            serde_wasm_bindgen::from_value(value).expect("golden requests decode");
        assert_eq!(codec::encode(&request), line);
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

/// Decodes the golden event whose line contains all of `needles`.
fn golden_event(needles: &[&str]) -> Incoming {
    let line = golden::EVENTS
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .expect("a golden event matches");
    codec::decode(line).expect("golden events decode")
}

#[wasm_bindgen_test]
fn the_first_peer_waits_then_calls_the_newcomer() {
    let mut room = Room::new(RoomName::new("foo").expect("valid"));
    let actions = room.apply(golden_event(&[r#""type":"created""#, "ice_servers"]));
    assert!(matches!(&actions[0], Action::IceServers(servers) if servers.len() == 2));
    assert_eq!(room.me(), Some(peer(1)));
    assert_eq!(room.phase(), &Phase::Waiting);

    let actions = room.apply(golden_event(&[r#""type":"join""#]));
    assert!(actions.contains(&Action::Call {
        peer: peer(2),
        polite: false
    }));
    assert_eq!(room.phase(), &Phase::Together(vec![peer(2)]));

    let actions = room.apply(golden_event(&[
        r#""type":"message""#,
        r#""kind":"description""#,
    ]));
    assert!(matches!(
        &actions[..],
        [Action::Signal { from, signal: Signal::Description { .. } }] if *from == peer(2)
    ));

    let actions = room.apply(golden_event(&[r#""type":"left""#]));
    assert!(actions.contains(&Action::HangUp(peer(2))));
    assert_eq!(room.phase(), &Phase::Waiting);
}

#[wasm_bindgen_test]
fn the_newcomer_is_polite_and_chat_is_shown() {
    let mut room = Room::new(RoomName::new("foo").expect("valid"));
    let actions = room.apply(golden_event(&[r#""type":"joined""#]));
    assert!(actions.contains(&Action::Call {
        peer: peer(1),
        polite: true
    }));
    assert_eq!(room.phase(), &Phase::Together(vec![peer(1)]));

    let actions = room.apply(golden_event(&[r#""kind":"text""#]));
    assert_eq!(
        actions,
        vec![Action::Chat {
            from: peer(1),
            text: "hello".into()
        }]
    );

    assert_eq!(room.left(), vec![Action::HangUp(peer(1))]);
    assert_eq!(room.phase(), &Phase::Out);
}

#[wasm_bindgen_test]
fn full_and_errors_leave_the_page_outside() {
    let mut room = Room::new(RoomName::new("foo").expect("valid"));
    room.apply(golden_event(&[r#""type":"full""#]));
    assert_eq!(room.phase(), &Phase::Full);
    let actions = room.apply(golden_event(&[r#""type":"error""#]));
    assert!(matches!(&actions[..], [Action::Log(line)] if line.contains("not_in_room")));
    assert_eq!(room.phase(), &Phase::Full);
}

#[wasm_bindgen_test]
fn forbidden_leaves_the_page_outside_and_says_why() {
    let mut room = Room::new(RoomName::new("b").expect("valid"));
    let refusal = r#"{"type":"error","code":"forbidden","message":"no"}"#;
    let actions = room.apply(codec::decode(refusal).expect("decodes"));
    assert!(matches!(&actions[..], [Action::Log(line)] if line.contains("does not admit room b")));
    assert_eq!(room.phase(), &Phase::Forbidden);
}

#[wasm_bindgen_test]
fn the_token_goes_to_the_relay_url_encoded() {
    use signalroom_client::config::{with_token, PageConfig};
    assert_eq!(
        with_token("ws://h/ws", "a.b-c_d"),
        "ws://h/ws?token=a.b-c_d"
    );
    assert_eq!(
        with_token("ws://h/ws?x=1", "a+b/c="),
        "ws://h/ws?x=1&token=a%2Bb%2Fc%3D"
    );
    let config = PageConfig {
        room: None,
        relay: "wss://h/ws".into(),
        token: None,
    };
    assert_eq!(config.relay_url(), "wss://h/ws");
}

mod negotiation {
    use signalroom_client::negotiation::{Negotiation, Step};
    use signalroom_protocol::SdpType;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn an_offer_in_a_stable_state_is_answered_by_either_side() {
        for polite in [true, false] {
            let mut n = Negotiation::new(polite);
            assert_eq!(
                n.on_description(SdpType::Offer, true),
                Step::Apply {
                    rollback: false,
                    answer: true
                }
            );
            assert!(n.candidate_error_matters());
        }
    }

    #[wasm_bindgen_test]
    fn on_glare_the_impolite_side_ignores_and_the_polite_side_yields() {
        let mut impolite = Negotiation::new(false);
        impolite.offering();
        assert_eq!(impolite.on_description(SdpType::Offer, true), Step::Ignore);
        // The ignored offer's candidates are expected to fail.
        assert!(!impolite.candidate_error_matters());

        let mut polite = Negotiation::new(true);
        polite.offering();
        polite.offered();
        // Its offer is out (signaling state not stable) when the other offer lands.
        assert_eq!(
            polite.on_description(SdpType::Offer, false),
            Step::Apply {
                rollback: true,
                answer: true
            }
        );
    }

    #[wasm_bindgen_test]
    fn answers_are_applied_and_clear_an_earlier_ignore() {
        let mut impolite = Negotiation::new(false);
        impolite.offering();
        assert_eq!(impolite.on_description(SdpType::Offer, false), Step::Ignore);
        impolite.offered();
        assert_eq!(
            impolite.on_description(SdpType::Answer, false),
            Step::Apply {
                rollback: false,
                answer: false
            }
        );
        assert!(impolite.candidate_error_matters());
    }

    #[wasm_bindgen_test]
    fn the_polite_side_lets_the_other_offer_first() {
        let mut polite = Negotiation::new(true);
        assert!(!polite.may_offer(true), "the impolite side offers first");
        assert!(matches!(
            polite.on_description(SdpType::Offer, true),
            Step::Apply { answer: true, .. }
        ));
        assert!(polite.may_offer(true), "then either side renegotiates");

        let mut overdue = Negotiation::new(true);
        overdue.stop_waiting();
        assert!(overdue.may_offer(true));
        assert!(Negotiation::new(false).may_offer(true));
    }

    #[wasm_bindgen_test]
    fn one_offer_at_a_time_and_stale_answers_are_dropped() {
        let mut n = Negotiation::new(false);
        assert!(n.may_offer(true));
        n.offering();
        assert!(!n.may_offer(true), "an offer is being made");
        n.offered();
        // Our offer is out: a late negotiationneeded must not replace it.
        assert!(!n.may_offer(false));
        // An answer that finds the connection stable answers nothing still pending.
        assert_eq!(n.on_description(SdpType::Answer, true), Step::Ignore);
        assert!(n.may_offer(true));
    }
}
