//! Several relays on one Redis share one set of rooms (`--redis-url`): pages on different
//! relays meet, capacity stays exact when joins race at different relays, ids never repeat,
//! each peer's frames keep their order, nothing crosses rooms, and the members of a relay
//! that is killed leave their rooms, on one Redis server and on a Redis Cluster; and what
//! relays do when Redis stops, pauses or restarts empty, or a relay is paused. Each test
//! starts its own `redis-server` (or three, for a cluster).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::future::join_all;
use serde_json::{json, Value};
use signalroom_protocol::{Event, PeerId};
use signalroom_server::Config;
use support::*;

/// The id a join gave, whatever the room said.
fn joined_id(event: &Event<Value>) -> Option<PeerId> {
    match event {
        Event::Created { peer, .. } | Event::Joined { peer, .. } => Some(*peer),
        _ => None,
    }
}

async fn pages_on_two_relays_meet_in_one_room(redis: SharedRedis) -> Result<()> {
    let (one, two) = (
        Relay::start(redis.config()).await?,
        Relay::start(redis.config()).await?,
    );
    let (mut a, mut b, mut c) = (
        one.client().await?,
        two.client().await?,
        one.client().await?,
    );
    let a_id = created_peer(a.join("foo").await?)?;
    let b_id = joined_peer(&mut b, "foo", &[a_id]).await?;
    match a.recv().await? {
        Event::Join { peer, .. } if peer == b_id => {}
        other => bail!("expected join of {b_id}, got {other:?}"),
    }
    match c.join("foo").await? {
        Event::Full { .. } => {}
        other => bail!("expected full, got {other:?}"),
    }
    a.say(json!({"sdp": "offer"}), None).await?;
    match b.recv().await? {
        Event::Message { from, data, .. } if from == a_id && data == json!({"sdp": "offer"}) => {}
        other => bail!("expected a's offer, got {other:?}"),
    }
    b.say(json!("answer"), Some(a_id)).await?;
    match a.recv().await? {
        Event::Message { from, data, .. } if from == b_id && data == json!("answer") => {}
        other => bail!("expected b's answer, got {other:?}"),
    }
    c.expect_silence().await?;
    b.send(&signalroom_protocol::Request::Leave).await?;
    match a.recv().await? {
        Event::Left { peer, .. } if peer == b_id => {}
        other => bail!("expected b to leave, got {other:?}"),
    }
    // The seat b left is free again, for a page on either relay.
    joined_peer(&mut c, "foo", &[a_id]).await?;
    Ok(())
}

async fn capacity_is_exact_when_joins_race_at_two_relays(redis: SharedRedis) -> Result<()> {
    let (one, two) = (
        Relay::start(redis.config()).await?,
        Relay::start(redis.config()).await?,
    );
    for round in 0..5 {
        let room = format!("race-{round}");
        let mut clients = Vec::new();
        for n in 0..10 {
            clients.push(if n % 2 == 0 {
                one.client().await?
            } else {
                two.client().await?
            });
        }
        let answers = join_all(clients.iter_mut().map(|c| c.join(&room))).await;
        let mut inside = 0;
        let mut full = 0;
        for answer in answers {
            match answer? {
                Event::Created { .. } | Event::Joined { .. } => inside += 1,
                Event::Full { .. } => full += 1,
                other => bail!("unexpected {other:?}"),
            }
        }
        ensure!(
            (inside, full) == (2, 8),
            "{room}: {inside} inside, {full} full"
        );
    }
    Ok(())
}

#[tokio::test]
async fn peer_ids_never_repeat_across_relays_or_restarts() -> Result<()> {
    let redis = RedisServer::start().await?;
    let mut seen = HashSet::new();
    let mut clients = Vec::new();
    for restart in 0..2 {
        let relays = [
            Relay::start(shared(&redis)).await?,
            Relay::start(shared(&redis)).await?,
        ];
        for (r, relay) in relays.iter().enumerate() {
            for n in 0..10 {
                let mut client = relay.client().await?;
                let event = client.join(&format!("ids-{restart}-{r}-{n}")).await?;
                let id = joined_id(&event).context("a join answer")?;
                ensure!(seen.insert(id), "id {id} handed out twice");
                ensure!(id.get() <= PeerId::MAX, "id {id} is not a safe JSON number");
                // Still connected while the relays restart: their ids are still held.
                clients.push(client);
            }
        }
        for relay in relays {
            let _ = relay.stop.send(());
        }
    }
    Ok(())
}

async fn frames_keep_their_order_across_relays(redis: SharedRedis) -> Result<()> {
    let config = Config {
        rate_per_sec: 100_000,
        rate_burst: 100_000,
        ..redis.config()
    };
    let (one, two) = (
        Relay::start(config.clone()).await?,
        Relay::start(config).await?,
    );
    let (mut a, mut b) = (one.client().await?, two.client().await?);
    meet(&mut a, &mut b, "order").await?;
    const COUNT: u64 = 300;
    for n in 0..COUNT {
        a.say(json!(n), None).await?;
    }
    for n in 0..COUNT {
        match b.recv().await? {
            Event::Message { data, .. } if data == json!(n) => {}
            other => bail!("expected message {n}, got {other:?}"),
        }
    }
    Ok(())
}

async fn directed_messages_reach_only_their_target_on_any_relay(redis: SharedRedis) -> Result<()> {
    let config = Config {
        room_capacity: 3,
        ..redis.config()
    };
    let (one, two) = (
        Relay::start(config.clone()).await?,
        Relay::start(config).await?,
    );
    let (mut a, mut b, mut c) = (
        one.client().await?,
        two.client().await?,
        one.client().await?,
    );
    let (a_id, b_id) = meet(&mut a, &mut b, "trio").await?;
    let c_id = joined_peer(&mut c, "trio", &[a_id, b_id]).await?;
    a.recv().await?;
    b.recv().await?;
    // Another room on the same relays hears nothing of this one.
    let (mut x, mut y) = (two.client().await?, one.client().await?);
    meet(&mut x, &mut y, "elsewhere").await?;
    directed(&mut a, a_id, (b_id, &mut b), &mut c).await?;
    directed(&mut a, a_id, (c_id, &mut c), &mut b).await?;
    x.expect_silence().await?;
    y.expect_silence().await?;
    Ok(())
}

/// `a` sends to `to` alone: `target` gets it, `other` hears nothing.
async fn directed(
    a: &mut Client,
    a_id: PeerId,
    (to, target): (PeerId, &mut Client),
    other: &mut Client,
) -> Result<()> {
    let text = json!(format!("for {to}"));
    a.say(text.clone(), Some(to)).await?;
    match target.recv().await? {
        Event::Message { from, data, .. } if from == a_id && data == text => {}
        unexpected => bail!("expected a's message, got {unexpected:?}"),
    }
    other.expect_silence().await
}

async fn the_members_of_a_killed_relay_leave_their_rooms(redis: SharedRedis) -> Result<()> {
    let survivor = Relay::start(Config {
        relay_timeout: 2.0,
        ..redis.config()
    })
    .await?;
    let mut args = redis.relay_args();
    args.extend(["--relay-timeout".into(), "2".into()]);
    let mut doomed = RelayProcess::start(&args).await?;
    let (mut a, mut b) = (survivor.client().await?, client_at(doomed.addr).await?);
    let (a_id, b_id) = meet(&mut a, &mut b, "failover").await?;
    doomed.kill()?;
    // Its liveness lapses after 2 s; the survivor sweeps every half second.
    match a.recv().await? {
        Event::Left { peer, .. } if peer == b_id => {}
        other => bail!("expected the killed relay's member to leave, got {other:?}"),
    }
    // Its seat is free: the room is not kept full by a member nobody serves.
    let mut c = survivor.client().await?;
    joined_peer(&mut c, "failover", &[a_id]).await?;
    Ok(())
}

#[tokio::test]
async fn without_redis_joins_are_refused_and_a_relays_own_rooms_go_on() -> Result<()> {
    let redis = RedisServer::start().await?;
    let relay = Relay::start(shared(&redis)).await?;
    let (mut a, mut b) = (relay.client().await?, relay.client().await?);
    let (a_id, _) = meet(&mut a, &mut b, "outage").await?;
    let mut late = relay.client().await?;
    drop(redis);
    // Redis is gone: a join, which needs it, is refused at once instead of held...
    late.send(&signalroom_protocol::Request::CreateOrJoin {
        room: room_name("outage-2"),
    })
    .await?;
    late.expect_error(signalroom_protocol::ErrorCode::Unavailable)
        .await?;
    // and the relay tells load balancers it cannot take new pages.
    let (status, body) = http_status(relay.addr, "/readyz").await?;
    ensure!(
        status == 503 && body.contains("rooms unavailable"),
        "readyz: {status} {body}"
    );
    // ...while members on the same relay still reach each other.
    a.say(json!("still here"), None).await?;
    match b.recv().await? {
        Event::Message { from, data, .. } if from == a_id && data == json!("still here") => {}
        other => bail!("expected a's message, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn rooms_come_back_when_redis_restarts_empty() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    let (one, two) = two_relays(&redis, 2.0).await?;
    let (mut a, mut b) = (one.client().await?, two.client().await?);
    let (a_id, b_id) = meet(&mut a, &mut b, "phoenix").await?;
    redis.restart().await?;
    // A few heartbeats (every half second) for the relays to reconnect, resubscribe and
    // put their members back; no page reconnects.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.say(json!("still there?"), None).await?;
    match b.recv().await? {
        Event::Message { from, data, .. } if from == a_id && data == json!("still there?") => {}
        other => bail!("expected a's message after the restart, got {other:?}"),
    }
    // The room is as full as before.
    turned_away(&two, "phoenix").await?;
    // A relay started now takes ids past those still held, as Redis's counter was put back.
    let three = Relay::start(shared(&redis)).await?;
    let mut d = three.client().await?;
    let id = joined_id(&d.join("phoenix-2").await?).context("an id")?;
    ensure!(
        id.get() > a_id.get().max(b_id.get()),
        "id {id} after the restart while {a_id} and {b_id} are held"
    );
    Ok(())
}

#[tokio::test]
async fn a_relay_paused_past_its_timeout_closes_the_members_it_lost() -> Result<()> {
    let redis = RedisServer::start().await?;
    let survivor = Relay::start(Config {
        relay_timeout: 2.0,
        ..shared(&redis)
    })
    .await?;
    let args = ["--redis-url", &redis.url, "--relay-timeout", "2"].map(String::from);
    let paused = RelayProcess::start(&args).await?;
    let (mut a, mut b) = (survivor.client().await?, client_at(paused.addr).await?);
    let (_, b_id) = meet(&mut a, &mut b, "sleeper").await?;
    paused.signal("STOP")?;
    match a.recv().await? {
        Event::Left { peer, .. } if peer == b_id => {}
        other => bail!("expected the paused relay's member to leave, got {other:?}"),
    }
    // Woken, the relay finds it was given up for dead: the member it lost is out of its
    // room at once (b has not read anything yet, so has not answered any close frame)...
    paused.signal("CONT")?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stats: Value = serde_json::from_str(&http_get(paused.addr, "/stats").await?)?;
        if stats["members"] == json!(0) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "b still in its room: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and told to come back (1012), rather than left in a room that no longer has it.
    ensure!(
        b.expect_close().await? == Some(1012),
        "b was not closed with 1012"
    );
    Ok(())
}

#[tokio::test]
async fn a_paused_redis_fills_a_bounded_queue_and_senders_are_told() -> Result<()> {
    let redis = RedisServer::start().await?;
    // Room for what the queue toward Redis releases at once, in b's outbox.
    let config = Config {
        rate_per_sec: 1_000_000,
        rate_burst: 1_000_000,
        outbox_frames: 1024,
        outbox_bytes: 8 << 20,
        ..shared(&redis)
    };
    let (one, two) = (
        Relay::start(config.clone()).await?,
        Relay::start(config).await?,
    );
    let (mut a, mut b) = (one.client().await?, two.client().await?);
    meet(&mut a, &mut b, "backlog").await?;
    redis.signal("STOP")?;
    // Far more than the queue toward Redis holds (4 MiB): once it is full, messages are
    // refused, not buffered.
    let data = json!("x".repeat(16_000));
    for _ in 0..400 {
        a.say(data.clone(), None).await?;
    }
    let refused = match a.recv().await? {
        Event::Error { code, .. } => code,
        other => bail!("expected a refusal, got {other:?}"),
    };
    // A full queue says `rate_limited`; once a pipeline has timed out, `unavailable`.
    use signalroom_protocol::ErrorCode::{RateLimited, Unavailable};
    ensure!(
        matches!(refused, RateLimited | Unavailable),
        "refused with {refused}"
    );
    redis.signal("CONT")?;
    // Redis back: the room works again, and no client was dropped meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut drained = 0;
    while let Ok(Ok(Event::Message { .. })) =
        tokio::time::timeout(Duration::from_secs(3), b.recv()).await
    {
        drained += 1;
    }
    ensure!(drained > 0, "nothing queued before the pause arrived");
    a.say(json!("after"), None).await?;
    Ok(())
}

#[tokio::test]
async fn what_a_relay_missed_while_cut_off_from_redis_it_makes_good() -> Result<()> {
    let redis = RedisServer::start().await?;
    // Relay one reaches Redis through a link the test can cut.
    let (link, one, two) = relays_one_behind_a_cut(&redis).await?;
    let (mut a, mut b) = (one.client().await?, two.client().await?);
    let (_, b_id) = meet(&mut a, &mut b, "cut").await?;
    link.cut();
    // b leaves while relay one cannot hear it: the event is published and lost to it.
    b.send(&signalroom_protocol::Request::Leave).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    link.mend();
    // Back, relay one reads the room again from Redis and tells a what it missed.
    match a.recv().await? {
        Event::Left { peer, .. } if peer == b_id => {}
        other => bail!("expected b to leave, got {other:?}"),
    }
    a.expect_silence().await?;
    Ok(())
}

/// Two relays on `redis`, each giving the other up after `relay_timeout` seconds (after
/// a loss of data, joins are held that long while they put their members back).
async fn two_relays(redis: &RedisServer, relay_timeout: f64) -> Result<(Relay, Relay)> {
    let config = Config {
        relay_timeout,
        ..shared(redis)
    };
    Ok((
        Relay::start(config.clone()).await?,
        Relay::start(config).await?,
    ))
}

/// Two relays on `redis` (timeout 2 s), the first reaching it through a link the test can
/// cut.
async fn relays_one_behind_a_cut(redis: &RedisServer) -> Result<(CutProxy, Relay, Relay)> {
    let link = CutProxy::start(redis.addr()).await?;
    let config = Config {
        relay_timeout: 2.0,
        ..shared(redis)
    };
    let one = Relay::start(Config {
        redis_url: Some(format!("redis://{}", link.addr)),
        ..config.clone()
    })
    .await?;
    Ok((link, one, Relay::start(config).await?))
}

/// Reads events until `want` says one is it; fails on a `left` in the meantime, or after
/// `within`.
async fn await_event(
    client: &mut Client,
    within: Duration,
    want: impl Fn(&Event<Value>) -> bool,
) -> Result<Event<Value>> {
    tokio::time::timeout(within, async {
        loop {
            let event = match client.recv().await {
                Ok(event) => event,
                Err(error) if error.to_string().contains("no frame in time") => continue,
                Err(error) => return Err(error),
            };
            if want(&event) {
                return Ok(event);
            }
            if let Event::Left { peer, .. } = event {
                bail!("peer {peer} left meanwhile");
            }
        }
    })
    .await
    .context("waited too long")?
}

async fn a_relay_stopped_by_sigterm_tells_its_rooms_at_once(redis: SharedRedis) -> Result<()> {
    // The default timeout (10 s): a `left` sooner than that is the stopping relay's own.
    let survivor = Relay::start(redis.config()).await?;
    let mut doomed = RelayProcess::start(&redis.relay_args()).await?;
    let (mut a, mut b) = (survivor.client().await?, client_at(doomed.addr).await?);
    let (a_id, b_id) = meet(&mut a, &mut b, "deploy").await?;
    doomed.signal("TERM")?;
    match a.recv().await? {
        Event::Left { peer, .. } if peer == b_id => {}
        other => bail!("expected b to leave when its relay stopped, got {other:?}"),
    }
    // Its seat is free at once, and the stopped relay is gone for good.
    let mut c = survivor.client().await?;
    let c_id = joined_peer(&mut c, "deploy", &[a_id]).await?;
    match a.recv().await? {
        Event::Join { peer, .. } if peer == c_id => {}
        other => bail!("expected c to join, got {other:?}"),
    }
    doomed.kill()?;
    a.expect_silence().await
}

#[tokio::test]
async fn a_room_never_overfills_when_redis_restarts_empty() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    // The hold lasts one relay timeout: long enough, on a machine as loaded as a test
    // run's, for both relays to notice the loss and put their members back.
    let (one, two) = two_relays(&redis, 5.0).await?;
    let (mut a, mut b) = (one.client().await?, two.client().await?);
    let (a_id, b_id) = meet(&mut a, &mut b, "phoenix").await?;
    redis.restart().await?;
    // Right after the restart, a newcomer asks at both relays in turn, every 150 ms: the
    // room is full (or Redis unavailable for a moment), never created or joined.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut full, mut waited) = (0, 0);
    for attempt in 0..24 {
        let relay = if attempt % 2 == 0 { &one } else { &two };
        let Ok(mut c) = relay.client().await else {
            waited += 1;
            continue;
        };
        match c.join("phoenix").await {
            Ok(Event::Full { .. }) => full += 1,
            Ok(Event::Error { .. }) | Err(_) => waited += 1,
            Ok(other) => bail!("attempt {attempt}: the newcomer got {other:?} in a full room"),
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    ensure!(full > 0, "never told full ({waited} waits)");
    // The members kept their room and their ids, and still reach each other.
    a.say(json!("still there?"), None).await?;
    match b.recv().await? {
        Event::Message { from, data, .. } if from == a_id && data == json!("still there?") => {}
        other => bail!("expected a's message after the restart, got {other:?}"),
    }
    b.say(json!("yes"), Some(a_id)).await?;
    match a.recv().await? {
        Event::Message { from, .. } if from == b_id => Ok(()),
        other => bail!("expected b's answer, got {other:?}"),
    }
}

#[tokio::test]
async fn ids_stay_unique_when_redis_restarts_empty() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    let config = Config {
        relay_timeout: 2.0,
        ..shared(&redis)
    };
    let one = Relay::start(config.clone()).await?;
    let mut held = Vec::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut client = one.client().await?;
        held.push(joined_id(&client.join(&format!("held-{i}")).await?).context("an id")?);
        clients.push(client);
    }
    redis.restart().await?;
    // At once, before any relay could put anything back: a relay started now, and its
    // pages, take ids no one holds.
    let two = Relay::start(config).await?;
    let mut fresh = Vec::new();
    for i in 0..3 {
        let mut client = two.client().await?;
        match client.join(&format!("fresh-{i}")).await? {
            Event::Created { peer, .. } => fresh.push(peer),
            other => bail!("expected created, got {other:?}"),
        }
    }
    for id in &fresh {
        ensure!(
            !held.contains(id),
            "id {id} handed out twice: held {held:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn departures_interleaved_with_reconnections_leave_no_ghost() -> Result<()> {
    let redis = RedisServer::start().await?;
    // Relay one reaches Redis through a link the test cuts, over and over.
    let (link, one, two) = relays_one_behind_a_cut(&redis).await?;
    for round in 0..12u64 {
        let mut x = one.client().await?;
        let room = format!("ghost-{}", round % 3);
        match x.join(&room).await? {
            Event::Created { .. } => {}
            other => bail!("round {round}: expected created, got {other:?}"),
        }
        // The departure and the relay's re-registration of its members race: the
        // departure while the link is down (it is sent when Redis answers again), or just
        // before the cut, or just after it mends.
        match round % 3 {
            0 => {
                link.cut();
                x.send(&signalroom_protocol::Request::Leave).await?;
                tokio::time::sleep(Duration::from_millis(20 * (round % 5))).await;
                link.mend();
            }
            1 => {
                drop(x);
                link.cut();
                tokio::time::sleep(Duration::from_millis(30)).await;
                link.mend();
            }
            _ => {
                link.cut();
                tokio::time::sleep(Duration::from_millis(30)).await;
                link.mend();
                x.send(&signalroom_protocol::Request::Leave).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every room is empty in Redis: two pages on the other relay fill each of them.
    for room in ["ghost-0", "ghost-1", "ghost-2"] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (mut b, mut c) = (two.client().await?, two.client().await?);
            let first = b.join(room).await?;
            let second = c.join(room).await?;
            match (&first, &second) {
                (Event::Created { .. }, Event::Joined { .. }) => break,
                _ if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => bail!("{room} holds a ghost: {first:?} then {second:?}"),
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_room_that_exists_elsewhere_is_joined_whatever_the_room_limit() -> Result<()> {
    let redis = RedisServer::start().await?;
    let config = Config {
        max_rooms: 1,
        ..shared(&redis)
    };
    let (one, two) = (
        Relay::start(config.clone()).await?,
        Relay::start(config).await?,
    );
    let (mut a, mut b) = (one.client().await?, two.client().await?);
    let a_id = created_peer(a.join("elsewhere").await?)?;
    created_peer(b.join("here").await?)?;
    // Relay two holds as many rooms as it may, yet a room that exists is not a new one.
    let mut c = two.client().await?;
    joined_peer(&mut c, "elsewhere", &[a_id]).await?;
    // A new room is refused.
    let mut d = two.client().await?;
    d.send(&signalroom_protocol::Request::CreateOrJoin {
        room: room_name("new"),
    })
    .await?;
    d.expect_error(signalroom_protocol::ErrorCode::TooManyRooms)
        .await
}

#[tokio::test]
async fn every_room_works_again_after_a_cluster_failover() -> Result<()> {
    let mut cluster = RedisCluster::start_with(1, 2000).await?;
    let config = Config {
        redis_url: Some(cluster.urls.clone()),
        redis_cluster: true,
        relay_timeout: 4.0,
        ..Config::default()
    };
    let (one, two) = (
        Relay::start(config.clone()).await?,
        Relay::start(config).await?,
    );
    // 24 rooms of two, one member on each relay, the rooms over every master.
    let mut pairs = Vec::new();
    for i in 0..24 {
        let (mut a, mut b) = if i % 2 == 0 {
            (one.client().await?, two.client().await?)
        } else {
            (two.client().await?, one.client().await?)
        };
        let ids = meet(&mut a, &mut b, &format!("failover-{i}")).await?;
        pairs.push((a, b, ids));
    }
    cluster.kill_master_of("signalroom")?;
    // Within the failover (about 4 s) and a few seconds, each room carries messages both
    // ways again on its original connections, and nobody was told `left`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    every_pair_carries_both_ways(&mut pairs, deadline).await?;
    // Capacity holds and the ids are the same: a third member is turned away.
    turned_away(&one, "failover-0").await
}

#[tokio::test]
async fn every_room_works_again_after_a_sentinel_failover() -> Result<()> {
    let mut redis = RedisSentinel::start().await?;
    let config = Config {
        relay_timeout: 4.0,
        ..redis.config()
    };
    let (one, two) = (
        Relay::start(config.clone()).await?,
        Relay::start(config).await?,
    );
    let mut pairs = Vec::new();
    for i in 0..6 {
        let (mut a, mut b) = (one.client().await?, two.client().await?);
        let ids = meet(&mut a, &mut b, &format!("sentinel-{i}")).await?;
        pairs.push((a, b, ids));
    }
    redis.kill_primary()?;
    redis.failed_over().await?;
    // Soon after the Sentinel names the new primary, every room carries messages both ways
    // again on its original connections, and nobody was told `left`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    every_pair_carries_both_ways(&mut pairs, deadline).await?;
    turned_away(&one, "sentinel-0").await
}

/// Each pair (A, B, their ids) carries a message from A to B and one from B to A before
/// `deadline`, with no departure heard.
async fn every_pair_carries_both_ways(
    pairs: &mut [(Client, Client, (PeerId, PeerId))],
    deadline: tokio::time::Instant,
) -> Result<()> {
    for (i, (a, b, (a_id, b_id))) in pairs.iter_mut().enumerate() {
        carries(i, a, b, *a_id, deadline).await?;
        carries(i, b, a, *b_id, deadline).await?;
    }
    Ok(())
}

/// A newcomer at `relay` is told room `room` is full.
async fn turned_away(relay: &Relay, room: &str) -> Result<()> {
    let mut c = relay.client().await?;
    match c.join(room).await? {
        Event::Full { .. } => Ok(()),
        other => bail!("expected full, got {other:?}"),
    }
}

/// Sends numbered messages from `from` until `to` gets one, before `deadline`; fails if
/// `to` hears of a departure meanwhile.
async fn carries(
    room: usize,
    from: &mut Client,
    to: &mut Client,
    from_id: PeerId,
    deadline: tokio::time::Instant,
) -> Result<()> {
    for n in 0.. {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "room {room}: no message from {from_id} after the failover"
        );
        let text = json!(format!("{room}-{from_id}-{n}"));
        from.say(text.clone(), None).await?;
        let got = await_event(
            to,
            Duration::from_millis(700),
            |e| matches!(e, Event::Message { from, data, .. } if *from == from_id && *data == text),
        )
        .await;
        match got {
            Ok(_) => return Ok(()),
            Err(error) if error.to_string().contains("left") => bail!("room {room}: {error:#}"),
            Err(_) => {}
        }
    }
    Ok(())
}

/// The stories every way of sharing rooms must tell, on one Redis server and on a Redis
/// Cluster of three masters (sharded pub/sub, each room in its own hash slot).
macro_rules! on_each_redis {
    ($($story:ident),* $(,)?) => {
        mod server {
            $(
                #[tokio::test]
                async fn $story() -> anyhow::Result<()> {
                    super::$story(super::SharedRedis::server().await?).await
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $story() -> anyhow::Result<()> {
                    super::$story(super::SharedRedis::cluster().await?).await
                }
            )*
        }
    };
}

on_each_redis!(
    pages_on_two_relays_meet_in_one_room,
    capacity_is_exact_when_joins_race_at_two_relays,
    frames_keep_their_order_across_relays,
    directed_messages_reach_only_their_target_on_any_relay,
    the_members_of_a_killed_relay_leave_their_rooms,
    a_relay_stopped_by_sigterm_tells_its_rooms_at_once,
);
