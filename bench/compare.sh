#!/usr/bin/env bash
# bench/compare.sh: the end-to-end rate of two builds of linesign measured in one run, alternating, so that a
# noisy shared machine slows both alike. For "does this change regress?": BASE is the build before the change,
# NEW the build after it.
#
#   bench/compare.sh BASE_BUILD_DIR NEW_BUILD_DIR [--rounds N] [--seconds S]
#
# Each round runs, for BASE then NEW: a development server (P-256 key in SoftHSM2, durable SQLite, mTLS) made by
# that build's own --dev, a full-speed SignCsrStream run (concurrency 4) and 1,000 unary calls one at a time.
# Prints each round and the medians, the ratio NEW/BASE of the stream rate and of the unary p50, and the median
# of the paired per-round stream ratios (steadier when the machine's load changes between rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/compare.sh BASE_BUILD_DIR NEW_BUILD_DIR [--rounds N] [--seconds S]" >&2; exit 2; }
base="$1" new="$2"; shift 2
rounds=3 seconds=8
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    *) echo "bench/compare.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
me=bench/compare.sh
. bench/lib.sh
for b in "$base" "$new"; do bench_require "$b" server/linesign-server bench/linesign-bench; done
bench_workdir compare

# measure NAME BUILD: appends "stream_rate unary_p50" of one round to $work/NAME.
measure() {
  local name="$1" build="$2" port=$((20000 + RANDOM % 20000))
  local dev="$work/dev-$name"
  rm -f "$dev/linesign.db" "$dev/linesign.db-wal" "$dev/linesign.db-shm"
  bench_start "$work/server-$name.log" "$build" --dev "$dev" --listen "127.0.0.1:$port"
  local run=("$build/bench/linesign-bench" --server "127.0.0.1:$port" --tls-dir "$dev/station" --json)
  local rate p50
  rate=$("${run[@]}" --mode stream --concurrency 4 --duration "$seconds" 2>/dev/null | tail -1 |
         json_field certs_per_second)
  p50=$("${run[@]}" --mode unary --concurrency 1 --count 1000 2>/dev/null | tail -1 | json_field p50_ms)
  bench_stop
  echo "$rate $p50" >>"$work/$name"
  printf '  %-4s stream %8.0f certs/s   unary p50 %.3f ms\n' "$name" "$rate" "$p50"
}

for r in $(seq 1 "$rounds"); do
  echo "round $r"
  measure base "$base"
  measure new "$new"
done
python3 - "$work/base" "$work/new" <<'EOF'
import statistics, sys
def load(p):
    rows = [list(map(float, l.split())) for l in open(p) if l.strip()]
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
(br, bp), (nr, np_) = load(sys.argv[1]), load(sys.argv[2])
print(f"medians: base {br:,.0f} certs/s, p50 {bp:.3f} ms; new {nr:,.0f} certs/s, p50 {np_:.3f} ms")
print(f"ratio new/base: stream {nr / br:.3f}, unary p50 {np_ / bp:.3f}")
# Each round's NEW against the BASE run just before it: on a machine whose load changes between rounds, the
# median of these paired ratios is steadier than the ratio of the medians.
pairs = [n[0] / b[0] for b, n in zip(*(([list(map(float, l.split())) for l in open(p) if l.strip()])
                                       for p in sys.argv[1:3]))]
print(f"paired stream ratios: {' '.join(f'{x:.3f}' for x in pairs)}; median {statistics.median(pairs):.3f}")
EOF
