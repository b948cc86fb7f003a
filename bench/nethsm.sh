#!/usr/bin/env bash
# bench/nethsm.sh: does linesign keep its throughput in front of a network HSM? The development server (P-256 key
# in SoftHSM2, durable SQLite, mTLS) with its key behind tests/netsim_pkcs11, which adds LATENCY µs to every
# C_Sign, for several numbers of signing sessions (hsm.sessions: signing threads with one PKCS#11 session each,
# shared by signer.workers batch workers, default 2). For each session
# count one server runs; rounds alternate the added latency between 0 and LATENCY by rewriting the module's control
# file (no restart), so a noisy shared machine slows both alike. Prints each run, the medians, the bound
# min(sessions / latency, rate without added latency) and the rate with latency as a share of that bound, both
# from medians and as the median of the paired per-round ratios; then linesign-nethsm-bare's rate for each session
# count (S sessions looping C_SignInit + C_Sign on the same module, no server), the most S sessions can give.
#
#   bench/nethsm.sh [--build DIR] [--sessions "2 4 8 16 32"] [--latency-us 1000] [--rounds 3] [--seconds 6]
#                   [--concurrency 4] [--window 64] [--workers 2] [--mode added|answer] [--key-copy]
# --mode answer: each C_Sign answers 1 ms after it was called, SoftHSM2's own signing inside that time (as an HSM
# signs inside its answer time); added (default): 1 ms, then SoftHSM2 signs on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build sessions="2 4 8 16 32" latency=1000 mode=added key_copy=false rounds=3 seconds=6 concurrency=4 window=64 workers=2
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --sessions) sessions="$2"; shift 2 ;;
    --latency-us) latency="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --window) window="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --key-copy) key_copy=true; shift ;;
    *) echo "usage: bench/nethsm.sh [--build DIR] [--sessions LIST] [--latency-us N] [--rounds N] [--seconds S]" \
            "[--concurrency N] [--window N]" >&2; exit 2 ;;
  esac
done
module="$(pwd)/$build/tests/netsim_pkcs11/netsim_pkcs11.so"
me=bench/nethsm.sh
. bench/lib.sh
bench_require "$build" server/linesign-server bench/linesign-bench bench/linesign-nethsm-bare
[ -f "$module" ] || { echo "bench/nethsm.sh: $module is missing (build target netsim_pkcs11)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench/nethsm.sh: needs python3" >&2; exit 1; }

bench_workdir nethsm
addr="127.0.0.1:$((20000 + RANDOM % 20000))"
# The development CA, made once by the server's own --dev.
bench_make_dev "$build" "$work/dev" "$addr"
real_module=$(awk '/^  module:/ {print $2; exit}' "$work/dev/config.yaml")
control="$work/netsim.conf"

set_latency() {  # µs; renamed over the old file, seen by the module within reread_ms
  printf 'module = %s\nreread_ms = 50\nlatency_mode = %s\nsign_latency_us = %s\n' "$real_module" "$mode" "$1" \
    >"$control.new"
  mv "$control.new" "$control"
  sleep 0.3
}

start_server() {  # sessions
  bench_stop
  set_latency 0
  sed -e "s|^  module: .*|  module: $module|" -e "s|^listen: .*|listen: $addr|" \
      -e "s|^  module_env:|  module_env:\n    LINESIGN_NETSIM_CONFIG: $control|" \
      -e "s|^  key_uri: .*|&\n  sessions: $1\n  session_key_copy: $key_copy|" \
      "$work/dev/config.yaml" >"$work/config-$1.yaml"
  printf 'signer: {workers: %s}\nhttp: {listen: ""}\n' "$workers" >>"$work/config-$1.yaml"  # no HTTP port to clash
  rm -f "$work/dev/linesign.db" "$work/dev/linesign.db-wal" "$work/dev/linesign.db-shm"
  bench_start "$work/server-$1.log" "$build" --config "$work/config-$1.yaml"
}

run() {
  "$build/bench/linesign-bench" --server "$addr" --tls-dir "$work/dev/station" --json --mode stream \
    --concurrency "$concurrency" --window "$window" --duration "$seconds" 2>/dev/null | tail -1 |
    json_field certs_per_second
}

echo "== linesign behind netsim_pkcs11: +${latency} µs per C_Sign ($mode) vs +0, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "   stream, concurrency $concurrency x window $window, ${seconds} s per run, $rounds alternating rounds," \
     "hsm.session_key_copy $key_copy"
: >"$work/results"
for s in $sessions; do
  start_server "$s"
  run >/dev/null  # warm-up: sessions opened, caches filled
  for r in $(seq 1 "$rounds"); do
    # Alternate which goes first, so neither always follows the other.
    if [ $((r % 2)) -eq 1 ]; then order="0 $latency"; else order="$latency 0"; fi
    for l in $order; do
      set_latency "$l"
      rate=$(run)
      printf '  sessions %-3s round %s  +%5s µs  %8.0f certs/s\n' "$s" "$r" "$l" "$rate"
      echo "$s $r $l $rate" >>"$work/results"
    done
  done
done
bench_stop

# The reference without linesign: S sessions looping C_SignInit + C_Sign on the same module with the latency.
set_latency "$latency"
conf=$(awk '/SOFTHSM2_CONF:/ {print $2; exit}' "$work/dev/config.yaml")
: >"$work/bare"
for s in $sessions; do
  bare=$(SOFTHSM2_CONF="$conf" LINESIGN_NETSIM_CONFIG="$control" \
         "$build/bench/linesign-nethsm-bare" "$module" "$s" "$work/dev/pin" "$seconds")
  printf '  sessions %-3s bare PKCS#11 loop, +%s µs: %8.0f signatures/s\n' "$s" "$latency" "$bare"
  echo "$s $bare" >>"$work/bare"
done

echo
python3 - "$work/results" "$latency" "$work/bare" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
lat = float(sys.argv[2]) / 1e6
bare = {int(s): float(r) for s, r in (line.split() for line in open(sys.argv[3]))}
by = {}
for s, r, l, rate in rows:
    by.setdefault(int(s), {}).setdefault(int(r), {})[int(l)] = float(rate)
print(f"| sessions | sessions / latency | bare PKCS#11 loop | without latency (median) | with +{lat*1e6:.0f} µs (median) "
      "| bound min(S/L, without) | with / bound (medians) | with / bound (paired, median) "
      "| with / min(bare, without) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in sorted(by):
    rounds = by[s]
    without = statistics.median(v[0] for v in rounds.values())
    with_ = statistics.median(v[max(v)] for v in rounds.values())
    ceiling = s / lat
    bound = min(ceiling, without)
    paired = statistics.median(v[max(v)] / min(ceiling, v[0]) for v in rounds.values())
    reach = min(bare[s], without)
    print(f"| {s} | {ceiling:,.0f}/s | {bare[s]:,.0f}/s | {without:,.0f}/s | {with_:,.0f}/s | {bound:,.0f}/s "
          f"| {with_ / bound:.0%} | {paired:.0%} | {with_ / reach:.0%} |")
EOF
