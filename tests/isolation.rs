//! Random sequences of joins, leaves, messages (to the room and directed) and dropped
//! connections across several rooms, checked frame by frame against a model: nothing
//! reaches the sender or anyone outside its room, `to` never crosses rooms, every remaining
//! member hears `left` exactly once, and no room exceeds its capacity. Run against one
//! relay, and against three relays sharing rooms through a Redis server and through a Redis
//! Cluster, with the clients spread over them.

use std::collections::HashMap;

use anyhow::{bail, ensure, Result};
use proptest::prelude::*;
use serde_json::json;
use signalroom_protocol::{ErrorCode, Event, PeerId, Request};
use signalroom_server::{Config, Stats};
use support::*;

const SLOTS: usize = 6;
const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
const CAPACITY: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Join(usize, usize),
    Leave(usize),
    Say(usize, Option<usize>),
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SLOTS, 0..ROOMS.len()).prop_map(|(s, r)| Op::Join(s, r)),
        1 => (0..SLOTS).prop_map(Op::Leave),
        4 => (0..SLOTS, proptest::option::of(0..SLOTS)).prop_map(|(s, t)| Op::Say(s, t)),
        1 => (0..SLOTS).prop_map(Op::Drop),
    ]
}

/// What the model knows of one client slot.
#[derive(Default, Clone)]
struct Slot {
    id: Option<PeerId>,
    room: Option<usize>,
}

struct World {
    /// Slot `s` is served by relay `s % relays.len()`.
    relays: Vec<Relay>,
    clients: Vec<Client>,
    slots: Vec<Slot>,
    members: HashMap<usize, Vec<usize>>,
    counter: u64,
}

impl World {
    /// One relay of its own, or `relays` relays sharing rooms through `redis`.
    async fn new(relays: usize, redis: Option<&SharedRedis>) -> Result<Self> {
        let config = Config {
            room_capacity: CAPACITY,
            ..redis.map_or_else(Config::default, SharedRedis::config)
        };
        let mut started = Vec::new();
        for _ in 0..relays {
            started.push(Relay::start(config.clone()).await?);
        }
        let mut clients = Vec::new();
        for s in 0..SLOTS {
            clients.push(started[s % relays].client().await?);
        }
        Ok(Self {
            relays: started,
            clients,
            slots: vec![Slot::default(); SLOTS],
            members: HashMap::new(),
            counter: 0,
        })
    }

    fn id(&self, slot: usize) -> Result<PeerId> {
        match self.slots[slot].id {
            Some(id) => Ok(id),
            None => bail!("slot {slot} has no id yet"),
        }
    }

    async fn expect(&mut self, slot: usize, want: Event<serde_json::Value>) -> Result<()> {
        let got = self.clients[slot].recv().await?;
        ensure!(got == want, "slot {slot}: expected {want:?}, got {got:?}");
        Ok(())
    }

    async fn apply(&mut self, op: &Op) -> Result<()> {
        match *op {
            Op::Join(s, r) => {
                self.clients[s]
                    .send_text(&json!({"type": "create_or_join", "room": ROOMS[r]}).to_string())
                    .await?;
                if self.slots[s].room.is_some() {
                    return self.clients[s].expect_error(ErrorCode::AlreadyInRoom).await;
                }
                let inside = self.members.get(&r).cloned().unwrap_or_default();
                let got = self.clients[s].recv().await?;
                if inside.len() >= CAPACITY {
                    ensure!(
                        got == Event::Full {
                            room: room_name(ROOMS[r])
                        },
                        "expected full, got {got:?}"
                    );
                    return Ok(());
                }
                let id = match got {
                    Event::Created { room, peer, .. }
                        if inside.is_empty() && room.as_str() == ROOMS[r] =>
                    {
                        peer
                    }
                    Event::Joined {
                        room, peer, peers, ..
                    } if room.as_str() == ROOMS[r] => {
                        let want: Vec<PeerId> =
                            inside.iter().map(|&m| self.id(m)).collect::<Result<_>>()?;
                        ensure!(peers == want, "joined lists {peers:?}, model has {want:?}");
                        peer
                    }
                    other => bail!("slot {s} joining {}: unexpected {other:?}", ROOMS[r]),
                };
                self.slots[s] = Slot {
                    id: Some(id),
                    room: Some(r),
                };
                for &m in &inside {
                    self.expect(
                        m,
                        Event::Join {
                            room: room_name(ROOMS[r]),
                            peer: id,
                        },
                    )
                    .await?;
                }
                self.members.entry(r).or_default().push(s);
            }
            Op::Leave(s) => {
                self.clients[s].send(&Request::Leave).await?;
                if self.slots[s].room.is_none() {
                    return self.clients[s].expect_error(ErrorCode::NotInRoom).await;
                }
                self.depart(s).await?;
            }
            Op::Say(s, to) => {
                self.counter += 1;
                let data = json!(self.counter);
                let target = match to {
                    // A slot that never joined has no id: address someone who does not exist.
                    Some(t) => Some(self.slots[t].id.unwrap_or(PeerId::new(PeerId::MAX)?)),
                    None => None,
                };
                self.clients[s].say(data.clone(), target).await?;
                let Some(r) = self.slots[s].room else {
                    return self.clients[s].expect_error(ErrorCode::NotInRoom).await;
                };
                let from = self.id(s)?;
                let others: Vec<usize> = self.members[&r]
                    .iter()
                    .copied()
                    .filter(|&m| m != s)
                    .collect();
                let recipients = match to {
                    Some(t) if others.contains(&t) => vec![t],
                    Some(_) => return self.clients[s].expect_error(ErrorCode::UnknownPeer).await,
                    None => others,
                };
                for m in recipients {
                    self.expect(
                        m,
                        Event::Message {
                            from,
                            data: data.clone(),
                        },
                    )
                    .await?;
                }
            }
            Op::Drop(s) => {
                let fresh = self.relays[s % self.relays.len()].client().await?;
                drop(std::mem::replace(&mut self.clients[s], fresh));
                if self.slots[s].room.is_some() {
                    self.depart(s).await?;
                }
                self.slots[s] = Slot::default();
            }
        }
        Ok(())
    }

    /// Waits until the relay has handled the op's frame: frames on one connection are
    /// handled in order, so the answer to a frame sent after it proves it was.
    async fn sync(&mut self, op: &Op) -> Result<()> {
        let (Op::Join(s, _) | Op::Leave(s) | Op::Say(s, _) | Op::Drop(s)) = *op;
        self.clients[s].send_text(r#"{"type":"sync"}"#).await?;
        self.clients[s].expect_error(ErrorCode::UnknownType).await
    }

    /// `s` leaves its room: every other member hears `left` once.
    async fn depart(&mut self, s: usize) -> Result<()> {
        let Some(r) = self.slots[s].room.take() else {
            return Ok(());
        };
        let id = self.id(s)?;
        let members = self.members.entry(r).or_default();
        members.retain(|&m| m != s);
        for m in members.clone() {
            self.expect(
                m,
                Event::Left {
                    room: room_name(ROOMS[r]),
                    peer: id,
                },
            )
            .await?;
        }
        if self.members[&r].is_empty() {
            self.members.remove(&r);
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        futures_util::future::try_join_all(self.clients.iter_mut().map(Client::expect_silence))
            .await?;
        self.check_stats().await
    }

    /// The relays' counts settle to the model's: each counts its own connections and
    /// members, and each room once for every relay that serves a member of it.
    async fn check_stats(&self) -> Result<()> {
        ensure!(self.members.values().all(|m| m.len() <= CAPACITY));
        for (r, relay) in self.relays.iter().enumerate() {
            let here = |s: &usize| s % self.relays.len() == r;
            let members: usize = self
                .members
                .values()
                .map(|m| m.iter().filter(|s| here(s)).count())
                .sum();
            let want = Stats {
                connections: (0..SLOTS).filter(here).count(),
                rooms: self.members.values().filter(|m| m.iter().any(here)).count(),
                members,
                ..Stats::default()
            };
            let got = relay.settled_stats(want).await?;
            ensure!(got == want, "relay {r} holds {got:?}, model {want:?}");
        }
        Ok(())
    }
}

/// How the relays of a run share rooms.
#[derive(Clone, Copy)]
enum Sharing {
    /// One relay, rooms in its process.
    Alone,
    /// Three relays on one Redis server.
    Server,
    /// Three relays on a Redis Cluster.
    Cluster,
}

/// Runs `ops` against the relays `sharing` calls for, checking every frame against the
/// model.
fn check(ops: &[Op], sharing: Sharing) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome: Result<()> = runtime.block_on(async {
        let redis = match sharing {
            Sharing::Alone => None,
            Sharing::Server => Some(SharedRedis::server().await?),
            Sharing::Cluster => Some(SharedRedis::cluster().await?),
        };
        let relays = if redis.is_some() { 3 } else { 1 };
        let mut world = World::new(relays, redis.as_ref()).await?;
        for (i, op) in ops.iter().enumerate() {
            world
                .apply(op)
                .await
                .map_err(|e| e.context(format!("op {i}: {op:?}")))?;
            world.sync(op).await?;
            // Requests on different connections race inside the relays (a leave and a
            // join, a message and a join, a drop nobody is told of): let each op settle
            // before the next.
            world
                .check_stats()
                .await
                .map_err(|e| e.context(format!("after op {i}")))?;
        }
        world.finish().await
    });
    outcome.map_err(|error| TestCaseError::fail(format!("{error:#}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn frames_never_leave_their_room(ops in proptest::collection::vec(op(), 1..40)) {
        check(&ops, Sharing::Alone)?;
    }

    #[test]
    fn frames_never_leave_their_room_across_three_relays(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        check(&ops, Sharing::Server)?;
    }
}

proptest! {
    // Each case builds a cluster of three redis-servers: fewer cases.
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn frames_never_leave_their_room_across_three_relays_on_a_cluster(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        check(&ops, Sharing::Cluster)?;
    }
}
