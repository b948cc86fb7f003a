#!/usr/bin/env bash
# pg_cluster.sh: a throw-away PostgreSQL server for the tests, on 127.0.0.1 at a free port, in a temporary
# directory (data, unix socket, log), with fsync on. ctest runs `start` as the fixture setup of every test that
# needs PostgreSQL and `stop` as its cleanup (tests/pg/CMakeLists.txt); tests read STATE (LINESIGN_TEST_PG).
#
#   pg_cluster.sh start STATE    initdb + start; writes STATE: dir=, port=, connection=, password_file=, bindir=
#                                (LINESIGN_PG_BINDIR picks the server binaries; else the newest under
#                                /usr/lib/postgresql/*/bin)
#   pg_cluster.sh stop STATE     stop the server, remove its directory and STATE
#   pg_cluster.sh pause STATE    stop the server, keep its data (a PostgreSQL outage)
#   pg_cluster.sh resume STATE   start it again on the same port
#
# initdb and the server refuse to run as root: as root (CI) they run as Debian's `postgres` system user through
# runuser, and the directory belongs to that user. The superuser `linesign` has a random password, required over
# TCP (scram-sha-256), so every test also goes through the store's password_file. PostgreSQL missing is an error
# naming the package, never a skip.
set -euo pipefail

die() { echo "pg_cluster: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: pg_cluster.sh start|stop|pause|resume STATE"
cmd=$1
state=$2

find_bindir() {
  if [ -n "${LINESIGN_PG_BINDIR:-}" ]; then
    [ -x "$LINESIGN_PG_BINDIR/initdb" ] || die "LINESIGN_PG_BINDIR=$LINESIGN_PG_BINDIR has no initdb"
    echo "$LINESIGN_PG_BINDIR"; return
  fi
  # The highest major version installed (a numeric sort: 9.6 before 15).
  best=$(for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && echo "$d"; done | sort -t/ -k4 -n | tail -1)
  [ -n "$best" ] || die "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin: install the postgresql package (scripts/install-deps.sh)"
  echo "$best"
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

read_state() {
  [ -f "$state" ] || die "$state: no such cluster state (was pg_cluster.sh start run?)"
  dir=$(sed -n 's/^dir=//p' "$state")
  port=$(sed -n 's/^port=//p' "$state")
  bindir=$(sed -n 's/^bindir=//p' "$state")
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
  start)
    bindir=$(find_bindir)
    if [ "$(id -u)" -eq 0 ]; then
      getent passwd postgres >/dev/null || die "running as root needs the 'postgres' system user (Debian's postgresql package creates it) to run initdb"
    fi
    base=${TMPDIR:-/tmp}
    # The server's user must reach its directory: root's private TMPDIR is out of its reach.
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -w "$base" -a -x "$base" 2>/dev/null; then base=/tmp; fi
    dir=$(mktemp -d "$base/linesign-pg-XXXXXX")
    chmod 0700 "$dir"
    mkdir "$dir/sock"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/password"
    chmod 0600 "$dir/password"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -U linesign --pwfile="$dir/password" --auth-local=trust \
      --auth-host=scram-sha-256 --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed (log above)"; }
    ok=""
    for attempt in 1 2 3; do
      port=$(free_port)
      cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
max_connections = 300
fsync = on
CONF
      if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then ok=1; break; fi
    done
    [ -n "$ok" ] || { tail -20 "$dir/server.log" >&2; die "the PostgreSQL server did not start (log above)"; }
    mkdir -p "$(dirname "$state")"
    cat >"$state" <<STATE
dir=$dir
port=$port
bindir=$bindir
connection=host=127.0.0.1 port=$port user=linesign dbname=postgres
password_file=$dir/password
STATE
    echo "pg_cluster: PostgreSQL ($bindir) on 127.0.0.1:$port in $dir"
    ;;
  stop)
    read_state
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir" "$state"
    ;;
  pause)
    read_state
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  resume)
    read_state
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
  *)
    die "unknown command '$cmd' (start, stop, pause, resume)"
    ;;
esac
