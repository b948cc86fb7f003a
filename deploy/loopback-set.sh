#!/usr/bin/env bash
# loopback-set.sh: the replicated set-up of deploy/README-lb.md on one machine, for trying it and for the scale
# benchmark. It starts a throw-away PostgreSQL (tests/pg/pg_cluster.sh), N linesign replicas on it sharing one
# development SoftHSM2 token and CA, and HAProxy in front (deploy/haproxy/linesign.cfg, TCP passthrough, health
# from each replica's /readyz). Everything is on 127.0.0.1 and under DIR; Ctrl-C (or `stop`) ends it all.
#
#   deploy/loopback-set.sh start DIR [--replicas N] [--port P]   (default 2 replicas, HAProxy on 127.0.0.1:8443)
#   deploy/loopback-set.sh stop DIR
#
# Then, e.g.:  build/bench/linesign-bench --server 127.0.0.1:8443 --tls-dir DIR/dev/station --seconds 10
# Needs a build (scripts/build.sh) and Debian's postgresql and haproxy packages (scripts/install-deps.sh).
set -euo pipefail

die() { echo "loopback-set: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: loopback-set.sh start|stop DIR [--replicas N] [--port P]"
cmd=$1
dir=$(realpath -m "$2")
shift 2
replicas=2
port=8443
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ "$replicas" =~ ^[1-9][0-9]?$ ]] || die "--replicas takes 1 to 99"
root=$(cd "$(dirname "$0")/.." && pwd)
server=${LINESIGN_SERVER:-$root/build/server/linesign-server}

stop_all() {
  for pidfile in "$dir"/replica-*.pid "$dir"/haproxy.pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  [ -f "$dir/pg.state" ] && "$root/tests/pg/pg_cluster.sh" stop "$dir/pg.state" || true
}

if [ "$cmd" = stop ]; then
  stop_all
  echo "loopback-set: stopped"
  exit 0
fi
[ "$cmd" = start ] || die "unknown command '$cmd' (start, stop)"
[ -x "$server" ] || die "$server is missing: run scripts/build.sh first (or set LINESIGN_SERVER)"
command -v haproxy >/dev/null || die "haproxy is missing: install it (scripts/install-deps.sh)"
mkdir -p "$dir"
trap 'stop_all; exit 1' INT TERM

# 1. The development CA, token and credentials, made once by development mode (started, then stopped).
if [ ! -f "$dir/dev/config.yaml" ]; then
  "$server" --dev "$dir/dev" --listen 127.0.0.1:0 >"$dir/dev-prepare.log" 2>&1 &
  prep=$!
  for _ in $(seq 1 120); do
    grep -q "listening on" "$dir/dev-prepare.log" && break
    kill -0 "$prep" 2>/dev/null || { cat "$dir/dev-prepare.log" >&2; die "development mode failed"; }
    sleep 0.5
  done
  kill "$prep"; wait "$prep" || true
fi

# 2. PostgreSQL.
if [ ! -f "$dir/pg.state" ]; then
  "$root/tests/pg/pg_cluster.sh" start "$dir/pg.state"
  # pg_stat_statements (statements per certificate, bench/scale.sh) when the server has it: it must be preloaded,
  # so one restart before any replica connects.
  pg_dir=$(sed -n 's/^dir=//p' "$dir/pg.state"); pg_bin=$(sed -n 's/^bindir=//p' "$dir/pg.state")
  if [ -f "$("$pg_bin/pg_config" --pkglibdir 2>/dev/null || echo "$pg_bin/../lib")/pg_stat_statements.so" ]; then
    echo "shared_preload_libraries = 'pg_stat_statements'" >>"$pg_dir/data/postgresql.conf"
    "$root/tests/pg/pg_cluster.sh" pause "$dir/pg.state"
    "$root/tests/pg/pg_cluster.sh" resume "$dir/pg.state"
    "$pg_bin/psql" -X -q -h "$pg_dir/sock" -p "$(sed -n 's/^port=//p' "$dir/pg.state")" -U linesign -d postgres \
      -c "CREATE EXTENSION pg_stat_statements"
  fi
fi
connection=$(sed -n 's/^connection=//p' "$dir/pg.state")
password_file=$(sed -n 's/^password_file=//p' "$dir/pg.state")
cp "$password_file" "$dir/pg.password" && chmod 0600 "$dir/pg.password"

# 3. The replicas: the development configuration with the PostgreSQL store, their own ports and audit files.
backends=""
for i in $(seq 1 "$replicas"); do
  grpc_port=$((port + 10 * i)); http_port=$((grpc_port + 1))
  python3 - "$dir/dev/config.yaml" "$dir/replica-$i.yaml" "$connection" "$dir/pg.password" "$grpc_port" \
    "$http_port" "$dir/replica-$i.audit.jsonl" <<'PY'
import sys, yaml
src, dst, connection, password_file, grpc_port, http_port, audit = sys.argv[1:]
c = yaml.safe_load(open(src))
c["listen"] = f"127.0.0.1:{grpc_port}"
c.setdefault("http", {})["listen"] = f"127.0.0.1:{http_port}"
c["store"] = {"postgres": {"connection": connection, "password_file": password_file}}
if "audit" in c:
    c["audit"]["file"] = audit
yaml.safe_dump(c, open(dst, "w"), sort_keys=False)
PY
  "$server" --config "$dir/replica-$i.yaml" >"$dir/replica-$i.log" 2>&1 &
  echo $! >"$dir/replica-$i.pid"
  backends+="    server replica$i 127.0.0.1:$grpc_port check port $http_port"$'\n'
done
for i in $(seq 1 "$replicas"); do
  for _ in $(seq 1 120); do
    grep -q "listening on" "$dir/replica-$i.log" && break
    kill -0 "$(cat "$dir/replica-$i.pid")" 2>/dev/null || { cat "$dir/replica-$i.log" >&2; stop_all; die "replica $i failed"; }
    sleep 0.5
  done
done

# 4. HAProxy from the recipe, its example replicas replaced by these.
python3 - "$root/deploy/haproxy/linesign.cfg" "$dir/haproxy.cfg" "$port" "$backends" <<'PY'
import re, sys
src, dst, port, backends = sys.argv[1:]
cfg = open(src).read()
cfg = cfg.replace("bind :8443", f"bind 127.0.0.1:{port}")
cfg = re.sub(r"(    server replica\d+ .*\n)+", lambda m: backends, cfg, count=1)
open(dst, "w").write(cfg)
PY
haproxy -c -f "$dir/haproxy.cfg" >/dev/null || die "haproxy refused $dir/haproxy.cfg"
haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
echo $! >"$dir/haproxy.pid"

echo "loopback-set: $replicas replicas on PostgreSQL ($connection) behind HAProxy on 127.0.0.1:$port"
echo "loopback-set: station credentials: --tls-dir $dir/dev/station; logs in $dir; stop with: $0 stop $dir"
