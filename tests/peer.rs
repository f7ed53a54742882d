//! `signalroom-peer`, the native WebRTC peer, as its users run it: two peers in a room
//! call each other (str0m on each side, UDP on loopback) and chat over the data channel,
//! through one relay or two sharing rooms through Redis; bad input from a member ends
//! that call and not the process; and it exits with a status that says why.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use signalroom_client::{connect, Options, Update};
use signalroom_protocol::call::CALL_PATIENCE_MS;
use signalroom_protocol::{Event, PeerId, RoomName, SdpType, Signal};
use support::{free_port, PeerProcess, PeerReport, RedisServer, RelayProcess, TempDir, TurnServer};

/// Starts a peer in `room` and returns it with its id and the members it found.
async fn enter(
    relay: std::net::SocketAddr,
    room: &str,
) -> Result<(PeerProcess, PeerId, Vec<PeerId>)> {
    let mut peer = PeerProcess::start(relay, room, &[]).await?;
    match peer.next().await? {
        PeerReport::Entered {
            room: entered,
            peer: id,
            peers,
        } => {
            ensure!(entered == room);
            Ok((peer, id, peers))
        }
        other => anyhow::bail!("expected to enter {room}, got {other:?}"),
    }
}

/// Waits until `peer`'s call with `other` is connected and its chat channel open.
async fn call_up(peer: &mut PeerProcess, other: PeerId) -> Result<()> {
    let (_, before) = peer
        .until(|r| *r == PeerReport::ChannelOpen { peer: other })
        .await?;
    ensure!(
        before.contains(&PeerReport::Connected { peer: other }),
        "the channel opened before the call connected: {before:?}"
    );
    ensure!(
        !before
            .iter()
            .any(|r| matches!(r, PeerReport::CallEnded { .. })),
        "{before:?}"
    );
    Ok(())
}

/// `a` says `text`; `b` must print it once, from `a`, over the data channel.
async fn says(a: &mut PeerProcess, a_id: PeerId, b: &mut PeerProcess, text: &str) -> Result<()> {
    a.say(text)?;
    let (heard, _) = b.until(|r| matches!(r, PeerReport::Chat { .. })).await?;
    ensure!(
        heard
            == PeerReport::Chat {
                from: a_id,
                text: text.to_owned(),
                via: "datachannel".into(),
            },
        "{heard:?}"
    );
    Ok(())
}

/// Two peers on `relays` (the first on the first, the second on the last) call and chat
/// both ways, then the first stops with SIGTERM: it exits 0 and the other sees it leave.
async fn two_peers_call_and_chat(first: &RelayProcess, second: &RelayProcess) -> Result<()> {
    let (mut a, a_id, inside) = enter(first.addr, "native").await?;
    ensure!(inside.is_empty());
    let (mut b, b_id, inside) = enter(second.addr, "native").await?;
    ensure!(inside == vec![a_id], "{inside:?}");
    // The member inside makes the offer; both see the call up.
    a.until(|r| *r == PeerReport::Join { peer: b_id }).await?;
    call_up(&mut a, b_id).await?;
    call_up(&mut b, a_id).await?;
    says(&mut a, a_id, &mut b, "hello from a, peer to peer").await?;
    says(&mut b, b_id, &mut a, "and back from b ✓").await?;
    a.signal("TERM")?;
    ensure!(a.exit_code().await? == 0);
    b.until(|r| *r == PeerReport::Left { peer: a_id }).await?;
    Ok(())
}

#[tokio::test]
async fn two_native_peers_call_and_chat_over_their_data_channel() -> Result<()> {
    let relay = RelayProcess::start(&[]).await?;
    two_peers_call_and_chat(&relay, &relay).await
}

#[tokio::test]
async fn two_native_peers_on_two_relays_sharing_rooms_through_redis() -> Result<()> {
    let redis = RedisServer::start().await?;
    let args = vec!["--redis-url".to_owned(), redis.url.clone()];
    let one = RelayProcess::start(&args).await?;
    let two = RelayProcess::start(&args).await?;
    two_peers_call_and_chat(&one, &two).await
}

#[tokio::test]
async fn a_malformed_description_ends_that_call_and_not_the_peer() -> Result<()> {
    let relay = RelayProcess::start(&[]).await?;
    let (mut peer, peer_id, _) = enter(relay.addr, "bad-input").await?;
    // A member that answers the peer's offer with nonsense.
    let (member, mut events) =
        connect::<Signal>(Options::new(&format!("ws://{}", relay.addr))?).await?;
    let entered = member
        .create_or_join(RoomName::new("bad-input").context("room")?)
        .await?;
    let offer = loop {
        match events.next().await.context("the member's events ended")? {
            Update::Event(Event::Message {
                from,
                data: Signal::Description { sdp_type, .. },
            }) if from == peer_id => break sdp_type,
            _ => {}
        }
    };
    ensure!(offer == SdpType::Offer);
    member
        .send_to(
            peer_id,
            Signal::Candidate {
                candidate: "candidate:not a candidate at all".into(),
                sdp_mid: None,
                sdp_m_line_index: None,
            },
        )
        .await?;
    member
        .send_to(
            peer_id,
            Signal::Description {
                sdp_type: SdpType::Answer,
                sdp: "v=0\r\nthis is not a session description\r\n".into(),
            },
        )
        .await?;
    let (ended, _) = peer
        .until(|r| matches!(r, PeerReport::CallEnded { .. }))
        .await?;
    match ended {
        PeerReport::CallEnded { peer, reason } => {
            ensure!(peer == entered.peer);
            ensure!(reason.contains("bad answer"), "{reason}");
        }
        other => anyhow::bail!("{other:?}"),
    }
    // The process goes on: the member's chat through the relay still arrives.
    member
        .send(Signal::Text {
            text: "still there?".into(),
        })
        .await?;
    let (heard, _) = peer.until(|r| matches!(r, PeerReport::Chat { .. })).await?;
    ensure!(
        heard
            == PeerReport::Chat {
                from: entered.peer,
                text: "still there?".into(),
                via: "relay".into(),
            },
        "{heard:?}"
    );
    Ok(())
}

#[tokio::test]
async fn exits_say_why_the_peer_could_not_take_part() -> Result<()> {
    // Nothing listens there.
    let nowhere: std::net::SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut unreachable = PeerProcess::start(nowhere, "any", &[]).await?;
    ensure!(unreachable.exit_code().await? == 3);

    let dir = TempDir::new("peer-auth")?;
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "a-secret-for-the-peer-test")?;
    let guarded =
        RelayProcess::start(&["--auth-secret-file".into(), secret.display().to_string()]).await?;
    let mut refused = PeerProcess::start(guarded.addr, "any", &[]).await?;
    ensure!(refused.exit_code().await? == 4);

    let relay = RelayProcess::start(&[]).await?;
    let (_first, _, _) = enter(relay.addr, "pair").await?;
    let (_second, _, _) = enter(relay.addr, "pair").await?;
    let mut third = PeerProcess::start(relay.addr, "pair", &[]).await?;
    ensure!(third.exit_code().await? == 5);
    Ok(())
}

#[tokio::test]
async fn a_call_whose_path_fails_restarts_ice_and_carries_on() -> Result<()> {
    let relay = RelayProcess::start(&[]).await?;
    let (mut a, a_id, _) = enter(relay.addr, "restart").await?;
    let (mut b, b_id, _) = enter(relay.addr, "restart").await?;
    call_up(&mut a, b_id).await?;
    call_up(&mut b, a_id).await?;
    // B stops answering anything: A's ICE agent gives the path up (after some 20 s of
    // unanswered checks), and A offers again with fresh credentials.
    b.signal("STOP")?;
    let lost = a
        .until_within(Duration::from_secs(40), |r| {
            *r == PeerReport::Disconnected { peer: b_id }
        })
        .await;
    b.signal("CONT")?;
    lost?;
    a.until(|r| *r == PeerReport::Repairing { peer: b_id })
        .await?;
    // B answers the restart once it runs again; the same call connects again.
    let (_, between) = a
        .until(|r| *r == PeerReport::Connected { peer: b_id })
        .await?;
    ensure!(
        !between
            .iter()
            .any(|r| matches!(r, PeerReport::CallEnded { .. } | PeerReport::Left { .. })),
        "{between:?}"
    );
    says(&mut a, a_id, &mut b, "after the restart").await?;
    says(&mut b, b_id, &mut a, "heard you").await?;
    Ok(())
}

#[tokio::test]
async fn a_newcomer_waits_for_the_first_offer_then_makes_it_when_none_comes() -> Result<()> {
    let relay = RelayProcess::start(&[]).await?;
    // A member already inside that never offers (a page would, at once).
    let (member, mut events) =
        connect::<Signal>(Options::new(&format!("ws://{}", relay.addr))?).await?;
    let inside = member
        .create_or_join(RoomName::new("shy").context("room")?)
        .await?;
    let joined_at = Instant::now();
    let (mut peer, peer_id, members) = enter(relay.addr, "shy").await?;
    ensure!(members == vec![inside.peer]);
    let offered_at = loop {
        match events.next().await.context("the member's events ended")? {
            Update::Event(Event::Message {
                from,
                data: Signal::Description { sdp_type, .. },
            }) if from == peer_id => {
                ensure!(sdp_type == SdpType::Offer);
                break Instant::now();
            }
            _ => {}
        }
    };
    let waited = offered_at - joined_at;
    ensure!(
        waited >= Duration::from_millis(u64::from(CALL_PATIENCE_MS)),
        "the newcomer offered after {waited:?}, before the member inside had its turn"
    );
    peer.until(|r| *r == PeerReport::Repairing { peer: inside.peer })
        .await?;
    Ok(())
}

#[tokio::test]
async fn two_peers_held_to_relayed_candidates_call_through_coturn() -> Result<()> {
    const SECRET: &str = "a-turn-secret-for-the-peer-test";
    let turn = TurnServer::start(SECRET).await?;
    let relay = RelayProcess::start_with(
        &["--turn-url".into(), turn.url()],
        &[("RUST_LOG", "warn"), ("SIGNALROOM_TURN_SECRET", SECRET)],
        None,
    )
    .await?;
    // Each offers one candidate: an address coturn relays for it, allocated with the
    // credential the relay minted for it.
    let start = |room| PeerProcess::start(relay.addr, room, &["--relay-only"]);
    let server: std::net::SocketAddr = ([127, 0, 0, 1], turn.port).into();
    let mut ids = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..2 {
        let mut peer = start("relayed").await?;
        let Some(PeerReport::Entered { peer: id, .. }) = peer.next().await.ok() else {
            anyhow::bail!("a peer did not enter");
        };
        match peer.next().await? {
            PeerReport::Relayed {
                server: at,
                relayed,
            } => {
                ensure!(at == server, "allocated on {at}");
                ensure!(relayed.ip() == server.ip() && relayed.port() != server.port());
            }
            other => anyhow::bail!("expected a relayed address, got {other:?}"),
        }
        ids.push(id);
        peers.push(peer);
    }
    let (mut b, mut a) = (peers.pop().context("b")?, peers.pop().context("a")?);
    let (a_id, b_id) = (ids[0], ids[1]);
    call_up(&mut a, b_id).await?;
    call_up(&mut b, a_id).await?;
    says(&mut a, a_id, &mut b, "through coturn").await?;
    says(&mut b, b_id, &mut a, "and back").await?;
    Ok(())
}

#[tokio::test]
async fn a_peer_held_to_relayed_candidates_without_a_turn_server_says_so() -> Result<()> {
    let relay = RelayProcess::start(&[]).await?;
    let mut peer = PeerProcess::start(relay.addr, "no-turn", &["--relay-only"]).await?;
    ensure!(peer.exit_code().await? == 1);
    Ok(())
}
