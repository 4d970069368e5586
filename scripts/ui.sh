#!/usr/bin/env bash
# Installs the UI's npm packages when package-lock.json changed since the last install, and builds ui/dist (which
# the desktop binary embeds, so Rust builds of the app need it first).
set -euo pipefail
cd "$(dirname "$0")/../ui"
stamp=node_modules/.diffugen-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
npm run --silent build
