#!/bin/bash
# Manual latency-100 run with the backplane, loopback captured by tcpdump.
set -u
cd /tmp/trace
BP=${BP:-1}
RP=16379; NP=18080
rm -f cap.pcap node.log redis.log out.json
if [ "$BP" = 1 ]; then
  chrt -f 50 taskset -c 1 redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no --dir /tmp/trace --logfile /tmp/trace/redis.log --daemonize no --requirepass pw >/dev/null 2>&1 &
  RPID=$!
  sleep 0.5
  export SSELOOP_BACKPLANE="redis://:pw@127.0.0.1:$RP"
fi
SSELOOP_SPIN_US=${SPIN:-0} RUST_LOG=info chrt -f 50 taskset -c 0 /work/main/target/release/sseloop --listen 127.0.0.1:$NP 2>node.log &
NPID=$!
unset SSELOOP_BACKPLANE
for i in $(seq 100); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$NP/readyz 2>/dev/null | grep -q 200 && break; sleep 0.05; done
taskset -c 0 tcpdump -i lo -s 700 -B 65536 -w cap.pcap "tcp port $NP or tcp port $RP" 2>/dev/null &
TPID=$!
sleep 1
chrt -f 50 taskset -c 1 /work/main/target/release/sseloop-load --subscribers 100 --events ${EV:-3000} --size 64 --rate 200 --warmup-secs 1 --timeout-secs 60 --url-template "http://127.0.0.1:$NP/events?topic={topic}" --publish-url "http://127.0.0.1:$NP/publish?topic={topic}" --server-pid $NPID --label trace --json > out.json
sleep 0.5
kill $TPID; wait $TPID 2>/dev/null
kill $NPID; wait $NPID 2>/dev/null
[ "$BP" = 1 ] && { kill $RPID; wait $RPID 2>/dev/null; }
python3 -c "import json; l=json.load(open('out.json'))['latency_us']; print(l)"
ls -la cap.pcap
