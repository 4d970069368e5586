#!/usr/bin/env bash
# Installs the system packages DiffuGen builds with (Debian/Ubuntu): CMake and libclang compile the vendored
# stable-diffusion.cpp and generate its bindings. Uses sudo when not root. Safe to run again.
set -euo pipefail
packages=(cmake libclang-dev build-essential pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: Rust is not installed. Install it from https://rustup.rs and run this again." >&2
  exit 1
fi
