//! Every resource a connection holds (slab slot, timers, subscriptions, write chunks) is released
//! when it closes, whichever way it closes.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use util::*;

fn assert_baseline(server: &TestServer, baseline_slab: f64) {
    // The /metrics request itself occupies one slot while it is served.
    let settled = wait_until(TIMEOUT, || {
        let m = server.metrics();
        m["sseloop_slab_connections"] <= baseline_slab
            && m["sseloop_subscriptions"] == 0.0
            && m["sseloop_timers_armed"] <= 1.0
            && m["sseloop_write_chunks_lent"] == 0.0
            && m["sseloop_connections_open{kind=\"sse\"}"] == 0.0
    });
    let m = server.metrics();
    assert!(
        settled,
        "resources not released: slab={} subs={} timers={} chunks={} sse={}",
        m["sseloop_slab_connections"],
        m["sseloop_subscriptions"],
        m["sseloop_timers_armed"],
        m["sseloop_write_chunks_lent"],
        m["sseloop_connections_open{kind=\"sse\"}"]
    );
}

#[test]
fn thousand_subscribers_open_and_close_release_everything() {
    let server = TestServer::start(&["--heartbeat-ms", "60000"]);
    let mut open = Vec::new();
    for round in 0..10 {
        for i in 0..100 {
            let topics = format!("topic=t{}&topic=shared", (round * 100 + i) % 7);
            open.push(server.subscribe(&topics, &[]));
        }
        let m = server.metrics();
        assert_eq!(m["sseloop_connections_open{kind=\"sse\"}"], 100.0);
        assert_eq!(m["sseloop_subscriptions"], 200.0);
        // Two timers per stream would be a leak: a heartbeat only (no deadline while writable).
        assert!(
            m["sseloop_timers_armed"] <= 100.0 + 1.0,
            "timers {}",
            m["sseloop_timers_armed"]
        );
        server.publish("topic=shared", "ping");
        for client in open.iter_mut() {
            assert_eq!(client.next_event().data, "ping");
        }
        open.clear();
        assert_baseline(&server, 1.0);
    }
    assert!(server.metric("sseloop_connections_accepted_total") >= 1000.0);
}

#[test]
fn aborted_and_half_finished_connections_release_everything() {
    let server = TestServer::start(&["--heartbeat-ms", "60000"]);
    let mut sockets = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        match i % 4 {
            0 => {}                                                // nothing sent
            1 => s.write_all(b"GET /events?topic=a HTT").unwrap(), // half a head
            2 => s
                .write_all(b"POST /publish?topic=a HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
                .unwrap(),
            _ => s
                .write_all(b"GET /events?topic=a HTTP/1.1\r\n\r\n")
                .unwrap(), // a stream
        }
        sockets.push(s);
    }
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_connections_accepted_total")
        >= 200.0));
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_subscriptions")
        >= 50.0));
    // Reset half of them, close the others politely.
    for (i, s) in sockets.into_iter().enumerate() {
        if i % 2 == 0 {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(s);
    }
    assert_baseline(&server, 1.0);
}
