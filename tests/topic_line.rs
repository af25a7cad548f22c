//! The topic line of SSE streams (`GET /events?…&topic_line=1`): each event's first `data:` line
//! names its topics, on live delivery, on a resume from history (topic cursors and pattern
//! replays), and on a backfill from the Redis backplane; it agrees with the EVENT frames' topics;
//! its bytes count in history; and a stream that does not ask for it is unchanged to the byte.
//! The browser side (a plain `EventSource`) is in tests/console.rs.

#[path = "util/redis.rs"]
mod redis;
mod util;

use sseloop::frame::{FrameClient, OwnedPayload};
use util::*;

/// What a stream's body holds for one event, in the form without the topic line.
fn plain(id: &str, event_type: Option<&str>, data_lines: &[&str]) -> String {
    let mut out = format!("id: {id}\n");
    if let Some(t) = event_type {
        out.push_str(&format!("event: {t}\n"));
    }
    for line in data_lines {
        out.push_str(&format!("data: {line}\n"));
    }
    out.push('\n');
    out
}

/// The same event with its topic line.
fn with_topics(id: &str, event_type: Option<&str>, topics: &str, data_lines: &[&str]) -> String {
    let mut lines = vec![topics];
    lines.extend_from_slice(data_lines);
    plain(id, event_type, &lines)
}

/// Reads `client` until its body is `want` (or a timeout), then compares the bytes.
fn assert_body(client: &mut SseClient, want: &str, what: &str) {
    client.read_raw_until(|raw| raw.len() >= want.len());
    assert_eq!(client.raw_text(), want, "{what}");
}

/// The (id, topic line, rest of the data) of the next `n` events of a `topic_line=1` stream.
fn split_events(client: &mut SseClient, n: usize) -> Vec<(String, String, String)> {
    client
        .events(n)
        .into_iter()
        .map(|e| {
            let (topics, rest) = e
                .data
                .split_once('\n')
                .unwrap_or_else(|| panic!("no topic line in {e:?}"));
            (e.id, topics.to_string(), rest.to_string())
        })
        .collect()
}

#[test]
fn a_pattern_stream_with_topic_line_names_each_events_topic_and_plain_streams_are_unchanged() {
    let server = TestServer::start(&[]);
    let mut named = server.subscribe("topic=news/*&topic_line=1", &[]);
    let mut plain_sub = server.subscribe("topic=news/*", &[]);
    let mut off = server.subscribe("topic=news/*&topic_line=0", &[]);
    let mut frames = FrameClient::connect(server.addr, &["news/*"], None, None).expect("frames");
    frames.ping(b"sync").expect("ping");
    while !matches!(frames.recv(None).expect("pong"), OwnedPayload::Pong { .. }) {}

    let a = server.publish("topic=news/a", "one");
    let b = server.publish("topic=news/b&event=kind", "two\nlines\r\nthree\r");
    let both = server.publish("topic=news/b&topic=news/a", "both");
    server.publish("topic=sport", "not for them");
    let last = server.publish("topic=news/a/deep", " lead");

    let want_named = [
        "retry: 3000\n\n".to_string(),
        with_topics(&a, None, "news/a", &["one"]),
        with_topics(&b, Some("kind"), "news/b", &["two", "lines", "three", ""]),
        with_topics(&both, None, "news/b news/a", &["both"]),
        with_topics(&last, None, "news/a/deep", &[" lead"]),
    ]
    .concat();
    assert_body(
        &mut named,
        &want_named,
        "topic_line=1: the topic line first",
    );
    let want_plain = [
        "retry: 3000\n\n".to_string(),
        plain(&a, None, &["one"]),
        plain(&b, Some("kind"), &["two", "lines", "three", ""]),
        plain(&both, None, &["both"]),
        plain(&last, None, &[" lead"]),
    ]
    .concat();
    assert_body(
        &mut plain_sub,
        &want_plain,
        "no topic_line: byte for byte as before",
    );
    assert_body(
        &mut off,
        &want_plain,
        "topic_line=0: byte for byte as before",
    );

    // As a browser sees them: the first line is the topic, the rest the payload intact.
    assert_eq!(
        split_events(&mut named, 4),
        vec![
            (a.clone(), "news/a".into(), "one".into()),
            (b.clone(), "news/b".into(), "two\nlines\nthree\n".into()),
            (both.clone(), "news/b news/a".into(), "both".into()),
            (last.clone(), "news/a/deep".into(), " lead".into()),
        ]
    );
    // The EVENT frames name the same topics, in the same order.
    for id in [&a, &b, &both, &last] {
        let want = want_named
            .split("\n\n")
            .find(|e| e.starts_with(&format!("id: {id}\n")))
            .and_then(|e| e.lines().find(|l| l.starts_with("data: ")))
            .map(|l| l["data: ".len()..].to_string());
        match frames.recv(None).expect("event frame") {
            OwnedPayload::Event {
                id: got, topics, ..
            } => {
                assert_eq!(&got, id);
                assert_eq!(Some(topics.join(" ")), want, "frame topics of {id}");
            }
            other => panic!("expected an EVENT, got {other:?}"),
        }
    }
}

#[test]
fn resume_with_topic_line_replays_with_the_topic_line_on_patterns_and_several_topics() {
    let server = TestServer::start(&["--history", "8"]);
    let mut ids = Vec::new();
    for i in 0..6 {
        let topic = ["news/a", "news/b"][i % 2];
        ids.push(server.publish(&format!("topic={topic}"), &format!("e{i}\nline 2")));
    }
    let want: Vec<(String, String, String)> = (1..6)
        .map(|i| {
            let topic = ["news/a", "news/b"][i % 2];
            (ids[i].clone(), topic.to_string(), format!("e{i}\nline 2"))
        })
        .collect();
    let resume = [("Last-Event-ID", ids[0].as_str())];
    // A pattern replays its topics' history (queued by reference).
    let mut pattern = server.subscribe("topic=news/*&topic_line=1", &resume);
    assert_eq!(split_events(&mut pattern, 5), want, "pattern resume");
    // Two topics replay through their cursors, merged in id order.
    let mut several = server.subscribe("topic=news/a&topic=news/b&topic_line=1", &resume);
    assert_eq!(split_events(&mut several, 5), want, "multi-topic resume");
    // The lastEventId query parameter works the same.
    let query = format!("topic=news/b&topic_line=1&lastEventId={}", ids[0]);
    let mut exact = server.subscribe(&query, &[]);
    let odd: Vec<_> = want.iter().filter(|w| w.1 == "news/b").cloned().collect();
    assert_eq!(split_events(&mut exact, 3), odd, "single-topic resume");

    // An unknown id: the reset notice keeps its JSON data (no topic line), then the replay.
    let mut foreign = server.subscribe(
        "topic=news/*&topic_line=1",
        &[("Last-Event-ID", "elsewhere-3")],
    );
    let notice = foreign.next_event();
    assert_eq!(
        (notice.event.as_str(), notice.data.as_str()),
        ("sseloop-reset", r#"{"reason":"unknown"}"#)
    );
    let mut all = vec![(ids[0].clone(), "news/a".into(), "e0\nline 2".into())];
    all.extend(want.iter().cloned());
    assert_eq!(split_events(&mut foreign, 6), all, "replay after the reset");

    // Live events follow on every one of them, with the topic line.
    let live = server.publish("topic=news/a", "live");
    for client in [&mut pattern, &mut several, &mut foreign] {
        assert_eq!(
            split_events(client, 1),
            vec![(live.clone(), "news/a".into(), "live".into())]
        );
    }
}

#[test]
fn the_topic_line_form_counts_in_history_bytes_once_built() {
    let server = TestServer::start(&[]);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(server.publish("topic=t", &format!("x{i}")));
    }
    let before = server.metric("sseloop_history_bytes");
    assert!(before > 0.0);
    // Nobody reads the topic-line form yet: a plain resume builds nothing.
    let mut plain_sub = server.subscribe("topic=t", &[("Last-Event-ID", &ids[0])]);
    plain_sub.events(9);
    assert_eq!(server.metric("sseloop_history_bytes"), before);
    // A topic_line resume builds it for the 9 events it replays: each is the plain SSE form
    // plus "data: t\n".
    let mut named = server.subscribe("topic=t&topic_line=1", &[("Last-Event-ID", &ids[0])]);
    named.events(9);
    let built: usize = ids[1..]
        .iter()
        .enumerate()
        .map(|(i, id)| plain(id, None, &[&format!("x{}", i + 1)]).len() + "data: t\n".len())
        .sum();
    assert_eq!(
        server.metric("sseloop_history_bytes"),
        before + built as f64
    );
    // Live events read by a topic_line stream are built as they are recorded: history grows
    // by the form's bytes more than for the same event on a topic nobody reads that way.
    let at = server.metric("sseloop_history_bytes");
    let live = server.publish("topic=t", "y");
    named.events(1);
    let grown_t = server.metric("sseloop_history_bytes") - at;
    let at = server.metric("sseloop_history_bytes");
    let other = server.publish("topic=u", "y");
    assert_eq!(live.len(), other.len());
    let grown_u = server.metric("sseloop_history_bytes") - at;
    let form = plain(&live, None, &["y"]).len() + "data: t\n".len();
    assert_eq!(grown_t - grown_u, form as f64);
}

#[test]
fn a_bad_topic_line_value_is_refused_with_a_clear_error() {
    let server = TestServer::start(&[]);
    for value in ["yes", "", "2", "true"] {
        let client = SseClient::open(
            server.addr,
            &format!("/events?topic=a&topic_line={value}"),
            &[],
        );
        assert_eq!(client.status, 400, "topic_line={value}: {}", client.head);
    }
    let resp = request(
        server.addr,
        "GET /events?topic=a&topic_line=on HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("topic_line"), "{}", resp.text());
}

#[test]
fn a_backfill_from_redis_carries_the_topic_line() {
    use redis::{redis_available, Persistence, RedisServer};
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(Persistence::None);
    let node = |args: &[&str]| {
        let url = redis.url();
        let mut all = vec!["--backplane", url.as_str()];
        all.extend_from_slice(args);
        let server = TestServer::start_with(&all, |cmd| {
            cmd.env_remove("SSELOOP_BACKPLANE");
        });
        let ready = || {
            request(
                server.addr,
                "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .status
        };
        assert!(wait_until(TIMEOUT, || ready() == 200), "node ready");
        server
    };
    let a = node(&["--history", "100"]);
    let ids: Vec<String> = (0..40)
        .map(|i| {
            let topic = ["x/a", "x/b"][i % 2];
            a.publish(&format!("topic={topic}"), &format!("x{i}"))
        })
        .collect();
    // This node caches about 2 KiB of history: most of a resume from x4 comes from Redis.
    let c = node(&["--history", "100", "--history-bytes", "2k"]);
    let want: Vec<(String, String, String)> = (5..40)
        .map(|i| {
            (
                ids[i].clone(),
                ["x/a", "x/b"][i % 2].into(),
                format!("x{i}"),
            )
        })
        .collect();
    let queries = ["topic=x/*&topic_line=1", "topic=x/a&topic=x/b&topic_line=1"];
    let mut subs: Vec<SseClient> = queries
        .iter()
        .map(|q| c.subscribe(q, &[("Last-Event-ID", &ids[4])]))
        .collect();
    for (sub, query) in subs.iter_mut().zip(queries) {
        assert_eq!(split_events(sub, 35), want, "{query}");
        assert!(!sub.raw_text().contains("sseloop-reset"), "{query}");
    }
    let live = a.publish("topic=x/b", "live");
    for sub in &mut subs {
        assert_eq!(
            split_events(sub, 1),
            vec![(live.clone(), "x/b".into(), "live".into())]
        );
    }
}
