//! `sseloop-probe`: the *bare coalescing writer*, a measuring stick for sseloop's fan-out.
//!
//! Not a product. It does the least work a single-threaded SSE server can do while still serving
//! `sseloop-load` exactly as sseloop does, so that "deliveries per server CPU-second" of sseloop
//! can be quoted as a fraction of this ceiling:
//!
//! - one thread, one `mio::Poll` (edge-triggered), every connection in a slab, `TCP_NODELAY`;
//! - `POST /publish?topic=T` (body by `Content-Length`) encodes the event **once** into the
//!   topic's append-only log (`id: <run>-<seq>` + `data:` lines, as sseloop encodes it) and the
//!   `200 {"id":"…"}` is written at once, before the round's fan-out;
//! - `GET /events?topic=T` answers the SSE head and `retry:`, then the subscriber is a cursor into
//!   its topic's log;
//! - after each poll round, **one** `send` per subscriber of the contiguous slice of the log it
//!   has not received yet; a short write waits for the writable edge. The log is trimmed once
//!   every cursor has passed (cleared when all caught up, its head dropped when mostly passed).
//!
//! Deliberately absent: history and `Last-Event-ID`, heartbeats, timeouts, several topics per
//! stream, `event=`, chunked bodies, percent-decoding, auth, CORS preflight, metrics, graceful
//! shutdown (SIGTERM ends it). A subscriber more than [`MAX_BEHIND`] bytes behind is cut.
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::HashMap;
use std::io::{self, Read, Write as _};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The listener's token; connections use their slab key.
const LISTENER: Token = Token(usize::MAX);
/// Bytes per `read`; a short read means the socket is drained (edge-triggered).
const READ_BUF: usize = 64 * 1024;
/// A request head that does not complete within this many bytes closes the connection.
const MAX_HEAD: usize = 16 * 1024;
/// Largest publish body (sseloop's default `--max-body`).
const MAX_BODY: usize = 1 << 20;
/// A subscriber this far behind its topic's log is cut, so one stuck reader cannot grow the log
/// without bound (sseloop's `--max-queue-bytes` plays this part there).
const MAX_BEHIND: u64 = 16 << 20;
/// The passed head of a log is dropped only above this size (and when it is over half the log),
/// so trimming never costs more than the writes it follows.
const TRIM_MIN: usize = 64 * 1024;

/// Bare coalescing SSE writer: the ceiling sseloop's throughput is compared with (see the module
/// documentation). Speaks just enough of sseloop's HTTP interface for sseloop-load.
#[derive(Parser, Debug)]
#[command(name = "sseloop-probe", version)]
struct Args {
    /// Address to listen on (port 0: the kernel picks; the chosen address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// `retry:` sent at stream start, as sseloop does.
    #[arg(long, default_value_t = 3000)]
    retry_ms: u64,
}

/// One topic: the events not yet received by every subscriber, encoded once.
#[derive(Default)]
struct Topic {
    /// Encoded events; `log[0]` is byte `base` of the topic's stream.
    log: Vec<u8>,
    base: u64,
    /// Subscriber slab keys.
    subs: Vec<usize>,
}

impl Topic {
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }
}

enum Role {
    /// Reading requests (publishers, and subscribers before their `GET /events`).
    Http,
    /// Streaming `topic` from `cursor` (absolute offset in the topic's stream); `slot` is the
    /// position in the topic's `subs`.
    Sub {
        topic: usize,
        slot: usize,
        cursor: u64,
    },
}

struct Conn {
    stream: TcpStream,
    role: Role,
    /// Unparsed request bytes.
    inbuf: Vec<u8>,
    /// Private output (responses; the SSE head) not yet written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// The last write was short: wait for the writable edge.
    blocked: bool,
    /// Close once `out` is written (`Connection: close`, bad request).
    close_after: bool,
}

/// Outcome of one `send`.
enum Sent {
    Done(usize),
    WouldBlock,
    Closed,
}

/// One `send(MSG_NOSIGNAL)` (the `sendto` syscall), retried on `EINTR`.
fn send(stream: &TcpStream, buf: &[u8]) -> Sent {
    loop {
        // SAFETY: the fd is an open socket owned by `stream`; `buf` is valid for reads of
        // `buf.len()` bytes for the whole call and the kernel keeps no pointer to it.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Sent::Done(n as usize);
        }
        match io::Error::last_os_error().kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Sent::WouldBlock,
            _ => return Sent::Closed,
        }
    }
}

/// Writes `conn.out` until done or the socket is full; `false` when the connection is dead.
fn flush_out(conn: &mut Conn) -> bool {
    while conn.out_pos < conn.out.len() {
        match send(&conn.stream, &conn.out[conn.out_pos..]) {
            Sent::Done(n) => conn.out_pos += n,
            Sent::WouldBlock => {
                conn.blocked = true;
                return true;
            }
            Sent::Closed => return false,
        }
    }
    conn.out.clear();
    conn.out_pos = 0;
    !conn.close_after
}

/// Appends one event as sseloop encodes it: `id:`, one `data:` line per body line (split on LF,
/// CR and CRLF), blank line.
fn encode_event(out: &mut Vec<u8>, run: &str, seq: u64, body: &[u8]) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(run.as_bytes());
    let _ = writeln!(out, "-{seq}");
    let mut rest = body;
    loop {
        let at = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..at.unwrap_or(rest.len())]);
        out.push(b'\n');
        let Some(at) = at else { break };
        let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[at + skip..];
    }
    out.push(b'\n');
}

/// The value of the first `topic=` query parameter, if it is a plausible topic name.
fn topic_param(target: &str) -> Option<&str> {
    let query = target.split_once('?')?.1;
    let value = query.split('&').find_map(|kv| kv.strip_prefix("topic="))?;
    (!value.is_empty() && value.len() <= 128).then_some(value)
}

/// What one complete request asks for.
enum Request<'a> {
    Subscribe(&'a str),
    Publish(&'a str, std::ops::Range<usize>),
    Health,
    NotFound,
    Bad,
}

/// Parses the request at the start of `buf`: `None` while incomplete, else the request and the
/// bytes it took, and whether the client asked to close.
fn parse_request(buf: &[u8]) -> Option<(Request<'_>, usize, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return None,
        _ => return Some((Request::Bad, buf.len(), true)),
    };
    let mut close = req.version != Some(1);
    let mut length = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) if n <= MAX_BODY => length = n,
                _ => return Some((Request::Bad, buf.len(), true)),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Some((Request::Bad, buf.len(), true));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    if buf.len() < head_len + length {
        return None;
    }
    let target = req.path.unwrap_or("/");
    let path = target.split('?').next().unwrap_or("");
    let request = match (req.method.unwrap_or(""), path) {
        ("GET", "/events") => topic_param(target).map_or(Request::Bad, Request::Subscribe),
        ("POST", "/publish") => topic_param(target).map_or(Request::Bad, |t| {
            Request::Publish(t, head_len..head_len + length)
        }),
        ("GET", "/healthz") => Request::Health,
        _ => Request::NotFound,
    };
    Some((request, head_len + length, close))
}

fn respond(out: &mut Vec<u8>, status: &str, content_type: &str, body: &[u8], close: bool) {
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nServer: sseloop-probe\r\nAccess-Control-Allow-Origin: *\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    out.extend_from_slice(body);
}

/// The run prefix of ids, shaped like sseloop's: start time in base-36 milliseconds plus a salt.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        & 0xf_ffff;
    format!("{}{}", base36(millis), base36(salt + 36u64.pow(3)))
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

struct Probe {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    topics: Vec<Topic>,
    topic_index: HashMap<String, usize>,
    run: String,
    seq: u64,
    retry_ms: u64,
    rbuf: Vec<u8>,
    /// Connections to close after the fan-out pass (closing reorders a topic's `subs`).
    dead: Vec<usize>,
}

impl Probe {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    self.accept();
                    continue;
                }
                let key = ev.token().0;
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_error();
                if !self.on_ready(key, readable, writable) {
                    self.close(key);
                }
            }
            self.fan_out();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if stream.set_nodelay(true).is_err() {
                        continue;
                    }
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(Conn {
                        stream,
                        role: Role::Http,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        out_pos: 0,
                        blocked: false,
                        close_after: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the rest wait in the backlog until the
                    // next connection's edge (a probe does not need a back-off timer).
                    eprintln!("sseloop-probe: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Handles one readiness event; `false` when the connection must be closed.
    fn on_ready(&mut self, key: usize, readable: bool, writable: bool) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return true;
        };
        if writable {
            conn.blocked = false;
            if !flush_out(conn) {
                return false;
            }
        }
        if !readable {
            return true;
        }
        loop {
            match conn.stream.read(&mut self.rbuf) {
                Ok(0) => return false,
                Ok(n) => {
                    // A subscriber has nothing more to say; its bytes are dropped.
                    if matches!(conn.role, Role::Http) {
                        conn.inbuf.extend_from_slice(&self.rbuf[..n]);
                    }
                    if n < self.rbuf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if matches!(conn.role, Role::Http) && !conn.inbuf.is_empty() {
            self.process(key);
            // The answers go out now, before this round's fan-out writes.
            if let Some(conn) = self.conns.get_mut(key) {
                if !conn.blocked && !flush_out(conn) {
                    return false;
                }
            }
        }
        true
    }

    /// Handles every complete request in `key`'s input.
    fn process(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut pos = 0;
        while !conn.close_after {
            let Some((request, used, close)) = parse_request(&conn.inbuf[pos..]) else {
                break;
            };
            let start = pos;
            pos += used;
            conn.close_after = close;
            match request {
                Request::Subscribe(name) => {
                    let t = match self.topic_index.get(name) {
                        Some(&t) => t,
                        None => {
                            self.topics.push(Topic::default());
                            self.topic_index
                                .insert(name.to_string(), self.topics.len() - 1);
                            self.topics.len() - 1
                        }
                    };
                    let topic = &mut self.topics[t];
                    conn.role = Role::Sub {
                        topic: t,
                        slot: topic.subs.len(),
                        cursor: topic.end(),
                    };
                    topic.subs.push(key);
                    let _ = write!(
                        conn.out,
                        "HTTP/1.1 200 OK\r\nServer: sseloop-probe\r\n\
                         Access-Control-Allow-Origin: *\r\nContent-Type: text/event-stream\r\n\
                         Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\nretry: {}\n\n",
                        self.retry_ms
                    );
                    // A stream never ends by the client's choice: no `Connection: close` here.
                    conn.close_after = false;
                    conn.inbuf = Vec::new();
                    return;
                }
                Request::Publish(name, body) => {
                    let body = start + body.start..start + body.end;
                    if std::str::from_utf8(&conn.inbuf[body.clone()]).is_err() {
                        respond(
                            &mut conn.out,
                            "400 Bad Request",
                            "application/json",
                            b"{\"error\":\"body is not UTF-8\",\"status\":400}\n",
                            close,
                        );
                        continue;
                    }
                    self.seq += 1;
                    // An unknown topic has no subscriber: the event would be trimmed at once.
                    if let Some(&t) = self.topic_index.get(name) {
                        encode_event(
                            &mut self.topics[t].log,
                            &self.run,
                            self.seq,
                            &conn.inbuf[body],
                        );
                    }
                    let reply = format!("{{\"id\":\"{}-{}\"}}\n", self.run, self.seq);
                    respond(
                        &mut conn.out,
                        "200 OK",
                        "application/json",
                        reply.as_bytes(),
                        close,
                    );
                }
                Request::Health => {
                    respond(&mut conn.out, "200 OK", "text/plain", b"ok\n", close);
                }
                Request::NotFound => {
                    respond(
                        &mut conn.out,
                        "404 Not Found",
                        "application/json",
                        b"{\"error\":\"not found\",\"status\":404}\n",
                        close,
                    );
                }
                Request::Bad => {
                    respond(
                        &mut conn.out,
                        "400 Bad Request",
                        "application/json",
                        b"{\"error\":\"bad request\",\"status\":400}\n",
                        true,
                    );
                    conn.close_after = true;
                }
            }
        }
        conn.inbuf.drain(..pos);
    }

    /// One `send` per subscriber of everything it has not received, then trims the logs.
    fn fan_out(&mut self) {
        let Probe {
            topics,
            conns,
            dead,
            ..
        } = self;
        for topic in topics.iter_mut().filter(|t| !t.log.is_empty()) {
            let end = topic.end();
            let mut low = end;
            for &key in &topic.subs {
                let Some(conn) = conns.get_mut(key) else {
                    continue;
                };
                let Role::Sub { cursor, .. } = &mut conn.role else {
                    continue;
                };
                if *cursor < end && !conn.blocked && conn.out.is_empty() {
                    let from = (*cursor - topic.base) as usize;
                    match send(&conn.stream, &topic.log[from..]) {
                        Sent::Done(n) => {
                            *cursor += n as u64;
                            conn.blocked = *cursor < end;
                        }
                        Sent::WouldBlock => conn.blocked = true,
                        Sent::Closed => dead.push(key),
                    }
                }
                if end - *cursor > MAX_BEHIND {
                    dead.push(key);
                }
                low = low.min(*cursor);
            }
            let passed = (low - topic.base) as usize;
            if passed == topic.log.len() {
                topic.log.clear();
                topic.base = end;
            } else if passed >= TRIM_MIN && passed * 2 >= topic.log.len() {
                topic.log.drain(..passed);
                topic.base = low;
            }
        }
        let mut dead = std::mem::take(&mut self.dead);
        for key in dead.drain(..) {
            self.close(key);
        }
        self.dead = dead;
    }

    /// Drops a connection (its descriptor leaves epoll as it closes) and its subscription.
    fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Role::Sub { topic, slot, .. } = conn.role {
            let subs = &mut self.topics[topic].subs;
            subs.swap_remove(slot);
            if let Some(&moved) = subs.get(slot) {
                if let Some(Conn {
                    role: Role::Sub { slot: s, .. },
                    ..
                }) = self.conns.get_mut(moved)
                {
                    *s = slot;
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let setup = || -> io::Result<Probe> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(args.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Probe {
            poll,
            listener,
            conns: Slab::with_capacity(1024),
            topics: Vec::new(),
            topic_index: HashMap::new(),
            run: run_id(),
            seq: 0,
            retry_ms: args.retry_ms,
            rbuf: vec![0; READ_BUF],
            dead: Vec::new(),
        })
    };
    let mut probe = match setup() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sseloop-probe: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    match probe.listener.local_addr() {
        // Same wording as sseloop's log line, so scripts find the port the same way.
        Ok(addr) => eprintln!("sseloop-probe listening on {addr}"),
        Err(e) => eprintln!("sseloop-probe: local address: {e}"),
    }
    match probe.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sseloop-probe: poll: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(body: &[u8]) -> String {
        let mut out = Vec::new();
        encode_event(&mut out, "run", 7, body);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn events_encode_like_sseloop() {
        assert_eq!(encoded(b"hello"), "id: run-7\ndata: hello\n\n");
        assert_eq!(encoded(b""), "id: run-7\ndata: \n\n");
        assert_eq!(
            encoded(b"a\nb\r\nc\rd\n"),
            "id: run-7\ndata: a\ndata: b\ndata: c\ndata: d\ndata: \n\n"
        );
    }

    #[test]
    fn requests_parse_with_topics_and_bodies() {
        let r = b"POST /publish?x=1&topic=t0 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET";
        let Some((Request::Publish("t0", body), used, false)) = parse_request(r) else {
            panic!("publish not recognised");
        };
        assert_eq!((&r[body], used), (&b"abc"[..], r.len() - 3));
        // Body not complete yet.
        assert!(parse_request(&r[..r.len() - 4]).is_none());
        let r = b"GET /events?topic=news HTTP/1.1\r\nConnection: close\r\n\r\n";
        assert!(matches!(
            parse_request(r),
            Some((Request::Subscribe("news"), _, true))
        ));
        assert!(matches!(
            parse_request(b"GET /events HTTP/1.1\r\n\r\n"),
            Some((Request::Bad, _, _))
        ));
        assert!(matches!(
            parse_request(b"GET /x HTTP/1.0\r\n\r\n"),
            Some((Request::NotFound, _, true))
        ));
        assert!(matches!(
            parse_request(b"POST /publish?topic=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some((Request::Bad, _, true))
        ));
        assert_eq!(base36(36 * 36 + 35), "10z");
    }
}
