//! Arbitrary bytes as a frame header. Checked: parsing never panics, a parsed header
//! writes back in its shortest form and parses again to itself, and a header that was
//! already in its shortest form writes back byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalroom_server::ws::Header;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((header, size))) = Header::parse(data) else { return };
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
