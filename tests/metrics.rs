//! Prometheus metrics on `--metrics-addr`: a scripted session moves each counter by what it
//! did, the exposition passes `promtool check metrics`, a scraper that asks for OpenMetrics
//! gets it, and no secret shows. JSON logs with `--log-format json`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use signalroom_protocol::{ErrorCode, Event, Request};
use support::{
    client_at, created_peer, free_port, http_status, joined_peer, listening, RelayProcess, TempDir,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /metrics` with `accept`; returns the content type and the body.
async fn scrape(addr: SocketAddr, accept: &str) -> Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP head")?;
    ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let kind = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .context("no content type")?;
    Ok((kind.to_owned(), body.to_owned()))
}

/// Every sample of the classic text format, by name and labels as written.
fn samples(text: &str) -> Result<HashMap<String, f64>> {
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').context("a sample line")?;
        samples.insert(name.to_owned(), value.parse()?);
    }
    Ok(samples)
}

struct Scrapes {
    before: HashMap<String, f64>,
    after: HashMap<String, f64>,
}

impl Scrapes {
    /// How much `sample` grew between the scrapes.
    fn grew(&self, sample: &str) -> Result<f64> {
        let get = |m: &HashMap<String, f64>| m.get(sample).copied();
        let after = get(&self.after).with_context(|| format!("{sample} missing"))?;
        Ok(after - get(&self.before).unwrap_or(0.0))
    }
}

/// Checks `text` with `promtool check metrics` (Debian's `prometheus` package).
fn promtool_accepts(text: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("promtool is missing: run scripts/setup.sh --test (Debian package prometheus)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

async fn relay_with_metrics(
    env: &[(&str, &str)],
    more: &[&str],
) -> Result<(RelayProcess, SocketAddr)> {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut args = vec!["--metrics-addr".to_owned(), metrics.to_string()];
    args.extend(more.iter().map(|a| (*a).to_owned()));
    let relay = RelayProcess::start_with(&args, env, None).await?;
    listening(metrics, "the metrics listener").await?;
    Ok((relay, metrics))
}

#[tokio::test]
async fn a_scripted_session_moves_the_counters_it_should() -> Result<()> {
    let (relay, metrics) = relay_with_metrics(&[("RUST_LOG", "warn")], &[]).await?;
    let (_, text) = scrape(metrics, "text/plain").await?;
    let before = samples(&text)?;

    let mut a = client_at(relay.addr).await?;
    let pa = created_peer(a.join("metered").await?)?;
    let mut b = client_at(relay.addr).await?;
    let pb = joined_peer(&mut b, "metered", &[pa]).await?;
    ensure!(matches!(a.recv().await?, Event::Join { .. }), "a hears b");
    for n in 0..3 {
        a.say(json!({ "n": n }), None).await?;
        ensure!(
            matches!(b.recv().await?, Event::Message { .. }),
            "b hears a"
        );
    }
    b.say(json!("back"), Some(pa)).await?;
    ensure!(matches!(a.recv().await?, Event::Message { from, .. } if from == pb));
    a.send_text("{not json").await?;
    a.expect_error(ErrorCode::MalformedJson).await?;
    let mut c = client_at(relay.addr).await?;
    ensure!(
        matches!(c.join("metered").await?, Event::Full { .. }),
        "a room of two"
    );
    b.send(&Request::Leave).await?;
    ensure!(
        matches!(a.recv().await?, Event::Left { .. }),
        "a hears b leave"
    );
    a.ws.close(None).await?;
    a.expect_close().await?;
    let (status, _) = http_status(relay.addr, "/ws").await?;
    ensure!(
        status == 400,
        "a GET of /ws without an upgrade is refused: {status}"
    );
    drop((b, c));

    // The relay counts a connection's end once it has finished with it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let scrapes = loop {
        let (kind, text) = scrape(metrics, "text/plain").await?;
        ensure!(
            kind.starts_with("text/plain; version=0.0.4"),
            "classic format: {kind}"
        );
        let scrapes = Scrapes {
            before: before.clone(),
            after: samples(&text)?,
        };
        let ended = ["lost", "client_closed"]
            .map(|why| format!("signalroom_connections_closed_total{{reason=\"{why}\"}}"));
        if scrapes.grew(&ended[0])? + scrapes.grew(&ended[1])? >= 3.0 {
            promtool_accepts(&text)?;
            break scrapes;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the closed connections were not counted:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (sample, want) in [
        ("signalroom_connections_accepted_total", 3.0),
        (
            "signalroom_frames_received_total{type=\"create_or_join\"}",
            3.0,
        ),
        ("signalroom_frames_received_total{type=\"message\"}", 4.0),
        ("signalroom_frames_received_total{type=\"leave\"}", 1.0),
        ("signalroom_frames_received_total{type=\"invalid\"}", 1.0),
        ("signalroom_frames_received_total{type=\"close\"}", 1.0),
        ("signalroom_messages_relayed_total", 4.0),
        (
            "signalroom_frames_refused_total{code=\"malformed_json\"}",
            1.0,
        ),
        (
            "signalroom_upgrades_refused_total{reason=\"bad_handshake\"}",
            1.0,
        ),
        (
            "signalroom_connections_closed_total{reason=\"client_closed\"}",
            1.0,
        ),
        ("signalroom_connections_closed_total{reason=\"lost\"}", 2.0),
        ("signalroom_join_duration_seconds_count", 3.0),
        ("signalroom_join_duration_seconds_bucket{le=\"+Inf\"}", 3.0),
        ("signalroom_rate_limited_frames_total", 0.0),
    ] {
        ensure!(
            scrapes.grew(sample)? == want,
            "{sample} grew by {}, not {want}",
            scrapes.grew(sample)?
        );
    }
    ensure!(
        scrapes.grew("signalroom_received_bytes_total")? > 0.0,
        "bytes in are counted"
    );
    ensure!(
        scrapes.grew("signalroom_sent_bytes_total")? > 0.0,
        "bytes out are counted"
    );
    for gauge in ["connections", "rooms", "members"] {
        let now = scrapes.after.get(&format!("signalroom_{gauge}")).copied();
        ensure!(now == Some(0.0), "signalroom_{gauge} is back to 0: {now:?}");
    }
    ensure!(
        scrapes
            .after
            .keys()
            .any(|k| k.starts_with("signalroom_build_info{version=")),
        "build info"
    );
    Ok(())
}

#[tokio::test]
async fn a_scraper_that_asks_for_openmetrics_gets_it() -> Result<()> {
    let (_relay, metrics) = relay_with_metrics(&[("RUST_LOG", "warn")], &[]).await?;
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (kind, text) = scrape(metrics, accept).await?;
    ensure!(kind.starts_with("application/openmetrics-text"), "{kind}");
    ensure!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    ensure!(text.contains("# TYPE signalroom_messages_relayed counter"));
    Ok(())
}

#[tokio::test]
async fn no_secret_shows_in_metrics_or_stats() -> Result<()> {
    const AUTH: &str = "auth-secret-never-shown";
    const TURN: &str = "turn-secret-never-shown";
    let env = [
        ("RUST_LOG", "warn"),
        ("SIGNALROOM_AUTH_SECRET", AUTH),
        ("SIGNALROOM_TURN_SECRET", TURN),
    ];
    let (relay, metrics) =
        relay_with_metrics(&env, &["--turn-url", "turn:127.0.0.1:3478?transport=udp"]).await?;
    let (_, classic) = scrape(metrics, "text/plain").await?;
    let (_, open) = scrape(metrics, "application/openmetrics-text").await?;
    let (_, stats) = http_status(relay.addr, "/stats").await?;
    for text in [classic, open, stats] {
        ensure!(
            !text.contains(AUTH) && !text.contains(TURN),
            "a secret shows:\n{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn json_logs_are_one_object_a_line() -> Result<()> {
    let dir = TempDir::new("json-logs")?;
    let log = dir.0.join("relay.log");
    let relay = RelayProcess::start_with(
        &["--log-format".into(), "json".into()],
        &[("RUST_LOG", "info")],
        Some(&log),
    )
    .await?;
    let mut a = client_at(relay.addr).await?;
    created_peer(a.join("logged").await?)?;
    drop(relay);
    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("every line is JSON:\n{text}"))?;
    ensure!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "join" && l["level"] == "INFO"),
        "the join is logged as an object with its fields:\n{text}"
    );
    Ok(())
}
