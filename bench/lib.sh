# bench/lib.sh: what the benchmark scripts share; sourced by them, not run. Each script sets `me` (its name, for
# messages) before sourcing.
#
#   bench_require BUILD BINARY...    exits 1 naming the first BINARY (a path under BUILD) that is missing
#   bench_workdir NAME               sets `work` (a new temporary directory) and `server_pid`; on exit the server
#                                    is stopped and the directory removed
#   bench_start LOG BUILD ARG...     starts BUILD's linesign-server with ARG... (output to LOG) into `server_pid`
#                                    and waits for it to listen; exits 1 showing LOG when it does not
#   bench_stop                       stops the server started last, if any
#   bench_make_dev BUILD DEV ADDR    the development CA, TLS credentials and config.yaml in DEV, made by one start
#                                    of the server's own --dev
#   json_field NAME                  a field of the last JSON line on standard input

bench_require() {
  local build="$1" b
  shift
  for b in "$@"; do
    [ -x "$build/$b" ] || { echo "$me: $build/$b is missing; run scripts/build.sh" >&2; exit 1; }
  done
}

bench_workdir() {
  work="$(mktemp -d -t "linesign-$1-XXXXXX")"
  server_pid=""
  trap 'bench_stop; rm -rf "$work"' EXIT
}

bench_start() {
  local log="$1" build="$2"
  shift 2
  bench_stop
  "$build/server/linesign-server" "$@" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 240); do grep -qs "listening on" "$log" && return 0; sleep 0.5; done
  echo "$me: the server did not start:" >&2
  cat "$log" >&2
  exit 1
}

bench_stop() {
  [ -n "${server_pid:-}" ] || return 0
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

bench_make_dev() {
  bench_start "$(dirname "$2")/first.log" "$1" --dev "$2" --listen "$3"
  bench_stop
}

json_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])['$1'])"; }
