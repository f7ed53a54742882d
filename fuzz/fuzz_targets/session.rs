//! Arbitrary frame sequences from four connections through the relay's per-connection
//! handling, the in-process rooms and the outboxes' writes into real loopback sockets.
//! Input: one frame per line, the first byte of a line picks the sender (`0`..`3`, or any
//! character modulo 4), the rest is the frame. Checked after every frame: nothing panics,
//! no one receives its own message, no frame is unreadable, capacity holds. Connections 0
//! and 2 are resumable, with a small session buffer; at the end connection 0 drops (away,
//! then its window ends) and the others close.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use signalroom_protocol::{Event, PeerId};
use std::time::Duration;

use signalroom_server::{
    handle, Admits, Batch, Handled, IceServers, LocalRooms, Outbox, Parting, Resumption, Rooms,
    Socket,
};
use signalroom_wsframe::{Header, OpCode};

const PEERS: usize = 4;
const CAPACITY: usize = 2;

/// One connection: the relay's end, and the client's end the test reads.
struct Peer {
    id: PeerId,
    outbox: Outbox,
    _socket: Socket,
    client: std::net::TcpStream,
    received: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let addr = listener.local_addr().expect("an address");
        let resumption = Resumption {
            window: Duration::from_secs(1),
            buffer: 2048,
            frames: 16,
        };
        let rooms = LocalRooms::new(CAPACITY, 3, IceServers::default(), resumption);
        let mut peers = Vec::new();
        for n in 0..PEERS {
            let client = std::net::TcpStream::connect(addr).expect("a connection");
            client.set_nonblocking(true).expect("non-blocking");
            let (server, _) = listener.accept().expect("an accepted connection");
            server.set_nonblocking(true).expect("non-blocking");
            let server = tokio::net::TcpStream::from_std(server).expect("registered");
            // The relay writes only to sockets known to be writable.
            server.writable().await.expect("writable");
            let (outbox, socket) = Outbox::new(server.into(), 64, 1 << 20);
            let id = rooms
                .connect(outbox.clone(), n % 2 == 0)
                .await
                .expect("in-process rooms always connect");
            peers.push(Peer { id, outbox, _socket: socket, client, received: Vec::new() });
        }
        for line in text.lines() {
            let mut chars = line.chars();
            let Some(first) = chars.next() else { continue };
            let sender = &peers[first as usize % PEERS];
            let mut batch = Batch::new();
            let handled = handle(&rooms, &Admits::AnyRoom, sender.id, chars.as_str(), &mut batch).await;
            if let Handled::Acked(received) = handled {
                let _ = sender.outbox.ack(received);
            }
            batch.flush();
            for peer in &mut peers {
                for text in texts(peer) {
                    let event: Event<Value> = serde_json::from_str(&text).expect("relay frames parse");
                    if let Event::Message { from, .. } = event {
                        assert_ne!(from, peer.id, "a message came back to its sender");
                    }
                }
            }
            let stats = rooms.stats();
            assert!(stats.members <= stats.rooms * CAPACITY);
            assert!(stats.connections == PEERS);
        }
        let mut batch = Batch::new();
        for (n, peer) in peers.iter().enumerate() {
            let parting = if n == 0 {
                Parting::Lost { received: 0 }
            } else {
                Parting::Closed
            };
            let away = rooms.disconnect(peer.id, &peer.outbox, parting, &mut batch).await;
            if let Some(away) = away {
                rooms.expire(peer.id, away.generation, &mut batch).await;
            }
        }
        batch.flush();
        let stats = rooms.stats();
        assert_eq!((stats.connections, stats.rooms, stats.members), (0, 0, 0));
    });
});

/// The text frames the relay wrote to `peer` since last asked (loopback delivers a write
/// before the writing call returns).
fn texts(peer: &mut Peer) -> Vec<String> {
    let mut chunk = [0; 4096];
    while let Ok(read @ 1..) = peer.client.read(&mut chunk) {
        peer.received.extend_from_slice(&chunk[..read]);
    }
    let mut texts = Vec::new();
    loop {
        let Some((header, size)) = Header::parse(&peer.received).expect("a frame header") else {
            break;
        };
        assert_eq!(header.mask, None, "server frames are not masked");
        assert_eq!(size, header.size(), "the shortest length encoding");
        let end = size + usize::try_from(header.len).expect("a length that fits");
        let Some(payload) = peer.received.get(size..end) else { break };
        if header.opcode == OpCode::Text {
            texts.push(String::from_utf8(payload.to_vec()).expect("text frames are UTF-8"));
        }
        peer.received.drain(..end);
    }
    texts
}
