//! The golden vectors decode to the values below and encode back to the same bytes.

use serde_json::value::RawValue;
use signalroom_protocol::{
    golden, message_json, ErrorCode, Event, IceServer, PeerId, Request, RoomName, SdpType, Signal,
};

fn peer(id: u64) -> PeerId {
    PeerId::new(id).expect("valid id")
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
        Request::Leave,
    ]
}

fn expected_events() -> Vec<Event<Signal>> {
    vec![
        Event::Created {
            room: foo(),
            peer: peer(1),
            ice_servers: vec![],
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
        },
        Event::Joined {
            room: foo(),
            peer: peer(2),
            peers: vec![peer(1)],
            ice_servers: vec![],
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

#[test]
fn every_frame_type_has_a_golden_example() {
    let types = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["type"].as_str().expect("type").to_owned()
            })
            .collect()
    };
    let requests = types(golden::REQUESTS);
    for t in ["create_or_join", "message", "leave"] {
        assert!(requests.iter().any(|r| r == t), "no golden request {t}");
    }
    let events = types(golden::EVENTS);
    for t in [
        "created", "joined", "join", "full", "message", "left", "error",
    ] {
        assert!(events.iter().any(|e| e == t), "no golden event {t}");
    }
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
    let codes = [
        "malformed_json",
        "unknown_type",
        "invalid_frame",
        "invalid_room",
        "not_in_room",
        "already_in_room",
        "unknown_peer",
        "binary_unsupported",
        "rate_limited",
        "too_many_rooms",
        "unavailable",
        "forbidden",
        "unknown",
        "from_the_future",
    ];
    for code in codes {
        let quoted = format!("\"{code}\"");
        let decoded: ErrorCode = serde_json::from_str(&quoted).expect("decodes");
        assert_eq!(ErrorCode::from_wire(code), decoded, "{code}");
        if decoded != ErrorCode::Unknown {
            assert_eq!(decoded.as_str(), code);
        }
    }
    for sdp_type in ["offer", "pranswer", "answer", "rollback", "Offer", ""] {
        let quoted = format!("\"{sdp_type}\"");
        let decoded: Option<SdpType> = serde_json::from_str(&quoted).ok();
        assert_eq!(SdpType::from_wire(sdp_type), decoded, "{sdp_type}");
        if let Some(decoded) = decoded {
            assert_eq!(decoded.as_str(), sdp_type);
        }
    }
}
