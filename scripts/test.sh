#!/usr/bin/env bash
# Installs what the build needs and runs every test. The first run builds the small real test model (about 880 MB,
# ~15 s) into ~/.cache/diffugen/test-models; later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo test --workspace --locked "$@"
