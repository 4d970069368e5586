#!/usr/bin/env bash
# Installs what the build needs and runs every test:
#   1. the Rust specifications (real sd.cpp generations on the small test model, HTTP, VRAM, gallery, downloads,
#      and the check that ui/src/lib/bindings.ts matches the Rust commands and types);
#   2. the UI's type check and its component tests (Vitest, mocked IPC);
#   3. schemathesis over the API's /openapi.json (scripts/api-fuzz.sh): no server error, no undocumented answer;
#      webuiapi, an A1111 client from PyPI, unmodified: hires fix, extras, canny, ControlNet (webuiapi-check.sh);
#      and the official MCP Python SDK against /mcp and `diffugen mcp` (mcp-check.sh);
#   4. the desktop end-to-end test: the built app in a real window under Xvfb, driven through tauri-driver and
#      WebKitWebDriver (screenshots and benchmark figures in ui/e2e/out).
# The first run builds the test model (about 880 MB, ~15 s) into ~/.cache/diffugen/test-models; later runs reuse it.
# Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/ui.sh
# The app and the e2e fixture are built together with the test targets, so that every crate is compiled once, with
# the same features (a separate `cargo build -p ...` would resolve features anew and rebuild half the tree).
cargo build --workspace --bins --tests --locked
cargo test --workspace --locked "$@"

(cd ui && npm run --silent check && npm test --silent)

bash scripts/api-fuzz.sh
bash scripts/webuiapi-check.sh
bash scripts/mcp-check.sh

target="${CARGO_TARGET_DIR:-$PWD/target}"
tools="${DIFFUGEN_TOOLS_DIR:-$HOME/.cache/diffugen/tools}"
if [ ! -x "$tools/bin/tauri-driver" ]; then
  cargo install tauri-driver --version 2.1.0 --locked --root "$tools"
fi
DIFFUGEN_DESKTOP_BIN="$target/debug/diffugen-desktop" \
DIFFUGEN_E2E_FIXTURE="$target/debug/diffugen-e2e-fixture" \
TAURI_DRIVER="$tools/bin/tauri-driver" \
  xvfb-run -a -s "-screen 0 1440x900x24" npm --prefix ui run --silent e2e
