//! The transport: one WebSocket to the relay. Frames it receives, and its closing, become
//! [`Input`]s of the page's single event loop, tagged with the connection's generation so
//! that stragglers from an earlier connection are ignored.

use futures::channel::mpsc::UnboundedSender;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::Message;
use serde::Serialize;

use crate::app::Input;
use crate::codec;

/// The sending half of a relay connection.
pub struct RelayLink {
    sink: SplitSink<WebSocket, Message>,
}

impl RelayLink {
    /// Opens a connection to `url` and forwards what arrives to `inputs`.
    pub fn open(
        url: &str,
        generation: u32,
        inputs: UnboundedSender<Input>,
    ) -> Result<Self, String> {
        let socket = WebSocket::open(url).map_err(|e| e.to_string())?;
        let (sink, mut stream) = socket.split();
        wasm_bindgen_futures::spawn_local(async move {
            let mut reason = String::from("connection closed");
            let mut heard = false;
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        heard = true;
                        let _ = inputs.unbounded_send(Input::Frame { generation, text });
                    }
                    Ok(Message::Bytes(_)) => heard = true,
                    Err(error) => {
                        reason = error.to_string();
                        break;
                    }
                }
            }
            let _ = inputs.unbounded_send(Input::RelayClosed {
                generation,
                reason,
                heard,
            });
        });
        Ok(Self { sink })
    }

    /// Sends one frame; waits while the connection is still opening.
    pub async fn send<T: Serialize>(&mut self, frame: &T) -> Result<(), String> {
        self.sink
            .send(Message::Text(codec::encode(frame)))
            .await
            .map_err(|e| e.to_string())
    }
}
