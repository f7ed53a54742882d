//! WebSocket framing (RFC 6455), the server's side: parsing what clients send and framing
//! what the relay writes.
//!
//! The relay frames its own bytes rather than hand the socket to a general WebSocket
//! library so that any connection's task can write a frame straight into another
//! connection's socket (see [`crate::outbox`]), and so that a read's worth of frames is
//! unmasked and handled in place, without a copy or an allocation per frame.

use std::io;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::spare;

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
    /// The opcode and payload so far of a fragmented message.
    partial: Option<(u8, Vec<u8>)>,
    /// The last fragmented message completed, lent out by [`Reader::next_message`].
    assembled: Vec<u8>,
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
    pub fn read_from(&mut self, socket: &TcpStream) -> io::Result<usize> {
        self.read_from_then(socket, || {})
    }

    /// [`Reader::read_from`], running `after_read` once the read has returned and before
    /// the socket's readiness may be dropped: where a test makes data arrive at the worst
    /// moment.
    fn read_from_then(
        &mut self,
        socket: &TcpStream,
        after_read: impl FnOnce(),
    ) -> io::Result<usize> {
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
                        self.partial = Some((frame.opcode, self.buf[frame.payload].to_vec()));
                        continue;
                    }
                    return message(frame.opcode, &self.buf[frame.payload]).map(Some);
                }
                opcode::CONTINUATION => {
                    let Some((_, so_far)) = &mut self.partial else {
                        return Err(FrameError::Protocol("a continuation with no message"));
                    };
                    if so_far.len() + frame.payload.len() > self.max_message {
                        return Err(FrameError::TooBig(self.max_message));
                    }
                    so_far.extend_from_slice(&self.buf[frame.payload]);
                    if !frame.fin {
                        continue;
                    }
                    let Some((kind, whole)) = self.partial.take() else {
                        continue;
                    };
                    self.assembled = whole;
                    return message(kind, &self.assembled).map(Some);
                }
                _ => return Err(FrameError::Protocol("unknown opcode")),
            }
        }
    }

    /// Takes the next whole frame off the buffer and unmasks it in place.
    fn parse(&mut self) -> Result<Option<Frame>, FrameError> {
        let bytes = &self.buf[self.start..];
        let Some(&[first, second]) = bytes.get(..2) else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        if second & 0x80 == 0 {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        let opcode = first & 0x0f;
        let fin = first & 0x80 != 0;
        let (len, header) = match second & 0x7f {
            126 => match bytes.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match bytes.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if opcode & 0x8 != 0 && (!fin || len > 125) {
            return Err(FrameError::Protocol("control frames are short and whole"));
        }
        let len = match usize::try_from(len) {
            Ok(len) if len <= self.max_message => len,
            _ => return Err(FrameError::TooBig(self.max_message)),
        };
        let Some(mask) = bytes.get(header..header + 4) else {
            return Ok(None);
        };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        let begin = self.start + header + 4;
        let end = begin + len;
        if self.buf.len() < end {
            // Room for the rest of a large frame, so it arrives in few reads.
            self.buf.reserve(end - self.buf.len());
            return Ok(None);
        }
        unmask(&mut self.buf[begin..end], mask);
        self.start = end;
        Ok(Some(Frame {
            fin,
            opcode,
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

/// The status code of a close frame's payload, checking its reason is UTF-8.
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("a close payload of one byte")),
        [high, low, reason @ ..] => {
            std::str::from_utf8(reason).map_err(|_| FrameError::NotUtf8)?;
            Ok(Some(u16::from_be_bytes([*high, *low])))
        }
    }
}

/// XORs `payload` with the client's mask, in blocks the compiler turns into vector XORs.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
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
    out.reserve(header_len(payload.len()) + payload.len());
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// The bytes of a frame header for a payload of `len` bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
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
        let mut frame = Vec::new();
        encode(&mut frame, 0, payload);
        frame[0] = first;
        frame[1] |= 0x80;
        let at = frame.len() - payload.len();
        frame.splice(at..at, mask);
        for (i, byte) in frame[at + 4..].iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        frame
    }

    /// The lost wakeup of a short read: bytes that arrive after a read returned, once the
    /// reactor has recorded their readiness, must still wake the reader.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_arriving_just_after_a_read_wake_the_reader() -> io::Result<()> {
        use std::io::Write;
        use std::time::Duration;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (socket, _) = listener.accept().await?;
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
        header.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            reader(&header).next_message(),
            Err(FrameError::TooBig(1024))
        );
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
            unmask(&mut masked, mask);
            assert_eq!(masked, plain, "{len} bytes");
        }
    }

    #[test]
    fn encodes_each_length_form() {
        for len in [0, 125, 126, 0xffff, 0x10000] {
            let mut out = Vec::new();
            encode(&mut out, opcode::TEXT, &vec![b'a'; len]);
            assert_eq!(out.len(), header_len(len) + len);
            assert_eq!(out[0], 0x81);
        }
    }

    fn encoded(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, first & 0x0f, payload);
        out
    }
}
