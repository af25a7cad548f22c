#!/usr/bin/env python3
"""Soak test for sseloop: churning subscribers, slow consumers, resumers with bogus ids that never
read (each asks for the whole history), large events with a reader that checks them, publishers
and garbage clients at once, for a bounded time. Records RSS, open descriptors and deliveries every second (CSV in
tools/results/) and fails when memory or descriptors keep growing or any healthy subscriber misses
an event.

    python3 tools/soak.py --duration 600          # the 10-minute soak
    python3 tools/soak.py --duration 60 --rate 100  # a quick one

Only loopback traffic; the server it starts is stopped by PID at the end.
"""

import argparse
import csv
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from soaklib import Sse, http_get, start_node

STOP = threading.Event()
LOCK = threading.Lock()
FAILURES = []


def fail(msg):
    with LOCK:
        FAILURES.append(msg)


def seq_of(data):
    m = re.match(r"seq=(\d+) ", data)
    return int(m.group(1)) if m else None


def publisher(port, rate, stats):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    n = 0
    pad = "p" * 48
    interval = 1.0 / rate
    next_at = time.monotonic()
    buf = b""
    while not STOP.is_set():
        n += 1
        body = f"seq={n} {pad}".encode()
        sock.sendall(b"POST /publish?topic=soak HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        while b"\r\n\r\n" not in buf or not re.search(rb'"id":"[^"]+"', buf):
            chunk = sock.recv(4096)
            if not chunk:
                fail("publisher: server closed the connection")
                return
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 200"):
            fail("publish refused: %r" % buf[:60])
        buf = buf[buf.index(b"}") + 2:] if b"}" in buf else b""
        stats["published"] = n
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sock.close()


def healthy(port, idx, stats):
    """Never disconnects; every event after its first must be the next seq."""
    sub = Sse(port, "soak")
    last = None
    count = 0
    try:
        for _id, _type, data in sub.events(STOP):
            s = seq_of(data)
            if s is None:
                continue
            if last is not None and s != last + 1:
                fail(f"healthy {idx}: expected seq {last + 1}, got {s}")
            last = s
            count += 1
    except (OSError, IOError) as e:
        if not STOP.is_set():
            fail(f"healthy {idx}: {e}")
    stats[f"healthy{idx}"] = (count, last)
    sub.close()


def churner(port, idx):
    """Reconnects over and over, resuming with Last-Event-ID: no gaps across reconnects."""
    last_id, last_seq = None, None
    rng = random.Random(idx)
    while not STOP.is_set():
        try:
            sub = Sse(port, "soak", last_id)
            want = rng.randint(1, 40)
            for ev_id, ev_type, data in sub.events(STOP):
                if ev_type == "sseloop-reset":
                    fail(f"churner {idx}: reset {data} after {last_id}")
                    last_seq = None
                    continue
                s = seq_of(data)
                if s is None:
                    continue
                if last_seq is not None and s != last_seq + 1:
                    fail(f"churner {idx}: gap {last_seq} -> {s}")
                last_id, last_seq = ev_id, s
                want -= 1
                if want == 0:
                    break
            sub.close(rst=rng.random() < 0.3)
        except (OSError, IOError) as e:
            if not STOP.is_set():
                fail(f"churner {idx}: {e}")
        time.sleep(rng.random() * 0.2)


def slow_consumers(port):
    """Opens subscribers that never read; they must be cut, never grow the server."""
    held = []
    while not STOP.is_set():
        try:
            held.append(Sse(port, "soak", rcvbuf=4096))
        except OSError:
            pass
        if len(held) > 5:
            held.pop(0).close()
        STOP.wait(3)
    for s in held:
        s.close()


def bogus_resumers(port):
    """Resumes with an id the server never issued (a full replay) and never reads; these must be
    cut as slow consumers without the replay growing the server."""
    held = []
    while not STOP.is_set():
        for topic in ("soak", "big"):
            try:
                held.append(Sse(port, topic, last_id="bogus", rcvbuf=4096))
            except OSError:
                pass
        while len(held) > 10:
            held.pop(0).close()
        STOP.wait(1)
    for s in held:
        s.close()


BIG = 60 * 1024


def big_publisher(port, stats):
    """Events close to --max-body (64k), four a second, on their own topic."""
    n = 0
    while not STOP.is_set():
        n += 1
        body = (f"seq={n} ".encode() + b"b" * BIG)[:BIG]
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /publish?topic=big HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            resp = b""
            while b"\r\n\r\n" not in resp:
                chunk = s.recv(4096)
                if not chunk:
                    break
                resp += chunk
            s.close()
            if not resp.startswith(b"HTTP/1.1 200"):
                fail("big publish refused: %r" % resp[:60])
            stats["big_published"] = n
        except OSError as e:
            fail(f"big publisher: {e}")
        STOP.wait(0.25)


def big_reader(port, stats):
    """Reads the large events; each must arrive whole and in order."""
    sub = Sse(port, "big")
    last = None
    try:
        for _id, _type, data in sub.events(STOP):
            s = seq_of(data)
            if s is None:
                continue
            if len(data) != BIG:
                fail(f"big event {s} arrived with {len(data)} bytes")
            if last is not None and s != last + 1:
                fail(f"big reader: expected seq {last + 1}, got {s}")
            last = s
    except (OSError, IOError) as e:
        if not STOP.is_set():
            fail(f"big reader: {e}")
    stats["big_last"] = last
    sub.close()


def garbage(port, seed):
    rng = random.Random(seed)
    samples = [
        b"GET /events?topic=%zz HTTP/1.1\r\n\r\n",
        b"POST /publish?topic=soak HTTP/1.1\r\nContent-Length: 100000\r\n\r\nxx",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\xca\xfe\x00\x00\x00\x10garbage",
        b"GET /frames?topic=soak HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n\r\n\xca\xfd\x01",
        b"GET /events?topic=soak HTT",
    ]
    while not STOP.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            payload = rng.choice(samples) if rng.random() < 0.7 else os.urandom(rng.randint(1, 512))
            s.sendall(payload)
            if rng.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        except OSError:
            pass
        time.sleep(rng.random() * 0.05)


def sample(pid, port):
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    _status, text = http_get(port, "/metrics")
    m = re.search(rb"(?m)^sseloop_event_deliveries_total (\d+)", text)
    deliveries = int(m.group(1)) if m else 0
    return rss, fds, deliveries


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    ap.add_argument("--rate", type=int, default=200, help="events per second")
    ap.add_argument("--healthy", type=int, default=20)
    ap.add_argument("--churners", type=int, default=20)
    ap.add_argument("--garbage", type=int, default=4)
    ap.add_argument("--binary", default="target/release/sseloop")
    args = ap.parse_args()

    server, port = start_node(
        [args.binary, "--listen", "127.0.0.1:0", "--history", "8192", "--max-queue-bytes", "256k", "--max-body", "64k",
         "--write-stall-ms", "4000", "--header-timeout-ms", "2000"])
    if port is None:
        server.kill()
        sys.exit("server did not start")
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()

    time.sleep(0.3)
    baseline = sample(server.pid, port)
    stats = {}
    threads = [threading.Thread(target=healthy, args=(port, i, stats)) for i in range(args.healthy)]
    for t in threads:
        t.start()
    threads.append(threading.Thread(target=big_reader, args=(port, stats)))
    threads[-1].start()
    time.sleep(0.5)
    threads.append(threading.Thread(target=publisher, args=(port, args.rate, stats)))
    threads.append(threading.Thread(target=big_publisher, args=(port, stats)))
    threads.append(threading.Thread(target=bogus_resumers, args=(port,)))
    threads += [threading.Thread(target=churner, args=(port, i)) for i in range(args.churners)]
    threads.append(threading.Thread(target=slow_consumers, args=(port,)))
    threads += [threading.Thread(target=garbage, args=(port, i)) for i in range(args.garbage)]
    for t in threads[args.healthy + 1:]:
        t.start()

    os.makedirs("tools/results", exist_ok=True)
    out_path = time.strftime("tools/results/soak-%Y%m%d-%H%M%S.csv")
    rows = []
    start = time.time()
    with open(out_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seconds", "rss_kib", "fds", "deliveries", "published"])
        while time.time() - start < args.duration and server.poll() is None:
            time.sleep(1)
            rss, fds, dl = sample(server.pid, port)
            row = [round(time.time() - start, 1), rss, fds, dl, stats.get("published", 0)]
            rows.append(row)
            w.writerow(row)
            f.flush()
            if sys.stderr.isatty():
                print(f"\r{row[0]:>6}s rss {rss} KiB fds {fds} deliveries {dl} published {row[4]}", end="", file=sys.stderr)
    STOP.set()
    for t in threads:
        t.join(timeout=10)
    time.sleep(2)
    final = sample(server.pid, port) if server.poll() is None else None
    alive = server.poll() is None
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        code = None

    print(file=sys.stderr)
    if not alive:
        fail("server died during the soak")
    if code != 0:
        fail(f"server exit code {code} after SIGTERM")
    third = max(1, len(rows) // 3)
    middle = [r[1] for r in rows[third:2 * third]] or [0]
    last = [r[1] for r in rows[2 * third:]] or [0]
    if max(last) > max(middle) * 1.25 + 8192:
        fail(f"RSS keeps growing: middle third max {max(middle)} KiB, last third max {max(last)} KiB")
    fds_mid = [r[2] for r in rows[third:2 * third]] or [0]
    fds_last = [r[2] for r in rows[2 * third:]] or [0]
    if max(fds_last) > max(fds_mid) + 64:
        fail(f"descriptors keep growing: {max(fds_mid)} -> {max(fds_last)}")
    if final and final[1] > baseline[1] + 4:
        fail(f"descriptors not released after the clients left: baseline {baseline[1]}, final {final[1]}")
    big = stats.get("big_published", 0)
    if big == 0 or stats.get("big_last") is None or big - stats["big_last"] > 8:
        fail(f"big reader fell behind: last {stats.get('big_last')} of {big}")
    published = stats.get("published", 0)
    for i in range(args.healthy):
        count, last_seq = stats.get(f"healthy{i}", (0, None))
        if last_seq is None or published - last_seq > args.rate * 2:
            fail(f"healthy {i} fell behind: last seq {last_seq} of {published}")
    print(f"soak: {len(rows)} s, published {published}, baseline rss {baseline[0]} KiB fds {baseline[1]}, "
          f"peak rss {max(r[1] for r in rows) if rows else 0} KiB, final fds {final[1] if final else '-'}, "
          f"deliveries {rows[-1][3] if rows else 0}; samples in {out_path}")
    if FAILURES:
        print(f"FAILED ({len(FAILURES)} problems):", file=sys.stderr)
        for msg in FAILURES[:20]:
            print("  " + msg, file=sys.stderr)
        sys.exit(1)
    print("soak: ok")


if __name__ == "__main__":
    main()
