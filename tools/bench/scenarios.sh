# Sourced by tools/bench.sh: each scenario's sseloop-load arguments (its variables are bench.sh's).

scenario_args() {
    case "$1" in
        fanout-100) echo "--subscribers 100 --events $EVENTS_1K --size 64 --rate max --window $WINDOW_1K --warmup-secs 1" ;;
        fanout-3k) echo "--subscribers 3000 --events $EVENTS_3K --size 64 --rate max --window $WINDOW_10K --warmup-secs 1" ;;
        latency-1k) echo "--subscribers 1000 --events $LAT_EVENTS --size 64 --rate 200 --warmup-secs 1" ;;
        latency-3k) echo "--subscribers 3000 --events $LAT_EVENTS --size 64 --rate 200 --warmup-secs 1" ;;
        latency-10k) echo "--subscribers 10000 --events $LAT_EVENTS --size 64 --rate 200 --warmup-secs 1" ;;
        fanout-1k) echo "--subscribers 1000 --events $EVENTS_1K --size 64 --rate max --window $WINDOW_1K --warmup-secs 1" ;;
        fanout-10k) echo "--subscribers 10000 --events $EVENTS_10K --size 64 --rate max --window $WINDOW_10K --warmup-secs 1" ;;
        idle-10k) echo "--subscribers 10000 --idle --duration-secs 3" ;;
        latency-100) echo "--subscribers 100 --events $LAT_EVENTS --size 64 --rate 200 --warmup-secs 1" ;;
        # --events is only a cap: the run ends after TRICKLE_SECS measured seconds.
        tls-trickle-1k | tls-trickle-10k) scenario_args "${1#tls-}" ;;
        # New TLS subscribers, HS_CONCURRENCY at a time, each its own client: full handshakes
        # (no session cache) or resumed ones (each client resumes its previous session).
        tls-handshake-full) echo "$(scenario_args tls-handshake-resumed) --no-tls-resumption" ;;
        tls-handshake-resumed)
            echo "--churn --connect-concurrency $HS_CONCURRENCY --warmup-secs 1 --duration-secs $HS_SECS"
            ;;
        trickle-1k | trickle-10k)
            local n=1000
            [ "$1" = trickle-10k ] && n=10000
            echo "--subscribers $n --events 100000000 --duration-secs $TRICKLE_SECS --size 64 --rate $TRICKLE_RATE" \
                "--window $TRICKLE_WINDOW --publishers $TRICKLE_PUBLISHERS --spread-publishers --warmup-secs 1"
            ;;
        # trickle-10k's load with every subscriber on one pattern over 100 topics.
        pattern-10k) echo "$(scenario_args trickle-10k) --subscribe-pattern --topic-prefix load/ --topics 100" ;;
        burst-rss-10k) echo "$(scenario_args fanout-10k) --settle-secs $SETTLE_SECS" ;;
        # --events is only a cap: the run ends after PUB_SECS measured seconds.
        publish)
            echo "--subscribers $PUB_SUBSCRIBERS --events 100000000 --duration-secs $PUB_SECS --size 64" \
                "--rate max --window $PUB_WINDOW --publishers $PUB_PUBLISHERS --spread-publishers" \
                "--warmup-secs 1"
            ;;
        *) return 1 ;;
    esac
}
