#!/usr/bin/env bash
# Quick start 2: install, build, and run every test (real SoftHSM2 tokens in temporary directories, real SQLite
# files, real gRPC over loopback). Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
export TMPDIR=$(mktemp -d -t linesign-tests-XXXXXX)
trap 'rm -rf "$TMPDIR"' EXIT
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "${JOBS:-2}" --timeout 600
