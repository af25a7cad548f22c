#!/usr/bin/env bash
# Smoke test for CI: starts sseloop on a free port, runs the load generator in its three modes
# at a tiny size (20 subscribers), and fails unless every event reached every subscriber exactly
# once. Takes a few seconds after the build. Stops only the server it started.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

cargo build --release --quiet -p sseloop -p loadgen -p probe --bins
SERVER="$TARGET_DIR/release/sseloop"
LOAD="$TARGET_DIR/release/sseloop-load"
PROBE="$TARGET_DIR/release/sseloop-probe"

tmp="$(mktemp -d)"
server_pid=""
probe_pid=""
cleanup() {
    for pid in "$server_pid" "$probe_pid"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
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
# The trickle shape: many publisher connections on one topic, a small window.
run --subscribers 20 --events 400 --window 32 --publishers 8 --spread-publishers \
    --topic-prefix trickle
# Wildcards: every subscriber on one pattern, events spread over its topics (bench.sh pattern-10k).
run --subscribers 20 --events 400 --window 32 --publishers 4 --spread-publishers \
    --subscribe-pattern --topic-prefix pat/ --topics 10 --settle-secs 0.2

# The ceiling probe (bench.sh's "probe" target) must satisfy the tool exactly as sseloop does.
"$PROBE" --listen 127.0.0.1:0 2>"$tmp/probe.log" &
probe_pid=$!
probe_port=""
for _ in $(seq 200); do
    probe_port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$tmp/probe.log")"
    [ -n "$probe_port" ] && break
    kill -0 "$probe_pid" 2>/dev/null || break
    sleep 0.05
done
echo "== smoke: sseloop-load against sseloop-probe (port ${probe_port:-none})"
if [ -z "$probe_port" ] || ! "$LOAD" --subscribers 20 --events 400 --window 32 --publishers 8 \
    --spread-publishers --server-pid "$probe_pid" --timeout-secs 30 --stall-secs 5 \
    --url-template "http://127.0.0.1:$probe_port/events?topic={topic}" \
    --publish-url "http://127.0.0.1:$probe_port/publish?topic={topic}"; then
    cat "$tmp/probe.log" >&2
    status=1
fi

if [ "$status" -ne 0 ]; then
    echo "smoke: FAILED (server log follows)" >&2
    tail -n 50 "$tmp/server.log" >&2
    exit 1
fi
echo "smoke: ok"
