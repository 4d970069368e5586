#!/usr/bin/env bash
# An A1111 client written by others, unmodified: webuiapi (PyPI) runs the hires fix, extras upscaling, the canny
# detector and a ControlNet render against `diffugen serve` on the test models (scripts/webuiapi_check.py).
# Usage: scripts/webuiapi-check.sh [path of the diffugen binary] [path of diffugen-e2e-fixture]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-check.sh
pip_venv webuiapi 0.9.17 webuiapi
serve_test_model --creative
status=0
"$venv/bin/python" scripts/webuiapi_check.py "$port" || status=$?
finish webuiapi-check "$status"
