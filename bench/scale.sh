#!/usr/bin/env bash
# scale.sh: the scale benchmark of issue 13 (bench/README.md, "Ten million certificates"), step by step:
#
#   bench/scale.sh pg-start WORK               a PostgreSQL for the store figures (tests/pg/pg_cluster.sh, then
#                                              shared_buffers 1GB, max_wal_size 4GB) with databases big and empty
#   bench/scale.sh store sqlite|postgres WORK ROWS [OPTION...]
#                                              linesign-list-bench: fill WORK's big store to ROWS, its size, the
#                                              list filters, then 64-certificate RecordBatch rounds alternating
#                                              with the empty store (OPTIONs to linesign-list-bench, e.g.
#                                              --skip-list to repeat the rounds)
#   bench/scale.sh e2e sqlite|postgres WORK    a development server on the big store and on the empty one,
#                                              linesign-bench stream (concurrency 8, 6 s), 3 alternating rounds
#   bench/scale.sh replicas WORK               deploy/loopback-set.sh with 1 and with 2 replicas, 3 alternating
#                                              rounds through HAProxy, PostgreSQL's statistics read before and
#                                              after each run (WAL, commits, rows, statements per certificate)
#   bench/scale.sh pg-stop WORK
#
# BUILD (default build) names the build directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${BUILD:-$root/build}")
die() { echo "scale: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: scale.sh pg-start|store|e2e|replicas|pg-stop ..."
cmd=$1
shift

# psql_at STATE SQL: runs SQL as the superuser over the cluster's unix socket, unaligned, no headers.
psql_at() {
  local dir port bindir
  dir=$(sed -n 's/^dir=//p' "$1"); port=$(sed -n 's/^port=//p' "$1"); bindir=$(sed -n 's/^bindir=//p' "$1")
  "$bindir/psql" -X -q -At -h "$dir/sock" -p "$port" -U linesign -d "${3:-postgres}" -c "$2"
}
pg_conn() { echo "$(sed -n 's/^connection=//p' "$1" | sed 's/dbname=postgres//') dbname=$2"; }

# dev_server DEVDIR CONFIG STORE_YAML PORT LOG: a development configuration with another store and port, started.
dev_server() {
  python3 - "$1/config.yaml" "$2" "$3" "$4" <<'PY'
import sys, yaml
src, dst, store, port = sys.argv[1:]
c = yaml.safe_load(open(src))
c["listen"] = f"127.0.0.1:{port}"
c.setdefault("http", {})["listen"] = f"127.0.0.1:{int(port) + 1}"
c["store"] = yaml.safe_load(store)
yaml.safe_dump(c, open(dst, "w"), sort_keys=False)
PY
  "$build/server/linesign-server" --config "$2" >"$5" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 600); do
    grep -q "listening on" "$5" && return 0
    kill -0 "$server_pid" 2>/dev/null || { tail -20 "$5" >&2; die "the server on $3 did not start"; }
    sleep 0.5
  done
  die "the server on $3 did not start within 300 s"
}

# bench_run PORT TLSDIR: one linesign-bench stream run; prints its JSON summary.
bench_run() {
  "$build/bench/linesign-bench" --server "127.0.0.1:$1" --tls-dir "$2" --mode stream --concurrency 8 --duration 6 \
    --json 2>/dev/null
}

case "$cmd" in
  pg-start)
    work=$1; mkdir -p "$work"
    bash "$root/tests/pg/pg_cluster.sh" start "$work/pg.state"
    dir=$(sed -n 's/^dir=//p' "$work/pg.state")
    printf 'shared_buffers = 1GB\nmax_wal_size = 4GB\n' >>"$dir/data/postgresql.conf"
    bash "$root/tests/pg/pg_cluster.sh" pause "$work/pg.state"
    bash "$root/tests/pg/pg_cluster.sh" resume "$work/pg.state"
    psql_at "$work/pg.state" "CREATE DATABASE big"
    psql_at "$work/pg.state" "CREATE DATABASE empty"
    ;;
  pg-stop)
    bash "$root/tests/pg/pg_cluster.sh" stop "$1/pg.state"
    ;;
  store)
    backend=$1; work=$2; rows=$3; extra=("${@:4}")
    if [ "$backend" = sqlite ]; then
      set -- --db "$work/big.db" --compare-db "$work/empty.db"
    else
      set -- --postgres "$(pg_conn "$work/pg.state" big)" --compare-postgres "$(pg_conn "$work/pg.state" empty)" \
        --password-file "$(sed -n 's/^password_file=//p' "$work/pg.state")"
    fi
    "$build/bench/linesign-list-bench" "$@" --rows "$rows" --fill-batch 10000 --rate-batches 300 --rate-batch-size 64 \
      --rate-rounds 3 "${extra[@]}"
    ;;
  e2e)
    backend=$1; work=$2
    dev=$work/dev
    if [ ! -f "$dev/config.yaml" ]; then
      "$build/server/linesign-server" --dev "$dev" --listen 127.0.0.1:0 >"$work/dev-prepare.log" 2>&1 &
      prep=$!
      for _ in $(seq 1 120); do grep -q "listening on" "$work/dev-prepare.log" && break; sleep 0.5; done
      kill "$prep"; wait "$prep" || true
    fi
    if [ "$backend" = sqlite ]; then
      big="{sqlite: {path: $work/big.db}}"; empty="{sqlite: {path: $work/e2e-empty.db}}"
    else
      pw=$(sed -n 's/^password_file=//p' "$work/pg.state")
      psql_at "$work/pg.state" "CREATE DATABASE e2e_empty" 2>/dev/null || true
      big="{postgres: {connection: '$(pg_conn "$work/pg.state" big)', password_file: $pw}}"
      empty="{postgres: {connection: '$(pg_conn "$work/pg.state" e2e_empty)', password_file: $pw}}"
    fi
    for round in 1 2 3; do
      for which in big empty; do
        store=$big; [ "$which" = empty ] && store=$empty
        start=$(date +%s.%N)
        dev_server "$dev" "$work/e2e-$which.yaml" "$store" 7643 "$work/e2e-$which-$round.log"
        up=$(echo "$(date +%s.%N) - $start" | bc)
        out=$(bench_run 7643 "$dev/station")
        kill "$server_pid"; wait "$server_pid" || true
        echo "e2e $backend round $round $which (start-up ${up} s): $out"
      done
    done
    ;;
  replicas)
    work=$1; mkdir -p "$work"
    for round in 1 2 3; do
      for n in 1 2; do
        set_dir=$work/set-$n
        bash "$root/deploy/loopback-set.sh" start "$set_dir" --replicas "$n" --port 8543 >"$work/set-$n.log"
        st=$set_dir/pg.state
        stats() {
          psql_at "$st" "SELECT w.wal_records, w.wal_bytes, d.xact_commit, d.tup_inserted, d.tup_updated,
            d.tup_deleted, (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s WHERE s.dbid = d.datid)
            FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = 'postgres'"
        }
        psql_at "$st" "SELECT pg_stat_statements_reset()" >/dev/null
        # The replicas' own background work (health checks, metrics, outbox polls) over a window as long as the
        # run's, without load: subtracted from the run's figures.
        idle0=$(stats); sleep 17; idle1=$(stats)
        before=$(stats)
        t0=$(date +%s.%N)
        out=$(bench_run 8543 "$set_dir/dev/station")
        sleep 11  # idle backends report their statistics within 10 s
        after=$(stats)
        window=$(echo "$(date +%s.%N) - $t0" | bc)
        echo "replicas $n round $round: $out"
        python3 - "$out" "$before" "$after" "$idle0" "$idle1" "$window" <<'PY'
import json, sys
out = json.loads(sys.argv[1])
before, after, idle0, idle1 = (a.split("|") for a in sys.argv[2:6])
scale = float(sys.argv[6]) / 17.0  # the idle window, stretched to the run's
d = [float(a) - float(b) - scale * (float(i1) - float(i0)) for a, b, i0, i1 in zip(after, before, idle0, idle1)]
n = out["certificates"]
names = ["WAL records", "WAL bytes", "commits", "rows inserted", "rows updated", "rows deleted", "statements"]
print("  per certificate (%d): " % n + ", ".join("%s %.4g" % (k, v / n) for k, v in zip(names, d)))
print("  certificates per commit %.1f; run's raw deltas less idle: %s" % (n / d[2], " ".join("%.0f" % v for v in d)))
PY
        if [ "$round" = 3 ]; then
          psql_at "$st" "SELECT calls, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) FROM pg_stat_statements
            ORDER BY calls DESC LIMIT 25" >"$work/statements-$n.txt"
        fi
        bash "$root/deploy/loopback-set.sh" stop "$set_dir" >/dev/null
      done
    done
    ;;
  *) die "unknown command $cmd" ;;
esac
