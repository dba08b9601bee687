#!/usr/bin/env bash
# Fuzzing every parser of peer bytes (targets in fuzz/fuzz_targets).
#   scripts/fuzz.sh run [SECONDS] [TARGET...]  fuzz each target for SECONDS (default 60),
#                                              starting from fuzz/seeds/<target>; new inputs
#                                              go to fuzz/corpus/<target> (not committed),
#                                              crashes to fuzz/artifacts/<target>
#   scripts/fuzz.sh replay                     build every target and replay the committed
#                                              seeds and regressions once, with sanitizers
# The targets' bodies are in src/fuzzing (module `banyan::fuzzing`), whose unit
# tests also replay the committed seeds and regressions in `cargo test` (and so
# in scripts/test.sh). A crash found by `run` is fixed, and its input is
# committed under fuzz/regressions/<target>/ so both replays keep checking it.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^banyan-fuzz$')
mode=${1:-replay}
case "$mode" in
  run)
    secs=${2:-60}; shift $(( $# >= 2 ? 2 : $# ))
    [ $# -gt 0 ] && targets="$*"
    for t in $targets; do
      mkdir -p "corpus/$t" "seeds/$t"
      echo "fuzz: $t for ${secs}s"
      cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 3
    done ;;
  replay)
    cargo fuzz build -O
    for t in $targets; do
      dirs=()
      for d in "seeds/$t" "regressions/$t"; do [ -d "$d" ] && dirs+=("$d"); done
      [ ${#dirs[@]} -gt 0 ] || continue
      echo "fuzz replay: $t (${dirs[*]})"
      cargo fuzz run -O "$t" "${dirs[@]}" -- -runs=0 2>&1 | tail -n 1
    done ;;
  *) echo "usage: $0 run [SECONDS] [TARGET...] | replay" >&2; exit 2 ;;
esac
