//! Every limit of the relay, hit on purpose: what the offender sees, and that nobody else
//! notices.

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use signalroom_protocol::{ErrorCode, Event, Request};
use signalroom_server::{Config, Stats};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

fn config(flags: &[&str]) -> Result<Config> {
    Ok(Config::try_parse_from(
        std::iter::once("signalroom").chain(flags.iter().copied()),
    )?)
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() -> Result<()> {
    let relay = Relay::default().await?;
    let mut client = relay.client().await?;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    client.ws.send(Message::Frame(frame)).await?;
    assert_eq!(client.expect_close().await?, Some(1007));
    Ok(())
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_disconnected() -> Result<()> {
    let relay = Relay::start(config(&["--rate-per-sec", "5", "--rate-burst", "10"])?).await?;
    let mut flooder = relay.client().await?;
    let mut bystander = relay.client().await?;
    created_peer(bystander.join("calm").await?)?;

    // Ten frames pass (each refused on its merits: not in a room), the next is limited.
    for _ in 0..11 {
        flooder.say(json!("spam"), None).await?;
    }
    for _ in 0..10 {
        flooder.expect_error(ErrorCode::NotInRoom).await?;
    }
    flooder.expect_error(ErrorCode::RateLimited).await?;

    // Keeping it up runs out the relay's patience.
    for _ in 0..20 {
        if flooder.say(json!("spam"), None).await.is_err() {
            break;
        }
    }
    assert_eq!(flooder.expect_close().await?, Some(1008));

    // The bystander never noticed: it still leaves and re-creates its room.
    bystander.send(&signalroom_protocol::Request::Leave).await?;
    created_peer(bystander.join("calm").await?)?;
    Ok(())
}

// Eviction is the backend's to announce: on each.
on_each_backend!(a_peer_that_stops_reading_is_dropped_and_its_room_told);

async fn a_peer_that_stops_reading_is_dropped_and_its_room_told(backend: Backend) -> Result<()> {
    let flags = [
        "--outbox-bytes",
        "262144",
        "--rate-per-sec",
        "10000",
        "--rate-burst",
        "10000",
    ];
    let relay = backend.relay(config(&flags)?).await?;
    let (mut sender, mut sleeper) = (relay.client().await?, relay.client().await?);
    let (_, sleeper_id) = meet(&mut sender, &mut sleeper, "flood").await?;
    let (mut c, mut d) = (relay.client().await?, relay.client().await?);
    let (c_id, _) = meet(&mut c, &mut d, "elsewhere").await?;

    // The sleeper never reads again. Its socket buffers fill, then its bounded outbox.
    let blob = json!("x".repeat(32 * 1024));
    let mut dropped = false;
    for _ in 0..2000 {
        sender.say(blob.clone(), None).await?;
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(std::time::Duration::from_millis(1), sender.ws.next()).await
        {
            let event: Event<serde_json::Value> = serde_json::from_str(&text)?;
            assert_eq!(
                event,
                Event::Left {
                    room: room_name("flood"),
                    peer: sleeper_id
                }
            );
            dropped = true;
            break;
        }
    }
    if !dropped {
        match sender.recv().await? {
            Event::Left { peer, .. } if peer == sleeper_id => {}
            other => bail!("expected the sleeper to be dropped, got {other:?}"),
        }
    }
    // Another room never noticed.
    c.say(json!("still fine?"), None).await?;
    assert_eq!(
        d.recv().await?,
        Event::Message {
            from: c_id,
            data: json!("still fine?")
        }
    );
    // Its connection goes too, though the client holds it open and the relay's write to it
    // is stuck.
    let want = Stats {
        connections: 3,
        rooms: 2,
        members: 3,
        ..Stats::default()
    };
    assert_eq!(relay.settled_stats(want).await?, want);
    drop(sleeper);
    Ok(())
}

#[tokio::test]
async fn silent_peers_and_loiterers_are_dropped() -> Result<()> {
    let relay = Relay::start(config(&["--idle-timeout", "0.3", "--join-timeout", "0.5"])?).await?;

    // A connection that never joins a room is closed.
    let mut loiterer = relay.client().await?;
    assert_eq!(loiterer.expect_close().await?, Some(1008));

    let (mut a, mut b) = (relay.client().await?, relay.client().await?);
    let (_, b_id) = meet(&mut a, &mut b, "heartbeat").await?;

    // B stops answering pings (it is never read again); A answers them while it waits.
    let event = a.recv().await?;
    assert_eq!(
        event,
        Event::Left {
            room: room_name("heartbeat"),
            peer: b_id
        }
    );
    drop(b);

    // A, answering pings and in a room, stays.
    a.expect_silence().await?;
    a.expect_silence().await?;
    a.expect_silence().await?;
    a.say(json!("still here"), None).await?;
    a.expect_silence().await?;
    Ok(())
}

#[tokio::test]
async fn foreign_origins_are_refused_and_configured_ones_allowed() -> Result<()> {
    let relay = Relay::start(config(&["--allowed-origin", "https://cdn.example.org"])?).await?;
    let connect = |origin: &'static str| {
        let url = format!("ws://{}/ws", relay.addr);
        async move {
            let mut request = url.into_client_request()?;
            request.headers_mut().insert("origin", origin.parse()?);
            anyhow::Ok(tokio_tungstenite::connect_async(request).await)
        }
    };
    match connect("https://evil.example").await? {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => bail!("expected 403, got {other:?}"),
    }
    assert!(connect("https://cdn.example.org").await?.is_ok());
    assert!(connect("http://localhost:8080").await?.is_ok());
    let own = format!("http://{}", relay.addr);
    assert!(connect(Box::leak(own.into_boxed_str())).await?.is_ok());
    Ok(())
}

#[tokio::test]
async fn global_caps_on_connections_and_rooms() -> Result<()> {
    let relay = Relay::start(config(&["--max-connections", "3", "--max-rooms", "1"])?).await?;
    let (mut a, mut b, mut c) = (
        relay.client().await?,
        relay.client().await?,
        relay.client().await?,
    );
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", relay.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => bail!("expected 503, got {other:?}"),
    }
    // A load balancer asking sends pages elsewhere while the relay is full.
    let (status, body) = http_status(relay.addr, "/readyz").await?;
    ensure!(status == 503, "readyz at the cap: {status} {body}");
    ensure!(body.contains("connection limit"), "{body}");
    let a_id = created_peer(a.join("only").await?)?;
    b.send_text(r#"{"type":"create_or_join","room":"second"}"#)
        .await?;
    b.expect_error(ErrorCode::TooManyRooms).await?;
    joined_peer(&mut c, "only", &[a_id]).await?;

    // A freed connection slot can be taken again.
    drop(b);
    let mut retries = 0;
    loop {
        match tokio_tungstenite::connect_async(format!("ws://{}/ws", relay.addr)).await {
            Ok(_) => break,
            Err(_) if retries < 50 => {
                retries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(error) => bail!("slot never freed: {error}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = Relay::start(config(&["--handshake-timeout", "0.3"])?).await?;
    let mut silent = tokio::net::TcpStream::connect(relay.addr).await?;
    let mut partial = tokio::net::TcpStream::connect(relay.addr).await?;
    partial
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await?;
    for stream in [&mut silent, &mut partial] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf)).await?;
        // Closed: end of stream (or a reset), perhaps after a 408.
        assert!(read.is_err() || buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"));
    }
    Ok(())
}

#[tokio::test]
async fn the_relay_speaks_websocket_as_clients_use_it() -> Result<()> {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    let relay = Relay::default().await?;
    let (mut a, mut b) = (relay.client().await?, relay.client().await?);
    let (a_id, _) = meet(&mut a, &mut b, "frames").await?;

    // A ping is answered with its own bytes.
    a.ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await?;
    loop {
        match tokio::time::timeout(PATIENCE, a.ws.next())
            .await?
            .context("closed")??
        {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"still there?");
                break;
            }
            Message::Ping(_) => {}
            other => bail!("expected a pong, got {other:?}"),
        }
    }

    // A large offer in three fragments, with a ping between them, arrives whole.
    let data = json!({ "sdp": "v=0 ".repeat(2000) });
    let text = serde_json::to_string(&Request::Message {
        data: data.clone(),
        to: None,
    })?;
    let (head, rest) = text.as_bytes().split_at(10);
    let (middle, tail) = rest.split_at(rest.len() / 2);
    let fragment = |bytes: &[u8], kind, fin| {
        Message::Frame(Frame::message(bytes.to_vec(), OpCode::Data(kind), fin))
    };
    a.ws.send(fragment(head, Data::Text, false)).await?;
    a.ws.send(fragment(middle, Data::Continue, false)).await?;
    a.ws.send(Message::Ping(Vec::new().into())).await?;
    a.ws.send(fragment(tail, Data::Continue, true)).await?;
    match b.recv().await? {
        Event::Message { from, data: got } if from == a_id && got == data => {}
        other => bail!("expected the whole offer, got {other:?}"),
    }

    // A client's close is answered with its own code, and its room is told it left.
    b.ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "done".into(),
    })))
    .await?;
    assert_eq!(b.expect_close().await?, Some(4000));
    assert!(matches!(a.recv().await?, Event::Left { .. }));

    // Framing that breaks RFC 6455 closes with 1002: here, a continuation of nothing.
    a.ws.send(fragment(b"orphan", Data::Continue, true)).await?;
    assert_eq!(a.expect_close().await?, Some(1002));
    Ok(())
}
