#!/usr/bin/env bash
# bench/profile.sh: where a certificate's server CPU goes, at full speed. Starts the development server (P-256 key
# in SoftHSM2, durable SQLite, mTLS; `--key-copy`: hsm.session_key_copy on), drives it with
# linesign-bench over SignCsrStream, samples the server with `perf record -g` for SECONDS in the middle of the run,
# and prints the CPU per certificate (µs) by thread group and library, the kernel's share by system call, and the
# system calls and bytes written per certificate (from /proc/PID/io), over the certificates issued in the window.
#
#   bench/profile.sh [--build DIR] [--seconds S] [--concurrency N] [--key-copy]
#
# Needs perf (Debian's linux-perf) and root or kernel.perf_event_paranoid <= 1. Not a test: its figures are
# bench/README.md's "Where the time goes".
set -euo pipefail
cd "$(dirname "$0")/.."
build=build seconds=8 concurrency=4 key_copy=false
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --key-copy) key_copy=true; shift ;;
    *) echo "usage: bench/profile.sh [--build DIR] [--seconds S] [--concurrency N] [--key-copy]" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "bench/profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
me=bench/profile.sh
. bench/lib.sh
bench_require "$build" server/linesign-server bench/linesign-bench
bench_workdir profile
addr="127.0.0.1:$((20000 + RANDOM % 20000))"
bench_make_dev "$build" "$work/dev" "$addr"
cp "$work/dev/config.yaml" "$work/config.yaml"
sed -i -e "s|^listen: .*|listen: $addr|" -e "s|^  key_uri: .*|&\n  session_key_copy: $key_copy|" "$work/config.yaml"
rm -f "$work/dev/linesign.db" "$work/dev/linesign.db-wal" "$work/dev/linesign.db-shm"
bench_start "$work/server.log" "$build" --config "$work/config.yaml"

"$build/bench/linesign-bench" --server "$addr" --tls-dir "$work/dev/station" --mode stream \
  --concurrency "$concurrency" --duration $((seconds + 6)) --json >"$work/bench.json" 2>/dev/null &
bench_pid=$!
sleep 3
io() { awk '/^(syscr|syscw|wchar):/ {printf "%s ", $2}' "/proc/$server_pid/io"; }
certs() { wc -l <"$work/dev/audit.jsonl"; }
io0=$(io) c0=$(certs) t0=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
perf record -F 999 -g -p "$server_pid" -o "$work/perf.data" -- sleep "$seconds" >/dev/null 2>&1
io1=$(io) c1=$(certs) t1=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
wait "$bench_pid"
perf script -i "$work/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null >"$work/perf.txt"

python3 - "$work/perf.txt" "$((c1 - c0))" "$io0" "$io1" "$((t1 - t0))" "$(getconf CLK_TCK)" "$work/bench.json" <<'EOF'
import collections, json, re, sys
path, certs = sys.argv[1], int(sys.argv[2])
io0, io1 = [list(map(int, v.split())) for v in sys.argv[3:5]]
ticks, hz = int(sys.argv[5]), int(sys.argv[6])
bench = json.loads(open(sys.argv[7]).read().splitlines()[-1])
cpu_us = ticks / hz * 1e6 / max(1, certs)

# perf script: a header line "comm tid" per sample, then its stack, innermost frame first ("ip sym (dso)").
samples = []
comm, frames = None, []
for line in open(path, errors="replace"):
    if not line.strip():
        if comm is not None: samples.append((comm, frames))
        comm, frames = None, []
    elif not line.startswith((" ", "\t")):
        comm, frames = line.split()[0], []
    else:
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if m: frames.append((m.group(1), m.group(2)))
if comm is not None: samples.append((comm, frames))
n = len(samples)
if n == 0 or certs == 0:
    sys.exit("bench/profile.sh: no samples or no certificates in the window")

def group(comm):
    # gRPC's callback threads run the RPC handlers (CSR checks, TLS, HTTP/2); the rest are linesign's own (the
    # batch workers and signing threads: TBS, HSM, store, audit).
    return "gRPC threads (TLS, HTTP/2, CSR checks)" if comm.startswith(("nexting", "default-exec", "grpc")) \
        else "linesign threads (sign, record, answer)"

def lib(dso):
    d = dso.rsplit("/", 1)[-1]
    for short in ("kernel", "libcrypto", "libsqlite3", "libsofthsm2", "libc.so", "libjemalloc", "libgrpc",
                  "libprotobuf", "libssl", "linesign-server", "libstdc++"):
        if short in d: return short.replace(".so", "")
    return "other"

def syscall(frames):
    for sym, dso in frames:
        m = re.match(r"__(?:x64|ia32)_sys_(\w+)", sym)
        if m: return m.group(1)
    for sym, dso in frames:
        if "irq" in sym or "softirq" in sym: return "(interrupts)"
    return "(other kernel)"

by_group = collections.Counter(group(c) for c, _ in samples)
by_lib = collections.Counter((group(c), lib(f[0][1]) if f else "other") for c, f in samples)
by_sys = collections.Counter(syscall(f) for c, f in samples if f and "kernel" in f[0][1])
per = lambda k: cpu_us * k / n

print(f"{certs} certificates in {sys.argv[5]} ticks; server CPU {cpu_us:.0f} µs per certificate "
      f"({bench['certs_per_second']:,.0f} certs/s over the run, generator {bench.get('generator_cpu_us_per_cert', 0):.0f} "
      f"µs per certificate); {n} samples")
print("\n| where | µs per certificate | share |\n|---|---:|---:|")
for g, k in by_group.most_common():
    print(f"| **{g}** | **{per(k):.0f}** | **{k / n:.0%}** |")
    for (gg, l), kk in by_lib.most_common():
        if gg == g and kk / n >= 0.005: print(f"| {g.split(' (')[0]}: {l} | {per(kk):.1f} | {kk / n:.1%} |")
print("\n| kernel time by system call | µs per certificate | share of all |\n|---|---:|---:|")
for s, k in by_sys.most_common(12):
    print(f"| {s} | {per(k):.1f} | {k / n:.1%} |")
d = [b - a for a, b in zip(io0, io1)]
wchar, syscr, syscw = d  # /proc/PID/io's order
print(f"\nper certificate: {syscr / certs:.1f} read-type system calls, {syscw / certs:.1f} write-type system calls, "
      f"{wchar / certs / 1024:.1f} KiB written (/proc/PID/io: syscr, syscw, wchar)")
EOF
