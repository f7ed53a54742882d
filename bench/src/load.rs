//! The load generator: rooms of two, each pair keeping some messages in flight. A sends, B
//! echoes the data back through the relay, A times the round trip.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Loopback source addresses client sockets are spread over, so that tens of thousands of
/// connections do not exhaust one address's ephemeral ports.
const SOURCES: u8 = 16;

/// Opens a WebSocket to `target` from a loopback address picked by `n`.
pub async fn connect(target: SocketAddr, n: usize) -> Result<Ws> {
    let source = Ipv4Addr::new(127, 0, 10 + (n % usize::from(SOURCES)) as u8, 1);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{target}/ws"), MaybeTlsStream::Plain(stream))
            .await?;
    Ok(ws)
}

/// Reads the next text frame.
pub async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes> {
    loop {
        match ws.next().await.context("connection closed")?? {
            Message::Text(text) => return Ok(text),
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// Whether the target is the relay (rooms, ids) or the floor (pairs by arrival).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Relay,
    Floor,
}

/// Opens the two connections of pair `n`.
pub async fn connect_pair(target: SocketAddr, n: usize) -> Result<(Ws, Ws)> {
    Ok((
        connect(target, 2 * n).await?,
        connect(target, 2 * n + 1).await?,
    ))
}

/// Puts pair `n` into room `n`; returns the two join latencies (A creates, B joins).
pub async fn join_pair(a: &mut Ws, b: &mut Ws, n: usize) -> Result<[Duration; 2]> {
    let join = Message::text(format!(r#"{{"type":"create_or_join","room":"bench-{n}"}}"#));
    let start = Instant::now();
    a.send(join.clone()).await?;
    let created = next_text(a).await?;
    let a_took = start.elapsed();
    let start = Instant::now();
    b.send(join).await?;
    let joined = next_text(b).await?;
    let b_took = start.elapsed();
    let announced = next_text(a).await?;
    if !created.contains(r#""created""#)
        || !joined.contains(r#""joined""#)
        || !announced.contains(r#""join""#)
    {
        bail!("room {n}: unexpected {created} / {joined} / {announced}");
    }
    Ok([a_took, b_took])
}

/// Counters shared by every pair.
#[derive(Default)]
pub struct Tally {
    /// Set while the measured window is open.
    pub measuring: AtomicBool,
    /// Set when the run is over.
    pub stop: AtomicBool,
    /// Round trips completed in the window.
    pub round_trips: AtomicU64,
}

/// Drives one pair until told to stop; returns the round-trip times seen in the window.
/// A sends, B answers every message with the same data, A times each round trip. Both
/// answer everything that has arrived with one write, as an efficient client would, so the
/// generator leaves the cores to the server under test.
pub async fn drive(
    mut a: Ws,
    mut b: Ws,
    in_flight: usize,
    payload: usize,
    tally: Arc<Tally>,
) -> Result<Vec<Duration>> {
    // Every message carries the same data, so B's echo of it is one prebuilt frame: the
    // generator spends its CPU on the sockets, not on formatting.
    let frame = Message::text(format!(
        r#"{{"type":"message","data":"{}"}}"#,
        "x".repeat(payload)
    ));
    let echo_frame = frame.clone();
    let echo = tokio::spawn(async move {
        while let Ok(received) = texts_ready(&mut b).await {
            for _ in 0..received {
                b.feed(echo_frame.clone()).await?;
            }
            b.flush().await?;
        }
        anyhow::Ok(())
    });
    let mut sent_at = std::collections::VecDeque::with_capacity(in_flight);
    let mut rtts = Vec::new();
    for _ in 0..in_flight {
        sent_at.push_back(Instant::now());
        a.feed(frame.clone()).await?;
    }
    a.flush().await?;
    while !tally.stop.load(Ordering::Relaxed) {
        let echoed = texts_ready(&mut a).await?;
        let measuring = tally.measuring.load(Ordering::Relaxed);
        for _ in 0..echoed {
            let sent = sent_at.pop_front().context("an echo nobody sent")?;
            if measuring {
                rtts.push(sent.elapsed());
            }
            sent_at.push_back(Instant::now());
            a.feed(frame.clone()).await?;
        }
        if measuring {
            tally.round_trips.fetch_add(echoed, Ordering::Relaxed);
        }
        a.flush().await?;
    }
    echo.abort();
    Ok(rtts)
}

/// Waits for a text frame, then counts it and every other one already received.
async fn texts_ready(ws: &mut Ws) -> Result<u64> {
    next_text(ws).await?;
    let mut count = 1;
    while let Some(next) = ws.next().now_or_never() {
        match next.context("connection closed")?? {
            Message::Text(_) => count += 1,
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
    Ok(count)
}
