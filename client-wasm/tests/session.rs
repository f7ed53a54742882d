//! The page's session bookkeeping (`session.rs`): what it counts, keeps, acknowledges and
//! sends again after a resume. Plain Rust: runs natively and in the browser.

use signalroom_client::session::{AckDue, Session, ACK_EVERY};
use signalroom_protocol::{PeerId, Request, Resumable, ResumeKey, Signal};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn grant(hex: char) -> Resumable {
    Resumable {
        key: ResumeKey::new(hex.to_string().repeat(ResumeKey::LEN)).expect("a key"),
        window_ms: 25_000,
    }
}

fn peer() -> PeerId {
    PeerId::new(7).expect("an id")
}

#[test]
fn what_the_relay_missed_is_sent_again_in_order_and_nothing_it_had() {
    let mut session = Session::default();
    session.sending("join");
    assert_eq!(session.received(), AckDue::Later);
    session.granted(peer(), grant('a'));
    for n in 2..=5 {
        session.sending(&format!("frame {n}"));
    }
    assert_eq!(session.kept(), 4, "the join, before the grant, is not kept");
    session.acknowledged(3);
    assert_eq!(session.kept(), 2);
    let Some(Request::Resume {
        peer: who,
        key,
        received,
    }) = session.resume()
    else {
        panic!("a granted session resumes");
    };
    assert_eq!(
        (who, key.as_str(), received),
        (peer(), "a".repeat(32).as_str(), 1)
    );
    let again = session.resumed(4, grant('b'), false);
    assert_eq!(again, ["frame 5"]);
    let Some(Request::Resume { key, .. }) = session.resume() else {
        panic!("still resumable");
    };
    assert_eq!(
        key.as_str(),
        "b".repeat(32),
        "the next resume takes the new key"
    );
}

#[test]
fn an_incomplete_resume_starts_the_counts_again_and_sends_nothing_again() {
    let mut session = Session::default();
    session.granted(peer(), grant('a'));
    session.sending("frame 1");
    session.sending("frame 2");
    assert_eq!(session.received(), AckDue::Later);
    let again = session.resumed(0, grant('b'), true);
    assert!(
        again.is_empty(),
        "what was kept may have arrived: nothing goes again"
    );
    assert_eq!(session.kept(), 0);
    let Some(Request::Resume { received, .. }) = session.resume() else {
        panic!("still resumable");
    };
    assert_eq!(received, 0, "the count starts again");
    session.sending("frame 3");
    session.acknowledged(1);
    assert_eq!(session.kept(), 0, "frame 3 is the new count's first");
}

#[test]
fn acks_come_after_a_burst_or_later_and_never_for_nothing() {
    let mut session = Session::default();
    session.granted(peer(), grant('c'));
    assert!(session.ack().is_none());
    assert_eq!(session.received(), AckDue::Later);
    for _ in 2..ACK_EVERY {
        assert_eq!(session.received(), AckDue::No);
    }
    assert_eq!(session.received(), AckDue::Now);
    assert_eq!(
        session.ack(),
        Some(Request::<Signal>::Ack {
            received: ACK_EVERY
        })
    );
    assert!(session.ack().is_none());
}

#[test]
fn an_ended_session_does_not_resume() {
    let mut session = Session::default();
    session.granted(peer(), grant('d'));
    session.end();
    assert!(session.resume().is_none());
    assert!(session.window_ms().is_none());
}
