# Sourced by tools/bench.sh: the backplane's redis-server of a -bp run, its replicas and its CPU figures (its variables are bench.sh's).

# The backplane's Redis of the current run (a -bp target): PID, port, password, directory.
redis_pid=""
redis_port=""
redis_pass=""
redis_dir=""
stop_redis() {
    stop_redis_replicas
    if [ -n "$redis_pid" ]; then
        if kill -0 "$redis_pid" 2>/dev/null; then
            kill -TERM "$redis_pid" 2>/dev/null || true
        fi
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    fi
    if [ -n "$redis_dir" ]; then
        rm -rf "$redis_dir"
        redis_dir=""
    fi
}

# redis-server for one -bp run: a free loopback port, its own temporary directory, no persistence,
# a random password (other processes' clients, e.g. a test suite's nodes looking for their own
# Redis on a reused port, are refused), pinned and prioritized like the tool. Waits for PING.
start_redis() {
    local log="$1"
    redis_port="$(free_port)"
    redis_pass="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    redis_dir="$(mktemp -d "${TMPDIR:-/tmp}/bench-redis.XXXXXX")"
    local pin_redis=("${pin_tool[@]}")
    # Diagnostics only: where Redis runs and at which SCHED_FIFO priority (default: like the tool).
    if [ -n "${REDIS_CPU:-}${REDIS_RTPRIO:-}" ]; then
        pin_redis=()
        [ -n "${REDIS_RTPRIO:-}" ] && pin_redis+=(chrt -f "$REDIS_RTPRIO")
        [ -z "${REDIS_RTPRIO:-}" ] && pin_redis+=("${prio[@]}")
        pin_redis+=(taskset -c "${REDIS_CPU:-$TOOL_CPU}")
    fi
    "${pin_redis[@]}" "$REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save "" \
        --appendonly no --dir "$redis_dir" --logfile "$log" --daemonize no \
        --requirepass "$redis_pass" >/dev/null 2>&1 &
    redis_pid=$!
    for _ in $(seq 200); do
        [ "$(redis_cmd PING 2>/dev/null)" = PONG ] && break
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ "$(redis_cmd PING 2>/dev/null)" != PONG ]; then
        echo "bench: redis-server did not start (see $log)" >&2
        stop_redis
        return 1
    fi
    if [ "$(readlink "/proc/$redis_pid/exe" 2>/dev/null)" != "$(readlink -f "$(command -v "$REDIS_SERVER")")" ]; then
        echo "bench: PID $redis_pid is not redis-server; its CPU figures would be wrong" >&2
    fi
    start_redis_replicas "$log" "${pin_redis[@]}"
}
redis_cmd() {
    REDISCLI_AUTH="$redis_pass" "$REDIS_CLI" -h 127.0.0.1 -p "$redis_port" "$@"
}

# --- BP_REPLICAS: replicas of the -bp run's Redis (issue 25's N=1 vs N=0 cost) -----------------
# BP_REPLICAS=N starts N replicas of the run's redis-server (same settings and password, each on a
# free port and in its own directory under redis_dir, pinned like the Redis server) and waits until
# the master lists N online replicas. They serve only the nodes' WAIT: give the node
# --backplane-min-replicas through SSELOOP_ARGS or SSELOOP_B_ARGS. The .redis.txt figures are
# the master's alone.
BP_REPLICAS="${BP_REPLICAS:-0}"
redis_replica_pids=()
start_redis_replicas() {
    local log="$1" i port
    shift
    [ "$BP_REPLICAS" -gt 0 ] || return 0
    for i in $(seq "$BP_REPLICAS"); do
        port="$(free_port)"
        mkdir -p "$redis_dir/replica-$i"
        "$@" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$redis_dir/replica-$i" --logfile "${log%.log}.replica-$i.log" --daemonize no \
            --requirepass "$redis_pass" --masterauth "$redis_pass" \
            --replicaof 127.0.0.1 "$redis_port" >/dev/null 2>&1 &
        redis_replica_pids+=($!)
    done
    for _ in $(seq 200); do
        [ "$(redis_cmd INFO replication 2>/dev/null | grep -c '^slave[0-9]*:.*state=online')" -ge "$BP_REPLICAS" ] &&
            return 0
        sleep 0.05
    done
    echo "bench: $BP_REPLICAS replica(s) did not come online (see ${log%.log}.replica-*.log)" >&2
    stop_redis
    return 1
}
stop_redis_replicas() {
    local pid
    for pid in "${redis_replica_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    redis_replica_pids=()
}
# GET <base>/readyz until 200 (the node is connected to Redis and has filled its cache).
wait_ready() {
    for _ in $(seq 200); do
        [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$1/readyz" 2>/dev/null)" = 200 ] && return 0
        kill -0 "$target_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
# Redis figures: "<utime+stime ticks> <evalsha calls> <evalsha usec> <xread calls> <xread usec>
# <incr calls>" (the APPEND script INCRs once per event; one call carries a batch of events)
redis_sample() {
    local stat rest ticks
    stat="$(cat "/proc/$redis_pid/stat" 2>/dev/null)" || return 1
    rest="${stat##*) }"
    # shellcheck disable=SC2086 # split the fields after the command name
    set -- $rest
    ticks=$((${12} + ${13}))
    redis_cmd INFO commandstats 2>/dev/null | tr -d '\r' | awk -v t="$ticks" '
        /^cmdstat_evalsha:/ { split($0, a, /[=,]/); ec = a[2]; eu = a[4] }
        /^cmdstat_xread:/ { split($0, a, /[=,]/); xc = a[2]; xu = a[4] }
        /^cmdstat_incr:/ { split($0, a, /[=,]/); ic = a[2] }
        END { printf "%d %d %d %d %d %d\n", t, ec, eu, xc, xu, ic }'
}
# Writes the sidecar of one -bp run from the samples before and after the tool ran.
redis_report() {
    local before="$1" after="$2" out="$3" hz
    hz="$(getconf CLK_TCK)"
    echo "$before $after" | awk -v hz="$hz" -v pid="$redis_pid" '{
        cpu = ($7 - $1) / hz; calls = $8 - $2; n = $12 - $6
        printf "redis_pid: %d\nredis_cpu_secs: %.3f\nappends: %d\nevalsha_calls: %d\n", pid, cpu, n, calls
        printf "evalsha_usec_per_call: %.2f\n", (calls > 0 ? ($9 - $3) / calls : 0)
        printf "events_per_call: %.2f\nxread_calls: %d\n", (calls > 0 ? n / calls : 0), $10 - $4
        printf "xread_usec_per_call: %.2f\n", ($10 > $4 ? ($11 - $5) / ($10 - $4) : 0)
        printf "redis_cpu_ms_per_1k_events: %.4f\n", (n > 0 ? cpu * 1e6 / n : 0)
    }' >"$out"
    redis_cmd INFO cpu 2>/dev/null | tr -d '\r' | grep '^used_cpu' >>"$out" || true
    redis_cmd INFO commandstats 2>/dev/null | tr -d '\r' | grep '^cmdstat' >>"$out" || true
    redis_cmd LATENCY LATEST 2>/dev/null | tr '\n' ' ' | sed 's/^/latency_latest: /' >>"$out" || true
    echo >>"$out"
}
