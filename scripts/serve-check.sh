# Shared by the checks that run a client against `diffugen serve` (api-fuzz.sh, webuiapi-check.sh, mcp-check.sh):
# the client from PyPI in a venv of its own under ~/.cache/diffugen/tools, and the server on the small test model in
# a throwaway data folder, stopped and removed on exit. Sourced after `set -euo pipefail` and `cd` to the repository,
# with the script's arguments: [path of the diffugen binary] [path of diffugen-e2e-fixture].
target="${CARGO_TARGET_DIR:-$PWD/target}"
diffugen="${1:-$target/debug/diffugen}"
fixture="${2:-$target/debug/diffugen-e2e-fixture}"
tools="${DIFFUGEN_TOOLS_DIR:-$HOME/.cache/diffugen/tools}"
data="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

# pip_venv PACKAGE VERSION MODULE: $venv, a venv holding PACKAGE==VERSION (made when MODULE does not import there).
pip_venv() {
  venv="$tools/$1-$2"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import $3" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "$1==$2"
  fi
}

# serve_test_model [FIXTURE FLAGS] [-- SERVE FLAGS]: the test model in $data, `diffugen serve` on a free $port
# (VRAM policy never, no gateway, model tiny-sdxs, no Ollama), answering /health before this returns.
serve_test_model() {
  local fixture_flags=()
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do fixture_flags+=("$1"); shift; done
  [ "$#" -gt 0 ] && shift
  "$fixture" "$data" "${fixture_flags[@]}" >/dev/null
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  DIFFUGEN_VRAM_POLICY=never "$diffugen" --data-dir "$data" serve --port "$port" --no-ollama-gateway \
    --default-model tiny-sdxs --ollama-url http://127.0.0.1:9 "$@" >"$data/serve.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
}

# finish NAME STATUS: exits with STATUS, showing the server's log after a failure.
finish() {
  if [ "$2" -ne 0 ]; then
    echo "$1: failures above; the server's log follows" >&2
    tail -n 50 "$data/serve.log" >&2
  fi
  exit "$2"
}
