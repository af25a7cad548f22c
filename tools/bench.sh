#!/usr/bin/env bash
# Benchmarks sseloop with sseloop-load (not used by CI; tools/smoke.sh is the CI check).
#
#   tools/bench.sh                      # every scenario, 5 repeats each, against sseloop
#   REPEATS=1 SCENARIOS="fanout-1k latency-100" tools/bench.sh
#   PRIORITY=rt SCENARIOS=trickle tools/bench.sh    # trickle load: sseloop vs the ceiling probe
#   TARGETS=sseloop SCENARIOS=pattern tools/bench.sh # issue 12: one pattern vs one exact topic
#   TARGETS=sseloop SCENARIOS=burst-rss-10k tools/bench.sh   # issue 11: RSS after a burst
#
# Each repeat starts a fresh server pinned to CPU 0 and runs the tool pinned to CPU 1, writes the
# tool's JSON report to tools/results/<UTC time>/, and the end prints the median of each figure
# per target and scenario (sseloop-load --summarize), then medians with min–max spread of the
# throughput figures and their ratios to the probe and to each peer (tools/bench_ratios.py).
# Repeat i of every target runs before repeat i + 1 of any, so slow drifts in the machine's
# background load spread over all targets alike. net.core.netdev_max_backlog is raised to
# 262144 for the run (loopback traffic queues there; the default 1000 drops packets under
# fan-out bursts) and restored on exit. Only processes this script started are stopped, by PID.
#
# Environment:
#   REPEATS     repeats per scenario (5)
#   TARGETS     servers to measure: sseloop (SSE subscribers), sseloop-frames (frame-mode
#               subscribers, HTTP publishing), sseloop-frames-pub (frames both ways: PUBLISH
#               frames ACKed by PUBLISH_ACK), nchan (nginx + nchan, tools/peers/nchan), gosse (Go
#               net/http, tools/peers/gosse, GOMAXPROCS=1), probe (sseloop-probe, tools/probe:
#               the bare coalescing writer, the ceiling the others are divided by), axum (axum +
#               tokio current_thread, a broadcast channel per topic, tools/peers/axum; its crates
#               are downloaded and built on first use), sseloop+nginx-tls (TLS scenarios only:
#               nginx, one master and one worker pinned to SERVER_CPU next to plaintext sseloop,
#               terminates TLS with the run's certificate and proxies to it; config
#               tools/peers/nginx-tls/nginx.conf, filled in at run time; the CPU and RSS figures
#               are nginx master + worker + sseloop together; NGINX_WORKERS overrides the one
#               worker, which becomes two on the same core where one cannot hold two descriptors
#               per subscriber under the hard descriptor limit: tls-trickle-10k at 20,000). Default "sseloop sseloop-frames
#               probe", or every target with PEERS=1.
#               Any sseloop target with "-bp" appended (sseloop-bp, sseloop-frames-bp,
#               sseloop-frames-pub-bp) is the same node with the Redis Streams backplane
#               (--backplane): each run starts its own redis-server (REDIS_SERVER) on a free
#               loopback port, in a temporary directory, --save "" --appendonly no, with a random
#               --requirepass so no other process's client can use it, pinned like the tool (TOOL_CPU,
#               same PRIORITY), and stops it by PID. The node must answer /readyz 200 before the
#               load starts. Around the tool run the script reads the redis-server PID's
#               utime+stime (/proc/PID/stat) and INFO commandstats / cpu, and writes
#               <target>-<scenario>-<i>.redis.txt (Redis CPU per 1,000 appended events) and the
#               node's backplane metrics (<...>.metrics.txt). bench_ratios.py prints X-bp's ratio
#               to X measured in the same run.
#   REDIS_CPU / REDIS_RTPRIO  diagnostics: pin redis-server elsewhere than TOOL_CPU, or give it
#               its own SCHED_FIFO priority (default: pinned and prioritized like the tool)
#   BP_REPLICAS N replicas of each -bp run's redis-server (default 0), pinned like it: issue 25's
#               N=1 vs N=0, e.g. BP_REPLICAS=1 SSELOOP_B_ARGS="--backplane-min-replicas 1"
#               TARGETS="sseloop-bp sseloop-bp@b" SCENARIOS=trickle-10k (tools/README.md)
#   SSELOOP_ARGS  extra options for the sseloop targets (e.g. "--ui" for the A/B in CONSOLE.md)
#   PEERS       1: also measure the peers; installs what is missing (apt-get: nginx,
#               libnginx-mod-nchan, golang-go) and builds gosse and the axum peer. nginx is also
#               installed when TARGETS names sseloop+nginx-tls.
#   SCENARIOS   "fanout-1k fanout-10k idle-10k latency-100"; also fanout-100, fanout-3k,
#               latency-1k, latency-3k, latency-10k (the scaling series: SCENARIOS=scaling),
#               trickle-1k, trickle-10k (SCENARIOS=trickle): real publishers trickle, so
#               coalescing has little to work with: TRICKLE_PUBLISHERS keep-alive connections
#               all publishing the one topic, at most TRICKLE_WINDOW events ahead of the
#               slowest subscriber, 64 B events, TRICKLE_SECS measured seconds per run
#               pattern-10k (SCENARIOS=pattern runs "trickle-10k pattern-10k"): trickle-10k's load
#               (the same TRICKLE_* knobs), but the 10,000 subscribers all subscribe to the one
#               pattern load/* (--subscribe-pattern --topic-prefix load/; it matches no other
#               topic, not even the frames publisher's) and events go round-robin over 100
#               topics load/0..load/99, so every subscriber receives every event; bench_ratios.py
#               prints its deliveries per CPU-second over trickle-10k's (one exact topic) per
#               target (issue 12 asks for >= 0.9). Only sseloop targets take patterns: the probe
#               and the peers are skipped for this scenario.
#               tls-trickle-1k, tls-trickle-10k (SCENARIOS=tls runs "trickle-1k tls-trickle-1k
#               trickle-10k tls-trickle-10k"): the trickle scenarios over TLS: the sseloop targets
#               listen with --tls-cert/--tls-key (a test CA and certificate made with openssl in
#               the results directory, ECDSA P-256), the tool's subscribers and publishers are
#               TLS clients (https:// URLs, --tls-ca); other targets are skipped, and
#               sseloop+nginx-tls runs only these TLS scenarios.
#               tls-handshake-full, tls-handshake-resumed (SCENARIOS word tls-handshake: both):
#               the handshake rate, sseloop-load --churn: HS_CONCURRENCY (32) clients, each
#               connecting, handshaking, sending GET /events, reading the response head and
#               closing, then again; the figure is new subscribers per server CPU-second (the
#               reports' deliveries) over HS_SECS (5) measured seconds after 1 s of warm-up.
#               -full: the clients keep no session cache (every handshake full: ECDHE and the
#               certificate's signature); -resumed: each client resumes its previous session
#               (TLS 1.3 ticket: ECDHE, no signature). bench_ratios.py prints resumed over full.
#               burst-rss-10k: fanout-10k (the burst) followed by --settle-secs SETTLE_SECS (3)
#               of idle, still connected subscribers, then one more server RSS sample;
#               bench_ratios.py prints (settled - connected) RSS per connection (issue 11 asks
#               for <= 1 KiB)
#   EVENTS_1K   events for 1,000 subscribers (100000)      EVENTS_10K   for 10,000 (10000)
#   WINDOW_1K   in-flight window at 1,000 (1024)            WINDOW_10K   at 10,000 (256)
#   LAT_EVENTS  events for the latency scenario at 200/s (2000)
#   TRICKLE_WINDOW (32)   TRICKLE_PUBLISHERS (8)   TRICKLE_SECS (5)   TRICKLE_RATE (max: each
#               publisher as fast as the window allows; a number makes the load open-loop, that
#               many events per second, so servers with different latencies get the same events)
#               publish (SCENARIOS=publish): publish throughput through one node: PUB_SUBSCRIBERS
#               (1) subscriber, PUB_PUBLISHERS (8) keep-alive publisher connections spread over the
#               one topic, at most PUB_WINDOW (1024) events in flight (half of them unacknowledged),
#               64 B events, as fast as acknowledgements come, PUB_SECS (5) measured seconds; the
#               figure is acknowledged events per second (bench_ratios.py's events/s)
#   SSELOOP_BIN another sseloop binary to measure instead of the one built here (an A/B of a
#               build; the sseloop targets use it, bench.sh still builds the tools)
#   SSELOOP_B   a second sseloop binary for the targets named with "@b" (e.g. TARGETS="sseloop
#               sseloop@b"): both builds in one run, alternating, so that the machine's drift hits
#               both alike; bench_ratios.py compares each X@b with X
#   SSELOOP_B_ARGS  extra options for the "@b" targets only, after SSELOOP_ARGS (SSELOOP_B
#               defaults to the same binary then): an A/B of an option, e.g.
#               SSELOOP_B_ARGS="--round-input-us 1000000" TARGETS="sseloop sseloop@b"
#   PERF_STAT   1: in every run, count the server's write and epoll_wait syscalls with perf stat
#               for PERF_SECS (4) seconds starting PERF_DELAY (3) seconds after the tool starts
#               (keep that inside the measured time, e.g. TRICKLE_SECS=10); bench_ratios.py then
#               reports deliveries per write and events per poll round. Tracepoints cost the
#               server some CPU: quote throughput from runs without it.
#   PERF_RECORD 1: in every run, sample the server with perf record -e cpu-clock (PERF_FREQ, 2000 Hz)
#               for PERF_SECS seconds starting PERF_DELAY seconds after the tool starts, to
#               <target>-<scenario>-<i>.perf.data (perf report -i FILE --no-children --sort sym)
#   SERVER_CPU / TOOL_CPU   CPUs to pin to (0 / 1)
#   TIMEOUT     seconds before a run is abandoned (300)
#   PRIORITY    none | autogroup | rt (none). On a shared machine other processes preempt the
#               server and the tool (with autogroup scheduling, plain nice does not help across
#               sessions): "autogroup" runs both in their own session with autogroup nice -19,
#               "rt" runs both SCHED_FIFO 50 (they block in epoll, and RT throttling applies).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
REPEATS="${REPEATS:-5}"
PEERS="${PEERS:-0}"
if [ "$PEERS" = 1 ]; then
    TARGETS="${TARGETS:-sseloop sseloop-frames probe nchan gosse axum}"
else
    TARGETS="${TARGETS:-sseloop sseloop-frames probe}"
fi
SCENARIOS="${SCENARIOS:-fanout-1k fanout-10k idle-10k latency-100}"
case "$SCENARIOS" in
    scaling) SCENARIOS="fanout-100 fanout-1k fanout-3k fanout-10k latency-100 latency-1k latency-3k latency-10k" ;;
    trickle) SCENARIOS="trickle-1k trickle-10k" ;;
    pattern) SCENARIOS="trickle-10k pattern-10k" ;;
    tls) SCENARIOS="trickle-1k tls-trickle-1k trickle-10k tls-trickle-10k" ;;
esac
# tls-handshake is the pair: full handshakes (no client session cache) and resumed ones.
SCENARIOS="$(echo " $SCENARIOS " | sed 's/ tls-handshake / tls-handshake-full tls-handshake-resumed /g; s/^ //; s/ $//')"
HS_CONCURRENCY="${HS_CONCURRENCY:-32}"
HS_SECS="${HS_SECS:-5}"
PUB_SUBSCRIBERS="${PUB_SUBSCRIBERS:-1}"
PUB_PUBLISHERS="${PUB_PUBLISHERS:-8}"
PUB_WINDOW="${PUB_WINDOW:-1024}"
PUB_SECS="${PUB_SECS:-5}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
EVENTS_1K="${EVENTS_1K:-100000}"
EVENTS_10K="${EVENTS_10K:-10000}"
EVENTS_3K="${EVENTS_3K:-30000}"
WINDOW_1K="${WINDOW_1K:-1024}"
WINDOW_10K="${WINDOW_10K:-256}"
LAT_EVENTS="${LAT_EVENTS:-2000}"
TRICKLE_WINDOW="${TRICKLE_WINDOW:-32}"
TRICKLE_PUBLISHERS="${TRICKLE_PUBLISHERS:-8}"
TRICKLE_SECS="${TRICKLE_SECS:-5}"
TRICKLE_RATE="${TRICKLE_RATE:-max}"
SETTLE_SECS="${SETTLE_SECS:-3}"
PERF_STAT="${PERF_STAT:-0}"
PERF_DELAY="${PERF_DELAY:-3}"
PERF_SECS="${PERF_SECS:-4}"
PERF_RECORD="${PERF_RECORD:-0}"
PERF_FREQ="${PERF_FREQ:-2000}"
PERF_EVENTS=syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait
if [ "$PERF_STAT" = 1 ] && ! perf stat -e syscalls:sys_enter_epoll_wait -- true >/dev/null 2>&1; then
    echo "bench: PERF_STAT=1 needs perf with syscall tracepoints (apt-get install linux-perf; root)" >&2
    exit 2
fi
SERVER_CPU="${SERVER_CPU:-0}"
TOOL_CPU="${TOOL_CPU:-1}"
PRIORITY="${PRIORITY:-none}"
TIMEOUT="${TIMEOUT:-300}"

echo "== build"
cargo build --release --quiet -p sseloop -p loadgen -p probe --bins
SSELOOP="${SSELOOP_BIN:-$TARGET_DIR/release/sseloop}"
LOAD="$TARGET_DIR/release/sseloop-load"
PROBE="$TARGET_DIR/release/sseloop-probe"
GOSSE="$TARGET_DIR/gosse"
AXUM="$TARGET_DIR/peers-axum/release/axum-sse-peer"
NGINX=/usr/sbin/nginx
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

# --- peers: install what is missing ---------------------------------------------------------
case " $TARGETS " in
    *" nchan "* | *" gosse "*)
        missing=()
        [ -x "$NGINX" ] || missing+=(nginx)
        [ -f "$NCHAN_MODULE" ] || missing+=(libnginx-mod-nchan)
        command -v go >/dev/null || missing+=(golang-go)
        if [ "${#missing[@]}" -gt 0 ]; then
            echo "== apt-get install ${missing[*]}"
            apt-get update -qq
            # The packages' postinst may start the system nginx; this script never uses it.
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
        fi
        echo "== build gosse"
        (cd tools/peers/gosse && GOCACHE="${GOCACHE:-/tmp/gocache}" \
            go build -o "$GOSSE" .)
        ;;
esac
case " $TARGETS " in
    *" sseloop+nginx-tls "*)
        if [ ! -x "$NGINX" ]; then
            echo "== apt-get install nginx"
            apt-get update -qq
            # The package's postinst may start the system nginx; this script never uses it.
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx
        fi
        ;;
esac
case " $TARGETS " in
    *" axum "*)
        # Its own workspace and target directory: the main build never sees its crates.
        echo "== build the axum peer"
        cargo build --release --quiet --manifest-path tools/peers/axum/Cargo.toml \
            --target-dir "$TARGET_DIR/peers-axum"
        ;;
esac

case " $TARGETS " in
    *"-bp "*)
        if ! command -v "$REDIS_SERVER" >/dev/null || ! command -v "$REDIS_CLI" >/dev/null; then
            echo "== apt-get install redis-server"
            apt-get update -qq
            # The package's postinst may start the system redis; this script never uses it.
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
        fi
        ;;
esac

RESULTS="$ROOT/tools/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
# TLS scenarios (tls-*): a test CA and a server certificate for 127.0.0.1/localhost, made once.
TLS_DIR="$RESULTS/tls"
TLS_RUN=0
make_tls_certs() {
    [ -f "$TLS_DIR/server.pem" ] && return 0
    mkdir -p "$TLS_DIR"
    (
        cd "$TLS_DIR"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
            -out ca.pem -days 7 -subj /CN=bench-ca
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
            -out server.csr -subj /CN=localhost
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.pem -days 7 -extfile server.ext
    ) >/dev/null 2>&1
}

case "$PRIORITY" in
    none) prio=() ;;
    autogroup) prio=(setsid --wait bash -c 'echo -19 >/proc/self/autogroup; exec "$@"' _) ;;
    rt) prio=(chrt -f 50) ;;
    *)
        echo "bench: PRIORITY must be none, autogroup or rt" >&2
        exit 2
        ;;
esac
pin_server=("${prio[@]}")
pin_tool=("${prio[@]}")
if command -v taskset >/dev/null; then
    pin_server+=(taskset -c "$SERVER_CPU")
    pin_tool+=(taskset -c "$TOOL_CPU")
else
    echo "bench: taskset not found, running unpinned" >&2
fi

# --- the one system setting we change, restored on any exit -----------------------------------
BACKLOG=/proc/sys/net/core/netdev_max_backlog
old_backlog=""
target_pid=""
# A TLS-terminating proxy in front of the target (sseloop+nginx-tls): its master's PID and every
# PID whose CPU and RSS count with the target's (--server-pid, repeated).
front_pid=""
extra_pids=""
stop_target() {
    if [ -n "$front_pid" ]; then
        kill -TERM "$front_pid" 2>/dev/null || true
        wait "$front_pid" 2>/dev/null || true
        front_pid=""
    fi
    extra_pids=""
    if [ -n "$target_pid" ]; then
        if kill -0 "$target_pid" 2>/dev/null; then
            kill -TERM "$target_pid" 2>/dev/null || true
        fi
        wait "$target_pid" 2>/dev/null || true
        target_pid=""
    fi
}
# Sourced: the Redis of -bp runs, the targets, the scenarios' load arguments.
. "$ROOT/tools/bench/redis.sh"
. "$ROOT/tools/bench/targets.sh"
. "$ROOT/tools/bench/scenarios.sh"
cleanup() {
    stop_target
    stop_redis
    if [ -n "$old_backlog" ]; then
        echo "$old_backlog" >"$BACKLOG" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if old="$(cat "$BACKLOG" 2>/dev/null)" && echo 262144 >"$BACKLOG" 2>/dev/null; then
    old_backlog="$old"
    echo "== net.core.netdev_max_backlog: $old -> 262144 (restored on exit)"
else
    echo "bench: cannot raise $BACKLOG (not root?); results may show loopback drops" >&2
fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "kernel: $(uname -srm)"
    echo "cpus: $(nproc)"
    echo "loadavg before: $(cat /proc/loadavg)"
    echo "nofile: $(ulimit -Hn)"
    echo "priority: $PRIORITY"
} >"$RESULTS/env.txt"
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "bench: load average is $load1: other work on this machine will distort the figures" \
        "(PRIORITY=autogroup or rt reduces that)" >&2
fi

failures=0
for scenario in $SCENARIOS; do
    if ! args="$(scenario_args "$scenario")"; then
        echo "bench: unknown scenario '$scenario'" >&2
        exit 2
    fi
    for i in $(seq "$REPEATS"); do
        for target in $TARGETS; do
            if [ "$scenario" = pattern-10k ] && [ "${target#sseloop}" = "$target" ]; then
                [ "$i" = 1 ] && echo "== $target $scenario: skipped (no pattern subscriptions)"
                continue
            fi
            TLS_RUN=0
            tls_load_args=""
            if [ "${scenario#tls-}" != "$scenario" ]; then
                case "$target" in
                    sseloop | sseloop-frames | sseloop-frames-pub | sseloop@b | sseloop-frames@b) ;;
                    sseloop+nginx-tls) ;;
                    *)
                        [ "$i" = 1 ] && echo "== $target $scenario: skipped (TLS: sseloop targets only)"
                        continue
                        ;;
                esac
                make_tls_certs
                TLS_RUN=1
                tls_load_args="--tls-ca $TLS_DIR/ca.pem"
            elif [ "$target" = sseloop+nginx-tls ]; then
                [ "$i" = 1 ] && echo "== $target $scenario: skipped (TLS scenarios only)"
                continue
            fi
            echo "== $target $scenario #$i"
            GOSSE_QUEUE="$(gosse_queue "$scenario")"
            transport=sse
            pub_transport=http
            # The transport follows the target's name, without its "@b" (build B) suffix.
            base="${target%@b}"
            case "${base%-bp}" in
                sseloop-frames) transport=frames ;;
                sseloop-frames-pub) transport=frames pub_transport=frames ;;
            esac
            NGINX_SUBSCRIBERS="$(echo "$args" | sed -n 's/.*--subscribers \([0-9]*\).*/\1/p')"
            NGINX_SUBSCRIBERS="${NGINX_SUBSCRIBERS:-0}"
            if ! start_target "$target" "$RESULTS/$target-$scenario-$i.server.log"; then
                stop_redis
                failures=$((failures + 1))
                continue
            fi
            out="$RESULTS/$target-$scenario-$i.json"
            server_pid_args=""
            for p in $extra_pids; do
                server_pid_args="$server_pid_args --server-pid $p"
            done
            perf_pid=""
            if [ "$PERF_STAT" = 1 ]; then
                (sleep "$PERF_DELAY" && exec perf stat -x, -e "$PERF_EVENTS" -p "$target_pid" \
                    -o "$RESULTS/$target-$scenario-$i.perf.txt" -- sleep "$PERF_SECS") &
                perf_pid=$!
            elif [ "$PERF_RECORD" = 1 ]; then
                (sleep "$PERF_DELAY" && exec perf record -q -e cpu-clock -F "$PERF_FREQ" -p "$target_pid" \
                    -o "$RESULTS/$target-$scenario-$i.perf.data" -- sleep "$PERF_SECS") >/dev/null 2>&1 &
                perf_pid=$!
            fi
            redis_before=""
            if [ -n "$redis_pid" ]; then
                redis_before="$(redis_sample)" || redis_before=""
            fi
            # shellcheck disable=SC2086 # args, tls_load_args and server_pid_args are lists of options
            if ! "${pin_tool[@]}" "$LOAD" $args $tls_load_args --timeout-secs "$TIMEOUT" --transport "$transport" \
                --publish-transport "$pub_transport" \
                --url-template "$SUB_URL" --publish-url "$PUB_URL" \
                --server-pid "$target_pid" $server_pid_args --label "$target $scenario" --json >"$out"; then
                echo "bench: $target $scenario #$i FAILED (see $out)" >&2
                failures=$((failures + 1))
            fi
            if [ -n "$perf_pid" ]; then
                wait "$perf_pid" || echo "bench: perf failed for $target $scenario #$i" >&2
            fi
            if [ -n "$redis_pid" ]; then
                if [ -n "$redis_before" ] && redis_after="$(redis_sample)"; then
                    redis_report "$redis_before" "$redis_after" "$RESULTS/$target-$scenario-$i.redis.txt"
                else
                    echo "bench: no Redis figures for $target $scenario #$i" >&2
                fi
                curl -s -m 2 "${PUB_URL%%/publish*}/metrics" 2>/dev/null | grep '^sseloop_backplane' \
                    >"$RESULTS/$target-$scenario-$i.metrics.txt" || true
            fi
            stop_target
            stop_redis
        done
    done
done

echo "loadavg after: $(cat /proc/loadavg)" >>"$RESULTS/env.txt"
echo "== medians over $REPEATS repeat(s) ($RESULTS)"
"$LOAD" --summarize "$RESULTS"/*-[0-9]*.json | tee "$RESULTS/summary.txt" || true
"$LOAD" --summarize "$RESULTS"/*-[0-9]*.json --json >"$RESULTS/summary.json" || true
echo "== medians (min–max) and ratios"
python3 tools/bench_ratios.py "$RESULTS" | tee "$RESULTS/ratios.txt" || true
if [ "$failures" -ne 0 ]; then
    echo "bench: $failures run(s) failed" >&2
    exit 1
fi
