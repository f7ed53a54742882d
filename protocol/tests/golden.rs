//! The golden vectors decode to the values below and encode back to the same bytes.

use serde_json::value::RawValue;
use signalroom_protocol::{
    golden, message_json, ErrorCode, Event, IceServer, PeerId, Request, Resumable, ResumeKey,
    RoomName, SdpType, Signal,
};

fn peer(id: u64) -> PeerId {
    PeerId::new(id).expect("valid id")
}

fn key(hex: &str) -> ResumeKey {
    ResumeKey::new(hex).expect("valid key")
}

fn resumable(hex: &str) -> Option<Resumable> {
    Some(Resumable {
        key: key(hex),
        window_ms: 25_000,
    })
}

fn foo() -> RoomName {
    RoomName::new("foo").expect("valid name")
}

fn expected_requests() -> Vec<Request<Signal>> {
    vec![
        Request::CreateOrJoin { room: foo() },
        Request::Message {
            data: Signal::Text {
                text: "hello".into(),
            },
            to: None,
        },
        Request::Message {
            data: Signal::Description {
                sdp_type: SdpType::Offer,
                sdp: "v=0\r\n".into(),
            },
            to: Some(peer(2)),
        },
        Request::Message {
            data: Signal::Candidate {
                candidate: "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
            },
            to: Some(peer(1)),
        },
        Request::Message {
            data: Signal::Bye,
            to: None,
        },
        Request::Message {
            data: Signal::Media {
                audio: false,
                video: true,
            },
            to: Some(peer(2)),
        },
        Request::Leave,
        Request::Resume {
            peer: peer(2),
            key: key("f0e0d0c0b0a090807060504030201000"),
            received: 12,
        },
        Request::Ack { received: 7 },
    ]
}

fn expected_events() -> Vec<Event<Signal>> {
    vec![
        Event::Created {
            room: foo(),
            peer: peer(1),
            ice_servers: vec![],
            resume: None,
        },
        Event::Created {
            room: foo(),
            peer: peer(1),
            ice_servers: vec![
                IceServer {
                    urls: vec!["stun:stun.example.org:3478".into()],
                    username: None,
                    credential: None,
                },
                IceServer {
                    urls: vec!["turn:turn.example.org:3478".into()],
                    username: Some("u".into()),
                    credential: Some("p".into()),
                },
            ],
            resume: None,
        },
        Event::Joined {
            room: foo(),
            peer: peer(2),
            peers: vec![peer(1)],
            ice_servers: vec![],
            resume: None,
        },
        Event::Join {
            room: foo(),
            peer: peer(2),
        },
        Event::Full { room: foo() },
        Event::Message {
            from: peer(1),
            data: Signal::Text {
                text: "hello".into(),
            },
        },
        Event::Message {
            from: peer(2),
            data: Signal::Description {
                sdp_type: SdpType::Answer,
                sdp: "v=0\r\n".into(),
            },
        },
        Event::Left {
            room: foo(),
            peer: peer(2),
        },
        Event::Error {
            code: ErrorCode::NotInRoom,
            message: "join a room before sending messages".into(),
        },
        Event::Created {
            room: foo(),
            peer: peer(1),
            ice_servers: vec![],
            resume: resumable("000102030405060708090a0b0c0d0e0f"),
        },
        Event::Joined {
            room: foo(),
            peer: peer(2),
            peers: vec![peer(1)],
            ice_servers: vec![],
            resume: resumable("f0e0d0c0b0a090807060504030201000"),
        },
        Event::Away {
            room: foo(),
            peer: peer(2),
        },
        Event::Back {
            room: foo(),
            peer: peer(2),
        },
        Event::Resumed {
            room: foo(),
            peer: peer(2),
            received: 7,
            resume: Resumable {
                key: key("0f0e0d0c0b0a09080706050403020100"),
                window_ms: 25_000,
            },
            incomplete: false,
        },
        Event::Resumed {
            room: foo(),
            peer: peer(2),
            received: 0,
            resume: Resumable {
                key: key("00112233445566778899aabbccddeeff"),
                window_ms: 25_000,
            },
            incomplete: true,
        },
        Event::Ack { received: 12 },
        Event::Error {
            code: ErrorCode::ResumeExpired,
            message: "the session's window ended; join as a new peer".into(),
        },
    ]
}

#[test]
fn golden_requests_round_trip() {
    let lines: Vec<&str> = golden::REQUESTS.lines().collect();
    let expected = expected_requests();
    assert_eq!(lines.len(), expected.len());
    for (line, want) in lines.iter().zip(expected) {
        let got: Request<Signal> = serde_json::from_str(line).expect(line);
        assert_eq!(got, want, "decoding {line}");
        assert_eq!(serde_json::to_string(&got).expect("encodes"), *line);
    }
}

#[test]
fn golden_events_round_trip() {
    let lines: Vec<&str> = golden::EVENTS.lines().collect();
    let expected = expected_events();
    assert_eq!(lines.len(), expected.len());
    for (line, want) in lines.iter().zip(expected) {
        let got: Event<Signal> = serde_json::from_str(line).expect(line);
        assert_eq!(got, want, "decoding {line}");
        assert_eq!(serde_json::to_string(&got).expect("encodes"), *line);
    }
}

/// `variants!(Enum { A, B, ... })`: the names of `Enum`'s variants, and a function giving
/// a value's. The function's `match` names every listed variant and nothing else, so a
/// variant missing from the list is a compile error, not a variant the tests skip.
macro_rules! variants {
    ($enum:ident $(<$data:ty>)? { $($variant:ident),+ $(,)? }) => {
        (
            &[$(stringify!($variant)),+] as &[&str],
            |value: &$enum $(<$data>)?| -> &'static str {
                match value {
                    $($enum::$variant { .. } => stringify!($variant),)+
                }
            },
        )
    };
}

/// Every value of a fieldless enum, listed once: the `match` makes a missing one a compile
/// error.
macro_rules! every {
    ($enum:ident { $($variant:ident),+ $(,)? }) => {{
        let exhaustive = |value: $enum| match value {
            $($enum::$variant => (),)+
        };
        let all = [$($enum::$variant),+];
        all.into_iter().for_each(exhaustive);
        all
    }};
}

/// Which variants of `all` the `seen` names miss.
fn missing<'a>(all: &[&'a str], seen: &[&str]) -> Vec<&'a str> {
    all.iter().copied().filter(|v| !seen.contains(v)).collect()
}

#[test]
fn every_variant_has_a_golden_example() {
    let (requests, request_variant) = variants!(Request<Signal> {
        CreateOrJoin,
        Message,
        Leave,
        Resume,
        Ack
    });
    let (events, event_variant) = variants!(Event<Signal> {
        Created,
        Joined,
        Join,
        Full,
        Message,
        Left,
        Away,
        Back,
        Resumed,
        Ack,
        Error
    });
    let (signals, signal_variant) = variants!(Signal {
        Text,
        Description,
        Candidate,
        Bye,
        Media
    });

    let golden_requests: Vec<Request<Signal>> = golden::REQUESTS
        .lines()
        .map(|line| serde_json::from_str(line).expect(line))
        .collect();
    let golden_events: Vec<Event<Signal>> = golden::EVENTS
        .lines()
        .map(|line| serde_json::from_str(line).expect(line))
        .collect();
    let seen: Vec<&str> = golden_requests.iter().map(request_variant).collect();
    assert_eq!(
        missing(requests, &seen),
        [""; 0],
        "requests without a golden line"
    );
    let seen: Vec<&str> = golden_events.iter().map(event_variant).collect();
    assert_eq!(
        missing(events, &seen),
        [""; 0],
        "events without a golden line"
    );

    // Signals travel in both directions' messages; each kind must be in one of them.
    let data = golden_requests
        .iter()
        .filter_map(|r| match r {
            Request::Message { data, .. } => Some(data),
            _ => None,
        })
        .chain(golden_events.iter().filter_map(|e| match e {
            Event::Message { data, .. } => Some(data),
            _ => None,
        }));
    let seen: Vec<&str> = data.map(signal_variant).collect();
    assert_eq!(
        missing(signals, &seen),
        [""; 0],
        "signals without a golden line"
    );
}

#[test]
fn protocol_md_quotes_every_golden_frame() {
    let doc = include_str!("../../PROTOCOL.md");
    for line in golden::REQUESTS.lines().chain(golden::EVENTS.lines()) {
        assert!(doc.contains(line), "PROTOCOL.md lacks the example {line}");
    }
}

#[test]
fn relay_decodes_data_without_parsing_it() {
    let frame = r#"{"to":7,"data":{"any":["json",1,null]},"type":"message","extra":true}"#;
    let request: Request<&RawValue> = serde_json::from_str(frame).expect("decodes");
    let Request::Message { data, to } = request else {
        panic!("unexpected {request:?}");
    };
    assert_eq!(data.get(), r#"{"any":["json",1,null]}"#);
    assert_eq!(to, Some(peer(7)));
    let relayed = Event::Message {
        from: peer(3),
        data,
    };
    assert_eq!(
        serde_json::to_string(&relayed).expect("encodes"),
        r#"{"type":"message","from":3,"data":{"any":["json",1,null]}}"#
    );
}

#[test]
fn the_relays_direct_message_json_equals_the_serialized_event() {
    for (from, data) in [
        (1, r#""x""#),
        (10, "0"),
        (1_000_007, "{}"),
        (
            42,
            r#"{"kind":"description","sdp_type":"offer","sdp":"v=0\r\n"}"#,
        ),
        (PeerId::MAX, r#"[1,{"a":null},"é"]"#),
    ] {
        let data: &RawValue = serde_json::from_str(data).expect("JSON");
        let event = Event::Message {
            from: peer(from),
            data,
        };
        assert_eq!(
            message_json(peer(from), data.get()),
            serde_json::to_string(&event).expect("encodes")
        );
    }
}

#[test]
fn malformed_requests_are_refused() {
    let refused = [
        r#"{"type":"create_or_join"}"#,
        r#"{"type":"create_or_join","room":""}"#,
        r#"{"type":"create_or_join","room":"a\nb"}"#,
        r#"{"type":"create_or_join","room":42}"#,
        r#"{"type":"message"}"#,
        r#"{"type":"message","data":null}"#,
        r#"{"type":"message","data":1,"to":0}"#,
        r#"{"type":"message","data":1,"to":9007199254740992}"#,
        r#"{"type":"message","data":1,"to":"1"}"#,
        r#"{"type":"dance"}"#,
        r#"{"room":"foo"}"#,
        r#"[]"#,
    ];
    for frame in refused {
        assert!(
            serde_json::from_str::<Request<&RawValue>>(frame).is_err(),
            "accepted {frame}"
        );
    }
}

#[test]
fn unknown_fields_and_error_codes_are_tolerated() {
    let request: Request<&RawValue> =
        serde_json::from_str(r#"{"type":"leave","reason":"bored"}"#).expect("decodes");
    assert!(matches!(request, Request::Leave));
    let event: Event<Signal> =
        serde_json::from_str(r#"{"type":"error","code":"from_the_future","message":"x","id":1}"#)
            .expect("decodes");
    assert!(matches!(
        event,
        Event::Error {
            code: ErrorCode::Unknown,
            ..
        }
    ));
}

#[test]
fn room_names_are_validated() {
    assert!(RoomName::new("foo").is_ok());
    assert!(RoomName::new("салон 🎥").is_ok());
    assert!(RoomName::new("x".repeat(RoomName::MAX_CHARS)).is_ok());
    assert!(RoomName::new("é".repeat(RoomName::MAX_CHARS)).is_ok());
    assert!(RoomName::new("x".repeat(RoomName::MAX_CHARS + 1)).is_err());
    assert!(RoomName::new("").is_err());
    assert!(RoomName::new("tab\there").is_err());
    assert!(RoomName::new("nul\0").is_err());
    assert!(RoomName::new("\u{7f}").is_err());
}

#[test]
fn peer_ids_are_validated() {
    assert!(PeerId::new(0).is_err());
    assert_eq!(PeerId::new(1).map(PeerId::get), Ok(1));
    assert!(PeerId::new(PeerId::MAX).is_ok());
    assert!(PeerId::new(PeerId::MAX + 1).is_err());
}

#[test]
fn wire_spellings_agree_with_serde() {
    // Every known code is checked in the crate itself (`frames.rs`), where `ErrorCode`'s
    // match is exhaustive; here, codes from a newer relay.
    for code in ["unknown", "from_the_future", "Forbidden", ""] {
        let quoted = format!("\"{code}\"");
        let decoded: ErrorCode = serde_json::from_str(&quoted).expect("decodes");
        assert_eq!(decoded, ErrorCode::Unknown, "{code}");
        assert_eq!(ErrorCode::from_wire(code), decoded, "{code}");
    }
    let sdp_types = every!(SdpType {
        Offer,
        Pranswer,
        Answer,
        Rollback
    });
    for sdp_type in sdp_types {
        let wire = sdp_type.as_str();
        let quoted = format!("\"{wire}\"");
        let decoded: SdpType = serde_json::from_str(&quoted).expect("decodes");
        assert_eq!(decoded, sdp_type, "{wire}");
        assert_eq!(SdpType::from_wire(wire), Some(sdp_type), "{wire}");
        assert_eq!(serde_json::to_string(&sdp_type).expect("encodes"), quoted);
    }
    for bad in ["Offer", "", "offer ", "unknown"] {
        let quoted = format!("\"{bad}\"");
        assert!(serde_json::from_str::<SdpType>(&quoted).is_err(), "{bad}");
        assert_eq!(SdpType::from_wire(bad), None, "{bad}");
    }
}
