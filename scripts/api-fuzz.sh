#!/usr/bin/env bash
# Schemathesis over the local API: starts `diffugen serve` on the small test model in a throwaway data folder and
# runs scripts/api_fuzz.py against its /openapi.json (no server error, no undocumented answer). About 3 minutes.
# Usage: scripts/api-fuzz.sh [path of the diffugen binary] [path of diffugen-e2e-fixture]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-check.sh
pip_venv schemathesis 4.32.5 schemathesis
serve_test_model -- --queue-depth 4
status=0
python3 scripts/api_fuzz.py "$venv/bin/schemathesis" "http://127.0.0.1:$port" crates/server/api/openapi.json || status=$?
finish api-fuzz "$status"
