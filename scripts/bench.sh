#!/usr/bin/env bash
# The full benchmark: the relay against the floor at 100, 1000 and 5000 rooms of two, three
# runs of each alternating (the median run is shown), then the relay's memory per idle
# joined connection at 18,000 connections. Takes about 10 minutes. Wait a minute between
# runs: closed sockets linger in TIME_WAIT.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p signalroom-server -p signalroom-bench
target/release/signalroom-bench load --rooms 100,1000,5000 --runs 3 "$@"
target/release/signalroom-bench idle --connections 18000
