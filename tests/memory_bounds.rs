//! What the hub holds stays inside the operator's bounds (issue 21): pattern logs keep no history
//! of their own, a caught-up channel releases its last burst when the round ends, and a resume on
//! a pattern replays exactly what the same resume on its matching topics does. Real server, real
//! sockets; assertions on the gauges, on what a resume replays, and (with a wide margin) on RSS.

mod util;

use std::io::Write;
use std::time::Duration;

use util::{wait_until, SseClient, TestServer, TIMEOUT};

const TRANSIENT: &str = "sseloop_hub_transient_bytes";
const HISTORY: &str = "sseloop_history_bytes";

/// Events of a resumed stream up to (not including) the marker event `marker`: (event types
/// seen, ids of the events).
fn read_until(client: &mut SseClient, marker: &str) -> (Vec<String>, Vec<String>) {
    let (mut kinds, mut ids) = (Vec::new(), Vec::new());
    loop {
        let ev = client.next_event();
        if ev.data == marker {
            return (kinds, ids);
        }
        kinds.push(ev.event.clone());
        if ev.event == "message" {
            ids.push(ev.id.clone());
        }
    }
}

/// The server's resident set, from /proc.
fn rss_kib(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Opens two resumed streams, one on `pattern`, one on `topics`, publishes a marker to
/// `marker_topic` (covered by both) and returns what each replayed before it.
fn resume_both(
    server: &TestServer,
    pattern: &str,
    topics: &str,
    last_id: &str,
    marker_topic: &str,
) -> [(Vec<String>, Vec<String>); 2] {
    let headers = [("Last-Event-ID", last_id)];
    let mut on_pattern = server.subscribe(pattern, &headers);
    let mut on_topics = server.subscribe(topics, &headers);
    server.publish(&format!("topic={marker_topic}"), "marker");
    [
        read_until(&mut on_pattern, "marker"),
        read_until(&mut on_topics, "marker"),
    ]
}

#[test]
fn a_pattern_log_is_bounded_by_history_bytes_and_its_resume_replays_what_topics_retain() {
    let server = TestServer::start(&["--history", "1024", "--history-bytes", "64k"]);
    let mut reader = server.subscribe("topic=*", &[]);
    let body = "p".repeat(8 << 10);
    let mut first = String::new();
    for i in 0..30 {
        let id = server.publish(&format!("topic=t{i:02}"), &body);
        if i == 0 {
            first = id;
        }
    }
    assert_eq!(
        reader.events(30).len(),
        30,
        "the caught-up reader got every event"
    );
    let m = server.metrics();
    assert!(
        m.contains_key(TRANSIENT),
        "the transient gauge is on the page"
    );
    assert!(
        m[HISTORY] <= 65536.0,
        "history within its bound: {}",
        m[HISTORY]
    );
    assert!(
        wait_until(TIMEOUT, || server.metric(TRANSIENT) == 0.0),
        "nothing held beyond history once the reader has everything: {}",
        server.metric(TRANSIENT)
    );
    let topics: Vec<String> = (0..30).map(|i| format!("topic=t{i:02}")).collect();
    let [pattern, exact] = resume_both(&server, "topic=*", &topics.join("&"), &first, "t29");
    assert_eq!(pattern, exact, "a pattern replays what its topics retain");
    assert_eq!(pattern.0.first().map(String::as_str), Some("sseloop-reset"));
    assert!(
        (1..=3).contains(&pattern.1.len()),
        "only what --history-bytes kept: {:?}",
        pattern.1
    );
}

#[test]
fn a_resume_on_a_pattern_replays_as_much_as_its_topics() {
    let server = TestServer::start(&["--history", "4"]);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(server.publish("topic=news/a", &format!("a{i}")));
        ids.push(server.publish("topic=news/b", &format!("b{i}")));
    }
    let [pattern, exact] = resume_both(
        &server,
        "topic=news/*",
        "topic=news/a&topic=news/b",
        &ids[0],
        "news/a",
    );
    assert_eq!(pattern, exact);
    assert_eq!(
        pattern.0.len(),
        7,
        "no reset, seven events: {:?}",
        pattern.0
    );
    assert_eq!(pattern.1, ids[1..], "in id order");
}

#[test]
fn caught_up_channels_release_their_last_burst() {
    // Allocations of 32 KiB or more are mapped on their own, so that RSS follows what is held
    // (freed heap memory in the middle of the heap would stay resident).
    let server = TestServer::start_with(&["--history", "1", "--history-bytes", "64k"], |cmd| {
        cmd.env("MALLOC_MMAP_THRESHOLD_", "32768");
    });
    const TOPICS: usize = 60;
    let mut readers: Vec<SseClient> = (0..TOPICS * 2)
        .map(|i| server.subscribe(&format!("topic=t{}", i / 2), &[]))
        .collect();
    let before = rss_kib(&server);
    // One burst: four 48 KiB events per topic, pipelined on one connection per topic so that
    // they are recorded in one iteration and joined.
    let body = "q".repeat(48 << 10);
    let mut publishers = Vec::new();
    for t in 0..TOPICS {
        let mut raw = Vec::new();
        for _ in 0..4 {
            raw.extend_from_slice(
                format!(
                    "POST /publish?topic=t{t} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        let mut conn = util::connect(server.addr);
        conn.write_all(&raw).expect("publish burst");
        publishers.push(conn);
    }
    for reader in &mut readers {
        let events = reader.events(4);
        assert!(events.iter().all(|e| e.data.len() == body.len()));
    }
    assert!(
        wait_until(TIMEOUT, || server.metric(TRANSIENT) == 0.0),
        "released once every reader has the burst: {}",
        server.metric(TRANSIENT)
    );
    assert!(server.metrics().contains_key(TRANSIENT));
    assert!(server.metric(HISTORY) <= 65536.0);
    // The publishers' connections go (their read buffers are not the hub's).
    drop(publishers);
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_connections_open{kind=\"http\"}")
        <= 1.0));
    // Before, each topic kept ~775 KiB (its entries and joined batch): ~45 MiB here.
    std::thread::sleep(Duration::from_millis(100));
    let grown = rss_kib(&server).saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB");
    assert!(grown < 20 << 10, "RSS grew by {grown} KiB");
}
