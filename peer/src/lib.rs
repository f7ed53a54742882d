//! A WebRTC peer of signalroom rooms: it joins a room through the relay and calls every
//! other member, as the page does (a full mesh, the rules of
//! [`signalroom_protocol::call`], the pre-negotiated chat channel), with str0m over a UDP
//! socket of its own, and a relayed address on a TURN server when the relay names one; it
//! sends a VP8 clip as its camera and records the members' video and audio when asked.
//! The `signalroom-peer` binary runs it from the command line; the benchmark runs
//! hundreds in one process.
//!
//! Code map: `peer` is [`run`], the one task that owns the relay client, the UDP socket
//! and every call; [`pair`] one call (str0m, no I/O); [`ivf`] VP8 files; [`ogg`] Opus
//! recordings; `record` a member's recordings; [`turn`] a TURN client; [`report`] what
//! happens, as values and as lines.

pub mod ivf;
pub mod ogg;
pub mod pair;
mod peer;
mod record;
pub mod report;
pub mod turn;

pub use peer::{run, Command, Config, PeerError};
pub use report::{Report, Reported, Via};
