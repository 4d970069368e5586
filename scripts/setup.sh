#!/usr/bin/env bash
# Installs everything, builds the release `diffugen` (target/release/diffugen) and starts it: lists the models it
# finds and how to generate. Pass --features cuda (or vulkan) to build sd.cpp with a GPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -p diffugen "$@"
echo
target/release/diffugen models
echo
echo "Generate with: target/release/diffugen generate --model <id|path> --prompt \"a lighthouse at dusk\""
