//! WebSocket frames (RFC 6455, section 5): the frame-header codec, masking, the typed
//! opcodes and close codes, and close payloads. The relay, its benchmark and its fuzz
//! targets share this crate; what a server accepts from a client (a mask on every frame, no
//! reserved bits, short whole control frames, a size limit) is for the reader that uses it
//! to decide.
//!
//! Everything here is on a relay's path for every frame: nothing allocates but the
//! functions that append to a `Vec` they are given (and [`close_payload`]), and unmasking
//! works in place.

use std::fmt;

/// A frame's opcode (RFC 6455, section 5.2). The reserved opcodes (3-7 and 0xB-0xF) are no
/// `OpCode`: a header carrying one does not parse ([`HeaderError::ReservedOpCode`]), since
/// no extension that defines them is ever negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// More of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Bytes.
    Binary,
    /// The closing handshake.
    Close,
    /// A liveness probe, answered with a pong carrying the same bytes.
    Ping,
    /// The answer to a ping.
    Pong,
}

impl OpCode {
    /// Every opcode.
    pub const ALL: [Self; 6] = [
        Self::Continuation,
        Self::Text,
        Self::Binary,
        Self::Close,
        Self::Ping,
        Self::Pong,
    ];

    /// The opcode whose four bits are `bits`, if it is one RFC 6455 defines.
    #[inline]
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// The opcode's four bits, as on the wire.
    #[inline]
    pub const fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// A control frame's opcode: close, ping or pong.
    #[inline]
    pub const fn is_control(self) -> bool {
        match self {
            Self::Close | Self::Ping | Self::Pong => true,
            Self::Continuation | Self::Text | Self::Binary => false,
        }
    }
}

/// Why bytes are not a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A reserved opcode (3-7, 0xB-0xF): RFC 6455 says to fail the connection.
    #[error("a reserved opcode")]
    ReservedOpCode,
    /// A 64-bit payload length with its most significant bit set, which section 5.2
    /// forbids.
    #[error("a 64-bit length with its top bit set")]
    LengthTopBit,
}

/// A frame header (RFC 6455, section 5.2), in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// The three reserved bits, RSV1 as `0b100` down to RSV3 as `0b001`.
    pub rsv: u8,
    /// What the frame is.
    pub opcode: OpCode,
    /// The masking key: clients mask every frame, servers none.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

impl Header {
    /// An unmasked, final frame's header: what a server sends.
    #[inline]
    pub const fn server(opcode: OpCode, len: usize) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            len: len as u64,
        }
    }

    /// A masked, final frame's header: what a client sends.
    #[inline]
    pub const fn client(opcode: OpCode, mask: [u8; 4], len: usize) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(mask),
            len: len as u64,
        }
    }

    /// Parses the header at the start of `bytes`: `Ok(None)` while it is incomplete, else
    /// the header and its size in bytes. Longer length encodings than needed are accepted
    /// (section 5.2 asks for the shortest, but only of the sender).
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<Option<(Self, usize)>, HeaderError> {
        let Some(&[first, second]) = bytes.get(..2) else {
            return Ok(None);
        };
        let Some(opcode) = OpCode::from_bits(first & 0x0f) else {
            return Err(HeaderError::ReservedOpCode);
        };
        let (len, at) = match second & 0x7f {
            126 => match bytes.get(2..4) {
                Some(&[high, low]) => (u64::from(u16::from_be_bytes([high, low])), 4),
                _ => return Ok(None),
            },
            127 => match bytes.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) if b[0] & 0x80 != 0 => return Err(HeaderError::LengthTopBit),
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
            opcode,
            mask,
            len,
        };
        Ok(Some((header, size)))
    }

    /// Appends the header, with the shortest length encoding and the mask key if any.
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.rsv & 0x7) << 4 | self.opcode.bits());
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
    #[inline]
    pub const fn size(&self) -> usize {
        let length = match self.len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + length + if self.mask.is_some() { 4 } else { 0 }
    }

    /// A control frame's header: close, ping or pong.
    #[inline]
    pub const fn is_control(&self) -> bool {
        self.opcode.is_control()
    }
}

/// XORs `payload` with `mask` (masking and unmasking are the same, section 5.3), in place,
/// in blocks the compiler turns into vector XORs.
#[inline]
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
#[inline]
pub fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = Header::server(opcode, payload.len());
    out.reserve(header.size() + payload.len());
    header.write(out);
    out.extend_from_slice(payload);
}

/// The bytes of a server's frame with a payload of `len` bytes: what [`encode`] appends.
#[inline]
pub const fn frame_len(len: usize) -> usize {
    Header::server(OpCode::Text, len).size() + len
}

/// A status code a close frame may carry (RFC 6455, section 7.4, and the IANA registry):
/// the defined codes but 1004 (reserved) and 1005, 1006 and 1015, which only name what an
/// endpoint saw and never travel; and the codes of libraries and applications, 3000-4999.
/// Any other code in a close frame fails the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    Normal,
    /// 1001: the endpoint is going away (a server shutting down, a page navigated away).
    GoingAway,
    /// 1002: a protocol error.
    ProtocolError,
    /// 1003: a kind of data the endpoint cannot accept.
    UnsupportedData,
    /// 1007: data inconsistent with its message's type (text that is not UTF-8).
    InvalidPayload,
    /// 1008: a message that violates the endpoint's policy.
    PolicyViolation,
    /// 1009: a message too big to process.
    MessageTooBig,
    /// 1010: the client expected an extension the server did not negotiate.
    MandatoryExtension,
    /// 1011: the server met an unexpected condition.
    InternalError,
    /// 1012: the service is restarting; a client may reconnect.
    ServiceRestart,
    /// 1013: try again later (the server is overloaded or cannot serve just now).
    TryAgainLater,
    /// 1014: a gateway got an invalid response from upstream.
    BadGateway,
    /// 3000-4999: a library's, framework's or application's own code.
    Custom(CustomCode),
}

/// A close code in 3000-4999, the range of libraries (3000-3999, registered with IANA) and
/// applications (4000-4999, private).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomCode(u16);

impl CustomCode {
    /// `code`, if it is in 3000-4999.
    pub const fn new(code: u16) -> Option<Self> {
        match code {
            3000..=4999 => Some(Self(code)),
            _ => None,
        }
    }

    /// The code's number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl CloseCode {
    /// The code numbered `code`, if a close frame may carry it.
    #[inline]
    pub const fn from_wire(code: u16) -> Option<Self> {
        Some(match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1002 => Self::ProtocolError,
            1003 => Self::UnsupportedData,
            1007 => Self::InvalidPayload,
            1008 => Self::PolicyViolation,
            1009 => Self::MessageTooBig,
            1010 => Self::MandatoryExtension,
            1011 => Self::InternalError,
            1012 => Self::ServiceRestart,
            1013 => Self::TryAgainLater,
            1014 => Self::BadGateway,
            _ => match CustomCode::new(code) {
                Some(custom) => Self::Custom(custom),
                None => return None,
            },
        })
    }

    /// The code's number, as on the wire.
    #[inline]
    pub const fn wire(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::UnsupportedData => 1003,
            Self::InvalidPayload => 1007,
            Self::PolicyViolation => 1008,
            Self::MessageTooBig => 1009,
            Self::MandatoryExtension => 1010,
            Self::InternalError => 1011,
            Self::ServiceRestart => 1012,
            Self::TryAgainLater => 1013,
            Self::BadGateway => 1014,
            Self::Custom(custom) => custom.get(),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.wire())
    }
}

/// The longest close reason: a control frame's payload is at most 125 bytes, two of them
/// the code (section 5.5).
pub const MAX_CLOSE_REASON: usize = 123;

/// The payload of a close frame: `code`, then `reason`, cut to [`MAX_CLOSE_REASON`] bytes
/// at a character boundary if it is longer.
pub fn close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.wire().to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// Why a close frame's payload is not one an endpoint may send (section 5.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// One byte: a code is two.
    #[error("a close payload of one byte")]
    OneByte,
    /// A code no close frame may carry.
    #[error("a close code that may not be sent")]
    Unsendable,
    /// A reason that is not UTF-8.
    #[error("a close reason that is not UTF-8")]
    NotUtf8,
}

/// A close frame's code and reason: `Ok(None)` for an empty payload (no code).
pub fn parse_close(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, CloseError> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseError::OneByte),
        [high, low, reason @ ..] => {
            let code = CloseCode::from_wire(u16::from_be_bytes([*high, *low]))
                .ok_or(CloseError::Unsendable)?;
            let reason = std::str::from_utf8(reason).map_err(|_| CloseError::NotUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(header: Header) -> Vec<u8> {
        let mut out = Vec::new();
        header.write(&mut out);
        out
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
            u64::MAX >> 1,
        ] {
            for mask in [None, Some([1, 2, 3, 4])] {
                for (fin, rsv) in [(true, 0), (false, 0b101), (true, 0b111)] {
                    for opcode in OpCode::ALL {
                        let header = Header {
                            fin,
                            rsv,
                            opcode,
                            mask,
                            len,
                        };
                        let out = written(header);
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
        }
    }

    #[test]
    fn a_longer_length_encoding_than_needed_still_parses() {
        let header = Header::server(OpCode::Text, 5);
        let long16 = [0x81, 126, 0, 5];
        let long64 = [0x81, 127, 0, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(Header::parse(&long16), Ok(Some((header, 4))));
        assert_eq!(Header::parse(&long64), Ok(Some((header, 10))));
    }

    #[test]
    fn refuses_a_reserved_opcode_and_a_length_with_its_top_bit_set() {
        for bits in (0..16).filter(|b| OpCode::from_bits(*b).is_none()) {
            assert_eq!(
                Header::parse(&[0x80 | bits, 0]),
                Err(HeaderError::ReservedOpCode),
                "opcode {bits:#x}"
            );
        }
        let top_bit = [0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(Header::parse(&top_bit), Err(HeaderError::LengthTopBit));
    }

    #[test]
    fn opcodes_are_the_rfcs_and_read_back() {
        let bits: Vec<u8> = OpCode::ALL.iter().map(|op| op.bits()).collect();
        assert_eq!(bits, [0x0, 0x1, 0x2, 0x8, 0x9, 0xA]);
        for op in OpCode::ALL {
            assert_eq!(OpCode::from_bits(op.bits()), Some(op));
            assert_eq!(op.is_control(), op.bits() & 0x8 != 0);
        }
        assert_eq!((0..=u8::MAX).filter_map(OpCode::from_bits).count(), 6);
    }

    /// RFC 6455, section 5.7: its examples, byte for byte.
    #[test]
    fn the_rfcs_examples() {
        let hello = b"Hello";
        let key = [0x37, 0xfa, 0x21, 0x3d];
        // A single-frame unmasked text message.
        let mut out = Vec::new();
        encode(&mut out, OpCode::Text, hello);
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(out.len(), frame_len(hello.len()));
        // A single-frame masked text message.
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (header, size) = Header::parse(&masked)
            .expect("a header")
            .expect("a whole header");
        assert_eq!((header, size), (Header::client(OpCode::Text, key, 5), 6));
        let mut payload = masked[size..].to_vec();
        apply_mask(&mut payload, key);
        assert_eq!(payload, hello);
        let mut built = written(Header::client(OpCode::Text, key, 5));
        let at = built.len();
        built.extend_from_slice(hello);
        apply_mask(&mut built[at..], key);
        assert_eq!(built, masked);
        // A fragmented unmasked text message.
        let first = Header {
            fin: false,
            ..Header::server(OpCode::Text, 3)
        };
        assert_eq!(written(first), [0x01, 0x03]);
        assert_eq!(
            written(Header::server(OpCode::Continuation, 2)),
            [0x80, 0x02]
        );
        // An unmasked ping and a masked pong.
        assert_eq!(written(Header::server(OpCode::Ping, 5)), [0x89, 0x05]);
        assert_eq!(
            written(Header::client(OpCode::Pong, key, 5)),
            [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d]
        );
        // 256 bytes and 64 KiB of binary, unmasked.
        assert_eq!(
            written(Header::server(OpCode::Binary, 256)),
            [0x82, 0x7e, 0x01, 0x00]
        );
        assert_eq!(
            written(Header::server(OpCode::Binary, 65536)),
            [0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]
        );
        assert_eq!(
            Header::parse(&[0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]),
            Ok(Some((Header::server(OpCode::Binary, 65536), 10)))
        );
    }

    #[test]
    fn unmasks_every_length_like_the_rfc_says() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 31, 32, 33, 70, 200] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            // Section 5.3: octet i XOR octet i MOD 4 of the key.
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
            encode(&mut out, OpCode::Text, &vec![b'a'; len]);
            assert_eq!(out.len(), frame_len(len));
            assert_eq!(out[0], 0x81);
            assert_eq!(
                Header::parse(&out),
                Ok(Some((Header::server(OpCode::Text, len), out.len() - len)))
            );
        }
    }

    #[test]
    fn close_codes_are_those_a_close_frame_may_carry() {
        for code in 0..=u16::MAX {
            let may = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            let parsed = CloseCode::from_wire(code);
            assert_eq!(parsed.is_some(), may, "code {code}");
            if let Some(parsed) = parsed {
                assert_eq!(parsed.wire(), code);
            }
        }
        assert_eq!(CloseCode::ServiceRestart.wire(), 1012);
        assert_eq!(CloseCode::TryAgainLater.to_string(), "1013");
    }

    #[test]
    fn close_payloads_read_back_and_refuse_what_rfc_6455_forbids() {
        for (code, reason) in [
            (CloseCode::Normal, ""),
            (CloseCode::PolicyViolation, "idle timeout"),
            (CloseCode::Custom(CustomCode(4321)), "κόσμε"),
        ] {
            let payload = close_payload(code, reason);
            assert_eq!(&payload[..2], code.wire().to_be_bytes());
            assert_eq!(parse_close(&payload), Ok(Some((code, reason))));
        }
        assert_eq!(parse_close(&[]), Ok(None));
        assert_eq!(parse_close(&[3]), Err(CloseError::OneByte));
        assert_eq!(parse_close(&[0x03, 0xed]), Err(CloseError::Unsendable));
        assert_eq!(parse_close(&[0x03, 0xe8, 0xff]), Err(CloseError::NotUtf8));
    }

    #[test]
    fn a_long_close_reason_is_cut_at_a_character() {
        let long = "é".repeat(100);
        let payload = close_payload(CloseCode::Normal, &long);
        assert_eq!(payload.len(), 2 + 122);
        assert_eq!(
            parse_close(&payload),
            Ok(Some((CloseCode::Normal, &long[..122])))
        );
        let ascii = "r".repeat(200);
        assert_eq!(close_payload(CloseCode::Normal, &ascii).len(), 125);
    }
}
