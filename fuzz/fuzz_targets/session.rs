//! Arbitrary frame sequences from four connections through the relay's per-connection
//! handling and the in-process rooms. Input: one frame per line, the first byte of a line
//! picks the sender (`0`..`3`, or any character modulo 4), the rest is the frame. Checked after every frame: nothing
//! panics, no one receives its own message, no frame is unreadable, capacity holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use signalroom_protocol::{Event, PeerId};
use signalroom_server::connection::handle;
use signalroom_server::rooms::{LocalRooms, Outbox, OutboxQueue, Rooms};

const PEERS: usize = 4;
const CAPACITY: usize = 2;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let rooms = LocalRooms::new(CAPACITY, 3, Vec::new());
        let mut peers: Vec<(PeerId, OutboxQueue)> = Vec::new();
        for _ in 0..PEERS {
            let (outbox, queue) = Outbox::new(64, 1 << 20);
            peers.push((rooms.connect(outbox).await, queue));
        }
        for line in text.lines() {
            let mut chars = line.chars();
            let Some(first) = chars.next() else { continue };
            let sender = first as usize % PEERS;
            let _ = handle(&rooms, peers[sender].0, chars.as_str()).await;
            for (me, queue) in &mut peers {
                while let Some(frame) = queue.try_recv() {
                    let Ok(text) = frame.to_text() else { continue };
                    let event: Event<Value> = serde_json::from_str(text).expect("relay frames parse");
                    if let Event::Message { from, .. } = event {
                        assert_ne!(from, *me, "a message came back to its sender");
                    }
                }
            }
            let stats = rooms.stats();
            assert!(stats.members <= stats.rooms * CAPACITY);
            assert!(stats.connections == PEERS);
        }
        for (peer, _) in &peers {
            rooms.disconnect(*peer).await;
        }
        let stats = rooms.stats();
        assert_eq!((stats.connections, stats.rooms, stats.members), (0, 0, 0));
    });
});
