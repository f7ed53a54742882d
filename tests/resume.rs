//! Resumable sessions (`/ws?resume`): a page whose connection drops without a close comes
//! back as the same peer in the same seat within the window, and nothing sent either way is
//! lost, duplicated or reordered; the room sees `away` and `back`, never `left` and `join`.
//! Connections are cut by a proxy, as a network would cut them, at points chosen at random.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use signalroom_protocol::{ErrorCode, Event, PeerId, Request, ResumeKey};
use signalroom_server::Config;
use support::{
    client_at_path, on_each_backend, Backend, CutProxy, Relay, RelayProcess, Resumed, Session,
    TempDir,
};

/// A small deterministic generator (xorshift), for cut points the test can replay.
struct Dice(u64);

impl Dice {
    /// A number in `range`.
    fn roll(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        range.start + self.0 % (range.end - range.start)
    }
}

/// A relay whose sessions wait `window_secs`, and whose rate limit the tests' bursts stay
/// under.
fn config(window_secs: f64) -> Config {
    Config {
        resume_window: window_secs,
        rate_per_sec: 100_000,
        rate_burst: 100_000,
        ..Config::default()
    }
}

/// A number a side sends, and what it came as.
fn numbered(event: &Event<Value>) -> Option<(PeerId, u64)> {
    match event {
        Event::Message { from, data } => Some((*from, data["n"].as_u64()?)),
        _ => None,
    }
}

/// Reads `session` until it has every number up to `last` from `from` after `next`, in
/// order and once; fails on a `left` or `join`, a number out of order, or anything else.
async fn take_numbers(
    session: &mut Session,
    from: PeerId,
    next: &mut u64,
    last: u64,
) -> Result<()> {
    while *next <= last {
        let event = session.recv().await.with_context(|| {
            format!("peer {} waiting for number {next} of {last}", session.peer)
        })?;
        match &event {
            Event::Away { peer, .. } | Event::Back { peer, .. } if *peer == from => continue,
            _ => {}
        }
        let Some((sender, n)) = numbered(&event) else {
            bail!(
                "peer {} got {event:?} while waiting for {next}",
                session.peer
            );
        };
        ensure!(sender == from, "a number from {sender}, not {from}");
        ensure!(
            n == *next,
            "peer {} got number {n}, expected {next}",
            session.peer
        );
        *next += 1;
    }
    Ok(())
}

/// Two sessions in one room, the first through a proxy the test cuts.
async fn pair(addr: SocketAddr, room: &str) -> Result<(CutProxy, Session, Session)> {
    let proxy = CutProxy::start(addr).await?;
    let (mut a, _) = Session::join(proxy.addr, room).await?;
    let (b, _) = Session::join(addr, room).await?;
    match a.recv().await? {
        Event::Join { peer, .. } if peer == b.peer => {}
        other => bail!("expected b's join, got {other:?}"),
    }
    Ok((proxy, a, b))
}

/// A cut of `a`'s connection for `cut`, while both sides keep sending; then `a` resumes.
/// Nothing is lost, duplicated or reordered, both ways, and ids stay.
async fn numbers_survive_cuts(backend: Backend) -> Result<()> {
    let relay = backend.relay(config(20.0)).await?;
    let (proxy, mut a, mut b) = pair(relay.addr, "cuts").await?;
    let (a_id, b_id) = (a.peer, b.peer);
    let mut dice = Dice(0x5e55_1011);
    let (mut sent, mut a_next, mut b_next) = (0u64, 1u64, 1u64);
    // Short cuts at random points in the stream, then a blip and a long outage.
    let mut cuts: Vec<Duration> = (0..10)
        .map(|_| Duration::from_millis(dice.roll(0..200)))
        .collect();
    cuts.push(Duration::from_millis(1500));
    cuts.push(Duration::from_secs(8));
    for cut in cuts {
        let burst = dice.roll(20..60);
        let cut_at = dice.roll(0..burst);
        for i in 0..burst {
            if i == cut_at {
                proxy.cut();
            }
            sent += 1;
            a.say(json!({ "n": sent }), None).await?;
            b.say(json!({ "n": sent }), Some(a_id)).await?;
        }
        tokio::time::sleep(cut).await;
        proxy.mend();
        match a.resume(proxy.addr).await? {
            Resumed::Yes { .. } => {}
            Resumed::No(code) => bail!("the resume was refused: {code}"),
        }
        ensure!(a.peer == a_id, "a's id changed");
        take_numbers(&mut a, b_id, &mut a_next, sent).await?;
        take_numbers(&mut b, a_id, &mut b_next, sent).await?;
    }
    // Once acknowledged, the relay keeps nothing: an exchange of acks empties it.
    a.ack().await;
    b.ack().await;
    let stats = relay.settled_stats(quiet(1, 2)).await?;
    ensure!(stats == quiet(1, 2), "{stats:?}");
    Ok(())
}

/// The counts of a relay with `rooms` rooms of `members` members, nobody away, nothing kept.
fn quiet(rooms: usize, members: usize) -> signalroom_server::Stats {
    signalroom_server::Stats {
        connections: members,
        rooms,
        members,
        away: 0,
        retained_bytes: 0,
    }
}

/// The room sees `away` then `back` (resumable members), never `left` or `join`.
async fn the_room_sees_away_and_back(backend: Backend) -> Result<()> {
    let relay = backend.relay(config(20.0)).await?;
    let (proxy, mut a, mut b) = pair(relay.addr, "churn").await?;
    proxy.cut();
    match b.recv().await? {
        Event::Away { peer, .. } if peer == a.peer => {}
        other => bail!("expected away, got {other:?}"),
    }
    proxy.mend();
    ensure!(
        a.resume(proxy.addr).await?
            == Resumed::Yes {
                relay_received: 1,
                incomplete: false
            }
    );
    match b.recv().await? {
        Event::Back { peer, .. } if peer == a.peer => {}
        other => bail!("expected back, got {other:?}"),
    }
    // Both seats were kept: a third finds the room full, and nobody hears of it.
    let mut c = client_at_path(relay.addr, "/ws").await?;
    ensure!(matches!(c.join("churn").await?, Event::Full { .. }));
    b.client.expect_silence().await?;
    Ok(())
}

on_each_backend!(numbers_survive_cuts, the_room_sees_away_and_back);

#[tokio::test]
async fn a_plain_member_sees_nothing_of_a_blip() -> Result<()> {
    let relay = Relay::start(Config {
        room_capacity: 3,
        ..config(20.0)
    })
    .await?;
    let proxy = CutProxy::start(relay.addr).await?;
    let mut plain = client_at_path(relay.addr, "/ws").await?;
    let first = plain.join("plain").await?;
    ensure!(
        matches!(first, Event::Created { resume: None, .. }),
        "{first:?}"
    );
    let (mut a, _) = Session::join(proxy.addr, "plain").await?;
    ensure!(matches!(plain.recv().await?, Event::Join { .. }));
    proxy.cut();
    plain.expect_silence().await?;
    proxy.mend();
    ensure!(matches!(a.resume(proxy.addr).await?, Resumed::Yes { .. }));
    plain.expect_silence().await?;
    a.say(json!({ "n": 1 }), None).await?;
    match plain.recv().await? {
        Event::Message { from, .. } if from == a.peer => Ok(()),
        other => bail!("expected a's message, got {other:?}"),
    }
}

#[tokio::test]
async fn after_the_window_the_room_gets_left_and_a_resume_is_expired() -> Result<()> {
    let relay = Relay::start(config(0.5)).await?;
    let (proxy, mut a, mut b) = pair(relay.addr, "late").await?;
    proxy.cut();
    ensure!(matches!(b.recv().await?, Event::Away { .. }));
    match b.recv().await? {
        Event::Left { peer, .. } if peer == a.peer => {}
        other => bail!("expected left at the window's end, got {other:?}"),
    }
    proxy.mend();
    ensure!(a.resume(proxy.addr).await? == Resumed::No(ErrorCode::ResumeExpired));
    // The same connection joins as a new peer.
    let joined = a.client.join("late").await?;
    match joined {
        Event::Joined { peer, peers, .. } if peer != a.peer && peers == [b.peer] => {}
        other => bail!("expected to join anew, got {other:?}"),
    }
    ensure!(a.resume(proxy.addr).await? == Resumed::No(ErrorCode::ResumeRefused));
    Ok(())
}

#[tokio::test]
async fn a_session_that_outgrows_its_buffer_ends_and_its_memory_is_freed() -> Result<()> {
    let relay = Relay::start(Config {
        resume_buffer: 4096,
        ..config(20.0)
    })
    .await?;
    let (proxy, mut a, mut b) = pair(relay.addr, "overflow").await?;
    proxy.cut();
    ensure!(matches!(b.recv().await?, Event::Away { .. }));
    let stats = relay.stats().await?;
    ensure!(stats.away == 1, "{stats:?}");
    let filler = "x".repeat(500);
    for n in 0..10 {
        b.say(json!({ "n": n, "filler": filler }), None).await?;
    }
    match b.recv().await? {
        Event::Left { peer, .. } if peer == a.peer => {}
        other => bail!("expected left once a's buffer overflowed, got {other:?}"),
    }
    b.ack().await;
    let after = relay.settled_stats(quiet(1, 1)).await?;
    ensure!(
        after == quiet(1, 1),
        "memory kept for a lost session: {after:?}"
    );
    proxy.mend();
    ensure!(a.resume(proxy.addr).await? == Resumed::No(ErrorCode::ResumeLost));
    Ok(())
}

#[tokio::test]
async fn a_resume_while_the_old_connection_looks_alive_takes_it_over() -> Result<()> {
    let relay = Relay::start(config(20.0)).await?;
    let (_proxy, mut a, mut b) = pair(relay.addr, "halfopen").await?;
    let mut old = std::mem::replace(
        &mut a.client,
        client_at_path(relay.addr, "/ws?resume").await?,
    );
    b.say(json!({ "n": 1 }), Some(a.peer)).await?;
    ensure!(matches!(a.resume_here().await?, Resumed::Yes { .. }));
    ensure!(
        old.expect_close().await? == Some(4000),
        "the old connection is closed with 4000"
    );
    // b's message went to the old connection, which nobody reads, and unacknowledged it
    // comes again after the resume: exactly once.
    let mut next = 1;
    take_numbers(&mut a, b.peer, &mut next, 1).await?;
    a.client.expect_silence().await?;
    Ok(())
}

#[tokio::test]
async fn wrong_spent_foreign_and_repeated_keys_are_refused_alike() -> Result<()> {
    let relay = Relay::start(config(20.0)).await?;
    let (proxy, mut a, b) = pair(relay.addr, "keys").await?;
    let spent = a.key().clone();
    proxy.cut();
    proxy.mend();
    ensure!(matches!(a.resume(proxy.addr).await?, Resumed::Yes { .. }));
    let claims = [
        // The key just spent.
        (a.peer, spent.clone()),
        // Another's key.
        (a.peer, b.key().clone()),
        // A made-up key.
        (a.peer, ResumeKey::new("0123456789abcdef0123456789abcdef")?),
        // A's current key for b's id.
        (b.peer, a.key().clone()),
    ];
    for (peer, key) in claims {
        let mut intruder = client_at_path(relay.addr, "/ws?resume").await?;
        intruder
            .send(&Request::Resume {
                peer,
                key,
                received: 0,
            })
            .await?;
        intruder.expect_error(ErrorCode::ResumeRefused).await?;
    }
    // Not as the first frame, and not on a plain connection.
    let mut late = client_at_path(relay.addr, "/ws?resume").await?;
    late.join("elsewhere").await?;
    late.send(&Request::Resume {
        peer: a.peer,
        key: a.key().clone(),
        received: 0,
    })
    .await?;
    late.expect_error(ErrorCode::ResumeRefused).await?;
    let mut plain = client_at_path(relay.addr, "/ws").await?;
    plain
        .send(&Request::Resume {
            peer: a.peer,
            key: a.key().clone(),
            received: 0,
        })
        .await?;
    plain.expect_error(ErrorCode::ResumeRefused).await?;
    Ok(())
}

#[tokio::test]
async fn guessing_from_one_address_is_throttled() -> Result<()> {
    let relay = Relay::start(config(20.0)).await?;
    let (proxy, mut a, _b) = pair(relay.addr, "guess").await?;
    for n in 0..20u32 {
        let mut guesser = client_at_path(relay.addr, "/ws?resume").await?;
        let key = ResumeKey::new(format!("{n:032x}"))?;
        guesser
            .send(&Request::Resume {
                peer: a.peer,
                key,
                received: 0,
            })
            .await?;
        guesser.expect_error(ErrorCode::ResumeRefused).await?;
    }
    // The address is refused unseen now, even with the right key (the session goes on).
    proxy.cut();
    proxy.mend();
    ensure!(a.resume(proxy.addr).await? == Resumed::No(ErrorCode::ResumeRefused));
    Ok(())
}

#[tokio::test]
async fn resume_keys_never_reach_the_logs() -> Result<()> {
    let dir = TempDir::new("resume-logs")?;
    let log = dir.0.join("relay.log");
    let args = ["--resume-window".to_owned(), "20".to_owned()];
    let relay = RelayProcess::start_with(&args, &[("RUST_LOG", "trace")], Some(&log)).await?;
    let (proxy, mut a, b) = pair(relay.addr, "logs").await?;
    let mut keys = vec![a.key().as_str().to_owned(), b.key().as_str().to_owned()];
    proxy.cut();
    proxy.mend();
    ensure!(matches!(a.resume(proxy.addr).await?, Resumed::Yes { .. }));
    keys.push(a.key().as_str().to_owned());
    let mut wrong = client_at_path(relay.addr, "/ws?resume").await?;
    wrong
        .send(&Request::Resume {
            peer: a.peer,
            key: ResumeKey::new("ffffffffffffffffffffffffffffffff")?,
            received: 0,
        })
        .await?;
    wrong.expect_error(ErrorCode::ResumeRefused).await?;
    keys.push("ffffffffffffffffffffffffffffffff".to_owned());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logged = std::fs::read_to_string(&log)?;
    ensure!(
        logged.contains("resumed"),
        "the relay logged too little: {logged}"
    );
    for key in keys {
        ensure!(!logged.contains(&key), "a resume key was logged:\n{logged}");
    }
    Ok(())
}
