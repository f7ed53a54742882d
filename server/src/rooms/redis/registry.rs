//! Relays' liveness and registries: each relay renews a key with a TTL (`--relay-timeout`)
//! and keeps the set of its members; the others sweep a relay whose key expired, taking
//! each of its members out of its room with `left`. The heartbeat also notices what
//! happened to Redis meanwhile and starts the recovery it calls for (`recovery.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::MissedTickBehavior;

use super::bus::{self, RegistryEntry, SessionRecord, RELAYS_TAG};
use super::recovery;
use super::shared::{Shared, BEAT, FORGET, LEAVE, REGISTER};
use super::writer::Command;
use crate::rooms::RoomError;

/// How soon the heartbeat tries again while recovery is due and has not succeeded.
const RETRY: Duration = Duration::from_millis(200);

/// Registers relay `relay`: its liveness key, its place among the relays, and the epoch of
/// Redis's data (set by the first relay to come, kept by the rest). Returns the epoch.
pub(super) async fn register(shared: &Shared) -> Result<String, RoomError> {
    let relay = shared.relay;
    let fresh = format!("{relay}-{:?}", std::time::SystemTime::now());
    let cmd = Shared::relays_script(
        REGISTER,
        &[
            &bus::relay_alive_key(relay),
            bus::RELAYS_KEY,
            bus::EPOCH_KEY,
        ],
        &[relay.to_string(), shared.ttl_ms().to_string(), fresh],
    );
    let epoch = shared.queue.call(cmd, RELAYS_TAG).await?;
    redis::from_redis_value(epoch).map_err(|_| RoomError::Unavailable)
}

/// Takes this relay out of the relays (its members are out already): at shutdown.
pub(super) fn deregister(shared: &Shared) {
    let relay = shared.relay;
    let mut srem = redis::cmd("SREM");
    srem.arg(bus::RELAYS_KEY).arg(relay);
    let mut del = redis::cmd("DEL");
    del.arg(bus::relay_alive_key(relay))
        .arg(bus::relay_members_key(relay));
    shared.queue.send(Command::call(srem, RELAYS_TAG));
    shared.queue.send(Command::call(del, RELAYS_TAG));
}

/// Renews the liveness key a few times per timeout, cleans up after relays whose key
/// expired, and sees recovery through, trying again until it succeeds. `epoch` is the
/// epoch of Redis's data this relay registered under. Runs until shutdown stops it.
pub(super) async fn keep_alive(shared: Arc<Shared>, mut epoch: String) {
    let mut tick = tokio::time::interval(shared.relay_timeout / 4);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Since when this relay has renewed its liveness without a miss. Whatever kept it from
    // renewing (an outage, a failover) kept the others too: it gives them a whole timeout
    // of its own renewals to renew theirs before it sweeps any of them.
    let mut healthy_since = tokio::time::Instant::now();
    loop {
        let due = shared.lost.load(Ordering::Relaxed);
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(RETRY), if due => {}
        }
        let started = tokio::time::Instant::now();
        match beat(&shared, &mut epoch).await {
            Ok(()) => shared.queue.set_reachable(true),
            Err(error) => {
                tracing::warn!(%error, "could not renew this relay's liveness in Redis");
                shared.queue.set_reachable(false);
                healthy_since = tokio::time::Instant::now();
                continue;
            }
        }
        if started.elapsed() > shared.relay_timeout / 4 {
            // The renewal itself waited out an outage.
            healthy_since = started;
        }
        if healthy_since.elapsed() >= shared.relay_timeout {
            if let Err(error) = sweep(&shared).await {
                tracing::warn!(%error, "could not clean up after stopped relays");
            }
        }
        if shared.lost.swap(false, Ordering::Relaxed) {
            if let Err(error) = recovery::after_reconnection(&shared).await {
                tracing::warn!(%error, "recovery after a lost connection failed; trying again");
                shared.lost.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Why the heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BeatError {
    #[error("Redis did not answer")]
    Unanswered(#[from] RoomError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("an answer this relay does not read: {0}")]
    Parse(#[from] redis::ParsingError),
}

/// Renews the liveness key, only while it exists, and reads the epoch. What changed:
/// - no epoch: Redis lost its data. Joins are held for one timeout, under a new epoch,
///   while every relay puts its members back (this one first);
/// - another epoch: another relay saw the loss first; this one puts its members back;
/// - the key gone under the same epoch: the other relays gave this one up for dead and
///   took its members out: those still here are told they lost their seat (1012).
async fn beat(shared: &Arc<Shared>, epoch: &mut String) -> Result<(), BeatError> {
    let relay = shared.relay;
    let cmd = Shared::relays_script(
        BEAT,
        &[&bus::relay_alive_key(relay), bus::EPOCH_KEY],
        &[shared.ttl_ms().to_string()],
    );
    let (renewed, now): (i64, String) =
        redis::from_redis_value(shared.queue.call(cmd, RELAYS_TAG).await?)?;
    if now.is_empty() {
        tracing::warn!(
            relay,
            "Redis lost its data; holding joins while the relays put their members back"
        );
        *epoch = recovery::after_data_loss(shared).await?;
        register(shared).await?;
        shared.queue.send(shared.reassert());
    } else if now != *epoch {
        tracing::warn!(
            relay,
            "Redis lost its data (a new epoch); putting this relay's members back"
        );
        *epoch = now;
        register(shared).await?;
        shared.queue.send(shared.reassert());
    } else if renewed == 0 {
        tracing::warn!(
            relay,
            "this relay was given up for dead; closing the members it lost"
        );
        register(shared).await?;
        recovery::close_lost_members(shared).await?;
    }
    Ok(())
}

/// Takes every member of every relay whose liveness key expired out of its room, then
/// the relay out of the relays.
async fn sweep(shared: &Shared) -> redis::RedisResult<()> {
    let relays: Vec<u64> = shared.reader.smembers(bus::RELAYS_KEY).await?;
    for relay in relays.into_iter().filter(|r| *r != shared.relay) {
        if shared.reader.exists(&bus::relay_alive_key(relay)).await? {
            continue;
        }
        let entries: Vec<String> = shared
            .reader
            .smembers(&bus::relay_members_key(relay))
            .await?;
        tracing::warn!(
            relay,
            members = entries.len(),
            "a relay stopped; its members leave"
        );
        let departures = entries
            .iter()
            .filter_map(|e| RegistryEntry::decode(e))
            .map(|entry| {
                // Its session's record goes, unless the session moved to another relay.
                let key = bus::session_key(entry.peer);
                let on_it = SessionRecord::live_prefix(relay);
                let forget = Shared::relays_script(FORGET, &[&key], &[on_it]);
                shared
                    .queue
                    .send(Command::call(forget, bus::hash_tag(&key)));
                let args = [
                    entry.peer.to_string(),
                    shared.publish_command().to_owned(),
                    relay.to_string(),
                ];
                let (cmd, tag) = shared.room_script(LEAVE, &entry.room, &[], &args);
                shared.queue.request(cmd, &tag)
            });
        // Every departure done before the relay is forgotten: a sweep that fails midway
        // is done again at the next beat, by this relay or another.
        let departures: Vec<_> = departures.collect();
        for departure in departures {
            if departure.await.is_err() {
                return Ok(());
            }
        }
        let mut del = redis::cmd("DEL");
        del.arg(bus::relay_members_key(relay));
        let mut srem = redis::cmd("SREM");
        srem.arg(bus::RELAYS_KEY).arg(relay);
        shared.queue.send(Command::call(del, RELAYS_TAG));
        if !matches!(shared.queue.call(srem, RELAYS_TAG).await, Ok(Value::Int(_))) {
            return Ok(());
        }
    }
    Ok(())
}
