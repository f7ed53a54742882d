#!/usr/bin/env bash
# Runs every test: the protocol's and the relay's in Rust, a short run of every fuzz
# target, the client's in headless Chromium, and the end-to-end browser tests against the
# release build. Installs missing tools (wasm target, trunk, wasm-bindgen-cli, wasm-opt,
# the nightly toolchain and cargo-fuzz, Chromium) first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh --test

say "protocol and relay tests"
# Tests that run the relay as a process of its own (to kill or pause it) have Cargo build
# it first (support::relay_binary), so they never run a stale one.
cargo test --workspace

say "fuzzing: every fuzz target for 20 s from the committed seeds"
FUZZ_SECONDS=20 scripts/fuzz.sh

say "browser client tests (wasm-bindgen-test in headless Chromium)"
(
    cd client-wasm
    CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
        cargo test --target wasm32-unknown-unknown
)

say "release build of the page and the relay"
trunk build --release --config Trunkfile.toml
cargo build --release -p signalroom-server
# The native peer the end-to-end tests call (the debug build the Rust tests made).
cargo build -p signalroom-peer
scripts/size.sh

say "benchmark smoke run (a few seconds; no figure is asserted)"
cargo build --release -p signalroom-bench
target/release/signalroom-bench smoke

say "end-to-end tests (two and more Chromium pages)"
(cd tests/e2e && node --test)
