//! Recovery, after the faults a deployment meets.
//!
//! - **A lost connection** (a `Disconnection` push: Redis restarted, a cluster node failed
//!   over, the network was cut): events published meanwhile never arrived, subscriptions
//!   may be gone (a promoted replica knows none), and a promoted replica may lack the last
//!   writes. Once Redis answers, the relay subscribes to every room's channel again, puts
//!   every member back through the writer (`rejoin.lua`: a member that no longer fits is
//!   taken out, with `left`, never squeezed in), and reads each room's members again,
//!   telling its members who left and who came (once any hold after a loss of data is
//!   over: until then, a member of another relay may not be back yet). Tried again until
//!   it all succeeds.
//! - **Redis lost its data** (no epoch): joins and id reservations are held for one relay
//!   timeout under a new epoch (`recover.lua`), during which every live relay, beating four
//!   times per timeout, sees the new epoch and puts its members back and the id counters
//!   past its own. So no join meets a room whose members are not all back, and no id is
//!   handed out twice. Without an epoch key per slot, a Redis Cluster node that restarts
//!   empty without a replica is recovered by re-assertion alone (see the README).
//! - **Given up for dead** (paused past its timeout): the members the other relays took
//!   out are closed with 1012 and leave this relay's rooms at once.

use std::collections::HashSet;
use std::sync::Arc;

use signalroom_protocol::PeerId;
use tokio::sync::oneshot;

use super::bus::{self, RegistryEntry, RELAYS_TAG};
use super::shared::{Shared, Subscription, RECOVER};
use crate::outbox::Batch;
use crate::rooms::RoomError;

/// Why recovery has to be tried again.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecoveryError {
    #[error("could not subscribe to every room's channel again")]
    Subscribe,
    #[error("could not read the rooms again: {0}")]
    Read(#[from] redis::RedisError),
    #[error("a room's channel brought events while it was read again")]
    Moved,
    #[error("the relays are still putting their members back after a loss of data")]
    Held,
}

/// Subscribes again, puts the members back, and reads the rooms again.
pub(super) async fn after_reconnection(shared: &Arc<Shared>) -> Result<(), RecoveryError> {
    // Asked for under the core lock: ordered with the unsubscribes of rooms let go.
    let replies: Vec<oneshot::Receiver<Result<(), ()>>> = {
        let core = shared.core();
        core.room_names()
            .map(|room| {
                let (reply, replied) = oneshot::channel();
                let asked = Subscription::Subscribe(bus::channel(room), Some(reply));
                let _ = shared.subscriptions.send(asked);
                replied
            })
            .collect()
    };
    for replied in replies {
        if !matches!(replied.await, Ok(Ok(()))) {
            return Err(RecoveryError::Subscribe);
        }
    }
    shared.queue.send(shared.reassert());
    // After a loss of data, what Redis holds is not the rooms until every relay has put
    // its members back: read the rooms only once the hold is over, or a member of another
    // relay not yet back would look gone.
    if shared.reader.exists(bus::HOLD_KEY).await? {
        return Err(RecoveryError::Held);
    }
    let rooms: Vec<_> = shared.core().room_names().cloned().collect();
    let mut moved = false;
    for room in rooms {
        let Some(seen) = shared.core().events(&room) else {
            continue;
        };
        let channel = bus::channel(&room);
        let ids = shared.reader.hkeys(&bus::members_key(&channel)).await?;
        let inside: Vec<PeerId> = ids
            .iter()
            .filter_map(|id| id.parse().ok().and_then(|n| PeerId::new(n).ok()))
            .collect();
        let mut batch = Batch::new();
        {
            let mut core = shared.core();
            moved |= !core.catch_up(&room, &inside, seen, &mut batch);
            shared.settle(&mut core);
        }
        batch.flush();
    }
    if moved {
        return Err(RecoveryError::Moved);
    }
    tracing::info!(
        relay = shared.relay,
        "recovered after a lost connection to Redis"
    );
    Ok(())
}

/// Redis has no epoch: sets a new one (unless another relay just did) and holds joins for
/// one relay timeout. Returns the epoch.
pub(super) async fn after_data_loss(shared: &Shared) -> Result<String, RoomError> {
    let fresh = format!("{}-{:?}", shared.relay, std::time::SystemTime::now());
    let cmd = Shared::relays_script(
        RECOVER,
        &[bus::EPOCH_KEY, bus::HOLD_KEY],
        &[fresh, shared.ttl_ms().to_string()],
    );
    let epoch = shared.queue.call(cmd, RELAYS_TAG).await?;
    redis::from_redis_value(epoch).map_err(|_| RoomError::Unavailable)
}

/// Takes out of their rooms (closing them with 1012) the members of this relay that Redis
/// no longer has in its registry: the other relays gave this one up and took them out.
pub(super) async fn close_lost_members(shared: &Shared) -> redis::RedisResult<()> {
    let registered: HashSet<RegistryEntry> = shared
        .reader
        .smembers::<String>(&bus::relay_members_key(shared.relay))
        .await?
        .iter()
        .filter_map(|entry| RegistryEntry::decode(entry))
        .collect();
    let mut batch = Batch::new();
    {
        let mut core = shared.core();
        let lost: Vec<_> = core
            .inside()
            .map(|(peer, room)| RegistryEntry {
                peer,
                room: room.clone(),
            })
            .filter(|entry| !registered.contains(entry))
            .collect();
        for entry in lost {
            if core.apply_left(&entry.room, entry.peer, &mut batch) {
                shared.unsubscribe(&entry.room);
            }
        }
        shared.settle(&mut core);
    }
    batch.flush();
    Ok(())
}
