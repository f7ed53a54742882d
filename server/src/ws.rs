//! WebSocket framing (RFC 6455), the server's side: checking and assembling what clients
//! send. The frame codec (headers, masking, opcodes, close codes) is `signalroom-wsframe`'s;
//! what a server accepts from a client is decided here.
//!
//! The relay frames its own bytes rather than hand the socket to a general WebSocket
//! library so that any connection's task can write a frame straight into another
//! connection's socket (see [`crate::outbox`]), and so that a read's worth of frames is
//! unmasked and handled in place, without a copy or an allocation per frame.

use std::io;

use signalroom_wsframe::{
    apply_mask, parse_close, CloseCode, CloseError, Header, HeaderError, OpCode,
};
use tokio::io::Interest;

use crate::spare;
use crate::stream::Stream;

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
    Close(Option<CloseCode>),
}

/// Why a client's bytes are not a WebSocket stream the relay accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes break RFC 6455.
    #[error("protocol error: {0}")]
    Protocol(Violation),
    /// A message over the size limit.
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    /// A text message (or close reason) that is not UTF-8.
    #[error("text is not UTF-8")]
    NotUtf8,
}

/// How a client's bytes break RFC 6455.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A header that does not parse.
    #[error("{0}")]
    Header(HeaderError),
    /// A reserved bit set, with no extension negotiated.
    #[error("reserved bits set")]
    ReservedBits,
    /// A frame without a mask.
    #[error("client frames must be masked")]
    Unmasked,
    /// A fragmented control frame, or one over 125 bytes.
    #[error("control frames are short and whole")]
    LongOrFragmentedControl,
    /// A text or binary frame while a fragmented message is still arriving.
    #[error("a new message inside a fragmented one")]
    Interleaved,
    /// A continuation frame with no fragmented message to continue.
    #[error("a continuation with no message")]
    OrphanContinuation,
    /// A close frame's payload of one byte.
    #[error("a close payload of one byte")]
    OneByteClose,
    /// A close code no close frame may carry.
    #[error("a close code that may not be sent")]
    UnsendableCloseCode,
}

impl FrameError {
    /// The close code that tells the client.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::Protocol(_) => CloseCode::ProtocolError,
            Self::TooBig(_) => CloseCode::MessageTooBig,
            Self::NotUtf8 => CloseCode::InvalidPayload,
        }
    }
}

impl From<HeaderError> for FrameError {
    fn from(error: HeaderError) -> Self {
        Self::Protocol(Violation::Header(error))
    }
}

impl From<CloseError> for FrameError {
    fn from(error: CloseError) -> Self {
        match error {
            CloseError::OneByte => Self::Protocol(Violation::OneByteClose),
            CloseError::Unsendable => Self::Protocol(Violation::UnsendableCloseCode),
            CloseError::NotUtf8 => Self::NotUtf8,
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
    /// A fragmented message still arriving.
    partial: Option<Partial>,
    /// The last fragmented message completed, lent out by [`Reader::next_message`].
    assembled: Vec<u8>,
}

/// A data message's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// A fragmented message so far.
#[derive(Debug)]
struct Partial {
    kind: Kind,
    bytes: Vec<u8>,
    /// How much of a text's bytes is known to be whole, valid UTF-8: each fragment is
    /// checked as it comes, so a bad one fails the message at once, and no byte twice.
    checked: usize,
}

impl Partial {
    fn new(kind: Kind) -> Self {
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
        if self.kind == Kind::Text {
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
    opcode: OpCode,
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
            let kind = match frame.opcode {
                OpCode::Ping => return Ok(Some(Incoming::Ping(&self.buf[frame.payload]))),
                OpCode::Pong => return Ok(Some(Incoming::Pong)),
                OpCode::Close => {
                    let close = parse_close(&self.buf[frame.payload])?;
                    return Ok(Some(Incoming::Close(close.map(|(code, _)| code))));
                }
                OpCode::Text => Kind::Text,
                OpCode::Binary => Kind::Binary,
                OpCode::Continuation => {
                    let Some(partial) = &mut self.partial else {
                        return Err(FrameError::Protocol(Violation::OrphanContinuation));
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
            };
            if self.partial.is_some() {
                return Err(FrameError::Protocol(Violation::Interleaved));
            }
            if !frame.fin {
                let mut partial = Partial::new(kind);
                partial.extend(&self.buf[frame.payload])?;
                self.partial = Some(partial);
                continue;
            }
            return message(kind, &self.buf[frame.payload]).map(Some);
        }
    }

    /// Takes the next whole frame off the buffer and unmasks it in place.
    fn parse(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((header, size)) = Header::parse(&self.buf[self.start..])? else {
            return Ok(None);
        };
        if header.rsv != 0 {
            return Err(FrameError::Protocol(Violation::ReservedBits));
        }
        let Some(mask) = header.mask else {
            return Err(FrameError::Protocol(Violation::Unmasked));
        };
        if header.is_control() && (!header.fin || header.len > 125) {
            return Err(FrameError::Protocol(Violation::LongOrFragmentedControl));
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
fn message(kind: Kind, payload: &[u8]) -> Result<Incoming<'_>, FrameError> {
    match kind {
        Kind::Binary => Ok(Incoming::Binary),
        Kind::Text => std::str::from_utf8(payload)
            .map(Incoming::Text)
            .map_err(|_| FrameError::NotUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame whose first byte is `first` (FIN, RSV and opcode bits, any
    /// of them), written here byte by byte rather than with the codec under test.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn close(code: u16, reason: &str) -> Vec<u8> {
        [&code.to_be_bytes()[..], reason.as_bytes()].concat()
    }

    #[test]
    fn close_codes_that_may_not_be_sent_fail_the_connection() {
        for code in [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            let frame = client(0x88, &close(code, "ok"));
            let Ok(Some(Incoming::Close(Some(got)))) = reader(&frame).next_message() else {
                panic!("code {code} refused");
            };
            assert_eq!(got.wire(), code);
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            let frame = client(0x88, &close(code, ""));
            let error = reader(&frame).next_message().expect_err("refused");
            assert_eq!(error.close_code(), CloseCode::ProtocolError, "code {code}");
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
    /// reactor has recorded their readiness, must still wake the reader. In the clear and
    /// over TLS, whose reads decrypt what the socket had.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_arriving_just_after_a_read_wake_the_reader() -> io::Result<()> {
        for tls in [false, true] {
            bytes_after_a_read_wake_the_reader(tls).await?;
        }
        Ok(())
    }

    /// How a test's client sends bytes.
    type Sender = Box<dyn FnMut(&[u8]) + Send>;

    async fn bytes_after_a_read_wake_the_reader(tls: bool) -> io::Result<()> {
        use std::io::Write;
        use std::time::Duration;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let connecting = tokio::net::TcpStream::connect(listener.local_addr()?);
        let (socket, mut send): (_, Sender) = if tls {
            let (socket, mut client) =
                crate::tls::testing::pair(listener, connecting.await?).await?;
            (
                Stream::Tls(Box::new(socket)),
                Box::new(move |bytes| client.write(bytes)),
            )
        } else {
            let mut client = connecting.await?.into_std()?;
            client.set_nonblocking(false)?;
            let socket = Stream::from(listener.accept().await?.0);
            let send = move |bytes: &[u8]| client.write_all(bytes).expect("the client writes");
            (socket, Box::new(send))
        };
        let readable = || std::future::poll_fn(|cx| socket.poll_read_ready(cx));
        send(b"first");
        readable().await?;
        let mut reader = Reader::new(1024, Vec::new());
        let read = reader.read_from_then(&socket, || {
            send(b"second");
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
        bytes.extend(client(0x88, &close(1000, "bye")));
        let mut r = reader(&bytes);
        assert_eq!(r.next_message(), Ok(Some(Incoming::Text("hello"))));
        assert_eq!(r.next_message(), Ok(Some(Incoming::Ping(b"are you there"))));
        assert_eq!(r.next_message(), Ok(Some(Incoming::Text(long.as_str()))));
        assert_eq!(r.next_message(), Ok(Some(Incoming::Binary)));
        assert_eq!(
            r.next_message(),
            Ok(Some(Incoming::Close(Some(CloseCode::Normal))))
        );
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
        let unmasked = [0x81, 8, b'u', b'n', b'm', b'a', b's', b'k', b'e', b'd'].to_vec();
        let cases: [(Vec<u8>, FrameError); 10] = [
            (unmasked, FrameError::Protocol(Violation::Unmasked)),
            (
                client(0xC1, b"rsv1"),
                FrameError::Protocol(Violation::ReservedBits),
            ),
            (
                client(0x83, b"opcode 3"),
                FrameError::Protocol(Violation::Header(HeaderError::ReservedOpCode)),
            ),
            (
                client(0x09, b"fragmented ping"),
                FrameError::Protocol(Violation::LongOrFragmentedControl),
            ),
            (
                client(0x89, &[0; 126]),
                FrameError::Protocol(Violation::LongOrFragmentedControl),
            ),
            (
                client(0x80, b"continuation of nothing"),
                FrameError::Protocol(Violation::OrphanContinuation),
            ),
            (client(0x81, &[0xff, 0xfe]), FrameError::NotUtf8),
            (
                client(0x88, &[3]),
                FrameError::Protocol(Violation::OneByteClose),
            ),
            (client(0x88, &[0x03, 0xe8, 0xff]), FrameError::NotUtf8),
            (client(0x81, &[b'x'; 1025]), FrameError::TooBig(1024)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(reader(&bytes).next_message(), Err(expected));
        }
        let codes = [
            (FrameError::Protocol(Violation::Unmasked), 1002),
            (FrameError::NotUtf8, 1007),
            (FrameError::TooBig(1024), 1009),
        ];
        for (error, code) in codes {
            assert_eq!(error.close_code().wire(), code, "{error}");
        }
        let mut nested = client(0x01, b"one");
        nested.extend(client(0x81, b"two"));
        assert_eq!(
            reader(&nested).next_message(),
            Err(FrameError::Protocol(Violation::Interleaved))
        );
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
        assert_eq!(error, HeaderError::LengthTopBit.into());
        assert_eq!(error.close_code(), CloseCode::ProtocolError);
    }
}
