//! signalroom's relay: tracks rooms and forwards JSON signaling frames between their members
//! over WebSocket, and serves the page.
//!
//! The crate's API is what the binary (`main.rs`), the integration tests (`tests/`) and the
//! fuzz targets use: [`run`] and its [`Config`], the room tokens ([`RoomTokens`],
//! [`Admits`]), [`Secret`], the ICE servers ([`IceServers`], [`TurnRest`]), the in-process
//! rooms ([`LocalRooms`] behind [`Rooms`], with their [`Stats`]), and the pieces the fuzz
//! targets drive directly: [`decode`], [`handle`], the write side ([`Outbox`], [`Batch`],
//! [`Socket`]) and the framing of what clients send ([`Reader`], [`Incoming`]). Every
//! module is private to the crate.
//!
//! Code map: `config` holds the flags, `secret` reads the secrets they point at, and `ice`
//! mints the TURN credentials handed out with the STUN/TURN servers; `rooms` the room logic
//! behind the [`Rooms`] interface, its in-process backend and the backend that shares rooms
//! between relays through Redis; `connection` the per-connection task and its limits;
//! `outbox` the write side every task delivers through; `ws` WebSocket framing; `spare` the
//! buffers they reuse; `codec` request decoding and refusals, with `json` checking the data
//! the relay forwards; `routes` the HTTP surface, with `upgrade` the WebSocket handshake and
//! `auth` the room tokens it may need; `http` the accept loop, `tls` and `stream` what it
//! serves over; `metrics` what the relay counts. [`run`] ties them up.

pub(crate) mod auth;
pub(crate) mod codec;
pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod http;
pub(crate) mod ice;
pub(crate) mod json;
pub(crate) mod metrics;
pub(crate) mod outbox;
pub(crate) mod rooms;
pub(crate) mod routes;
pub(crate) mod secret;
pub(crate) mod site;
mod spare;
pub(crate) mod stream;
pub(crate) mod tls;
pub(crate) mod upgrade;
pub(crate) mod ws;

use std::future::Future;
use std::time::Duration;

// What the binary and the integration tests use.
pub use auth::{Admits, RoomTokens};
pub use config::{Config, LogFormat};
pub use ice::{IceServers, TurnRest};
pub use rooms::{LocalRooms, Parting, Resumption, Rooms, Stats};
pub use secret::Secret;
// What the fuzz targets drive without a socket: request decoding, a connection's handling
// of one request, the write side, and the framing of what a client sends.
pub use codec::decode;
pub use connection::{handle, Handled, Peer};
pub use outbox::{Batch, Outbox, Socket};
pub use ws::{Incoming, Reader};

use rooms::{RedisRooms, RedisTopology};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Redis (`--redis-url`) could not be reached.
    #[error("could not reach Redis (--redis-url): {0}")]
    Redis(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The certificate or key (`--tls-cert`, `--tls-key`) could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The page (`--static-dir`, `--csp`) could not be loaded.
    #[error(transparent)]
    Site(#[from] site::SiteError),
    /// Loading the page stopped short (its thread panicked).
    #[error("loading the page failed: {0}")]
    SiteLoad(#[source] tokio::task::JoinError),
    /// The metrics address (`--metrics-addr`) could not be listened on.
    #[error("--metrics-addr: cannot listen on {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
}

/// Serves the relay on `listener` until `shutdown` completes, then closes every WebSocket
/// with 1001 (going away) and returns. Rooms live in this process, or in Redis with
/// `config.redis_url`. Fails only at the start: Redis cannot be reached, the TLS files
/// cannot be used, or the page's files cannot be read.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    match &config.redis_url {
        Some(url) => {
            let topology = RedisTopology::from_flags(
                url,
                config.redis_cluster,
                config.redis_sentinel.as_deref(),
            );
            let rooms = RedisRooms::connect(
                &topology,
                config.room_capacity,
                config.max_rooms,
                ice_servers(&config),
                Duration::from_secs_f64(config.relay_timeout),
                config.resumption(),
            )
            .await
            .map_err(|error| StartError::Redis(error.into()))?;
            run_with(listener, config, rooms, shutdown).await
        }
        None => {
            let rooms = LocalRooms::new(
                config.room_capacity,
                config.max_rooms,
                ice_servers(&config),
                config.resumption(),
            );
            run_with(listener, config, rooms, shutdown).await
        }
    }
}

/// The STUN/TURN servers of `config` (`--ice-server`), and TURN REST credentials when it
/// has both `--turn-url` and the TURN secret.
fn ice_servers(config: &Config) -> IceServers {
    let turn = match (&config.turn_secret, config.turn_urls.is_empty()) {
        (Some(secret), false) => Some(TurnRest::new(
            secret.clone(),
            config.turn_urls.clone(),
            Duration::from_secs(config.turn_ttl),
        )),
        _ => None,
    };
    IceServers::new(config.ice_servers.clone(), turn)
}

/// [`run`] with the rooms backend chosen.
async fn run_with<R: Rooms>(
    listener: TcpListener,
    config: Config,
    rooms: R,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let certs = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::Certs::load(cert, key)?),
        _ => None,
    };
    let acceptor = certs.as_ref().map(tls::Certs::acceptor).transpose()?;
    let (static_dir, csp) = (config.static_dir.clone(), config.page_csp());
    // Compressing every file at the best levels takes a moment: off the runtime's threads.
    let site = tokio::task::spawn_blocking(move || site::Site::load(&static_dir, &csp))
        .await
        .map_err(StartError::SiteLoad)??;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (phase_tx, phase_rx) = watch::channel(connection::Phase::Serving);
    let route_config = routes::RouteConfig {
        site: std::sync::Arc::new(site),
        max_connections: config.max_connections,
        allowed_origins: config.allowed_origins.clone(),
        tokens: config.auth_secret.as_ref().map(auth::RoomTokens::new),
        limits: connection::Limits {
            max_message_bytes: config.max_frame_bytes,
            outbox_frames: config.outbox_frames,
            outbox_bytes: config.outbox_bytes,
            rate_per_sec: config.rate_per_sec,
            rate_burst: config.rate_burst,
            idle_timeout: Duration::from_secs_f64(config.idle_timeout),
            join_timeout: Duration::from_secs_f64(config.join_timeout),
        },
    };
    let routes = routes::routes(rooms.clone(), route_config, phase_rx);
    if let Some(addr) = config.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| StartError::Metrics(addr, error))?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "metrics at /metrics");
        tokio::spawn(http::serve(
            listener,
            routes::metrics(rooms.clone()),
            Duration::from_secs_f64(config.handshake_timeout),
            None,
            stop_rx.clone(),
        ));
    }
    let drain_timeout = Duration::from_secs_f64(config.drain_timeout);
    let relay_stop = async move {
        shutdown.await;
        if rooms.drain() {
            // Sessions go to other relays first: each resumable member is told to resume
            // elsewhere, and the relay waits until every session has been taken over.
            let _ = phase_tx.send(connection::Phase::Draining);
            drain(&rooms, drain_timeout).await;
        }
        // Every member leaves its room (announced to members on other relays), then every
        // connection is told to go.
        rooms.shutdown().await;
        let _ = phase_tx.send(connection::Phase::Stopping);
        let _ = stop_tx.send(true);
        (stop_tx, phase_tx)
    };
    // Always: SIGHUP's default action would end the process, and a reload must never stop
    // the relay, with or without TLS.
    tokio::spawn(reload_on_hangup(certs, stop_rx.clone()));
    let http = http::serve(
        listener,
        routes,
        Duration::from_secs_f64(config.handshake_timeout),
        acceptor,
        stop_rx,
    );
    let (_, (stop_tx, phase_tx)) = tokio::join!(http, relay_stop);
    // Every connection holds a receiver: wait, boundedly, for them to finish and go.
    let closed = async { tokio::join!(stop_tx.closed(), phase_tx.closed()) };
    if tokio::time::timeout(SHUTDOWN_GRACE, closed).await.is_err() {
        tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
    }
    Ok(())
}

/// How often a draining relay looks whether its sessions have all gone.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Waits until every connection has gone and every session that went away has been taken
/// over by another relay (or ended), or `timeout`.
async fn drain<R: Rooms>(rooms: &R, timeout: Duration) {
    let started = tokio::time::Instant::now();
    tracing::info!(?timeout, "draining: sessions resume on other relays");
    loop {
        let stats = rooms.stats();
        if stats.connections == 0 && stats.away == 0 {
            let took = started.elapsed();
            tracing::info!(?took, "drained: every session resumed elsewhere or ended");
            return;
        }
        if started.elapsed() >= timeout {
            tracing::warn!(
                away = stats.away,
                connections = stats.connections,
                "the drain timed out; the sessions left end here"
            );
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Reads the certificate and key again on every SIGHUP until the relay stops; without TLS,
/// says there is nothing to reload.
async fn reload_on_hangup(
    certs: Option<std::sync::Arc<tls::Certs>>,
    mut stop: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return tracing::warn!("cannot listen for SIGHUP; the certificate will not reload");
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => match certs.as_ref().map(|certs| certs.reload()) {
                    None => tracing::info!("SIGHUP: nothing to reload (no --tls-cert)"),
                    Some(Ok(())) => tracing::info!("SIGHUP: certificate and key reloaded"),
                    Some(Err(error)) => {
                        tracing::error!(%error, "SIGHUP: keeping the previous certificate")
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (certs, stop);
}

/// How long connections get to close when the relay stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
