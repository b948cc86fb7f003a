#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, AddressSanitizer and UndefinedBehaviorSanitizer in
# build-fuzz/, and runs each for SECONDS (default 60) on a scratch copy of its seed corpus (tests/corpus/).
# Exits non-zero on any crash, leak, sanitizer report or timeout; the reproducer is left in build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build="${LINESIGN_FUZZ_BUILD_DIR:-build-fuzz}"
CC=clang CXX=clang++ cmake -S . -B "$build" -DLINESIGN_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target csr_fuzzer config_fuzzer
for target in csr config; do
  work="$(mktemp -d)"
  log="$build/${target}_fuzzer.log"
  cp tests/corpus/"$target"/* "$work"/
  echo "fuzz.sh: ${target}_fuzzer for ${seconds}s"
  if ! (cd "$build" && "./fuzz/${target}_fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
          -max_len=8192 -print_final_stats=1 "$work" >"$OLDPWD/$log" 2>&1); then
    tail -n 60 "$log" >&2
    echo "fuzz.sh: ${target}_fuzzer failed; the reproducer (crash-*, leak-*, timeout-*) is in $build/" >&2
    exit 1
  fi
  grep -E "^#[0-9]+ +DONE|^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" | sed "s/^/  /"
  echo "  corpus: $(ls "$work" | wc -l) inputs"
  rm -rf "$work"
done
echo "fuzz.sh: all targets ran clean"
