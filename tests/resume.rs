//! Resuming a stream: `Last-Event-ID` (header) and `lastEventId` / `last_event_id` (query)
//! replay retained events in id order before live ones; the in-band `sseloop-reset` notice when
//! the id is expired or from another run; live events are never filtered by the client's id.

mod util;

use std::io::Write;

use util::*;

const RESET: &str = "sseloop-reset";
const EXPIRED: &str = r#"{"reason":"expired"}"#;
const UNKNOWN: &str = r#"{"reason":"unknown"}"#;

/// Publishes `n` events `"{prefix}{i}"` to `topic`; returns their ids.
fn publish_n(server: &TestServer, topic: &str, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| server.publish(&format!("topic={topic}"), &format!("{prefix}{i}")))
        .collect()
}

fn id_data(events: Vec<SseEvent>) -> Vec<(String, String)> {
    events.into_iter().map(|e| (e.id, e.data)).collect()
}

#[test]
fn last_event_id_header_replays_what_followed_in_order_then_live() {
    let server = TestServer::start(&[]);
    let ids = publish_n(&server, "a", "e", 5);
    let mut client = server.subscribe("topic=a", &[("Last-Event-ID", &ids[1])]);
    let replayed = client.events(3);
    assert_eq!(
        id_data(replayed),
        vec![
            (ids[2].clone(), "e2".into()),
            (ids[3].clone(), "e3".into()),
            (ids[4].clone(), "e4".into()),
        ]
    );
    assert!(
        !client.raw_text().contains(RESET),
        "no reset for an id history covers"
    );
    let live = server.publish("topic=a", "live");
    let ev = client.next_event();
    assert_eq!((ev.id, ev.data), (live, "live".to_string()));
    // The replay is plain events: exact bytes of the first one, right after the prelude.
    assert!(
        client
            .raw_text()
            .starts_with(&format!("retry: 3000\n\nid: {}\ndata: e2\n\n", ids[2])),
        "{:?}",
        client.raw_text()
    );
}

#[test]
fn query_parameter_resumes_in_both_spellings() {
    let server = TestServer::start(&[]);
    for param in ["lastEventId", "last_event_id"] {
        let ids = publish_n(&server, param, "e", 4);
        let mut client = server.subscribe(&format!("topic={param}&{param}={}", ids[1]), &[]);
        let got = id_data(client.events(2));
        assert_eq!(
            got,
            vec![(ids[2].clone(), "e2".into()), (ids[3].clone(), "e3".into())],
            "resume by {param}"
        );
        let live = server.publish(&format!("topic={param}"), "live");
        assert_eq!(client.next_event().id, live, "{param}: live after replay");
    }
}

#[test]
fn header_wins_over_query_parameter() {
    let server = TestServer::start(&[]);
    let ids = publish_n(&server, "h", "e", 5);
    for param in ["lastEventId", "last_event_id"] {
        // Header older than the query: replay starts after the header's id.
        let mut client = server.subscribe(
            &format!("topic=h&{param}={}", ids[3]),
            &[("Last-Event-ID", &ids[1])],
        );
        assert_eq!(client.next_event().id, ids[2], "{param}: header older");
        // Header newer than the query: replay starts after the header's id.
        let mut client = server.subscribe(
            &format!("topic=h&{param}={}", ids[1]),
            &[("Last-Event-ID", &ids[3])],
        );
        assert_eq!(client.next_event().id, ids[4], "{param}: header newer");
        // A header the server cannot use still wins over a usable query parameter.
        let mut client = server.subscribe(
            &format!("topic=h&{param}={}", ids[3]),
            &[("Last-Event-ID", "garbage")],
        );
        let reset = client.next_event();
        assert_eq!(
            (reset.event.as_str(), reset.data.as_str()),
            (RESET, UNKNOWN),
            "{param}: garbage header"
        );
        assert_eq!(client.next_event().id, ids[0], "{param}: full replay");
    }
}

#[test]
fn resume_interleaves_three_topics_in_id_order_and_replays_shared_events_once() {
    let server = TestServer::start(&[]);
    let start = server.publish("topic=a", "start");
    let mut expected = Vec::new();
    let plan = [
        "topic=b",
        "topic=c",
        "topic=zzz",
        "topic=a",
        "topic=c&topic=b",
        "topic=b",
        "topic=zzz&topic=a",
        "topic=c",
        "topic=a&topic=b&topic=c",
        "topic=a",
    ];
    for (i, query) in plan.iter().enumerate() {
        let data = format!("{query} #{i}");
        let id = server.publish(query, &data);
        if *query != "topic=zzz" {
            expected.push((id, data));
        }
    }
    let mut client = server.subscribe("topic=a&topic=b&topic=c", &[("Last-Event-ID", &start)]);
    let got = id_data(client.events(expected.len()));
    assert_eq!(got, expected);
    // Then the live stream, with nothing replayed twice in between.
    let live = server.publish("topic=b", "live");
    let ev = client.next_event();
    assert_eq!((ev.id, ev.data), (live, "live".to_string()));
    assert!(!client.raw_text().contains(RESET));
}

#[test]
fn resume_from_the_newest_id_replays_nothing_then_gets_live_events() {
    let server = TestServer::start(&[]);
    let ids = publish_n(&server, "n", "e", 3);
    let mut client = server.subscribe("topic=n", &[("Last-Event-ID", &ids[2])]);
    let live = server.publish("topic=n", "live");
    let ev = client.next_event();
    assert_eq!((ev.id, ev.data), (live.clone(), "live".to_string()));
    assert_eq!(
        client.raw_text(),
        format!("retry: 3000\n\nid: {live}\ndata: live\n\n")
    );
}

#[test]
fn expired_id_gets_a_reset_before_the_replay() {
    let server = TestServer::start(&["--history", "2"]);
    let ids = publish_n(&server, "x", "e", 5);
    let mut client = server.subscribe("topic=x", &[("Last-Event-ID", &ids[0])]);
    let reset = client.next_event();
    assert_eq!(
        (reset.event.as_str(), reset.data.as_str()),
        (RESET, EXPIRED)
    );
    // Only the last 2 events are retained: they follow the notice.
    let got = id_data(client.events(2));
    assert_eq!(
        got,
        vec![(ids[3].clone(), "e3".into()), (ids[4].clone(), "e4".into())]
    );
    // On the wire: the notice is a whole event whose data is one line, before the first replayed
    // event.
    let raw = client.raw_text();
    let notice = format!("event: {RESET}\ndata: {EXPIRED}\n\n");
    let at_notice = raw.find(&notice).expect("reset notice bytes");
    let at_replay = raw.find(&format!("id: {}\n", ids[3])).unwrap();
    assert!(at_notice < at_replay, "{raw:?}");
    assert!(raw.starts_with("retry: 3000\n\nid: "), "{raw:?}");
    assert!(!raw.contains('\r'), "a CR was written: {raw:?}");
    let live = server.publish("topic=x", "live");
    assert_eq!(client.next_event().id, live);
    assert_eq!(
        server.metric("sseloop_resume_resets_total{reason=\"expired\"}"),
        1.0
    );
    assert_eq!(
        server.metric("sseloop_resume_resets_total{reason=\"unknown\"}"),
        0.0
    );
}

#[test]
fn expired_on_one_of_several_topics_resets_then_replays_all_topics_in_id_order() {
    let server = TestServer::start(&["--history", "2"]);
    let start = server.publish("topic=b", "b-start");
    let b1 = server.publish("topic=b", "b1");
    let a: Vec<String> = publish_n(&server, "a", "a", 4);
    let b2 = server.publish("topic=b", "b2");
    let mut client = server.subscribe("topic=a&topic=b", &[("Last-Event-ID", &start)]);
    let reset = client.next_event();
    assert_eq!(
        (reset.event.as_str(), reset.data.as_str()),
        (RESET, EXPIRED)
    );
    let got = id_data(client.events(4));
    assert_eq!(
        got,
        vec![
            (b1, "b1".into()),
            (a[2].clone(), "a2".into()),
            (a[3].clone(), "a3".into()),
            (b2, "b2".into()),
        ]
    );
}

#[test]
fn default_history_retains_1024_events_per_topic() {
    const N: usize = 1030;
    let server = TestServer::start(&[]);
    // Publish N events pipelined on one connection.
    let mut batch = String::new();
    for i in 0..N {
        let body = format!("h{i}");
        batch.push_str(&format!(
            "POST /publish?topic=deep HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    let mut publisher = ResponseReader::new(connect(server.addr));
    publisher.stream.write_all(batch.as_bytes()).unwrap();
    let ids: Vec<String> = (0..N)
        .map(|i| {
            let resp = publisher.next().unwrap_or_else(|| panic!("publish {i}"));
            assert_eq!(resp.status, 200);
            json_id(&resp.text())
        })
        .collect();
    assert_eq!(server.metric("sseloop_history_events"), 1024.0);
    // The last 1024 are retained: resuming from the one just before them misses nothing.
    let first_kept = N - 1024;
    let mut client = server.subscribe("topic=deep", &[("Last-Event-ID", &ids[first_kept - 1])]);
    let got = client.events(1024);
    assert_eq!(got[0].event, "message", "unexpected reset: {:?}", got[0]);
    assert_eq!(got[0].id, ids[first_kept]);
    assert_eq!(got[1023].id, ids[N - 1]);
    // One step older is expired.
    let mut client = server.subscribe("topic=deep", &[("Last-Event-ID", &ids[first_kept - 2])]);
    let reset = client.next_event();
    assert_eq!(
        (reset.event.as_str(), reset.data.as_str()),
        (RESET, EXPIRED)
    );
    assert_eq!(client.next_event().id, ids[first_kept]);
}

#[test]
fn oldest_retained_id_resumes_without_a_reset() {
    let server = TestServer::start(&["--history", "2"]);
    let ids = publish_n(&server, "x", "e", 5);
    let mut client = server.subscribe("topic=x", &[("Last-Event-ID", &ids[3])]);
    let ev = client.next_event();
    assert_eq!(
        (ev.id, ev.event, ev.data),
        (ids[4].clone(), "message".into(), "e4".into())
    );
    assert!(!client.raw_text().contains(RESET));
    assert_eq!(
        server.metric("sseloop_resume_resets_total{reason=\"expired\"}"),
        0.0
    );
}

#[test]
fn history_is_per_topic() {
    // A busy topic evicting its own history does not expire a quiet topic's.
    let server = TestServer::start(&["--history", "2"]);
    let quiet = publish_n(&server, "quiet", "q", 2);
    publish_n(&server, "busy", "b", 6);
    let mut client = server.subscribe("topic=quiet", &[("Last-Event-ID", &quiet[0])]);
    let ev = client.next_event();
    assert_eq!((ev.id, ev.data), (quiet[1].clone(), "q1".to_string()));
    assert!(!client.raw_text().contains(RESET));
}

#[test]
fn unknown_and_garbage_ids_get_a_reset_then_everything_retained() {
    let server = TestServer::start(&["--history", "3"]);
    let ids = publish_n(&server, "u", "e", 5);
    let (run, seq) = split_id(&ids[4]);
    let other_run = if run == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let foreign = [
        format!("{other_run}-{}", seq - 1),
        "not-an-id".to_string(),
        "garbage".to_string(),
        format!("{run}x-{}", seq - 1),
    ];
    for last_id in &foreign {
        let mut client = server.subscribe("topic=u", &[("Last-Event-ID", last_id)]);
        let reset = client.next_event();
        assert_eq!(
            (reset.event.as_str(), reset.data.as_str()),
            (RESET, UNKNOWN),
            "Last-Event-ID {last_id:?}"
        );
        let got = id_data(client.events(3));
        assert_eq!(
            got,
            vec![
                (ids[2].clone(), "e2".into()),
                (ids[3].clone(), "e3".into()),
                (ids[4].clone(), "e4".into())
            ],
            "Last-Event-ID {last_id:?}"
        );
    }
    // The query spelling is treated the same way.
    let mut client = server.subscribe("topic=u&lastEventId=garbage", &[]);
    assert_eq!(client.next_event().event, RESET);
    assert_eq!(
        server.metric("sseloop_resume_resets_total{reason=\"unknown\"}"),
        (foreign.len() + 1) as f64
    );
    assert_eq!(
        server.metric("sseloop_resume_resets_total{reason=\"expired\"}"),
        0.0
    );
}

#[test]
fn id_from_an_earlier_run_of_the_server_is_unknown() {
    let old_id = {
        let old = TestServer::start(&[]);
        publish_n(&old, "r", "old", 3).pop().unwrap()
    };
    let server = TestServer::start(&[]);
    let ids = publish_n(&server, "r", "new", 2);
    assert_ne!(
        split_id(&old_id).0,
        split_id(&ids[0]).0,
        "two runs share a run prefix"
    );
    let mut client = server.subscribe("topic=r", &[("Last-Event-ID", &old_id)]);
    let reset = client.next_event();
    assert_eq!(
        (reset.event.as_str(), reset.data.as_str()),
        (RESET, UNKNOWN)
    );
    let got = id_data(client.events(2));
    assert_eq!(
        got,
        vec![
            (ids[0].clone(), "new0".into()),
            (ids[1].clone(), "new1".into())
        ]
    );
}

#[test]
fn live_events_after_a_resume_are_not_filtered_by_the_client_id() {
    let server = TestServer::start(&[]);
    let ids = publish_n(&server, "f", "e", 2);
    let (run, _) = split_id(&ids[1]);
    // Ids that compare "after" every live event to come: a big seq of another run, a big seq of
    // this run, and strings that sort after any id.
    let high = [
        "zzzzzzzzzz-999999999".to_string(),
        format!("{run}-999999999"),
        "~~~~".to_string(),
    ];
    let mut clients: Vec<SseClient> = high
        .iter()
        .map(|id| server.subscribe("topic=f", &[("Last-Event-ID", id)]))
        .collect();
    let mut resumed = server.subscribe("topic=f", &[("Last-Event-ID", &ids[1])]);
    let live: Vec<String> = (0..3)
        .map(|i| server.publish("topic=f", &format!("live{i}")))
        .collect();
    for (client, id) in clients.iter_mut().zip(&high) {
        // Whatever the server replays first for such an id, every live event must follow.
        let mut got = Vec::new();
        while got.len() < live.len() {
            let ev = client.next_event();
            if ev.data.starts_with("live") {
                got.push(ev.id);
            }
        }
        assert_eq!(got, live, "Last-Event-ID {id:?}");
    }
    let got: Vec<String> = resumed.events(3).into_iter().map(|e| e.id).collect();
    assert_eq!(got, live);
}
