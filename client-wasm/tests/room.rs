//! The page's room logic, and the frames it writes,
//! against the protocol crate's golden vectors. They are plain Rust, so these tests run
//! natively (`cargo test`) as well as in the browser (wasm-bindgen-test, with `--target
//! wasm32-unknown-unknown`), where the golden frames are read by the page's own decoder.

use signalroom_client_wasm::codec::{self, Incoming};
use signalroom_client_wasm::room::{Action, Phase, Room};
use signalroom_protocol::{golden, PeerId, Request, RoomName, Signal};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn peer(id: u64) -> PeerId {
    PeerId::new(id).expect("valid id")
}

/// A relay frame as the page reads it, with its own decoder (`JSON.parse` underneath).
#[cfg(target_arch = "wasm32")]
fn incoming(text: &str) -> Incoming {
    codec::decode(text).expect(text)
}

/// A relay frame as the page reads it: natively, where the page's decoder has no
/// `JSON.parse`, through serde, which the codec's browser tests hold that decoder to.
#[cfg(not(target_arch = "wasm32"))]
fn incoming(text: &str) -> Incoming {
    Incoming::Event(serde_json::from_str(text).expect(text))
}

/// A golden request, read by serde.
#[cfg(target_arch = "wasm32")]
fn request(text: &str) -> Request<Signal> {
    let value = js_sys::JSON::parse(text).expect("golden lines are JSON");
    serde_wasm_bindgen::from_value(value).expect("golden requests decode")
}

/// A golden request, read by serde.
#[cfg(not(target_arch = "wasm32"))]
fn request(text: &str) -> Request<Signal> {
    serde_json::from_str(text).expect("golden requests decode")
}

#[test]
fn requests_encode_to_the_golden_bytes() {
    for line in golden::REQUESTS.lines() {
        assert_eq!(codec::encode(&request(line)), line);
    }
}

/// Decodes the golden event whose line contains all of `needles`.
fn golden_event(needles: &[&str]) -> Incoming {
    let line = golden::EVENTS
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .expect("a golden event matches");
    incoming(line)
}

#[test]
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

#[test]
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

#[test]
fn full_and_errors_leave_the_page_outside() {
    let mut room = Room::new(RoomName::new("foo").expect("valid"));
    let actions = room.apply(golden_event(&[r#""type":"full""#]));
    assert_eq!(room.phase(), &Phase::Full);
    // It asks again in a moment: a seat may free up.
    assert_eq!(actions.last(), Some(&Action::AskAgain));
    let actions = room.apply(golden_event(&[r#""type":"error""#]));
    assert!(matches!(&actions[..], [Action::Log(line)] if line.contains("not_in_room")));
    assert_eq!(room.phase(), &Phase::Full);
}

#[test]
fn forbidden_leaves_the_page_outside_and_says_why() {
    let mut room = Room::new(RoomName::new("b").expect("valid"));
    let refusal = r#"{"type":"error","code":"forbidden","message":"no"}"#;
    let actions = room.apply(incoming(refusal));
    assert!(matches!(&actions[..], [Action::Log(line)] if line.contains("does not admit room b")));
    assert_eq!(room.phase(), &Phase::Forbidden);
}

/// The mesh: one call per pair, who offers to whom, and what each pair goes through when a
/// member leaves, a newcomer arrives or the relay connection is lost.
mod mesh {
    use super::peer;
    use signalroom_client_wasm::codec::Incoming;
    use signalroom_client_wasm::room::{Action, Phase, Room, MAX_PEERS};
    use signalroom_protocol::{Event, PeerId, RoomName, Signal};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn name() -> RoomName {
        RoomName::new("mesh").expect("valid")
    }

    fn created(me: u64) -> Incoming {
        Incoming::Event(Event::Created {
            room: name(),
            peer: peer(me),
            ice_servers: Vec::new(),
            resume: None,
        })
    }

    fn joined(me: u64, peers: &[u64]) -> Incoming {
        Incoming::Event(Event::Joined {
            room: name(),
            peer: peer(me),
            peers: peers.iter().map(|&p| peer(p)).collect(),
            ice_servers: Vec::new(),
            resume: None,
        })
    }

    fn join(who: u64) -> Incoming {
        Incoming::Event(Event::<Signal>::Join {
            room: name(),
            peer: peer(who),
        })
    }

    fn left(who: u64) -> Incoming {
        Incoming::Event(Event::<Signal>::Left {
            room: name(),
            peer: peer(who),
        })
    }

    /// The calls and hang-ups among `actions`, logs left out.
    fn calls(actions: Vec<Action>) -> Vec<Action> {
        actions
            .into_iter()
            .filter(|a| !matches!(a, Action::Log(_) | Action::IceServers(_)))
            .collect()
    }

    fn call(who: u64, polite: bool) -> Action {
        Action::Call {
            peer: peer(who),
            polite,
        }
    }

    fn ids(ids: &[u64]) -> Vec<PeerId> {
        ids.iter().map(|&p| peer(p)).collect()
    }

    #[test]
    fn a_newcomer_calls_everyone_inside_and_waits_for_their_offers() {
        let mut room = Room::new(name());
        let actions = calls(room.apply(joined(3, &[1, 2])));
        assert_eq!(actions, vec![call(1, true), call(2, true)]);
        assert_eq!(room.phase(), &Phase::Together(ids(&[1, 2])));
        assert_eq!(room.peers(), &ids(&[1, 2])[..]);
    }

    #[test]
    fn members_inside_call_the_newcomer_and_offer_first() {
        let mut first = Room::new(name());
        first.apply(created(1));
        assert_eq!(calls(first.apply(join(2))), vec![call(2, false)]);
        assert_eq!(calls(first.apply(join(3))), vec![call(3, false)]);
        assert_eq!(first.phase(), &Phase::Together(ids(&[2, 3])));

        let mut second = Room::new(name());
        second.apply(joined(2, &[1]));
        assert_eq!(calls(second.apply(join(3))), vec![call(3, false)]);
        assert_eq!(second.phase(), &Phase::Together(ids(&[1, 3])));
    }

    #[test]
    fn a_member_leaving_takes_only_its_own_pair() {
        let mut room = Room::new(name());
        room.apply(joined(2, &[1]));
        room.apply(join(3));
        assert_eq!(calls(room.apply(left(1))), vec![Action::HangUp(peer(1))]);
        assert_eq!(room.phase(), &Phase::Together(ids(&[3])));
        // A fourth arrives and is called; the pair with 3 is untouched.
        assert_eq!(calls(room.apply(join(4))), vec![call(4, false)]);
        assert_eq!(room.phase(), &Phase::Together(ids(&[3, 4])));
        assert_eq!(calls(room.apply(left(3))), vec![Action::HangUp(peer(3))]);
        assert_eq!(calls(room.apply(left(4))), vec![Action::HangUp(peer(4))]);
        assert_eq!(room.phase(), &Phase::Waiting);
    }

    #[test]
    fn signals_and_chat_name_their_pair() {
        let mut room = Room::new(name());
        room.apply(joined(3, &[1, 2]));
        let bye = Incoming::Event(Event::Message {
            from: peer(2),
            data: Signal::Bye,
        });
        assert_eq!(
            room.apply(bye),
            vec![Action::Signal {
                from: peer(2),
                signal: Signal::Bye
            }]
        );
        assert_eq!(room.phase(), &Phase::Together(ids(&[1, 2])));
    }

    #[test]
    fn hanging_up_ends_every_pair() {
        let mut room = Room::new(name());
        room.apply(joined(3, &[1, 2]));
        assert_eq!(
            room.left(),
            vec![Action::HangUp(peer(1)), Action::HangUp(peer(2))]
        );
        assert_eq!(room.peers(), &[]);
    }

    #[test]
    fn after_a_lost_relay_the_earlier_calls_run_until_someone_is_called_again() {
        let mut room = Room::new(name());
        room.apply(joined(3, &[1, 2]));
        room.disconnected();
        assert_eq!(room.phase(), &Phase::Connecting);
        // Back first: alone, the earlier calls keep running.
        assert_eq!(calls(room.apply(created(1))), vec![]);
        // The first newcomer (new ids all round) replaces them all, once.
        assert_eq!(
            calls(room.apply(join(2))),
            vec![Action::EndEarlier, call(2, false)]
        );
        assert_eq!(calls(room.apply(join(3))), vec![call(3, false)]);

        // Back into a room with others: the earlier calls end before the new ones start.
        let mut other = Room::new(name());
        other.apply(joined(2, &[1]));
        other.disconnected();
        assert_eq!(
            calls(other.apply(joined(7, &[5, 6]))),
            vec![Action::EndEarlier, call(5, true), call(6, true)]
        );

        // Hanging up ends them too; a page that was alone has none.
        let mut alone = Room::new(name());
        alone.apply(joined(2, &[1]));
        alone.disconnected();
        assert_eq!(alone.left(), vec![Action::EndEarlier]);
        let mut waiting = Room::new(name());
        waiting.apply(created(1));
        waiting.disconnected();
        assert_eq!(calls(waiting.apply(created(1))), vec![]);
        assert_eq!(calls(waiting.apply(join(2))), vec![call(2, false)]);
    }

    #[test]
    fn beyond_the_mesh_limit_a_newcomer_leaves_and_members_do_not_call() {
        let inside: Vec<u64> = (1..=MAX_PEERS as u64).collect();
        // A room with MAX_PEERS others is joined and all are called.
        let mut room = Room::new(name());
        let actions = calls(room.apply(joined(99, &inside)));
        assert_eq!(actions.len(), MAX_PEERS);
        // A member with MAX_PEERS others does not call one more.
        assert_eq!(calls(room.apply(join(100))), vec![]);
        assert_eq!(room.peers().len(), MAX_PEERS);
        // A newcomer finding more than MAX_PEERS inside leaves, and calls nobody.
        let crowd: Vec<u64> = (1..=MAX_PEERS as u64 + 1).collect();
        let mut late = Room::new(name());
        assert_eq!(calls(late.apply(joined(99, &crowd))), vec![Action::Leave]);
        assert_eq!(
            late.phase(),
            &Phase::Crowded {
                members: MAX_PEERS + 1
            }
        );
        assert_eq!(late.me(), None);
    }
}
