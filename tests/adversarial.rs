//! Hostile and broken clients over loopback. After each attack the server still answers
//! `/healthz`, still delivers to a fresh subscriber, and its open descriptors and slab occupancy
//! return to the baseline.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use sseloop::frame::{self, ErrorCode, OwnedPayload};
use util::*;

fn open_fds(server: &TestServer) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .count()
}

/// The server is healthy and holds no more than it did at `baseline_fds`.
fn assert_recovered(server: &TestServer, baseline_fds: usize) {
    let resp = request(
        server.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let mut fresh = server.subscribe("topic=health", &[]);
    let id = server.publish("topic=health", "still alive");
    let ev = fresh.next_event();
    assert_eq!(
        (ev.id.as_str(), ev.data.as_str()),
        (id.as_str(), "still alive")
    );
    drop(fresh);
    let settled = wait_until(TIMEOUT, || {
        open_fds(server) <= baseline_fds && server.metric("sseloop_slab_connections") <= 1.0
    });
    assert!(
        settled,
        "not back to baseline: fds {} (baseline {baseline_fds}), slab {}",
        open_fds(server),
        server.metric("sseloop_slab_connections")
    );
}

fn raw_exchange(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect(server.addr);
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn status_of(resp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(resp);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn start() -> (TestServer, usize) {
    start_with(&["--header-timeout-ms", "1500", "--max-body", "64k"])
}

fn start_with(args: &[&str]) -> (TestServer, usize) {
    let server = TestServer::start(args);
    // Let the server finish starting (logger, signal pipe) before counting descriptors.
    assert_eq!(
        request(
            server.addr,
            "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        .status,
        200
    );
    let fds = open_fds(&server);
    (server, fds)
}

#[test]
fn byte_by_byte_request_is_answered() {
    let (server, fds) = start();
    let mut s = connect(server.addr);
    let body = "dribbled";
    let req = format!(
        "POST /publish?topic=health HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut sub = server.subscribe("topic=health", &[]);
    for b in req.as_bytes() {
        s.write_all(&[*b]).unwrap();
    }
    let resp = ResponseReader::new(s).next().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(sub.next_event().data, body);
    drop(sub);
    assert_recovered(&server, fds);
}

#[test]
fn oversized_and_garbage_heads_get_their_statuses() {
    let (server, fds) = start();
    let long_line = format!(
        "GET /healthz HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (long_line.into_bytes(), 431),
        (b"GET /he\0lthz HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("GET /h\u{e9}althz HTTP/1.1\r\n\r\n".as_bytes().to_vec(), 400),
        (b"\xff\xfe\xfd\r\n\r\n".to_vec(), 400),
        (b"GET /events?topic=%zz HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET /events?topic=%C3%28 HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(), 400),
        (b"POST /publish?topic=a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        (b"POST /publish?topic=a HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n".to_vec(), 501),
        (b"POST /publish?topic=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n".to_vec(), 400),
        (b"POST /publish?topic=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n".to_vec(), 400),
        (b"POST /publish?topic=a HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n".to_vec(), 413),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 400),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
    ];
    for (raw, want) in cases {
        let out = raw_exchange(&server, &raw);
        assert_eq!(
            status_of(&out),
            want,
            "for {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(80)])
        );
    }
    assert_recovered(&server, fds);
}

#[test]
fn smuggled_second_request_is_not_executed() {
    let (server, fds) = start();
    let mut sub = server.subscribe("topic=smuggle", &[]);
    // CL + TE: refused outright, so the "hidden" publish in the body is never read as a request.
    let attack = b"POST /publish?topic=smuggle HTTP/1.1\r\nContent-Length: 70\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /publish?topic=smuggle HTTP/1.1\r\nContent-Length: 6\r\n\r\nevil!!";
    let out = raw_exchange(&server, attack);
    assert_eq!(status_of(&out), 400);
    assert_eq!(
        String::from_utf8_lossy(&out).matches("HTTP/1.1").count(),
        1,
        "one response only"
    );
    server.publish("topic=smuggle", "legit");
    assert_eq!(
        sub.next_event().data,
        "legit",
        "the smuggled event must not have been published"
    );
    drop(sub);
    assert_recovered(&server, fds);
}

#[test]
fn expect_continue_gets_100_then_the_answer() {
    let (server, fds) = start();
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /publish?topic=health HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .unwrap();
    let mut reader = ResponseReader::new(s.try_clone().unwrap());
    assert_eq!(reader.next().unwrap().status, 100);
    s.write_all(b"body").unwrap();
    assert_eq!(reader.next().unwrap().status, 200);
    drop((s, reader));
    assert_recovered(&server, fds);
}

#[test]
fn huge_declared_body_never_sent_is_cut_by_the_deadline() {
    let (server, fds) = start();
    let mut s = connect(server.addr);
    s.write_all(b"POST /publish?topic=a HTTP/1.1\r\nContent-Length: 60000\r\n\r\nonly this")
        .unwrap();
    let mut reader = ResponseReader::new(s);
    assert!(reader.closed_within(TIMEOUT), "stalled body not cut");
    assert!(server.metric("sseloop_closes_total{cause=\"header_timeout\"}") >= 1.0);
    assert_recovered(&server, fds);
}

#[test]
fn half_closed_client_still_gets_its_response() {
    let (server, fds) = start();
    let out = raw_exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&out), 200);
    let out = raw_exchange(
        &server,
        b"POST /publish?topic=a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(status_of(&out), 200);
    // Half-closing an SSE subscription is leaving it.
    let sub = server.subscribe("topic=a", &[]);
    sub.stream.shutdown(Shutdown::Write).unwrap();
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_connections_open{kind=\"sse\"}")
        == 0.0));
    assert_recovered(&server, fds);
}

#[test]
fn reset_mid_request_and_mid_stream() {
    let (server, fds) = start();
    for i in 0..50 {
        let s = connect(server.addr);
        let mut w = s.try_clone().unwrap();
        match i % 3 {
            0 => w
                .write_all(b"POST /publish?topic=a HTTP/1.1\r\nContent-Length: 100\r\n\r\npartial")
                .unwrap(),
            1 => w.write_all(b"GET /events?topic=a HTT").unwrap(),
            _ => w
                .write_all(b"GET /events?topic=a HTTP/1.1\r\n\r\n")
                .unwrap(),
        }
        std::thread::sleep(Duration::from_millis(2));
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop((s, w));
    }
    server.publish("topic=a", "to the dead");
    assert_recovered(&server, fds);
}

#[test]
fn thousand_rapid_connect_close_cycles() {
    let (server, fds) = start();
    for i in 0..1000 {
        let s = TcpStream::connect(server.addr).unwrap();
        if i % 2 == 0 {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    }
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_connections_accepted_total")
        >= 1000.0));
    assert_recovered(&server, fds);
}

#[test]
fn frames_with_every_field_truncated() {
    let (server, fds) = start();
    let mut full = Vec::new();
    frame::encode_publish_frame(&mut full, b"corr", &["health"], "type", b"payload").unwrap();
    let payload = &full[frame::HEADER_LEN..];
    for cut in 1..payload.len() {
        // A frame whose header announces only the truncated payload: every field boundary
        // becomes a parse error, answered with an ERROR, and the connection stays usable.
        let mut bad = frame::encode_header(cut as u32).to_vec();
        bad.extend_from_slice(&payload[..cut]);
        let mut client = frame::FrameClient::connect(server.addr, &["health"], None, None).unwrap();
        client.send_raw(&bad).unwrap();
        client.ping(b"after").unwrap();
        let mut got_error = false;
        loop {
            match client.recv(Some(TIMEOUT)).unwrap() {
                OwnedPayload::Error { code, .. } => {
                    assert_eq!(code, ErrorCode::MALFORMED_PAYLOAD, "cut at {cut}");
                    got_error = true;
                }
                OwnedPayload::Pong { opaque } => {
                    assert_eq!(opaque, b"after");
                    break;
                }
                other => panic!("unexpected {other:?} at cut {cut}"),
            }
        }
        assert!(got_error, "no ERROR for a payload cut at {cut}");
    }
    assert_recovered(&server, fds);
}

#[test]
fn oversize_frame_header_is_refused_without_waiting_for_the_payload() {
    let (server, fds) = start_with(&["--max-frame", "1k"]);
    let mut client = frame::FrameClient::connect(server.addr, &["a"], None, None).unwrap();
    client.send_raw(&frame::encode_header(1 << 30)).unwrap();
    match client.recv(Some(TIMEOUT)).unwrap() {
        OwnedPayload::Error { code, .. } => assert_eq!(code, ErrorCode::FRAME_TOO_LARGE),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        client.recv(Some(TIMEOUT)).is_err(),
        "connection should close after a fatal error"
    );
    assert_recovered(&server, fds);
}
