#!/usr/bin/env bash
# An MCP client written by others, unmodified: the official Python SDK (PyPI `mcp`) lists the tools and renders
# through `/mcp` on `diffugen serve` and through `diffugen mcp` over stdio, on the test model
# (scripts/mcp_check.py).
# Usage: scripts/mcp-check.sh [path of the diffugen binary] [path of diffugen-e2e-fixture]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-check.sh
pip_venv mcp 2.3.0 mcp
key="mcp-check-key"
serve_test_model -- --api-key "$key"
status=0
"$venv/bin/python" scripts/mcp_check.py "$port" "$key" "$diffugen" "$data" || status=$?
finish mcp-check "$status"
