//! Integration tests live beside this crate root; see `relay.rs`.
