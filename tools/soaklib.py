"""Shared parts of the soak tools (tools/soak.py, tools/soak-failover.py): an incremental SSE
reader, starting an sseloop node and learning its port, plain HTTP GETs, free loopback ports, a
minimal Redis client.
Python 3 standard library only."""

import re
import socket
import subprocess
import time


class Sse:
    """Minimal incremental SSE reader (LF only, as sseloop writes)."""

    def __init__(self, port, topic, last_id=None, rcvbuf=None, timeout=5):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(("127.0.0.1", port))
            head = f"GET /events?topic={topic} HTTP/1.1\r\nHost: soak\r\n"
            if last_id:
                head += f"Last-Event-ID: {last_id}\r\n"
            self.sock.sendall((head + "\r\n").encode())
        except OSError:
            self.sock.close()
            raise
        self.buf = b""
        self.head_done = False

    def events(self, stop):
        """Yields (id, type, data) until the stream ends or `stop` (a threading.Event) is set."""
        while not stop.is_set():
            while True:
                if not self.head_done:
                    i = self.buf.find(b"\r\n\r\n")
                    if i < 0:
                        break
                    if not self.buf.startswith(b"HTTP/1.1 200"):
                        raise IOError("bad status: %r" % self.buf[:40])
                    self.buf = self.buf[i + 4:]
                    self.head_done = True
                i = self.buf.find(b"\n\n")
                if i < 0:
                    break
                block, self.buf = self.buf[:i], self.buf[i + 2:]
                ev_id, ev_type, data = None, "message", []
                for line in block.split(b"\n"):
                    if line.startswith(b"id: "):
                        ev_id = line[4:].decode()
                    elif line.startswith(b"event: "):
                        ev_type = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data.append(line[6:].decode())
                if data:
                    yield ev_id, ev_type, "\n".join(data)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
            self.buf += chunk

    def close(self, rst=False):
        if rst:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()


LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def start_node(args, log_path=None, env=None, timeout=10, own_session=False):
    """Starts an sseloop node (`args` from the binary on, listening on 127.0.0.1) and returns
    (process, port) once it logs its address, or (process, None) when it does not within `timeout`
    seconds. With `log_path` its stderr is appended to that file (only what this start adds is
    looked at), else it is read from a pipe that the caller drains afterwards. With
    `own_session`, a Ctrl-C meant for the tool does not reach the node: the tool stops it by PID."""
    deadline = time.time() + timeout
    if log_path:
        with open(log_path, "a") as log:
            offset = log.tell()
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                    start_new_session=own_session)
        while time.time() < deadline and proc.poll() is None:
            with open(log_path) as log:
                log.seek(offset)
                m = LISTENING.search(log.read())
            if m:
                return proc, int(m.group(1))
            time.sleep(0.05)
        return proc, None
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=own_session)
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = LISTENING.search(line)
        if m:
            return proc, int(m.group(1))
    return proc, None


def http_get(port, path, timeout=2):
    """(status, body bytes) of GET path on 127.0.0.1:port, or (None, b"") on any socket error."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
        text = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            text += chunk
        s.close()
    except OSError:
        return None, b""
    m = re.match(rb"HTTP/1\.1 (\d+)", text)
    head_end = text.find(b"\r\n\r\n")
    return (int(m.group(1)) if m else None), (text[head_end + 4:] if head_end >= 0 else b"")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller binds it right after)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# A minimal Redis client (RESP2), enough for PING, AUTH, INFO and SENTINEL commands.


class RedisError(Exception):
    pass


def _reply(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(f) for _ in range(n)]
    raise OSError(f"unexpected reply {line[:40]!r}")


def redis(port, *args, password=None, timeout=2):
    """One command to 127.0.0.1:port (after AUTH when a password is given); OSError when down."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        f = s.makefile("rb")
        cmds = ([("AUTH", password)] if password else []) + [args]
        s.sendall(b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(str(a).encode()), str(a).encode())
                                                          for a in c) for c in cmds))
        if password:
            _reply(f)
        return _reply(f)
