//! A TURN client (RFC 8656, over UDP) for the peer's one socket: str0m gathers nothing, so
//! the peer allocates a relayed address on the TURN server the relay names in `created` or
//! `joined` (with the credential the relay minted), offers it as a relayed candidate, and
//! carries the datagrams of that candidate in Send and Data indications.
//!
//! Without I/O: [`Allocation`] builds the datagrams to send to the server and reads those
//! that come from it; the peer's loop sends and receives them on its socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

const MAGIC: u32 = 0x2112_a442;

const ALLOCATE: u16 = 0x0003;
const REFRESH: u16 = 0x0004;
const CREATE_PERMISSION: u16 = 0x0008;
const SEND: u16 = 0x0016;
const DATA: u16 = 0x0017;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;

const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const LIFETIME: u16 = 0x000d;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA_ATTR: u16 = 0x0013;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_TRANSPORT: u16 = 0x0019;

/// A permission lasts 300 s; renewed well before.
const PERMISSION_RENEWAL: Duration = Duration::from_secs(240);

/// Why an allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The server refused, with its error code and reason.
    #[error("the TURN server refused: {code} {reason}")]
    Refused {
        /// The STUN error code.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The server's answer lacked what it must hold.
    #[error("a TURN answer without {0}")]
    Malformed(&'static str),
}

/// A STUN message as read: its type, transaction and attributes.
struct Message<'a> {
    kind: u16,
    transaction: [u8; 12],
    attributes: Vec<(u16, &'a [u8])>,
}

impl<'a> Message<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < 20 || bytes[0] & 0xc0 != 0 || bytes[4..8] != MAGIC.to_be_bytes() {
            return None;
        }
        let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
        let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let body = bytes.get(20..20 + length)?;
        let mut transaction = [0; 12];
        transaction.copy_from_slice(&bytes[8..20]);
        let mut attributes = Vec::new();
        let mut at = 0;
        while at + 4 <= body.len() {
            let kind = u16::from_be_bytes([body[at], body[at + 1]]);
            let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
            let value = body.get(at + 4..at + 4 + len)?;
            attributes.push((kind, value));
            at += 4 + len.div_ceil(4) * 4;
        }
        Some(Self {
            kind,
            transaction,
            attributes,
        })
    }

    fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    fn error(&self) -> Option<(u16, String)> {
        let value = self.get(ERROR_CODE)?;
        let code = u16::from(*value.get(2)? & 0x07) * 100 + u16::from(*value.get(3)?);
        Some((code, String::from_utf8_lossy(&value[4..]).into_owned()))
    }

    fn address(&self, kind: u16) -> Option<SocketAddr> {
        xor_address(self.get(kind)?, &self.transaction)
    }
}

/// Builds a STUN message attribute by attribute.
struct Builder {
    bytes: Vec<u8>,
}

impl Builder {
    fn new(kind: u16, transaction: [u8; 12]) -> Self {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&kind.to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&MAGIC.to_be_bytes());
        bytes.extend_from_slice(&transaction);
        Self { bytes }
    }

    fn attribute(mut self, kind: u16, value: &[u8]) -> Self {
        self.bytes.extend_from_slice(&kind.to_be_bytes());
        self.bytes
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.resize(self.bytes.len().div_ceil(4) * 4, 0);
        self.set_length(self.bytes.len() - 20);
        self
    }

    fn set_length(&mut self, length: usize) {
        self.bytes[2..4].copy_from_slice(&(length as u16).to_be_bytes());
    }

    /// Adds MESSAGE-INTEGRITY (HMAC-SHA1 under the long-term `key`) and finishes.
    fn sign(mut self, key: &[u8]) -> Vec<u8> {
        // The length counts the integrity attribute, which the HMAC does not cover.
        self.set_length(self.bytes.len() - 20 + 24);
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(&self.bytes);
        let digest = mac.finalize().into_bytes();
        self.attribute(MESSAGE_INTEGRITY, &digest).bytes
    }

    fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

fn xor_address(value: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC >> 16) as u16;
    let ip = match value.get(1)? {
        0x01 => {
            let raw = u32::from_be_bytes(value.get(4..8)?.try_into().ok()?) ^ MAGIC;
            IpAddr::from(raw.to_be_bytes())
        }
        0x02 => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
            mask[4..].copy_from_slice(transaction);
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = raw[i] ^ mask[i];
            }
            IpAddr::from(ip)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn encode_xor_address(addr: SocketAddr, transaction: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC >> 16) as u16;
    let mut value = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            value.push(0x01);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            value.push(0x02);
            value.extend_from_slice(&port.to_be_bytes());
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
            mask[4..].copy_from_slice(transaction);
            for (byte, mask) in ip.octets().iter().zip(mask) {
                value.push(byte ^ mask);
            }
        }
    }
    value
}

fn transaction() -> [u8; 12] {
    // Unpredictable enough: the server only echoes it.
    let mut id = [0u8; 12];
    for chunk in id.chunks_mut(8) {
        chunk.copy_from_slice(&rand_word().to_le_bytes()[..chunk.len()]);
    }
    id
}

/// A word that differs from call to call and process to process (std's hasher keys).
fn rand_word() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// Where an allocation stands.
#[derive(Debug)]
enum State {
    /// The first Allocate is out, unauthenticated (the server answers 401 with its realm
    /// and nonce).
    Asking([u8; 12]),
    /// The authenticated Allocate is out.
    Allocating([u8; 12]),
    /// The server relays at this address.
    Allocated(SocketAddr),
}

/// An allocation on one TURN server, and the permissions it holds for peers.
#[derive(Debug)]
pub struct Allocation {
    server: SocketAddr,
    username: String,
    password: String,
    realm: String,
    nonce: String,
    key: Vec<u8>,
    state: State,
    /// When each peer address's permission was last asked for.
    permissions: HashMap<IpAddr, Instant>,
    refresh_at: Option<Instant>,
}

impl Allocation {
    /// Starts an allocation on `server` with a long-term credential: the first request to
    /// send it.
    pub fn start(server: SocketAddr, username: &str, password: &str) -> (Self, Vec<u8>) {
        let id = transaction();
        let request = Builder::new(ALLOCATE, id)
            .attribute(REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .finish();
        let allocation = Self {
            server,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: String::new(),
            nonce: String::new(),
            key: Vec::new(),
            state: State::Asking(id),
            permissions: HashMap::new(),
            refresh_at: None,
        };
        (allocation, request)
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated(relayed) => Some(relayed),
            _ => None,
        }
    }

    /// Reads a datagram from the server: a relayed datagram from a peer (a Data
    /// indication), or an answer that moves the allocation on (and perhaps a request to
    /// send next).
    pub fn receive(&mut self, datagram: &[u8]) -> Result<Received, TurnError> {
        let Some(message) = Message::parse(datagram) else {
            return Ok(Received::Nothing);
        };
        if message.kind == DATA {
            let (Some(peer), Some(data)) =
                (message.address(XOR_PEER_ADDRESS), message.get(DATA_ATTR))
            else {
                return Ok(Received::Nothing);
            };
            return Ok(Received::Relayed(peer, data.to_vec()));
        }
        match (&self.state, message.kind) {
            (State::Asking(id), kind) if *id == message.transaction && kind == ALLOCATE | ERROR => {
                let (Some(realm), Some(nonce)) = (message.get(REALM), message.get(NONCE)) else {
                    let (code, reason) = message.error().unwrap_or((0, String::new()));
                    return Err(TurnError::Refused { code, reason });
                };
                self.realm = String::from_utf8_lossy(realm).into_owned();
                self.nonce = String::from_utf8_lossy(nonce).into_owned();
                let mut md5 = Md5::new();
                md5.update(format!(
                    "{}:{}:{}",
                    self.username, self.realm, self.password
                ));
                self.key = md5.finalize().to_vec();
                let id = transaction();
                self.state = State::Allocating(id);
                let request = self
                    .authenticated(ALLOCATE, id)
                    .attribute(REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                Ok(Received::Send(request.sign(&self.key)))
            }
            (State::Allocating(id), kind) if *id == message.transaction => {
                if kind != ALLOCATE | SUCCESS {
                    let (code, reason) = message.error().unwrap_or((0, String::new()));
                    return Err(TurnError::Refused { code, reason });
                }
                let relayed = message
                    .address(XOR_RELAYED_ADDRESS)
                    .ok_or(TurnError::Malformed("a relayed address"))?;
                let lifetime = message
                    .get(LIFETIME)
                    .and_then(|v| v.try_into().ok())
                    .map_or(600, u32::from_be_bytes);
                self.refresh_at =
                    Some(Instant::now() + Duration::from_secs(u64::from(lifetime) * 3 / 4));
                self.state = State::Allocated(relayed);
                Ok(Received::Allocated(relayed))
            }
            (State::Allocated(_), kind) if kind & ERROR == ERROR => {
                // A stale nonce (438): take the new one, ask for the permissions again as
                // they are used, and refresh at once in case the refresh was the one refused.
                if let Some(nonce) = message.get(NONCE) {
                    self.nonce = String::from_utf8_lossy(nonce).into_owned();
                    self.permissions.clear();
                    self.refresh_at = Some(Instant::now());
                }
                Ok(Received::Nothing)
            }
            _ => Ok(Received::Nothing),
        }
    }

    /// A datagram for `peer` sent from the relayed address: the Send indication to send the
    /// server, preceded by a CreatePermission for the peer's address when it has none yet
    /// (or it is due for renewal).
    pub fn send(&mut self, peer: SocketAddr, data: &[u8], now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(2);
        let due = self
            .permissions
            .get(&peer.ip())
            .is_none_or(|at| now >= *at + PERMISSION_RENEWAL);
        if due && self.relayed().is_some() {
            self.permissions.insert(peer.ip(), now);
            let id = transaction();
            let request = self
                .authenticated(CREATE_PERMISSION, id)
                .attribute(XOR_PEER_ADDRESS, &encode_xor_address(peer, &id));
            out.push(request.sign(&self.key));
        }
        let id = transaction();
        out.push(
            Builder::new(SEND, id)
                .attribute(XOR_PEER_ADDRESS, &encode_xor_address(peer, &id))
                .attribute(DATA_ATTR, data)
                .finish(),
        );
        out
    }

    /// A Refresh to send now, if the allocation's lifetime is three quarters gone; and
    /// when to ask again.
    pub fn refresh(&mut self, now: Instant) -> (Option<Vec<u8>>, Option<Instant>) {
        let Some(at) = self.refresh_at else {
            return (None, None);
        };
        if now < at {
            return (None, Some(at));
        }
        self.refresh_at = Some(now + Duration::from_secs(300));
        let request = self
            .authenticated(REFRESH, transaction())
            .attribute(LIFETIME, &600u32.to_be_bytes());
        (Some(request.sign(&self.key)), self.refresh_at)
    }

    fn authenticated(&self, kind: u16, id: [u8; 12]) -> Builder {
        Builder::new(kind, id)
            .attribute(USERNAME, self.username.as_bytes())
            .attribute(REALM, self.realm.as_bytes())
            .attribute(NONCE, self.nonce.as_bytes())
    }
}

/// What a datagram from the server was.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Nothing to act on.
    Nothing,
    /// A request to send the server next.
    Send(Vec<u8>),
    /// The allocation is made: the server relays at this address.
    Allocated(SocketAddr),
    /// A datagram from a peer, relayed.
    Relayed(SocketAddr, Vec<u8>),
}

/// A `turn:` URL's server address, if it is one over UDP with a literal IP (the relay's
/// `--turn-url`s on loopback and in most deployments), or a host name resolved with the
/// system's resolver.
pub fn server_address(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("turn:")?;
    let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
    if query
        .split('&')
        .any(|q| q.starts_with("transport=") && q != "transport=udp")
    {
        return None;
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    let with_port = if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:3478")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .ok()?
        .find(SocketAddr::is_ipv4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_addresses_round_trip() {
        let id = [7; 12];
        for addr in ["127.0.0.1:3478", "[2001:db8::1]:40000"] {
            let addr: SocketAddr = addr.parse().expect("an address");
            assert_eq!(xor_address(&encode_xor_address(addr, &id), &id), Some(addr));
        }
    }

    #[test]
    fn an_allocation_answers_the_challenge_then_relays_with_permissions() {
        let server: SocketAddr = "127.0.0.1:3478".parse().expect("an address");
        let (mut allocation, first) = Allocation::start(server, "1700000000:7", "secret");
        let first = Message::parse(&first).expect("a STUN message");
        assert_eq!(first.kind, ALLOCATE);
        assert!(first.get(MESSAGE_INTEGRITY).is_none());

        // 401 with realm and nonce: the answer is the same request, signed.
        let challenge = Builder::new(ALLOCATE | ERROR, first.transaction)
            .attribute(ERROR_CODE, &[0, 0, 4, 1, b'U'])
            .attribute(REALM, b"signalroom.test")
            .attribute(NONCE, b"abc")
            .finish();
        let Ok(Received::Send(signed)) = allocation.receive(&challenge) else {
            panic!("no signed request");
        };
        let signed_message = Message::parse(&signed).expect("a STUN message");
        assert_eq!(signed_message.get(USERNAME), Some(&b"1700000000:7"[..]));
        let integrity = signed_message.get(MESSAGE_INTEGRITY).expect("signed");
        // The HMAC covers the message before the integrity attribute, its length
        // counting it.
        let covered = signed.len() - 24;
        let mut header = signed[..covered].to_vec();
        header[2..4].copy_from_slice(&((covered - 20 + 24) as u16).to_be_bytes());
        let key = Md5::digest(b"1700000000:7:signalroom.test:secret");
        let mut mac = Hmac::<Sha1>::new_from_slice(&key).expect("a key");
        mac.update(&header);
        assert_eq!(mac.finalize().into_bytes().as_slice(), integrity);

        // Success: the relayed address.
        let relayed: SocketAddr = "127.0.0.1:50000".parse().expect("an address");
        let success = Builder::new(ALLOCATE | SUCCESS, signed_message.transaction)
            .attribute(
                XOR_RELAYED_ADDRESS,
                &encode_xor_address(relayed, &signed_message.transaction),
            )
            .attribute(LIFETIME, &600u32.to_be_bytes())
            .finish();
        assert_eq!(
            allocation.receive(&success).ok(),
            Some(Received::Allocated(relayed))
        );

        // The first datagram to a peer asks for its permission; the next does not.
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
        let now = Instant::now();
        let out = allocation.send(peer, b"ping", now);
        assert_eq!(out.len(), 2);
        assert_eq!(
            Message::parse(&out[0]).map(|m| m.kind),
            Some(CREATE_PERMISSION)
        );
        let send = Message::parse(&out[1]).expect("a Send indication");
        assert_eq!(
            (send.kind, send.address(XOR_PEER_ADDRESS)),
            (SEND, Some(peer))
        );
        assert_eq!(send.get(DATA_ATTR), Some(&b"ping"[..]));
        assert_eq!(allocation.send(peer, b"again", now).len(), 1);

        // A Data indication is a peer's datagram.
        let id = [3; 12];
        let data = Builder::new(DATA, id)
            .attribute(XOR_PEER_ADDRESS, &encode_xor_address(peer, &id))
            .attribute(DATA_ATTR, b"pong")
            .finish();
        assert_eq!(
            allocation.receive(&data).ok(),
            Some(Received::Relayed(peer, b"pong".to_vec()))
        );
    }

    #[test]
    fn turn_urls_name_their_server() {
        assert_eq!(
            server_address("turn:127.0.0.1:3479?transport=udp"),
            "127.0.0.1:3479".parse().ok()
        );
        assert_eq!(
            server_address("turn:127.0.0.1"),
            "127.0.0.1:3478".parse().ok()
        );
        assert_eq!(server_address("turn:127.0.0.1:3479?transport=tcp"), None);
        assert_eq!(server_address("stun:127.0.0.1:3478"), None);
    }
}
