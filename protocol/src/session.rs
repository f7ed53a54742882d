//! A client's side of a connection to the relay, free of any I/O: the session it resumes
//! (PROTOCOL.md, "Sessions") and when it connects again. The page and the Rust client
//! (`signalroom-client`) both follow it, so they behave alike.
//!
//! A client connects with `?resume`. Once `created` or `joined` grants a key, it counts the
//! counted frames it receives (every text frame but `ack` and `resumed`), keeps each
//! counted frame it sends (every text frame but `ack` and `resume`) until the relay's `ack`
//! covers it, and acknowledges after [`ACK_EVERY`] frames or [`ACK_AFTER_MS`] after the
//! first unacknowledged one. When its connection drops, it asks to resume within the window
//! and, once `resumed`, sends again what the relay did not receive. [`Backoff`] says when
//! to try a lost connection again.

use std::collections::VecDeque;

use crate::{PeerId, Request, Resumable, ResumeKey};

/// Counted frames after which a client acknowledges at once.
pub const ACK_EVERY: u64 = 16;
/// How long after the first unacknowledged frame a client acknowledges anyway.
pub const ACK_AFTER_MS: u32 = 1_000;

/// Unacknowledged frames a client keeps at most.
pub const KEPT_MAX: usize = 1024;

/// A client's session with the relay.
#[derive(Debug, Default)]
pub struct Session {
    /// The id and key of the session, once granted, and its window in milliseconds.
    grant: Option<(PeerId, ResumeKey, u64)>,
    /// Counted frames received.
    received: u64,
    /// Counted frames received since the last `ack`.
    unacked: u64,
    /// Counted frames sent.
    sent: u64,
    /// Counted frames sent and not yet acknowledged, with their numbers.
    kept: VecDeque<(u64, String)>,
    /// A `resume` went out and is not answered yet: how many counted frames had been sent
    /// when the first went out (those after it were held, never written).
    resuming: Option<u64>,
}

/// Whether a counted frame the client sends goes out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a held frame must not be written: the resume sends it"]
pub enum Outgoing {
    /// Write it now.
    Now,
    /// Do not write it: a resume is unanswered, and the frame goes out with what the
    /// session sends again once it resumes (written now, it would arrive before those).
    Held,
}

/// What to do after counting a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckDue {
    /// Nothing now.
    No,
    /// Acknowledge now.
    Now,
    /// This is the first unacknowledged frame: acknowledge after [`ACK_AFTER_MS`].
    Later,
}

impl Session {
    /// A new connection that is not resuming starts a new count.
    pub fn restart(&mut self) {
        *self = Self::default();
    }

    /// `created` or `joined` granted `peer` a resumable session.
    pub fn granted(&mut self, peer: PeerId, grant: Resumable) {
        self.grant = Some((peer, grant.key, grant.window_ms));
    }

    /// The session's window in milliseconds, if it can resume.
    pub fn window_ms(&self) -> Option<u64> {
        self.grant.as_ref().map(|(_, _, window)| *window)
    }

    /// The session cannot resume (refused, left, or hung up): forget it.
    pub fn end(&mut self) {
        self.restart();
    }

    /// A counted frame the client sends (not an `ack` or a `resume`): kept, once the
    /// session is granted, until the relay acknowledges it. Past [`KEPT_MAX`] unacknowledged
    /// frames (a relay that does not acknowledge) the session gives up resuming.
    pub fn sending(&mut self, text: &str) -> Outgoing {
        self.sent += 1;
        if self.grant.is_some() {
            if self.kept.len() >= KEPT_MAX {
                self.end();
                return Outgoing::Now;
            }
            self.kept.push_back((self.sent, text.to_owned()));
            if self.resuming.is_some() {
                return Outgoing::Held;
            }
        }
        Outgoing::Now
    }

    /// A counted frame arrived.
    pub fn received(&mut self) -> AckDue {
        self.received += 1;
        self.unacked += 1;
        if self.unacked >= ACK_EVERY {
            AckDue::Now
        } else if self.unacked == 1 {
            AckDue::Later
        } else {
            AckDue::No
        }
    }

    /// The `ack` to send, if any counted frame is unacknowledged.
    pub fn ack<D>(&mut self) -> Option<Request<D>> {
        if self.unacked == 0 {
            return None;
        }
        self.unacked = 0;
        Some(Request::Ack {
            received: self.received,
        })
    }

    /// The relay received `received` counted frames: forget those. False when that is
    /// more than were sent (a relay that miscounts).
    pub fn acknowledged(&mut self, received: u64) -> bool {
        while self.kept.front().is_some_and(|(n, _)| *n <= received) {
            self.kept.pop_front();
        }
        received <= self.sent
    }

    /// The session's key for its next resume, once granted.
    pub fn key(&self) -> Option<&ResumeKey> {
        self.grant.as_ref().map(|(_, key, _)| key)
    }

    /// The `resume` to send first on a new connection, if the session can resume.
    pub fn resume<D>(&mut self) -> Option<Request<D>> {
        let (peer, key, _) = self.grant.as_ref()?;
        self.unacked = 0;
        self.resuming.get_or_insert(self.sent);
        Some(Request::Resume {
            peer: *peer,
            key: key.clone(),
            received: self.received,
        })
    }

    /// The session resumed: the relay had received `received` counted frames, and the next
    /// resume takes `grant`. Returns the frames to send again, in order, then those held
    /// while the resume was unanswered. An `incomplete` one (its relay died) starts both
    /// counts again and sends again only what was held.
    pub fn resumed(&mut self, received: u64, grant: Resumable, incomplete: bool) -> Vec<String> {
        let written = self.resuming.take().unwrap_or(self.sent);
        if let Some((_, key, window)) = self.grant.as_mut() {
            *key = grant.key;
            *window = grant.window_ms;
        }
        if incomplete {
            // What was written may or may not have arrived; what was held never went out
            // and goes now, the first frames of the new count.
            let held: Vec<String> = std::mem::take(&mut self.kept)
                .into_iter()
                .filter(|(n, _)| *n > written)
                .map(|(_, text)| text)
                .collect();
            (self.received, self.unacked, self.sent) = (0, 0, 0);
            for text in held {
                self.sent += 1;
                self.kept.push_back((self.sent, text));
            }
        }
        let _ = self.acknowledged(received);
        self.kept.iter().map(|(_, text)| text.clone()).collect()
    }

    /// Frames kept for a resume.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }
}

/// When to try a lost connection again: after [`Backoff::MIN_MS`], doubling up to
/// [`Backoff::MAX_MS`]. While a session can resume, the first retry is at once and the
/// delays stop at [`Backoff::RESUMING_MAX_MS`], so that the session resumes soon after the
/// network is back, within its window.
#[derive(Debug, Clone)]
pub struct Backoff {
    next_ms: u32,
    first_ms: u32,
    max_ms: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next_ms: Self::MIN_MS,
            first_ms: Self::MIN_MS,
            max_ms: Self::MAX_MS,
        }
    }
}

impl Backoff {
    /// The shortest delay but the immediate first retry of a resumable session.
    pub const MIN_MS: u32 = 500;
    /// The longest delay.
    pub const MAX_MS: u32 = 10_000;
    /// The longest delay while a session can resume.
    pub const RESUMING_MAX_MS: u32 = 2_000;

    /// Whether a session can resume: the retries after a connection that worked start at
    /// once and stay short.
    pub fn resuming(&mut self, resuming: bool) {
        (self.first_ms, self.max_ms) = if resuming {
            (0, Self::RESUMING_MAX_MS)
        } else {
            (Self::MIN_MS, Self::MAX_MS)
        };
    }

    /// The connection worked (the relay answered): the next loss starts the delays again.
    pub fn connected(&mut self) {
        self.next_ms = self.first_ms;
    }

    /// The delay before the next attempt, in milliseconds; the one after is longer.
    pub fn next_delay_ms(&mut self) -> u32 {
        let delay = self.next_ms;
        self.next_ms = self
            .next_ms
            .saturating_mul(2)
            .clamp(Self::MIN_MS, self.max_ms);
        delay
    }
}
