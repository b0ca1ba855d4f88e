# Sourced by scripts/test.sh: a throw-away PostgreSQL server from Debian's
# packages on a free loopback port, for the store and kas tests.
# Exports GLAGENT_TEST_POSTGRES_URL.

postgres_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && echo "$d"; done | sort -V | tail -1
}

postgres_start() {
  local bin port
  bin=$(postgres_bin)
  [ -n "$bin" ] || { echo "PostgreSQL server binaries not found" >&2; return 1; }
  PG_DIR=$(mktemp -d -t glagent-pg.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local run=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$PG_DIR"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
  "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  PG_RUN=("${run[@]}")
  PG_BIN=$bin
  export GLAGENT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "[postgres] $GLAGENT_TEST_POSTGRES_URL" >&2
}

postgres_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
