#!/usr/bin/env python3
"""Failover soak for the backplane (issue 25): 3 sseloop nodes on a Redis that fails over, with
resuming subscribers and idempotent retrying publishers, for a bounded time.

    python3 tools/soak-failover.py                     # 10 minutes, Sentinel, --min-replicas 1
    python3 tools/soak-failover.py --minutes 2 --json /tmp/soak.json
    python3 tools/soak-failover.py --mode single       # one Redis (AOF always), restarts/pauses

Sentinel mode: one master and 2 replicas (redis-server, --save "", --requirepass), 3
redis-sentinel processes (own config files, a password of their own, down-after 1 s), nodes on
--backplane redis+sentinel://...; a failover every --failover-every seconds, alternately
SENTINEL FAILOVER and SIGKILL of the master (restarted as a replica of the new one once the
sentinels name it). Single mode: one redis-server; its faults alternate SIGKILL + restart on the
same port and a SIGSTOP pause of 3 s. Both modes: every --kill-every seconds one node (in turn)
is killed with SIGKILL and restarted on its port.

Subscribers (on topic "soak") reconnect to the next node on any disconnect with Last-Event-ID;
publishers give each event its own Idempotency-Key and retry it (next node, backoff up to
0.5 s) on a 503, a connection error or a timeout, until acknowledged or --give-up-secs.
Afterwards the load stops, subscribers get up to --drain-secs to catch up, and the report counts:
acknowledged; delivered per subscriber; lost (acknowledged after a subscriber's first event,
never delivered to it, and not inside any of its reset notices' ranges: (last id before the
notice, notice id]); lost under a reset; duplicated (one key twice on a subscriber with no reset
in between; a repeat across a reset is counted apart); out of order (ids not rising, or the
epoch changing without a reset); resets by reason; publish latency (first try to acknowledgement)
outside failover windows; per fault, the time to the first acknowledgement of a publish tried
after it, the longest gap between acknowledgements in the 30 s after it, and the reset notices
received until the next fault. A fault's window runs from the fault to the end of that gap plus
2 s; a publish overlapping a window is "inside".
Exit status: 0 clean, 1 an acknowledged event lost without a reset, a duplicate, a reordering,
or a process that did not come back; 2 setup error. Not run by CI. Every process it starts gets
its own session (Ctrl-C does not reach it) and is stopped by PID on exit, Ctrl-C included.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from soaklib import RedisError, Sse, free_port, http_get, redis, start_node

LOAD_STOP = threading.Event()  # publishers stop starting new events
SUBS_STOP = threading.Event()  # subscribers stop (after the drain)
ABORT = threading.Event()  # everything stops at once (Ctrl-C, a setup failure)
LOCK = threading.Lock()
T0 = time.monotonic()
PROCS = []  # every process started, stopped by PID at exit
PROBLEMS = []  # what makes the run fail, besides the counts


def now():
    return time.monotonic() - T0


def log(msg):
    print(f"[{now():7.1f}s] {msg}", file=sys.stderr, flush=True)


def problem(msg):
    with LOCK:
        PROBLEMS.append(msg)
    log("PROBLEM: " + msg)


def spawn(args, logfile, env=None):
    with open(logfile, "a") as out:
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    PROCS.append(p)
    return p


def kill(p, sig=signal.SIGKILL):
    if p is not None and p.poll() is None:
        os.kill(p.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def wait_for(what, check, secs):
    deadline = time.time() + secs
    while time.time() < deadline and not ABORT.is_set():
        try:
            if check():
                return True
        except (OSError, RedisError):
            pass
        time.sleep(0.1)
    problem(f"timed out waiting for {what}")
    return False


class Redises:
    """The Redis side: one server (single mode) or master + replicas + sentinels."""

    def __init__(self, args, tmp):
        self.args, self.tmp, self.mode = args, tmp, args.mode
        self.password = os.urandom(12).hex()
        self.sentinel_password = os.urandom(12).hex()
        self.servers = {}  # port -> Popen
        self.sentinels = []  # (port, Popen)
        self.faults_done = 0

    def _server(self, port, replica_of=None):
        d = os.path.join(self.tmp, f"redis-{port}")
        os.makedirs(d, exist_ok=True)
        cmd = [self.args.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d,
               "--daemonize", "no", "--requirepass", self.password, "--masterauth", self.password]
        cmd += ["--appendonly", "no"] if self.args.appendonly == "no" else \
            ["--appendonly", "yes", "--appendfsync", self.args.appendonly]
        if replica_of:
            cmd += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.servers[port] = spawn(cmd, os.path.join(self.tmp, f"redis-{port}.log"))
        wait_for(f"redis-server on {port}", lambda: redis(port, "PING", password=self.password) == "PONG", 10)

    def start(self):
        master = free_port()
        self._server(master)
        if self.mode == "single":
            return f"redis://:{self.password}@127.0.0.1:{master}"
        for _ in range(self.args.replicas):
            self._server(free_port(), replica_of=master)
        wait_for("the replicas' first sync", lambda: self._online_replicas(master) >= self.args.replicas, 20)
        for i in range(3):
            port = free_port()
            conf = os.path.join(self.tmp, f"sentinel-{i}.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.tmp}\n"
                        f"requirepass {self.sentinel_password}\n"
                        f"sentinel monitor m 127.0.0.1 {master} 2\n"
                        f"sentinel auth-pass m {self.password}\n"
                        "sentinel down-after-milliseconds m 1000\nsentinel failover-timeout m 5000\n"
                        "sentinel parallel-syncs m 2\n")
            self.sentinels.append((port, spawn([self.args.redis_sentinel, conf],
                                               os.path.join(self.tmp, f"sentinel-{i}.log"))))
        wait_for("the sentinels' quorum", lambda: all(
            str(self._sentinel(p, "SENTINEL", "CKQUORUM", "m")).startswith("OK 3")
            and len(self._sentinel(p, "SENTINEL", "REPLICAS", "m")) == self.args.replicas
            for p, _ in self.sentinels), 30)
        hosts = ",".join(f"127.0.0.1:{p}" for p, _ in self.sentinels)
        return f"redis+sentinel://:{self.password}@{hosts}/m"

    def _sentinel(self, port, *args):
        return redis(port, *args, password=self.sentinel_password)

    def _online_replicas(self, port):
        info = redis(port, "INFO", "replication", password=self.password)
        return sum(1 for line in info.splitlines() if line.startswith("slave") and "state=online" in line)

    def master(self):
        if self.mode == "single":
            return next(iter(self.servers))
        for port, _ in self.sentinels:
            try:
                return int(self._sentinel(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "m")[1])
            except (OSError, RedisError, TypeError):
                continue
        return None

    def fault(self):
        """Runs the next Redis fault and returns its description."""
        k, self.faults_done = self.faults_done, self.faults_done + 1
        old = self.master()
        if self.mode == "single":
            if k % 2 == 0:
                kill(self.servers.pop(old))
                self._server(old)
                return f"redis-kill :{old} (SIGKILL, restarted, appendonly {self.args.appendonly})"
            kill(self.servers[old], signal.SIGSTOP)
            time.sleep(3)
            kill(self.servers[old], signal.SIGCONT)
            return f"redis-pause :{old} (SIGSTOP 3 s)"
        if k % 2 == 0:
            try:
                self._sentinel(self.sentinels[0][0], "SENTINEL", "FAILOVER", "m")
            except (OSError, RedisError) as e:
                return f"sentinel-failover refused: {e}"
            wait_for("the sentinels to name a new master", lambda: self.master() not in (None, old), 30)
            return f"sentinel-failover :{old} -> :{self.master()}"
        kill(self.servers.pop(old))
        wait_for("the sentinels to name a new master", lambda: self.master() not in (None, old), 30)
        new = self.master()
        self._server(old, replica_of=new)
        return f"master-kill :{old} -> :{new} (old one back as a replica)"


# --- nodes, publishers, subscribers ---------------------------------------------------------------

class Node:
    def __init__(self, idx, args, env, tmp):
        self.idx, self.env, self.port = idx, env, 0
        self.log = os.path.join(tmp, f"node-{idx}.log")
        self.cmd = [args.binary, "--history", "4096", "--backplane-timeout-ms", str(args.backplane_timeout_ms)]
        if args.mode == "sentinel":
            self.cmd += ["--backplane-min-replicas", str(args.min_replicas)]
        self.cmd += args.node_arg
        self.proc = None

    def start(self):
        for _ in range(20):
            proc, port = start_node(self.cmd + ["--listen", f"127.0.0.1:{self.port}"], self.log, self.env,
                                    own_session=True)
            PROCS.append(proc)
            if port is not None:
                self.proc, self.port = proc, port
                return True
            kill(proc)
            time.sleep(0.25)  # the port may still be held for a moment
        problem(f"node {self.idx} did not start (see {self.log})")
        return False


class Sub:
    """One resuming subscriber and what it saw."""

    def __init__(self, idx, home):
        self.idx, self.home = idx, home
        self.seen = {}  # key -> resets so far when first delivered
        self.first_seq = self.last_seq = self.last_epoch = self.last_id = None
        self.resets, self.reset_ranges, self.reset_times = {}, [], []
        self.delivered = self.dups = self.dups_after_reset = self.out_of_order = self.connects = 0
        self.samples = []  # a few problems, for the report


def split_id(ev_id):
    epoch, _, seq = (ev_id or "").rpartition("-")
    return epoch, int(seq) if seq.isdigit() else None


def subscriber(sub, nodes):
    node = sub.home
    while not SUBS_STOP.is_set() and not ABORT.is_set():
        try:
            stream = Sse(nodes[node].port, "soak", sub.last_id, timeout=1)
        except OSError:
            node = (node + 1) % len(nodes)
            time.sleep(0.1)
            continue
        sub.connects += 1
        try:
            for ev_id, ev_type, data in stream.events(SUBS_STOP):
                epoch, seq = split_id(ev_id)
                if ev_type == "sseloop-reset":
                    try:
                        reason = json.loads(data).get("reason", "?")
                    except ValueError:
                        reason = "?"
                    with LOCK:
                        sub.resets[reason] = sub.resets.get(reason, 0) + 1
                        sub.reset_ranges.append((sub.last_seq or 0, seq if seq is not None else float("inf")))
                        sub.reset_times.append(now())
                    sub.last_id, sub.last_epoch = ev_id, epoch
                    sub.last_seq = seq if seq is not None else sub.last_seq
                    continue
                if not data.startswith("k=") or seq is None:
                    continue
                key = data[2:].split(" ", 1)[0]
                resets = sum(sub.resets.values())
                with LOCK:
                    if sub.last_epoch is not None and epoch != sub.last_epoch:
                        sub.out_of_order += 1
                        sub.samples.append(f"epoch {sub.last_epoch} -> {epoch} without a reset at {ev_id}")
                    elif sub.last_seq is not None and seq <= sub.last_seq:
                        sub.out_of_order += 1
                        sub.samples.append(f"id {ev_id} after seq {sub.last_seq}")
                    if key in sub.seen:
                        if sub.seen[key] < resets:
                            sub.dups_after_reset += 1
                        else:
                            sub.dups += 1
                            sub.samples.append(f"key {key} twice (id {ev_id})")
                    else:
                        sub.seen[key] = resets
                    if sub.first_seq is None:
                        sub.first_seq = seq
                    sub.delivered += 1
                    sub.last_id, sub.last_seq, sub.last_epoch = ev_id, seq, epoch
        except (OSError, IOError):
            pass
        finally:
            stream.close()
        node = (node + 1) % len(nodes)
        time.sleep(0.05)


class Pub:
    def __init__(self, idx, home):
        self.idx, self.home = idx, home
        self.acks = []  # (key, seq, t_first, t_last_try, t_ack, node)
        self.gave_up = self.retries = 0


def post(conns, nodes, node, key, timeout):
    """(status, id or None) of one publish attempt; status None on a connection error/timeout."""
    conn = conns.get(node)
    if conn is None:
        conn = conns[node] = http.client.HTTPConnection("127.0.0.1", nodes[node].port, timeout=timeout)
    try:
        conn.request("POST", "/publish?topic=soak", body=f"k={key} " + "p" * 48,
                     headers={"Idempotency-Key": key})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 200:
            return 200, json.loads(body).get("id")
        return resp.status, None
    except (OSError, http.client.HTTPException, ValueError):
        conns.pop(node).close()
        return None, None


def publisher(pub, nodes, args, run_id):
    conns, n, interval = {}, 0, 1.0 / args.rate
    next_at = time.monotonic()
    while not LOAD_STOP.is_set() and not ABORT.is_set():
        n += 1
        key = f"{run_id}-{pub.idx}-{n}"
        node, attempt, t_first = pub.home, 0, now()
        while not ABORT.is_set():
            t_try = now()
            status, ev_id = post(conns, nodes, node, key, args.publish_timeout)
            if status == 200 and split_id(ev_id)[1] is not None:
                pub.acks.append((key, split_id(ev_id)[1], t_first, t_try, now(), node))
                break
            if now() - t_first > args.give_up_secs:
                pub.gave_up += 1
                break
            pub.retries += 1
            attempt += 1
            node = (node + 1) % len(nodes)
            time.sleep(min(0.05 * 2 ** attempt, 0.5) * random.uniform(0.5, 1))
        next_at = max(next_at + interval, time.monotonic() - 1)
        time.sleep(max(0, next_at - time.monotonic()))


def faults(redises, nodes, args, record):
    span = args.minutes * 60
    plan = sorted([(k * args.failover_every, "redis") for k in range(1, int(span // args.failover_every) + 1)] +
                  [(k * args.kill_every, "node") for k in range(1, int(span // args.kill_every) + 1)])
    shifted, last = [], -1e9
    for t, kind in plan:  # faults closer than 10 s apart run 10 s apart
        t = max(t, last + 10)
        shifted.append((t, kind))
        last = t
    kills = 0
    for t, kind in shifted:
        if LOAD_STOP.wait(max(0, t - now())) or ABORT.is_set() or t >= span:
            return
        at = now()
        if kind == "redis":
            log("fault: Redis " + ("failover" if args.mode == "sentinel" else "restart/pause"))
            detail, node = redises.fault(), None
        else:
            node = kills % len(nodes)
            kills += 1
            log(f"fault: node {node} SIGKILL + restart")
            kill(nodes[node].proc)
            detail = f"node-kill {node} :{nodes[node].port}"
            if not nodes[node].start():
                ABORT.set()
        log(f"       {detail} ({now() - at:.1f} s)")
        record.append({"t": round(at, 2), "kind": kind, "detail": detail, "node": node})


# --- the report ---------------------------------------------------------------------------------

def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def report(args, subs, pubs, fault_log, nodes):
    acks = sorted((a for p in pubs for a in p.acks), key=lambda a: a[4])
    ack_times = [a[4] for a in acks]
    windows = []
    for i, f in enumerate(fault_log):
        horizon = min([f["t"] + 30] + [g["t"] for g in fault_log[i + 1:]])
        after = [a for a in acks if a[3] >= f["t"] and (f["node"] is None or a[5] == f["node"])]
        f["first_ack_after_s"] = round(after[0][4] - f["t"], 3) if after else None
        # The longest gap between acknowledgements (any node) in the 30 s after the fault, up to
        # the next fault.
        points = [f["t"]] + [t for t in ack_times if f["t"] < t <= horizon]
        gap, end = 0.0, f["t"]
        for a, b in zip(points, points[1:]):
            if b - a > gap:
                gap, end = b - a, b
        f["longest_ack_gap_s"] = round(gap, 3)
        until = fault_log[i + 1]["t"] if i + 1 < len(fault_log) else float("inf")
        f["resets_after"] = sum(1 for s in subs for t in s.reset_times if f["t"] <= t < until)
        windows.append((f["t"], end + 2))
    outside, inside = [], []
    for a in acks:
        (inside if any(a[2] <= w1 and a[4] >= w0 for w0, w1 in windows) else outside).append(a[4] - a[2])
    acked = {a[0]: a[1] for a in acks}
    lost = lost_reset = 0
    per_sub = []
    for s in subs:
        s_lost = s_lost_reset = 0
        for key, seq in acked.items():
            if s.first_seq is None or seq <= s.first_seq or key in s.seen:
                continue
            if any(lo < seq <= hi for lo, hi in s.reset_ranges):
                s_lost_reset += 1
            else:
                s_lost += 1
                if len(s.samples) < 50:
                    s.samples.append(f"lost key {key} seq {seq}")
        lost += s_lost
        lost_reset += s_lost_reset
        per_sub.append({"sub": s.idx, "home_node": s.home, "delivered": s.delivered, "distinct": len(s.seen),
                        "connections": s.connects, "lost": s_lost, "lost_under_reset": s_lost_reset,
                        "duplicated": s.dups, "repeated_after_reset": s.dups_after_reset,
                        "out_of_order": s.out_of_order, "resets": s.resets, "samples": s.samples[:10]})
    resets = {}
    for s in subs:
        for reason, n in s.resets.items():
            resets[reason] = resets.get(reason, 0) + n
    metrics = {}
    for n in nodes:
        _, text = http_get(n.port, "/metrics")
        metrics[n.idx] = [line for line in text.decode(errors="replace").splitlines()
                          if line.startswith(("sseloop_backplane_failovers_total", "sseloop_backplane_master_info",
                                              "sseloop_backplane_replica_wait_seconds_count",
                                              "sseloop_backplane_replica_wait_seconds_sum"))]
    ms = (lambda v: None if v is None else round(v * 1000, 1))
    return {
        "mode": args.mode, "min_replicas": args.min_replicas if args.mode == "sentinel" else None,
        "appendonly": args.appendonly, "minutes": args.minutes, "nodes": len(nodes), "subscribers": len(subs),
        "publishers": len(pubs), "rate_per_publisher": args.rate,
        "acknowledged": len(acks), "gave_up": sum(p.gave_up for p in pubs), "retries": sum(p.retries for p in pubs),
        "delivered_min": min((s.delivered for s in subs), default=0),
        "delivered_max": max((s.delivered for s in subs), default=0),
        "lost": lost, "lost_under_reset": lost_reset, "duplicated": sum(s.dups for s in subs),
        "repeated_after_reset": sum(s.dups_after_reset for s in subs),
        "out_of_order": sum(s.out_of_order for s in subs), "resets": resets,
        "publish_ms_outside": {"n": len(outside), "p50": ms(pct(outside, 0.5)), "p99": ms(pct(outside, 0.99)),
                               "max": ms(max(outside, default=None))},
        "publish_ms_inside": {"n": len(inside), "p50": ms(pct(inside, 0.5)), "p99": ms(pct(inside, 0.99)),
                              "max": ms(max(inside, default=None))},
        "faults": fault_log, "subscribers_detail": per_sub, "node_metrics": metrics, "problems": PROBLEMS,
    }


def print_report(r):
    print(f"soak-failover: mode {r['mode']}, min-replicas {r['min_replicas']}, appendonly {r['appendonly']}, "
          f"{r['minutes']} min, {r['nodes']} nodes, {r['subscribers']} subscribers, {r['publishers']} publishers "
          f"x {r['rate_per_publisher']}/s")
    print(f"acknowledged {r['acknowledged']} (gave up {r['gave_up']}, retried attempts {r['retries']})")
    print("delivered per subscriber: " + " ".join(str(s["delivered"]) for s in r["subscribers_detail"]))
    print(f"lost {r['lost']}  lost under a reset {r['lost_under_reset']}  duplicated {r['duplicated']}  "
          f"repeated across a reset {r['repeated_after_reset']}  out of order {r['out_of_order']}  "
          f"resets {r['resets'] or 0}")
    for name in ("outside", "inside"):
        p = r["publish_ms_" + name]
        print(f"publish latency {name} failover windows: n {p['n']} p50 {p['p50']} ms p99 {p['p99']} ms "
              f"max {p['max']} ms")
    for f in r["faults"]:
        print(f"  t={f['t']:7.1f}s {f['detail']}: first ack after {f['first_ack_after_s']} s, "
              f"longest ack gap {f['longest_ack_gap_s']} s, resets {f['resets_after']}")
    for idx, lines in r["node_metrics"].items():
        for line in lines:
            print(f"  node {idx}: {line}")
    for s in r["subscribers_detail"]:
        for msg in s["samples"]:
            print(f"  sub {s['sub']}: {msg}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10, help="minutes of load (default 10)")
    ap.add_argument("--mode", choices=["sentinel", "single"], default="sentinel")
    ap.add_argument("--min-replicas", type=int, default=1, help="the nodes' --backplane-min-replicas (sentinel)")
    ap.add_argument("--replicas", type=int, default=2, help="replicas of the master (sentinel mode)")
    ap.add_argument("--appendonly", choices=["no", "everysec", "always"], default=None,
                    help="Redis persistence (default: no with Sentinel, always with a single Redis)")
    ap.add_argument("--failover-every", type=float, default=60, help="seconds between Redis faults")
    ap.add_argument("--kill-every", type=float, default=90, help="seconds between node kills")
    ap.add_argument("--subs-per-node", type=int, default=2)
    ap.add_argument("--pubs-per-node", type=int, default=2)
    ap.add_argument("--rate", type=float, default=20, help="events per second per publisher")
    ap.add_argument("--publish-timeout", type=float, default=5, help="seconds per publish attempt")
    ap.add_argument("--give-up-secs", type=float, default=60, help="a publish is retried this long")
    ap.add_argument("--drain-secs", type=float, default=30, help="time for subscribers to catch up")
    ap.add_argument("--backplane-timeout-ms", type=int, default=1000)
    ap.add_argument("--node-arg", action="append", default=[], help="extra option for every node")
    ap.add_argument("--binary", default="target/release/sseloop")
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--redis-sentinel", default="redis-sentinel")
    ap.add_argument("--json", help="also write the report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) even on success")
    args = ap.parse_args()
    if args.appendonly is None:
        args.appendonly = "no" if args.mode == "sentinel" else "always"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    tmp = tempfile.mkdtemp(prefix="soak-failover-")
    code = 2
    try:
        code = run(args, tmp)
    except KeyboardInterrupt:
        ABORT.set()
        print("interrupted", file=sys.stderr)
        code = 130
    finally:
        ABORT.set()
        for p in reversed(PROCS):
            kill(p)
        if code == 0 and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs in {tmp}", file=sys.stderr)
    sys.exit(code)


def run(args, tmp):
    global T0
    log(f"starting Redis ({args.mode}) in {tmp}")
    redises = Redises(args, tmp)
    url = redises.start()
    if PROBLEMS:
        return 2
    env = dict(os.environ, SSELOOP_BACKPLANE=url, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    if args.mode == "sentinel":
        env["SSELOOP_BACKPLANE_SENTINEL_PASSWORD"] = redises.sentinel_password
    nodes = [Node(i, args, env, tmp) for i in range(3)]
    if not all(n.start() for n in nodes) or not all(
            wait_for(f"node {n.idx} /readyz", lambda n=n: http_get(n.port, "/readyz")[0] == 200, 30) for n in nodes):
        return 2
    log("nodes ready on ports " + " ".join(str(n.port) for n in nodes))
    T0 = time.monotonic()  # times in the report count from the start of the load
    run_id = os.urandom(4).hex()
    subs = [Sub(i, i % 3) for i in range(3 * args.subs_per_node)]
    pubs = [Pub(i, i % 3) for i in range(3 * args.pubs_per_node)]
    threads = [threading.Thread(target=subscriber, args=(s, nodes), daemon=True) for s in subs]
    for t in threads:
        t.start()
    time.sleep(1)
    pub_threads = [threading.Thread(target=publisher, args=(p, nodes, args, run_id), daemon=True) for p in pubs]
    for t in pub_threads:
        t.start()
    fault_log = []
    fault_thread = threading.Thread(target=faults, args=(redises, nodes, args, fault_log), daemon=True)
    fault_thread.start()
    end = now() + args.minutes * 60
    while now() < end and not ABORT.is_set():
        time.sleep(min(10, max(0, end - now())))
        with LOCK:
            acked = sum(len(p.acks) for p in pubs)
            delivered = min(s.delivered for s in subs)
        log(f"acknowledged {acked}, fewest delivered {delivered}")
    LOAD_STOP.set()
    fault_thread.join(timeout=120)
    for t in pub_threads:
        t.join(timeout=args.give_up_secs + args.publish_timeout + 5)
    top = max((a[1] for p in pubs for a in p.acks), default=0)
    drain_end = time.time() + args.drain_secs
    while time.time() < drain_end and any((s.last_seq or 0) < top for s in subs):
        time.sleep(0.2)
    SUBS_STOP.set()
    for t in threads:
        t.join(timeout=5)
    for n in nodes:
        if n.proc.poll() is not None:
            problem(f"node {n.idx} exited with {n.proc.returncode}")
    r = report(args, subs, pubs, fault_log, nodes)
    print_report(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    if r["acknowledged"] == 0:
        problem("nothing was acknowledged")
    failed = r["lost"] or r["duplicated"] or r["out_of_order"] or PROBLEMS
    print("soak-failover: " + ("FAILED" if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    main()
