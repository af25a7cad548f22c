//! The `text/event-stream` wire contract of `GET /events`: response head, `retry:` prelude, exact
//! event bytes, body line splitting as a browser's `EventSource` parses it, multi-topic streams,
//! heartbeats, topic validation and subscribe authentication.

mod util;

use util::*;

/// No heartbeat can interleave with the bytes these tests compare exactly.
const NO_HEARTBEAT: &[&str] = &["--heartbeat-ms", "3600000"];

/// Reads until the stream body is `want` long, then asserts it is exactly `want`.
fn assert_stream_is(client: &mut SseClient, want: &str) {
    client.read_raw_until(|raw| raw.len() >= want.len());
    assert_eq!(client.raw_text(), want, "stream bytes");
}

#[test]
fn stream_head_has_the_contract_headers_and_starts_with_retry() {
    let server = TestServer::start(NO_HEARTBEAT);
    let mut client = server.subscribe("topic=news", &[]);
    assert!(client.head.starts_with("HTTP/1.1 200 "), "{}", client.head);
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(client.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(client.header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(
        client.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(client.header("vary"), None, "no Vary with origin *");
    // Default --retry-ms is 3000.
    assert_stream_is(&mut client, "retry: 3000\n\n");
    assert_eq!(client.retry, Some(3000));
}

#[test]
fn retry_ms_and_cors_origin_flags_reach_the_stream() {
    let server = TestServer::start(&[
        "--retry-ms",
        "1234",
        "--cors-origin",
        "https://app.example",
        "--heartbeat-ms",
        "3600000",
    ]);
    let mut client = server.subscribe("topic=news", &[]);
    assert_eq!(
        client.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert!(
        client
            .header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("origin")),
        "Vary: Origin expected: {}",
        client.head
    );
    assert_stream_is(&mut client, "retry: 1234\n\n");
    assert_eq!(client.retry, Some(1234));
}

#[test]
fn event_bytes_are_exact_with_and_without_an_event_type() {
    let server = TestServer::start(NO_HEARTBEAT);
    let mut client = server.subscribe("topic=news", &[]);
    let id1 = server.publish("topic=news&event=headline", "hello");
    let id2 = server.publish("topic=news", "plain");
    assert_stream_is(
        &mut client,
        &format!(
            "retry: 3000\n\nid: {id1}\nevent: headline\ndata: hello\n\nid: {id2}\ndata: plain\n\n"
        ),
    );
    let events = client.events(2);
    assert_eq!(
        events[0],
        SseEvent {
            id: id1,
            event: "headline".into(),
            data: "hello".into()
        }
    );
    assert_eq!(
        events[1],
        SseEvent {
            id: id2,
            event: "message".into(),
            data: "plain".into()
        }
    );
}

#[test]
fn body_line_breaks_are_exact_on_the_wire_and_only_lf_is_written() {
    let server = TestServer::start(NO_HEARTBEAT);
    let mut client = server.subscribe("topic=lines", &[]);
    // (body, the data lines it must become)
    let cases: &[(&str, &str)] = &[
        ("a\nb", "data: a\ndata: b\n"),
        ("a\n", "data: a\ndata: \n"),
        ("", "data: \n"),
        ("a\r\nb\rc", "data: a\ndata: b\ndata: c\n"),
        ("\r\n", "data: \ndata: \n"),
        ("\n\r", "data: \ndata: \ndata: \n"),
        (" lead", "data:  lead\n"),
    ];
    let mut want = String::from("retry: 3000\n\n");
    for (body, lines) in cases {
        let id = server.publish("topic=lines", body);
        want.push_str(&format!("id: {id}\n{lines}\n"));
    }
    assert_stream_is(&mut client, &want);
    assert!(!client.raw.contains(&b'\r'), "a CR was written");
}

#[test]
fn bodies_round_trip_through_the_browser_parser() {
    let server = TestServer::start(NO_HEARTBEAT);
    let mut client = server.subscribe("topic=rt", &[]);
    let big_line = "x".repeat(64 * 1024);
    let big_lines: String = (0..2048).map(|i| format!("line {i:05} ....\n")).collect();
    assert!(big_lines.len() >= 32 * 1024);
    let big_multibyte = "é€😀".repeat(64 * 1024 / 9 + 1);
    let bodies: Vec<&str> = vec![
        "one line",
        "multi\nline\nbody",
        "",
        "trailing newline\n",
        "\n",
        "\n\n",
        "two trailing\n\n",
        "\nleading newline",
        "cr\ronly",
        "crlf\r\nbody\r\n",
        "mixed\r\nbreaks\rand\nmore",
        "\r",
        " leading space",
        "  two leading spaces\n second line",
        "\tTab",
        ":looks like a comment",
        "data: looks like a field",
        "id: 7\nevent: fake",
        "retry: 1",
        "ünïcödé ✓ 日本語 😀",
        "nul \0 inside",
        "\u{feff}starts with a BOM",
        &big_line,
        &big_lines,
        &big_multibyte,
    ];
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(server.publish("topic=rt&event=t", body));
    }
    for (body, id) in bodies.iter().zip(ids) {
        let want = body.replace("\r\n", "\n").replace('\r', "\n");
        let got = client.next_event();
        assert_eq!(got.id, id, "id of body {:.40?}", body);
        assert_eq!(got.event, "t", "type of body {:.40?}", body);
        assert!(
            got.data == want,
            "body {:.60?} arrived as {:.60?} ({} vs {} bytes)",
            body,
            got.data,
            got.data.len(),
            want.len()
        );
    }
    assert!(!client.raw.contains(&b'\r'), "a CR was written");
    assert_eq!(client.retry, Some(3000));
}

#[test]
fn multi_topic_stream_interleaves_three_topics_in_id_order() {
    let server = TestServer::start(NO_HEARTBEAT);
    let mut client = server.subscribe("topic=a&topic=b&topic=c", &[]);
    let mut expected = Vec::new();
    for (i, topic) in ["a", "b", "c", "other", "b", "a", "c", "c", "other", "a"]
        .iter()
        .enumerate()
    {
        let id = server.publish(&format!("topic={topic}"), &format!("{topic}{i}"));
        if *topic != "other" {
            expected.push((id, format!("{topic}{i}")));
        }
    }
    let marker = server.publish("topic=a", "end");
    expected.push((marker, "end".into()));
    let got = client.events(expected.len());
    let got: Vec<(String, String)> = got.into_iter().map(|e| (e.id, e.data)).collect();
    assert_eq!(got, expected);
    let seqs: Vec<u64> = got.iter().map(|(id, _)| split_id(id).1).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {seqs:?}"
    );
}

#[test]
fn a_topic_named_twice_in_a_subscription_delivers_once() {
    let server = TestServer::start(NO_HEARTBEAT);
    let mut client = server.subscribe("topic=a&topic=a&topic=b&topic=a", &[]);
    let first = server.publish("topic=a", "first");
    let second = server.publish("topic=b&topic=a", "second");
    let ids: Vec<String> = client.events(2).into_iter().map(|e| e.id).collect();
    assert_eq!(ids, [first, second]);
    let third = server.publish("topic=b", "third");
    assert_eq!(client.next_event().id, third, "a duplicate came before it");
}

#[test]
fn heartbeat_comments_keep_a_quiet_stream_alive_and_are_counted() {
    let server = TestServer::start(&["--heartbeat-ms", "200"]);
    let before = server.metric("sseloop_heartbeats_sent_total");
    let started = std::time::Instant::now();
    let mut client = server.subscribe("topic=quiet", &[]);
    assert!(
        client.wait_comments(3, TIMEOUT),
        "only {} heartbeats on a quiet stream with --heartbeat-ms 200",
        client.comments
    );
    // Not more often than the period (a loaded machine can only make them rarer).
    let periods = started.elapsed().as_millis() / 200;
    assert!(
        client.comments as u128 <= periods + 1,
        "{} heartbeats in {} periods of 200 ms",
        client.comments,
        periods
    );
    // Everything after the prelude is comment lines, each ending in LF.
    let raw = client.raw_text();
    let rest = raw
        .strip_prefix("retry: 3000\n\n")
        .expect("stream starts with retry");
    assert!(rest.ends_with('\n'), "{rest:?}");
    for line in rest.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with(':'), "not a comment line: {line:?}");
    }
    let seen = client.comments as f64;
    assert!(
        wait_until(TIMEOUT, || server.metric("sseloop_heartbeats_sent_total")
            >= before + seen),
        "heartbeat counter did not move to {seen}"
    );
    // Heartbeats do not disturb events.
    let id = server.publish("topic=quiet", "still here");
    let ev = client.next_event();
    assert_eq!((ev.id, ev.data), (id, "still here".to_string()));
    assert!(client.wait_comments(client.comments + 1, TIMEOUT));
}

#[test]
fn missing_or_invalid_topic_is_400() {
    let server = TestServer::start(NO_HEARTBEAT);
    let too_long = format!("topic={}", "t".repeat(129));
    let queries = [
        "",
        "topic=",
        "other=x",
        "topic=a%20b",
        "topic=a+b",
        "topic=%C3%A9",
        "topic=a%3Fb",
        "topic=a*b",
        "topic=a%00",
        too_long.as_str(),
        "topic=good&topic=bad!",
    ];
    for query in queries {
        let resp = request(
            server.addr,
            &format!("GET /events?{query} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(resp.status, 400, "GET /events?{query}: {}", resp.text());
    }
    let resp = request(
        server.addr,
        "GET /events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 400, "no query at all");
}

#[test]
fn every_allowed_topic_character_and_128_bytes_are_accepted() {
    let server = TestServer::start(NO_HEARTBEAT);
    let all = "AZaz09._~:/-";
    let longest = "t".repeat(128);
    let mut client = server.subscribe(&format!("topic={all}&topic={longest}"), &[]);
    let id1 = server.publish(&format!("topic={all}"), "all chars");
    let id2 = server.publish(&format!("topic={longest}"), "longest");
    let evs = client.events(2);
    assert_eq!(
        (evs[0].id.as_str(), evs[0].data.as_str()),
        (&*id1, "all chars")
    );
    assert_eq!(
        (evs[1].id.as_str(), evs[1].data.as_str()),
        (&*id2, "longest")
    );
}

#[test]
fn percent_encoded_topic_names_the_same_topic() {
    let server = TestServer::start(NO_HEARTBEAT);
    let mut client = server.subscribe("topic=room%2F1%3Achat", &[]);
    let id = server.publish("topic=room/1:chat", "hi");
    let ev = client.next_event();
    assert_eq!((ev.id, ev.data), (id, "hi".to_string()));
}

const SUB_TOKEN: &str = "sub-s3cr3t-7f2c";

#[test]
fn subscribe_token_is_required_by_header_or_query() {
    let server = TestServer::start(&["--subscribe-token", SUB_TOKEN]);
    let bearer = format!("Bearer {SUB_TOKEN}");
    let refused: Vec<(String, Vec<(&str, String)>)> = vec![
        ("topic=a".into(), vec![]),
        (
            "topic=a".into(),
            vec![("Authorization", "Bearer wrong".into())],
        ),
        (
            "topic=a".into(),
            vec![("Authorization", format!("Bearer {SUB_TOKEN}x"))],
        ),
        (
            "topic=a".into(),
            vec![("Authorization", format!("Basic {SUB_TOKEN}"))],
        ),
        ("topic=a&access_token=wrong".into(), vec![]),
        ("topic=a&access_token=".into(), vec![]),
        (format!("topic=a&token={SUB_TOKEN}"), vec![]),
    ];
    for (query, headers) in &refused {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let client = SseClient::open(server.addr, &format!("/events?{query}"), &headers);
        assert_eq!(client.status, 401, "{query} {headers:?}: {}", client.head);
        assert_eq!(
            client.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
    }
    let mut by_header = server.subscribe("topic=a", &[("Authorization", &bearer)]);
    let mut by_query = server.subscribe(&format!("topic=a&access_token={SUB_TOKEN}"), &[]);
    // Publishing does not need the subscribe token.
    let id = server.publish("topic=a", "authorised");
    for client in [&mut by_header, &mut by_query] {
        let ev = client.next_event();
        assert_eq!((ev.id.as_str(), ev.data.as_str()), (&*id, "authorised"));
    }
}

#[test]
fn tokens_never_appear_in_the_debug_log() {
    const PUB_TOKEN: &str = "pub-t0k3n-91ab";
    let server = TestServer::start_with(
        &["--subscribe-token", SUB_TOKEN, "--publish-token", PUB_TOKEN],
        |cmd| {
            cmd.env("RUST_LOG", "debug");
        },
    );
    let sub_bearer = format!("Bearer {SUB_TOKEN}");
    let pub_bearer = format!("Bearer {PUB_TOKEN}");
    // Accepted and refused uses of both tokens, in headers and queries, on good and bad paths.
    let mut a = server.subscribe("topic=a", &[("Authorization", &sub_bearer)]);
    let _b = server.subscribe(&format!("topic=a&access_token={SUB_TOKEN}"), &[]);
    let refused = SseClient::open(
        server.addr,
        &format!("/events?topic=a&access_token={SUB_TOKEN}x"),
        &[],
    );
    assert_eq!(refused.status, 401);
    let resp = server.post("topic=a", "x", &[("Authorization", &pub_bearer)]);
    assert_eq!(resp.status, 200);
    assert_eq!(a.next_event().data, "x");
    let resp = server.post("topic=a", "x", &[("Authorization", &sub_bearer)]);
    assert_eq!(resp.status, 401);
    let resp = server.post(
        &format!("topic=bad!&access_token={PUB_TOKEN}"),
        "x",
        &[("Authorization", &pub_bearer)],
    );
    assert_eq!(resp.status, 400);
    let resp = request(
        server.addr,
        &format!("GET /nowhere?access_token={SUB_TOKEN} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(resp.status, 404);
    let resp = request(
        server.addr,
        &format!("GET /events?access_token={SUB_TOKEN} HTTP/1.1\r\nHost: t\r\nAuthorization: {sub_bearer}\r\nBroken header line\r\n\r\n"),
    );
    assert_eq!(resp.status, 400);
    // Wait until the log has caught up with the last request before searching it.
    let log_has = |needle: &str| {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    };
    let resp = request(
        server.addr,
        "GET /healthz?log-sync-marker HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert!(
        wait_until(TIMEOUT, || log_has("/healthz")),
        "debug log shows no request line; log: {:?}",
        server.log.lock().unwrap()
    );
    let log = server.log.lock().unwrap();
    assert!(log.len() > 3, "debug logging is not on: {log:?}");
    for line in log.iter() {
        assert!(
            !line.contains(SUB_TOKEN) && !line.contains(PUB_TOKEN),
            "token in log line: {line}"
        );
    }
}
