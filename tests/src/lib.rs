//! Shared by the integration tests (`relay.rs`, `limits.rs`, ... beside this crate's
//! `src/`): the relay in-process on an ephemeral port or as a process of its own, a
//! WebSocket client that speaks the protocol crate's types, the servers some tests
//! start (Redis, coturn), and the rooms backends a scenario runs on
//! (`Backend`, with `on_each_backend!`). A test imports what it needs from the crate root
//! (`use support::{meet, Relay};`): every helper is re-exported there, whichever module
//! holds it.

use std::time::Duration;

mod backend;
mod clients;
mod http;
mod peer;
mod process;
mod proxy;
mod redis;
mod relay;
mod session;
mod tls;
mod turn;

pub use backend::*;
pub use clients::*;
pub use http::*;
pub use peer::*;
pub use process::*;
pub use proxy::*;
pub use redis::*;
pub use relay::*;
pub use session::*;
pub use tls::*;
pub use turn::*;

/// How long to wait for a frame that must come.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long to listen for a frame that must not come.
pub const QUIET: Duration = Duration::from_millis(150);
