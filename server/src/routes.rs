//! The HTTP surface: the WebSocket at `/ws`, counts at `/stats`, health at `/healthz` and
//! `/readyz`, the page at `/` (served by `site`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use warp::http::StatusCode;
use warp::Filter;

use crate::auth::{self, Admits, RoomTokens, TokenError};
use crate::connection::{self, Limits, Peer, Phase};
use crate::http::ClientAddr;
use crate::metrics::{self, Counter, Refusal};
use crate::rooms::Rooms;
use crate::site::Site;
use crate::upgrade::{self, BadUpgrade, Upgrade};

/// What the routes need besides the rooms.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The page served at `/`, loaded from `--static-dir`.
    pub site: Arc<Site>,
    /// Open WebSockets at most.
    pub max_connections: usize,
    /// Origins allowed besides the page's own and localhost; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// With `Some`, every WebSocket needs a room token that these check.
    pub tokens: Option<RoomTokens>,
    /// Per-connection limits.
    pub limits: Limits,
}

/// Every route of the relay.
pub fn routes<R: Rooms>(
    rooms: R,
    config: RouteConfig,
    shutdown: watch::Receiver<Phase>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let with_rooms = {
        let rooms = rooms.clone();
        warp::any().map(move || rooms.clone())
    };
    let slots = Arc::new(Slots {
        open: AtomicUsize::new(0),
        max: config.max_connections,
    });
    let (ready_slots, shutdown_state) = (slots.clone(), shutdown.clone());
    let allowed = Arc::new(config.allowed_origins);
    let limits = config.limits;
    let tokens = config.tokens;
    let ws = warp::path(signalroom_protocol::WS_PATH)
        .and(warp::path::end())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(query())
        .and(warp::ext::optional::<ClientAddr>())
        .and(upgrade::websocket())
        .and(with_rooms.clone())
        .map(
            move |origin: Option<String>,
                  host: Option<String>,
                  query: String,
                  addr: Option<ClientAddr>,
                  ws: Result<Upgrade, BadUpgrade>,
                  rooms: R| {
                use warp::Reply;
                let ws = match ws {
                    Ok(ws) => ws,
                    Err(bad) => {
                        metrics::count(Counter::UpgradeRefused(Refusal::BadHandshake));
                        tracing::debug!(%bad, "refused a bad WebSocket handshake");
                        return bad.response().into_response();
                    }
                };
                if !origin_allowed(origin.as_deref(), host.as_deref(), &allowed) {
                    metrics::count(Counter::UpgradeRefused(Refusal::Origin));
                    tracing::info!(?origin, "refused a WebSocket from a foreign origin");
                    return warp::reply::with_status("origin not allowed", StatusCode::FORBIDDEN)
                        .into_response();
                }
                // Before a slot is taken: a client without a token holds none. The token
                // itself is never logged.
                let admits = match admitted(tokens.as_ref(), &query) {
                    Ok(admits) => admits,
                    Err(error) => {
                        metrics::count(Counter::UpgradeRefused(Refusal::Unauthorized));
                        tracing::info!(%error, "refused a WebSocket without a valid room token");
                        return error.response().into_response();
                    }
                };
                if *shutdown.borrow() != Phase::Serving {
                    metrics::count(Counter::UpgradeRefused(Refusal::Stopping));
                    return warp::reply::with_status(
                        "the relay is stopping; connect to another",
                        StatusCode::SERVICE_UNAVAILABLE,
                    )
                    .into_response();
                }
                let Some(slot) = Slot::take(&slots) else {
                    metrics::count(Counter::UpgradeRefused(Refusal::ConnectionLimit));
                    tracing::warn!(max = slots.max, "connection limit reached; refusing");
                    return warp::reply::with_status(
                        "too many connections",
                        StatusCode::SERVICE_UNAVAILABLE,
                    )
                    .into_response();
                };
                let shutdown = shutdown.clone();
                let client = Peer {
                    resumable: resumable(&query),
                    addr: addr.map(|ClientAddr(addr)| addr.ip()),
                };
                metrics::count(Counter::Accepted);
                ws.accept(move |stream, early| async move {
                    connection::serve(stream, early, rooms, admits, limits, client, shutdown).await;
                    drop(slot);
                })
                .into_response()
            },
        );
    let stats = warp::path("stats")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_rooms.clone())
        .map(|rooms: R| warp::reply::json(&rooms.stats()));
    // The process serves: for liveness probes.
    let healthz = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| "serving\n");
    // It takes new connections: for load balancers, which send pages elsewhere otherwise.
    let readyz = warp::path("readyz")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_rooms)
        .map(move |rooms: R| {
            let not_ready = if *shutdown_state.borrow() != Phase::Serving {
                Some("stopping")
            } else if ready_slots.open.load(Ordering::Acquire) >= ready_slots.max {
                Some("at the connection limit")
            } else if !rooms.ready() {
                Some("rooms unavailable")
            } else {
                None
            };
            match not_ready {
                Some(why) => warp::reply::with_status(
                    format!("not ready: {why}\n"),
                    StatusCode::SERVICE_UNAVAILABLE,
                ),
                None => warp::reply::with_status("ready\n".to_owned(), StatusCode::OK),
            }
        });
    let site = config.site;
    // Any other GET or HEAD is a file of the page (or a 400 or 404 from it); a HEAD's
    // body is dropped by hyper, which keeps its length.
    let page = warp::get()
        .or(warp::head())
        .unify()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .map(
            move |path: warp::path::FullPath, headers: warp::http::HeaderMap| {
                let response: warp::reply::Response =
                    site.respond(path.as_str(), &headers).map(Into::into);
                response
            },
        );
    // Neither probes nor WebSocket upgrades go through warp's trace, which logs every 503
    // as an error: a /readyz that says 503 (a relay draining, full, or cut off from Redis)
    // and a WebSocket refused with 503 (draining, or at the connection limit, which warns
    // of itself) are answers, not failures.
    readyz
        .or(ws.with(warp::log::custom(upgrade_answered)))
        .or(stats.or(healthz).or(page).with(trace()))
}

/// Logs the answer to a WebSocket upgrade: at debug level, a refusal at info.
fn upgrade_answered(info: warp::log::Info<'_>) {
    let status = info.status().as_u16();
    if status == 101 {
        tracing::debug!(status, elapsed = ?info.elapsed(), "websocket accepted");
    } else {
        tracing::info!(status, path = %info.path(), "websocket refused");
    }
}

/// The metrics listener's one route: `GET /metrics`, in the OpenMetrics text format.
pub fn metrics<R: Rooms>(
    rooms: R,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::header::optional::<String>("accept"))
        .map(move |accept: Option<String>| {
            let stats = rooms.stats();
            let gauges = metrics::Gauges {
                connections: stats.connections,
                rooms: stats.rooms,
                members: stats.members,
            };
            let (kind, text) = metrics::negotiate(accept.as_deref(), gauges);
            warp::reply::with_header(text, "content-type", kind)
        })
}

/// The request's query string, empty when it has none.
fn query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Whether `query` asks for a resumable session (`?resume`, with or without a value but
/// `0`).
fn resumable(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes())
        .any(|(name, value)| name == signalroom_protocol::RESUME_PARAM && value != "0")
}

/// What the token in `query` admits; with no `tokens` the relay takes no tokens and any
/// room is open.
fn admitted(tokens: Option<&RoomTokens>, query: &str) -> Result<Admits, TokenError> {
    let Some(tokens) = tokens else {
        return Ok(Admits::AnyRoom);
    };
    let token = auth::token_param(query).ok_or(TokenError::Missing)?;
    tokens.check(&token, SystemTime::now())
}

/// A span per request with its method and path, and nothing else: the query string may
/// hold a room token, and so may the Referer of the page's own requests (its address has
/// `?token=`), so neither is logged (unlike `warp::trace::request`, which logs the Referer).
fn trace() -> warp::trace::Trace<impl Fn(warp::trace::Info<'_>) -> tracing::Span + Clone> {
    warp::trace(|info: warp::trace::Info<'_>| {
        let span = tracing::info_span!("request", method = %info.method(), path = %info.path());
        tracing::debug!(parent: &span, "received request");
        span
    })
}

/// Whether a browser page at `origin` may open a WebSocket on the relay at `host`.
///
/// Allowed: no Origin (not a browser), the relay's own origin, pages on localhost, and the
/// configured origins (`*` for all).
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/') == origin)
    {
        return true;
    }
    let Some((_scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if host.is_some_and(|host| host.eq_ignore_ascii_case(authority)) {
        return true;
    }
    let hostname = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    matches!(hostname, "localhost" | "127.0.0.1" | "::1")
}

/// Counts open WebSockets against the limit.
struct Slots {
    open: AtomicUsize,
    max: usize,
}

/// One open WebSocket's place; frees it when dropped.
struct Slot(Arc<Slots>);

impl Slot {
    fn take(slots: &Arc<Slots>) -> Option<Self> {
        let before = slots.open.fetch_add(1, Ordering::AcqRel);
        if before >= slots.max {
            slots.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(slots.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins() {
        let cdn = vec!["https://cdn.example.org".to_owned()];
        let host = Some("relay.example.org");
        assert!(origin_allowed(None, host, &[]));
        assert!(origin_allowed(Some("https://relay.example.org"), host, &[]));
        assert!(origin_allowed(Some("http://localhost:8080"), host, &[]));
        assert!(origin_allowed(Some("http://127.0.0.1:2013"), host, &[]));
        assert!(origin_allowed(Some("http://[::1]:8080"), host, &[]));
        assert!(!origin_allowed(Some("https://evil.example"), host, &[]));
        assert!(!origin_allowed(
            Some("https://localhost.evil.example"),
            host,
            &[]
        ));
        assert!(!origin_allowed(Some("null"), host, &[]));
        assert!(origin_allowed(Some("https://cdn.example.org"), host, &cdn));
        assert!(!origin_allowed(
            Some("https://cdn.example.org.evil"),
            host,
            &cdn
        ));
        assert!(origin_allowed(
            Some("https://anything"),
            host,
            &["*".to_owned()]
        ));
    }
}
