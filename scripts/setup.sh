#!/usr/bin/env bash
# Installs what Banyan needs on a fresh Debian 12 machine.
#
#   scripts/setup.sh --run   only what building and running a node needs: C and
#                            C++ compilers, pkg-config, cmake, libssl, libsrt (scripts/serve.sh)
#   scripts/setup.sh         that and everything the tests need (scripts/test.sh):
#                            the real clients and peers the tests drive (ffmpeg,
#                            srt-live-transmit, VLC, chromium, nginx-rtmp,
#                            OBS Studio), pebble (an ACME test CA),
#                            PostgreSQL for the cluster tests, adduser and systemd
#                            for the package test, the browser test driver's npm
#                            packages (playwright-core, Cloudflare's TypeScript
#                            SDK) and Cloudflare's Python SDK (tests/sdk/.venv).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

run_only=0
[ "${1:-}" = "--run" ] && run_only=1

packages=(
  gcc libc6-dev pkg-config ca-certificates           # build (ring, SQLite)
  g++                                                # build (libfdk-aac, linked in: WHIP audio)
  libsrt-openssl-dev libsrt1.5-openssl               # build + run (SRT)
  cmake                                              # build (libopus, linked in: WebRTC audio)
  libssl-dev                                         # build + run (WebRTC's DTLS, str0m's OpenSSL backend)
)
test_packages=(
  ffmpeg srt-tools rtmpdump                          # real publishers and players
  vlc-bin vlc-plugin-base vlc-plugin-access-extra    # headless VLC player
  chromium                                           # the browser for the watch page test
  nginx libnginx-mod-rtmp libnginx-mod-stream        # the peer in benchmarks
  postgresql                                         # cluster state and its tests
  pebble                                             # ACME test CA (+ pebble-challtestsrv) for tests/acme*.rs
  obs-studio xvfb                                    # OBS itself, headless, in tests/acme_obs.rs
  sqlite3 procps iproute2 util-linux openssl curl    # inspection and test plumbing
  python3 python3-venv                               # Cloudflare's Python SDK in tests/sdk.rs
)
# Node and npm run the browser tests (playwright-core); take Debian's only when
# the machine has none of its own.
command -v npm >/dev/null || test_packages+=(nodejs npm)
# The package test (tests/package.rs): the package's postinst runs adduser;
# systemd-analyze checks the unit.
test_packages+=(adduser systemd)
((run_only)) || packages+=("${test_packages[@]}")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ((run_only)); then
  echo "setup: ready to build and run"
  exit 0
fi

if [ -f web/package-lock.json ]; then
  if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules ]; then
    echo "setup: npm ci in web/"
    (cd web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
if [ ! -x tests/sdk/.venv/bin/python ] || [ tests/sdk/requirements.txt -nt tests/sdk/.venv ]; then
  echo "setup: Python SDK in tests/sdk/.venv"
  python3 -m venv tests/sdk/.venv
  tests/sdk/.venv/bin/pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt
  touch tests/sdk/.venv
fi
echo "setup: ready"
