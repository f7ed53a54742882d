//! Sessions across relays: with rooms in Redis, a resumable session resumes on whichever
//! relay its client reaches, and nothing sent either way is lost, duplicated or
//! reordered; the room sees no `left` and no `join`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use signalroom_protocol::{ErrorCode, Event, PeerId, Request};
use signalroom_server::Config;
use support::{
    client_at_path, CutProxy, RedisServer, Relay, RelayProcess, Resumed, Session, TempDir,
};

/// A relay on `redis` whose sessions wait `window_secs`, and whose limits the tests'
/// bursts stay under.
async fn relay(redis: &RedisServer, window_secs: f64) -> Result<Relay> {
    Relay::start(config(redis, window_secs)).await
}

/// The configuration of [`relay`].
fn config(redis: &RedisServer, window_secs: f64) -> Config {
    Config {
        redis_url: Some(redis.url.clone()),
        resume_window: window_secs,
        room_capacity: 4,
        rate_per_sec: 100_000,
        rate_burst: 100_000,
        // Room for a burst the test's client reads more slowly than it comes.
        outbox_frames: 65_536,
        outbox_bytes: 8 << 20,
        resume_buffer: 4 << 20,
        ..Config::default()
    }
}

/// Reads `session` until it has every number up to `last` from each sender in `next`
/// (with the number it expects next from each), in order and once; fails on a `left`, a
/// `join`, a number out of order or from anyone else, or anything else.
async fn take_numbers(session: &mut Session, next: &mut [(PeerId, u64)], last: u64) -> Result<()> {
    while next.iter().any(|(_, n)| *n <= last) {
        let event = session.recv().await.with_context(|| {
            format!(
                "peer {} waiting for numbers {next:?} to {last}",
                session.peer
            )
        })?;
        let (sender, n) = match &event {
            Event::Away { .. } | Event::Back { .. } => continue,
            Event::Message { from, data } => (*from, data["n"].as_u64()),
            other => bail!("peer {} got {other:?} waiting for {next:?}", session.peer),
        };
        let Some((_, expected)) = next.iter_mut().find(|(p, _)| *p == sender) else {
            bail!("peer {} got a number from {sender}", session.peer);
        };
        ensure!(
            n == Some(*expected),
            "peer {} got number {n:?} from {sender}, expected {expected}",
            session.peer
        );
        *expected += 1;
    }
    Ok(())
}

/// `a` moves between two relays, cut at random points while three members keep sending:
/// `a` and `c` (who stays on the first relay) to everyone, `b` (on the other relay) to
/// `a`. Every number arrives once and in order, and ids never change.
#[tokio::test]
async fn a_session_moves_between_relays_and_nothing_is_lost() -> Result<()> {
    let redis = RedisServer::start().await?;
    let relays = [relay(&redis, 20.0).await?, relay(&redis, 20.0).await?];
    let proxies = [
        CutProxy::start(relays[0].addr).await?,
        CutProxy::start(relays[1].addr).await?,
    ];
    let (mut a, _) = Session::join(proxies[0].addr, "moves").await?;
    let (mut b, _) = Session::join(relays[1].addr, "moves").await?;
    let (mut c, _) = Session::join(relays[0].addr, "moves").await?;
    for (seen, by) in [(b.peer, a.peer), (c.peer, a.peer), (c.peer, b.peer)] {
        let by = if by == a.peer { &mut a } else { &mut b };
        match by.recv().await? {
            Event::Join { peer, .. } if peer == seen => {}
            other => bail!("expected {seen}'s join, got {other:?}"),
        }
    }
    let (a_id, b_id, c_id) = (a.peer, b.peer, c.peer);
    let mut a_next = [(b_id, 1), (c_id, 1)];
    let mut b_next = [(a_id, 1), (c_id, 1)];
    let mut c_next = [(a_id, 1)];
    let mut dice = 0x7e1a_4b0du64;
    let mut roll = |range: std::ops::Range<u64>| {
        dice ^= dice << 13;
        dice ^= dice >> 7;
        dice ^= dice << 17;
        range.start + dice % (range.end - range.start)
    };
    let mut sent = 0u64;
    let mut on = 0;
    for round in 0..12 {
        let burst = roll(20..60);
        let cut_at = roll(0..burst);
        for i in 0..burst {
            if i == cut_at {
                proxies[on].cut();
            }
            sent += 1;
            a.say(json!({ "n": sent }), None).await?;
            b.say(json!({ "n": sent }), Some(a_id)).await?;
            c.say(json!({ "n": sent }), None).await?;
        }
        tokio::time::sleep(Duration::from_millis(roll(0..300))).await;
        proxies[on].mend();
        on = 1 - on;
        match a.resume(proxies[on].addr).await? {
            Resumed::Yes { .. } => {}
            Resumed::No(code) => {
                bail!("round {round}: the resume on relay {on} was refused: {code}")
            }
        }
        ensure!(a.peer == a_id, "a's id changed");
        take_numbers(&mut a, &mut a_next, sent).await?;
        take_numbers(&mut b, &mut b_next, sent).await?;
        take_numbers(&mut c, &mut c_next, sent).await?;
    }
    // Nobody heard of a member coming or going, and every seat is where it was.
    for session in [&mut a, &mut b, &mut c] {
        session.ack().await;
    }
    let mut d = client_at_path(relays[1].addr, "/ws").await?;
    let d_id = match d.join("moves").await? {
        Event::Joined { peer, peers, .. } if peers.len() == 3 => peer,
        other => bail!("expected to join a room of three, got {other:?}"),
    };
    for session in [&mut a, &mut b, &mut c] {
        match session.recv().await? {
            Event::Join { peer, .. } if peer == d_id => {}
            other => bail!("expected d's join and nothing else, got {other:?}"),
        }
    }
    Ok(())
}

/// A resume on another relay while the old connection still looks alive there: the old
/// connection is closed with 4000, and what it was sent but never read comes once.
#[tokio::test]
async fn a_half_open_session_moves_to_another_relay() -> Result<()> {
    let redis = RedisServer::start().await?;
    let (one, two) = (relay(&redis, 20.0).await?, relay(&redis, 20.0).await?);
    let (mut a, _) = Session::join(one.addr, "halfopen").await?;
    let (mut b, _) = Session::join(one.addr, "halfopen").await?;
    ensure!(matches!(a.recv().await?, Event::Join { .. }));
    let mut old = std::mem::replace(&mut a.client, client_at_path(two.addr, "/ws?resume").await?);
    b.say(json!({ "n": 1 }), Some(a.peer)).await?;
    // The old connection reads nothing; b's frame waits there, unacknowledged.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ensure!(matches!(a.resume_here().await?, Resumed::Yes { .. }));
    ensure!(
        old.expect_close().await? == Some(4000),
        "the old connection is closed with 4000"
    );
    let mut next = [(b.peer, 1)];
    take_numbers(&mut a, &mut next, 1).await?;
    // Both ways after the move: a on relay two, b on relay one.
    a.say(json!({ "n": 1 }), None).await?;
    b.say(json!({ "n": 2 }), Some(a.peer)).await?;
    take_numbers(&mut a, &mut next, 2).await?;
    take_numbers(&mut b, &mut [(a.peer, 1)], 1).await?;
    a.client.expect_silence().await?;
    Ok(())
}

/// On another relay, as on the session's own: a wrong key is refused, a late resume is
/// told `resume_expired`, and the room got `left` at the window's end.
#[tokio::test]
async fn another_relay_refuses_a_wrong_key_and_tells_a_late_resume() -> Result<()> {
    let redis = RedisServer::start().await?;
    let (one, two) = (relay(&redis, 1.0).await?, relay(&redis, 1.0).await?);
    let proxy = CutProxy::start(one.addr).await?;
    let (mut a, _) = Session::join(proxy.addr, "late").await?;
    let (mut b, _) = Session::join(two.addr, "late").await?;
    ensure!(matches!(a.recv().await?, Event::Join { .. }));
    proxy.cut();
    // A key that is not the session's.
    let mut thief = Session::join(two.addr, "elsewhere").await?.0;
    thief.peer = a.peer;
    ensure!(thief.resume(two.addr).await? == Resumed::No(ErrorCode::ResumeRefused));
    ensure!(matches!(b.recv().await?, Event::Away { peer, .. } if peer == a.peer));
    match b.recv().await? {
        Event::Left { peer, .. } if peer == a.peer => {}
        other => bail!("expected left at the window's end, got {other:?}"),
    }
    ensure!(a.resume(two.addr).await? == Resumed::No(ErrorCode::ResumeExpired));
    Ok(())
}

/// Reads `session` for `period`, checking that what comes is in order and once (as
/// [`take_numbers`] does).
async fn take_for(
    session: &mut Session,
    next: &mut [(PeerId, u64)],
    period: Duration,
) -> Result<()> {
    let until = tokio::time::Instant::now() + period;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let Ok(event) = tokio::time::timeout(left, session.recv()).await else {
            return Ok(());
        };
        let (sender, n) = match event? {
            Event::Message { from, data } => (from, data["n"].as_u64()),
            other => bail!("peer {} got {other:?}", session.peer),
        };
        let Some((_, expected)) = next.iter_mut().find(|(p, _)| *p == sender) else {
            bail!("a number from {sender}");
        };
        ensure!(
            n == Some(*expected),
            "got {n:?} from {sender}, expected {expected}"
        );
        *expected += 1;
    }
}

/// A member on the session's first relay sends all along while the session moves back and
/// forth: what it sent just before each move (delivered on the old relay, published
/// behind the move, or not delivered on the new one yet) arrives once, in order.
#[tokio::test]
async fn what_a_member_sends_during_moves_arrives_once() -> Result<()> {
    let redis = RedisServer::start().await?;
    let relays = [relay(&redis, 20.0).await?, relay(&redis, 20.0).await?];
    let proxies = [
        CutProxy::start(relays[0].addr).await?,
        CutProxy::start(relays[1].addr).await?,
    ];
    let (mut a, _) = Session::join(proxies[0].addr, "busy").await?;
    let mut c = client_at_path(relays[0].addr, "/ws").await?;
    let c_id = match c.join("busy").await? {
        Event::Joined { peer, .. } => peer,
        other => bail!("expected joined, got {other:?}"),
    };
    ensure!(matches!(a.recv().await?, Event::Join { peer, .. } if peer == c_id));
    // A member on the other relay, so that the first publishes what c sends, and reads it.
    let mut d = client_at_path(relays[1].addr, "/ws").await?;
    ensure!(matches!(d.join("busy").await?, Event::Joined { .. }));
    ensure!(matches!(a.recv().await?, Event::Join { .. }));
    let reader = tokio::spawn(async move { while d.recv().await.is_ok() {} });
    const TOTAL: u64 = 6000;
    let sender = tokio::spawn(async move {
        for n in 1..=TOTAL {
            c.send(&Request::<serde_json::Value>::Message {
                data: json!({ "n": n }),
                to: None,
            })
            .await?;
            if n % 20 == 0 {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
        anyhow::Ok(c)
    });
    let mut next = [(c_id, 1)];
    let mut on = 0;
    for round in 0..16 {
        take_for(&mut a, &mut next, Duration::from_millis(30)).await?;
        proxies[on].cut();
        proxies[on].mend();
        if round % 2 == 0 {
            // The old relay sees the cut first (the session is away there); otherwise the
            // resume may come first (the half-open case).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        on = 1 - on;
        match a.resume(proxies[on].addr).await? {
            Resumed::Yes { .. } => {}
            Resumed::No(code) => bail!("round {round}: the resume was refused: {code}"),
        }
    }
    take_numbers(&mut a, &mut next, TOTAL).await?;
    let _c = sender.await??;
    a.client.expect_silence().await?;
    reader.abort();
    Ok(())
}

/// What one side of a pair sent, for its partner to know when it has everything.
#[derive(Default)]
struct Side {
    sent: AtomicU64,
    stopped: AtomicBool,
}

/// The relays a client may resume on: every one but those stopping.
type Live = Arc<Mutex<Vec<SocketAddr>>>;

/// Drives `session` until the test says stop and everything its partner sent has come:
/// sends its partner a number every few milliseconds, checks that the partner's come in
/// order and once, and whenever its connection ends, resumes on a live relay. Returns the
/// session and how many resumes it took.
async fn drive(
    mut session: Session,
    partner: PeerId,
    (me, other): (Arc<Side>, Arc<Side>),
    stop: Arc<AtomicBool>,
    live: Live,
) -> Result<(Session, u32)> {
    let (id, mut next, mut resumes) = (session.peer, 1u64, 0u32);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut pick = u64::from(id);
    loop {
        if stop.load(Ordering::SeqCst) {
            me.stopped.store(true, Ordering::SeqCst);
        }
        let stopped = me.stopped.load(Ordering::SeqCst);
        if stopped
            && other.stopped.load(Ordering::SeqCst)
            && next > other.sent.load(Ordering::SeqCst)
        {
            return Ok((session, resumes));
        }
        tokio::select! {
            event = session.recv() => match event {
                Ok(Event::Message { from, data }) => {
                    ensure!(from == partner, "{id} got a number from {from}");
                    let n = data["n"].as_u64();
                    ensure!(n == Some(next), "{id} got {n:?} from {from}, expected {next}");
                    next += 1;
                }
                Ok(Event::Away { .. } | Event::Back { .. }) => {}
                Ok(other) => bail!("{id} got {other:?}"),
                Err(_) => {
                    // Told to resume elsewhere (4001), or cut: on to a live relay.
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        ensure!(tries < 100, "{id} found no relay to resume on");
                        pick = pick.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let addr = {
                            let live = live.lock().expect("the live relays");
                            live[(pick >> 33) as usize % live.len()]
                        };
                        match session.resume(addr).await {
                            Ok(Resumed::Yes { .. }) => break,
                            Ok(Resumed::No(code)) => bail!("{id}'s resume was refused: {code}"),
                            // Stopping (503), or gone: another.
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                    ensure!(session.peer == id, "{id} came back as {}", session.peer);
                    resumes += 1;
                }
            },
            _ = tick.tick(), if !stopped => {
                let n = me.sent.load(Ordering::SeqCst) + 1;
                session.say(json!({ "n": n }), Some(partner)).await?;
                me.sent.store(n, Ordering::SeqCst);
            }
        }
    }
}

/// Three relays on Redis are restarted one after another (SIGTERM, then a new one) while
/// pairs of resumable clients on all of them send each other numbers: every client is told
/// to resume elsewhere, every session moves with its id and seat, nothing is lost,
/// duplicated or reordered, nobody hears `left` or `join`, and each relay exits once its
/// sessions have gone.
#[tokio::test]
async fn a_rolling_restart_drops_nothing() -> Result<()> {
    const PAIRS: usize = 40;
    let redis = RedisServer::start().await?;
    let args: Vec<String> = [
        "--redis-url",
        &redis.url,
        "--resume-window",
        "20",
        "--rate-per-sec",
        "100000",
        "--rate-burst",
        "100000",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(RelayProcess::start(&args).await?);
    }
    let live: Live = Arc::new(Mutex::new(relays.iter().map(|r| r.addr).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::new();
    for pair in 0..PAIRS {
        let room = format!("rolling-{pair}");
        let (a, _) = Session::join(relays[pair % 3].addr, &room).await?;
        let (b, _) = Session::join(relays[(pair + 1) % 3].addr, &room).await?;
        let (a_side, b_side) = (Arc::new(Side::default()), Arc::new(Side::default()));
        let (a_id, b_id) = (a.peer, b.peer);
        let mut a = a;
        ensure!(matches!(a.recv().await?, Event::Join { peer, .. } if peer == b_id));
        drivers.push(tokio::spawn(drive(
            a,
            b_id,
            (a_side.clone(), b_side.clone()),
            stop.clone(),
            live.clone(),
        )));
        drivers.push(tokio::spawn(drive(
            b,
            a_id,
            (b_side, a_side),
            stop.clone(),
            live.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, relay) in relays.iter_mut().enumerate() {
        let old = relay.addr;
        live.lock().expect("the live relays").retain(|a| *a != old);
        relay.signal("TERM")?;
        let drained = relay.exited(Duration::from_secs(15)).await?;
        eprintln!("relay {i} drained in {drained:?}");
        *relay = RelayProcess::start(&args).await?;
        live.lock().expect("the live relays").push(relay.addr);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut resumes = 0;
    for driver in drivers {
        let (_, took) = tokio::time::timeout(Duration::from_secs(30), driver)
            .await
            .context("a client did not finish")???;
        resumes += took;
    }
    // Each client was on one of the three relays when it restarted.
    ensure!(
        resumes >= 2 * PAIRS as u32,
        "only {resumes} resumes for {PAIRS} pairs"
    );
    Ok(())
}

/// A resumable member on another relay hears `away` and `back` as one on the same relay
/// would, whichever relay the session resumes on.
#[tokio::test]
async fn members_on_other_relays_hear_away_and_back() -> Result<()> {
    let redis = RedisServer::start().await?;
    let (one, two) = (relay(&redis, 20.0).await?, relay(&redis, 20.0).await?);
    let proxies = [
        CutProxy::start(one.addr).await?,
        CutProxy::start(two.addr).await?,
    ];
    let (mut a, _) = Session::join(proxies[0].addr, "notices").await?;
    // b stays on relay two: a is away on relay one, then on relay two.
    let (mut b, _) = Session::join(two.addr, "notices").await?;
    ensure!(matches!(a.recv().await?, Event::Join { peer, .. } if peer == b.peer));
    for (from, to) in [(0, 1), (1, 0)] {
        proxies[from].cut();
        match b.recv().await? {
            Event::Away { peer, .. } if peer == a.peer => {}
            other => bail!("expected a's away, got {other:?}"),
        }
        proxies[from].mend();
        ensure!(matches!(
            a.resume(proxies[to].addr).await?,
            Resumed::Yes { .. }
        ));
        match b.recv().await? {
            Event::Back { peer, .. } if peer == a.peer => {}
            other => bail!("expected a's back, got {other:?}"),
        }
    }
    b.client.expect_silence().await?;
    Ok(())
}

/// The relay holding a session is killed: the session resumes on another relay with its id
/// and seat, told `incomplete` (what the dead relay kept is gone), the room hears no `left`
/// (not even once the dead relay is swept), and both counts start again.
#[tokio::test]
async fn a_session_whose_relay_died_resumes_incomplete_elsewhere() -> Result<()> {
    let redis = RedisServer::start().await?;
    let survivor = Relay::start(Config {
        relay_timeout: 2.0,
        ..config(&redis, 20.0)
    })
    .await?;
    let args: Vec<String> = ["--redis-url", &redis.url, "--relay-timeout", "2"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mut doomed = RelayProcess::start(&args).await?;
    let (mut a, _) = Session::join(doomed.addr, "doomed").await?;
    let (mut b, _) = Session::join(survivor.addr, "doomed").await?;
    ensure!(matches!(a.recv().await?, Event::Join { peer, .. } if peer == b.peer));
    a.say(json!({ "n": 1 }), Some(b.peer)).await?;
    take_numbers(&mut b, &mut [(a.peer, 1)], 1).await?;
    doomed.kill()?;
    let id = a.peer;
    ensure!(
        a.resume(survivor.addr).await?
            == Resumed::Yes {
                relay_received: 0,
                incomplete: true
            }
    );
    ensure!(a.peer == id);
    ensure!(matches!(b.recv().await?, Event::Back { peer, .. } if peer == id));
    // Both ways again, the counts from zero.
    a.say(json!({ "n": 2 }), Some(b.peer)).await?;
    b.say(json!({ "n": 1 }), Some(a.peer)).await?;
    take_numbers(&mut b, &mut [(a.peer, 2)], 2).await?;
    take_numbers(&mut a, &mut [(b.peer, 1)], 1).await?;
    // The dead relay is given up after 2 s: its member, now on the survivor, stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    b.client.expect_silence().await?;
    let mut c = client_at_path(survivor.addr, "/ws").await?;
    match c.join("doomed").await? {
        Event::Joined { peers, .. } if peers.contains(&id) && peers.contains(&b.peer) => {}
        other => bail!("expected to join a and b, got {other:?}"),
    }
    ensure!(matches!(b.recv().await?, Event::Join { .. }));
    a.say(json!({ "n": 3 }), Some(b.peer)).await?;
    take_numbers(&mut b, &mut [(a.peer, 3)], 3).await?;
    Ok(())
}

/// A draining relay refuses new WebSockets with 503 from the moment it hears SIGTERM, and
/// says so in its log as an answer, not an error: an operator's alerts on ERROR lines stay
/// quiet through a deploy.
#[tokio::test]
async fn a_draining_relay_refuses_websockets_without_logging_errors() -> Result<()> {
    let redis = RedisServer::start().await?;
    let dir = TempDir::new("drain-log")?;
    let log = dir.0.join("relay.log");
    let args: Vec<String> = ["--redis-url", &redis.url, "--drain-timeout", "2"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mut relay = RelayProcess::start_with(&args, &[("RUST_LOG", "info")], Some(&log)).await?;
    // A session to hand over keeps the relay draining for a while.
    let (_a, _) = Session::join(relay.addr, "draining").await?;
    relay.signal("TERM")?;
    // Right after the signal: the first upgrade refused is the one to look at.
    let url = format!("ws://{}/ws?resume", relay.addr);
    let refused = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                break response.status().as_u16()
            }
            Err(error) => bail!("the draining relay did not answer with 503: {error}"),
        }
    };
    ensure!(refused == 503, "a draining relay answered {refused}");
    relay.exited(Duration::from_secs(10)).await?;
    let logged = std::fs::read_to_string(&log)?;
    ensure!(
        logged.contains("websocket refused"),
        "the refusal is not in the log:\n{logged}"
    );
    let errors: Vec<&str> = logged.lines().filter(|l| l.contains("ERROR")).collect();
    ensure!(
        errors.is_empty(),
        "errors logged while draining: {errors:#?}"
    );
    Ok(())
}
