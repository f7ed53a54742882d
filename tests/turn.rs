//! Time-limited TURN credentials against a real coturn `turnserver` (Debian's `coturn`,
//! which scripts/setup.sh --test installs): what the relay mints is accepted, a credential
//! signed with another secret or past its expiry is refused, and a page entering again gets
//! a fresh one. The secret shows nowhere: not in `--help`, the logs or `/stats`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use signalroom_protocol::{Event, IceServer, PeerId, Request};
use signalroom_server::{Config, IceServers, Secret, TurnRest};
use support::{http_get, relay_binary, Relay, SharedRedis, TurnServer};

const SECRET: &str = "turn-test-secret-5f2c";

fn config(turn: &TurnServer) -> Config {
    Config {
        turn_urls: vec![turn.url()],
        turn_secret: Some(Secret::from(SECRET)),
        ..Config::default()
    }
}

/// The TURN entry of `event` (`created` or `joined`), with its peer id.
fn minted(event: Event<serde_json::Value>) -> Result<(PeerId, IceServer)> {
    let (peer, servers) = match event {
        Event::Created {
            peer, ice_servers, ..
        }
        | Event::Joined {
            peer, ice_servers, ..
        } => (peer, ice_servers),
        other => bail!("expected created or joined, got {other:?}"),
    };
    let turn = servers
        .into_iter()
        .find(|s| s.username.is_some())
        .context("no TURN server with a credential")?;
    Ok((peer, turn))
}

/// The Unix time in a minted username `EXPIRY:PEER`, checked to name `peer`.
/// Fails unless `turn` relays packets for the credential in `server`.
async fn relays(turn: &TurnServer, server: &IceServer) -> Result<()> {
    let username = server.username.as_deref().context("username")?;
    let credential = server.credential.as_deref().context("credential")?;
    let check = turn.check(username, credential).await?;
    ensure!(check.relayed, "coturn refused {username}: {}", check.report);
    Ok(())
}

fn expiry(turn: &IceServer, peer: PeerId) -> Result<u64> {
    let username = turn.username.as_deref().context("a username")?;
    let (expiry, who) = username.split_once(':').context("EXPIRY:PEER")?;
    ensure!(who == peer.to_string(), "{username} is not for peer {peer}");
    Ok(expiry.parse()?)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_minted_credential_is_accepted_by_coturn() -> Result<()> {
    let turn = TurnServer::start(SECRET).await?;
    let relay = Relay::start(Config {
        ice_servers: vec![IceServer {
            urls: vec!["stun:127.0.0.1:3478".into()],
            username: None,
            credential: None,
        }],
        ..config(&turn)
    })
    .await?;
    let mut a = relay.client().await?;
    let created = a.join("turn").await?;
    let Event::Created { ice_servers, .. } = &created else {
        bail!("expected created, got {created:?}");
    };
    // The static server first, then the minted one.
    assert_eq!(ice_servers.len(), 2);
    assert_eq!(ice_servers[0].urls, ["stun:127.0.0.1:3478"]);
    let (peer, server) = minted(created)?;
    assert_eq!(server.urls, [turn.url()]);
    let left = expiry(&server, peer)?.saturating_sub(unix_now());
    let ttl = Config::default().turn_ttl;
    assert!(
        ttl - 5 <= left && left <= ttl,
        "expires in {left}s, not {ttl}s"
    );

    let (username, password) = (
        server.username.as_deref().context("username")?,
        server.credential.as_deref().context("credential")?,
    );
    let check = turn.check(username, password).await?;
    assert!(
        check.relayed,
        "coturn refused the relay's credential: {}\n{}",
        check.report,
        turn.log()
    );

    // So does the peer that joins.
    let mut b = relay.client().await?;
    let (peer_b, server_b) = minted(b.join("turn").await?)?;
    assert_ne!(server_b.username, server.username);
    expiry(&server_b, peer_b)?;
    relays(&turn, &server_b).await?;

    let stats = http_get(relay.addr, "/stats").await?;
    assert!(!stats.contains(SECRET), "/stats shows the secret: {stats}");
    Ok(())
}

#[tokio::test]
async fn a_credential_for_another_secret_or_past_its_expiry_is_refused() -> Result<()> {
    let turn = TurnServer::start(SECRET).await?;
    let peer = PeerId::new(7)?;
    let mint = |secret: &str, now: SystemTime| -> Result<(String, String)> {
        let ice = IceServers::new(
            Vec::new(),
            Some(TurnRest::new(
                Secret::from(secret),
                vec![turn.url()],
                Duration::from_secs(600),
            )),
        );
        let server = ice.for_peer(peer, now).pop().context("a TURN server")?;
        Ok((
            server.username.context("username")?,
            server.credential.context("credential")?,
        ))
    };

    // The same check passes with the right secret now, so a refusal below is the
    // credential's doing, not the harness's.
    let (user, pass) = mint(SECRET, SystemTime::now())?;
    let good = turn.check(&user, &pass).await?;
    assert!(good.relayed, "{}", good.report);

    let (user, pass) = mint("some-other-secret", SystemTime::now())?;
    let wrong = turn.check(&user, &pass).await?;
    assert!(
        !wrong.relayed,
        "a credential for another secret was accepted: {}",
        wrong.report
    );

    // Minted 20 minutes ago with a 10-minute lifetime: expired 10 minutes ago.
    let (user, pass) = mint(SECRET, SystemTime::now() - Duration::from_secs(1200))?;
    let expired = turn.check(&user, &pass).await?;
    assert!(
        !expired.relayed,
        "an expired credential was accepted: {}",
        expired.report
    );
    Ok(())
}

#[tokio::test]
async fn entering_again_mints_a_fresh_credential() -> Result<()> {
    let turn = TurnServer::start(SECRET).await?;
    let relay = Relay::start(config(&turn)).await?;
    let mut a = relay.client().await?;
    let (peer, first) = minted(a.join("again").await?)?;
    let first_expiry = expiry(&first, peer)?;

    // The same connection leaves and enters again a second later: a later expiry.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.send(&Request::Leave).await?;
    let (same_peer, second) = minted(a.join("again").await?)?;
    assert_eq!(same_peer, peer);
    assert!(expiry(&second, peer)? > first_expiry);
    assert_ne!(second.credential, first.credential);

    // A page that reloads is a new connection and peer: a credential of its own.
    drop(a);
    let mut reloaded = relay.client().await?;
    let (new_peer, third) = minted(reloaded.join("again").await?)?;
    assert_ne!(new_peer, peer);
    expiry(&third, new_peer)?;
    relays(&turn, &third).await?;
    Ok(())
}

#[tokio::test]
async fn rooms_shared_through_redis_mint_credentials_too() -> Result<()> {
    let turn = TurnServer::start(SECRET).await?;
    let redis = SharedRedis::server().await?;
    let shared = |c: Config| Config {
        turn_urls: vec![turn.url()],
        turn_secret: Some(Secret::from(SECRET)),
        ..c
    };
    let (one, two) = (
        Relay::start(shared(redis.config())).await?,
        Relay::start(shared(redis.config())).await?,
    );
    let (mut a, mut b) = (one.client().await?, two.client().await?);
    let (peer_a, server_a) = minted(a.join("shared").await?)?;
    let (peer_b, server_b) = minted(b.join("shared").await?)?;
    expiry(&server_a, peer_a)?;
    expiry(&server_b, peer_b)?;
    relays(&turn, &server_b).await?;
    Ok(())
}

/// Flags, environment variables, and what the refusal must say.
type Mistake<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn the_secret_shows_in_neither_help_nor_logs_and_bad_settings_stop_the_start() -> Result<()> {
    use std::process::Command;
    let binary = relay_binary()?;
    let dir = std::env::temp_dir().join(format!("signalroom-turn-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n"))?;
    let secret_path = secret_file.to_str().context("a UTF-8 temp path")?;
    let run = |args: &[&str], env: &[(&str, &str)]| -> Result<(Option<i32>, String)> {
        let mut command = Command::new(&binary);
        command
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("SIGNALROOM_TURN_SECRET")
            .env_remove("SIGNALROOM_TURN_SECRET_FILE")
            .env_remove("SIGNALROOM_TURN_URLS")
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0");
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output()?;
        Ok((
            output.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ))
    };

    let (code, help) = run(&["--help"], &[("SIGNALROOM_TURN_SECRET", SECRET)])?;
    assert_eq!(code, Some(0));
    assert!(help.contains("--turn-url") && help.contains("--turn-secret-file"));
    assert!(!help.contains(SECRET), "--help shows the secret");

    // Each mistake stops the start, naming the flag, never showing the secret.
    let url = "turn:127.0.0.1:3478?transport=udp";
    let cases: [Mistake; 6] = [
        (
            &["--turn-url", url],
            &[],
            "--turn-url needs the TURN secret",
        ),
        (&["--turn-secret-file", secret_path], &[], "no --turn-url"),
        (&[], &[("SIGNALROOM_TURN_SECRET", SECRET)], "no --turn-url"),
        (
            &["--turn-url", url],
            &[("SIGNALROOM_TURN_SECRET", " ")],
            "SIGNALROOM_TURN_SECRET: the secret is empty",
        ),
        (
            &[
                "--turn-url",
                url,
                "--turn-secret-file",
                "/nonexistent/secret",
            ],
            &[],
            "--turn-secret-file: cannot read /nonexistent/secret",
        ),
        (
            &[
                "--turn-url",
                "turn:host:99999",
                "--turn-secret-file",
                secret_path,
            ],
            &[],
            "--turn-url",
        ),
    ];
    for (args, env, says) in cases {
        let (code, output) = run(args, env)?;
        assert!(code.is_some_and(|c| c != 0), "{args:?} started: {output}");
        assert!(
            output.contains(says),
            "{args:?}: {output:?} does not say {says:?}"
        );
        assert!(
            !output.contains(SECRET),
            "{args:?} shows the secret: {output}"
        );
    }

    // A good start logs the TURN URLs and lifetime, and not the secret.
    let mut child = Command::new(&binary)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--turn-url",
            url,
            "--turn-ttl",
            "3600",
        ])
        .env_remove("SIGNALROOM_TURN_SECRET_FILE")
        .env("SIGNALROOM_TURN_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill()?;
    let output = child.wait_with_output()?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(log.contains("turn_ttl=3600") && log.contains(url), "{log}");
    assert!(!log.contains(SECRET), "the log shows the secret: {log}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
