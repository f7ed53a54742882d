#!/usr/bin/env bash
# Builds every fuzz target in fuzz/fuzz_targets and fuzzes each for a bounded time
# (default 60 s; FUZZ_SECONDS to change), starting from the committed seeds in
# fuzz/corpus/<target>/. A crash, a panic, a leak or an input slower than 10 s fails the
# run (exit status non-zero); what triggered it is saved in fuzz/artifacts/<target>/ (not
# committed). Needs the nightly toolchain and cargo-fuzz: installs either if missing.
# scripts/test.sh runs it with FUZZ_SECONDS=20.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "installing the nightly toolchain (for cargo-fuzz's sanitizers)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Every target, as cargo-fuzz finds them in fuzz/Cargo.toml, so a new one is fuzzed too.
mapfile -t targets < <(cargo +nightly fuzz list)
((${#targets[@]})) || { echo "no fuzz targets found" >&2; exit 1; }

# One build of them all, with debug assertions (overflow checks) on; the runs below reuse
# it, having the same flags.
cargo +nightly fuzz build --debug-assertions

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
    echo "fuzzing $target for ${seconds} s" >&2
    # libFuzzer adds what it finds to the first corpus directory it is given: a scratch
    # copy of the seeds, so the committed ones stay as they are.
    corpus="$work/$target"
    mkdir -p "$corpus"
    if [[ -d "fuzz/corpus/$target" ]]; then
        cp -R "fuzz/corpus/$target/." "$corpus/"
    fi
    cargo +nightly fuzz run --debug-assertions "$target" "$corpus" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10
done
