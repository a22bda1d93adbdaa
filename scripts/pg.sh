#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 for the tests.
#   scripts/pg.sh start   installs PostgreSQL if absent (Debian), starts it,
#                         prints `export DATABASE_URL_PG=...`
#   scripts/pg.sh stop    stops it
# Idempotent: starting twice reuses the running server.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PG_PORT:-55432}"
# Outside the clone: when running as root the server runs as `postgres`,
# which may not be able to enter the clone's directory.
DIR="${TMPDIR:-/tmp}/epi-pgdata-$PORT"
LOG="${TMPDIR:-/tmp}/epi-pg-$PORT.log"

find_bin() {
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN="$(find_bin || true)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    echo "installing PostgreSQL..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
fi

# initdb and postgres refuse to run as root: use the postgres user then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
start)
    if [ ! -f "$DIR/PG_VERSION" ]; then
        rm -rf "$DIR"
        mkdir -p "$DIR"
        [ "$(id -u)" = 0 ] && { id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres; chown postgres "$DIR"; }
        as_pg "$BIN/initdb" -D "$DIR" -U postgres --auth=trust --no-sync -E UTF8 >&2
    fi
    [ "$(id -u)" = 0 ] && touch "$LOG" && chown postgres "$LOG"
    if ! as_pg "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
        as_pg "$BIN/pg_ctl" -D "$DIR" -l "$LOG" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $PORT -k /tmp -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >&2
    fi
    echo "export DATABASE_URL_PG=postgres://postgres@127.0.0.1:$PORT/postgres"
    ;;
stop)
    if [ -n "$BIN" ] && [ -f "$DIR/PG_VERSION" ]; then
        as_pg "$BIN/pg_ctl" -D "$DIR" -m fast stop >&2 || true
    fi
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
