//! The Rust client (`signalroom-client`) against the relay binary: rooms and messages, a
//! cut connection that resumes with nothing lost, a session that cannot resume and joins
//! again as a new peer, refusals as typed errors, and `wss://` with a given authority.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde_json::{json, Value};
use signalroom_client::{connect, Client, Entered, Error, Events, Options, Update};
use signalroom_protocol::{ErrorCode, Event, PeerId, RoomName};
use support::{CutProxy, RelayProcess, TempDir, TestCert, PATIENCE};

fn room(name: &str) -> RoomName {
    RoomName::new(name).expect("a room name")
}

fn options(addr: std::net::SocketAddr) -> Result<Options> {
    Ok(Options::new(&format!("ws://{addr}"))?)
}

/// The next update, within [`PATIENCE`].
async fn next(events: &mut Events<Value>) -> Result<Update<Value>> {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .context("no update in time")?
        .context("the client ended")
}

/// The next relay event, skipping connection updates; those are returned beside it.
async fn next_event(events: &mut Events<Value>) -> Result<(Event<Value>, Vec<Update<Value>>)> {
    let mut skipped = Vec::new();
    loop {
        match next(events).await? {
            Update::Event(event) => return Ok((event, skipped)),
            other => skipped.push(other),
        }
    }
}

/// `a` in `name`, then `b`; `a` has seen `b` join.
async fn pair(a_options: Options, b_options: Options, name: &str) -> Result<(Member, Member)> {
    let (client, events) = connect::<Value>(a_options).await?;
    let a_in = client.create_or_join(room(name)).await?;
    ensure!(a_in.peers.is_empty(), "a created the room: {a_in:?}");
    let a = Member {
        client,
        events,
        entered: a_in,
    };
    let (client, events) = connect::<Value>(b_options).await?;
    let b_in = client.create_or_join(room(name)).await?;
    ensure!(b_in.peers == [a.entered.peer], "b joined a: {b_in:?}");
    let b = Member {
        client,
        events,
        entered: b_in,
    };
    let mut a = a;
    match next_event(&mut a.events).await?.0 {
        Event::Join { peer, .. } if peer == b.entered.peer => {}
        other => bail!("a expected b's join, got {other:?}"),
    }
    Ok((a, b))
}

struct Member {
    client: Client<Value>,
    events: Events<Value>,
    entered: Entered,
}

impl Member {
    fn id(&self) -> PeerId {
        self.entered.peer
    }
}

#[tokio::test]
async fn two_clients_meet_and_talk_a_third_finds_the_room_full() -> Result<()> {
    let relay = RelayProcess::start(&[]).await?;
    let (mut a, mut b) = pair(options(relay.addr)?, options(relay.addr)?, "meet").await?;
    ensure!(
        a.entered.resumable.is_some(),
        "sessions are resumable by default"
    );

    a.client.send(json!({"n": 1})).await?;
    b.client.send_to(a.id(), json!("to a alone")).await?;
    match next_event(&mut b.events).await?.0 {
        Event::Message { from, data } if from == a.id() && data == json!({"n": 1}) => {}
        other => bail!("b expected a's message, got {other:?}"),
    }
    match next_event(&mut a.events).await?.0 {
        Event::Message { from, data } if from == b.id() && data == json!("to a alone") => {}
        other => bail!("a expected b's message, got {other:?}"),
    }

    let (c, mut c_events) = connect::<Value>(options(relay.addr)?).await?;
    match c.create_or_join(room("meet")).await {
        Err(Error::Full(full)) if full == room("meet") => {}
        other => bail!("c expected the room full, got {other:?}"),
    }
    c.send(json!("outside")).await?;
    match next_event(&mut c_events).await?.0 {
        Event::Error {
            code: ErrorCode::NotInRoom,
            ..
        } => {}
        other => bail!("c expected not_in_room, got {other:?}"),
    }

    b.client.leave().await?;
    match next_event(&mut a.events).await?.0 {
        Event::Left { peer, .. } if peer == b.id() => {}
        other => bail!("a expected b to leave, got {other:?}"),
    }
    let entered = c.create_or_join(room("meet")).await?;
    ensure!(entered.peers == [a.id()], "c takes b's seat: {entered:?}");
    c.close().await;
    match next_event(&mut a.events).await?.0 {
        Event::Join { peer, .. } if peer == entered.peer => {}
        other => bail!("a expected c's join, got {other:?}"),
    }
    match next_event(&mut a.events).await?.0 {
        Event::Left { peer, .. } if peer == entered.peer => {}
        other => bail!("a expected c to leave on close, got {other:?}"),
    }
    Ok(())
}

/// Both clients send numbered messages while `a`'s connection is cut and mended, twice;
/// each must see the other's numbers once and in order, with ids unchanged and no churn.
#[tokio::test]
async fn a_cut_connection_resumes_with_the_same_id_and_nothing_lost() -> Result<()> {
    let relay = RelayProcess::start(&["--resume-window".into(), "20".into()]).await?;
    let proxy = CutProxy::start(relay.addr).await?;
    let (mut a, mut b) = pair(options(proxy.addr)?, options(relay.addr)?, "cuts").await?;
    const EACH: u64 = 60;
    let (mut a_got, mut a_updates) = (Vec::new(), Vec::new());
    for n in 1..=EACH {
        a.client.send(json!(n)).await?;
        b.client.send(json!(n)).await?;
        match n {
            // The first cut is mended before the client notices; during the second it
            // sends while it knows it is disconnected.
            15 => proxy.cut(),
            16 => proxy.mend(),
            40 => {
                proxy.cut();
                loop {
                    match next(&mut a.events).await? {
                        Update::Event(Event::Message { data, .. }) => a_got.push(data),
                        update @ Update::Disconnected { .. } => {
                            a_updates.push(update);
                            break;
                        }
                        other => a_updates.push(other),
                    }
                }
            }
            50 => proxy.mend(),
            _ => {}
        }
    }
    let mut b_got = Vec::new();
    let mut b_churn = Vec::new();
    while a_got.len() < EACH as usize || b_got.len() < EACH as usize {
        tokio::select! {
            update = next(&mut a.events), if a_got.len() < EACH as usize => match update? {
                Update::Event(Event::Message { from, data }) if from == b.id() => a_got.push(data),
                other => a_updates.push(other),
            },
            event = next_event(&mut b.events), if b_got.len() < EACH as usize => match event?.0 {
                Event::Message { from, data } if from == a.id() => b_got.push(data),
                other => b_churn.push(other),
            },
        }
    }
    let numbers: Vec<Value> = (1..=EACH).map(|n| json!(n)).collect();
    ensure!(a_got == numbers, "a got {a_got:?}");
    ensure!(b_got == numbers, "b got {b_got:?}");
    ensure!(
        a_updates
            .iter()
            .filter(|u| matches!(
                u,
                Update::Resumed { peer, incomplete: false } if *peer == a.id()
            ))
            .count()
            >= 1,
        "a resumed as itself: {a_updates:?}"
    );
    ensure!(
        !a_updates
            .iter()
            .any(|u| matches!(u, Update::Rejoining { .. })),
        "a never had to join again: {a_updates:?}"
    );
    ensure!(
        b_churn.iter().all(
            |e| matches!(e, Event::Away { peer, .. } | Event::Back { peer, .. } if *peer == a.id())
        ),
        "b saw a away and back, nothing else: {b_churn:?}"
    );
    Ok(())
}

/// Past the window, a session cannot resume: the client joins its room again as a new
/// peer, and says so.
#[tokio::test]
async fn a_session_past_its_window_joins_again_as_a_new_peer() -> Result<()> {
    let relay = RelayProcess::start(&["--resume-window".into(), "0.5".into()]).await?;
    let proxy = CutProxy::start(relay.addr).await?;
    let (mut a, mut b) = pair(options(proxy.addr)?, options(relay.addr)?, "late").await?;
    proxy.cut();
    match next_event(&mut b.events).await?.0 {
        Event::Away { peer, .. } if peer == a.id() => {}
        other => bail!("b expected a away, got {other:?}"),
    }
    match next_event(&mut b.events).await?.0 {
        Event::Left { peer, .. } if peer == a.id() => {}
        other => bail!("b expected a to leave when the window ends, got {other:?}"),
    }
    proxy.mend();
    let (event, updates) = next_event(&mut a.events).await?;
    let again = match event {
        Event::Joined { peer, peers, .. } if peers == [b.id()] => peer,
        other => bail!("a expected to join again, got {other:?}"),
    };
    ensure!(again != a.id(), "a new peer");
    ensure!(
        updates.contains(&Update::Rejoining {
            code: Some(ErrorCode::ResumeExpired)
        }),
        "a was told why: {updates:?}"
    );
    match next_event(&mut b.events).await?.0 {
        Event::Join { peer, .. } if peer == again => {}
        other => bail!("b expected a's new self, got {other:?}"),
    }
    Ok(())
}

/// A client that does not ask for resumable sessions joins again at once as a new peer.
#[tokio::test]
async fn a_client_without_sessions_joins_again_after_a_cut() -> Result<()> {
    let relay = RelayProcess::start(&[]).await?;
    let proxy = CutProxy::start(relay.addr).await?;
    let plain = options(proxy.addr)?.resumable(false);
    let (mut a, mut b) = pair(plain, options(relay.addr)?, "plain").await?;
    ensure!(a.entered.resumable.is_none());
    proxy.cut();
    match next_event(&mut b.events).await?.0 {
        Event::Left { peer, .. } if peer == a.id() => {}
        other => bail!("b expected a to leave, got {other:?}"),
    }
    proxy.mend();
    let (event, updates) = next_event(&mut a.events).await?;
    ensure!(
        matches!(event, Event::Joined { ref peers, .. } if peers == &[b.id()]),
        "a joined again: {event:?}"
    );
    ensure!(
        updates.contains(&Update::Rejoining { code: None }),
        "{updates:?}"
    );
    Ok(())
}

#[tokio::test]
async fn refusals_are_typed_errors() -> Result<()> {
    ensure!(matches!(
        Options::new("http://127.0.0.1:2013"),
        Err(Error::InvalidUrl { .. })
    ));
    let dir = TempDir::new("client-auth")?;
    let secret_file = dir.0.join("secret");
    std::fs::write(&secret_file, "a-secret-for-the-client-test")?;
    let relay = RelayProcess::start(&[
        "--auth-secret-file".into(),
        secret_file.display().to_string(),
        "--allowed-origin".into(),
        "https://app.example".into(),
    ])
    .await?;
    match connect::<Value>(options(relay.addr)?).await {
        Err(Error::Refused { status: 401, .. }) => {}
        other => bail!("expected 401 without a token, got {:?}", other.map(|_| ())),
    }
    let claims = json!({"exp": get_current_timestamp() + 3600, "room": "mine"});
    let key = EncodingKey::from_secret(b"a-secret-for-the-client-test")?;
    let token = encode(&Header::default(), &claims, &key)?;
    let evil = options(relay.addr)?
        .token(token.clone())
        .origin("https://evil.example");
    match connect::<Value>(evil).await {
        Err(Error::Refused { status: 403, .. }) => {}
        other => bail!(
            "expected 403 for a foreign origin, got {:?}",
            other.map(|_| ())
        ),
    }
    let good = options(relay.addr)?
        .token(token)
        .origin("https://app.example");
    ensure!(
        !format!("{good:?}").contains("eyJ"),
        "options never show the token"
    );
    let (client, _events) = connect::<Value>(good).await?;
    match client.create_or_join(room("other")).await {
        Err(error) if error.code() == Some(ErrorCode::Forbidden) => {}
        other => bail!("expected forbidden, got {other:?}"),
    }
    client.create_or_join(room("mine")).await?;
    Ok(())
}

#[tokio::test]
async fn wss_with_a_given_authority_and_not_without_it() -> Result<()> {
    let dir = TempDir::new("client-tls")?;
    let cert = TestCert::new()?;
    let (cert_path, key_path) = cert.write(&dir.0)?;
    let relay = RelayProcess::start(&[
        "--tls-cert".into(),
        cert_path.display().to_string(),
        "--tls-key".into(),
        key_path.display().to_string(),
    ])
    .await?;
    let url = format!("wss://localhost:{}", relay.addr.port());
    match connect::<Value>(Options::new(&url)?).await {
        Err(Error::Unreachable(_) | Error::InvalidCa(_)) => {}
        other => bail!(
            "a certificate nobody vouches for is refused, got {:?}",
            other.map(|_| ())
        ),
    }
    let (client, _events) =
        connect::<Value>(Options::new(&url)?.ca_pem(cert.cert_pem.as_bytes())?).await?;
    let entered = client.create_or_join(room("secure")).await?;
    ensure!(entered.peers.is_empty());
    tokio::time::timeout(Duration::from_secs(5), client.close())
        .await
        .context("a close completes")?;
    Ok(())
}

/// Both clients send more than the client queues for the program (512 updates) before
/// either reads a thing, but less than the relay keeps for a client that does not
/// acknowledge (255 frames past those): the sends complete (the client never waits on the
/// program to read; it stops reading the relay instead), and then everything arrives, in
/// order.
#[tokio::test]
async fn a_program_that_reads_late_neither_stalls_its_sends_nor_loses_a_message() -> Result<()> {
    let args = ["--rate-per-sec", "100000", "--rate-burst", "100000"].map(String::from);
    let relay = RelayProcess::start(&args).await?;
    let (mut a, mut b) = pair(options(relay.addr)?, options(relay.addr)?, "late-reader").await?;
    const EACH: u64 = 600;
    let send_all = |client: Client<Value>| async move {
        for n in 1..=EACH {
            client.send(json!(n)).await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(
        PATIENCE,
        futures_util::future::try_join(send_all(a.client.clone()), send_all(b.client.clone())),
    )
    .await
    .context("every send completes while nobody reads")??;
    for member in [&mut a, &mut b] {
        for n in 1..=EACH {
            match next_event(&mut member.events).await?.0 {
                Event::Message { data, .. } if data == json!(n) => {}
                other => bail!("expected {n}, got {other:?}"),
            }
        }
    }
    Ok(())
}

/// A program that stops reading its updates for longer than the client's silence makes the
/// client stop reading the relay; that is not the relay's silence. Once the program reads
/// again, every message is there and the connection never dropped.
#[tokio::test]
async fn a_program_that_pauses_past_the_silence_does_not_drop_its_connection() -> Result<()> {
    let args = ["--rate-per-sec", "100000", "--rate-burst", "100000"].map(String::from);
    let relay = RelayProcess::start(&args).await?;
    let silence = Duration::from_millis(800);
    let (mut a, b) = pair(
        options(relay.addr)?.silence(silence),
        options(relay.addr)?,
        "pause",
    )
    .await?;
    // More than the client queues for its program (512): it stops reading the relay.
    const SENT: u64 = 600;
    for n in 1..=SENT {
        b.client.send(json!(n)).await?;
    }
    tokio::time::sleep(silence * 3).await;
    let mut n = 1;
    while n <= SENT {
        match next(&mut a.events).await? {
            Update::Event(Event::Message { data, .. }) if data == json!(n) => n += 1,
            other => bail!("expected message {n}, got {other:?}"),
        }
    }
    Ok(())
}
