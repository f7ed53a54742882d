//! A client's session bookkeeping (`session.rs`): what it counts, keeps, acknowledges and
//! sends again after a resume, and when it tries a lost connection again.

use signalroom_protocol::session::{AckDue, Backoff, Outgoing, Session, ACK_EVERY};
use signalroom_protocol::{PeerId, Request, Resumable, ResumeKey, Signal};

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
    let _ = session.sending("join");
    assert_eq!(session.received(), AckDue::Later);
    session.granted(peer(), grant('a'));
    for n in 2..=5 {
        let _ = session.sending(&format!("frame {n}"));
    }
    assert_eq!(session.kept(), 4, "the join, before the grant, is not kept");
    let _ = session.acknowledged(3);
    assert_eq!(session.kept(), 2);
    let Some(Request::Resume {
        peer: who,
        key,
        received,
    }) = session.resume::<Signal>()
    else {
        panic!("a granted session resumes");
    };
    assert_eq!(
        (who, key.as_str(), received),
        (peer(), "a".repeat(32).as_str(), 1)
    );
    let again = session.resumed(4, grant('b'), false);
    assert_eq!(again, ["frame 5"]);
    let Some(Request::Resume { key, .. }) = session.resume::<Signal>() else {
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
    let _ = session.sending("frame 1");
    let _ = session.sending("frame 2");
    assert_eq!(session.received(), AckDue::Later);
    let again = session.resumed(0, grant('b'), true);
    assert!(
        again.is_empty(),
        "what was kept may have arrived: nothing goes again"
    );
    assert_eq!(session.kept(), 0);
    let Some(Request::Resume { received, .. }) = session.resume::<Signal>() else {
        panic!("still resumable");
    };
    assert_eq!(received, 0, "the count starts again");
    let _ = session.sending("frame 3");
    let _ = session.acknowledged(1);
    assert_eq!(session.kept(), 0, "frame 3 is the new count's first");
}

#[test]
fn acks_come_after_a_burst_or_later_and_never_for_nothing() {
    let mut session = Session::default();
    session.granted(peer(), grant('c'));
    assert!(session.ack::<Signal>().is_none());
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
    assert!(session.ack::<Signal>().is_none());
}

#[test]
fn an_ended_session_does_not_resume() {
    let mut session = Session::default();
    session.granted(peer(), grant('d'));
    session.end();
    assert!(session.resume::<Signal>().is_none());
    assert!(session.window_ms().is_none());
}

#[test]
fn retries_back_off_and_a_resumable_session_retries_at_once_and_often() {
    let mut backoff = Backoff::default();
    let delays: Vec<u32> = (0..7).map(|_| backoff.next_delay_ms()).collect();
    assert_eq!(delays, [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
    backoff.resuming(true);
    backoff.connected();
    let delays: Vec<u32> = (0..4).map(|_| backoff.next_delay_ms()).collect();
    assert_eq!(delays, [0, 500, 1_000, 2_000], "the first retry is at once");
    backoff.resuming(false);
    backoff.connected();
    assert_eq!(backoff.next_delay_ms(), Backoff::MIN_MS);
}

#[test]
fn frames_sent_while_a_resume_is_unanswered_wait_behind_those_sent_again() {
    let mut session = Session::default();
    session.granted(peer(), grant('e'));
    assert_eq!(session.sending("frame 1"), Outgoing::Now);
    assert_eq!(session.sending("frame 2"), Outgoing::Now);
    let _ = session.resume::<Signal>();
    assert_eq!(
        session.sending("frame 3"),
        Outgoing::Held,
        "written now, it would reach the relay before frame 2"
    );
    let _ = session.resume::<Signal>();
    assert_eq!(
        session.sending("frame 4"),
        Outgoing::Held,
        "a second attempt"
    );
    let again = session.resumed(1, grant('f'), false);
    assert_eq!(again, ["frame 2", "frame 3", "frame 4"]);
    assert_eq!(session.sending("frame 5"), Outgoing::Now);
}

#[test]
fn an_incomplete_resume_sends_what_was_held_as_the_new_count_begins() {
    let mut session = Session::default();
    session.granted(peer(), grant('a'));
    let _ = session.sending("written");
    let _ = session.resume::<Signal>();
    assert_eq!(session.sending("held"), Outgoing::Held);
    let again = session.resumed(0, grant('b'), true);
    assert_eq!(
        again,
        ["held"],
        "what was written may have arrived; what was held did not"
    );
    let _ = session.acknowledged(1);
    assert_eq!(session.kept(), 0, "the held frame is the new count's first");
}
