#!/usr/bin/env bash
# Builds the Debian package of Banyan with dpkg-deb:
#   /usr/bin/banyan, /lib/systemd/system/banyan.service (packaging/),
#   /etc/banyan/banyan.toml (a conffile: every option, commented),
#   /usr/share/doc/banyan (README, copyright with hls.js's licence).
#
#   scripts/deb.sh [--binary PATH] [--out DIR]
#
# Without --binary it builds the release binary first (cargo build --release).
# Runtime dependencies are the packages owning the libraries the binary links
# (ldd + dpkg -S), plus adduser. Prints the path of the .deb on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
binary=""
out="$root/target/debian"
while (($#)); do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: scripts/deb.sh [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  (cd "$root" && cargo build --release --locked --bin banyan >&2)
  binary="${CARGO_TARGET_DIR:-$root/target}/release/banyan"
fi
[ -x "$binary" ] || { echo "deb.sh: no executable at $binary" >&2; exit 1; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/banyan"

install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" \
  "$pkg/etc/banyan" "$pkg/usr/share/doc/banyan"
# Debug info stays out of the package (the build tree keeps it).
if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$binary" "$pkg/usr/bin/banyan"
else
  cp "$binary" "$pkg/usr/bin/banyan"
fi
chmod 0755 "$pkg/usr/bin/banyan"
install -m 0644 "$root/packaging/banyan.service" "$pkg/lib/systemd/system/banyan.service"
install -m 0640 "$root/packaging/banyan.toml" "$pkg/etc/banyan/banyan.toml"
install -m 0644 "$root/README.md" "$pkg/usr/share/doc/banyan/README.md"
{
  echo "Banyan $version. Licence: MIT."
  echo
  echo "The binary embeds hls.js $(sed -n 's/^version = "\(.*\)"/\1/p' "$root/web/vendor/hls.lock"), under the Apache License 2.0:"
  echo
  cat "$root/web/vendor/hls.js.LICENSE"
} >"$pkg/usr/share/doc/banyan/copyright"
[ -f "$root/docs/openapi.json" ] && install -m 0644 "$root/docs/openapi.json" "$pkg/usr/share/doc/banyan/openapi.json"
for s in postinst prerm postrm; do
  install -m 0755 "$root/packaging/debian/$s" "$pkg/DEBIAN/$s"
done
echo "/etc/banyan/banyan.toml" >"$pkg/DEBIAN/conffiles"

# The package of each library the binary links (ldd reports /lib paths that
# dpkg may record under /usr/lib, or the other way round).
deps=()
while read -r lib; do
  owner=""
  for p in "$lib" "$(readlink -f "$lib")" "/usr$lib" "${lib#/usr}"; do
    owner=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1) && [ -n "$owner" ] && break
  done
  [ -n "$owner" ] || { echo "deb.sh: no package owns $lib" >&2; exit 1; }
  deps+=("$owner")
done < <(ldd "$binary" | awk '/=> \//{print $3}')
depends=$(printf '%s\n' "${deps[@]}" adduser | sort -u | paste -sd, | sed 's/,/, /g')
size=$(du -sk "$pkg" --exclude=DEBIAN | cut -f1)

cat >"$pkg/DEBIAN/control" <<CONTROL
Package: banyan
Version: $version
Architecture: $arch
Maintainer: Banyan maintainers <banyan@localhost>
Installed-Size: $size
Depends: $depends
Section: video
Priority: optional
Description: low-latency live video relay (RTMPS, SRT, LL-HLS)
 A node takes streams from OBS or ffmpeg over RTMPS or SRT and serves them
 to players over RTMPS, SRT and LL-HLS at sub-second latency, with an HTTP
 API shaped like Cloudflare Stream Live's. Runs as the systemd service
 banyan (user banyan, data in /var/lib/banyan, config /etc/banyan).
CONTROL

mkdir -p "$out"
deb="$out/banyan_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz -z1 --build "$pkg" "$deb" >&2
echo "$deb"
