//! RFC 6455 conformance of the relay's own WebSocket (`server/src/upgrade.rs` and `ws.rs`):
//! every MUST and SHOULD for a server, held the way the Autobahn TestSuite holds a library,
//! one `mod` per Autobahn section (plus the opening handshake, the size limit and masking).
//!
//! The client is raw bytes over a `TcpStream`, with no WebSocket library whose leniency could
//! hide a fault: it writes the upgrade request and parses the response head itself, and
//! writes masked frames split into separate TCP writes where a test says so. Its frames are
//! built, and the relay's read, by a few lines of its own written from RFC 6455's section
//! 5.2 ([`encode`], [`FrameHead::parse`], checked against the RFC's examples), not by the relay's
//! codec (`signalroom-wsframe`): a fault in that codec cannot hide by being on both sides.
//! Every frame the relay sends goes through [`check`]; [`Raw::expect_close`] holds the relay
//! to the end of a connection: its close frame, then nothing but the end of TCP within a
//! second.
//!
//! Cases of one kind run as a table, concurrently, each on its own connection; a failing
//! test names every case that failed and what the relay did instead.

mod support;

use std::fmt::{self, Debug};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use futures_util::future::join_all;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use signalroom_protocol::{ErrorCode, Event, PeerId, Request};
use signalroom_server::Config;
use support::{room_name, Relay, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

// Opcodes (RFC 6455, section 5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

const FIN: bool = true;
const MORE: bool = false;
/// The masking key of every client frame (RFC 6455's example key).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// How soon after its close frame the relay must close TCP: Autobahn grades a later close
/// unclean.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);
/// Between the pieces of a split write: time for the relay to read each piece on its own.
const PIECE_GAP: Duration = Duration::from_millis(1);
/// The shortest `message` request; longer ones pad its data.
const EMPTY_MESSAGE: &str = r#"{"type":"message","data":""}"#;
/// Close codes a client may send (RFC 6455 7.4.1, 7.4.2 and the IANA registry).
const VALID_CODES: [u16; 16] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
];
/// Close codes nobody may send: reserved, meant for reports only, or out of range.
const FORBIDDEN_CODES: [u16; 12] = [
    0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
];
/// Byte sequences that are not UTF-8 wherever they stand in a text.
const INVALID_UTF8: [(&str, &[u8]); 17] = [
    ("a lone continuation byte", b"\x80"),
    ("another lone continuation byte", b"\xbf"),
    ("an overlong NUL", b"\xc0\x80"),
    ("an overlong 2-byte form", b"\xc1\xbf"),
    ("an overlong '/'", b"\xe0\x80\xaf"),
    ("an overlong 3-byte form", b"\xe0\x9f\xbf"),
    ("the surrogate U+D800", b"\xed\xa0\x80"),
    ("the surrogate U+DFFF", b"\xed\xbf\xbf"),
    ("an overlong 4-byte form", b"\xf0\x8f\xbf\xbf"),
    ("a code point past U+10FFFF", b"\xf4\x90\x80\x80"),
    ("the lead byte 0xF5", b"\xf5\x80\x80\x80"),
    ("a 5-byte form", b"\xf8\x88\x80\x80\x80"),
    ("a 6-byte form", b"\xfc\x84\x80\x80\x80\x80"),
    ("the byte 0xFE", b"\xfe"),
    ("the byte 0xFF", b"\xff"),
    ("a lead byte then ASCII", b"\xc2A"),
    ("a cut-short character then ASCII", b"\xe2\x82A"),
];

// ---------------------------------------------------------------------------------------
// The client.

/// A relay whose rate limit keeps out of the way of tests that send many frames.
fn relay_config() -> Config {
    Config {
        rate_per_sec: 100_000,
        rate_burst: 100_000,
        ..Config::default()
    }
}

async fn relay() -> Result<Relay> {
    Relay::start(relay_config()).await
}

/// A client frame: its header, then its payload masked with [`MASK`].
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode(Some(MASK), fin, rsv, opcode, payload)
}

/// The size of a client frame's header, mask key included, for `len` payload bytes.
fn header_size(len: usize) -> usize {
    frame(FIN, 0, TEXT, &vec![0; len]).len() - len
}

/// A frame with the mask key `mask`, or unmasked, as RFC 6455's section 5.2 draws it: FIN,
/// RSV1-3 and the opcode; the mask bit and a 7-bit length, or 126 and a 16-bit length, or 127
/// and a 64-bit length (network order, shortest form); the key; the payload, octet `i` XORed
/// with octet `i % 4` of the key (section 5.3).
fn encode(mask: Option<[u8; 4]>, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | rsv << 4 | opcode];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len <= 125 {
        out.push(masked | len as u8);
    } else if len <= 0xffff {
        out.push(masked | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(masked | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame header as the relay sent it, read as RFC 6455's section 5.2 draws it.
#[derive(Debug)]
struct FrameHead {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// The header's bytes.
    size: usize,
}

impl FrameHead {
    /// The header at the start of `bytes`, if it is all there.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let (&first, rest) = bytes.split_first()?;
        let (&second, rest) = rest.split_first()?;
        let (len, rest) = match second & 0x7f {
            126 => {
                let (extended, rest) = rest.split_first_chunk::<2>()?;
                (u64::from(u16::from_be_bytes(*extended)), rest)
            }
            127 => {
                let (extended, rest) = rest.split_first_chunk::<8>()?;
                (u64::from_be_bytes(*extended), rest)
            }
            short => (u64::from(short), rest),
        };
        let (mask, rest) = if second & 0x80 != 0 {
            let (key, rest) = rest.split_first_chunk::<4>()?;
            (Some(*key), rest)
        } else {
            (None, rest)
        };
        Some(Self {
            fin: first & 0x80 != 0,
            rsv: (first >> 4) & 0x7,
            opcode: first & 0x0f,
            mask,
            len,
            size: bytes.len() - rest.len(),
        })
    }

    /// The size of the shortest header for this frame.
    fn shortest(&self) -> usize {
        let length = match self.len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + length + if self.mask.is_some() { 4 } else { 0 }
    }
}

/// A message cut into fragments at `cuts` (ascending offsets into `payload`; equal ones
/// make empty fragments), and where each fragment's frame starts but the first.
fn fragmented(opcode: u8, payload: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let bounds: Vec<usize> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .chain([payload.len()])
        .collect();
    let (mut bytes, mut starts) = (Vec::new(), Vec::new());
    for (i, piece) in bounds.windows(2).enumerate() {
        if i > 0 {
            starts.push(bytes.len());
        }
        let kind = if i == 0 { opcode } else { CONTINUATION };
        let last = i + 2 == bounds.len();
        bytes.extend(frame(last, 0, kind, &payload[piece[0]..piece[1]]));
    }
    (bytes, starts)
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

/// The text of a `message` request carrying `data`.
fn message(data: &Value) -> Vec<u8> {
    let request = Request::Message {
        data: data.clone(),
        to: None,
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

/// A `message` request exactly `len` bytes long (at least [`EMPTY_MESSAGE`]'s), and its data.
fn message_of_len(len: usize) -> (Vec<u8>, Value) {
    let data = Value::String("x".repeat(len - EMPTY_MESSAGE.len()));
    (message(&data), data)
}

fn join_request(room: &str) -> Vec<u8> {
    let request = Request::<Value>::CreateOrJoin {
        room: room_name(room),
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

/// Something for an assertion message, cut short.
fn brief(value: impl Debug) -> String {
    let text = format!("{value:?}");
    match text.char_indices().nth(160) {
        Some((at, _)) => format!("{}… ({} chars)", &text[..at], text.len()),
        None => text,
    }
}

/// A `Sec-WebSocket-Key`: 16 bytes, base64, different for every connection.
fn new_key() -> String {
    static KEYS: AtomicU32 = AtomicU32::new(0);
    let nonce = format!(
        "conformance{:05}",
        KEYS.fetch_add(1, Ordering::Relaxed) % 100_000
    );
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with (RFC 6455 4.2.2).
fn accept_key(key: &str) -> String {
    let digest = Sha1::digest(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11"));
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// A `GET /ws` request head with `headers` (each line ending in CRLF) besides `Host`.
fn get_ws(addr: SocketAddr, headers: &str) -> String {
    format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n")
}

/// The upgrade headers a browser sends, with `key`.
fn upgrade_headers(key: &str) -> String {
    format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n"
    )
}

/// An HTTP response head.
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        values.next().map(|(_, v)| v.as_str())
    }

    /// Whether header `name` lists `token` (comma-separated, case-insensitive).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// A `101` that accepts the upgrade with `key` (RFC 6455 4.2.2).
    fn check_accepts(&self, key: &str) -> Result<()> {
        ensure!(self.status == 101, "expected 101, got {self:?}");
        ensure!(
            self.lists("upgrade", "websocket"),
            "no Upgrade: websocket in {self:?}"
        );
        ensure!(
            self.lists("connection", "upgrade"),
            "no Connection: Upgrade in {self:?}"
        );
        let accept = accept_key(key);
        ensure!(
            self.get("sec-websocket-accept") == Some(accept.as_str()),
            "expected Sec-WebSocket-Accept {accept}, got {self:?}"
        );
        // The client asked for neither.
        for unasked in ["sec-websocket-extensions", "sec-websocket-protocol"] {
            ensure!(
                self.get(unasked).is_none(),
                "{unasked} nobody asked for: {self:?}"
            );
        }
        Ok(())
    }
}

/// The handshake: sends `request` on a new connection and reads the response head. Returns
/// it with the stream and the bytes read past it.
async fn handshake(addr: SocketAddr, request: &str) -> Result<(Head, TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        ensure!(buf.len() < 16 * 1024, "a response head of over 16 KiB");
        let read = timeout(PATIENCE, stream.read_buf(&mut buf))
            .await
            .context("no response head in time")??;
        ensure!(read > 0, "closed before a response head: {}", brief(&buf));
    };
    let text = std::str::from_utf8(&buf[..end]).context("a response head not in UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok((Head { status, headers }, stream, buf[end..].to_vec()))
}

/// One frame from the relay, checked by [`check`].
struct Frame {
    opcode: u8,
    payload: Vec<u8>,
}

impl Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = String::from_utf8_lossy(&self.payload);
        match (self.opcode, self.payload.as_slice()) {
            (CLOSE, [high, low, reason @ ..]) => write!(
                f,
                "close {} {:?}",
                u16::from_be_bytes([*high, *low]),
                String::from_utf8_lossy(reason)
            ),
            (TEXT, _) => write!(f, "text {}", brief(text)),
            (PONG, _) => write!(f, "pong {}", brief(text)),
            (opcode, _) => write!(f, "opcode {opcode:#x} {}", brief(text)),
        }
    }
}

/// Every frame the relay sends passes here: RFC 6455's rules for a server's frames, and the
/// relay's own (it never fragments).
fn check(header: &FrameHead, payload: &[u8]) -> Result<()> {
    ensure!(
        header.mask.is_none(),
        "a masked frame (5.1: servers MUST NOT mask)"
    );
    ensure!(header.rsv == 0, "reserved bits {:03b} set", header.rsv);
    ensure!(
        header.size == header.shortest(),
        "a {}-byte header for {} payload bytes: not the minimal length encoding",
        header.size,
        header.len
    );
    ensure!(header.fin, "a fragment (the relay never fragments)");
    match header.opcode {
        TEXT => {
            ensure!(
                std::str::from_utf8(payload).is_ok(),
                "a text frame not in UTF-8"
            );
        }
        BINARY => {}
        PING | PONG => {
            ensure!(
                payload.len() <= 125,
                "a control frame of {} bytes",
                payload.len()
            );
        }
        CLOSE => match payload {
            [] => {}
            [_] => bail!("a close payload of one byte"),
            [high, low, reason @ ..] => {
                ensure!(
                    payload.len() <= 125,
                    "a close frame of {} bytes",
                    payload.len()
                );
                let code = u16::from_be_bytes([*high, *low]);
                ensure!(
                    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                    "close code {code}, which may not be sent"
                );
                ensure!(
                    std::str::from_utf8(reason).is_ok(),
                    "a close reason not in UTF-8"
                );
            }
        },
        other => bail!("the unknown opcode {other:#x}"),
    }
    Ok(())
}

/// A WebSocket client made of raw bytes.
struct Raw {
    stream: TcpStream,
    /// Bytes read from the relay and not parsed yet.
    read: Vec<u8>,
    /// Whether the client has written a close frame (so it answers none).
    sent_close: bool,
}

impl Raw {
    /// Opens a WebSocket as a browser would, holding the relay's answer to RFC 6455.
    async fn connect(addr: SocketAddr) -> Result<Self> {
        let key = new_key();
        let (head, stream, read) = handshake(addr, &get_ws(addr, &upgrade_headers(&key))).await?;
        head.check_accepts(&key)?;
        Ok(Self::new(stream, read))
    }

    fn new(stream: TcpStream, read: Vec<u8>) -> Self {
        Self {
            stream,
            read,
            sent_close: false,
        }
    }

    /// Writes `bytes` in pieces cut at `cuts` (ascending offsets), each its own TCP write
    /// with a pause between, so that the relay reads them apart.
    async fn write(&mut self, bytes: &[u8], cuts: &[usize]) -> Result<()> {
        let mut from = 0;
        for &cut in cuts.iter().chain([&bytes.len()]) {
            ensure!(
                from <= cut && cut <= bytes.len(),
                "a cut at {cut} after {from}"
            );
            if from > 0 {
                tokio::time::sleep(PIECE_GAP).await;
            }
            timeout(PATIENCE, self.stream.write_all(&bytes[from..cut]))
                .await
                .context("the relay does not read")??;
            from = cut;
        }
        self.sent_close |= holds_close(bytes);
        Ok(())
    }

    /// Sends one whole frame in one write.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        self.write(&frame(FIN, 0, opcode, payload), &[]).await
    }

    /// The relay's next frame, checked; its heartbeat pings are checked and passed over.
    async fn next_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(header) = FrameHead::parse(&self.read) {
                let end = header.size + usize::try_from(header.len)?;
                if self.read.len() >= end {
                    let payload = self.read[header.size..end].to_vec();
                    self.read.drain(..end);
                    check(&header, &payload)
                        .with_context(|| format!("the relay sent {header:?}"))?;
                    if header.opcode == PING {
                        continue;
                    }
                    return Ok(Frame {
                        opcode: header.opcode,
                        payload,
                    });
                }
            }
            self.read.reserve(8 * 1024);
            let read = timeout(PATIENCE, self.stream.read_buf(&mut self.read))
                .await
                .context("no frame from the relay in time")??;
            ensure!(read > 0, "the relay closed TCP without a close frame");
        }
    }

    /// The relay's next frame, which must be a text frame holding an event.
    async fn event(&mut self) -> Result<Event<Value>> {
        let frame = self.next_frame().await?;
        ensure!(frame.opcode == TEXT, "expected an event, got {frame:?}");
        Ok(serde_json::from_slice(&frame.payload)?)
    }

    async fn expect_error(&mut self, code: ErrorCode) -> Result<()> {
        match self.event().await? {
            Event::Error { code: got, .. } if got == code => Ok(()),
            other => bail!("expected error {code}, got {}", brief(other)),
        }
    }

    async fn expect_pong(&mut self, payload: &[u8]) -> Result<()> {
        let frame = self.next_frame().await?;
        ensure!(
            frame.opcode == PONG && frame.payload == payload,
            "expected a pong with {}, got {frame:?}",
            brief(String::from_utf8_lossy(payload))
        );
        Ok(())
    }

    /// The closing handshake as Autobahn's client does it: expects the relay's close frame
    /// with one of `codes` next; answers it with the same code unless the client sent a
    /// close first (RFC 6455 5.5.1); then expects nothing but the end of TCP, within
    /// [`CLOSE_WITHIN`].
    async fn expect_close(&mut self, codes: &[u16]) -> Result<()> {
        let code = self.close_frame(codes).await?;
        if !self.sent_close {
            let answer = frame(FIN, 0, CLOSE, &close_payload(code, b""));
            // The relay may have closed TCP already: that is for `expect_end` to judge.
            let _ = self.stream.write_all(&answer).await;
        }
        self.expect_end(code).await
    }

    /// Expects the relay's next frame to be a close frame with one of `codes`.
    async fn close_frame(&mut self, codes: &[u16]) -> Result<u16> {
        let frame = self.next_frame().await?;
        match frame.payload.as_slice() {
            [high, low, ..] if frame.opcode == CLOSE => {
                let code = u16::from_be_bytes([*high, *low]);
                ensure!(
                    codes.contains(&code),
                    "expected close {codes:?}, got {frame:?}"
                );
                Ok(code)
            }
            _ => bail!("expected close {codes:?}, got {frame:?}"),
        }
    }

    /// Expects nothing more from the relay, which closed with `code`, but the end of TCP
    /// within [`CLOSE_WITHIN`].
    async fn expect_end(&mut self, code: u16) -> Result<()> {
        ensure!(
            self.read.is_empty(),
            "bytes after the close frame: {}",
            brief(&self.read)
        );
        let mut after = [0; 64];
        let start = tokio::time::Instant::now();
        // Waits past the bound only to say how late the end came.
        let read = timeout(PATIENCE, self.stream.read(&mut after)).await;
        let late = start.elapsed() > CLOSE_WITHIN;
        match read {
            Err(_) => bail!("close {code} came, then TCP stayed open over {PATIENCE:?}"),
            Ok(Ok(0)) if late => bail!(
                "close {code} came, then TCP stayed open {:.1} s (over {CLOSE_WITHIN:?})",
                start.elapsed().as_secs_f64()
            ),
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(n)) => bail!("bytes after the close frame: {}", brief(&after[..n])),
            Ok(Err(error)) => bail!("after close {code}, TCP ended uncleanly: {error}"),
        }
    }

    async fn join(&mut self, room: &str) -> Result<Event<Value>> {
        self.send(TEXT, &join_request(room)).await?;
        self.event().await
    }
}

/// Whether `bytes`, frames a client writes, hold a close frame.
fn holds_close(mut bytes: &[u8]) -> bool {
    while let Some(header) = FrameHead::parse(bytes) {
        if header.opcode == CLOSE {
            return true;
        }
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        match bytes.get(header.size.saturating_add(len)..) {
            Some(rest) => bytes = rest,
            None => return false,
        }
    }
    false
}

/// Two raw clients in a room of their own: A sends, B receives.
struct Pair {
    a: Raw,
    b: Raw,
    a_id: PeerId,
    room: String,
}

impl Pair {
    async fn new(addr: SocketAddr) -> Result<Self> {
        static ROOMS: AtomicU32 = AtomicU32::new(0);
        let room = format!("conformance {}", ROOMS.fetch_add(1, Ordering::Relaxed));
        let (mut a, mut b) = (Raw::connect(addr).await?, Raw::connect(addr).await?);
        let a_id = match a.join(&room).await? {
            Event::Created { peer, .. } => peer,
            other => bail!("A expected created, got {other:?}"),
        };
        match b.join(&room).await? {
            Event::Joined { peers, .. } if peers == [a_id] => {}
            other => bail!("B expected joined, got {other:?}"),
        }
        match a.event().await? {
            Event::Join { .. } => {}
            other => bail!("A expected join, got {other:?}"),
        }
        Ok(Self { a, b, a_id, room })
    }

    /// Expects B's next event to be A's message with `data`.
    async fn relayed(&mut self, data: &Value) -> Result<()> {
        let got = self.b.event().await?;
        let want = Event::Message {
            from: self.a_id,
            data: data.clone(),
        };
        ensure!(
            got == want,
            "B expected {}, got {}",
            brief(&want),
            brief(&got)
        );
        Ok(())
    }

    /// Expects B's next event to be A's departure.
    async fn a_left(&mut self) -> Result<()> {
        let got = self.b.event().await?;
        let want = Event::Left {
            room: room_name(&self.room),
            peer: self.a_id,
        };
        ensure!(got == want, "B expected {want:?}, got {}", brief(&got));
        Ok(())
    }

    /// Sends A's text of `len` bytes as one frame written in pieces cut at `cuts`, and
    /// checks that the relay read it whole: relayed to B when it is long enough to be a
    /// `message`, refused as `malformed_json` when it is not.
    async fn deliver(&mut self, len: usize, cuts: &[usize]) -> Result<()> {
        if len < EMPTY_MESSAGE.len() {
            let spaces = vec![b' '; len];
            self.a.write(&frame(FIN, 0, TEXT, &spaces), cuts).await?;
            return self.a.expect_error(ErrorCode::MalformedJson).await;
        }
        let (text, data) = message_of_len(len);
        self.a.write(&frame(FIN, 0, TEXT, &text), cuts).await?;
        self.relayed(&data).await
    }
}

/// Runs `cases` concurrently; fails naming every case that failed, and why.
async fn all<F>(cases: impl IntoIterator<Item = (String, F)>) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    let (names, runs): (Vec<String>, Vec<F>) = cases.into_iter().unzip();
    let results = join_all(runs).await;
    let failed: Vec<String> = names
        .iter()
        .zip(results)
        .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e:#}")))
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {} cases failed:\n  {}",
        failed.len(),
        names.len(),
        failed.join("\n  ")
    );
    Ok(())
}

/// Each case, on a connection of its own: a ping, then the case's bytes, in one write; the
/// relay must answer the ping, then fail the connection with close `code`.
async fn each_fails<N: Into<String>>(
    addr: SocketAddr,
    code: u16,
    cases: impl IntoIterator<Item = (N, Vec<u8>)>,
) -> Result<()> {
    all(cases.into_iter().map(|(name, bytes)| {
        let run = async move {
            let mut client = Raw::connect(addr).await?;
            let bytes = [frame(FIN, 0, PING, b"first"), bytes].concat();
            client.write(&bytes, &[]).await?;
            client.expect_pong(b"first").await?;
            client.expect_close(&[code]).await
        };
        (name.into(), run)
    }))
    .await
}

// ---------------------------------------------------------------------------------------
// The suite.

/// The client's own frame codec, against RFC 6455's examples (section 5.7) byte for byte.
mod client_codec {
    use super::*;

    const KEY: [u8; 4] = MASK;

    #[test]
    fn builds_the_rfcs_example_frames() {
        let hello = b"Hello";
        assert_eq!(
            encode(None, FIN, 0, TEXT, hello),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            encode(Some(KEY), FIN, 0, TEXT, hello),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(
            encode(None, MORE, 0, TEXT, b"Hel"),
            [0x01, 0x03, 0x48, 0x65, 0x6c]
        );
        assert_eq!(
            encode(None, FIN, 0, CONTINUATION, b"lo"),
            [0x80, 0x02, 0x6c, 0x6f]
        );
        assert_eq!(
            encode(None, FIN, 0, PING, hello),
            [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            encode(Some(KEY), FIN, 0, PONG, hello),
            [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(
            encode(None, FIN, 0, BINARY, &[0; 256])[..4],
            [0x82, 0x7e, 0x01, 0x00]
        );
        assert_eq!(
            encode(None, FIN, 0, BINARY, &[0; 65536])[..10],
            [0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]
        );
        assert_eq!(header_size(125), 6);
        assert_eq!(header_size(126), 8);
        assert_eq!(header_size(65536), 14);
    }

    #[test]
    fn reads_the_rfcs_example_headers() {
        // FIN, opcode, mask key, payload length, header size.
        type Fields = (bool, u8, Option<[u8; 4]>, u64, usize);
        let cases: [(&[u8], Fields); 5] = [
            (&[0x81, 0x05], (FIN, TEXT, None, 5, 2)),
            (
                &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d],
                (FIN, TEXT, Some(KEY), 5, 6),
            ),
            (&[0x01, 0x03], (MORE, TEXT, None, 3, 2)),
            (&[0x82, 0x7e, 0x01, 0x00], (FIN, BINARY, None, 256, 4)),
            (
                &[0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00],
                (FIN, BINARY, None, 65536, 10),
            ),
        ];
        for (bytes, fields) in cases {
            let head = FrameHead::parse(bytes).expect("a whole header");
            assert_eq!(head.rsv, 0);
            assert_eq!(
                (head.fin, head.opcode, head.mask, head.len, head.size),
                fields,
                "{bytes:x?}"
            );
            assert_eq!(head.shortest(), head.size);
            assert!(FrameHead::parse(&bytes[..bytes.len() - 1]).is_none());
        }
        let long = FrameHead::parse(&[0x81, 0x7e, 0x00, 0x05]).expect("a whole header");
        assert_eq!((long.len, long.size, long.shortest()), (5, 4, 2));
        assert!(holds_close(
            &[
                encode(Some(KEY), FIN, 0, TEXT, b"x"),
                frame(FIN, 0, CLOSE, &[])
            ]
            .concat()
        ));
        assert!(!holds_close(&frame(FIN, 0, PING, b"x")));
    }
}

/// RFC 6455 section 4: the opening handshake.
mod handshake {
    use super::*;

    /// RFC 6455's example key.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[tokio::test]
    async fn a_valid_upgrade_gets_101_with_the_accept_key() -> Result<()> {
        ensure!(
            accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "RFC 6455's own example"
        );
        let relay = Relay::default().await?;
        let addr = relay.addr;
        let spellings = [
            ("as browsers send it", upgrade_headers("{key}")),
            (
                "lower-case names, Connection: keep-alive, Upgrade",
                "upgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
                 sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n"
                    .to_owned(),
            ),
        ];
        all(spellings.map(|(name, headers)| {
            let run = async move {
                let key = new_key();
                let request = get_ws(addr, &headers.replace("{key}", &key));
                let (head, stream, read) = handshake(addr, &request).await?;
                head.check_accepts(&key)?;
                let mut client = Raw::new(stream, read);
                client.send(PING, b"open?").await?;
                client.expect_pong(b"open?").await
            };
            (name.to_owned(), run)
        }))
        .await
    }

    #[tokio::test]
    async fn a_version_other_than_13_gets_400_naming_13() -> Result<()> {
        let relay = Relay::default().await?;
        let addr = relay.addr;
        let common =
            format!("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n");
        let cases = [
            ("version 8", format!("{common}Sec-WebSocket-Version: 8\r\n")),
            ("no version", common.clone()),
        ];
        all(cases.map(|(name, headers)| {
            let run = async move {
                let (head, _, _) = handshake(addr, &get_ws(addr, &headers)).await?;
                ensure!(head.status == 400, "expected 400, got {head:?}");
                ensure!(
                    head.lists("sec-websocket-version", "13"),
                    "no Sec-WebSocket-Version: 13 in {head:?}"
                );
                Ok(())
            };
            (name.to_owned(), run)
        }))
        .await
    }

    #[tokio::test]
    async fn an_upgrade_missing_what_it_needs_gets_400() -> Result<()> {
        let relay = Relay::default().await?;
        let addr = relay.addr;
        let version = "Sec-WebSocket-Version: 13\r\n";
        let cases = [
            (
                "no Sec-WebSocket-Key",
                format!("Upgrade: websocket\r\nConnection: Upgrade\r\n{version}"),
            ),
            (
                "no Upgrade",
                format!("Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n{version}"),
            ),
            (
                "no Connection: Upgrade",
                format!(
                    "Upgrade: websocket\r\nConnection: keep-alive\r\n\
                     Sec-WebSocket-Key: {KEY}\r\n{version}"
                ),
            ),
            (
                "a key that is not 16 bytes in base64",
                format!(
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: c2hvcnQ=\r\n{version}"
                ),
            ),
        ];
        all(cases.map(|(name, headers)| {
            let run = async move {
                let (head, _, _) = handshake(addr, &get_ws(addr, &headers)).await?;
                ensure!(head.status == 400, "expected 400, got {head:?}");
                Ok(())
            };
            (name.to_owned(), run)
        }))
        .await
    }
}

/// Autobahn 1: text of every length encoding, whole and split across TCP writes.
mod framing {
    use super::*;

    /// Past the 16-bit length form, and past the default limit.
    const BIG: usize = 128 * 1024;

    async fn big_relay() -> Result<Relay> {
        Relay::start(Config {
            max_frame_bytes: BIG,
            ..relay_config()
        })
        .await
    }

    #[tokio::test]
    async fn text_of_every_length_encoding_arrives_whole() -> Result<()> {
        let relay = big_relay().await?;
        let mut pair = Pair::new(relay.addr).await?;
        for len in (0..=127).chain([65535, 65536, BIG]) {
            let context = || format!("{len} bytes");
            pair.deliver(len, &[]).await.with_context(context)?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_frame_split_across_tcp_writes_arrives_whole() -> Result<()> {
        let relay = big_relay().await?;
        let mut pair = Pair::new(relay.addr).await?;
        for len in [EMPTY_MESSAGE.len(), 125, 126, 65535, 65536] {
            let header = header_size(len);
            let total = header + len;
            // After the first byte, inside the 16- or 64-bit length, inside the mask, at the
            // end of the header, inside the payload.
            let mut cuts = vec![1, 2, 3, 6, header - 4, header - 2, header, header + 1];
            cuts.extend([header + len / 2, total - 1]);
            cuts.retain(|&cut| 0 < cut && cut < total);
            cuts.sort_unstable();
            cuts.dedup();
            for &cut in &cuts {
                let context = || format!("{len} bytes cut at {cut}");
                pair.deliver(len, &[cut]).await.with_context(context)?;
            }
            let context = || format!("{len} bytes cut at {cuts:?}");
            pair.deliver(len, &cuts).await.with_context(context)?;
        }
        for len in [EMPTY_MESSAGE.len(), 126] {
            let every_byte: Vec<usize> = (1..header_size(len) + len).collect();
            let context = || format!("{len} bytes written a byte at a time");
            pair.deliver(len, &every_byte).await.with_context(context)?;
        }
        Ok(())
    }
}

/// Autobahn 2: pings and pongs.
mod ping_pong {
    use super::*;

    #[tokio::test]
    async fn a_ping_is_answered_with_a_pong_carrying_its_payload() -> Result<()> {
        let relay = relay().await?;
        let mut client = Raw::connect(relay.addr).await?;
        for len in [0, 1, 125] {
            // Bytes, not text: a ping carries any payload.
            let payload: Vec<u8> = (0..len).map(|i| (0x80 + 7 * i) as u8).collect();
            client.send(PING, &payload).await?;
            let context = || format!("a ping of {len} bytes");
            client.expect_pong(&payload).await.with_context(context)?;
        }
        let payload = [0xfe; 125];
        let ping = frame(FIN, 0, PING, &payload);
        let every_byte: Vec<usize> = (1..ping.len()).collect();
        client.write(&ping, &every_byte).await?;
        let context = "a ping of 125 bytes written a byte at a time";
        client.expect_pong(&payload).await.context(context)
    }

    #[tokio::test]
    async fn a_ping_over_125_bytes_fails_with_1002() -> Result<()> {
        let relay = relay().await?;
        let ping = frame(FIN, 0, PING, &[b'p'; 126]);
        each_fails(relay.addr, 1002, [("126 bytes", ping)]).await
    }

    #[tokio::test]
    async fn an_unsolicited_pong_is_ignored() -> Result<()> {
        let relay = relay().await?;
        let mut client = Raw::connect(relay.addr).await?;
        client.send(PONG, b"unsolicited").await?;
        client.send(PONG, b"").await?;
        client.send(PING, b"after").await?;
        client.expect_pong(b"after").await
    }

    #[tokio::test]
    async fn ten_pings_in_a_row_are_all_answered_in_order() -> Result<()> {
        let relay = relay().await?;
        let mut client = Raw::connect(relay.addr).await?;
        let payloads: Vec<String> = (0..10).map(|i| format!("ping {i}")).collect();
        let pings: Vec<u8> = payloads
            .iter()
            .flat_map(|p| frame(FIN, 0, PING, p.as_bytes()))
            .collect();
        let every_byte: Vec<usize> = (1..pings.len()).collect();
        for cuts in [&[][..], &every_byte[..]] {
            client.write(&pings, cuts).await?;
            for payload in &payloads {
                let context = || format!("cut at {} points", cuts.len());
                client
                    .expect_pong(payload.as_bytes())
                    .await
                    .with_context(context)?;
            }
        }
        Ok(())
    }
}

/// Autobahn 3: reserved bits.
mod reserved_bits {
    use super::*;

    #[tokio::test]
    async fn any_reserved_bit_fails_with_1002() -> Result<()> {
        let relay = relay().await?;
        let text = message(&json!("reserved bits"));
        let cases: Vec<(u8, u8, Vec<u8>)> = vec![
            (0b100, TEXT, text.clone()),
            (0b010, TEXT, text.clone()),
            (0b001, TEXT, text.clone()),
            (0b110, TEXT, text.clone()),
            (0b101, BINARY, vec![0, 1, 2]),
            (0b011, PING, b"ping".to_vec()),
            (0b100, PONG, b"pong".to_vec()),
            (0b111, CLOSE, close_payload(1000, b"")),
        ];
        let mut cases: Vec<_> = cases
            .into_iter()
            .map(|(rsv, op, payload)| {
                let name = format!("RSV {rsv:03b} on opcode {op:#x}");
                (name, frame(FIN, rsv, op, &payload))
            })
            .collect();
        let continued = [
            frame(MORE, 0, TEXT, b"{\"type\":"),
            frame(FIN, 0b100, CONTINUATION, b"\"leave\"}"),
        ];
        cases.push(("RSV 100 on a continuation".to_owned(), continued.concat()));
        each_fails(relay.addr, 1002, cases).await
    }
}

/// Autobahn 4: opcodes.
mod opcodes {
    use super::*;

    #[tokio::test]
    async fn a_reserved_opcode_fails_with_1002() -> Result<()> {
        let relay = relay().await?;
        let cases = [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]
            .into_iter()
            .flat_map(|op| {
                [&b""[..], &b"reserved"[..]].map(|payload| {
                    let name = format!("opcode {op:#x} with {} payload bytes", payload.len());
                    (name, frame(FIN, 0, op, payload))
                })
            });
        each_fails(relay.addr, 1002, cases).await
    }
}

/// Autobahn 5: fragmentation.
mod fragmentation {
    use super::*;

    #[tokio::test]
    async fn a_message_in_fragments_arrives_whole() -> Result<()> {
        let relay = relay().await?;
        let mut pair = Pair::new(relay.addr).await?;
        let data = json!("in fragments ".repeat(8));
        let text = message(&data);
        let n = text.len();
        let splits: [(&str, Vec<usize>); 6] = [
            ("2 fragments", vec![n / 2]),
            ("3 fragments", vec![n / 3, 2 * n / 3]),
            ("7 fragments", (1..7).map(|i| i * n / 7).collect()),
            ("a fragment per byte", (1..n).collect()),
            ("empty first and last fragments", vec![0, n]),
            ("empty fragments throughout", vec![0, 0, n / 2, n / 2, n, n]),
        ];
        for (name, cuts) in &splits {
            let (bytes, starts) = fragmented(TEXT, &text, cuts);
            pair.a.write(&bytes, &[]).await?;
            pair.relayed(&data).await.context(*name)?;
            pair.a.write(&bytes, &starts).await?;
            let context = || format!("{name}, a TCP write each");
            pair.relayed(&data).await.with_context(context)?;
        }
        // A fragmented binary message is one message: refused once.
        let (binary, _) = fragmented(BINARY, &[1, 2, 3, 4], &[1, 2]);
        pair.a.write(&binary, &[]).await?;
        pair.a.expect_error(ErrorCode::BinaryUnsupported).await?;
        pair.a.send(PING, b"only once").await?;
        pair.a.expect_pong(b"only once").await
    }

    #[tokio::test]
    async fn pings_between_fragments_are_answered_before_the_message_completes() -> Result<()> {
        let relay = relay().await?;
        let mut pair = Pair::new(relay.addr).await?;
        let data = json!("three fragments with pings between them");
        let text = message(&data);
        let third = text.len() / 3;
        let first = [
            frame(MORE, 0, TEXT, &text[..third]),
            frame(FIN, 0, PING, b"one"),
        ];
        pair.a.write(&first.concat(), &[]).await?;
        pair.a.expect_pong(b"one").await?;
        let second = [
            frame(MORE, 0, CONTINUATION, &text[third..2 * third]),
            frame(FIN, 0, PONG, b"unsolicited"),
            frame(FIN, 0, PING, b"two"),
        ];
        pair.a.write(&second.concat(), &[]).await?;
        pair.a.expect_pong(b"two").await?;
        let last = frame(FIN, 0, CONTINUATION, &text[2 * third..]);
        pair.a.write(&last, &[]).await?;
        pair.relayed(&data).await
    }

    #[tokio::test]
    async fn a_continuation_of_nothing_fails_with_1002() -> Result<()> {
        let relay = relay().await?;
        let cont = |fin, payload: &[u8]| frame(fin, 0, CONTINUATION, payload);
        let cases = [
            ("a final continuation", cont(FIN, b"orphan")),
            ("an unfinished continuation", cont(MORE, b"orphan")),
            (
                "continuations to the end",
                [cont(MORE, b"or"), cont(FIN, b"phan")].concat(),
            ),
        ];
        each_fails(relay.addr, 1002, cases).await?;
        // After a whole message: the message is refused (binary), then the continuation
        // fails the connection.
        let mut client = Raw::connect(relay.addr).await?;
        let bytes = [frame(FIN, 0, BINARY, b"whole"), cont(FIN, b"more")];
        client.write(&bytes.concat(), &[]).await?;
        client.expect_error(ErrorCode::BinaryUnsupported).await?;
        let context = "a continuation after a whole message";
        client.expect_close(&[1002]).await.context(context)
    }

    #[tokio::test]
    async fn a_new_message_inside_a_fragmented_one_fails_with_1002() -> Result<()> {
        let relay = relay().await?;
        let start = frame(MORE, 0, TEXT, br#"{"type":"#);
        let cases = [
            ("text in text", frame(FIN, 0, TEXT, br#""leave"}"#)),
            ("binary in text", frame(FIN, 0, BINARY, b"bytes")),
            ("unfinished text in text", frame(MORE, 0, TEXT, b"\"le")),
            (
                "text after a continuation",
                [
                    frame(MORE, 0, CONTINUATION, b"\"le"),
                    frame(FIN, 0, TEXT, b"ave\"}"),
                ]
                .concat(),
            ),
        ];
        let cases = cases.map(|(name, rest)| (name, [&start[..], &rest].concat()));
        each_fails(relay.addr, 1002, cases).await
    }

    #[tokio::test]
    async fn a_fragmented_control_frame_fails_with_1002() -> Result<()> {
        let relay = relay().await?;
        let end = frame(FIN, 0, CONTINUATION, b"rest");
        let close = close_payload(1000, b"");
        let cases = [
            ("ping", frame(MORE, 0, PING, b"ping")),
            ("pong", frame(MORE, 0, PONG, b"pong")),
            ("close", frame(MORE, 0, CLOSE, &close)),
            (
                "ping inside a text message",
                [frame(MORE, 0, TEXT, b"{"), frame(MORE, 0, PING, b"ping")].concat(),
            ),
        ];
        let cases = cases.map(|(name, bytes)| (name, [&bytes[..], &end].concat()));
        each_fails(relay.addr, 1002, cases).await
    }
}

/// Autobahn 6: UTF-8 handling.
mod utf8 {
    use super::*;

    /// Characters of every encoded length, at the edges of each.
    const VALID: &str = "κόσμε ½ € 𝄞 \u{7f}\u{80}\u{7ff}\u{800}\u{fffd}\u{ffff}\u{10000}\u{10ffff}";

    /// A `message` whose data holds `bytes`, then more text.
    fn text_with(bytes: &[u8]) -> Vec<u8> {
        [TEXT_BEFORE, bytes, br#" and after"}"#].concat()
    }

    const TEXT_BEFORE: &[u8] = br#"{"type":"message","data":"before "#;

    #[tokio::test]
    async fn valid_text_arrives_whole_however_it_is_split() -> Result<()> {
        let relay = relay().await?;
        let mut pair = Pair::new(relay.addr).await?;
        let data = json!(VALID);
        let text = message(&data);
        pair.a.send(TEXT, &text).await?;
        pair.relayed(&data).await.context("whole")?;
        let whole = frame(FIN, 0, TEXT, &text);
        let every_byte: Vec<usize> = (1..whole.len()).collect();
        pair.a.write(&whole, &every_byte).await?;
        pair.relayed(&data).await.context("a TCP write per byte")?;
        // Two fragments cut at every byte: most cuts split a character.
        for cut in 1..text.len() {
            pair.a
                .write(&fragmented(TEXT, &text, &[cut]).0, &[])
                .await?;
            let context = || format!("two fragments cut at {cut}");
            pair.relayed(&data).await.with_context(context)?;
        }
        let every_byte: Vec<usize> = (1..text.len()).collect();
        pair.a
            .write(&fragmented(TEXT, &text, &every_byte).0, &[])
            .await?;
        pair.relayed(&data).await.context("a fragment per byte")
    }

    #[tokio::test]
    async fn invalid_text_fails_with_1007() -> Result<()> {
        let relay = relay().await?;
        let mut cases = Vec::new();
        for (name, bytes) in INVALID_UTF8 {
            let text = text_with(bytes);
            let whole = frame(FIN, 0, TEXT, &text);
            cases.push((format!("{name} in one frame"), whole));
            // Cut inside the sequence when it has more than one byte.
            let cut = TEXT_BEFORE.len() + bytes.len() / 2;
            let (split, _) = fragmented(TEXT, &text, &[cut]);
            cases.push((format!("{name} across two fragments"), split));
        }
        let cut_short = frame(FIN, 0, TEXT, b"ends inside \xe2\x82");
        cases.push(("text ending inside a character".to_owned(), cut_short));
        each_fails(relay.addr, 1007, cases).await
    }

    /// Fail fast: a message already invalid is failed at once, without its other fragments.
    #[tokio::test]
    async fn invalid_text_in_an_unfinished_message_fails_at_once() -> Result<()> {
        let relay = relay().await?;
        let mut cases = Vec::new();
        for (name, bytes) in INVALID_UTF8 {
            let first = frame(MORE, 0, TEXT, &text_with(bytes));
            cases.push((format!("{name} in the first fragment"), first));
            let rest = &text_with(bytes)[TEXT_BEFORE.len()..];
            let middle = [
                frame(MORE, 0, TEXT, TEXT_BEFORE),
                frame(MORE, 0, CONTINUATION, rest),
            ];
            cases.push((format!("{name} in a middle fragment"), middle.concat()));
        }
        // Cut short by the fragment's end, but no continuation can make them UTF-8.
        let prefixes: [(&str, &[u8]); 5] = [
            ("0xC0", b"\xc0"),
            ("0xF5", b"\xf5"),
            ("an overlong 3-byte prefix", b"\xe0\x80"),
            ("a surrogate's prefix", b"\xed\xa0"),
            ("a prefix past U+10FFFF", b"\xf4\x90"),
        ];
        for (name, bytes) in prefixes {
            let first = frame(MORE, 0, TEXT, &[TEXT_BEFORE, bytes].concat());
            cases.push((format!("a first fragment ending in {name}"), first));
        }
        each_fails(relay.addr, 1007, cases).await
    }
}

/// Autobahn 7: the closing handshake.
mod close {
    use super::*;

    #[tokio::test]
    async fn a_close_is_answered_then_tcp_closed_at_once() -> Result<()> {
        let relay = relay().await?;
        let addr = relay.addr;
        let mut cases = vec![("no payload".to_owned(), Vec::new(), vec![1000])];
        for code in VALID_CODES {
            // The relay echoes a code it may send, else says 1000.
            cases.push((
                format!("code {code}"),
                close_payload(code, b""),
                vec![code, 1000],
            ));
        }
        let reasons = [
            (1000, "a 123-byte reason", "r".repeat(123)),
            (
                4999,
                "a 123-byte reason in 3-byte characters",
                "€".repeat(41),
            ),
            (1001, "a short reason", "bye".to_owned()),
        ];
        for (code, name, reason) in reasons {
            let payload = close_payload(code, reason.as_bytes());
            cases.push((
                format!("code {code} with {name}"),
                payload,
                vec![code, 1000],
            ));
        }
        all(cases.into_iter().map(|(name, payload, codes)| {
            let run = async move {
                let mut client = Raw::connect(addr).await?;
                client.send(CLOSE, &payload).await?;
                client.expect_close(&codes).await
            };
            (name, run)
        }))
        .await
    }

    #[tokio::test]
    async fn a_close_code_that_may_not_be_sent_fails_with_1002() -> Result<()> {
        let relay = relay().await?;
        let cases = FORBIDDEN_CODES.map(|code| {
            let close = frame(FIN, 0, CLOSE, &close_payload(code, b""));
            (format!("code {code}"), close)
        });
        each_fails(relay.addr, 1002, cases).await
    }

    #[tokio::test]
    async fn a_malformed_close_payload_fails_the_connection() -> Result<()> {
        let relay = relay().await?;
        let close = |payload: &[u8]| frame(FIN, 0, CLOSE, payload);
        let malformed = [
            ("one byte", close(&[0x03])),
            (
                "a 124-byte reason",
                close(&close_payload(1000, &[b'r'; 124])),
            ),
        ];
        let not_utf8 = [
            ("the reason 0xFF", close(&close_payload(1000, b"\xff"))),
            ("a surrogate", close(&close_payload(1000, b"\xed\xa0\x80"))),
            (
                "a cut character",
                close(&close_payload(1000, &"κόσμε".as_bytes()[..9])),
            ),
        ];
        let (malformed, not_utf8) = tokio::join!(
            each_fails(relay.addr, 1002, malformed),
            each_fails(relay.addr, 1007, not_utf8)
        );
        match (malformed, not_utf8) {
            (Err(a), Err(b)) => bail!("{a:#}\n{b:#}"),
            (a, b) => a.and(b),
        }
    }

    #[tokio::test]
    async fn nothing_a_client_sends_after_its_close_is_handled() -> Result<()> {
        let relay = relay().await?;
        let close = frame(FIN, 0, CLOSE, &close_payload(1000, b""));
        // A ping after the close gets no pong.
        let mut client = Raw::connect(relay.addr).await?;
        let late_ping = frame(FIN, 0, PING, b"too late");
        client
            .write(&[&close[..], &late_ping].concat(), &[])
            .await?;
        client.expect_close(&[1000]).await?;
        // A message after the close is not relayed: B hears that A left, and nothing more.
        let mut pair = Pair::new(relay.addr).await?;
        let late_message = frame(FIN, 0, TEXT, &message(&json!("too late")));
        pair.a
            .write(&[&close[..], &late_message].concat(), &[])
            .await?;
        pair.a.expect_close(&[1000]).await?;
        pair.a_left().await
    }
}

/// Like Autobahn 9's large messages: what is over the relay's size limit.
mod size_limit {
    use super::*;

    #[tokio::test]
    async fn a_message_at_the_limit_arrives_and_a_larger_one_fails_with_1009() -> Result<()> {
        let relay = relay().await?;
        let max = relay_config().max_frame_bytes;
        let mut pair = Pair::new(relay.addr).await?;
        let (text, data) = message_of_len(max);
        pair.a.send(TEXT, &text).await?;
        pair.relayed(&data).await.context("at the limit, whole")?;
        let (bytes, _) = fragmented(TEXT, &text, &[max / 3, 2 * max / 3]);
        pair.a.write(&bytes, &[]).await?;
        pair.relayed(&data)
            .await
            .context("at the limit, in fragments")?;

        let (over, _) = message_of_len(max + 1);
        let small_pieces: Vec<usize> = (1..=max / 1000).map(|i| i * 1000).collect();
        let cases = [
            ("one frame", frame(FIN, 0, TEXT, &over)),
            ("two fragments", fragmented(TEXT, &over, &[max / 2]).0),
            (
                "1000-byte fragments",
                fragmented(TEXT, &over, &small_pieces).0,
            ),
            ("one binary frame", frame(FIN, 0, BINARY, &vec![0; max + 1])),
        ];
        each_fails(relay.addr, 1009, cases).await
    }
}

/// RFC 6455 5.1: a server MUST close a connection on a frame that is not masked.
mod masking {
    use super::*;

    #[tokio::test]
    async fn an_unmasked_frame_fails_with_1002() -> Result<()> {
        let relay = relay().await?;
        let unmasked = |fin, op, payload: &[u8]| encode(None, fin, 0, op, payload);
        let cases = [
            ("text", unmasked(FIN, TEXT, &message(&json!("bare")))),
            ("ping", unmasked(FIN, PING, b"bare")),
            ("close", unmasked(FIN, CLOSE, &close_payload(1000, b""))),
            (
                "a continuation",
                [
                    frame(MORE, 0, TEXT, b"{"),
                    unmasked(FIN, CONTINUATION, b"}"),
                ]
                .concat(),
            ),
        ];
        each_fails(relay.addr, 1002, cases).await
    }
}

/// Once the relay has failed a connection it handles nothing more the client sent.
mod failure {
    use super::*;

    #[tokio::test]
    async fn nothing_is_relayed_after_the_relay_fails_a_connection() -> Result<()> {
        let relay = relay().await?;
        let mut pair = Pair::new(relay.addr).await?;
        let first = json!("before the broken frame");
        let frames = [
            frame(FIN, 0, TEXT, &message(&first)),
            frame(FIN, 0b100, TEXT, &message(&json!("RSV1 set"))),
            frame(FIN, 0, TEXT, &message(&json!("after the broken frame"))),
        ];
        pair.a.write(&frames.concat(), &[]).await?;
        pair.relayed(&first).await?;
        pair.a.expect_close(&[1002]).await?;
        pair.a_left().await
    }

    /// RFC 6455 7.1.7: a server failing a connection closes TCP, and does not process even
    /// a close frame answering its own; so a client that does not answer does not keep it.
    #[tokio::test]
    async fn a_failed_connection_ends_without_waiting_for_the_clients_answer() -> Result<()> {
        let relay = relay().await?;
        let mut client = Raw::connect(relay.addr).await?;
        client.write(&frame(FIN, 0b100, PING, b"RSV1"), &[]).await?;
        let code = client.close_frame(&[1002]).await?;
        client.expect_end(code).await
    }
}
