#!/usr/bin/env bash
# Installs what Banyan needs to build, run and test on a fresh Debian 12 machine:
# the libsrt build and run libraries, the real clients and peers the tests drive
# (ffmpeg, srt-live-transmit, VLC, chromium, nginx-rtmp), pebble (an ACME test CA), PostgreSQL for the
# cluster tests, the watch page's npm packages (hls.js, playwright-core,
# Cloudflare's TypeScript SDK) and Cloudflare's Python SDK (tests/sdk/.venv).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  pkg-config libsrt-openssl-dev libsrt1.5-openssl   # build + run (SRT)
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
command -v npm >/dev/null || packages+=(nodejs npm)
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
