#!/usr/bin/env bash
# Installs what building (and, with --test, testing) signalroom needs, skipping whatever is
# already in place. Sourced by run.sh and test.sh, which then find the tools on PATH.
set -euo pipefail

TRUNK_VERSION=0.21.14
BINARYEN_VERSION=132
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
export PATH="$HOME/.cargo/bin:$tools/node_modules/.bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi

if ! trunk --version 2>/dev/null | grep -q " $TRUNK_VERSION\$"; then
    say "installing trunk $TRUNK_VERSION (about 6 minutes, once)"
    cargo install trunk --version "$TRUNK_VERSION" --locked --no-default-features --features rustls
fi

# The CLI must be exactly the wasm-bindgen version the page is built with.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print }' "$root/Cargo.lock")
if ! wasm-bindgen --version 2>/dev/null | grep -q " $bindgen_version\$"; then
    say "installing wasm-bindgen-cli $bindgen_version (about 2 minutes, once)"
    # Not --locked: one of its locked dependencies is no longer on the registry.
    cargo install wasm-bindgen-cli --version "=$bindgen_version"
fi

if ! wasm-opt --version 2>/dev/null | grep -q "version $BINARYEN_VERSION"; then
    say "installing wasm-opt (binaryen $BINARYEN_VERSION) into .tools/"
    npm install --silent --no-audit --no-fund --prefix "$tools" "binaryen@$BINARYEN_VERSION"
fi

if [[ "${1:-}" == "--test" ]]; then
    # Debian packages the tests use, each found by a command it provides: Chromium and its
    # driver, and the servers the tests start on free ports of their own (redis-server,
    # redis-sentinel, coturn's turnserver), openssl (the TLS browser test's certificate), promtool
    # (package prometheus; it checks the metrics exposition), ffmpeg (a VP8 clip for the
    # native peer to send, and ffprobe to check what it records), and nginx (the benchmark
    # compares the relay's TLS with nginx terminating it in front of the plain relay).
    missing=()
    need() { command -v "$1" >/dev/null || missing+=("$2"); }
    need chromium chromium
    need chromedriver chromium-driver
    need redis-server redis-server
    need redis-sentinel redis-sentinel
    need openssl openssl
    need turnserver coturn
    need turnutils_uclient coturn
    need promtool prometheus
    need ffmpeg ffmpeg
    need ffprobe ffmpeg
    need nginx nginx-light
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
        # Where a service manager runs, the packages start system services: the tests
        # never use them.
        for service in coturn prometheus nginx; do
            if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
                systemctl stop "$service"
            fi
        done
    fi
    # Fuzzing (scripts/fuzz.sh): cargo-fuzz and the nightly toolchain its sanitizers need.
    if ! rustup toolchain list | grep -q '^nightly'; then
        say "adding the nightly toolchain (for fuzzing)"
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        say "installing cargo-fuzz (a few minutes, once)"
        cargo install cargo-fuzz --locked
    fi
    if [[ ! -d "$root/tests/e2e/node_modules/playwright-core" ]]; then
        say "installing the end-to-end test driver"
        npm ci --silent --no-audit --no-fund --prefix "$root/tests/e2e"
    fi
fi
