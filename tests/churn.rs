//! Twenty thousand connections open, join, message and drop; afterwards the relay holds
//! nothing. Client sockets are spread over several loopback addresses so the test does not
//! run out of ephemeral ports.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::json;
use signalroom_protocol::Event;
use signalroom_server::Stats;
use support::*;
use tokio::net::TcpSocket;

const PAIRS: usize = 10_000;
const AT_ONCE: usize = 128;
const SOURCES: u8 = 8;

async fn connect_from(relay: &Relay, n: usize) -> Result<Client> {
    let source = Ipv4Addr::new(127, 0, 1 + (n % SOURCES as usize) as u8, 1);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(socket.connect(relay.addr).await?);
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/ws", relay.addr), stream).await?;
    Ok(Client::from(ws))
}

async fn pair(relay: &Relay, n: usize) -> Result<()> {
    let (mut a, mut b) = (
        connect_from(relay, 2 * n).await?,
        connect_from(relay, 2 * n + 1).await?,
    );
    let room = format!("churn-{n}");
    let (a_id, _) = meet(&mut a, &mut b, &room).await?;
    a.say(json!(n), None).await?;
    match b.recv().await? {
        Event::Message { from, data } if from == a_id && data == json!(n) => {}
        other => bail!("pair {n}: unexpected {other:?}"),
    }
    // Half leave politely, half just vanish.
    if n.is_multiple_of(2) {
        b.send(&signalroom_protocol::Request::Leave).await?;
        a.recv().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_connections_leave_nothing_behind() -> Result<()> {
    let relay = Relay::default().await?;
    stream::iter(0..PAIRS)
        .map(|n| pair(&relay, n))
        .buffer_unordered(AT_ONCE)
        .try_collect::<()>()
        .await?;
    let empty = Stats::default();
    assert_eq!(relay.settled_stats(empty).await?, empty);
    Ok(())
}
