//! Joins a room and prints everything that happens in it, one line each.
//!
//! ```text
//! cargo run -p signalroom-client --example room_logger -- ws://127.0.0.1:2013 lobby
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
    println!(
        "in {} as peer {}; inside before: {:?}",
        entered.room, entered.peer, entered.peers
    );
    while let Some(update) = events.next().await {
        match update {
            Update::Event(Event::Join { peer, .. }) => println!("{peer} joined"),
            Update::Event(Event::Left { peer, .. }) => println!("{peer} left"),
            Update::Event(Event::Away { peer, .. }) => println!("{peer} is reconnecting"),
            Update::Event(Event::Back { peer, .. }) => println!("{peer} is back"),
            Update::Event(Event::Message { from, data }) => println!("{from}: {data}"),
            Update::Event(other) => println!("{other:?}"),
            Update::Disconnected { reason, retry_in } => {
                println!("disconnected ({reason}); next try in {retry_in:?}")
            }
            Update::Resumed { incomplete, .. } => println!("resumed (incomplete: {incomplete})"),
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
