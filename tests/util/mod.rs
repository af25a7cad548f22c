//! Shared helpers for integration tests: start a real `sseloop` process on a free port, talk to it
//! over real sockets, and read SSE streams, responses and metrics with parsers that tolerate
//! split reads.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: tests must pass on a loaded 2-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server process started for one test; killed (by its PID) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub child: Child,
    /// Lines the server logged on stderr (collected by a thread).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts `sseloop --listen 127.0.0.1:0 <args>` and waits for its address.
    pub fn start(args: &[&str]) -> TestServer {
        Self::start_with(args, |_| {})
    }

    /// Like [`TestServer::start`], letting the caller adjust the command (env, rlimits...).
    pub fn start_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sseloop"));
        cmd.arg("--listen").arg("127.0.0.1:0").args(args);
        // SSELOOP_TEST_LOG raises the servers' log level when chasing a failure.
        let level = std::env::var("SSELOOP_TEST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("RUST_LOG", level);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        Self::launch(cmd)
    }

    /// Starts `sseloop --listen <listen> <args>` (no default `--listen`). When `listen` is an
    /// unspecified address (`0.0.0.0:0`), [`TestServer::addr`] is its loopback equivalent, so the
    /// test still talks only to 127.0.0.1.
    pub fn start_on(listen: &str, args: &[&str]) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sseloop"));
        cmd.arg("--listen").arg(listen).args(args);
        cmd.env("RUST_LOG", "info");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut server = Self::launch(cmd);
        if server.addr.ip().is_unspecified() {
            server.addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        server
    }

    /// Spawns a prepared command and waits for its "listening on" line.
    fn launch(mut cmd: Command) -> TestServer {
        let mut child = cmd.spawn().expect("spawn sseloop");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split(',').next().unwrap_or("").trim().to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("server did not start; log: {:?}", log.lock().unwrap()));
        TestServer {
            addr: addr.parse().expect("address"),
            child,
            log,
        }
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Current metrics as `name{labels}` → value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        let resp = request(
            self.addr,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(resp.status, 200, "metrics: {}", resp.text());
        parse_metrics(&resp.text())
    }

    /// One metric's value (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(0.0)
    }

    /// Publishes `body` with the query string `query` (e.g. `topic=a&event=x`); returns the id.
    pub fn publish(&self, query: &str, body: &str) -> String {
        let resp = self.post(query, body, &[]);
        assert_eq!(resp.status, 200, "publish failed: {}", resp.text());
        json_id(&resp.text())
    }

    /// POST /publish with extra headers; returns the response.
    pub fn post(&self, query: &str, body: &str, headers: &[(&str, &str)]) -> Response {
        let mut raw = format!(
            "POST /publish?{query} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(body);
        request(self.addr, &raw)
    }

    /// Opens an SSE subscription with `query` and extra headers; asserts the 200 head.
    pub fn subscribe(&self, query: &str, headers: &[(&str, &str)]) -> SseClient {
        let client = SseClient::open(self.addr, &format!("/events?{query}"), headers);
        assert_eq!(client.status, 200, "subscribe {query}: {:?}", client.head);
        client
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // A failing test shows what its servers said: often the only clue in a CI log.
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            print_tail(&format!("server {}", self.addr), &log, 60);
        }
    }
}

/// Prints the last `n` lines of a log a failing test leaves behind (every line when
/// SSELOOP_TEST_LOG is set: the failure is being chased).
pub fn print_tail<S: AsRef<str>>(what: &str, lines: &[S], n: usize) {
    let keep = if std::env::var_os("SSELOOP_TEST_LOG").is_some() {
        lines.len()
    } else {
        n
    };
    let tail = &lines[lines.len().saturating_sub(keep)..];
    eprintln!("--- {what} (last {} log lines):", tail.len());
    for line in tail {
        eprintln!("    {}", line.as_ref());
    }
}

/// Signals the tests send (not every test binary uses them).
#[allow(unused_imports)]
pub use libc::{SIGINT, SIGTERM};

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// Value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }
    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// `read`, again when a signal interrupted it: a socket read with a timeout returns
/// `Interrupted` whatever the handler's flags (signal(7)). Seen in tests/ffi.rs on a busy
/// machine, woken by SIGCHLD from the test's own children (valgrind, cc, make). An interruption
/// is not the end of a stream.
pub fn read_some(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// Connects with timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends raw bytes on a new connection and reads one response.
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).expect("write");
    let mut reader = ResponseReader::new(s);
    reader.next().expect("response")
}

/// Sends raw bytes (a body need not be UTF-8) on a new connection and reads one response.
pub fn request_bytes(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(raw).expect("write");
    let mut reader = ResponseReader::new(s);
    reader.next().expect("response")
}

/// Runs the server binary to completion with `args` (nothing else added) and returns its exit
/// code and everything it printed (stdout then stderr). Panics if it runs past [`TIMEOUT`].
pub fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sseloop"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sseloop");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sseloop {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (status.code(), text)
}

/// Splits an id of the form `<run>-<seq>` (the documented format of this server's ids).
pub fn split_id(id: &str) -> (String, u64) {
    let (run, seq) = id
        .rsplit_once('-')
        .unwrap_or_else(|| panic!("id {id:?} is not <run>-<seq>"));
    let seq = seq
        .parse()
        .unwrap_or_else(|_| panic!("id {id:?}: sequence is not a number"));
    (run.to_string(), seq)
}

/// Reads consecutive responses from one connection (keep-alive, pipelining).
pub struct ResponseReader {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl ResponseReader {
    pub fn new(stream: TcpStream) -> Self {
        ResponseReader {
            stream,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = read_some(&mut self.stream, &mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next response; `None` when the server closed before sending one.
    pub fn next(&mut self) -> Option<Response> {
        self.next_inner(false)
    }

    /// The next response to a HEAD request (no body, whatever Content-Length says).
    pub fn next_head_only(&mut self) -> Option<Response> {
        self.next_inner(true)
    }

    fn next_inner(&mut self, head_only: bool) -> Option<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        self.buf.drain(..head_end);
        let len = if head_only || status == 204 || status == 101 || status == 100 {
            Some(0)
        } else {
            header_of(&head, "content-length").and_then(|v| v.parse::<usize>().ok())
        };
        let body = match len {
            Some(len) => {
                while self.buf.len() < len {
                    match self.fill() {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
                self.buf.drain(..len).collect()
            }
            None => {
                // Close-delimited.
                while let Ok(n) = self.fill() {
                    if n == 0 {
                        break;
                    }
                }
                std::mem::take(&mut self.buf)
            }
        };
        Some(Response { status, head, body })
    }

    /// True once the server has closed the connection (reads EOF or reset within `timeout`).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut chunk = [0u8; 4096];
        let start = Instant::now();
        loop {
            match read_some(&mut self.stream, &mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
            if start.elapsed() > timeout {
                return false;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One dispatched SSE event as a browser would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last-event-id buffer after the event (persists across events, per the spec).
    pub id: String,
    /// The type (`message` by default).
    pub event: String,
    /// The data, with the final LF removed.
    pub data: String,
}

/// An SSE subscription read with an independent WHATWG-rules parser.
pub struct SseClient {
    pub stream: TcpStream,
    pub status: u16,
    pub head: String,
    /// Every body byte received so far.
    pub raw: Vec<u8>,
    parsed_upto: usize,
    pending_line: Vec<u8>,
    data: String,
    event_type: String,
    last_id: String,
    /// Latest `retry:` value seen.
    pub retry: Option<u64>,
    /// Comment lines seen.
    pub comments: usize,
    ready: std::collections::VecDeque<SseEvent>,
}

impl SseClient {
    /// Sends `GET path` with headers and reads the response head.
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        SseClient::open_on(connect(addr), path, headers)
    }

    /// Like [`SseClient::open`] on a connected stream (e.g. one bound to another source
    /// address).
    pub fn open_on(mut stream: TcpStream, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        stream.write_all(raw.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            match read_some(&mut stream, &mut byte) {
                Ok(1) => buf.push(byte[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        SseClient {
            stream,
            status,
            head,
            raw: Vec::new(),
            parsed_upto: 0,
            pending_line: Vec::new(),
            data: String::new(),
            event_type: String::new(),
            last_id: String::new(),
            retry: None,
            comments: 0,
            ready: Default::default(),
        }
    }

    /// Header of the response head.
    pub fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }

    /// Reads more bytes; false on EOF/error/timeout.
    fn fill(&mut self, timeout: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 65536];
        match read_some(&mut self.stream, &mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&chunk[..n]);
                self.parse();
                true
            }
        }
    }

    fn parse(&mut self) {
        while self.parsed_upto < self.raw.len() {
            let b = self.raw[self.parsed_upto];
            self.parsed_upto += 1;
            // Only LF is expected from sseloop; CR handling kept for completeness.
            if b == b'\n' || b == b'\r' {
                let line =
                    String::from_utf8_lossy(&std::mem::take(&mut self.pending_line)).into_owned();
                self.line(&line);
            } else {
                self.pending_line.push(b);
            }
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if !self.data.is_empty() {
                self.data.pop();
                let event = if self.event_type.is_empty() {
                    "message".to_string()
                } else {
                    self.event_type.clone()
                };
                self.ready.push_back(SseEvent {
                    id: self.last_id.clone(),
                    event,
                    data: std::mem::take(&mut self.data),
                });
            }
            self.data.clear();
            self.event_type.clear();
            return;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => (
                &line[..i],
                line[i + 1..].strip_prefix(' ').unwrap_or(&line[i + 1..]),
            ),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event_type = value.to_string(),
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok()
            }
            _ => {}
        }
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event_within(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Some(ev);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return self.ready.pop_front();
            }
        }
    }

    /// The next event (panics after [`TIMEOUT`]).
    pub fn next_event(&mut self) -> SseEvent {
        self.next_event_within(TIMEOUT)
            .expect("timed out waiting for an SSE event")
    }

    /// The next `n` events.
    pub fn events(&mut self, n: usize) -> Vec<SseEvent> {
        (0..n).map(|_| self.next_event()).collect()
    }

    /// Reads until at least `n` body bytes are in `raw` (or timeout).
    pub fn read_raw_until(&mut self, pred: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        while !pred(&self.raw) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return pred(&self.raw);
            }
        }
        true
    }

    /// The body bytes received so far, as text (lossy).
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// Waits for comment lines until `n` have been seen.
    pub fn wait_comments(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.comments < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                break;
            }
        }
        self.comments >= n
    }

    /// True if the server ends the stream within `timeout` (remaining bytes are parsed).
    pub fn ended_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match read_some(&mut self.stream, &mut chunk) {
                Ok(0) => return true,
                Ok(n) => {
                    self.raw.extend_from_slice(&chunk[..n]);
                    self.parse();
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// Parses Prometheus text into `name{labels}` → value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Extracts `"id":"…"` from a publish response.
pub fn json_id(body: &str) -> String {
    let start = body.find("\"id\":\"").expect("id in publish response") + 6;
    let end = body[start..].find('"').expect("closing quote") + start;
    body[start..end].to_string()
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// One keep-alive `POST /publish` of `body` to `topic`, as raw request bytes for pipelining.
pub fn raw_publish(topic: &str, body: &str) -> String {
    format!(
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads `n` responses, each a `200` accepting a publish, and returns their ids in order.
pub fn accepted_ids(responses: &mut ResponseReader, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = responses
                .next()
                .unwrap_or_else(|| panic!("publish {i}: no response"));
            assert_eq!(r.status, 200, "publish {i}: {}", r.text());
            json_id(&r.text())
        })
        .collect()
}

/// Raises this process's soft open-files limit to at least `want` (up to the hard limit); the
/// servers it starts inherit it. Panics when the hard limit is lower: the test needs the sockets.
pub fn raise_open_files(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            assert!(
                lim.rlim_max >= want,
                "open files hard limit {} < {want}",
                lim.rlim_max
            );
            lim.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// Says that a group of tests did not run because `tool` is missing: once per test binary and
/// tool, written straight to the process's standard error, which the test harness does not
/// capture, so the line shows in `cargo test` output among the results. With
/// `SSELOOP_REQUIRE_TOOLS=1` (CI) a missing tool is a failure instead.
#[allow(dead_code)]
pub fn skipped(tool: &str, group: &str, install: &str) {
    use std::io::Write as _;
    assert!(
        std::env::var("SSELOOP_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "SSELOOP_REQUIRE_TOOLS=1 but {tool} is not installed ({install})"
    );
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|t| t == tool) {
        said.push(tool.to_string());
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {group}: {tool} is not installed ({install})"
        );
    }
}

/// Events each reader thread has received, so that a publisher can stay at most a few events
/// ahead of the slowest: a test about readers that keep up must not depend on how the machine
/// schedules its threads.
#[derive(Clone)]
pub struct Progress(std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>>);

impl Progress {
    pub fn new(readers: usize) -> Progress {
        Progress(std::sync::Arc::new(
            (0..readers)
                .map(|_| std::sync::atomic::AtomicUsize::new(0))
                .collect(),
        ))
    }

    /// Reader `n` received one more event.
    pub fn received(&self, n: usize) {
        self.0[n].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until every reader has received at least `count` events.
    pub fn wait_all(&self, count: usize) {
        let start = Instant::now();
        while self
            .0
            .iter()
            .any(|p| p.load(std::sync::atomic::Ordering::Relaxed) < count)
        {
            assert!(
                start.elapsed() < TIMEOUT,
                "a reader stopped before {count} events"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
