#!/usr/bin/env bash
# Runs a complete single-machine Banyan node on its embedded defaults
# (data in ./banyan-data, RTMP 127.0.0.1:1935, RTMPS :1936, SRT :8890, HTTP :8080).
# Installs only what building and running need (scripts/setup.sh --run).
# Extra arguments go to `banyan serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --run >/dev/null
exec cargo run --release --locked --bin banyan -- serve "$@"
