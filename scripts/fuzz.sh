#!/usr/bin/env bash
# Fuzzes frame headers, frame decoding and per-connection handling for a bounded time
# each (default 60 s; FUZZ_SECONDS to change). Needs the nightly toolchain; installs cargo-fuzz if missing.
# Seeds live in fuzz/corpus/ (committed); findings go to fuzz/artifacts/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
for target in header decode frames session; do
    # Fuzz a scratch copy so the committed seeds stay as they are.
    work=$(mktemp -d)
    cp fuzz/corpus/"$target"/* "$work"/
    cargo +nightly fuzz run "$target" "$work" -- -max_total_time="$seconds" -max_len=4096
    rm -rf "$work"
done
