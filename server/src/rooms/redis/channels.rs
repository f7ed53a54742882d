//! The rooms' channels: the task that subscribes and unsubscribes in the order the relay
//! asked, and the one reader that applies what the channels bring to the core.

use std::sync::Arc;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::bus::{self, BusEvent};
use super::link::Reader;
use super::shared::{Shared, Subscription};
use crate::outbox::Batch;
use crate::rooms::core::Arrival;

/// Pushes read at once at most.
const PUSHES: usize = 256;

/// Carries out subscription changes one at a time, in the order asked for: they are asked
/// for under the rooms lock, with the change of the rooms tracked that called for them, so
/// an unsubscribe for the last member leaving never overtakes the subscribe of the next
/// one coming.
pub(super) async fn subscribe(reader: Reader, mut asked: mpsc::UnboundedReceiver<Subscription>) {
    while let Some(change) = asked.recv().await {
        match change {
            Subscription::Subscribe(channel, reply) => {
                let done = reader.subscribe(&channel).await;
                if let Err(error) = &done {
                    tracing::warn!(%error, channel, "could not subscribe");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(done.map_err(|_| ()));
                }
            }
            Subscription::Sync(reply) => {
                let _ = reply.send(());
            }
            Subscription::Unsubscribe(channel) => {
                if let Err(error) = reader.unsubscribe(&channel).await {
                    tracing::warn!(%error, channel, "could not unsubscribe");
                }
            }
        }
    }
}

/// Applies each event published in a room this relay tracks. All the events that arrived
/// together are applied under one lock of the core, and what they push leaves in one
/// write per member.
pub(super) async fn read(shared: Arc<Shared>, mut received: mpsc::UnboundedReceiver<PushInfo>) {
    let mut pushes = Vec::with_capacity(PUSHES);
    while received.recv_many(&mut pushes, PUSHES).await > 0 {
        let mut batch = Batch::new();
        {
            let mut core = shared.core();
            for push in pushes.drain(..) {
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {}
                    PushKind::Disconnection => {
                        // Events published meanwhile never arrive: recover once Redis answers.
                        shared.recovery_due();
                        continue;
                    }
                    _ => continue,
                }
                let [Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice()
                else {
                    continue;
                };
                let (Ok(channel), Ok(payload)) =
                    (std::str::from_utf8(channel), std::str::from_utf8(payload))
                else {
                    continue;
                };
                let Some(room) = bus::room_of(channel) else {
                    continue;
                };
                for text in bus::events(payload) {
                    match BusEvent::decode(text) {
                        Some(BusEvent::Joined { peer, before }) => {
                            core.apply_join(&room, peer, Some(before), &mut batch);
                        }
                        Some(BusEvent::Left { peer }) => {
                            if core.apply_left(&room, peer, &mut batch) {
                                shared.unsubscribe(&room);
                            }
                        }
                        Some(BusEvent::Message {
                            relay,
                            from,
                            to,
                            frame,
                        }) => {
                            let relays = (relay, shared.relay);
                            core.deliver(&room, relays, Some(from), to, frame, &mut batch);
                        }
                        Some(BusEvent::Notice { relay, peer, frame }) => {
                            let relays = (relay, shared.relay);
                            core.deliver_notice(&room, relays, peer, frame, &mut batch);
                        }
                        Some(BusEvent::Handover {
                            peer,
                            from,
                            to,
                            members,
                        }) => {
                            tracing::debug!(%peer, from, to, "a session's seat moves");
                            let relays = (from, to, shared.relay);
                            let (transfer, released) =
                                core.apply_handover(&room, peer, relays, members, &mut batch);
                            if from == shared.relay {
                                shared.send_fence(&room, peer);
                            }
                            if let Some(transfer) = transfer {
                                shared.send_transfer(transfer);
                            }
                            if released {
                                shared.unsubscribe(&room);
                            }
                        }
                        Some(BusEvent::Fence { peer, from }) => {
                            core.apply_fence(peer, from);
                        }
                        Some(BusEvent::Transfer { peer, to, carried }) => {
                            tracing::debug!(%peer, to, whole = carried.is_some(), "a session came");
                            let carried = carried.map(|c| (c.received, c.sent, c.frames));
                            let relays = (to, shared.relay);
                            if let Some(Arrival::Failed(peer, room)) =
                                core.apply_transfer(peer, relays, carried, false, &mut batch)
                            {
                                shared.departed(&mut core, peer, &room);
                            }
                        }
                        None => tracing::warn!(channel, "an event this relay does not know"),
                    }
                }
            }
            shared.settle(&mut core);
        }
        batch.flush();
    }
}
