//! TLS on the relay's own port: the seed's story over `wss://`, refusals of plain HTTP, a
//! certificate swapped on SIGHUP under an open connection, and start-up errors that name
//! the flag.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use signalroom_protocol::Event;
use signalroom_server::Config;
use support::{
    created_peer, http_status, joined_peer, relay_binary, tls_client_at, Relay, RelayProcess,
    TempDir, TestCert, PATIENCE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tls_relay(cert: &TestCert, dir: &TempDir) -> Result<Relay> {
    let (cert_path, key_path) = cert.write(&dir.0)?;
    Relay::start(Config {
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        handshake_timeout: 1.0,
        ..Config::default()
    })
    .await
}

#[tokio::test]
async fn the_seed_story_runs_over_wss() -> Result<()> {
    let (cert, dir) = (TestCert::new()?, TempDir::new("tls-story")?);
    let relay = tls_relay(&cert, &dir).await?;
    let mut first = tls_client_at(relay.addr, &cert).await?;
    let a = created_peer(first.join("lobby").await?)?;
    let mut second = tls_client_at(relay.addr, &cert).await?;
    let b = joined_peer(&mut second, "lobby", &[a]).await?;
    match first.recv().await? {
        Event::Join { peer, .. } => ensure!(peer == b, "join names the newcomer"),
        other => anyhow::bail!("expected join, got {other:?}"),
    }
    second
        .say(json!({"type": "offer", "sdp": "v=0"}), None)
        .await?;
    match first.recv().await? {
        Event::Message { from, data, .. } => {
            ensure!(from == b && data["sdp"] == "v=0", "the offer arrives whole")
        }
        other => anyhow::bail!("expected the offer, got {other:?}"),
    }
    let mut third = tls_client_at(relay.addr, &cert).await?;
    ensure!(
        matches!(third.join("lobby").await?, Event::Full { .. }),
        "a room of two is full over TLS too"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_not_served() -> Result<()> {
    let (cert, dir) = (TestCert::new()?, TempDir::new("tls-trust")?);
    let relay = tls_relay(&cert, &dir).await?;
    let stranger = TestCert::new()?;
    ensure!(
        tls_client_at(relay.addr, &stranger).await.is_err(),
        "a client trusting another certificate fails its handshake"
    );
    Ok(())
}

#[tokio::test]
async fn plain_http_and_ws_on_the_tls_port_get_a_clean_refusal() -> Result<()> {
    let (cert, dir) = (TestCert::new()?, TempDir::new("tls-plain")?);
    let relay = tls_relay(&cert, &dir).await?;
    let (status, body) = tokio::time::timeout(PATIENCE, http_status(relay.addr, "/healthz"))
        .await
        .context("plain HTTP is answered, not left hanging")??;
    ensure!(status == 400, "plain HTTP gets 400, got {status}");
    ensure!(
        body.contains("https://"),
        "the refusal says to use TLS: {body:?}"
    );
    let ws = tokio::time::timeout(PATIENCE, support::client_at(relay.addr))
        .await
        .context("a plain WebSocket is refused, not left hanging")?;
    ensure!(ws.is_err(), "a plain WebSocket is not upgraded");
    Ok(())
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_after_the_handshake_timeout() -> Result<()> {
    let (cert, dir) = (TestCert::new()?, TempDir::new("tls-stall")?);
    let relay = tls_relay(&cert, &dir).await?;
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await?;
    // The first byte of a TLS handshake record, and nothing more.
    stream.write_all(&[0x16]).await?;
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .context("the relay closes a handshake that stalls (timeout 1 s)")??;
    Ok(())
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_open_connections_stay() -> Result<()> {
    let dir = TempDir::new("tls-reload")?;
    let (old, new) = (TestCert::new()?, TestCert::new()?);
    let (cert_path, key_path) = old.write(&dir.0)?;
    let relay = RelayProcess::start(&[
        "--tls-cert".into(),
        cert_path.display().to_string(),
        "--tls-key".into(),
        key_path.display().to_string(),
    ])
    .await?;
    let mut before = tls_client_at(relay.addr, &old).await?;
    let a = created_peer(before.join("renewal").await?)?;

    new.write(&dir.0)?;
    relay.signal("HUP")?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut after = loop {
        match tls_client_at(relay.addr, &new).await {
            Ok(client) => break client,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => return Err(error.context("the new certificate is served after SIGHUP")),
        }
    };
    ensure!(
        tls_client_at(relay.addr, &old).await.is_err(),
        "the old certificate is no longer served"
    );
    let b = joined_peer(&mut after, "renewal", &[a]).await?;
    ensure!(
        matches!(before.recv().await?, Event::Join { peer, .. } if peer == b),
        "the connection opened before the reload hears the newcomer"
    );
    before.say(json!("still here"), None).await?;
    ensure!(
        matches!(after.recv().await?, Event::Message { from, .. } if from == a),
        "and still relays"
    );

    // A broken pair is not taken: the relay keeps serving the last good one.
    std::fs::write(&cert_path, "not a certificate")?;
    relay.signal("HUP")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tls_client_at(relay.addr, &new)
        .await
        .context("a bad reload keeps the previous certificate")?;
    Ok(())
}

#[tokio::test]
async fn the_limits_hold_over_tls() -> Result<()> {
    let (cert, dir) = (TestCert::new()?, TempDir::new("tls-limits")?);
    let (cert_path, key_path) = cert.write(&dir.0)?;
    let relay = Relay::start(Config {
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        max_frame_bytes: 64 * 1024,
        outbox_bytes: 256 * 1024,
        rate_per_sec: 10_000,
        rate_burst: 10_000,
        ..Config::default()
    })
    .await?;

    // A message over the size limit closes with 1009.
    let mut big = tls_client_at(relay.addr, &cert).await?;
    big.say(json!("x".repeat(80 * 1024)), None).await?;
    ensure!(
        big.expect_close().await? == Some(1009),
        "too big over TLS: 1009"
    );

    // A peer that stops reading is dropped and its room told, though its TLS session holds
    // a write's worth of records beyond what its queue holds.
    let mut sender = tls_client_at(relay.addr, &cert).await?;
    let mut sleeper = tls_client_at(relay.addr, &cert).await?;
    let (_, sleeper_id) = support::meet(&mut sender, &mut sleeper, "flood").await?;
    let blob = json!("x".repeat(32 * 1024));
    let deadline = tokio::time::Instant::now() + PATIENCE * 4;
    loop {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the sleeper was never dropped"
        );
        sender.say(blob.clone(), None).await?;
        let heard = tokio::time::timeout(Duration::from_millis(1), sender.recv()).await;
        if let Ok(event) = heard {
            match event? {
                Event::Left { peer, .. } if peer == sleeper_id => break,
                other => anyhow::bail!("expected the sleeper to be dropped, got {other:?}"),
            }
        }
    }
    drop(sleeper);
    Ok(())
}

#[tokio::test]
async fn sighup_never_stops_a_relay_without_tls() -> Result<()> {
    let relay = RelayProcess::start(&[]).await?;
    let mut before = support::client_at(relay.addr).await?;
    let a = created_peer(before.join("hangup").await?)?;
    // `systemctl reload` sends it; its default action would end the process.
    relay.signal("HUP")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut after = support::client_at(relay.addr).await?;
    joined_peer(&mut after, "hangup", &[a]).await?;
    ensure!(
        matches!(before.recv().await?, Event::Join { .. }),
        "the connection from before still hears the room"
    );
    Ok(())
}

/// Runs the relay binary with `args` expecting it to refuse to start; returns its stderr.
fn refused_start(args: &[&str]) -> Result<String> {
    let output = std::process::Command::new(relay_binary()?)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .output()?;
    ensure!(!output.status.success(), "the relay must not start");
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn unusable_tls_files_stop_the_relay_at_start_naming_the_flag() -> Result<()> {
    let dir = TempDir::new("tls-bad")?;
    let (cert, other) = (TestCert::new()?, TestCert::new()?);
    let (cert_path, key_path) = cert.write(&dir.0)?;
    let (cert_path, key_path) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let missing = dir.0.join("absent.pem").display().to_string();

    let stderr = refused_start(&["--tls-cert", &missing, "--tls-key", &key_path])?;
    ensure!(
        stderr.contains("--tls-cert") && stderr.contains("absent.pem"),
        "{stderr}"
    );

    let stderr = refused_start(&["--tls-cert", &cert_path, "--tls-key", &cert_path])?;
    ensure!(
        stderr.contains("--tls-key") && stderr.contains("no PRIVATE KEY"),
        "{stderr}"
    );

    let wrong_key = dir.0.join("other-key.pem");
    std::fs::write(&wrong_key, &other.key_pem)?;
    let wrong_key = wrong_key.display().to_string();
    let stderr = refused_start(&["--tls-cert", &cert_path, "--tls-key", &wrong_key])?;
    ensure!(
        stderr.contains("--tls-key") && stderr.contains("does not fit"),
        "{stderr}"
    );
    ensure!(
        !stderr.contains("PRIVATE KEY-----"),
        "key material is never printed"
    );

    let stderr = refused_start(&["--tls-cert", &cert_path])?;
    ensure!(
        stderr.contains("--tls-key"),
        "a certificate needs its key: {stderr}"
    );
    Ok(())
}
