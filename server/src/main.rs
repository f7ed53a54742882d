//! The `signalroom` binary: parses flags, sets up logs, binds and runs the relay.

use anyhow::Context;
use clap::Parser;
use signalroom_server::{Config, LogFormat};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    config.load_secrets()?;
    config.validate()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    if !config.static_dir.join("index.html").is_file() {
        tracing::warn!(
            dir = %config.static_dir.display(),
            "no index.html to serve at /; build the page with `trunk build --release --config Trunkfile.toml` or set --static-dir"
        );
    }
    // A connection holds one descriptor, its TCP socket, with TLS too (see tls.rs).
    raise_descriptor_limit(config.max_connections);
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        room_capacity = config.room_capacity,
        ice_servers = config.ice_servers.len(),
        tls = config.tls_cert.is_some(),
        room_tokens = config.auth_secret.is_some(),
        "signalroom relay listening; page at {}://{}/",
        if config.tls_cert.is_some() { "https" } else { "http" },
        config.addr
    );
    if config.turn_secret.is_some() {
        // The URLs and lifetime only: the secret is never logged.
        tracing::info!(
            turn_urls = %config.turn_urls.join(" "),
            turn_ttl = config.turn_ttl,
            "minting time-limited TURN credentials for each peer entering a room"
        );
    }
    signalroom_server::run(listener, config, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard one: each connection is a descriptor.
fn raise_descriptor_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // Keep some for the listener, logs and the page's files.
            let connections = limit.saturating_sub(64);
            tracing::info!(
                descriptors = limit,
                "room for about {connections} connections"
            );
            if (connections as usize) < max_connections {
                tracing::warn!(
                    max_connections,
                    "--max-connections exceeds what the descriptor limit allows; accepts will pause when it runs out"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "could not raise the descriptor limit"),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
