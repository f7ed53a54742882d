//! The floor: the least a WebSocket relay can do on the same tokio + tungstenite stack. It
//! pairs connections in arrival order and forwards every frame verbatim to the partner: no
//! parsing, no ids, no rooms. A reader and a writer task per connection, fed by a channel.

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Serves forever on `listener`.
pub async fn run(listener: TcpListener) -> Result<()> {
    let mut waiting: Option<(mpsc::Sender<Message>, mpsc::Receiver<Message>)> = None;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
            continue;
        };
        match waiting.take() {
            None => {
                // Both outboxes are made when the first of a pair arrives: it writes what
                // comes into its own and reads into its partner's, which waits.
                let (mine_tx, mine_rx) = mpsc::channel::<Message>(256);
                let (partner_tx, partner_rx) = mpsc::channel::<Message>(256);
                spawn_connection(ws, partner_tx, mine_rx);
                waiting = Some((mine_tx, partner_rx));
            }
            Some((first_tx, mine_rx)) => spawn_connection(ws, first_tx, mine_rx),
        }
    }
}

/// Reads from `ws` into `to_partner`; writes what `from_partner` brings.
fn spawn_connection(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    to_partner: mpsc::Sender<Message>,
    mut from_partner: mpsc::Receiver<Message>,
) {
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        while let Some(frame) = from_partner.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            if frame.is_text() && to_partner.send(frame).await.is_err() {
                break;
            }
        }
    });
}
