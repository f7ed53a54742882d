//! The page's side of a resumable session (PROTOCOL.md, "Sessions"), kept free of the
//! browser so it can be tested on its own.
//!
//! The page connects with `?resume`. Once `created` or `joined` grants a key, it counts the
//! counted frames it receives (every text frame but `ack` and `resumed`), keeps each
//! counted frame it sends (every text frame but `ack` and `resume`) until the relay's `ack`
//! covers it, and acknowledges after [`ACK_EVERY`] frames or [`ACK_AFTER_MS`] after the
//! first unacknowledged one. When its connection drops, it asks to resume within the window
//! and, once `resumed`, sends again what the relay did not receive.

use std::collections::VecDeque;

use signalroom_protocol::{PeerId, Request, Resumable, ResumeKey, Signal};

/// Counted frames after which the page acknowledges at once.
pub const ACK_EVERY: u64 = 32;
/// How long after the first unacknowledged frame the page acknowledges anyway.
pub const ACK_AFTER_MS: u32 = 1_000;

/// Unacknowledged frames the page keeps at most.
pub const KEPT_MAX: usize = 1024;

/// The page's session with the relay.
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

    /// A counted frame the page sends (not an `ack` or a `resume`): kept, once the
    /// session is granted, until the relay acknowledges it. Past [`KEPT_MAX`] unacknowledged
    /// frames (a relay that does not acknowledge) the session gives up resuming.
    pub fn sending(&mut self, text: &str) {
        self.sent += 1;
        if self.grant.is_some() {
            if self.kept.len() >= KEPT_MAX {
                self.end();
                return;
            }
            self.kept.push_back((self.sent, text.to_owned()));
        }
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
    pub fn ack(&mut self) -> Option<Request<Signal>> {
        if self.unacked == 0 {
            return None;
        }
        self.unacked = 0;
        Some(Request::Ack {
            received: self.received,
        })
    }

    /// The relay received `received` counted frames: forget those.
    pub fn acknowledged(&mut self, received: u64) {
        while self.kept.front().is_some_and(|(n, _)| *n <= received) {
            self.kept.pop_front();
        }
    }

    /// The `resume` to send first on a new connection, if the session can resume.
    pub fn resume(&mut self) -> Option<Request<Signal>> {
        let (peer, key, _) = self.grant.as_ref()?;
        self.unacked = 0;
        Some(Request::Resume {
            peer: *peer,
            key: key.clone(),
            received: self.received,
        })
    }

    /// The session resumed: the relay had received `received` counted frames, and the next
    /// resume takes `grant`. Returns the frames to send again, in order. An `incomplete`
    /// one (its relay died) starts both counts again and sends nothing again.
    pub fn resumed(&mut self, received: u64, grant: Resumable, incomplete: bool) -> Vec<String> {
        if let Some((_, key, window)) = self.grant.as_mut() {
            *key = grant.key;
            *window = grant.window_ms;
        }
        if incomplete {
            (self.received, self.unacked, self.sent) = (0, 0, 0);
            self.kept.clear();
        }
        self.acknowledged(received);
        self.kept.iter().map(|(_, text)| text.clone()).collect()
    }

    /// Frames kept for a resume.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }
}
