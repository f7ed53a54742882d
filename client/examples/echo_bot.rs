//! Joins a room and sends every message it receives back to its sender alone.
//!
//! ```text
//! cargo run -p signalroom-client --example echo_bot -- ws://127.0.0.1:2013 lobby
//! ```

use anyhow::{Context, Result};
use serde_json::Value;
use signalroom_client::{connect, Options, Update};
use signalroom_protocol::{Event, RoomName};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let relay = args.next().unwrap_or_else(|| "ws://127.0.0.1:2013".into());
    let room = RoomName::new(args.next().unwrap_or_else(|| "lobby".into()))
        .context("a room name: 1 to 64 characters, no control characters")?;

    let (client, mut events) = connect::<Value>(Options::new(&relay)?).await?;
    let entered = client.create_or_join(room).await?;
    println!("echoing in {} as peer {}", entered.room, entered.peer);
    while let Some(update) = events.next().await {
        if let Update::Event(Event::Message { from, data }) = update {
            client.send_to(from, data).await?;
        }
    }
    Ok(())
}
