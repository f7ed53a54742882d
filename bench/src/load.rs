//! The load generator: rooms of two, each pair keeping some messages in flight. A sends, B
//! echoes the data back through the relay, A times the round trip.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
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
pub async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await.context("connection closed")?? {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
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

/// Joins room `n` with a fresh pair of connections; returns them and the join latencies.
pub async fn pair(target: SocketAddr, kind: Kind, n: usize) -> Result<(Ws, Ws, Vec<Duration>)> {
    let mut a = connect(target, 2 * n).await?;
    let mut b = connect(target, 2 * n + 1).await?;
    if kind == Kind::Floor {
        return Ok((a, b, Vec::new()));
    }
    let join = format!(r#"{{"type":"create_or_join","room":"bench-{n}"}}"#);
    let start = Instant::now();
    a.send(Message::text(join.clone())).await?;
    let created = next_text(&mut a).await?;
    let a_took = start.elapsed();
    let start = Instant::now();
    b.send(Message::text(join)).await?;
    let joined = next_text(&mut b).await?;
    let b_took = start.elapsed();
    let announced = next_text(&mut a).await?;
    if !created.contains(r#""created""#)
        || !joined.contains(r#""joined""#)
        || !announced.contains(r#""join""#)
    {
        bail!("room {n}: unexpected {created} / {joined} / {announced}");
    }
    Ok((a, b, vec![a_took, b_took]))
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
pub async fn drive(
    mut a: Ws,
    mut b: Ws,
    in_flight: usize,
    payload: usize,
    tally: Arc<Tally>,
) -> Result<Vec<Duration>> {
    // B echoes the data of every message back: the data is the last field of both the
    // relay's event and the floor's verbatim request, so no parsing is needed.
    let echo = tokio::spawn(async move {
        while let Some(Ok(frame)) = b.next().await {
            let Message::Text(text) = frame else { continue };
            let Some(at) = text.find(r#""data":"#) else {
                continue;
            };
            let reply = format!(r#"{{"type":"message",{}"#, &text[at..]);
            if b.send(Message::text(reply)).await.is_err() {
                break;
            }
        }
    });
    let frame = format!(r#"{{"type":"message","data":"{}"}}"#, "x".repeat(payload));
    let mut sent_at = std::collections::VecDeque::with_capacity(in_flight);
    let mut rtts = Vec::new();
    for _ in 0..in_flight {
        sent_at.push_back(Instant::now());
        a.feed(Message::text(frame.clone())).await?;
    }
    a.flush().await?;
    while !tally.stop.load(Ordering::Relaxed) {
        next_text(&mut a).await?;
        let sent = sent_at.pop_front().context("an echo nobody sent")?;
        if tally.measuring.load(Ordering::Relaxed) {
            rtts.push(sent.elapsed());
            tally.round_trips.fetch_add(1, Ordering::Relaxed);
        }
        sent_at.push_back(Instant::now());
        a.send(Message::text(frame.clone())).await?;
    }
    echo.abort();
    Ok(rtts)
}
