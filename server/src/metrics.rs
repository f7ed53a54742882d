//! What the relay counts, and its Prometheus exposition (`--metrics-addr`).
//!
//! # Counting costs no lock and no shared cache line
//!
//! Every thread that counts owns a block of counters ([`Slots`]), registered once in a
//! global list the first time the thread counts. Only the owning thread writes its block,
//! with a relaxed load and a relaxed store (no read-modify-write instruction, no lock, no
//! allocation); a scrape sums every block with relaxed loads. The argument: a block has a
//! single writer, so no increment is lost to another writer; a relaxed load of one
//! location sees that location's writes in order, so a scrape sees each counter at some
//! value it really had, never lower than at an earlier scrape (counters only grow). Sums
//! over blocks are not a snapshot of one instant, which Prometheus does not ask for. A
//! thread that ends leaves its block in the list, so nothing it counted is lost.
//!
//! The counters are the process's: several relays run in one process (as the tests do)
//! count together. The gauges (connections, rooms, members) are read from the relay that
//! serves the scrape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use signalroom_protocol::ErrorCode;

/// Something the relay counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A WebSocket upgrade was accepted.
    Accepted,
    /// An upgrade was refused, and why.
    UpgradeRefused(Refusal),
    /// A connection ended, and why.
    Closed(Closed),
    /// A frame came from a client, of this kind.
    Received(Frame),
    /// A `message` went to one member (a message to a room of three counts twice).
    Relayed,
    /// Bytes read from clients (WebSocket framing included; TLS records excluded).
    BytesReceived,
    /// Bytes written to clients (WebSocket framing included; TLS records excluded).
    BytesSent,
    /// A frame was refused with this error code.
    Refused(ErrorCode),
    /// A frame was dropped by the rate limit.
    RateLimited,
}

/// Declares an enum of label values: the enum, its every variant in declaration order
/// (`ALL`) and each variant's label, from one list, so that no variant can lack a label or
/// a slot. A variant's slot in its family is its place in `ALL` (its discriminant).
macro_rules! labelled {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $label:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The variant's label value in the exposition.
            pub const fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }

            /// The variant's place in [`Self::ALL`].
            const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

labelled! {
    /// Why an upgrade was refused.
    pub enum Refusal {
        /// Not a WebSocket handshake the relay accepts (400).
        BadHandshake => "bad_handshake",
        /// From an origin not allowed (403).
        Origin => "origin",
        /// At the connection limit (503).
        ConnectionLimit => "connection_limit",
        /// Without a valid room token (401).
        Unauthorized => "unauthorized",
        /// While the relay stops (503).
        Stopping => "stopping",
    }
}

labelled! {
    /// Why a connection ended.
    #[expect(
        clippy::enum_variant_names,
        reason = "each variant is named as its label, and client_closed is the label"
    )]
    pub enum Closed {
        /// The client sent a close frame.
        ClientClosed => "client_closed",
        /// The client's TCP stream ended or failed without one.
        Lost => "lost",
        /// Silent for the idle timeout.
        IdleTimeout => "idle_timeout",
        /// Outside a room for the join timeout.
        JoinTimeout => "join_timeout",
        /// Kept sending well over the rate limit.
        RateLimit => "rate_limit",
        /// Broke the WebSocket framing (protocol error, frame too large, invalid UTF-8).
        ProtocolError => "protocol_error",
        /// Its outbox overflowed: it did not read.
        OutboxOverflow => "outbox_overflow",
        /// Its socket took nothing for the idle timeout.
        OutboxStall => "outbox_stall",
        /// Writing to it failed.
        WriteFailed => "write_failed",
        /// The rooms backend was unavailable when it connected.
        Unavailable => "unavailable",
        /// The relay shut down.
        Shutdown => "shutdown",
        /// The relay was stopping and told it to resume its session on another relay.
        Drained => "drained",
        /// The rooms backend took it out of its room (it lost its seat) and closed it.
        SeatLost => "seat_lost",
        /// Its session was resumed on another connection while it still looked alive.
        TakenOver => "taken_over",
    }
}

labelled! {
    /// A frame's kind.
    pub enum Frame {
        /// A `create_or_join` request.
        CreateOrJoin => "create_or_join",
        /// A `message` request.
        Message => "message",
        /// A `leave` request.
        Leave => "leave",
        /// A `resume` request.
        Resume => "resume",
        /// An `ack` request.
        Ack => "ack",
        /// A text frame that is no request the relay knows.
        Invalid => "invalid",
        /// A binary frame.
        Binary => "binary",
        /// A ping.
        Ping => "ping",
        /// A pong.
        Pong => "pong",
        /// A close frame.
        Close => "close",
    }
}

/// Every error code the relay sends, in the order of their slots ([`code_index`]); one more
/// slot counts any other.
const CODES: [ErrorCode; 12] = [
    ErrorCode::MalformedJson,
    ErrorCode::UnknownType,
    ErrorCode::InvalidFrame,
    ErrorCode::InvalidRoom,
    ErrorCode::NotInRoom,
    ErrorCode::AlreadyInRoom,
    ErrorCode::UnknownPeer,
    ErrorCode::BinaryUnsupported,
    ErrorCode::RateLimited,
    ErrorCode::TooManyRooms,
    ErrorCode::Unavailable,
    ErrorCode::Forbidden,
];

// `CODES` lists the codes in the order `code_index` gives them.
const _: () = {
    let mut i = 0;
    while i < CODES.len() {
        assert!(code_index(CODES[i]) == i, "CODES and code_index disagree");
        i += 1;
    }
};

/// Upper bounds of the join-time histogram's buckets, in seconds.
const JOIN_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

// Where each counter sits in a block.
const ACCEPTED: usize = 0;
const RELAYED: usize = 1;
const BYTES_RECEIVED: usize = 2;
const BYTES_SENT: usize = 3;
const RATE_LIMITED: usize = 4;
const UPGRADE_REFUSED: usize = 5;
const CLOSED: usize = UPGRADE_REFUSED + Refusal::ALL.len();
const RECEIVED: usize = CLOSED + Closed::ALL.len();
const REFUSED: usize = RECEIVED + Frame::ALL.len();
const JOIN_COUNT: usize = REFUSED + CODES.len() + 1;
const JOIN_NANOS: usize = JOIN_COUNT + 1;
/// Per bucket, not cumulative: one increment per join.
const JOIN_BUCKET: usize = JOIN_NANOS + 1;
const SLOTS: usize = JOIN_BUCKET + JOIN_BUCKETS.len() + 1;

/// An error code's place among the `frames_refused` slots: its place in [`CODES`], or the
/// last slot ("other") for a code the relay does not send. `ErrorCode` is
/// `#[non_exhaustive]`, so a code added to the protocol falls in "other" until it is added
/// here and to `CODES` (the tests check the two agree).
const fn code_index(code: ErrorCode) -> usize {
    match code {
        ErrorCode::MalformedJson => 0,
        ErrorCode::UnknownType => 1,
        ErrorCode::InvalidFrame => 2,
        ErrorCode::InvalidRoom => 3,
        ErrorCode::NotInRoom => 4,
        ErrorCode::AlreadyInRoom => 5,
        ErrorCode::UnknownPeer => 6,
        ErrorCode::BinaryUnsupported => 7,
        ErrorCode::RateLimited => 8,
        ErrorCode::TooManyRooms => 9,
        ErrorCode::Unavailable => 10,
        ErrorCode::Forbidden => 11,
        _ => CODES.len(),
    }
}

impl Counter {
    fn slot(self) -> usize {
        match self {
            Self::Accepted => ACCEPTED,
            Self::Relayed => RELAYED,
            Self::BytesReceived => BYTES_RECEIVED,
            Self::BytesSent => BYTES_SENT,
            Self::RateLimited => RATE_LIMITED,
            Self::UpgradeRefused(why) => UPGRADE_REFUSED + why.index(),
            Self::Closed(why) => CLOSED + why.index(),
            Self::Received(kind) => RECEIVED + kind.index(),
            Self::Refused(code) => REFUSED + code_index(code),
        }
    }
}

/// One thread's counters.
struct Slots([AtomicU64; SLOTS]);

/// Every thread's counters.
static ALL: Mutex<Vec<Arc<Slots>>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: Arc<Slots> = {
        let mine = Arc::new(Slots(std::array::from_fn(|_| AtomicU64::new(0))));
        all().push(mine.clone());
        mine
    };
}

/// The list of blocks. It only grows, and is consistent at every step, so a lock poisoned
/// by a panic elsewhere is safe to keep using.
fn all() -> MutexGuard<'static, Vec<Arc<Slots>>> {
    ALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Adds `n` to this thread's `slot`: only this thread writes it (see the module's doc).
fn bump(slot: usize, n: u64) {
    MINE.with(|mine| {
        let counter = &mine.0[slot];
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    });
}

/// Counts one `counter`.
pub fn count(counter: Counter) {
    bump(counter.slot(), 1);
}

/// Counts `n` of `counter` (bytes, recipients).
pub fn add(counter: Counter, n: u64) {
    if n > 0 {
        bump(counter.slot(), n);
    }
}

/// Records how long a `create_or_join` took to handle.
pub fn join_took(took: Duration) {
    let secs = took.as_secs_f64();
    let bucket = JOIN_BUCKETS
        .iter()
        .position(|le| secs <= *le)
        .unwrap_or(JOIN_BUCKETS.len());
    bump(JOIN_COUNT, 1);
    bump(
        JOIN_NANOS,
        u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
    );
    bump(JOIN_BUCKET + bucket, 1);
}

/// Every counter summed over the threads.
fn totals() -> [u64; SLOTS] {
    let mut sum = [0u64; SLOTS];
    for slots in all().iter() {
        for (total, counter) in sum.iter_mut().zip(&slots.0) {
            *total = total.wrapping_add(counter.load(Ordering::Relaxed));
        }
    }
    sum
}

/// The metrics in the format a scraper asks for with `accept`: OpenMetrics when it says it
/// takes it (Prometheus does), else the classic text format 0.0.4 (what `promtool check
/// metrics`, older scrapers and people with curl read). Returns the content type and text.
pub fn negotiate(accept: Option<&str>, stats: Gauges) -> (&'static str, String) {
    let openmetrics = exposition(stats);
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS, openmetrics)
    } else {
        (TEXT, classic(&openmetrics))
    }
}

/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic text format.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The classic text format of OpenMetrics text as [`exposition`] writes it. They differ, for
/// what it writes, only in that the classic format names a counter family by its samples
/// (`_total`) and an info family as a gauge `_info`, and has no `# UNIT` or `# EOF` lines.
fn classic(openmetrics: &str) -> String {
    let mut text = String::with_capacity(openmetrics.len());
    let mut suffix = HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                let (renamed, kind) = match kind {
                    "counter" => ("_total", "counter"),
                    "info" => ("_info", "gauge"),
                    other => ("", other),
                };
                suffix.insert(name.to_owned(), renamed);
                text.push_str(&format!("# TYPE {name}{renamed} {kind}\n"));
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            // HELP comes before TYPE: the suffix is that of the TYPE line that follows.
            text.push_str(&format!("# HELP {rest}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    // Rename HELP lines after the fact, now that every family's suffix is known.
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.strip_prefix("# HELP ").and_then(|r| r.split_once(' ')) {
            Some((name, help)) => {
                let renamed = suffix.get(name).copied().unwrap_or("");
                out.push_str(&format!("# HELP {name}{renamed} {help}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The metrics in the OpenMetrics text format, every name prefixed `signalroom_`.
pub fn exposition(stats: Gauges) -> String {
    let mut registry = Registry::with_prefix("signalroom");
    registry.register_collector(Box::new(Snapshot {
        totals: totals(),
        stats,
    }));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// What the relay holds now, read from its rooms at each scrape.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Rooms with members on this relay.
    pub rooms: usize,
    /// Connections inside a room.
    pub members: usize,
}

/// The values of one scrape.
#[derive(Debug)]
struct Snapshot {
    totals: [u64; SLOTS],
    stats: Gauges,
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.totals;
        let gauges = [
            (
                "connections",
                "Open WebSocket connections.",
                self.stats.connections,
            ),
            (
                "rooms",
                "Rooms with members on this relay.",
                self.stats.rooms,
            ),
            ("members", "Connections inside a room.", self.stats.members),
        ];
        for (name, help, value) in gauges {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)?;
        }
        let counters = [
            (
                "connections_accepted",
                "WebSocket upgrades accepted.",
                None,
                t[ACCEPTED],
            ),
            (
                "messages_relayed",
                "Messages delivered, one per recipient.",
                None,
                t[RELAYED],
            ),
            (
                "received",
                "Bytes read from clients, WebSocket framing included.",
                Some(Unit::Bytes),
                t[BYTES_RECEIVED],
            ),
            (
                "sent",
                "Bytes written to clients, WebSocket framing included.",
                Some(Unit::Bytes),
                t[BYTES_SENT],
            ),
            (
                "rate_limited_frames",
                "Frames dropped by the per-connection rate limit.",
                None,
                t[RATE_LIMITED],
            ),
        ];
        for (name, help, unit, value) in counters {
            encoder
                .encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        let codes: Vec<&str> = CODES.iter().map(|c| c.as_str()).chain(["other"]).collect();
        let families = [
            (
                "upgrades_refused",
                "WebSocket upgrades refused, by reason.",
                "reason",
                UPGRADE_REFUSED,
                labels(Refusal::ALL, Refusal::label),
            ),
            (
                "connections_closed",
                "Connections ended, by reason.",
                "reason",
                CLOSED,
                labels(Closed::ALL, Closed::label),
            ),
            (
                "frames_received",
                "Frames received from clients, by type.",
                "type",
                RECEIVED,
                labels(Frame::ALL, Frame::label),
            ),
            (
                "frames_refused",
                "Frames answered with an error, by error code.",
                "code",
                REFUSED,
                codes,
            ),
        ];
        for (name, help, label, first, values) in families {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (i, value) in values.into_iter().enumerate() {
                metric
                    .encode_family(&[(label, value)])?
                    .encode_counter::<NoLabelSet, _, u64>(&t[first + i], None)?;
            }
        }

        // Per bucket: the encoder makes them cumulative, and writes f64::MAX as +Inf.
        let buckets: Vec<(f64, u64)> = JOIN_BUCKETS
            .iter()
            .chain([&f64::MAX])
            .enumerate()
            .map(|(i, le)| (*le, t[JOIN_BUCKET + i]))
            .collect();
        encoder
            .encode_descriptor(
                "join_duration",
                "Time to handle a create_or_join, from decoding to the answer queued.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                t[JOIN_NANOS] as f64 / 1e9,
                t[JOIN_COUNT],
                &buckets,
                None,
            )?;

        encoder
            .encode_descriptor("build", "The relay's version.", None, MetricType::Info)?
            .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

/// The label values of a family, in the order of its slots.
fn labels<T: Copy>(all: &[T], label: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| label(*v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter there is: the families' `ALL`s come from the same list as their
    /// labels, and `CODES` is checked against `code_index` at compile time.
    fn every_counter() -> Vec<Counter> {
        let mut all = vec![
            Counter::Accepted,
            Counter::Relayed,
            Counter::BytesReceived,
            Counter::BytesSent,
            Counter::RateLimited,
        ];
        all.extend(Refusal::ALL.iter().map(|r| Counter::UpgradeRefused(*r)));
        all.extend(Closed::ALL.iter().map(|c| Counter::Closed(*c)));
        all.extend(Frame::ALL.iter().map(|f| Counter::Received(*f)));
        all.extend(CODES.iter().map(|c| Counter::Refused(*c)));
        all.push(Counter::Refused(ErrorCode::Unknown));
        all
    }

    #[test]
    fn every_counter_has_its_own_slot() {
        let mut slots: Vec<usize> = every_counter().iter().map(|c| c.slot()).collect();
        let count = slots.len();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), count, "no two counters share a slot");
        assert_eq!(
            slots,
            (0..JOIN_COUNT).collect::<Vec<_>>(),
            "the table is dense"
        );
        for (i, code) in CODES.iter().enumerate() {
            assert_eq!(Counter::Refused(*code).slot(), REFUSED + i, "{code}");
        }
    }

    #[test]
    fn every_label_is_a_distinct_snake_case_word() {
        let codes: Vec<&str> = CODES.iter().map(|c| c.as_str()).chain(["other"]).collect();
        let families = [
            labels(Refusal::ALL, Refusal::label),
            labels(Closed::ALL, Closed::label),
            labels(Frame::ALL, Frame::label),
            codes,
        ];
        for family in families {
            let mut distinct = family.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), family.len(), "a label twice in {family:?}");
            for label in family {
                assert!(
                    !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "the label {label:?}"
                );
            }
        }
    }

    #[test]
    fn each_variants_place_in_all_is_its_slot() {
        for (i, why) in Closed::ALL.iter().enumerate() {
            assert_eq!(why.index(), i);
            assert_eq!(Counter::Closed(*why).slot(), CLOSED + i);
        }
        for (i, why) in Refusal::ALL.iter().enumerate() {
            assert_eq!(Counter::UpgradeRefused(*why).slot(), UPGRADE_REFUSED + i);
        }
        for (i, kind) in Frame::ALL.iter().enumerate() {
            assert_eq!(Counter::Received(*kind).slot(), RECEIVED + i);
        }
    }

    #[test]
    fn counts_from_other_threads_are_summed() {
        let before = totals()[RELAYED];
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        count(Counter::Relayed);
                    }
                });
            }
        });
        // Other tests may count too, never less.
        assert!(totals()[RELAYED] - before >= 4000);
    }

    #[test]
    fn the_exposition_has_the_expected_families() {
        let before = totals();
        join_took(Duration::from_micros(300));
        let after = totals();
        assert_eq!(after[JOIN_COUNT] - before[JOIN_COUNT], 1);
        // 300 µs falls in the bucket up to 500 µs, the fourth.
        assert_eq!(after[JOIN_BUCKET + 3] - before[JOIN_BUCKET + 3], 1);
        let text = exposition(Gauges {
            connections: 3,
            rooms: 1,
            members: 2,
        });
        for line in [
            "signalroom_connections 3",
            "# TYPE signalroom_messages_relayed counter",
            "# TYPE signalroom_join_duration_seconds histogram",
            "signalroom_join_duration_seconds_bucket{le=\"+Inf\"}",
            "signalroom_frames_received_total{type=\"message\"}",
            "signalroom_build_info{version=",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_classic_format_names_families_by_their_samples() {
        let gauges = Gauges {
            connections: 0,
            rooms: 0,
            members: 0,
        };
        let (kind, text) = negotiate(Some("text/plain"), gauges);
        assert_eq!(kind, TEXT);
        assert!(text.contains("# HELP signalroom_messages_relayed_total Messages"));
        assert!(text.contains("# TYPE signalroom_messages_relayed_total counter"));
        assert!(text.contains("# TYPE signalroom_sent_bytes_total counter"));
        assert!(text.contains("# TYPE signalroom_build_info gauge"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        let (kind, text) = negotiate(Some("application/openmetrics-text;version=1.0.0"), gauges);
        assert_eq!(kind, OPENMETRICS);
        assert!(text.ends_with("# EOF\n"));
    }
}
