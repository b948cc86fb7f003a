#!/usr/bin/env bash
# bench/nethsm_keycopy.sh: hsm.session_key_copy end to end. The development server (P-256 key in SoftHSM2, durable
# SQLite, mTLS, 2 workers) with session_key_copy off and on, alternating round after round (which goes first
# alternates too) so a noisy shared machine slows both alike; a full-speed SignCsrStream run (concurrency 4) per
# server. Prints each run, the medians and the median of the paired per-round ratios on/off.
#
#   bench/nethsm_keycopy.sh [--build DIR] [--rounds 4] [--seconds 6]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build rounds=4 seconds=6
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    *) echo "usage: bench/nethsm_keycopy.sh [--build DIR] [--rounds N] [--seconds S]" >&2; exit 2 ;;
  esac
done
me=bench/nethsm_keycopy.sh
. bench/lib.sh
bench_require "$build" server/linesign-server bench/linesign-bench
bench_workdir keycopy
addr="127.0.0.1:$((20000 + RANDOM % 20000))"
bench_make_dev "$build" "$work/dev" "$addr"

measure() {  # true|false -> certs/s
  sed -e "s|^listen: .*|listen: $addr|" -e "s|^  key_uri: .*|&\n  session_key_copy: $1|" \
      "$work/dev/config.yaml" >"$work/config-$1.yaml"
  printf 'signer: {workers: 2}\nhttp: {listen: ""}\n' >>"$work/config-$1.yaml"  # no HTTP port to clash
  rm -f "$work/dev/linesign.db" "$work/dev/linesign.db-wal" "$work/dev/linesign.db-shm"
  bench_start "$work/server-$1.log" "$build" --config "$work/config-$1.yaml"
  "$build/bench/linesign-bench" --server "$addr" --tls-dir "$work/dev/station" --json --mode stream \
    --concurrency 4 --duration "$seconds" 2>/dev/null | tail -1 | json_field certs_per_second
  bench_stop
}

echo "== hsm.session_key_copy off vs on, end to end, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
: >"$work/results"
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="false true"; else order="true false"; fi
  for c in $order; do
    rate=$(measure "$c")
    printf '  round %s  session_key_copy %-5s  %8.0f certs/s\n' "$r" "$c" "$rate"
    echo "$r $c $rate" >>"$work/results"
  done
done
python3 - "$work/results" <<'EOF'
import statistics, sys
by = {}
for r, c, rate in (line.split() for line in open(sys.argv[1])):
    by.setdefault(r, {})[c] = float(rate)
off = statistics.median(v["false"] for v in by.values())
on = statistics.median(v["true"] for v in by.values())
paired = statistics.median(v["true"] / v["false"] for v in by.values())
print(f"medians: off {off:,.0f}/s, on {on:,.0f}/s, on/off {on / off:.3f}; paired on/off median {paired:.3f}")
EOF
