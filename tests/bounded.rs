//! Memory stays bounded and healthy readers keep every event, under the hostile and unusual loads
//! an independent review reproduced (issue 10): replay amplification, cross-thread backlogs,
//! history held by large encodings, topic leaks, large events against a fast reader, and the
//! topic cap on the embedding API. Each test failed on the write path before the shared logs.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sseloop::{Config, PublishError, Server};
use util::*;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Publishes `n` events on one keep-alive connection, pipelined in batches; returns the statuses.
fn publish_many(addr: std::net::SocketAddr, query: &str, body: &str, n: usize) -> Vec<u16> {
    let sock = connect(addr);
    let mut writer = sock.try_clone().expect("clone");
    let mut reader = ResponseReader::new(sock);
    let req = format!(
        "POST /publish?{query} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut statuses = Vec::with_capacity(n);
    let mut sent = 0;
    while statuses.len() < n {
        while sent < n && sent - statuses.len() < 32 {
            writer.write_all(req.as_bytes()).expect("write");
            sent += 1;
        }
        statuses.push(reader.next().expect("response").status);
    }
    statuses
}

/// A client that subscribes and then never reads (a tiny receive buffer, so the server's socket
/// fills at once).
fn non_reader(addr: std::net::SocketAddr, query: &str, last_event_id: &str) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&addr.into()).expect("connect");
    let mut sock: TcpStream = sock.into();
    let req = format!(
        "GET /events?{query} HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {last_event_id}\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).expect("subscribe");
    sock
}

#[test]
fn non_reading_resumers_cost_no_copy_of_history_and_are_cut() {
    let server = TestServer::start(&[
        "--history",
        "512",
        "--max-body",
        "64k",
        "--max-queue-bytes",
        "256k",
    ]);
    let body = "h".repeat(900);
    let topics: Vec<String> = (0..8).map(|i| format!("topic=t{i}")).collect();
    for q in &topics {
        assert!(publish_many(server.addr, q, &body, 512)
            .iter()
            .all(|&s| s == 200));
    }
    let history = server.metric("sseloop_history_bytes");
    assert!(history > 8.0 * 512.0 * 900.0, "history filled: {history}");
    let before = rss(server.child.id());
    let all = topics.join("&");
    let clients: Vec<TcpStream> = (0..50)
        .map(|_| non_reader(server.addr, &all, "bogus"))
        .collect();
    assert!(
        wait_until(TIMEOUT, || {
            server.metric("sseloop_closes_total{cause=\"slow_consumer\"}") >= 50.0
        }),
        "every non-reading resumer is cut as a slow consumer"
    );
    let after = rss(server.child.id());
    // 50 resumers of ~4.2 MB of history each: a copy per resumer would be 200+ MB. The bound is
    // the cap per connection, and in fact nothing is copied.
    let bound = 50 * 256 * 1024;
    assert!(
        after < before + bound,
        "RSS grew {} bytes for 50 resumers (bound {bound})",
        after.saturating_sub(before)
    );
    drop(clients);
}

#[test]
fn topics_without_subscribers_or_history_are_not_kept() {
    let server = TestServer::start(&["--history", "0"]);
    let sock = connect(server.addr);
    let mut writer = sock.try_clone().expect("clone");
    let mut reader = ResponseReader::new(sock);
    for i in 0..2000 {
        let req = format!(
            "POST /publish?topic=leak{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"
        );
        writer.write_all(req.as_bytes()).expect("write");
        assert_eq!(reader.next().expect("response").status, 200);
    }
    assert_eq!(
        server.metric("sseloop_topics"),
        0.0,
        "no topic outlives its publish"
    );
}

#[test]
fn max_topics_bounds_topics_with_history() {
    let server = TestServer::start(&["--max-topics", "100", "--history", "4"]);
    let sock = connect(server.addr);
    let mut writer = sock.try_clone().expect("clone");
    let mut reader = ResponseReader::new(sock);
    for i in 0..500 {
        let req =
            format!("POST /publish?topic=t{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
        writer.write_all(req.as_bytes()).expect("write");
        assert_eq!(
            reader.next().expect("response").status,
            200,
            "old history makes room"
        );
    }
    assert!(server.metric("sseloop_topics") <= 100.0);
    // With every slot held by a subscriber, a new topic is refused rather than created.
    let subs: Vec<SseClient> = (0..100)
        .map(|i| server.subscribe(&format!("topic=s{i}"), &[]))
        .collect();
    assert_eq!(server.post("topic=new", "x", &[]).status, 503);
    let refused = SseClient::open(server.addr, "/events?topic=other", &[]);
    assert_eq!(refused.status, 503);
    drop(subs);
}

#[test]
fn history_counts_encodings_and_is_bounded_in_bytes() {
    let server = TestServer::start(&[
        "--max-body",
        "1M",
        "--max-queue-bytes",
        "16M",
        "--history-bytes",
        "24M",
    ]);
    // A body of line feeds: every byte becomes a `data: ` line in SSE, seven times its size.
    let body = "\n".repeat(1 << 20);
    for _ in 0..24 {
        assert_eq!(server.post("topic=lf", &body, &[]).status, 200);
    }
    let gauge = server.metric("sseloop_history_bytes");
    assert!(
        gauge <= 24.0 * 1048576.0,
        "history within --history-bytes: {gauge}"
    );
    assert!(
        gauge >= 7.0 * 1048576.0,
        "the gauge counts the encodings: {gauge}"
    );
    // Replaying it all must not keep more alive than the history bound.
    let mut client = server.subscribe("topic=lf", &[("Last-Event-ID", "bogus")]);
    let first = client.next_event_within(TIMEOUT).expect("reset notice");
    assert_eq!(first.event, "sseloop-reset");
    let rss_after = rss(server.child.id());
    assert!(
        rss_after < 24 * 1048576 + 48 * 1048576,
        "RSS {rss_after} after a full replay of 24 MiB of history"
    );
    // A body whose encoding could exceed --max-queue-bytes is refused at publish time.
    let strict = TestServer::start(&["--max-body", "1M"]);
    let resp = strict.post("topic=lf", &body, &[]);
    assert_eq!(resp.status, 413, "{}", resp.text());
}

#[test]
fn a_reader_that_keeps_up_is_never_cut_whatever_the_event_size() {
    // Defaults: --max-body 1M, --max-queue-bytes 2M.
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=big", &[]);
    let body = "b".repeat(1 << 20);
    let addr = server.addr;
    let progress = Progress::new(1);
    let publisher_progress = progress.clone();
    let publisher = std::thread::spawn(move || {
        for i in 0..12usize {
            // One event ahead of the reader at most: it keeps up, whatever the scheduling.
            publisher_progress.wait_all(i.saturating_sub(1));
            let resp = util::request(
                addr,
                &format!(
                    "POST /publish?topic=big HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
                    body.len(),
                    body
                ),
            );
            assert_eq!(resp.status, 200);
        }
    });
    let events: Vec<_> = (0..12)
        .map(|_| {
            let e = client.next_event();
            progress.received(0);
            e
        })
        .collect();
    publisher.join().expect("publisher");
    assert!(events.iter().all(|e| e.data.len() == 1 << 20));
    assert_eq!(
        server.metric("sseloop_closes_total{cause=\"slow_consumer\"}"),
        0.0
    );
}

/// An in-process server stepped by hand, for the embedding API.
fn in_process(config: Config) -> Server {
    Server::bind(Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..config
    })
    .expect("bind")
}

#[test]
fn cross_thread_backlog_is_bounded_and_drained_in_slices() {
    let server_config = Config {
        publish_queue_bytes: 4 << 20,
        max_queue_bytes: 256 << 10,
        max_body: 64 << 10,
        ..Config::default()
    };
    let mut server = in_process(server_config);
    let handle = server.handle();
    let addr = server.local_addr();
    // A reading subscriber and ten that never read.
    let mut reader = TcpStream::connect(addr).expect("connect");
    reader
        .write_all(b"GET /events?topic=t HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("subscribe");
    reader.set_nonblocking(true).expect("nonblocking");
    let idle: Vec<TcpStream> = (0..10).map(|_| non_reader(addr, "topic=t", "")).collect();
    for _ in 0..50 {
        server
            .poll_once(Some(Duration::from_millis(2)))
            .expect("poll");
    }
    let rss_before = rss(std::process::id());
    // The loop is not stepped while 20,000 events of 1 KiB are published.
    let data = "d".repeat(1024);
    let mut accepted = 0u64;
    let mut full = 0;
    for _ in 0..20_000 {
        match handle.publish(&["t"], None, &data) {
            Ok(_) => accepted += 1,
            Err(PublishError::QueueFull) => full += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(
        full > 0,
        "the queue said 'would block' past --publish-queue-bytes"
    );
    assert!(
        accepted < 4200,
        "at most ~4 MiB queued: {accepted} accepted"
    );
    server.poll_once(Some(Duration::ZERO)).expect("poll");
    assert!(
        server.metrics().published < accepted,
        "recorded in slices, not all in one iteration"
    );
    // The reader gets every accepted event; the idle subscribers are cut.
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < accepted && Instant::now() < deadline {
        server
            .poll_once(Some(Duration::from_millis(1)))
            .expect("poll");
        loop {
            match reader.read(&mut buf) {
                Ok(0) => panic!("reader closed"),
                Ok(n) => got += buf[..n].windows(4).filter(|w| w == b"id: ").count() as u64,
                Err(_) => break,
            }
        }
    }
    assert_eq!(
        got, accepted,
        "the reading subscriber received every accepted event"
    );
    assert!(server.metrics().closes[sseloop::metrics::CloseCause::SlowConsumer as usize] >= 10);
    let grown = rss(std::process::id()).saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "process grew {grown} bytes (bound: queue + history)"
    );
    // The same cap on topics as every other publish path.
    let many: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        handle.publish(&names, None, "x"),
        Err(PublishError::BadTopic)
    );
    drop(idle);
}
