//! The relay's settings: command-line flags, each also settable by environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::Parser;
use signalroom_protocol::IceServer;

use crate::secret::{self, Secret, SecretError};
use crate::site::Csp;

/// The seed tutorial's port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:2013";
/// Two peers make a call.
pub const DEFAULT_ROOM_CAPACITY: usize = 2;
/// Where `trunk build` writes the page.
pub const DEFAULT_STATIC_DIR: &str = "dist";
/// The largest frame a client may send, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Frames that may wait for a slow reader before the relay drops it.
pub const DEFAULT_OUTBOX_FRAMES: usize = 256;
/// Bytes that may wait for a slow reader before the relay drops it.
pub const DEFAULT_OUTBOX_BYTES: usize = 1024 * 1024;
/// Open WebSockets the relay accepts; more get HTTP 503.
pub const DEFAULT_MAX_CONNECTIONS: usize = 18_000;
/// Rooms the relay holds at once.
pub const DEFAULT_MAX_ROOMS: usize = 10_000;
/// Frames per second a connection may send, sustained.
pub const DEFAULT_RATE_PER_SEC: u32 = 50;
/// Frames a connection may send at once after being quiet.
pub const DEFAULT_RATE_BURST: u32 = 200;
/// Seconds a connection may stay silent (no frame, no pong) before it is dropped.
pub const DEFAULT_IDLE_TIMEOUT_SECS: f64 = 30.0;
/// Seconds a connection may stay outside a room before it is closed.
pub const DEFAULT_JOIN_TIMEOUT_SECS: f64 = 30.0;
/// Seconds a client has to send its HTTP request head (and so its upgrade).
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: f64 = 10.0;
/// Seconds a relay sharing rooms through Redis may go without renewing its liveness before
/// the other relays take its members out of their rooms.
pub const DEFAULT_RELAY_TIMEOUT_SECS: f64 = 10.0;
/// How long a resumable session waits for its client after its connection dropped: long
/// enough for a Wi-Fi roam, a mobile handover or a laptop lid opened again, short enough
/// that a page gone for good leaves its room's tile soon.
pub const DEFAULT_RESUME_WINDOW_SECS: f64 = 25.0;
/// How long a relay stopping with rooms in Redis waits for its sessions to resume on other
/// relays: a page told to resume elsewhere does so within a second or two; the rest is
/// for pages mid-blip, and stays under the 30 s a service manager or Kubernetes gives.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: f64 = 20.0;
/// What a resumable session keeps unacknowledged at most: a mesh call's renegotiation
/// (an offer and an answer of a few KB each, a few dozen candidates) to every member of a
/// room of six, several times over, while staying well under the outbox's 1 MiB.
pub const DEFAULT_RESUME_BUFFER: usize = 64 * 1024;
/// Seconds a minted TURN credential works: a day, the TURN REST API draft's recommendation
/// (draft-uberti-behave-turn-rest-00). The TURN server checks it whenever a browser
/// allocates a relay, which may happen again well into a call (ICE restart, network
/// change), so it must outlast a call; a leaked one is good for at most this long.
pub const DEFAULT_TURN_TTL_SECS: u64 = 24 * 60 * 60;
/// The flag and the variables a TURN REST secret comes from.
const TURN_SECRET_FLAG: &str = "--turn-secret-file";
const TURN_SECRET_ENV: &str = "SIGNALROOM_TURN_SECRET";
/// The flag and the variables the room-token secret comes from.
const AUTH_SECRET_FLAG: &str = "--auth-secret-file";
const AUTH_SECRET_ENV: &str = "SIGNALROOM_AUTH_SECRET";

/// signalroom: a WebRTC signaling relay.
///
/// Browsers connect to ws://ADDR/ws (wss:// with --tls-cert), enter rooms (two peers each by default) and exchange
/// offers, answers and ICE candidates through the relay, which stamps every relayed frame
/// with the sender's id. The built page is served at / from --static-dir.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "signalroom", version, about, long_about)]
// The fields' doc comments are `--help`'s text, written for a terminal: a URL or a
// `[?transport=...]` there is plain text, not a link.
#[allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links)]
pub struct Config {
    /// Address to listen on (host:port); use 0.0.0.0:2013 to accept other machines.
    #[arg(long, env = "SIGNALROOM_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,

    /// Serve https:// and wss:// with this PEM certificate chain (leaf first); needs
    /// --tls-key. On SIGHUP both files are read again: new connections get the new pair,
    /// open ones keep going, and a pair that fails to load is logged and not used.
    #[arg(
        long,
        env = "SIGNALROOM_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "SIGNALROOM_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// Folder whose files are served at / (the page `trunk build` writes). They are read and
    /// compressed once, at start: restart the relay after building the page again.
    #[arg(long, env = "SIGNALROOM_STATIC_DIR", default_value = DEFAULT_STATIC_DIR)]
    pub static_dir: PathBuf,

    /// The page's Content-Security-Policy. By default the relay computes it from the page
    /// it serves: its own origin only, its inline scripts by hash, WebAssembly, WebSockets
    /// to its own origin and to each --page-relay, no framing. `off` sends none (for a page
    /// embedded in a site with a policy of its own); anything else is sent as the policy.
    #[arg(long, env = "SIGNALROOM_CSP", value_name = "POLICY|off", value_parser = parse_csp)]
    pub csp: Option<String>,

    /// A relay the page may connect to besides its own origin, for a page opened with
    /// ?relay=URL: added to the policy's connect-src, as ws(s)://HOST[:PORT][/PATH].
    /// Repeatable.
    #[arg(
        long = "page-relay",
        env = "SIGNALROOM_PAGE_RELAYS",
        value_name = "URL",
        value_delimiter = ',',
        conflicts_with = "csp",
        value_parser = parse_page_relay,
    )]
    pub page_relays: Vec<String>,

    /// Members a room holds; the next one to ask gets `full`.
    #[arg(
        long,
        env = "SIGNALROOM_ROOM_CAPACITY",
        default_value_t = DEFAULT_ROOM_CAPACITY,
        value_parser = clap::value_parser!(u16).range(1..).map(usize::from),
    )]
    pub room_capacity: usize,

    /// Largest message a client may send, in bytes (a fragmented one counts whole); a larger
    /// one closes the connection (1009).
    #[arg(long, env = "SIGNALROOM_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Frames queued for a client that is not reading before the relay drops it.
    #[arg(
        long,
        env = "SIGNALROOM_OUTBOX_FRAMES",
        default_value_t = DEFAULT_OUTBOX_FRAMES,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize),
    )]
    pub outbox_frames: usize,

    /// Bytes queued for a client that is not reading before the relay drops it.
    #[arg(long, env = "SIGNALROOM_OUTBOX_BYTES", default_value_t = DEFAULT_OUTBOX_BYTES)]
    pub outbox_bytes: usize,

    /// Open WebSocket connections at most; more are refused with HTTP 503.
    #[arg(long, env = "SIGNALROOM_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Rooms at most; creating one more is refused with error `too_many_rooms`.
    #[arg(long, env = "SIGNALROOM_MAX_ROOMS", default_value_t = DEFAULT_MAX_ROOMS)]
    pub max_rooms: usize,

    /// Frames per second a connection may send, sustained; more get error `rate_limited`.
    #[arg(
        long,
        env = "SIGNALROOM_RATE_PER_SEC",
        default_value_t = DEFAULT_RATE_PER_SEC,
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    pub rate_per_sec: u32,

    /// Frames a connection may send in one burst. A connection that keeps sending this many
    /// more while limited is closed with 1008.
    #[arg(
        long,
        env = "SIGNALROOM_RATE_BURST",
        default_value_t = DEFAULT_RATE_BURST,
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    pub rate_burst: u32,

    /// Seconds of silence (no frame, no answer to the relay's pings) before a connection is
    /// dropped and its room told `left`. The relay pings every third of this.
    #[arg(
        long,
        env = "SIGNALROOM_IDLE_TIMEOUT",
        default_value_t = DEFAULT_IDLE_TIMEOUT_SECS,
        value_parser = parse_secs,
    )]
    pub idle_timeout: f64,

    /// Seconds a resumable session (a page connected to `/ws?resume`) keeps its seat and
    /// id after its connection drops without a close, waiting for the page to resume it;
    /// its room then gets `away`, not `left`. 0 turns resumption off.
    #[arg(
        long,
        env = "SIGNALROOM_RESUME_WINDOW",
        default_value_t = DEFAULT_RESUME_WINDOW_SECS,
        value_parser = parse_window,
    )]
    pub resume_window: f64,

    /// Bytes a resumable session keeps of the frames sent to it until its page
    /// acknowledges them (and while it is away). A session that outgrows this ends: its
    /// room gets `left`, and a resume gets `resume_lost`. At most --outbox-bytes.
    #[arg(long, env = "SIGNALROOM_RESUME_BUFFER", default_value_t = DEFAULT_RESUME_BUFFER)]
    pub resume_buffer: usize,

    /// Seconds a relay on Redis waits, on SIGTERM, for its sessions to resume on other
    /// relays: /readyz turns 503 at once, new connections are refused, each resumable
    /// member in a room is closed with 4001 (resume elsewhere) and every other with 1001;
    /// the relay exits once every session was taken over, or after this. Without Redis, or
    /// with --resume-window 0, the relay stops at once.
    #[arg(
        long,
        env = "SIGNALROOM_DRAIN_TIMEOUT",
        default_value_t = DEFAULT_DRAIN_TIMEOUT_SECS,
        value_parser = parse_window,
    )]
    pub drain_timeout: f64,

    /// Seconds a connection may spend outside any room before it is closed with 1008.
    #[arg(
        long,
        env = "SIGNALROOM_JOIN_TIMEOUT",
        default_value_t = DEFAULT_JOIN_TIMEOUT_SECS,
        value_parser = parse_secs,
    )]
    pub join_timeout: f64,

    /// Seconds a client has to send a complete HTTP request head, the WebSocket upgrade
    /// included; slower connections are dropped.
    #[arg(
        long,
        env = "SIGNALROOM_HANDSHAKE_TIMEOUT",
        default_value_t = DEFAULT_HANDSHAKE_TIMEOUT_SECS,
        value_parser = parse_secs,
    )]
    pub handshake_timeout: f64,

    /// Origin allowed to open WebSockets, repeatable (e.g. https://cdn.example.org), or `*`
    /// for any. The page's own origin and localhost pages are always allowed, and so are
    /// clients that send no Origin (programs rather than browsers). In the environment
    /// variable, separate origins with ','.
    #[arg(
        long = "allowed-origin",
        env = "SIGNALROOM_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// STUN/TURN server handed to clients, repeatable: URL[,URL...][ USERNAME CREDENTIAL],
    /// e.g. "stun:stun.example.org:3478" or "turn:turn.example.org:3478 alice secret".
    /// In the environment variable, separate servers with ';'.
    #[arg(
        long = "ice-server",
        env = "SIGNALROOM_ICE_SERVERS",
        hide_env_values = true,
        value_delimiter = ';',
        value_parser = parse_ice_server,
    )]
    pub ice_servers: Vec<IceServer>,

    /// TURN server for which the relay mints each peer a credential of its own when it
    /// enters a room (the TURN REST API scheme of coturn's `use-auth-secret`), repeatable:
    /// turn:HOST[:PORT][?transport=udp|tcp] or turns:... In the environment variable,
    /// separate URLs with ','. Needs the secret shared with the TURN server.
    #[arg(
        long = "turn-url",
        env = "SIGNALROOM_TURN_URLS",
        value_delimiter = ',',
        value_parser = parse_turn_url,
    )]
    pub turn_urls: Vec<String>,

    /// File holding the secret shared with the TURN server (coturn's `static-auth-secret`);
    /// or put the secret itself in SIGNALROOM_TURN_SECRET. Never a flag of its own, which
    /// `ps` would show.
    #[arg(long, env = "SIGNALROOM_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,

    /// The TURN secret, read from --turn-secret-file or SIGNALROOM_TURN_SECRET by
    /// [`Config::load_secrets`].
    #[arg(skip)]
    pub turn_secret: Option<Secret>,

    /// Seconds a minted TURN credential works after the peer enters its room. The TURN
    /// server refuses it afterwards, so it should outlast a call.
    #[arg(
        long,
        env = "SIGNALROOM_TURN_TTL",
        default_value_t = DEFAULT_TURN_TTL_SECS,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    pub turn_ttl: u64,

    /// Share rooms with every relay started with the same Redis (redis://HOST:PORT[/DB]):
    /// pages on different relays meet in the same room. Without it, rooms live in this
    /// process alone. Redis 7 or later.
    #[arg(long, env = "SIGNALROOM_REDIS_URL")]
    pub redis_url: Option<String>,

    /// With --redis-url: Redis is a Redis Cluster, and the URL lists some of its nodes,
    /// comma-separated (redis://10.0.0.1:7000,redis://10.0.0.2:7000). Each room's keys and
    /// channel sit in one hash slot, and rooms talk over sharded pub/sub.
    #[arg(
        long,
        env = "SIGNALROOM_REDIS_CLUSTER",
        conflicts_with = "redis_sentinel"
    )]
    pub redis_cluster: bool,

    /// With --redis-url: a primary and its replicas under Redis Sentinel, whose name for
    /// the primary this is; the URL lists Sentinels, comma-separated
    /// (redis://10.0.0.1:26379,redis://10.0.0.2:26379). After a failover the relay asks the
    /// Sentinels for the new primary.
    #[arg(long, env = "SIGNALROOM_REDIS_SENTINEL", value_name = "MASTER_NAME")]
    pub redis_sentinel: Option<String>,

    /// With --redis-url: seconds this relay may go without renewing its liveness in Redis
    /// (it renews every quarter of it) before the other relays take its members out of
    /// their rooms and tell the rooms `left`. Keep it above the time Redis takes to fail
    /// over, or relays give each other up during a failover. After Redis lost its data,
    /// joins wait this long while every relay puts its members back.
    #[arg(
        long,
        env = "SIGNALROOM_RELAY_TIMEOUT",
        default_value_t = DEFAULT_RELAY_TIMEOUT_SECS,
        value_parser = parse_secs,
    )]
    pub relay_timeout: f64,

    /// Serve Prometheus metrics at http://METRICS_ADDR/metrics (e.g. 127.0.0.1:9213), a
    /// listener of its own, kept off the public address. Off by default.
    #[arg(long, env = "SIGNALROOM_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Log lines as human-readable text, or as one JSON object a line for log shippers.
    #[arg(long, env = "SIGNALROOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// File holding the secret that signs room tokens (HS256 JWTs with `exp`, optionally
    /// `nbf` and a `room` claim); with it every WebSocket needs `/ws?token=...`. The secret
    /// may come from the variable SIGNALROOM_AUTH_SECRET instead; never give it as a flag.
    #[arg(long, env = "SIGNALROOM_AUTH_SECRET_FILE", value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,

    /// The room-token secret, read by [`Config::load_secrets`]; `None` takes no tokens.
    #[arg(skip)]
    pub auth_secret: Option<Secret>,
}

impl Config {
    /// Reads the secrets the flags point at (or the environment holds), once, at start.
    pub fn load_secrets(&mut self) -> Result<(), SecretError> {
        self.auth_secret = secret::load(
            self.auth_secret_file.as_deref(),
            AUTH_SECRET_FLAG,
            AUTH_SECRET_ENV,
        )?;
        self.turn_secret = secret::load(
            self.turn_secret_file.as_deref(),
            TURN_SECRET_FLAG,
            TURN_SECRET_ENV,
        )?;
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // tidy: a constant address, parsed by every test that builds a default Config
            addr: DEFAULT_ADDR.parse().expect("the default address parses"),
            static_dir: DEFAULT_STATIC_DIR.into(),
            csp: None,
            page_relays: Vec::new(),
            tls_cert: None,
            tls_key: None,
            room_capacity: DEFAULT_ROOM_CAPACITY,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbox_frames: DEFAULT_OUTBOX_FRAMES,
            outbox_bytes: DEFAULT_OUTBOX_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_rooms: DEFAULT_MAX_ROOMS,
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            rate_burst: DEFAULT_RATE_BURST,
            idle_timeout: DEFAULT_IDLE_TIMEOUT_SECS,
            join_timeout: DEFAULT_JOIN_TIMEOUT_SECS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT_SECS,
            allowed_origins: Vec::new(),
            ice_servers: Vec::new(),
            redis_url: None,
            redis_cluster: false,
            redis_sentinel: None,
            relay_timeout: DEFAULT_RELAY_TIMEOUT_SECS,
            resume_window: DEFAULT_RESUME_WINDOW_SECS,
            resume_buffer: DEFAULT_RESUME_BUFFER,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT_SECS,
            auth_secret_file: None,
            auth_secret: None,
            metrics_addr: None,
            log_format: LogFormat::Text,
            turn_urls: Vec::new(),
            turn_secret_file: None,
            turn_secret: None,
            turn_ttl: DEFAULT_TURN_TTL_SECS,
        }
    }
}

impl Config {
    /// What the page's Content-Security-Policy is, from `--csp` and `--page-relay`.
    pub(crate) fn page_csp(&self) -> Csp {
        match self.csp.as_deref() {
            None => Csp::Computed {
                relays: self.page_relays.clone(),
            },
            Some("off") => Csp::Off,
            Some(policy) => Csp::Replaced(policy.to_owned()),
        }
    }
}

/// Flags that do not fit together. The message names them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TURN URLs without a secret to sign credentials with.
    #[error("--turn-url needs the TURN secret: set {TURN_SECRET_FLAG} or {TURN_SECRET_ENV}")]
    TurnUrlWithoutSecret,
    /// A TURN secret without a server to use it for.
    #[error("a TURN secret is set ({TURN_SECRET_FLAG} or {TURN_SECRET_ENV}) but no --turn-url to use it for")]
    TurnSecretWithoutUrl,
    /// A session buffer larger than the outbox it is sent again through.
    #[error("--resume-buffer ({0}) may not exceed --outbox-bytes ({1})")]
    ResumeBufferOverOutbox(usize, usize),
}

impl Config {
    /// Checks that the flags fit together, once [`Config::load_secrets`] has read the
    /// secrets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.resume_buffer > self.outbox_bytes {
            return Err(ConfigError::ResumeBufferOverOutbox(
                self.resume_buffer,
                self.outbox_bytes,
            ));
        }
        match (self.turn_urls.is_empty(), self.turn_secret.is_some()) {
            (false, false) => Err(ConfigError::TurnUrlWithoutSecret),
            (true, true) => Err(ConfigError::TurnSecretWithoutUrl),
            _ => Ok(()),
        }
    }

    /// How resumable sessions resume (`--resume-window`, `--resume-buffer`, within the
    /// outbox's frame limit).
    pub fn resumption(&self) -> crate::rooms::Resumption {
        crate::rooms::Resumption {
            window: std::time::Duration::from_secs_f64(self.resume_window),
            buffer: self.resume_buffer.min(self.outbox_bytes),
            frames: self.outbox_frames.saturating_sub(1).max(1),
        }
    }
}

/// How the relay writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Parses a number of seconds, zero or more, fractions allowed.
fn parse_window(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(secs) if secs >= 0.0 && secs.is_finite() && secs < 1e9 => Ok(secs),
        _ => Err(format!("{arg:?} is not a number of seconds, 0 or more")),
    }
}

/// Parses a positive number of seconds, fractions allowed.
fn parse_secs(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
        _ => Err(format!("{arg:?} is not a positive number of seconds")),
    }
}

/// Parses a Content-Security-Policy: text a header can carry, not empty.
fn parse_csp(arg: &str) -> Result<String, String> {
    let policy = arg.trim();
    if policy.is_empty() {
        return Err("the policy is empty; give `off` for none".into());
    }
    if !policy
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err("the policy must be printable ASCII on one line".into());
    }
    Ok(policy.to_owned())
}

/// Parses a relay's WebSocket URL for the page's connect-src: `ws://` or `wss://`, then a
/// host and optional port and path, without spaces, quotes, `;` or `,`.
fn parse_page_relay(arg: &str) -> Result<String, String> {
    let rest = arg
        .strip_prefix("ws://")
        .or_else(|| arg.strip_prefix("wss://"))
        .ok_or_else(|| format!("{arg:?} is not a ws:// or wss:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    let fine = |b: u8| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'\'' | b'"');
    if host.is_empty() || !arg.bytes().all(fine) || rest.contains(['?', '#']) {
        return Err(format!(
            "{arg:?} is not a relay URL: expected ws(s)://HOST[:PORT][/PATH], without a query"
        ));
    }
    Ok(arg.to_owned())
}

/// Parses `URL[,URL...][ USERNAME CREDENTIAL]`.
fn parse_ice_server(arg: &str) -> Result<IceServer, String> {
    let mut parts = arg.split_whitespace();
    let urls: Vec<String> = parts
        .next()
        .ok_or("an ICE server needs at least one URL")?
        .split(',')
        .map(str::to_owned)
        .collect();
    if let Some(bad) = urls.iter().find(|u| {
        !["stun:", "stuns:", "turn:", "turns:"]
            .iter()
            .any(|s| u.starts_with(s))
    }) {
        return Err(format!(
            "{bad:?} is not a stun:, stuns:, turn: or turns: URL"
        ));
    }
    let (username, credential) = match (parts.next(), parts.next(), parts.next()) {
        (None, None, None) => (None, None),
        (Some(u), Some(c), None) => (Some(u.to_owned()), Some(c.to_owned())),
        _ => return Err("expected URL, or URL USERNAME CREDENTIAL".into()),
    };
    Ok(IceServer {
        urls,
        username,
        credential,
    })
}

/// Parses a TURN URL as RFC 7065 has it: `turn:` or `turns:`, a host (name, IPv4 or
/// `[IPv6]`), an optional port and an optional `?transport=udp` or `?transport=tcp`.
fn parse_turn_url(arg: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("{arg:?} is not a TURN URL ({why}); expected turn:HOST[:PORT][?transport=udp|tcp] or turns:...")
    };
    let rest = arg
        .strip_prefix("turn:")
        .or_else(|| arg.strip_prefix("turns:"))
        .ok_or_else(|| bad("it must start with turn: or turns:"))?;
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    if let Some(query) = query {
        if query != "transport=udp" && query != "transport=tcp" {
            return Err(bad("the only query is transport=udp or transport=tcp"));
        }
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the address in [] is not IPv6"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    if !host_ok {
        return Err(bad("no valid host"));
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(bad("the port is not a number in 1..=65535"));
        }
    }
    Ok(arg.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// The flags as clap sees them, without the environment: no variable of the test's
    /// own environment can stand in for a default.
    fn command_without_env() -> clap::Command {
        Config::command().mut_args(|arg| arg.env(None::<&str>))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let matches = command_without_env()
            .try_get_matches_from(["signalroom"])
            .expect("no flags parse");
        let parsed = Config::from_arg_matches(&matches).expect("no flags make a config");
        // Every field, a new one included (`Default` lists them all, and `PartialEq` is
        // derived).
        assert_eq!(parsed, Config::default());
    }

    /// The project's rule: flag `--foo-bar` is also variable `SIGNALROOM_FOO_BAR`, and a
    /// repeatable flag's variable is the plural, `SIGNALROOM_FOO_BARS`, which takes several
    /// values separated by a delimiter. A secret is never a flag: `--foo-secret-file` names
    /// its file, and `SIGNALROOM_FOO_SECRET` holds it instead.
    #[test]
    fn every_flag_has_its_environment_variable() {
        use clap::ArgAction;
        let command = Config::command();
        let mut envs = std::collections::BTreeSet::new();
        let mut flags = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else {
                panic!("{} has no long flag", arg.get_id());
            };
            flags += 1;
            let singular = format!("SIGNALROOM_{}", long.to_uppercase().replace('-', "_"));
            let repeatable = matches!(arg.get_action(), ArgAction::Append);
            let want = if repeatable {
                assert!(
                    arg.get_value_delimiter().is_some(),
                    "--{long}: its variable needs a delimiter for several values"
                );
                format!("{singular}S")
            } else {
                singular
            };
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no environment variable"));
            assert_eq!(env.to_str(), Some(want.as_str()), "--{long}");
            assert!(envs.insert(want), "--{long}: its variable is taken");
            assert!(
                !long.contains("secret") || long.ends_with("-secret-file"),
                "--{long}: a secret is never given as a flag"
            );
        }
        assert!(flags > 20, "the flags were not found");
        for (flag, env) in [
            (TURN_SECRET_FLAG, TURN_SECRET_ENV),
            (AUTH_SECRET_FLAG, AUTH_SECRET_ENV),
        ] {
            let file_env = format!("{env}_FILE");
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == flag.strip_prefix("--"))
                .unwrap_or_else(|| panic!("{flag} is not a flag"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(&*file_env));
            assert!(!envs.contains(env), "{env} is a flag's variable");
        }
    }

    #[test]
    fn turn_urls_parse_and_bad_ones_are_refused() {
        for good in [
            "turn:turn.example.org",
            "turn:127.0.0.1:3478?transport=udp",
            "turns:turn.example.org:443?transport=tcp",
            "turn:[::1]:3478",
        ] {
            assert_eq!(parse_turn_url(good).as_deref(), Ok(good));
        }
        for bad in [
            "stun:turn.example.org",
            "turn:",
            "turn:host:0",
            "turn:host:99999",
            "turn:host:3478?transport=sctp",
            "turn:user@host",
            "turn:[::1",
            "turn:host/path",
        ] {
            assert!(parse_turn_url(bad).is_err(), "{bad} was accepted");
        }
        let error = Config::try_parse_from(["signalroom", "--turn-url", "http://x"])
            .expect_err("refused")
            .to_string();
        assert!(error.contains("--turn-url"), "{error}");
        assert!(Config::try_parse_from(["signalroom", "--turn-ttl", "0"]).is_err());
    }

    #[test]
    fn turn_urls_and_the_secret_come_together() {
        let mut urls_only =
            Config::try_parse_from(["signalroom", "--turn-url", "turn:a:3478"]).expect("parses");
        // The test's environment has no SIGNALROOM_TURN_SECRET (scripts/test.sh sets none).
        if std::env::var_os(TURN_SECRET_ENV).is_none() {
            urls_only.load_secrets().expect("nothing to read");
            let error = urls_only.validate().expect_err("refused").to_string();
            assert!(error.contains("--turn-url"), "{error}");
            assert!(error.contains(TURN_SECRET_FLAG), "{error}");
        }

        let dir = std::env::temp_dir().join(format!("signalroom-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("turn-secret");
        std::fs::write(&file, "north-wind\n").expect("written");
        let path = file.to_str().expect("a UTF-8 temp path");
        let mut secret_only =
            Config::try_parse_from(["signalroom", "--turn-secret-file", path]).expect("parses");
        if std::env::var_os(TURN_SECRET_ENV).is_none() {
            secret_only.load_secrets().expect("read");
            let error = secret_only.validate().expect_err("refused").to_string();
            assert!(error.contains("--turn-url"), "{error}");
            assert!(!error.contains("north-wind"), "{error}");

            let mut both = Config::try_parse_from([
                "signalroom",
                "--turn-secret-file",
                path,
                "--turn-url",
                "turn:a:3478",
            ])
            .expect("parses");
            both.load_secrets().expect("read");
            both.validate().expect("fits together");
            assert_eq!(both.turn_secret, Some(Secret::from("north-wind")));
            assert!(!format!("{both:?}").contains("north-wind"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_page_policy_is_computed_replaced_or_off() {
        let parse = |flags: &[&str]| {
            Config::try_parse_from(std::iter::once("signalroom").chain(flags.iter().copied()))
        };
        let computed =
            parse(&["--page-relay", "wss://a.example/ws,ws://127.0.0.1:2013"]).expect("parses");
        assert_eq!(
            computed.page_csp(),
            Csp::Computed {
                relays: vec!["wss://a.example/ws".into(), "ws://127.0.0.1:2013".into()]
            }
        );
        assert_eq!(
            parse(&["--csp", "off"]).expect("parses").page_csp(),
            Csp::Off
        );
        assert_eq!(
            parse(&["--csp", "default-src 'self'"])
                .expect("parses")
                .page_csp(),
            Csp::Replaced("default-src 'self'".into())
        );
        for bad in [
            &["--csp", ""][..],
            &["--csp", "default-src 'self'\nX-Injected: 1"],
            &["--page-relay", "https://a.example"],
            &["--page-relay", "wss://"],
            &["--page-relay", "wss://a.example; script-src *"],
            &["--page-relay", "wss://a.example/ws?token=x"],
            &["--csp", "off", "--page-relay", "wss://a.example"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn ice_servers_parse() {
        let c = Config::try_parse_from([
            "signalroom",
            "--ice-server",
            "stun:a.example:3478",
            "--ice-server",
            "turn:b.example:3478,turns:b.example:5349 alice secret",
        ])
        .expect("parses");
        assert_eq!(c.ice_servers.len(), 2);
        assert_eq!(c.ice_servers[1].urls.len(), 2);
        assert_eq!(c.ice_servers[1].username.as_deref(), Some("alice"));
        assert!(Config::try_parse_from(["signalroom", "--ice-server", "http://x"]).is_err());
        assert!(Config::try_parse_from(["signalroom", "--room-capacity", "0"]).is_err());
        assert!(Config::try_parse_from(["signalroom", "--tls-cert", "c.pem"]).is_err());
    }
}
