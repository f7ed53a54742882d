//! WebSocket framing (RFC 6455), the server's side: parsing what clients send and framing
//! what the relay writes.
//!
//! The relay frames its own bytes rather than hand the socket to a general WebSocket
//! library so that any connection's task can write a frame straight into another
//! connection's socket (see [`crate::outbox`]), and so that a read's worth of frames is
//! unmasked and handled in place, without a copy or an allocation per frame.

use std::io;

use tokio::io::Interest;

use crate::spare;
use crate::stream::Stream;

/// Frame opcodes.
pub mod opcode {
    /// More of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// UTF-8 text.
    pub const TEXT: u8 = 0x1;
    /// Bytes.
    pub const BINARY: u8 = 0x2;
    /// Closing handshake.
    pub const CLOSE: u8 = 0x8;
    /// Liveness probe; answered with a pong carrying the same bytes.
    pub const PING: u8 = 0x9;
    /// Answer to a ping.
    pub const PONG: u8 = 0xA;
}

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A complete text message.
    Text(&'a str),
    /// A complete binary message (the relay refuses them, so their bytes are not kept).
    Binary,
    /// A ping and its payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// The client is closing, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why a client's bytes are not a WebSocket stream the relay accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes break RFC 6455.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A message over the size limit.
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    /// A text message (or close reason) that is not UTF-8.
    #[error("text is not UTF-8")]
    NotUtf8,
}

impl FrameError {
    /// The close code that tells the client.
    pub fn close_code(self) -> u16 {
        match self {
            Self::Protocol(_) => 1002,
            Self::TooBig(_) => 1009,
            Self::NotUtf8 => 1007,
        }
    }
}

/// A frame header (RFC 6455, section 5.2): the one codec for frames in both directions,
/// shared by the relay, its tests, the benchmark's clients and the fuzz targets.
///
/// `parse` reads only the header's structure; what the relay accepts from a client (a
/// mask, no reserved bits, short whole control frames, the size limit) is the
/// [`Reader`]'s to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// The three reserved bits, RSV1 as `0b100` down to RSV3 as `0b001`.
    pub rsv: u8,
    /// One of [`opcode`]'s, or a reserved one (4 bits).
    pub opcode: u8,
    /// The masking key: clients mask every frame, servers none.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

impl Header {
    /// An unmasked, final frame's header: what a server sends.
    pub fn server(opcode: u8, len: usize) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            len: len as u64,
        }
    }

    /// Parses the header at the start of `bytes`: `Ok(None)` while it is incomplete, else
    /// the header and its size. A 64-bit length with its top bit set is an error.
    pub fn parse(bytes: &[u8]) -> Result<Option<(Self, usize)>, FrameError> {
        let Some(&[first, second]) = bytes.get(..2) else {
            return Ok(None);
        };
        let (len, at) = match second & 0x7f {
            126 => match bytes.get(2..4) {
                Some(&[high, low]) => (u64::from(u16::from_be_bytes([high, low])), 4),
                _ => return Ok(None),
            },
            127 => match bytes.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) if b[0] & 0x80 != 0 => {
                    return Err(FrameError::Protocol("a 64-bit length with its top bit set"))
                }
                Some(b) => (u64::from_be_bytes(b), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        let (mask, size) = if second & 0x80 == 0 {
            (None, at)
        } else {
            match bytes
                .get(at..at + 4)
                .and_then(|m| <[u8; 4]>::try_from(m).ok())
            {
                Some(mask) => (Some(mask), at + 4),
                None => return Ok(None),
            }
        };
        let header = Self {
            fin: first & 0x80 != 0,
            rsv: (first >> 4) & 0x7,
            opcode: first & 0x0f,
            mask,
            len,
        };
        Ok(Some((header, size)))
    }

    /// Appends the header, with the shortest length encoding and the mask key if any.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.rsv & 0x7) << 4 | self.opcode & 0x0f);
        let masked = if self.mask.is_some() { 0x80 } else { 0 };
        match self.len {
            len @ 0..=125 => out.push(masked | len as u8),
            len @ 126..=0xffff => {
                out.push(masked | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(masked | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(mask) = self.mask {
            out.extend_from_slice(&mask);
        }
    }

    /// The bytes [`Header::write`] writes.
    pub fn size(&self) -> usize {
        let length = match self.len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + length + if self.mask.is_some() { 4 } else { 0 }
    }

    /// A control frame: close, ping or pong (or a reserved control opcode).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Free room a read gets at least (a buffer from the spare stock has more): several
/// signaling frames.
const READ_CHUNK: usize = 1024;

/// Reads client frames from a socket's bytes.
#[derive(Debug)]
pub struct Reader {
    /// Bytes read; `buf[start..]` is not parsed yet.
    buf: Vec<u8>,
    start: usize,
    max_message: usize,
    /// A fragmented message still arriving.
    partial: Option<Partial>,
    /// The last fragmented message completed, lent out by [`Reader::next_message`].
    assembled: Vec<u8>,
}

/// A fragmented message so far.
#[derive(Debug)]
struct Partial {
    /// [`opcode::TEXT`] or [`opcode::BINARY`].
    kind: u8,
    bytes: Vec<u8>,
    /// How much of a text's bytes is known to be whole, valid UTF-8: each fragment is
    /// checked as it comes, so a bad one fails the message at once, and no byte twice.
    checked: usize,
}

impl Partial {
    fn new(kind: u8) -> Self {
        Self {
            kind,
            bytes: Vec::new(),
            checked: 0,
        }
    }

    /// Adds a fragment; a text must stay valid UTF-8 so far (a character may be cut at
    /// the end, to be completed by the next fragment).
    fn extend(&mut self, fragment: &[u8]) -> Result<(), FrameError> {
        self.bytes.extend_from_slice(fragment);
        if self.kind == opcode::TEXT {
            match std::str::from_utf8(&self.bytes[self.checked..]) {
                Ok(_) => self.checked = self.bytes.len(),
                Err(cut) if cut.error_len().is_none() => self.checked += cut.valid_up_to(),
                Err(_) => return Err(FrameError::NotUtf8),
            }
        }
        Ok(())
    }
}

/// One parsed, unmasked frame; `payload` indexes the reader's buffer.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: std::ops::Range<usize>,
}

impl Reader {
    /// A reader of messages up to `max_message` bytes, starting with bytes the HTTP
    /// upgrade already read.
    pub fn new(max_message: usize, early: Vec<u8>) -> Self {
        Self {
            buf: early,
            start: 0,
            max_message,
            partial: None,
            assembled: Vec::new(),
        }
    }

    /// Reads what `socket` has without waiting; `Ok(0)` means the client closed it.
    pub fn read_from(&mut self, socket: &Stream) -> io::Result<usize> {
        self.read_from_then(socket, || {})
    }

    /// [`Reader::read_from`], running `after_read` once the read has returned and before
    /// the socket's readiness may be dropped: where a test makes data arrive at the worst
    /// moment.
    fn read_from_then(&mut self, socket: &Stream, after_read: impl FnOnce()) -> io::Result<usize> {
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.start = 0;
        if self.buf.capacity() == 0 {
            self.buf = spare::take();
        }
        self.buf.reserve(READ_CHUNK);
        let room = self.buf.capacity() - self.buf.len();
        let buf = &mut self.buf;
        let mut read = 0;
        // A short read took everything the socket had, so its readiness is dropped now
        // rather than learnt from one more read that would block (a syscall per wakeup),
        // as tokio's own `poll_read` does. The read runs *inside* `try_io`, which notes the
        // reactor's latest readiness event before calling it and then clears that event
        // only. Every interleaving:
        // - bytes that arrived before the event was noted: the read takes them (it was
        //   short, so it emptied the socket);
        // - bytes that arrive after it was noted, during or after the read: their event
        //   is recorded by the reactor after the noted one, so the clear either fails (it
        //   names an older event) or comes first and the new event sets readiness again;
        //   either way the task is woken for them.
        // Noting the event only after the read returned, as this once did, let the event
        // of bytes that arrived in between be cleared with nothing to wake the task for
        // them: they waited for the heartbeat.
        let outcome = socket.try_io(Interest::READABLE, || {
            read = socket.try_read_buf(buf)?;
            after_read();
            if read > 0 && read < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match outcome {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock || read == 0 => Err(error),
            _ => Ok(read),
        }
    }

    /// Forgets every byte read so far.
    pub fn discard(&mut self) {
        self.start = self.buf.len();
    }

    /// Gives back the buffer once everything read is handled: most connections are idle
    /// most of the time, and an empty buffer costs nothing.
    pub fn trim(&mut self) {
        if self.start == self.buf.len() {
            spare::give(std::mem::take(&mut self.buf));
            self.start = 0;
        }
        if self.assembled.capacity() > 0 {
            self.assembled = Vec::new();
        }
    }

    /// The next complete message or control frame among the bytes read, if there is one.
    pub fn next_message(&mut self) -> Result<Option<Incoming<'_>>, FrameError> {
        loop {
            let Some(frame) = self.parse()? else {
                return Ok(None);
            };
            match frame.opcode {
                opcode::CLOSE | opcode::PING | opcode::PONG => {
                    let payload = &self.buf[frame.payload];
                    return Ok(Some(match frame.opcode {
                        opcode::PING => Incoming::Ping(payload),
                        opcode::PONG => Incoming::Pong,
                        _ => Incoming::Close(close_code(payload)?),
                    }));
                }
                opcode::TEXT | opcode::BINARY => {
                    if self.partial.is_some() {
                        return Err(FrameError::Protocol(
                            "a new message inside a fragmented one",
                        ));
                    }
                    if !frame.fin {
                        let mut partial = Partial::new(frame.opcode);
                        partial.extend(&self.buf[frame.payload])?;
                        self.partial = Some(partial);
                        continue;
                    }
                    return message(frame.opcode, &self.buf[frame.payload]).map(Some);
                }
                opcode::CONTINUATION => {
                    let Some(partial) = &mut self.partial else {
                        return Err(FrameError::Protocol("a continuation with no message"));
                    };
                    if partial.bytes.len() + frame.payload.len() > self.max_message {
                        return Err(FrameError::TooBig(self.max_message));
                    }
                    partial.extend(&self.buf[frame.payload])?;
                    if !frame.fin {
                        continue;
                    }
                    let Some(Partial { kind, bytes, .. }) = self.partial.take() else {
                        continue;
                    };
                    self.assembled = bytes;
                    return message(kind, &self.assembled).map(Some);
                }
                _ => return Err(FrameError::Protocol("unknown opcode")),
            }
        }
    }

    /// Takes the next whole frame off the buffer and unmasks it in place.
    fn parse(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((header, size)) = Header::parse(&self.buf[self.start..])? else {
            return Ok(None);
        };
        if header.rsv != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let Some(mask) = header.mask else {
            return Err(FrameError::Protocol("client frames must be masked"));
        };
        if header.is_control() && (!header.fin || header.len > 125) {
            return Err(FrameError::Protocol("control frames are short and whole"));
        }
        let len = match usize::try_from(header.len) {
            Ok(len) if len <= self.max_message => len,
            _ => return Err(FrameError::TooBig(self.max_message)),
        };
        let begin = self.start + size;
        let end = begin + len;
        if self.buf.len() < end {
            // Room for the rest of a large frame, so it arrives in few reads.
            self.buf.reserve(end - self.buf.len());
            return Ok(None);
        }
        apply_mask(&mut self.buf[begin..end], mask);
        self.start = end;
        Ok(Some(Frame {
            fin: header.fin,
            opcode: header.opcode,
            payload: begin..end,
        }))
    }
}

/// A complete data message.
fn message(kind: u8, payload: &[u8]) -> Result<Incoming<'_>, FrameError> {
    if kind == opcode::BINARY {
        return Ok(Incoming::Binary);
    }
    std::str::from_utf8(payload)
        .map(Incoming::Text)
        .map_err(|_| FrameError::NotUtf8)
}

/// The status code of a close frame's payload, checking it is one that may be sent and
/// that its reason is UTF-8.
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("a close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code_may_be_sent(code) {
                return Err(FrameError::Protocol("a close code that may not be sent"));
            }
            std::str::from_utf8(reason).map_err(|_| FrameError::NotUtf8)?;
            Ok(Some(code))
        }
    }
}

/// Whether a close frame may carry `code` (RFC 6455, section 7.4, and the IANA registry):
/// the defined codes but 1004-1006 and 1015, which only name what an endpoint saw, and the
/// codes for libraries (3000-3999) and applications (4000-4999). Any other fails the
/// connection.
pub fn close_code_may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `payload` with `mask` (masking and unmasking are the same), in blocks the compiler
/// turns into vector XORs.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    const BLOCK: usize = 32;
    let wide: [u8; BLOCK] = std::array::from_fn(|i| mask[i % 4]);
    let mut blocks = payload.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (byte, m) in block.iter_mut().zip(wide) {
            *byte ^= m;
        }
    }
    for (byte, m) in blocks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Appends a whole, unmasked frame (servers do not mask) to `out`.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let header = Header::server(opcode, payload.len());
    out.reserve(header.size() + payload.len());
    header.write(out);
    out.extend_from_slice(payload);
}

/// The bytes of a frame the relay sends with a payload of `len` bytes.
pub fn frame_len(len: usize) -> usize {
    Header::server(opcode::TEXT, len).size() + len
}

/// The payload of a close frame.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let header = Header {
            fin: first & 0x80 != 0,
            rsv: (first >> 4) & 0x7,
            opcode: first & 0x0f,
            mask: Some(mask),
            len: payload.len() as u64,
        };
        let mut frame = Vec::new();
        header.write(&mut frame);
        let at = frame.len();
        frame.extend_from_slice(payload);
        apply_mask(&mut frame[at..], mask);
        frame
    }

    #[test]
    fn a_header_reads_back_what_it_wrote_in_the_shortest_form() {
        for len in [
            0,
            1,
            125,
            126,
            127,
            0xffff,
            0x10000,
            u64::from(u32::MAX) + 1,
        ] {
            for mask in [None, Some([1, 2, 3, 4])] {
                for (fin, rsv, op) in [(true, 0, opcode::TEXT), (false, 0b101, 0xB)] {
                    let header = Header {
                        fin,
                        rsv,
                        opcode: op,
                        mask,
                        len,
                    };
                    let mut out = Vec::new();
                    header.write(&mut out);
                    assert_eq!(out.len(), header.size());
                    let shortest = match len {
                        0..=125 => 2,
                        126..=0xffff => 4,
                        _ => 10,
                    };
                    assert_eq!(header.size(), shortest + if mask.is_some() { 4 } else { 0 });
                    assert_eq!(Header::parse(&out), Ok(Some((header, out.len()))));
                    for cut in 0..out.len() {
                        assert_eq!(Header::parse(&out[..cut]), Ok(None), "{len} cut at {cut}");
                    }
                }
            }
        }
        let top_bit = [0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert!(Header::parse(&top_bit).is_err());
    }

    #[test]
    fn close_codes_that_may_not_be_sent_fail_the_connection() {
        for code in [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            let frame = client(0x88, &close_payload(code, "ok"));
            assert_eq!(
                reader(&frame).next_message(),
                Ok(Some(Incoming::Close(Some(code))))
            );
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            let frame = client(0x88, &close_payload(code, ""));
            let error = reader(&frame).next_message().expect_err("refused");
            assert_eq!(error.close_code(), 1002, "code {code}");
        }
    }

    #[test]
    fn bad_utf8_in_a_first_fragment_fails_before_the_rest_comes() {
        // A character cut at a fragment's end waits for the next; a byte no character
        // starts with fails at once.
        let cut = client(0x01, &"é".as_bytes()[..1]);
        assert_eq!(reader(&cut).next_message(), Ok(None));
        let bad = client(0x01, &[b'o', b'k', 0xff]);
        assert_eq!(reader(&bad).next_message(), Err(FrameError::NotUtf8));
        let mut late = client(0x01, b"fine so far");
        late.extend(client(0x00, &[0xc3]));
        late.extend(client(0x00, &[0x28]));
        assert_eq!(reader(&late).next_message(), Err(FrameError::NotUtf8));
    }

    /// The lost wakeup of a short read: bytes that arrive after a read returned, once the
    /// reactor has recorded their readiness, must still wake the reader.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_arriving_just_after_a_read_wake_the_reader() -> io::Result<()> {
        use std::io::Write;
        use std::time::Duration;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let socket = crate::stream::Stream::from(listener.accept().await?.0);
        let readable = || std::future::poll_fn(|cx| socket.poll_read_ready(cx));
        client.write_all(b"first")?;
        readable().await?;
        let mut reader = Reader::new(1024, Vec::new());
        let read = reader.read_from_then(&socket, || {
            client.write_all(b"second").expect("the client writes");
            // Time for the other worker, parked in the reactor, to record the readiness.
            std::thread::sleep(Duration::from_millis(100));
        })?;
        assert_eq!(read, 5, "the first read takes what was there");
        tokio::time::timeout(Duration::from_secs(2), readable())
            .await
            .expect("the reader is woken for bytes that came after its read")?;
        assert_eq!(reader.read_from(&socket)?, 6);
        Ok(())
    }

    fn reader(bytes: &[u8]) -> Reader {
        Reader::new(1024, bytes.to_vec())
    }

    #[test]
    fn reads_whole_and_fragmented_messages_between_control_frames() {
        let long = "é".repeat(100);
        let mut bytes = client(0x81, b"hello");
        bytes.extend(client(0x01, &long.as_bytes()[..101])); // splits a character
        bytes.extend(client(0x89, b"are you there"));
        bytes.extend(client(0x80, &long.as_bytes()[101..]));
        bytes.extend(client(0x82, &[0, 1, 2]));
        bytes.extend(client(0x88, &close_payload(1000, "bye")));
        let mut r = reader(&bytes);
        assert_eq!(r.next_message(), Ok(Some(Incoming::Text("hello"))));
        assert_eq!(r.next_message(), Ok(Some(Incoming::Ping(b"are you there"))));
        assert_eq!(r.next_message(), Ok(Some(Incoming::Text(long.as_str()))));
        assert_eq!(r.next_message(), Ok(Some(Incoming::Binary)));
        assert_eq!(r.next_message(), Ok(Some(Incoming::Close(Some(1000)))));
        assert_eq!(r.next_message(), Ok(None));
    }

    #[test]
    fn waits_for_the_rest_of_a_frame() {
        let text = "x".repeat(300);
        let frame = client(0x81, text.as_bytes());
        for cut in [1, 2, 3, 5, 8, frame.len() - 1] {
            let mut r = reader(&frame[..cut]);
            assert_eq!(r.next_message(), Ok(None), "cut at {cut}");
            r.buf.extend_from_slice(&frame[cut..]);
            assert_eq!(r.next_message(), Ok(Some(Incoming::Text(text.as_str()))));
        }
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let cases: [(Vec<u8>, u16); 9] = [
            (encoded(0x81, b"unmasked"), 1002),
            (client(0xC1, b"rsv1"), 1002),
            (client(0x83, b"opcode 3"), 1002),
            (client(0x09, b"fragmented ping"), 1002),
            (client(0x89, &[0; 126]), 1002),
            (client(0x80, b"continuation of nothing"), 1002),
            (client(0x81, &[0xff, 0xfe]), 1007),
            (client(0x88, &[3]), 1002),
            (client(0x81, &[b'x'; 1025]), 1009),
        ];
        for (bytes, code) in cases {
            let error = reader(&bytes).next_message().expect_err("refused");
            assert_eq!(error.close_code(), code, "{error}");
        }
        let mut nested = client(0x01, b"one");
        nested.extend(client(0x81, b"two"));
        assert!(reader(&nested).next_message().is_err());
        let mut grown = client(0x01, &[b'x'; 1000]);
        grown.extend(client(0x80, &[b'x'; 100]));
        assert_eq!(reader(&grown).next_message(), Err(FrameError::TooBig(1024)));
    }

    #[test]
    fn refuses_an_oversized_length_before_its_bytes_arrive() {
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            reader(&header).next_message(),
            Err(FrameError::TooBig(1024))
        );
        // A length with its top bit set is no length at all (RFC 6455, section 5.2).
        header[2] = 0x80;
        let error = reader(&header).next_message().expect_err("refused");
        assert_eq!(error.close_code(), 1002);
    }

    #[test]
    fn unmasks_every_length_like_the_rfc_says() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 31, 32, 33, 70, 200] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut masked: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            apply_mask(&mut masked, mask);
            assert_eq!(masked, plain, "{len} bytes");
        }
    }

    #[test]
    fn encodes_each_length_form() {
        for len in [0, 125, 126, 0xffff, 0x10000] {
            let mut out = Vec::new();
            encode(&mut out, opcode::TEXT, &vec![b'a'; len]);
            assert_eq!(out.len(), frame_len(len));
            assert_eq!(out[0], 0x81);
        }
    }

    fn encoded(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, first & 0x0f, payload);
        out
    }
}
