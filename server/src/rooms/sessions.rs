//! Resumable sessions: what a member's seat needs to outlive its connection.
//!
//! A connection opened with `/ws?resume` is *resumable*: its outbox keeps the counted
//! frames it is sent until the client acknowledges them ([`crate::outbox::Retention`]), and
//! entering a room mints it a key. When its connection drops without a close, the member
//! is [`Presence::Away`]: it keeps its seat and its id, frames for it are kept, and a resume
//! with its key within the window takes the seat over on a new connection. This module
//! holds the rules, the keys, and the records that let a late or refused resume be told
//! why: the core applies them.
//!
//! Keys are 128 bits from the operating system's CSPRNG (through *ring*), compared in
//! constant time, good once (a resume mints the next), and never logged: [`Key`] has no
//! `Debug` of its contents. Refused resumes are counted per client address; past
//! [`FAILURES_ALLOWED`] in a [`FAILURE_PERIOD`], that address's resumes are refused unseen.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use signalroom_protocol::{PeerId, Resumable, ResumeKey};

/// Refused resumes one address may make in [`FAILURE_PERIOD`] before it is refused unseen.
pub const FAILURES_ALLOWED: u32 = 10;
/// The period over which refused resumes are counted.
pub const FAILURE_PERIOD: Duration = Duration::from_secs(60);
/// Addresses tracked for refused resumes at most; beyond, the oldest periods are forgotten.
const ADDRESSES_TRACKED: usize = 16_384;
/// Ended sessions remembered (to answer `resume_expired` or `resume_lost`) at most.
const ENDINGS_KEPT: usize = 16_384;
/// How many windows an ended session is remembered for.
pub const ENDINGS_WINDOWS: u32 = 4;

/// How sessions resume on this relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumption {
    /// How long a session waits for a resume once its connection dropped; zero turns
    /// resumption off.
    pub window: Duration,
    /// Bytes of counted frames a session keeps unacknowledged at most.
    pub buffer: usize,
    /// Counted frames a session keeps unacknowledged at most.
    pub frames: usize,
}

impl Resumption {
    /// Resumption off: `/ws?resume` connections are plain ones.
    pub const OFF: Self = Self {
        window: Duration::ZERO,
        buffer: 0,
        frames: 0,
    };

    /// Whether sessions resume at all.
    pub fn on(&self) -> bool {
        !self.window.is_zero()
    }
}

impl Default for Resumption {
    fn default() -> Self {
        Self::OFF
    }
}

/// A session's key. Its bytes never leave this module but as the wire's hex.
#[derive(Clone, Copy)]
pub struct Key([u8; 16]);

impl Key {
    /// A fresh key from the CSPRNG; `None` if the system has no randomness to give.
    fn mint(random: &SystemRandom) -> Option<Self> {
        let mut bytes = [0; 16];
        random.fill(&mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// The key as the wire has it.
    fn wire(&self) -> ResumeKey {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hex: String = self
            .0
            .iter()
            .flat_map(|b| [HEX[usize::from(b / 16)], HEX[usize::from(b % 16)]])
            .map(char::from)
            .collect();
        // tidy: 32 lowercase hex digits, made just above.
        ResumeKey::new(hex).expect("hex of 16 bytes is a key")
    }

    /// Whether `claimed` is this key, in time independent of where they differ.
    fn matches(&self, claimed: &ResumeKey) -> bool {
        let claimed = claimed.as_str().as_bytes();
        let mut differ = 0u8;
        for (i, b) in self.0.iter().enumerate() {
            let (hi, lo) = (claimed[2 * i], claimed[2 * i + 1]);
            differ |= (unhex(hi) * 16 + unhex(lo)) ^ b;
        }
        differ == 0
    }
}

/// The SHA-256 of a key's bytes: what other relays are told of it (through Redis), so
/// that a resume may come to any of them. Comparing digests in constant time leaks
/// nothing of the key: a mismatch's position says nothing about the key's bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `key`.
    pub fn of(key: &Key) -> Self {
        let hash = ring::digest::digest(&ring::digest::SHA256, &key.0);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(hash.as_ref());
        Self(bytes)
    }

    /// The digest of the key `claimed`.
    pub fn claimed(claimed: &ResumeKey) -> Self {
        let hex = claimed.as_str().as_bytes();
        let mut key = [0; 16];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = unhex(hex[2 * i]) * 16 + unhex(hex[2 * i + 1]);
        }
        Self::of(&Key(key))
    }

    /// Whether `self` is `other`, in time independent of where they differ.
    pub fn matches(&self, other: &Digest) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
    }
}

/// A hex digit's value; a `ResumeKey` holds only lowercase hex digits.
fn unhex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit.wrapping_sub(b'a').wrapping_add(10),
    }
}

/// A resumable member's session.
pub struct Session {
    /// Its current key, once it has entered a room.
    pub key: Option<Key>,
    pub presence: Presence,
}

/// Whether a session's connection is there. A state machine: `Here` → `Away` → `Here` (a
/// resume) or gone (the window ended, its frames outgrew the buffer, or it was resumed on
/// another relay); `Here` → `Leaving` → gone (resumed on another relay while its
/// connection here still looked alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// On a connection.
    Here,
    /// Its connection dropped: waiting for a resume. `generation` tells this absence from
    /// later ones (the expiry of an earlier one must not end a later one); `received` is
    /// how many counted frames the relay had received from the client.
    Away { generation: u64, received: u64 },
    /// Resumed on relay `to` while its connection here still looked alive: the connection
    /// was told to go, and the session goes to `to` with the count it ends with.
    Leaving { to: u64 },
}

/// How a session ended, for a resume that comes later with its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The window ended before a resume.
    Expired,
    /// What was kept for it outgrew the buffer.
    Lost,
}

/// What a resume's key matched, once none of the live sessions did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// A session that ended so.
    Ended(Ending),
    /// Nothing (or the address is refused unseen).
    Nothing,
}

/// The relay's sessions' rules, keys and records. Held in the core, under its lock.
pub struct Sessions {
    pub rules: Resumption,
    random: SystemRandom,
    generations: u64,
    /// Sessions that ended with a key, oldest first: peer, key, how, when.
    endings: VecDeque<(PeerId, Key, Ending, Instant)>,
    /// Refused resumes per address: how many, since when.
    failures: HashMap<IpAddr, (u32, Instant)>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(Resumption::OFF)
    }
}

impl Sessions {
    pub fn new(rules: Resumption) -> Self {
        Self {
            rules,
            random: SystemRandom::new(),
            generations: 0,
            endings: VecDeque::new(),
            failures: HashMap::new(),
        }
    }

    /// A new session for a resumable connection, if resumption is on.
    pub fn open(&self) -> Option<Box<Session>> {
        self.rules.on().then(|| {
            Box::new(Session {
                key: None,
                presence: Presence::Here,
            })
        })
    }

    /// Mints `session` a new key (the old one is spent) and says how to use it. `None`
    /// when the system gives no randomness: the session then cannot resume.
    pub fn grant(&self, session: &mut Session) -> Option<Resumable> {
        session.key = Key::mint(&self.random);
        session.key.map(|key| Resumable {
            key: key.wire(),
            window_ms: u64::try_from(self.rules.window.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// A new absence, and its generation.
    pub fn away(&mut self, received: u64) -> (u64, Presence) {
        self.generations += 1;
        let generation = self.generations;
        (
            generation,
            Presence::Away {
                generation,
                received,
            },
        )
    }

    /// Whether `claimed` is `session`'s key.
    pub fn matches(session: &Session, claimed: &ResumeKey) -> bool {
        session.key.is_some_and(|key| key.matches(claimed))
    }

    /// Notes that `peer`'s session, with `key`, ended so.
    pub fn ended(&mut self, peer: PeerId, key: Option<Key>, how: Ending) {
        let Some(key) = key else { return };
        let now = Instant::now();
        self.forget_old_endings(now);
        if self.endings.len() >= ENDINGS_KEPT {
            self.endings.pop_front();
        }
        self.endings.push_back((peer, key, how, now));
    }

    /// Whether `from` may try a resume now.
    pub fn may_try(&mut self, from: Option<IpAddr>, now: Instant) -> bool {
        let Some(from) = from else { return true };
        match self.failures.get(&from) {
            Some(&(count, since)) if now.duration_since(since) < FAILURE_PERIOD => {
                count < FAILURES_ALLOWED
            }
            _ => true,
        }
    }

    /// A resume from `from` for `peer` matched no live session: was it a session that
    /// ended (told, once), or nothing (counted against the address)?
    pub fn late(&mut self, peer: PeerId, claimed: &ResumeKey, from: Option<IpAddr>) -> Late {
        let now = Instant::now();
        self.forget_old_endings(now);
        let found = self
            .endings
            .iter()
            .position(|(p, key, _, _)| *p == peer && key.matches(claimed));
        if let Some((_, _, how, _)) = found.and_then(|at| self.endings.remove(at)) {
            return Late::Ended(how);
        }
        self.failed(from, now);
        Late::Nothing
    }

    /// Counts a refused resume against `from`.
    pub fn failed(&mut self, from: Option<IpAddr>, now: Instant) {
        let Some(from) = from else { return };
        if self.failures.len() >= ADDRESSES_TRACKED && !self.failures.contains_key(&from) {
            self.failures
                .retain(|_, (_, since)| now.duration_since(*since) < FAILURE_PERIOD);
            if self.failures.len() >= ADDRESSES_TRACKED {
                return;
            }
        }
        let entry = self.failures.entry(from).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_PERIOD {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    fn forget_old_endings(&mut self, now: Instant) {
        let kept_for = self.rules.window * ENDINGS_WINDOWS;
        while let Some((_, _, _, at)) = self.endings.front() {
            if now.duration_since(*at) < kept_for {
                break;
            }
            self.endings.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Resumption {
        Resumption {
            window: Duration::from_secs(20),
            buffer: 1024,
            frames: 16,
        }
    }

    #[test]
    fn a_key_matches_its_own_hex_and_no_other() {
        let sessions = Sessions::new(rules());
        let mut session = sessions.open().expect("resumption is on");
        let granted = sessions.grant(&mut session).expect("randomness");
        assert!(Sessions::matches(&session, &granted.key));
        let mut other = granted.key.as_str().to_owned();
        let last = if other.ends_with('0') { "1" } else { "0" };
        other.replace_range(31.., last);
        let other = ResumeKey::new(other).expect("a key");
        assert!(!Sessions::matches(&session, &other));
        // A new grant spends the old key.
        let next = sessions.grant(&mut session).expect("randomness");
        assert!(!Sessions::matches(&session, &granted.key));
        assert!(Sessions::matches(&session, &next.key));
        assert_eq!(format!("{:?}", next.key), "ResumeKey(..)");
    }

    #[test]
    fn an_ended_session_is_told_once_and_only_with_its_key() {
        let mut sessions = Sessions::new(rules());
        let mut session = sessions.open().expect("resumption is on");
        let granted = sessions.grant(&mut session).expect("randomness");
        let peer = PeerId::new(7).expect("an id");
        sessions.ended(peer, session.key, Ending::Lost);
        let other = PeerId::new(8).expect("an id");
        assert_eq!(sessions.late(other, &granted.key, None), Late::Nothing);
        assert_eq!(
            sessions.late(peer, &granted.key, None),
            Late::Ended(Ending::Lost)
        );
        assert_eq!(sessions.late(peer, &granted.key, None), Late::Nothing);
    }

    #[test]
    fn an_address_is_refused_unseen_after_its_failures() {
        let mut sessions = Sessions::new(rules());
        let from = Some(IpAddr::from([192, 0, 2, 1]));
        let now = Instant::now();
        for _ in 0..FAILURES_ALLOWED {
            assert!(sessions.may_try(from, now));
            sessions.failed(from, now);
        }
        assert!(!sessions.may_try(from, now));
        assert!(sessions.may_try(Some(IpAddr::from([192, 0, 2, 2])), now));
        assert!(sessions.may_try(from, now + FAILURE_PERIOD));
    }
}
