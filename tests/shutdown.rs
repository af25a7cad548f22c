//! Shutdown with real signals sent to a real server process.

mod util;

use std::io::Write;
use std::time::{Duration, Instant};

use util::*;

#[test]
fn sigterm_delivers_everything_published_then_exits_zero_within_grace() {
    const SUBS: usize = 50;
    const EVENTS: usize = 1000;
    let mut server = TestServer::start(&["--grace-ms", "8000", "--retry-ms", "2000"]);
    let subs: Vec<SseClient> = (0..SUBS)
        .map(|_| server.subscribe("topic=final", &[]))
        .collect();
    // Publish 1000 events pipelined on one connection, then signal as soon as the last is acked.
    let mut publisher = ResponseReader::new(connect(server.addr));
    let mut batch = String::new();
    for i in 0..EVENTS {
        let body = format!("event {i}");
        batch.push_str(&format!(
            "POST /publish?topic=final HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    publisher.stream.write_all(batch.as_bytes()).unwrap();
    for _ in 0..EVENTS {
        assert_eq!(publisher.next().unwrap().status, 200);
    }
    drop(publisher);
    let signalled = Instant::now();
    server.signal(SIGTERM);

    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut client| {
            std::thread::spawn(move || {
                let events = client.events(EVENTS);
                let ended = client.ended_within(TIMEOUT);
                (
                    events,
                    ended,
                    client.retry,
                    String::from_utf8_lossy(&client.raw).into_owned(),
                )
            })
        })
        .collect();
    let mut retries = std::collections::BTreeSet::new();
    for reader in readers {
        let (events, ended, retry, raw) = reader.join().unwrap();
        for (i, ev) in events.iter().enumerate() {
            assert_eq!(ev.data, format!("event {i}"));
        }
        assert!(ended, "stream not closed after shutdown");
        // The stream ends on an event boundary, after a jittered retry.
        assert!(
            raw.ends_with("\n\n"),
            "stream ends mid-event: {:?}",
            &raw[raw.len().saturating_sub(40)..]
        );
        let retry = retry.expect("retry field");
        assert!((2000..=4000).contains(&retry), "retry {retry}");
        retries.insert(retry);
    }
    assert!(
        retries.len() > 1,
        "retry values are not jittered: {retries:?}"
    );
    let code = server.wait_exit(Duration::from_secs(8));
    assert_eq!(code, Some(0), "exit code");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "took longer than the grace period"
    );
}

#[test]
fn shutdown_stops_accepting_and_refuses_nothing_in_flight() {
    let mut server = TestServer::start(&["--grace-ms", "5000"]);
    // An idle keep-alive connection and a connection that has not sent anything yet.
    let mut idle = ResponseReader::new(connect(server.addr));
    idle.stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(idle.next().unwrap().status, 200);
    let mut fresh = ResponseReader::new(connect(server.addr));
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_connections_accepted_total")
        >= 3.0));
    server.signal(SIGTERM);
    assert!(
        idle.closed_within(TIMEOUT),
        "idle keep-alive connection not closed"
    );
    assert!(fresh.closed_within(TIMEOUT), "fresh connection not closed");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(
        std::net::TcpStream::connect(server.addr).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn grace_period_bounds_shutdown_when_clients_do_not_close() {
    let mut server = TestServer::start(&["--grace-ms", "700"]);
    // A subscriber that keeps its socket open and never reads: the server cannot finish
    // gracefully, so the grace period must end it.
    let stuck = server.subscribe("topic=x", &[]);
    let started = Instant::now();
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(TIMEOUT), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "exited before the grace period: {took:?}"
    );
    drop(stuck);
}

#[test]
fn second_sigint_forces_immediate_exit() {
    let mut server = TestServer::start(&["--grace-ms", "60000"]);
    let _stuck = server.subscribe("topic=x", &[]);
    server.signal(SIGINT);
    // Still winding down: the subscriber has not closed, and the grace period is long.
    assert!(
        server.wait_exit(Duration::from_millis(500)).is_none(),
        "exited on first SIGINT"
    );
    let started = Instant::now();
    server.signal(SIGINT);
    assert!(
        server.wait_exit(TIMEOUT).is_some(),
        "second SIGINT did not stop the server"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn keep_alive_connection_with_a_response_in_flight_closes_after_it_on_shutdown() {
    let mut server = TestServer::start(&["--grace-ms", "20000"]);
    let mut client = ResponseReader::new(connect(server.addr));
    // The second request races the signal: whether it is answered or refused, the connection
    // must close right after, not sit idle until the grace period ends.
    client
        .stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(client.next().unwrap().status, 200);
    client
        .stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    server.signal(SIGTERM);
    let started = Instant::now();
    // The request in progress is answered, then the connection closes: the server does not park
    // it as idle until the grace period ends.
    let resp = client.next();
    if let Some(resp) = resp {
        assert_eq!(resp.status, 200);
    }
    assert!(client.closed_within(TIMEOUT));
    assert_eq!(server.wait_exit(TIMEOUT), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the grace period"
    );
}

#[test]
fn publish_whose_body_is_still_arriving_at_sigterm_gets_503_not_200() {
    let mut server = TestServer::start(&["--grace-ms", "5000"]);
    let mut sub = server.subscribe("topic=late", &[]);
    let retries = |raw: &[u8]| raw.windows(7).filter(|w| w == b"retry: ").count();
    assert!(
        sub.read_raw_until(|raw| retries(raw) == 1),
        "no initial retry"
    );
    let mut publisher = ResponseReader::new(connect(server.addr));
    // A first request answered: the connection is accepted and known to be in use.
    publisher
        .stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(publisher.next().expect("healthz").status, 200);
    publisher
        .stream
        .write_all(
            b"POST /publish?topic=late HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
        )
        .unwrap();
    // The head and half the body are in: the request is in progress when the signal comes.
    std::thread::sleep(Duration::from_millis(300));
    let _ = server.metrics(); // an iteration after the bytes above
    server.signal(SIGTERM);
    // The subscriber's farewell proves the shutdown has begun before the body completes.
    assert!(
        sub.read_raw_until(|raw| retries(raw) == 2),
        "no farewell retry: {}",
        sub.raw_text()
    );
    publisher.stream.write_all(b"world").unwrap();
    let resp = publisher.next().expect("a response to the publish");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.header("retry-after").as_deref(), Some("1"));
    assert!(resp.text().contains("shutting down"), "{}", resp.text());
    assert!(publisher.closed_within(TIMEOUT));
    // Nobody got the refused event.
    assert!(sub.ended_within(TIMEOUT));
    assert!(!sub.raw_text().contains("helloworld"), "{}", sub.raw_text());
    assert_eq!(server.wait_exit(TIMEOUT), Some(0));
}
