//! The probe binary over real sockets: the bytes sseloop-load relies on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Probe {
    child: Child,
    port: u16,
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Probe {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sseloop-probe"))
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    Probe { child, port }
}

fn connect(p: &Probe) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads until `buf` ends with `until` (split reads tolerated).
fn read_until(s: &mut TcpStream, until: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(until.as_bytes()) {
        assert!(Instant::now() < deadline, "timed out; got {got:?}");
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

fn subscribe(p: &Probe, topic: &str) -> TcpStream {
    let mut s = connect(p);
    write!(s, "GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let head = read_until(&mut s, "retry: 3000\n\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(!head.contains("Content-Length"), "{head}");
    s
}

fn post(topic: &str, body: &str) -> String {
    format!(
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn pipelined_publishes_reach_subscribers_once_in_order() {
    let p = start();
    let mut a = subscribe(&p, "t");
    let mut b = subscribe(&p, "t");
    let mut other = subscribe(&p, "u");
    let mut publisher = connect(&p);
    // Two pipelined publishes in one segment, then a third on the same keep-alive connection.
    publisher
        .write_all((post("t", "one") + &post("t", "two\nlines")).as_bytes())
        .unwrap();
    let replies = read_until(&mut publisher, "-2\"}\n");
    let first = replies.split("{\"id\":\"").nth(1).unwrap();
    let run = first[..first.find('"').unwrap()]
        .strip_suffix("-1")
        .unwrap();
    assert_eq!(
        replies.matches("HTTP/1.1 200 OK\r\n").count(),
        2,
        "{replies}"
    );
    assert!(
        replies.contains(&format!("\r\n\r\n{{\"id\":\"{run}-2\"}}\n")),
        "{replies}"
    );
    let want = format!("id: {run}-1\ndata: one\n\nid: {run}-2\ndata: two\ndata: lines\n\n");
    assert_eq!(
        read_until(&mut a, &format!("{run}-2\ndata: two\ndata: lines\n\n")),
        want
    );
    assert_eq!(read_until(&mut b, "lines\n\n"), want);

    // A subscriber closing must not disturb the others of its topic (slot bookkeeping).
    drop(a);
    let mut c = subscribe(&p, "t");
    publisher
        .write_all(post("u", "elsewhere").as_bytes())
        .unwrap();
    read_until(&mut publisher, "-3\"}\n");
    publisher.write_all(post("t", "three").as_bytes()).unwrap();
    read_until(&mut publisher, "-4\"}\n");
    let three = format!("id: {run}-4\ndata: three\n\n");
    assert_eq!(read_until(&mut b, "three\n\n"), three);
    assert_eq!(read_until(&mut c, "three\n\n"), three);
    assert_eq!(
        read_until(&mut other, "elsewhere\n\n"),
        format!("id: {run}-3\ndata: elsewhere\n\n")
    );
}

#[test]
fn bad_requests_are_answered() {
    let p = start();
    let mut s = connect(&p);
    s.write_all(b"GET /nope HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        .unwrap();
    let got = read_until(&mut s, "ok\n");
    assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");
    assert!(got.contains("HTTP/1.1 200 OK\r\n"), "{got}");
    let mut s = connect(&p);
    s.write_all(b"GET /events HTTP/1.1\r\n\r\n").unwrap();
    let got = read_until(&mut s, "\"status\":400}\n");
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(got.contains("Connection: close\r\n"), "{got}");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "closed after a bad request"
    );
}
