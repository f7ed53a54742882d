//! The helpers now live in this crate's library (`src/lib.rs`), which a test imports as
//! `support` without declaring a module. This file only keeps `mod support;` working in
//! test files that still declare it; delete it once none does.

pub use ::support::*;
