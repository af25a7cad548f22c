# Sourced by tools/bench.sh: starting and stopping the measured servers, and ports (its variables are bench.sh's).

# Sets port from the "listening on 127.0.0.1:PORT" line of a server started on port 0 (empty
# if it does not come within 10 s or the server exits).
logged_port() {
    for _ in $(seq 200); do
        port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$1" 2>/dev/null)"
        [ -n "$port" ] && return 0
        kill -0 "$target_pid" 2>/dev/null || return 0
        sleep 0.05
    done
}

# --- targets: start one server, set target_pid, SUB_URL and PUB_URL ---------------------------
# Peers (nginx+nchan, a Go server) plug in here: add a branch that starts the peer pinned with
# "${pin_server[@]}", logging to "$2", waits until it accepts, and sets the same three variables.
# target_pid must be the process that does the work (not a wrapper), since its CPU and RSS are
# what the tool samples.
start_target() {
    local name="$1" log="$2" port=""
    case "$name" in
        *@b)
            # The same target on the SSELOOP_B binary: an A/B of two builds in one run.
            local a_bin="$SSELOOP" a_args="${SSELOOP_ARGS:-}"
            if [ -n "${SSELOOP_B_ARGS:-}" ]; then
                SSELOOP="${SSELOOP_B:-$SSELOOP}"
                SSELOOP_ARGS="$a_args $SSELOOP_B_ARGS"
            else
                SSELOOP="${SSELOOP_B:?SSELOOP_B (or SSELOOP_B_ARGS) names what the @b targets run}"
            fi
            start_target "${name%@b}" "$log"
            local rc=$?
            SSELOOP="$a_bin"
            SSELOOP_ARGS="$a_args"
            return $rc
            ;;
        sseloop*-bp)
            start_redis "${log%.server.log}.redis.log" || return 1
            # The password reaches the node by its environment, not its command line.
            export SSELOOP_BACKPLANE="redis://:$redis_pass@127.0.0.1:$redis_port"
            start_target "${name%-bp}" "$log" || { unset SSELOOP_BACKPLANE; return 1; }
            unset SSELOOP_BACKPLANE
            if ! wait_ready "${PUB_URL%%/publish*}"; then
                echo "bench: $name: /readyz did not answer 200 (see $log)" >&2
                stop_target
                return 1
            fi
            return 0
            ;;
        sseloop)
            local tls_args="" scheme=http
            if [ "$TLS_RUN" = 1 ]; then
                tls_args="--tls-cert $TLS_DIR/server.pem --tls-key $TLS_DIR/server.key"
                scheme=https
            fi
            # shellcheck disable=SC2086 # SSELOOP_ARGS and tls_args are lists of options
            RUST_LOG=info "${pin_server[@]}" "$SSELOOP" --listen 127.0.0.1:0 ${SSELOOP_ARGS:-} $tls_args 2>"$log" &
            target_pid=$!
            logged_port "$log"
            if [ "$(readlink "/proc/$target_pid/exe" 2>/dev/null)" != "$(readlink -f "$SSELOOP")" ]; then
                echo "bench: PID $target_pid is not the server; CPU/RSS figures would be wrong" >&2
            fi
            SUB_URL="$scheme://127.0.0.1:$port/events?topic={topic}"
            PUB_URL="$scheme://127.0.0.1:$port/publish?topic={topic}"
            ;;
        sseloop+nginx-tls)
            # nginx (one master, one worker, pinned to the server's core) terminates TLS with
            # the run's test certificate and proxies to plaintext sseloop on the same core.
            local tls_run="$TLS_RUN"
            TLS_RUN=0
            start_target sseloop "$log" || { TLS_RUN="$tls_run"; return 1; }
            TLS_RUN="$tls_run"
            local upstream="${SUB_URL#http://}"
            upstream="${upstream%%/*}"
            port="$(free_port)"
            local prefix="$RESULTS/nginx-tls-prefix"
            mkdir -p "$prefix/logs" "$prefix/tmp"
            # One worker, or two (on the same core) where one cannot hold the subscribers' two
            # descriptors each under the descriptor limit (see the config's header).
            local workers="${NGINX_WORKERS:-1}"
            [ -z "${NGINX_WORKERS:-}" ] && [ "$NGINX_SUBSCRIBERS" -gt $((($(ulimit -Hn) - 100) / 2)) ] && workers=2
            sed -e "s|@PORT@|$port|" -e "s|@UPSTREAM@|$upstream|" -e "s|@CERT@|$TLS_DIR/server.pem|" \
                -e "s|@KEY@|$TLS_DIR/server.key|" -e "s|@WORKERS@|$workers|" \
                -e "s|@NOFILE@|$(ulimit -Hn)|" tools/peers/nginx-tls/nginx.conf >"$prefix/nginx.conf"
            "${pin_server[@]}" "$NGINX" -p "$prefix/" -c "$prefix/nginx.conf" -g 'daemon off;' \
                2>"${log%.server.log}.nginx.log" &
            front_pid=$!
            local worker_pids=""
            for _ in $(seq 200); do
                worker_pids="$(pgrep -P "$front_pid" 2>/dev/null | tr '\n' ' ')"
                [ "$(echo "$worker_pids" | wc -w)" = "$workers" ] &&
                    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
                kill -0 "$front_pid" 2>/dev/null || break
                sleep 0.05
            done
            if [ "$(echo "$worker_pids" | wc -w)" != "$workers" ] ||
                [ "$(readlink "/proc/$front_pid/exe" 2>/dev/null)" != "$NGINX" ]; then
                echo "bench: nginx did not start (see ${log%.server.log}.nginx.log)" >&2
                port=""
            fi
            extra_pids="$front_pid $worker_pids"
            SUB_URL="https://127.0.0.1:$port/events?topic={topic}"
            PUB_URL="https://127.0.0.1:$port/publish?topic={topic}"
            ;;
        probe)
            "${pin_server[@]}" "$PROBE" --listen 127.0.0.1:0 2>"$log" &
            target_pid=$!
            logged_port "$log"
            SUB_URL="http://127.0.0.1:$port/events?topic={topic}"
            PUB_URL="http://127.0.0.1:$port/publish?topic={topic}"
            ;;
        sseloop-frames | sseloop-frames-pub)
            start_target sseloop "$log" || return 1
            SUB_URL="${SUB_URL%%/events*}/frames?topic={topic}"
            return 0
            ;;
        nchan)
            # master_process off: the one nginx process accepts and does all the work, so its
            # PID is the one whose CPU and RSS count.
            port="$(free_port)"
            local prefix="$RESULTS/nchan-prefix"
            mkdir -p "$prefix/logs" "$prefix/tmp"
            sed "s/@PORT@/$port/" tools/peers/nchan/nginx.conf >"$prefix/nginx.conf"
            "${pin_server[@]}" "$NGINX" -p "$prefix/" -c "$prefix/nginx.conf" \
                -g 'daemon off; master_process off;' 2>"$log" &
            target_pid=$!
            wait_port "$port" || port=""
            SUB_URL="http://127.0.0.1:$port/events?topic={topic}"
            PUB_URL="http://127.0.0.1:$port/publish?topic={topic}"
            ;;
        gosse)
            port="$(free_port)"
            GOMAXPROCS=1 "${pin_server[@]}" "$GOSSE" --listen "127.0.0.1:$port" \
                --queue "$GOSSE_QUEUE" 2>"$log" &
            target_pid=$!
            wait_port "$port" || port=""
            SUB_URL="http://127.0.0.1:$port/events?topic={topic}"
            PUB_URL="http://127.0.0.1:$port/publish?topic={topic}"
            ;;
        axum)
            port="$(free_port)"
            "${pin_server[@]}" "$AXUM" --listen "127.0.0.1:$port" --capacity "$GOSSE_QUEUE" \
                2>"$log" &
            target_pid=$!
            wait_port "$port" || port=""
            SUB_URL="http://127.0.0.1:$port/events?topic={topic}"
            PUB_URL="http://127.0.0.1:$port/publish?topic={topic}"
            ;;
        *)
            echo "bench: unknown target '$name' (peers are not wired in yet)" >&2
            return 1
            ;;
    esac
    if [ -z "$port" ]; then
        echo "bench: $name did not start (see $log)" >&2
        stop_target
        return 1
    fi
}

# A free TCP port on 127.0.0.1 (the kernel picks it; the peer binds it right after).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$target_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# gosse's per-subscriber channel (and the axum peer's broadcast channel) holds this many events (allocated up front, 24 B each);
# sized to the in-flight window of the scenario so it never drops a subscriber the tool paces.
gosse_queue() {
    case "$1" in
        fanout-100 | fanout-1k | latency-*) echo $((WINDOW_1K + 64)) ;;
        trickle-* | pattern-* | tls-trickle-*) echo $((TRICKLE_WINDOW + 64)) ;;
        publish) echo $((PUB_WINDOW + 64)) ;;
        *) echo $((WINDOW_10K + 64)) ;;
    esac
}
