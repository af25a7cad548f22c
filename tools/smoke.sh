#!/usr/bin/env bash
# Smoke test for CI: starts sseloop on a free port, runs the load generator in its three modes
# at a tiny size (20 subscribers), and fails unless every event reached every subscriber exactly
# once. Takes a few seconds after the build. Stops only the server it started.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

cargo build --release --quiet -p sseloop -p loadgen --bins
SERVER="$TARGET_DIR/release/sseloop"
LOAD="$TARGET_DIR/release/sseloop-load"

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

RUST_LOG=info "$SERVER" --listen 127.0.0.1:0 2>"$tmp/server.log" &
server_pid=$!

port=""
for _ in $(seq 200); do
    port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$tmp/server.log")"
    [ -n "$port" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "smoke: server exited early:" >&2
        cat "$tmp/server.log" >&2
        exit 1
    fi
    sleep 0.05
done
if [ -z "$port" ]; then
    echo "smoke: server did not report its port" >&2
    cat "$tmp/server.log" >&2
    exit 1
fi

common=(
    --url-template "http://127.0.0.1:$port/events?topic={topic}"
    --publish-url "http://127.0.0.1:$port/publish?topic={topic}"
    --server-pid "$server_pid" --timeout-secs 30 --stall-secs 5
)
status=0
run() {
    echo "== smoke: sseloop-load $*"
    if ! "$LOAD" "${common[@]}" "$@"; then
        status=1
    fi
}
run --subscribers 20 --events 200 --topics 2 --window 64
run --subscribers 20 --events 100 --rate 1000 --topic-prefix paced
run --subscribers 20 --idle --duration-secs 0.2

if [ "$status" -ne 0 ]; then
    echo "smoke: FAILED (server log follows)" >&2
    tail -n 50 "$tmp/server.log" >&2
    exit 1
fi
echo "smoke: ok"
