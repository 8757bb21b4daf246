#!/usr/bin/env bash
# Print a folder that holds the ONNX Runtime C/C++ headers (>= 1.21), fetching them if needed.
# No wheel ships them: use $ONNXRUNTIME_ROOT, else the system's libonnxruntime-dev, else download Debian 13's
# libonnxruntime-dev .deb (on Debian 12 through a private trixie source list) and unpack it into $1.
# Prints nothing and exits 1 when none can be had; the build then skips the ONNX Runtime library.
set -euo pipefail
dest=$(realpath -m "${1:?usage: fetch_onnxruntime_headers.sh DEST_DIR}")
header=onnxruntime_lite_custom_op.h

if [ -n "${ONNXRUNTIME_ROOT:-}" ]; then echo "$ONNXRUNTIME_ROOT"; exit 0; fi
if [ -f "/usr/include/onnxruntime/$header" ]; then echo /usr; exit 0; fi
if [ -f "$dest/usr/include/onnxruntime/$header" ]; then echo "$dest"; exit 0; fi
command -v apt-get >/dev/null && command -v dpkg >/dev/null || {
  echo "fetch_onnxruntime_headers: no apt/dpkg here; set ONNXRUNTIME_ROOT to an onnxruntime >= 1.21 release" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
apt_opts=()
if ! grep -q '^13' /etc/debian_version 2>/dev/null; then
  # Not Debian 13: a private trixie index, used only for this download (the system's sources are untouched).
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" > "$work/trixie.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$work/trixie.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$work/lists"
            -o "Dir::Cache=$work/cache" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" -qq update >&2 || { echo "fetch_onnxruntime_headers: cannot reach the Debian archive" >&2; exit 1; }
fi
(cd "$work" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev >&2) || {
  echo "fetch_onnxruntime_headers: libonnxruntime-dev download failed" >&2; exit 1; }
mkdir -p "$dest"
dpkg -x "$work"/libonnxruntime-dev_*.deb "$dest"
echo "fetched $(basename "$work"/libonnxruntime-dev_*.deb) into $dest" >&2
echo "$dest"
