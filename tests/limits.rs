//! Per-client limits over real sockets (docs/SECURITY.md, "Per-client limits"). Several loopback
//! addresses (127.0.0.2, 127.0.0.3, ...) act as different clients: each client socket is bound
//! to its address before it connects. 127.0.0.1 is left to the test's own requests (metrics).

mod util;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sseloop::frame::{self, ErrorCode, FrameClient, FrameDecoder, OwnedPayload};
use util::{Response, ResponseReader, SseClient, TestServer, TIMEOUT};

/// A connection to `addr` from the loopback address `src`.
fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let ip: IpAddr = src.parse().unwrap();
    socket.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// One request from `src`, its response (the connection is dropped).
fn request_from(src: &str, addr: SocketAddr, raw: &str) -> Response {
    let mut s = connect_from(src, addr);
    s.write_all(raw.as_bytes()).unwrap();
    ResponseReader::new(s).next().expect("a response")
}

/// An SSE stream from `src` (check its `status`).
fn stream_from(src: &str, addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> SseClient {
    SseClient::open_on(
        connect_from(src, addr),
        &format!("/events?{query}"),
        headers,
    )
}

/// A frame handshake from `src` for `topics`: the status, and every frame the server sent
/// before closing (read until EOF).
fn frames_from(src: &str, addr: SocketAddr, topics: &[&str]) -> (u16, Vec<OwnedPayload>) {
    let mut s = connect_from(src, addr);
    let head = frame::client::handshake_request("t", topics, None, None).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let status = String::from_utf8_lossy(&all[..end])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (decoder, mut at, mut out) = (FrameDecoder::new(1 << 20), end, Vec::new());
    while let Ok(Some(found)) = decoder.decode(&all[at..]) {
        let payload = &all[at..][found.payload_range()];
        out.push(OwnedPayload::from(frame::parse(payload).unwrap()));
        at += found.frame_len();
    }
    (status, out)
}

fn limited(server: &TestServer, limit: &str) -> f64 {
    server.metric(&format!("sseloop_limited_total{{limit=\"{limit}\"}}"))
}

#[test]
fn one_address_at_its_connection_cap_is_refused_while_another_still_connects() {
    let server = TestServer::start(&["--max-connections-per-ip", "2"]);
    let a1 = stream_from("127.0.0.2", server.addr, "topic=t", &[]);
    let a2 = stream_from("127.0.0.2", server.addr, "topic=t", &[]);
    assert_eq!((a1.status, a2.status), (200, 200));
    let third = request_from(
        "127.0.0.2",
        server.addr,
        "GET /events?topic=t HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(third.header("Retry-After").as_deref(), Some("1"));
    assert!(
        third.text().contains("too many connections"),
        "{}",
        third.text()
    );
    // A frame handshake gets its 101 and a GOAWAY saying the same, then the close.
    let (status, frames) = frames_from("127.0.0.2", server.addr, &["t"]);
    assert_eq!(status, 101);
    match frames.as_slice() {
        [OwnedPayload::GoAway { code, retry_ms, .. }] => {
            assert_eq!(*code, ErrorCode::CONNECTION_LIMITED);
            assert_eq!(*retry_ms, 1000);
        }
        other => panic!("expected one GOAWAY, got {other:?}"),
    }
    // Another address is not affected.
    let b = stream_from("127.0.0.3", server.addr, "topic=t", &[]);
    assert_eq!(b.status, 200);
    assert_eq!(limited(&server, "connections_per_ip"), 2.0);
    assert_eq!(
        server.metric("sseloop_http_responses_total{code=\"429\"}"),
        1.0
    );
    // A closed stream frees its place.
    drop(a1);
    assert!(util::wait_until(TIMEOUT, || {
        let again = stream_from("127.0.0.2", server.addr, "topic=t", &[]);
        again.status == 200
    }));
    drop((a2, b));
}

#[test]
fn x_forwarded_for_is_honoured_only_behind_a_trusted_proxy() {
    // Without --trusted-proxy the headers are ignored: the peer's own address is counted.
    let plain = TestServer::start(&["--max-connections-per-ip", "1"]);
    let held = stream_from(
        "127.0.0.2",
        plain.addr,
        "topic=t",
        &[("X-Forwarded-For", "1.1.1.1")],
    );
    assert_eq!(held.status, 200);
    let forged = stream_from(
        "127.0.0.2",
        plain.addr,
        "topic=t",
        &[("X-Forwarded-For", "2.2.2.2")],
    );
    assert_eq!(forged.status, 429, "a forged header must not lift the cap");
    let forged = stream_from(
        "127.0.0.2",
        plain.addr,
        "topic=t",
        &[("Forwarded", "for=3.3.3.3")],
    );
    assert_eq!(forged.status, 429);

    // Behind a trusted proxy (127.0.0.2) each client its headers name has its own count.
    let proxied = TestServer::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxy",
        "127.0.0.2/32",
    ]);
    let open =
        |headers: &[(&str, &str)]| stream_from("127.0.0.2", proxied.addr, "topic=t", headers);
    let c1 = open(&[("X-Forwarded-For", "1.1.1.1")]);
    let c2 = open(&[("X-Forwarded-For", "2.2.2.2")]);
    assert_eq!(
        (c1.status, c2.status),
        (200, 200),
        "two clients through one proxy"
    );
    assert_eq!(open(&[("X-Forwarded-For", "1.1.1.1")]).status, 429);
    // The client's own additions sit before its real address: the last untrusted one counts.
    assert_eq!(open(&[("X-Forwarded-For", "9.9.9.9, 2.2.2.2")]).status, 429);
    // RFC 7239, quoted IPv6 with a port; a second address of the same /64 is the same client.
    let v6 = open(&[("Forwarded", "for=\"[2001:db8::1]:4711\";proto=http")]);
    assert_eq!(v6.status, 200);
    assert_eq!(open(&[("Forwarded", "for=\"[2001:db8::2]\"")]).status, 429);
    assert_eq!(
        open(&[("Forwarded", "for=\"[2001:db8:0:1::2]\"")]).status,
        200
    );
    // An untrusted peer's headers are still ignored on the same server.
    let direct = stream_from(
        "127.0.0.3",
        proxied.addr,
        "topic=t",
        &[("X-Forwarded-For", "5.5.5.5")],
    );
    assert_eq!(direct.status, 200);
    let again = stream_from(
        "127.0.0.3",
        proxied.addr,
        "topic=t",
        &[("X-Forwarded-For", "6.6.6.6")],
    );
    assert_eq!(again.status, 429);
    assert_eq!(limited(&proxied, "connections_per_ip"), 4.0);
    drop((held, c1, c2, v6, direct));
}

/// `POST /publish` on a keep-alive connection; the response.
fn publish_on(reader: &mut ResponseReader, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut raw = format!(
        "POST /publish?topic=rate HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    reader.stream.write_all(raw.as_bytes()).unwrap();
    reader.next().expect("a response")
}

#[test]
fn a_publisher_over_its_rate_gets_429_and_is_served_again_after_the_refill() {
    let server = TestServer::start(&["--publish-rate", "2/s", "--publish-burst", "2"]);
    let mut sub = stream_from("127.0.0.4", server.addr, "topic=rate", &[]);
    assert_eq!(sub.status, 200);
    let mut publisher = ResponseReader::new(connect_from("127.0.0.2", server.addr));
    // The bucket refills from the first token taken: time from before it.
    let first_sent = Instant::now();
    assert_eq!(publish_on(&mut publisher, "one", &[]).status, 200);
    assert_eq!(publish_on(&mut publisher, "two", &[]).status, 200);
    let key = [("Idempotency-Key", "retry-me")];
    let refused = publish_on(&mut publisher, "three", &key);
    let refused_at = Instant::now();
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("Retry-After").as_deref(), Some("1"));
    // Another address has its own bucket.
    let mut other = ResponseReader::new(connect_from("127.0.0.3", server.addr));
    assert_eq!(publish_on(&mut other, "elsewhere", &[]).status, 200);
    // One token every 500 ms: retry (same key) until served, and time it.
    let served = loop {
        std::thread::sleep(Duration::from_millis(20));
        let r = publish_on(&mut publisher, "three", &key);
        if r.status == 200 {
            break r;
        }
        assert_eq!(r.status, 429);
        assert!(refused_at.elapsed() < TIMEOUT, "never served again");
    };
    let refill = first_sent.elapsed();
    eprintln!("publish refill after the first token: {refill:?} (expected about 500 ms at 2/s)");
    assert!(
        refill >= Duration::from_millis(450) && refill <= Duration::from_secs(3),
        "served again after {refill:?}"
    );
    let id = util::json_id(&served.text());
    // The refused attempts were not recorded: the retry was published, and exactly once.
    let events = sub.events(4);
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["one", "two", "elsewhere", "three"]);
    assert_eq!(events[3].id, id);
    std::thread::sleep(Duration::from_millis(600));
    let repeat = publish_on(&mut publisher, "three", &key);
    assert_eq!(util::json_id(&repeat.text()), id, "an idempotent repeat");
    assert!(sub.next_event_within(Duration::from_millis(300)).is_none());
    assert!(limited(&server, "publish_rate") >= 2.0);

    // Frame mode: an ERROR RATE_LIMITED answers the PUBLISH, and nothing is published.
    let mut fc = FrameClient::connect(server.addr, &["other"], None, None).unwrap();
    let mut answers = Vec::new();
    for n in 0..3u8 {
        fc.publish(&["rate"], "", b"frame", &[n]).unwrap();
        answers.push(fc.recv(Some(TIMEOUT)).unwrap());
    }
    assert!(
        matches!(answers[0], OwnedPayload::PublishAck { .. }),
        "{answers:?}"
    );
    assert!(
        matches!(answers[1], OwnedPayload::PublishAck { .. }),
        "{answers:?}"
    );
    match &answers[2] {
        OwnedPayload::Error { code, message, .. } => {
            assert_eq!(*code, ErrorCode::RATE_LIMITED);
            assert!(message.contains("retry in 1 s"), "{message}");
        }
        other => panic!("expected ERROR RATE_LIMITED, got {other:?}"),
    }
    let frames: Vec<String> = sub.events(2).into_iter().map(|e| e.data).collect();
    assert_eq!(frames, ["frame", "frame"]);
    assert!(sub.next_event_within(Duration::from_millis(300)).is_none());
}

#[test]
fn an_over_subscribed_stream_is_refused_over_sse_and_over_frames() {
    let server = TestServer::start(&["--max-subscriptions-per-conn", "2"]);
    let three = stream_from("127.0.0.2", server.addr, "topic=a&topic=b&topic=c", &[]);
    assert_eq!(three.status, 400);
    let two = stream_from("127.0.0.2", server.addr, "topic=a&topic=p*", &[]);
    assert_eq!(two.status, 200);
    match FrameClient::connect(server.addr, &["a", "b", "c"], None, None) {
        Err(e) => assert_eq!(frame::client::handshake_status(&e), Some(400)),
        Ok(_) => panic!("a handshake over the cap was accepted"),
    }
    let mut fc = FrameClient::connect(server.addr, &["a", "b"], None, None).unwrap();
    // Cumulative: a SUBSCRIBE adding a third topic is refused whole.
    fc.subscribe(&["a", "c"], None).unwrap();
    match fc.recv(Some(TIMEOUT)).unwrap() {
        OwnedPayload::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::TOO_MANY_SUBSCRIPTIONS);
            assert!(
                message.contains("--max-subscriptions-per-conn 2"),
                "{message}"
            );
        }
        other => panic!("expected ERROR TOO_MANY_SUBSCRIPTIONS, got {other:?}"),
    }
    // Nothing of it stayed: an event on c does not arrive, the next one on a does.
    server.publish("topic=c", "not for you");
    server.publish("topic=a", "for you");
    match fc.recv(Some(TIMEOUT)).unwrap() {
        OwnedPayload::Event { data, .. } => assert_eq!(data, b"for you"),
        other => panic!("expected the event on a, got {other:?}"),
    }
    // Room made by an UNSUBSCRIBE is usable.
    fc.unsubscribe(&["b"]).unwrap();
    fc.subscribe(&["c"], None).unwrap();
    server.publish("topic=c", "now for you");
    match fc.recv(Some(TIMEOUT)).unwrap() {
        OwnedPayload::Event { data, .. } => assert_eq!(data, b"now for you"),
        other => panic!("expected the event on c, got {other:?}"),
    }
    assert_eq!(limited(&server, "subscriptions_per_conn"), 3.0);
    drop((three, two));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn a_flood_from_one_address_leaves_a_well_behaved_clients_latency_bounded() {
    util::raise_open_files(20_000);
    let server = TestServer::start(&[
        "--max-connections-per-ip",
        "100",
        "--max-new-connections-rate",
        "200",
        "--max-connections",
        "15000",
    ]);
    let addr = server.addr;
    let mut sub = stream_from("127.0.0.3", addr, "topic=calm", &[]);
    assert_eq!(sub.status, 200);
    let mut publisher = ResponseReader::new(connect_from("127.0.0.4", addr));
    // Quiet baseline first.
    let mut measure = |n: usize, tag: &str| {
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            let body = format!("{tag}-{i}");
            let mut raw = format!(
                "POST /publish?topic=calm HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            raw.push_str(&body);
            publisher.stream.write_all(raw.as_bytes()).unwrap();
            let ev = sub.next_event_within(TIMEOUT).expect("event");
            assert_eq!(ev.data, body);
            lat.push(t.elapsed());
            assert_eq!(publisher.next().expect("publish answer").status, 200);
            std::thread::sleep(Duration::from_millis(2));
        }
        lat.sort();
        lat
    };
    let quiet = measure(100, "quiet");
    let flood = std::thread::spawn(move || {
        let start = Instant::now();
        let mut held = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let mut s = connect_from("127.0.0.2", addr);
            let _ = s.write_all(b"GET /events?topic=calm HTTP/1.1\r\nHost: t\r\n\r\n");
            held.push(s);
        }
        let connected = start.elapsed();
        // Every connection is answered: 200 for the first ones, 429 for the rest.
        let (mut refused, mut streams, mut other) = (0, 0, Vec::new());
        for mut s in held {
            let mut head = [0u8; 12];
            match s.read_exact(&mut head) {
                Ok(()) if &head[9..12] == b"429" => refused += 1,
                Ok(()) if &head[9..12] == b"200" => streams += 1,
                Ok(()) => other.push(String::from_utf8_lossy(&head).into_owned()),
                Err(e) => other.push(e.to_string()),
            }
        }
        // The cap's worth of streams (more only if some closed meanwhile and freed their place).
        assert!(
            (100..=200).contains(&streams),
            "{streams} streams; others: {other:?}"
        );
        // A refused connection the client leaves unread past the server's linger is reset:
        // counted apart, never a stream.
        (connected, start.elapsed(), refused, other.len(), streams)
    });
    let mut during = Vec::new();
    let mut fresh = Vec::new();
    while !flood.is_finished() || during.len() < 200 {
        during.extend(measure(10, "flood"));
        // A new client from another address is accepted and answered while the flood lasts.
        let t = Instant::now();
        let health = request_from(
            "127.0.0.5",
            addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        assert_eq!(health.status, 200);
        fresh.push(t.elapsed());
        assert!(during.len() < 100_000, "the flood never ended");
    }
    let (connected, answered, refused, reset, streams) = flood.join().unwrap();
    during.sort();
    fresh.sort();
    let (q99, d50, d99) = (
        percentile(&quiet, 0.99),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
    );
    let f99 = percentile(&fresh, 0.99);
    eprintln!(
        "flood of 5000 connections from one address: connected in {connected:?}, all answered in \
         {answered:?}, {streams} streams, {refused} refused ({reset} reset before read); publish->receive p99 quiet {q99:?}, during p50 {d50:?} \
         p99 {d99:?} ({} samples); another address's connect+answer p99 {f99:?} ({} samples)",
        during.len(),
        fresh.len()
    );
    assert_eq!(streams + refused + reset, 5000);
    assert!(refused >= 4000, "{refused} answered 429");
    // The flood lasts seconds: these bounds catch a loop held for it, with room for a busy
    // machine's scheduling (the figures themselves are printed above).
    assert!(d99 < Duration::from_secs(1), "p99 under flood {d99:?}");
    assert!(
        f99 < Duration::from_secs(1),
        "accept p99 under flood {f99:?}"
    );
    assert!(
        limited(&server, "connections_per_ip") + limited(&server, "new_connections_rate")
            >= refused as f64
    );
}

#[test]
fn tables_stay_bounded_after_100000_distinct_keys_behind_a_trusted_proxy() {
    let server = TestServer::start(&[
        "--trusted-proxy",
        "127.0.0.2",
        "--max-connections-per-ip",
        "4",
        "--max-new-connections-rate",
        "1000",
        // A bucket that takes 1000 s to refill never expires during the test: the publishers'
        // table shows its cap; the new connections' buckets (1 s) expire as they go idle.
        "--publish-rate",
        "1",
        "--publish-burst",
        "1000",
    ]);
    let mut proxy = ResponseReader::new(connect_from("127.0.0.2", server.addr));
    const KEYS: u32 = 100_000;
    const BATCH: u32 = 500;
    let start = Instant::now();
    for batch in 0..KEYS / BATCH {
        let mut raw = String::with_capacity(BATCH as usize * 128);
        for i in 0..BATCH {
            // 10.x.y.z: one distinct client per request.
            let n = batch * BATCH + i;
            raw.push_str(&format!(
                "POST /publish?topic=bots HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.{}.{}.{}\r\n\
                 Content-Length: 1\r\n\r\nx",
                (n >> 16) & 255,
                (n >> 8) & 255,
                n & 255
            ));
        }
        proxy.stream.write_all(raw.as_bytes()).unwrap();
        for _ in 0..BATCH {
            let r = proxy.next().expect("answer");
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let elapsed = start.elapsed();
    let m = server.metrics();
    let entries = |t: &str| m[&format!("sseloop_limit_table_entries{{table=\"{t}\"}}")];
    eprintln!(
        "{KEYS} distinct clients in {elapsed:?}: table entries connections {}, new_connections {}, \
         publishers {}",
        entries("connections"),
        entries("new_connections"),
        entries("publishers")
    );
    assert!(
        entries("connections") <= 2.0,
        "one per open connection at most"
    );
    assert_eq!(
        entries("publishers"),
        65_536.0,
        "the cap (limits::TABLE_CAP)"
    );
    // At the cap too, or below it when the run was slow enough for idle buckets to expire.
    let new_connections = entries("new_connections");
    assert!(
        (1.0..=65_536.0).contains(&new_connections),
        "{new_connections}"
    );
    assert_eq!(m["sseloop_events_published_total"], f64::from(KEYS));
}
