#!/usr/bin/env bash
# Installs the system packages DiffuGen builds and tests with (Debian/Ubuntu), and checks Rust and Node.js.
# - cmake, libclang: compile the vendored stable-diffusion.cpp and generate its bindings;
# - libwebkit2gtk-4.1, librsvg2, libayatana-appindicator3: the Tauri desktop app (WebKitGTK window);
# - webkit2gtk-driver (WebKitWebDriver) and xvfb: the desktop end-to-end test in a real window without a screen;
# - python3 with venv: schemathesis, run over the API by the tests (scripts/api-fuzz.sh);
# - nats-server (JetStream included): the cluster's message server, started by the cluster tests on loopback.
# Uses sudo when not root. Safe to run again.
set -euo pipefail
packages=(cmake libclang-dev build-essential pkg-config curl file
          libwebkit2gtk-4.1-dev librsvg2-dev libayatana-appindicator3-dev libssl-dev
          webkit2gtk-driver xvfb xauth nats-server)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# A python3 without its venv module (Debian's own python3) gets python3-venv.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: Rust is not installed. Install it from https://rustup.rs and run this again." >&2
  exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "error: the desktop UI needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "Install it from https://nodejs.org or your distribution, and run this again." >&2
  exit 1
fi
