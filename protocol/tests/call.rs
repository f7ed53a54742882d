//! The rules of a call that the page and `signalroom-peer` share: who offers first and
//! what perfect negotiation does with each description.

use signalroom_protocol::call::{polite, Negotiation, Step};
use signalroom_protocol::{PeerId, SdpType};

fn peer(id: u64) -> PeerId {
    PeerId::new(id).expect("valid id")
}

#[test]
fn in_every_pair_exactly_one_side_offers_first() {
    for a in 1..6 {
        for b in 1..6 {
            if a != b {
                assert_ne!(polite(peer(a), peer(b)), polite(peer(b), peer(a)));
            }
        }
    }
    // The later arrival (larger id) is polite and lets the other offer.
    assert!(polite(peer(3), peer(1)));
    assert!(!polite(peer(1), peer(3)));
}

#[test]
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

#[test]
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

#[test]
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

#[test]
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

#[test]
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
