//! `GET /metrics`: the Prometheus exposition names every required metric, and the counters and
//! gauges move as connections, publishes, deliveries and history change.

mod util;

use std::collections::HashMap;
use std::io::Write;

use util::*;

const HTTP_OPEN: &str = "sseloop_connections_open{kind=\"http\"}";
const SSE_OPEN: &str = "sseloop_connections_open{kind=\"sse\"}";
const ACCEPTED: &str = "sseloop_connections_accepted_total";
const PUBLISHED: &str = "sseloop_events_published_total";
const DELIVERIES: &str = "sseloop_event_deliveries_total";
const BYTES: &str = "sseloop_bytes_written_total";
const HISTORY: &str = "sseloop_history_events";
const LIFETIME_COUNT: &str = "sseloop_connection_lifetime_seconds_count{kind=\"sse\"}";
const HTTP_LIFETIME_COUNT: &str = "sseloop_connection_lifetime_seconds_count{kind=\"http\"}";
const ITERATIONS: &str = "sseloop_loop_iterations_total";

fn get(m: &HashMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("{name} missing from {m:?}"))
}

#[test]
fn exposition_names_every_required_metric() {
    let server = TestServer::start(&[]);
    let resp = request(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain")),
        "{}",
        resp.head
    );
    let text = resp.text();
    // Every sample line is `name[{labels}] value`.
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let parsed = parse_metrics(&text);
    assert_eq!(
        parsed.len(),
        samples.len(),
        "unparsable or duplicate samples"
    );
    for name in [
        HTTP_OPEN,
        SSE_OPEN,
        ACCEPTED,
        PUBLISHED,
        DELIVERIES,
        BYTES,
        "sseloop_heartbeats_sent_total",
        HISTORY,
        ITERATIONS,
        LIFETIME_COUNT,
        HTTP_LIFETIME_COUNT,
        "sseloop_connection_lifetime_seconds_count{kind=\"frames\"}",
        "sseloop_connection_lifetime_seconds_sum{kind=\"sse\"}",
        "sseloop_connection_lifetime_seconds_bucket{kind=\"http\",le=\"+Inf\"}",
        "sseloop_resume_resets_total{reason=\"expired\"}",
        "sseloop_resume_resets_total{reason=\"unknown\"}",
    ] {
        assert!(parsed.contains_key(name), "{name} missing:\n{text}");
    }
    for (family, kind) in [
        ("sseloop_connections_open", "gauge"),
        (ACCEPTED, "counter"),
        (PUBLISHED, "counter"),
        (DELIVERIES, "counter"),
        (BYTES, "counter"),
        ("sseloop_heartbeats_sent_total", "counter"),
        (HISTORY, "gauge"),
        ("sseloop_connection_lifetime_seconds", "histogram"),
        (ITERATIONS, "counter"),
        ("sseloop_midround_polls_total", "counter"),
        ("sseloop_resume_resets_total", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "no TYPE {kind} line for {family}"
        );
    }
}

#[test]
fn connection_counters_and_gauges_move() {
    let server = TestServer::start(&[]);
    let m0 = server.metrics();
    let subs = vec![
        server.subscribe("topic=a", &[]),
        server.subscribe("topic=a&topic=b", &[]),
    ];
    let mut idle = ResponseReader::new(connect(server.addr));
    idle.stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(idle.next().unwrap().status, 200);
    // Two streams, the idle keep-alive connection and the metrics request itself.
    let mut last = HashMap::new();
    assert!(
        wait_until(TIMEOUT, || {
            last = server.metrics();
            get(&last, SSE_OPEN) == 2.0 && get(&last, HTTP_OPEN) == 2.0
        }),
        "open gauges: {} sse, {} http",
        get(&last, SSE_OPEN),
        get(&last, HTTP_OPEN)
    );
    assert!(
        get(&last, ACCEPTED) - get(&m0, ACCEPTED) >= 4.0,
        "accepted did not count the new connections"
    );
    let lifetimes_before = get(&last, LIFETIME_COUNT);
    let http_lifetimes_before = get(&last, HTTP_LIFETIME_COUNT);
    drop(subs);
    drop(idle);
    assert!(
        wait_until(TIMEOUT, || {
            last = server.metrics();
            get(&last, SSE_OPEN) == 0.0 && get(&last, HTTP_OPEN) == 1.0
        }),
        "after closing: {} sse, {} http",
        get(&last, SSE_OPEN),
        get(&last, HTTP_OPEN)
    );
    assert!(
        get(&last, LIFETIME_COUNT) == lifetimes_before + 2.0,
        "lifetime histogram did not count the two closed streams as sse"
    );
    assert!(
        get(&last, HTTP_LIFETIME_COUNT) >= http_lifetimes_before + 1.0,
        "lifetime histogram did not count the closed keep-alive connection as http"
    );
    // The histogram is cumulative and its +Inf bucket equals its count.
    let inf = get(
        &last,
        "sseloop_connection_lifetime_seconds_bucket{kind=\"sse\",le=\"+Inf\"}",
    );
    assert_eq!(inf, get(&last, LIFETIME_COUNT));
    let mut buckets: Vec<(f64, f64)> = last
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("sseloop_connection_lifetime_seconds_bucket{kind=\"sse\",le=\"")?
                .strip_suffix("\"}")?;
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(buckets.len() > 2, "histogram has no buckets");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets not cumulative: {buckets:?}"
    );
    assert!(
        get(
            &last,
            "sseloop_connection_lifetime_seconds_sum{kind=\"sse\"}"
        ) > 0.0
    );
}

#[test]
fn publish_delivery_and_byte_counters_move() {
    let server = TestServer::start(&[]);
    let mut subs = vec![
        server.subscribe("topic=a", &[]),
        server.subscribe("topic=a", &[]),
        server.subscribe("topic=a&topic=b", &[]),
    ];
    let mut other = server.subscribe("topic=c", &[]);
    for sub in &mut subs {
        sub.read_raw_until(|raw| raw.ends_with(b"\n\n"));
    }
    let raw_before: usize = subs.iter().map(|s| s.raw.len()).sum();
    let before = server.metrics();
    server.publish("topic=a", "one");
    server.publish("topic=a&topic=b", "two");
    for sub in &mut subs {
        assert_eq!(sub.events(2).len(), 2);
    }
    let received: usize = subs.iter().map(|s| s.raw.len()).sum::<usize>() - raw_before;
    let after = server.metrics();
    assert_eq!(
        get(&after, PUBLISHED) - get(&before, PUBLISHED),
        2.0,
        "a multi-topic publish is one event"
    );
    assert_eq!(
        get(&after, DELIVERIES) - get(&before, DELIVERIES),
        6.0,
        "3 subscribers x 2 events, the multi-topic one once each"
    );
    assert!(
        get(&after, BYTES) - get(&before, BYTES) >= received as f64,
        "bytes written grew by less than the {received} bytes subscribers read"
    );
    let marker = server.publish("topic=c", "c");
    assert_eq!(other.next_event().id, marker);
}

#[test]
fn history_gauge_follows_retention() {
    let server = TestServer::start(&["--history", "2"]);
    assert_eq!(server.metric(HISTORY), 0.0);
    server.publish("topic=a", "1");
    assert_eq!(server.metric(HISTORY), 1.0);
    server.publish("topic=a", "2");
    server.publish("topic=a", "3");
    assert_eq!(server.metric(HISTORY), 2.0, "topic a keeps its last 2");
    server.publish("topic=b", "1");
    assert_eq!(server.metric(HISTORY), 3.0);
}

#[test]
fn loop_iterations_counter_moves() {
    let server = TestServer::start(&[]);
    let first = server.metric(ITERATIONS);
    server.publish("topic=a", "x");
    let second = server.metric(ITERATIONS);
    assert!(first > 0.0 && second > first, "{first} then {second}");
}
