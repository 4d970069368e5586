#!/usr/bin/env bash
# An MCP client written by others, unmodified: the official Python SDK (PyPI `mcp`) lists the tools and renders
# through `/mcp` on `diffugen serve` and through `diffugen mcp` over stdio, on the test model
# (scripts/mcp_check.py).
# Usage: scripts/mcp-check.sh [path of the diffugen binary] [path of diffugen-e2e-fixture]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
diffugen="${1:-$target/debug/diffugen}"
fixture="${2:-$target/debug/diffugen-e2e-fixture}"
tools="${DIFFUGEN_TOOLS_DIR:-$HOME/.cache/diffugen/tools}"
venv="$tools/mcp-2.3.0"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import mcp' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet mcp==2.3.0
fi
data="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT
"$fixture" "$data" >/dev/null
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
key="mcp-check-key"
DIFFUGEN_VRAM_POLICY=never "$diffugen" --data-dir "$data" serve --port "$port" --api-key "$key" \
  --no-ollama-gateway --default-model tiny-sdxs --ollama-url http://127.0.0.1:9 >"$data/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
status=0
"$venv/bin/python" scripts/mcp_check.py "$port" "$key" "$diffugen" "$data" || status=$?
if [ "$status" -ne 0 ]; then
  echo "mcp-check: failures above; the server's log follows" >&2
  tail -n 50 "$data/serve.log" >&2
fi
exit "$status"
