//! Resuming on this relay a session that lives on another: the session moves, with its
//! seat, its id and the frames it keeps, and the room sees no churn.
//!
//! 1. The session's record ([`SessionRecord`], written by the relay that granted its key)
//!    says where it lives and its key's digest: a claim whose key does not match is
//!    refused here, as one for a session of this relay would be.
//! 2. This relay tracks the room and subscribes to its channel, then runs claim.lua: the
//!    seat moves to this relay in Redis and `H` is published, in one atomic step, only if
//!    the seat is still where the record said. The seat is taken here as the claim is
//!    queued, under the rooms lock: this relay's own messages from then on reach the
//!    session here (they reach Redis after the `H`), those before reach it where it was.
//! 3. Of what other relays publish, what comes after the `H` reaches the session here
//!    (kept, until it resumes), and the old relay delivers nothing more to it. The old
//!    relay publishes `F` once it has applied the `H` (what it published before `F` had
//!    reached the session there), and `T` with what the session carries (the client's
//!    count and the retention) as soon as its connection there is gone: at once for an
//!    away session; for one that still looked alive (half-open), once the close it was
//!    sent has ended its task.
//! 4. On `T`, the core resumes the connection: `resumed`, then the old relay's retention,
//!    then what was kept here since `H`: nothing lost, nothing twice, in order.
//!
//! Should the other relay die before `T` (a relay killed, or cut off: [`TRANSFER_PATIENCE`]
//! passes), what it kept for the session died with it. The seat is here already: the session
//! goes on, `incomplete` (both counts from zero, frames either way may be missing), and the
//! room sees no churn.

use std::time::Duration;

use redis::Value;
use signalroom_protocol::RoomName;
use tokio::sync::oneshot;

use super::bus::{self, SessionRecord};
use super::shared::{registry, Shared, CLAIM};
use crate::outbox::{Batch, Outbox};
use crate::rooms::core::{Arrival, Cancelled};
use crate::rooms::sessions::{Digest, Ending};
use crate::rooms::{Claim, RoomError};
use signalroom_protocol::PeerId;

/// How long a step in Redis may take.
const REDIS_PATIENCE: Duration = Duration::from_secs(2);
/// How long the session may take to arrive once its seat moved: the old relay's
/// connection must end first in the half-open case.
const TRANSFER_PATIENCE: Duration = Duration::from_secs(3);

/// Takes over `claim`'s session, which is not this relay's, for connection `conn`.
pub(super) async fn take_over(
    shared: &Shared,
    conn: PeerId,
    outbox: &Outbox,
    claim: &Claim<'_>,
) -> Result<(RoomName, u64), RoomError> {
    if shared.closing() {
        return Err(RoomError::Unavailable);
    }
    if !shared.core().may_try(claim.from) {
        return Err(RoomError::ResumeRefused);
    }
    let (from, room) = match read_record(shared, claim.peer).await? {
        Some(SessionRecord::Live {
            relay,
            digest,
            room,
        }) if digest.matches(&Digest::claimed(claim.key))
            && relay != shared.relay
            && (claim.admits)(&room) =>
        {
            (relay, room)
        }
        Some(SessionRecord::Ended { how, digest })
            if digest.matches(&Digest::claimed(claim.key)) =>
        {
            return Err(match how {
                Ending::Expired => RoomError::ResumeExpired,
                Ending::Lost => RoomError::ResumeLost,
            });
        }
        _ => {
            shared.core().failed(claim.from);
            return Err(RoomError::ResumeRefused);
        }
    };
    let (reply, replied) = oneshot::channel();
    let subscribed = {
        let mut core = shared.core();
        let session = (claim.peer, from);
        let first = core.begin_handover(conn, outbox, session, claim.received, &room, reply)?;
        shared.subscribed(&room, first)
    };
    if !subscribed.await {
        give_up(shared, claim.peer, false);
        return Err(RoomError::Unavailable);
    }
    // Into the registry before the seat, as for a join.
    shared
        .queue
        .send(registry(shared.relay, claim.peer, &room, true));
    let args = [
        claim.peer.to_string(),
        from.to_string(),
        shared.relay.to_string(),
        shared.publish_command().to_owned(),
    ];
    let (cmd, tag) = shared.room_script(CLAIM, &room, &[], &args);
    let claimed = {
        // The seat is taken here as the claim is queued, under the lock: what this relay
        // published before it reaches the session where it was.
        let mut core = shared.core();
        if !core.claim_seat(claim.peer) {
            return Err(RoomError::ResumeRefused);
        }
        shared.queue.request(cmd, &tag)
    };
    match tokio::time::timeout(REDIS_PATIENCE, claimed).await {
        Ok(Ok(Value::Int(1))) => {}
        Ok(Ok(_)) => {
            // The seat was no longer there: the session ended meanwhile, or moved.
            give_up(shared, claim.peer, false);
            shared
                .queue
                .send(registry(shared.relay, claim.peer, &room, false));
            return Err(RoomError::ResumeRefused);
        }
        Ok(Err(_)) | Err(_) => {
            // Redis may yet take the claim: the session's departure follows it.
            give_up(shared, claim.peer, false);
            shared.queue_departure(claim.peer, &room);
            return Err(RoomError::Unavailable);
        }
    }
    tokio::pin!(replied);
    if let Ok(Ok(outcome)) = tokio::time::timeout(TRANSFER_PATIENCE, &mut replied).await {
        return outcome;
    }
    // The other relay did not send the session on: it has died (or is cut off), and what it
    // kept for the session with it. The seat is here: the session goes on, incomplete.
    let mut batch = Batch::new();
    {
        let mut core = shared.core();
        let me = (shared.relay, shared.relay);
        let zeros = Some((0, 0, Vec::new()));
        if let Some(Arrival::Failed(peer, room)) =
            core.apply_transfer(claim.peer, me, zeros, true, &mut batch)
        {
            shared.departed(&mut core, peer, &room);
        }
        shared.settle(&mut core);
    }
    batch.flush();
    match replied.try_recv() {
        Ok(outcome) => outcome,
        Err(_) => {
            give_up(shared, claim.peer, true);
            Err(RoomError::ResumeLost)
        }
    }
}

/// What Redis holds of `peer`'s session, if anything readable.
async fn read_record(shared: &Shared, peer: PeerId) -> Result<Option<SessionRecord>, RoomError> {
    let key = bus::session_key(peer);
    let mut get = redis::cmd("GET");
    get.arg(&key);
    let read = tokio::time::timeout(REDIS_PATIENCE, shared.queue.call(get, bus::hash_tag(&key)));
    match read.await {
        Ok(Ok(Value::BulkString(bytes))) => Ok(std::str::from_utf8(&bytes)
            .ok()
            .and_then(SessionRecord::decode)),
        Ok(Ok(_)) => Ok(None),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(RoomError::Unavailable),
    }
}

/// Stops waiting for `peer`'s session; a seat that `moved` here is given up with `left`.
fn give_up(shared: &Shared, peer: PeerId, moved: bool) {
    let mut core = shared.core();
    match core.cancel_handover(peer, moved) {
        Cancelled::Kept => {}
        Cancelled::Released(room) => shared.unsubscribe(&room),
        Cancelled::Depart(room) => shared.departed(&mut core, peer, &room),
    }
}
