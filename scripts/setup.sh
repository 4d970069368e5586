#!/usr/bin/env bash
# Installs everything, builds the release app and CLI (target/release/diffugen-desktop, target/release/diffugen) and
# starts the desktop app. Pass --features cuda (or vulkan) to build sd.cpp with a GPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/ui.sh
cargo build --release --locked -p diffugen-desktop -p diffugen "$@"
target="${CARGO_TARGET_DIR:-target}"
echo
echo "Built $target/release/diffugen-desktop (the app) and $target/release/diffugen (CLI and headless server)."
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "No display here (DISPLAY and WAYLAND_DISPLAY are unset): start the app from a desktop session with" >&2
  echo "  $target/release/diffugen-desktop" >&2
  echo "or run the headless server: $target/release/diffugen serve" >&2
  exit 1
fi
exec "$target/release/diffugen-desktop"
