//! The relay's behaviour as the protocol describes it, driven by real WebSocket clients.
//! Each story about rooms runs against each rooms backend (`local::...`, `redis::...`, a
//! Redis server of the test's own); what does not depend on the backend (the page) runs
//! once.

use anyhow::{bail, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use signalroom_protocol::{ErrorCode, Event, Request};
use signalroom_server::{Config, Stats};
use support::*;
use tokio_tungstenite::tungstenite::Message;

on_each_backend!(
    the_seed_story_with_its_broadcast_bug_fixed,
    directed_messages_reach_only_their_addressee,
    bad_frames_get_errors_and_the_connection_stays_usable,
    leaving_and_dropping_free_the_seat_and_empty_rooms_vanish,
    capacity_holds_under_a_hundred_concurrent_joins,
    oversized_frames_close_the_connection_and_spare_the_others,
    configured_ice_servers_reach_everyone_who_enters,
    health_and_readiness_answer_for_load_balancers,
    shutdown_says_going_away_without_announcing_departures,
);

async fn the_seed_story_with_its_broadcast_bug_fixed(backend: Backend) -> Result<()> {
    let relay = backend.relay(Config::default()).await?;
    let (mut a, mut b, mut c) = (
        relay.client().await?,
        relay.client().await?,
        relay.client().await?,
    );
    let mut stranger = relay.client().await?;

    let a_id = created_peer(a.join("foo").await?)?;
    let b_id = joined_peer(&mut b, "foo", &[a_id]).await?;
    assert_eq!(
        a.recv().await?,
        Event::Join {
            room: room_name("foo"),
            peer: b_id
        }
    );
    assert_eq!(
        c.join("foo").await?,
        Event::Full {
            room: room_name("foo")
        }
    );
    created_peer(stranger.join("bar").await?)?;

    a.say(json!({"kind": "text", "text": "hi B"}), None).await?;
    assert_eq!(
        b.recv().await?,
        Event::Message {
            from: a_id,
            data: json!({"kind": "text", "text": "hi B"})
        }
    );
    // Never back to the sender, never to the full-room reject, never to another room.
    a.expect_silence().await?;
    c.expect_silence().await?;
    stranger.expect_silence().await?;

    // A forged `from` is ignored: the relay stamps the real sender.
    b.send_text(r#"{"type":"message","from":424242,"data":"it is me, A"}"#)
        .await?;
    assert_eq!(
        a.recv().await?,
        Event::Message {
            from: b_id,
            data: json!("it is me, A")
        }
    );
    Ok(())
}

async fn directed_messages_reach_only_their_addressee(backend: Backend) -> Result<()> {
    let relay = backend
        .relay(Config {
            room_capacity: 3,
            ..Config::default()
        })
        .await?;
    let (mut a, mut b, mut c) = (
        relay.client().await?,
        relay.client().await?,
        relay.client().await?,
    );
    let mut other_room = relay.client().await?;
    let (a_id, b_id) = meet(&mut a, &mut b, "trio").await?;
    let c_id = joined_peer(&mut c, "trio", &[a_id, b_id]).await?;
    a.recv().await?;
    b.recv().await?;
    let outsider = created_peer(other_room.join("elsewhere").await?)?;

    a.say(json!(1), Some(c_id)).await?;
    assert_eq!(
        c.recv().await?,
        Event::Message {
            from: a_id,
            data: json!(1)
        }
    );
    b.expect_silence().await?;

    // `to` never crosses rooms, and never points back at the sender.
    a.say(json!(2), Some(outsider)).await?;
    a.expect_error(ErrorCode::UnknownPeer).await?;
    a.say(json!(3), Some(a_id)).await?;
    a.expect_error(ErrorCode::UnknownPeer).await?;
    other_room.expect_silence().await?;

    // Undirected goes to both others.
    c.say(json!("all"), None).await?;
    assert_eq!(
        a.recv().await?,
        Event::Message {
            from: c_id,
            data: json!("all")
        }
    );
    assert_eq!(
        b.recv().await?,
        Event::Message {
            from: c_id,
            data: json!("all")
        }
    );
    Ok(())
}

async fn bad_frames_get_errors_and_the_connection_stays_usable(backend: Backend) -> Result<()> {
    let relay = backend.relay(Config::default()).await?;
    let mut client = relay.client().await?;

    client.send_text("{not json").await?;
    client.expect_error(ErrorCode::MalformedJson).await?;
    client.send_text(&"[".repeat(60_000)).await?;
    client.expect_error(ErrorCode::MalformedJson).await?;
    client.send_text(r#"{"type":"dance"}"#).await?;
    client.expect_error(ErrorCode::UnknownType).await?;
    client
        .send_text(r#"{"type":"create_or_join","room":17}"#)
        .await?;
    client.expect_error(ErrorCode::InvalidFrame).await?;
    for room in [String::new(), "x".repeat(65), "line\nbreak".into()] {
        client
            .send_text(&json!({"type": "create_or_join", "room": room}).to_string())
            .await?;
        client.expect_error(ErrorCode::InvalidRoom).await?;
    }
    client.ws.send(Message::binary(vec![1, 2, 3])).await?;
    client.expect_error(ErrorCode::BinaryUnsupported).await?;
    client.say(json!("anyone?"), None).await?;
    client.expect_error(ErrorCode::NotInRoom).await?;
    client.send(&Request::Leave).await?;
    client.expect_error(ErrorCode::NotInRoom).await?;

    created_peer(client.join("after-all-that").await?)?;
    // A second create_or_join is refused while inside a room, even for the same room.
    client
        .send(&Request::CreateOrJoin {
            room: room_name("another"),
        })
        .await?;
    client.expect_error(ErrorCode::AlreadyInRoom).await?;
    client
        .send(&Request::CreateOrJoin {
            room: room_name("after-all-that"),
        })
        .await?;
    client.expect_error(ErrorCode::AlreadyInRoom).await?;
    assert_eq!(
        relay.stats().await?,
        Stats {
            connections: 1,
            rooms: 1,
            members: 1,
            ..Stats::default()
        }
    );
    Ok(())
}

async fn leaving_and_dropping_free_the_seat_and_empty_rooms_vanish(backend: Backend) -> Result<()> {
    let relay = backend.relay(Config::default()).await?;
    let (mut a, mut b) = (relay.client().await?, relay.client().await?);
    let a_id = created_peer(a.join("seat").await?)?;
    let b_id = joined_peer(&mut b, "seat", &[a_id]).await?;
    a.recv().await?;

    b.send(&Request::Leave).await?;
    assert_eq!(
        a.recv().await?,
        Event::Left {
            room: room_name("seat"),
            peer: b_id
        }
    );
    b.expect_silence().await?;

    // The freed seat is taken by a newcomer, and the one who left may go elsewhere.
    let mut c = relay.client().await?;
    let c_id = joined_peer(&mut c, "seat", &[a_id]).await?;
    assert_eq!(
        a.recv().await?,
        Event::Join {
            room: room_name("seat"),
            peer: c_id
        }
    );
    created_peer(b.join("elsewhere").await?)?;

    // A dropped connection is announced like a leave.
    drop(c);
    assert_eq!(
        a.recv().await?,
        Event::Left {
            room: room_name("seat"),
            peer: c_id
        }
    );

    a.send(&Request::Leave).await?;
    b.send(&Request::Leave).await?;
    let want = Stats {
        connections: 2,
        rooms: 0,
        members: 0,
        ..Stats::default()
    };
    assert_eq!(relay.settled_stats(want).await?, want);
    drop((a, b));
    let want = Stats::default();
    assert_eq!(relay.settled_stats(want).await?, want);
    Ok(())
}

async fn capacity_holds_under_a_hundred_concurrent_joins(backend: Backend) -> Result<()> {
    let relay = backend.relay(Config::default()).await?;
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(relay.client().await?);
    }
    let joins = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let event = client.join("crowded").await?;
            anyhow::Ok((event, client))
        })
    });
    let mut inside = 0;
    let mut full = 0;
    let mut keep = Vec::new();
    for join in joins {
        let (event, client) = join.await??;
        match event {
            Event::Created { .. } | Event::Joined { .. } => inside += 1,
            Event::Full { .. } => full += 1,
            other => bail!("unexpected {other:?}"),
        }
        keep.push(client);
    }
    assert_eq!((inside, full), (2, 98));
    assert_eq!(
        relay.stats().await?,
        Stats {
            connections: 100,
            rooms: 1,
            members: 2,
            ..Stats::default()
        }
    );
    Ok(())
}

async fn oversized_frames_close_the_connection_and_spare_the_others(
    backend: Backend,
) -> Result<()> {
    let relay = backend
        .relay(Config {
            max_frame_bytes: 1024,
            ..Config::default()
        })
        .await?;
    let (mut a, mut b) = (relay.client().await?, relay.client().await?);
    let a_id = created_peer(a.join("big").await?)?;
    joined_peer(&mut b, "big", &[a_id]).await?;
    a.recv().await?;

    b.say(json!("x".repeat(2048)), None).await?;
    assert_eq!(b.expect_close().await?, Some(1009), "message too big");
    assert!(matches!(a.recv().await?, Event::Left { .. }));
    a.say(json!("still here"), None).await?;
    a.expect_silence().await?;
    Ok(())
}

async fn configured_ice_servers_reach_everyone_who_enters(backend: Backend) -> Result<()> {
    let config = Config::try_parse_from([
        "signalroom",
        "--ice-server",
        "stun:stun.example.org:3478",
        "--ice-server",
        "turn:turn.example.org:3478 alice secret",
    ])?;
    let relay = backend.relay(config).await?;
    let (mut a, mut b) = (relay.client().await?, relay.client().await?);
    let Event::Created { ice_servers, .. } = a.join("ice").await? else {
        bail!("expected created");
    };
    assert_eq!(ice_servers.len(), 2);
    assert_eq!(ice_servers[1].username.as_deref(), Some("alice"));
    let Event::Joined {
        ice_servers: seen_by_b,
        ..
    } = b.join("ice").await?
    else {
        bail!("expected joined");
    };
    assert_eq!(seen_by_b, ice_servers);
    Ok(())
}

async fn health_and_readiness_answer_for_load_balancers(backend: Backend) -> Result<()> {
    let relay = backend.relay(Config::default()).await?;
    assert_eq!(
        http_status(relay.addr, "/healthz").await?,
        (200, "serving\n".into())
    );
    assert_eq!(
        http_status(relay.addr, "/readyz").await?,
        (200, "ready\n".into())
    );
    Ok(())
}

#[tokio::test]
async fn the_page_is_served_on_the_same_origin() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("signalroom-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), "<title>signalroom</title>")?;
    let relay = Relay::start(Config {
        static_dir: dir.clone(),
        ..Config::default()
    })
    .await?;
    assert_eq!(
        http_get(relay.addr, "/").await?,
        "<title>signalroom</title>"
    );
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

async fn shutdown_says_going_away_without_announcing_departures(backend: Backend) -> Result<()> {
    let relay = backend.relay(Config::default()).await?;
    let (mut a, mut b) = (relay.client().await?, relay.client().await?);
    meet(&mut a, &mut b, "bye").await?;

    drop(relay.stop);
    for client in [&mut a, &mut b] {
        let frame = tokio::time::timeout(PATIENCE, client.ws.next()).await?;
        match frame {
            Some(Ok(Message::Close(Some(close)))) => assert_eq!(u16::from(close.code), 1001),
            other => bail!("expected close 1001, got {other:?}"),
        }
    }
    Ok(())
}
