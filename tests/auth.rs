//! Room tokens (`--auth-secret-file`): which upgrades are refused and how, which rooms a
//! token opens, and that neither the token nor the secret is ever shown.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{json, Value};
use signalroom_protocol::{ErrorCode, Event, RoomName};
use signalroom_server::{Admits, Config, RoomTokens, Secret};
use support::*;

const SECRET: &str = "a-test-secret-for-room-tokens";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A token with `claims`, signed with `secret`.
fn mint_with(claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("a key");
    encode(&Header::new(Algorithm::HS256), claims, &key).expect("a token")
}

/// A token for `room` (any room with `None`), good for an hour, minted as the README
/// shows.
fn mint(room: Option<&str>) -> String {
    let mut claims = json!({"exp": get_current_timestamp() + 3600, "sub": "test"});
    if let Some(room) = room {
        claims["room"] = json!(room);
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("a key");
    encode(&Header::default(), &claims, &key).expect("a token")
}

fn path(token: &str) -> String {
    format!("/ws?token={token}")
}

async fn relay() -> Result<Relay> {
    Relay::start(Config {
        auth_secret: Some(Secret::from(SECRET)),
        ..Config::default()
    })
    .await
}

/// Expects `401` with the `Bearer` challenge and `reason` in the body.
async fn expect_401(relay: &Relay, path: &str, reason: &str) -> Result<()> {
    let (status, challenge, body) = refused_upgrade(relay.addr, path).await?;
    ensure!(status == 401, "{path}: status {status}");
    ensure!(challenge.starts_with("Bearer"), "{path}: {challenge:?}");
    ensure!(body.contains(reason), "{path}: body {body:?}");
    Ok(())
}

#[tokio::test]
async fn an_upgrade_without_a_valid_token_gets_401() -> Result<()> {
    let relay = relay().await?;
    expect_401(&relay, "/ws", "token is required").await?;
    expect_401(&relay, "/ws?token=", "token is required").await?;
    expect_401(&relay, "/ws?room=a", "token is required").await?;
    let forged = mint_with(&json!({"exp": now() + 3600}), "not the relay's secret");
    expect_401(&relay, &path(&forged), "bad token signature").await?;
    expect_401(&relay, &path("not.a.jwt"), "malformed token").await?;
    expect_401(&relay, &path("garbage"), "malformed token").await?;
    let no_exp = mint_with(&json!({"room": "a"}), SECRET);
    expect_401(&relay, &path(&no_exp), "malformed token").await?;
    expect_401(&relay, &path(&"x".repeat(5000)), "token too long").await?;
    // None of them took a connection.
    assert_eq!(relay.stats().await?.connections, 0);
    Ok(())
}

#[tokio::test]
async fn an_expired_or_early_token_gets_401_with_the_reason() -> Result<()> {
    let relay = relay().await?;
    let expired = mint_with(&json!({"exp": now() - 3600, "room": "a"}), SECRET);
    expect_401(&relay, &path(&expired), "token expired").await?;
    let early = mint_with(&json!({"exp": now() + 7200, "nbf": now() + 3600}), SECRET);
    expect_401(&relay, &path(&early), "token not yet valid").await?;
    // Within the leeway for clock skew, both are taken.
    let just_expired = mint_with(&json!({"exp": now() - 5}), SECRET);
    client_at_path(relay.addr, &path(&just_expired)).await?;
    let nearly_valid = mint_with(&json!({"exp": now() + 60, "nbf": now() + 5}), SECRET);
    client_at_path(relay.addr, &path(&nearly_valid)).await?;
    Ok(())
}

#[tokio::test]
async fn a_token_for_one_room_is_forbidden_others_and_the_connection_goes_on() -> Result<()> {
    let relay = relay().await?;
    let token = mint(Some("a"));
    let mut first = client_at_path(relay.addr, &path(&token)).await?;
    first
        .send_text(r#"{"type":"create_or_join","room":"b"}"#)
        .await?;
    match first.recv().await? {
        Event::Error { code, message } => {
            assert_eq!(code, ErrorCode::Forbidden);
            assert!(message.contains("\"b\""), "{message}");
            assert!(!message.contains(&token));
        }
        other => panic!("expected forbidden, got {other:?}"),
    }
    // Still open, and still outside any room: the token's own room takes it.
    let a_id = created_peer(first.join("a").await?)?;
    let mut second = client_at_path(relay.addr, &path(&token)).await?;
    let b_id = joined_peer(&mut second, "a", &[a_id]).await?;
    first.recv().await?;
    second.say(json!("hello"), None).await?;
    match first.recv().await? {
        Event::Message { from, data } => {
            assert_eq!((from, data), (b_id, json!("hello")));
        }
        other => panic!("expected the message, got {other:?}"),
    }
    // Leaving does not widen what the token admits.
    second.send_text(r#"{"type":"leave"}"#).await?;
    first.recv().await?;
    assert!(matches!(
        second.join("b").await?,
        Event::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    Ok(())
}

#[tokio::test]
async fn a_token_without_a_room_admits_any() -> Result<()> {
    let relay = relay().await?;
    let mut client = client_at_path(relay.addr, &path(&mint(None))).await?;
    created_peer(client.join("x").await?)?;
    client.send_text(r#"{"type":"leave"}"#).await?;
    created_peer(client.join("салон 🎥").await?)?;
    Ok(())
}

#[tokio::test]
async fn a_relay_without_a_secret_ignores_tokens() -> Result<()> {
    let relay = Relay::default().await?;
    let mut plain = client_at(relay.addr).await?;
    created_peer(plain.join("x").await?)?;
    let mut with_token = client_at_path(relay.addr, &path("whatever")).await?;
    created_peer(with_token.join("y").await?)?;
    Ok(())
}

#[tokio::test]
async fn a_token_for_a_never_admits_to_another_room_over_the_wire() -> Result<()> {
    let relay = relay().await?;
    for (mine, other) in [
        ("a", "b"),
        ("a", "A"),
        ("a", "a "),
        ("a", " a"),
        ("a", "ab"),
        ("room", "roo"),
        ("é", "e\u{301}"),
        ("салон", "Салон"),
    ] {
        let mut client = client_at_path(relay.addr, &path(&mint(Some(mine)))).await?;
        client
            .send(&signalroom_protocol::Request::CreateOrJoin {
                room: room_name(other),
            })
            .await?;
        client.expect_error(ErrorCode::Forbidden).await?;
        created_peer(client.join(mine).await?)?;
    }
    Ok(())
}

proptest! {
    #[test]
    fn a_token_for_one_room_never_admits_another(
        mine in "[^\\p{Cc}]{1,64}",
        other in "[^\\p{Cc}]{1,64}",
    ) {
        let (Ok(mine), Ok(other)) = (RoomName::new(mine), RoomName::new(other)) else {
            return Ok(());
        };
        let tokens = RoomTokens::new(&Secret::from(SECRET));
        let admits = tokens
            .check(&mint(Some(mine.as_str())), SystemTime::now())
            .expect("a valid token");
        prop_assert_eq!(&admits, &Admits::Room(mine.clone()));
        prop_assert!(admits.admits(&mine));
        prop_assert_eq!(admits.admits(&other), mine == other);
    }
}

/// A file in the temp folder, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("signalroom-auth-{}-{name}", std::process::id()));
        std::fs::write(&path, contents)?;
        Ok(Self(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn the_token_and_the_secret_never_reach_the_logs() -> Result<()> {
    let secret = TempFile::new("secret", &format!("{SECRET}\n"))?;
    let log = TempFile::new("log", "")?;
    let args = vec![
        "--auth-secret-file".to_owned(),
        secret.0.display().to_string(),
    ];
    let mut relay = RelayProcess::start_with(&args, &[("RUST_LOG", "trace")], Some(&log.0)).await?;
    let good = mint(Some("a"));
    let expired = mint_with(&json!({"exp": now() - 3600, "room": "a"}), SECRET);
    let forged = mint_with(&json!({"exp": now() + 3600}), "another secret");

    let mut client = client_at_path(relay.addr, &path(&good)).await?;
    client
        .send_text(r#"{"type":"create_or_join","room":"b"}"#)
        .await?;
    client.expect_error(ErrorCode::Forbidden).await?;
    created_peer(client.join("a").await?)?;
    for bad in [&expired, &forged] {
        let (status, _, _) = refused_upgrade(relay.addr, &path(bad)).await?;
        ensure!(status == 401);
    }
    // The page's own requests carry its address, token included, as their Referer.
    let referer = format!("http://{}/?room=a&token={good}", relay.addr);
    http_with_referer(relay.addr, "/stats", &referer).await?;
    let stats = http_get(relay.addr, "/stats").await?;
    drop(client);
    tokio::time::sleep(QUIET).await;
    relay.kill()?;

    let logged = std::fs::read_to_string(&log.0)?;
    ensure!(
        logged.contains("join"),
        "the relay logged too little: {logged}"
    );
    for token in [&good, &expired, &forged] {
        // The signature alone is enough to tell a token.
        let signature = token.rsplit('.').next().context("a signature")?;
        ensure!(!logged.contains(signature), "a token was logged:\n{logged}");
        ensure!(!stats.contains(signature));
    }
    ensure!(!logged.contains(SECRET), "the secret was logged");
    Ok(())
}

/// A bare HTTP/1.0 GET with a `Referer`.
async fn http_with_referer(addr: std::net::SocketAddr, path: &str, referer: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nReferer: {referer}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(())
}

#[test]
fn help_never_shows_the_secret() -> Result<()> {
    let output = std::process::Command::new(relay_binary()?)
        .arg("--help")
        .env("SIGNALROOM_AUTH_SECRET", SECRET)
        .output()?;
    let help = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success());
    ensure!(help.contains("--auth-secret-file"));
    ensure!(!help.contains(SECRET));
    Ok(())
}

/// The relay's exit status and standard error, started with `args` and `env`.
fn start_fails(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let mut child = std::process::Command::new(relay_binary()?)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + PATIENCE;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("the relay started with {args:?} {env:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    ensure!(!output.status.success(), "exit status {}", output.status);
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn bad_secret_configuration_fails_at_start_naming_the_flag() -> Result<()> {
    let empty = TempFile::new("empty", " \n")?;
    let error = start_fails(&["--auth-secret-file", &empty.0.display().to_string()], &[])?;
    ensure!(
        error.contains("--auth-secret-file: the secret is empty"),
        "{error}"
    );

    let missing = std::env::temp_dir().join("signalroom-auth-no-such-file");
    let error = start_fails(&["--auth-secret-file", &missing.display().to_string()], &[])?;
    ensure!(error.contains("--auth-secret-file: cannot read"), "{error}");

    let error = start_fails(&[], &[("SIGNALROOM_AUTH_SECRET", "")])?;
    ensure!(
        error.contains("SIGNALROOM_AUTH_SECRET: the secret is empty"),
        "{error}"
    );

    let secret = TempFile::new("both", SECRET)?;
    let file = secret.0.display().to_string();
    let error = start_fails(
        &["--auth-secret-file", &file],
        &[("SIGNALROOM_AUTH_SECRET", SECRET)],
    )?;
    ensure!(
        error.contains("--auth-secret-file and SIGNALROOM_AUTH_SECRET"),
        "{error}"
    );
    ensure!(!error.contains(SECRET));
    Ok(())
}

#[tokio::test]
async fn the_readmes_openssl_script_mints_tokens_the_relay_takes() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = std::fs::read_to_string(root.join("scripts/mint-token.sh"))?;
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    for line in script
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("set "))
    {
        ensure!(
            readme.contains(line),
            "the README lacks the script's line {line}"
        );
    }
    // The script is run, never skipped: without openssl this test fails.
    let openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .context("running openssl: run scripts/setup.sh --test, which installs it")?;
    ensure!(openssl.status.success(), "openssl version: {openssl:?}");
    let secret = TempFile::new("openssl", &format!("{SECRET}\n"))?;
    let minted = |args: &[&str]| -> Result<String> {
        let output = std::process::Command::new("bash")
            .arg(root.join("scripts/mint-token.sh"))
            .arg(&secret.0)
            .args(args)
            .output()?;
        ensure!(output.status.success(), "{output:?}");
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    };
    let relay = relay().await?;
    let for_a = minted(&["a"])?;
    let mut client = client_at_path(relay.addr, &path(&for_a)).await?;
    client
        .send_text(r#"{"type":"create_or_join","room":"b"}"#)
        .await?;
    client.expect_error(ErrorCode::Forbidden).await?;
    created_peer(client.join("a").await?)?;
    let any = minted(&[])?;
    let mut client = client_at_path(relay.addr, &path(&any)).await?;
    created_peer(client.join("b").await?)?;
    let expired = minted(&["a", "-3600"])?;
    expect_401(&relay, &path(&expired), "token expired").await?;
    Ok(())
}
