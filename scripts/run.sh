#!/usr/bin/env bash
# Builds the release page with trunk and starts the relay serving it at http://127.0.0.1:2013.
# Installs missing tools first. Extra arguments go to the relay (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
trunk build --release --config Trunkfile.toml
cargo build --release -p signalroom-server
exec target/release/signalroom --static-dir dist "$@"
