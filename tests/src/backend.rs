//! The rooms backends a scenario test runs against: the in-process rooms, and rooms shared
//! through a Redis server of the test's own.

use anyhow::Result;
use signalroom_server::Config;

use crate::{RedisServer, Relay};

/// Where a test's relay keeps its rooms. A Redis server started here lives as long as the
/// value.
pub enum Backend {
    /// `LocalRooms`, in the relay's process.
    Local,
    /// `RedisRooms`, through this server.
    Redis(RedisServer),
}

impl Backend {
    pub async fn local() -> Result<Self> {
        Ok(Self::Local)
    }

    pub async fn redis() -> Result<Self> {
        Ok(Self::Redis(RedisServer::start().await?))
    }

    /// `config`, with its rooms kept by this backend.
    pub fn config(&self, config: Config) -> Config {
        match self {
            Self::Local => config,
            Self::Redis(redis) => Config {
                redis_url: Some(redis.url.clone()),
                ..config
            },
        }
    }

    /// A relay in-process with `config`, its rooms kept by this backend.
    pub async fn relay(&self, config: Config) -> Result<Relay> {
        Relay::start(self.config(config)).await
    }
}

/// Makes a test of each `story` (an `async fn(Backend) -> anyhow::Result<()>` beside the
/// macro's call) for each backend: `local::story` and `redis::story`.
#[macro_export]
macro_rules! on_each_backend {
    ($($story:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $story() -> anyhow::Result<()> {
                    super::$story($crate::Backend::local().await?).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $story() -> anyhow::Result<()> {
                    super::$story($crate::Backend::redis().await?).await
                }
            )*
        }
    };
}
