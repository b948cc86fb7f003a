#!/usr/bin/env bash
# bench/run.sh: every figure of bench/README.md in one go on one machine, with the ratios the line-rate issue
# asks for. Each figure is the median of REPEAT runs (default 3).
#
#   bench/run.sh [--build DIR] [--seconds S] [--repeat N] [--long N] [--key-copy]
#
# Runs: linesign end to end (development server: P-256 key in SoftHSM2, durable SQLite, mTLS) over SignCsrStream
# at full speed with 2 and with 1 signing worker, at half the full rate (latency), and unary SignCsr one at a
# time; the bare SoftHSM2 C_SignInit+C_Sign rate (linesign-micro-bench); `openssl speed ecdsap256`; and the
# seeds' flow, one `openssl x509 -req -CAcreateserial` process per CSR. From the bare SoftHSM2 rate (one thread)
# and OpenSSL's P-256 verification rate (one core) it computes the crypto floor, the most any server could issue
# on this machine, and the ratio to it; and the CPU per certificate of the server and of the load generator.
# --long N adds a run of N certificates sampling the server's resident memory. --key-copy runs the server with
# hsm.session_key_copy on (README "hsm.session_key_copy"). Needs python3 for the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build seconds=10 repeat=3 long=0 key_copy=false
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    --long) long="$2"; shift 2 ;;
    --key-copy) key_copy=true; shift ;;
    *) echo "usage: bench/run.sh [--build DIR] [--seconds S] [--repeat N] [--long N] [--key-copy]" >&2; exit 2 ;;
  esac
done
me=bench/run.sh
. bench/lib.sh
bench_require "$build" server/linesign-server bench/linesign-bench bench/linesign-micro-bench
command -v python3 >/dev/null || { echo "bench/run.sh: needs python3" >&2; exit 1; }

bench_workdir bench
addr="127.0.0.1:$((20000 + RANDOM % 20000))"
bench="$build/bench/linesign-bench"

median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

start_server() {  # workers
  [ -f "$work/dev/config.yaml" ] || bench_make_dev "$build" "$work/dev" "$addr"
  bench_stop
  cp "$work/dev/config.yaml" "$work/config-$1.yaml"
  printf 'signer: {workers: %s}\n' "$1" >>"$work/config-$1.yaml"
  sed -i -e "s|^listen: .*|listen: $addr|" -e "s|^  key_uri: .*|&\n  session_key_copy: $key_copy|" "$work/config-$1.yaml"
  rm -f "$work/dev/linesign.db" "$work/dev/linesign.db-wal" "$work/dev/linesign.db-shm"
  bench_start "$work/server.log" "$build" --config "$work/config-$1.yaml"
}

run() { "$bench" --server "$addr" --tls-dir "$work/dev/station" --json "$@" 2>/dev/null | tail -1; }

# stream_rate WORKERS -> "certs/s server_cpu_us_per_cert generator_cpu_us_per_cert", medians of REPEAT full-speed
# stream runs. The server's CPU is utime+stime from /proc around each run.
stream_rate() {
  start_server "$1"
  local rates=() cpus=() gens=() out t0 t1
  for _ in $(seq 1 "$repeat"); do
    t0=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
    out=$(run --mode stream --concurrency 4 --duration "$seconds")
    t1=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
    rates+=("$(echo "$out" | json_field certs_per_second)")
    gens+=("$(echo "$out" | json_field generator_cpu_us_per_cert)")
    cpus+=("$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / max(1, $(echo "$out" | json_field certificates))))")")
  done
  echo "$(median "${rates[@]}") $(median "${cpus[@]}") $(median "${gens[@]}")"
}

echo "== linesign end to end (P-256 in SoftHSM2, durable SQLite, mTLS; generator on the same machine)"
# Not in a subshell: start_server keeps the running server's pid in server_pid for the next start and cleanup.
stream_rate 2 >"$work/rate-2"; read -r max2 server_cpu gen_cpu <"$work/rate-2"
echo "stream, 2 workers: $max2 certs/s (CPU per certificate: server $server_cpu µs, load generator $gen_cpu µs)"
stream_rate 1 >"$work/rate-1"; read -r max1 _ _ <"$work/rate-1"; echo "stream, 1 worker:  $max1 certs/s"
start_server 2
half=$(python3 -c "print(int($max2 / 2))")
p99s=() p50s=()
for _ in $(seq 1 "$repeat"); do
  out=$(run --mode stream --concurrency 4 --duration "$seconds" --rate "$half")
  p99s+=("$(echo "$out" | json_field p99_ms)")
done
p99_half=$(median "${p99s[@]}"); echo "stream at $half certs/s (half of max): p99 $p99_half ms"
for _ in $(seq 1 "$repeat"); do
  p50s+=("$(run --mode unary --concurrency 1 --count 2000 | json_field p50_ms)")
done
unary_p50=$(median "${p50s[@]}"); echo "unary, one at a time: p50 $unary_p50 ms"

rss_line="not measured (use --long N)"
if [ "$long" -gt 0 ]; then
  start_server 2
  samples="$work/rss"
  ( while kill -0 "$server_pid" 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$server_pid/status" >>"$samples"; sleep 5; done ) &
  sampler=$!
  run --mode stream --concurrency 4 --count "$long" >"$work/long.json"
  kill "$sampler" 2>/dev/null || true
  rss_line=$(python3 -c "
import sys; v=[int(x) for x in open('$samples').read().split()]
print(f'{len(v)} samples: start {v[0]/1024:.0f} MiB, peak {max(v)/1024:.0f} MiB, end {v[-1]/1024:.0f} MiB')")
  echo "RSS over $long certificates: $rss_line ($(json_field certs_per_second <"$work/long.json") certs/s)"
fi
bench_stop

# The HSM's rate as the server signs: C_SignInit + C_Sign on the token object, or with --key-copy through
# linesign's signer on the session copy (BM_SignerSign adds only a SHA-256 and the session pool's lock).
hsm_filter='BM_BareSoftHsmSign' hsm_name="bare SoftHSM2 C_SignInit+C_Sign"
if [ "$key_copy" = true ]; then
  hsm_filter='BM_SignerSign/session_key_copy:1/' hsm_name="SoftHSM2 C_SignInit+C_Sign on the session key copy"
fi
echo "== $hsm_name, P-256 (linesign-micro-bench)"
TMPDIR="$work" "$build/bench/linesign-micro-bench" --benchmark_filter="$hsm_filter" \
  --benchmark_repetitions="$repeat" --benchmark_format=json \
  >"$work/bare.json" 2>/dev/null
read -r bare1 bare2 < <(python3 -c "
import json, statistics; b=json.load(open('$work/bare.json'))['benchmarks']
def rate(t): return int(statistics.median(1e9 / x['real_time'] for x in b
                        if x.get('run_type') == 'iteration' and x['run_name'].endswith('threads:' + t)))
print(rate('1'), rate('2'))")
echo "1 thread: $bare1 signatures/s, 2 threads: $bare2 signatures/s"

echo "== openssl speed ecdsap256 (in memory, one core)"
read -r speed verify < <(openssl speed -seconds 3 ecdsap256 2>/dev/null |
                         awk '/256 bits ecdsa \(nistp256\)/ {print $(NF-1), $NF}')
echo "$speed signatures/s, $verify verifications/s"
# The crypto floor: a certificate costs at least one HSM signature and one CSR signature verification, so on
# every core at once no server can exceed cores / (1/hsm_rate_one_thread + 1/verify_rate_one_core).
floor=$(python3 -c "print(round($(nproc) / (1 / $bare1 + 1 / $verify)))")
echo "crypto floor on $(nproc) cores: $floor certs/s"

echo "== the seeds' flow: one openssl x509 -req -CAcreateserial process per CSR (200 CSRs)"
seeds="$work/seeds"; mkdir -p "$seeds"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$seeds/ca.key" -out "$seeds/ca.pem" \
  -subj "/CN=Seeds CA" -days 30 2>/dev/null
for i in $(seq 1 200); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=SEED$i" \
    -out "$seeds/$i.csr" 2>/dev/null
done
t0=$(date +%s.%N)
for i in $(seq 1 200); do
  openssl x509 -req -in "$seeds/$i.csr" -CA "$seeds/ca.pem" -CAkey "$seeds/ca.key" -CAcreateserial \
    -CAserial "$seeds/ca.srl" -days 365 -out "$seeds/$i.pem" 2>/dev/null
done
t1=$(date +%s.%N)
seeds_rate=$(python3 -c "print(round(200 / ($t1 - $t0), 1))")
echo "$seeds_rate certs/s"

echo
echo "== summary ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), medians of $repeat)"
python3 - "$max2" "$max1" "$p99_half" "$unary_p50" "$bare1" "$bare2" "$speed" "$seeds_rate" "$floor" \
  "$server_cpu" "$gen_cpu" <<'EOF'
import sys
max2, max1, p99, p50, bare1, bare2, speed, seeds, floor, server_cpu, gen_cpu = map(float, sys.argv[1:])
rows = [
    ("stream certs/s (2 workers)", f"{max2:,.0f}", ">= 10,000", max2 >= 10000),
    ("  vs the crypto floor", f"{max2 / floor:.0%} of {floor:,.0f}/s", ">= 75%", max2 / floor >= 0.75),
    ("  CPU per certificate", f"server {server_cpu:.0f} us, generator {gen_cpu:.0f} us", "", None),
    ("  vs bare SoftHSM2 C_Sign, 2 threads", f"{max2 / bare2:.0%} of {bare2:,.0f}/s", ">= 50%", max2 / bare2 >= 0.5),
    ("  vs the seeds' openssl flow", f"{max2 / seeds:,.0f}x ({seeds:,.1f}/s)", ">= 300x", max2 / seeds >= 300),
    ("  vs openssl speed ecdsap256 (1 core)", f"{max2 / speed:.0%} of {speed:,.0f}/s", "", None),
    ("second worker", f"{max1:,.0f} -> {max2:,.0f} certs/s ({max2 / max1:.2f}x)", "raises throughput", max2 > max1),
    ("p99 at half of max", f"{p99:.2f} ms", "<= 5 ms", p99 <= 5),
    ("unary p50, one at a time", f"{p50:.2f} ms", "<= 1 ms", p50 <= 1),
]
for name, value, target, ok in rows:
    mark = "" if ok is None else ("met" if ok else "NOT met")
    print(f"{name:40} {value:36} {target:18} {mark}")
EOF
