//! One WebSocket connection: a reader loop that decodes frames and hands them to the rooms,
//! and a writer task that drains the connection's outbox onto the socket.

use futures_util::{SinkExt, StreamExt};
use signalroom_protocol::{ErrorCode, Event, PeerId, Request};
use tokio::sync::{mpsc, watch};
use warp::ws::{Message, WebSocket};

use crate::codec::{self, Refusal};
use crate::rooms::{Outbox, Rooms};

/// Serves one upgraded connection until the client goes, its outbox overflows, or the relay
/// shuts down.
pub async fn serve<R: Rooms>(
    socket: WebSocket,
    rooms: R,
    outbox_frames: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let (sink, mut stream) = socket.split();
    let (outbox, queue, overflowed) = Outbox::new(outbox_frames);
    let peer = rooms.connect(outbox.clone()).await;
    tracing::debug!(%peer, "connected");
    let writer = tokio::spawn(write(sink, queue));

    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(frame)) if frame.is_text() => {
                    // The transport only yields text frames that are valid UTF-8.
                    let text = frame.to_str().unwrap_or_default();
                    if let Err(refusal) = handle(&rooms, peer, text).await {
                        tracing::debug!(%peer, %refusal, "refused a frame");
                        refuse(&outbox, refusal);
                    }
                }
                Some(Ok(frame)) if frame.is_binary() => refuse(
                    &outbox,
                    Refusal::new(ErrorCode::BinaryUnsupported, "send JSON in text frames"),
                ),
                Some(Ok(frame)) if frame.is_close() => break,
                // Pings are answered by the transport; pongs need nothing.
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::debug!(%peer, %error, "connection failed");
                    break;
                }
                None => break,
            },
            () = overflowed.notified() => break,
            _ = shutdown.changed() => {
                // 1001: going away; clients reconnect.
                let _ = outbox.push_close(1001, "relay shutting down");
                break;
            }
        }
    }

    rooms.disconnect(peer).await;
    // The writer ends once the rooms and this task have dropped their outboxes.
    drop(outbox);
    let _ = writer.await;
    tracing::info!(%peer, "disconnected");
}

async fn write(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Message>,
) {
    while let Some(frame) = queue.recv().await {
        // Queue what else is waiting and flush once.
        let mut result = sink.feed(frame).await;
        while let (Ok(()), Ok(more)) = (&result, queue.try_recv()) {
            result = sink.feed(more).await;
        }
        if result.is_err() || sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

async fn handle<R: Rooms>(rooms: &R, peer: PeerId, text: &str) -> Result<(), Refusal> {
    let refused = |e: crate::rooms::RoomError| Refusal::new(e.code(), e.to_string());
    match codec::decode(text)? {
        Request::CreateOrJoin { room } => {
            let outcome = rooms.join(peer, room.clone()).await.map_err(refused)?;
            tracing::info!(%peer, %room, ?outcome, "join");
        }
        Request::Message { data, to } => rooms.relay(peer, to, data).await.map_err(refused)?,
        Request::Leave => {
            let room = rooms.leave(peer).await.map_err(refused)?;
            tracing::info!(%peer, %room, "leave");
        }
    }
    Ok(())
}

fn refuse(outbox: &Outbox, refusal: Refusal) {
    outbox.send(&Event::<()>::Error {
        code: refusal.code,
        message: refusal.message,
    });
}
