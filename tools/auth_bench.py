#!/usr/bin/env python3
"""New authenticated subscribers per server CPU-second (issue 12), end to end.

For each mode (no auth, HS256, RS256) and repeat: start a release `sseloop` pinned to one core,
connect N subscribers with `sseloop-load --idle` pinned to the other (each one a new TCP
connection, HTTP request, token verification, stream start), hold them a second, let the tool
close them, and divide N by the server's CPU seconds over the whole run (utime + stime from
/proc/PID/stat: accept, parse, verify, respond, register, close). Prints medians [min-max] and
writes them to RESULTS/auth.txt.

    cargo build --release -p sseloop -p loadgen
    python3 tools/auth_bench.py [--subscribers 10000] [--repeats 5] [--results DIR]

The token is passed as `access_token` in the query (the same verification as the header or the
cookie). RS256 keys come from `openssl genrsa` (2048 bits), signatures from `openssl dgst`.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SERVER = os.path.join(TARGET, "release", "sseloop")
LOAD = os.path.join(TARGET, "release", "sseloop-load")
TICKS = os.sysconf("SC_CLK_TCK")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signing_input(alg):
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = {"sub": "bench", "exp": int(time.time()) + 3600, "sseloop": {"subscribe": ["load*"]}}
    return header + b"." + b64(json.dumps(claims).encode())


def hs256_token(secret):
    msg = signing_input("HS256")
    return (msg + b"." + b64(hmac.new(secret, msg, hashlib.sha256).digest())).decode()


def rs256_token(private_pem):
    msg = signing_input("RS256")
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", private_pem],
        input=msg,
        capture_output=True,
        check=True,
    ).stdout
    return (msg + b"." + b64(sig)).decode()


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_server(args, log_path):
    log = open(log_path, "w")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", SERVER, "--listen", "127.0.0.1:0", *args],
        stderr=log,
        env={**os.environ, "RUST_LOG": "warn,sseloop=info"},
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        with open(log_path) as f:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit(f"auth_bench: the server did not start (see {log_path})")


def one_run(mode, server_args, token, n, results, i):
    log_path = os.path.join(results, f"{mode}-{i}.server.log")
    proc, port = start_server(server_args, log_path)
    try:
        url = f"http://127.0.0.1:{port}/events?topic={{topic}}"
        if token:
            url += f"&access_token={token}"
        before = cpu_secs(proc.pid)
        out = subprocess.run(
            [
                "taskset", "-c", "1", LOAD,
                "--url-template", url,
                "--publish-url", f"http://127.0.0.1:{port}/publish?topic={{topic}}",
                "--subscribers", str(n), "--idle", "--duration-secs", "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        # The tool has closed its sockets; give the loop a moment to reap them.
        time.sleep(0.5)
        cpu = cpu_secs(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    with open(os.path.join(results, f"{mode}-{i}.load.txt"), "w") as f:
        f.write(out.stdout + out.stderr)
    m = re.search(r"connected\s+(\d+)", out.stdout + out.stderr)
    connected = int(m.group(1)) if m else 0
    if out.returncode != 0 or connected != n:
        raise SystemExit(f"auth_bench: {mode} run {i}: {connected}/{n} connected, exit {out.returncode}")
    return n / cpu if cpu > 0 else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subscribers", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--results", default=os.path.join(ROOT, "tools", "results", "auth"))
    a = ap.parse_args()
    for binary in (SERVER, LOAD):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"auth_bench: {binary} missing: cargo build --release -p sseloop -p loadgen")
    os.makedirs(a.results, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="sseloop-auth-bench-")
    secret = os.urandom(32).hex().encode()
    private = os.path.join(tmp, "rsa.pem")
    public = os.path.join(tmp, "rsa.pub.pem")
    subprocess.run(["openssl", "genrsa", "-out", private, "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", private, "-pubout", "-out", public], check=True, capture_output=True)
    modes = [
        ("none", [], None),
        ("hs256", ["--jwt-secret", secret.decode()], hs256_token(secret)),
        ("rs256", ["--jwt-public-key", public], rs256_token(private)),
    ]
    rates = {m: [] for m, _, _ in modes}
    for i in range(1, a.repeats + 1):
        for mode, server_args, token in modes:
            rate = one_run(mode, server_args, token, a.subscribers, a.results, i)
            rates[mode].append(rate)
            print(f"{mode} #{i}: {rate:,.0f} subscribers per server CPU-second", flush=True)
    lines = [f"new subscribers per server CPU-second, {a.subscribers} per run, {a.repeats} repeats"]
    for mode, values in rates.items():
        lines.append(
            f"{mode:6} median {statistics.median(values):>10,.0f} "
            f"[{min(values):,.0f}-{max(values):,.0f}]"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    with open(os.path.join(a.results, "auth.txt"), "w") as f:
        f.write(text)
    for p in (private, public):
        os.remove(p)
    os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
