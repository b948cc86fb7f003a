#!/usr/bin/env bash
# Quick start 1: install, build, and run the server in development mode on 127.0.0.1:7443, with a SoftHSM2 token,
# an offline root and an intermediate CA it creates in ./dev on the first start (reused afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/server/linesign-server --dev "${LINESIGN_DEV_DIR:-dev}" --listen "${LINESIGN_LISTEN:-127.0.0.1:7443}"
