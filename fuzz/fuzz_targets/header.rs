//! Arbitrary bytes as a frame header (`signalroom-wsframe`'s codec). Checked: parsing never
//! panics, a parsed header writes back in its shortest form and parses again to itself, and
//! a header that was already in its shortest form writes back byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalroom_wsframe::{Header, HeaderError, OpCode};

fuzz_target!(|data: &[u8]| {
    let (header, size) = match Header::parse(data) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        // Refused only for what section 5.2 forbids.
        Err(HeaderError::ReservedOpCode) => {
            assert_eq!(OpCode::from_bits(data[0] & 0x0f), None);
            return;
        }
        Err(HeaderError::LengthTopBit) => {
            assert!(data[1] & 0x7f == 127 && data[2] & 0x80 != 0);
            return;
        }
    };
    let mut out = Vec::new();
    header.write(&mut out);
    assert_eq!(out.len(), header.size());
    assert!(header.size() <= size, "the written form is never longer");
    assert_eq!(Header::parse(&out), Ok(Some((header, out.len()))));
    if size == header.size() {
        // The reserved bits and opcode are kept as they came.
        assert_eq!(out, data[..size]);
    }
});
