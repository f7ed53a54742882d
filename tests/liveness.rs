//! No frame waits for the heartbeat: many pairs trade bursts of messages, each frame its
//! own write, through a relay whose next ping is minutes away, and every frame must
//! arrive well before it. A read wakeup lost between the relay's read and the moment it
//! learns the socket is empty would leave a frame in the kernel until that ping.
//!
//! A liveness check, not a speed test: the patience per frame is seconds, a healthy
//! relay answers in milliseconds, and the heartbeat is 100 s away.

use anyhow::{bail, Context, Result};
use serde_json::json;
use signalroom_protocol::Event;
use signalroom_server::Config;
use support::*;

const PAIRS: usize = 64;
const ROUNDS: usize = 500;
const BURST: usize = 4;
const WORKERS: usize = 8;

/// One pair: A sends a burst, B takes all of it and sends one back, for every round.
async fn trade(relay: &Relay, n: usize) -> Result<()> {
    let (mut a, mut b) = (relay.client().await?, relay.client().await?);
    meet(&mut a, &mut b, &format!("live-{n}")).await?;
    for round in 0..ROUNDS {
        burst(&mut a, &mut b, n, round).await?;
        burst(&mut b, &mut a, n, round).await?;
    }
    Ok(())
}

/// `from` sends a burst, one write per frame; `to` must get all of it.
async fn burst(from: &mut Client, to: &mut Client, n: usize, round: usize) -> Result<()> {
    for i in 0..BURST {
        from.say(json!([round, i]), None).await?;
    }
    for i in 0..BURST {
        match to.recv().await.with_context(|| {
            format!("pair {n}, round {round}: frame {i} of a burst never arrived")
        })? {
            Event::Message { data, .. } if data == json!([round, i]) => {}
            other => bail!("pair {n}, round {round}: got {other:?}"),
        }
    }
    Ok(())
}

/// A runtime of `threads` workers. The relay and the clients each get several times the
/// machine's cores, so that threads are preempted anywhere, as on a busy server: that is
/// what opens the window between a read and the moment readiness is dropped.
fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

#[test]
fn every_frame_arrives_without_waiting_for_the_heartbeat() -> Result<()> {
    let (relay_runtime, clients) = (runtime(WORKERS)?, runtime(WORKERS)?);
    // Started on a runtime of its own: the relay's tasks never share a worker with a client.
    let relay = relay_runtime.block_on(Relay::start(Config {
        // Pings every 100 s: a frame left unread would wait that long.
        idle_timeout: 300.0,
        join_timeout: 300.0,
        rate_per_sec: 1_000_000,
        rate_burst: 1_000_000,
        ..Config::default()
    }))?;
    clients.block_on(async {
        let pairs = (0..PAIRS).map(|n| {
            let relay = &relay;
            async move { trade(relay, n).await }
        });
        futures_util::future::try_join_all(pairs).await
    })?;
    Ok(())
}
