//! The relay in-process, on an ephemeral port.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use signalroom_server::{Config, Stats};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::{client_at, http_get, Client, PATIENCE};

pub struct Relay {
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
}

impl Relay {
    pub async fn start(config: Config) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(signalroom_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop })
    }

    pub async fn default() -> Result<Self> {
        Self::start(Config::default()).await
    }

    /// A client that, like a browser, sends each frame at once (no Nagle delay).
    pub async fn client(&self) -> Result<Client> {
        client_at(self.addr).await
    }

    pub async fn stats(&self) -> Result<Stats> {
        let body = http_get(self.addr, "/stats").await?;
        let v: Value = serde_json::from_str(&body)?;
        Ok(Stats {
            connections: v["connections"].as_u64().context("connections")? as usize,
            rooms: v["rooms"].as_u64().context("rooms")? as usize,
            members: v["members"].as_u64().context("members")? as usize,
            away: v["away"].as_u64().context("away")? as usize,
            retained_bytes: v["retained_bytes"].as_u64().context("retained_bytes")? as usize,
        })
    }

    /// Stats once the relay has caught up with closed connections.
    pub async fn settled_stats(&self, want: Stats) -> Result<Stats> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let stats = self.stats().await?;
            if stats == want || tokio::time::Instant::now() > deadline {
                return Ok(stats);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
