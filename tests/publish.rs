//! `POST /publish`: the id it returns, multi-topic events, plain and chunked bodies, validation
//! (topic, event type, UTF-8), the body limit, the publish token, and the refusal to start
//! publishing openly on a non-loopback address.

mod util;

use std::io::Write;

use util::*;

/// Sends `head` and then each of `body_parts` from a writer thread (write errors ignored: the
/// server may answer and close before the body ends) and reads one response.
fn send_and_read(server: &TestServer, head: String, body_parts: Vec<Vec<u8>>) -> Response {
    let stream = connect(server.addr);
    let mut writer = stream.try_clone().unwrap();
    let handle = std::thread::spawn(move || {
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        for part in body_parts {
            if writer.write_all(&part).is_err() {
                return;
            }
        }
    });
    let resp = ResponseReader::new(stream).next().expect("a response");
    handle.join().unwrap();
    resp
}

fn chunked(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| {
            let mut c = format!("{:x}\r\n", p.len()).into_bytes();
            c.extend_from_slice(p);
            c.extend_from_slice(b"\r\n");
            c
        })
        .collect();
    out.push(b"0\r\n\r\n".to_vec());
    out
}

fn chunked_head(query: &str) -> String {
    format!("POST /publish?{query} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
}

/// Publishes a marker and asserts it is the next event the client sees (nothing came before it).
fn assert_next_is_marker(server: &TestServer, client: &mut SseClient, topic: &str) {
    let marker = server.publish(&format!("topic={topic}"), "marker");
    let ev = client.next_event();
    assert_eq!(
        (ev.id, ev.data),
        (marker, "marker".to_string()),
        "an event was published by a refused request"
    );
}

#[test]
fn publish_answers_200_with_json_id_and_ids_increase_across_topics() {
    let server = TestServer::start(&[]);
    let mut seqs = Vec::new();
    let mut run = None;
    for topic in ["a", "b", "a", "c", "b"] {
        let resp = server.post(&format!("topic={topic}"), "x", &[]);
        assert_eq!(resp.status, 200, "{}", resp.text());
        let body = resp.text();
        let trimmed = body.trim();
        assert!(
            trimmed.starts_with('{') && trimmed.ends_with('}'),
            "not a JSON object: {body:?}"
        );
        let (r, seq) = split_id(&json_id(&body));
        assert_eq!(*run.get_or_insert(r.clone()), r, "run prefix changed");
        seqs.push(seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ids not strictly increasing: {seqs:?}"
    );
}

#[test]
fn multi_topic_publish_is_one_event_delivered_once_to_each_subscriber() {
    let server = TestServer::start(&[]);
    let mut both = server.subscribe("topic=a&topic=b", &[]);
    let mut all = server.subscribe("topic=c&topic=b&topic=a", &[]);
    let mut only_a = server.subscribe("topic=a", &[]);
    let mut only_b = server.subscribe("topic=b", &[]);
    let mut neither = server.subscribe("topic=z", &[]);
    let id = server.publish("topic=a&topic=b&topic=c&event=shared", "once");
    let after = server.publish("topic=a&topic=b&topic=c&topic=z", "after");
    for client in [&mut both, &mut all, &mut only_a, &mut only_b] {
        let evs = client.events(2);
        assert_eq!(
            (
                evs[0].id.as_str(),
                evs[0].event.as_str(),
                evs[0].data.as_str()
            ),
            (id.as_str(), "shared", "once")
        );
        assert_eq!(
            (evs[1].id.as_str(), evs[1].data.as_str()),
            (&*after, "after")
        );
    }
    assert_eq!(neither.next_event().id, after);
}

#[test]
fn chunked_and_split_bodies_are_published_whole() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=c", &[]);
    // "é" split between two chunks; a chunk extension; a trailer.
    let resp = send_and_read(
        &server,
        chunked_head("topic=c"),
        vec![
            b"5\r\nhello\r\n".to_vec(),
            b"3;ext=1\r\n \xc3".to_vec(),
            b"\xa9\r\n".to_vec(),
            b"6\r\n\nline2\r\n0\r\nX-Trailer: v\r\n\r\n".to_vec(),
        ],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let ev = client.next_event();
    assert_eq!(
        (ev.id, ev.data),
        (json_id(&resp.text()), "hello é\nline2".to_string())
    );
    // A Content-Length body arriving in several writes.
    let body = "split ✓ body";
    let bytes = body.as_bytes();
    let head = format!(
        "POST /publish?topic=c HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    let parts = vec![
        bytes[..3].to_vec(),
        bytes[3..8].to_vec(),
        bytes[8..].to_vec(),
    ];
    let resp = send_and_read(&server, head, parts);
    assert_eq!(resp.status, 200);
    let ev = client.next_event();
    assert_eq!((ev.id, ev.data), (json_id(&resp.text()), body.to_string()));
    // A chunked body with no data chunk is an empty event.
    let resp = send_and_read(&server, chunked_head("topic=c"), chunked(&[]));
    assert_eq!(resp.status, 200);
    assert_eq!(client.next_event().data, "");
}

#[test]
fn bad_topic_is_400_and_publishes_nothing() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=good", &[]);
    let too_long = format!("topic={}", "t".repeat(129));
    for query in [
        "",
        "topic=",
        "event=x",
        "topic=a%20b",
        "topic=%C3%A9",
        "topic=a%23",
        too_long.as_str(),
        "topic=good&topic=bad!",
        "topic=bad!&topic=good",
    ] {
        let resp = server.post(query, "x", &[]);
        assert_eq!(resp.status, 400, "POST /publish?{query}: {}", resp.text());
    }
    assert_next_is_marker(&server, &mut client, "good");
}

#[test]
fn event_type_rules() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=t", &[]);
    let long = format!("topic=t&event={}", "e".repeat(129));
    for query in [
        "topic=t&event=",
        long.as_str(),
        "topic=t&event=a%0Db",
        "topic=t&event=a%0Ab",
        "topic=t&event=a%00b",
        "topic=t&event=%0D%0A",
        "topic=t&event=end%0A",
    ] {
        let resp = server.post(query, "x", &[]);
        assert_eq!(resp.status, 400, "POST /publish?{query}: {}", resp.text());
    }
    assert_next_is_marker(&server, &mut client, "t");
    // 128 bytes, spaces and non-ASCII are fine and arrive exactly.
    let longest = "e".repeat(128);
    for (query_value, want) in [
        (longest.as_str(), longest.as_str()),
        ("update%20%E2%9C%93", "update ✓"),
        ("with+plus", "with plus"),
        ("a:b/c", "a:b/c"),
    ] {
        let id = server.publish(&format!("topic=t&event={query_value}"), "x");
        let ev = client.next_event();
        assert_eq!((ev.id, ev.event.as_str()), (id, want));
    }
}

#[test]
fn non_utf8_body_is_400_and_publishes_nothing() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=u", &[]);
    let bodies: [&[u8]; 4] = [b"\xff\xfe", b"ok \xe2\x82", b"\xc3\x28", b"\xed\xa0\x80"];
    for body in bodies {
        let mut raw = format!(
            "POST /publish?topic=u HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        let resp = request_bytes(server.addr, &raw);
        assert_eq!(resp.status, 400, "body {body:?}: {}", resp.text());
    }
    let resp = send_and_read(&server, chunked_head("topic=u"), chunked(&[b"ok", b"\xff"]));
    assert_eq!(resp.status, 400, "chunked non-UTF-8: {}", resp.text());
    assert_next_is_marker(&server, &mut client, "u");
}

#[test]
fn content_length_over_max_body_is_413() {
    let server = TestServer::start(&["--max-body", "1k"]);
    let mut client = server.subscribe("topic=m", &[]);
    let at_limit = "a".repeat(1024);
    let id = server.publish("topic=m", &at_limit);
    let ev = client.next_event();
    assert_eq!((ev.id, ev.data.len()), (id, 1024));
    let over = "a".repeat(1025);
    let resp = server.post("topic=m", &over, &[]);
    assert_eq!(resp.status, 413, "{}", resp.text());
    // Announced far over the limit: refused on the announcement, whether or not a body follows.
    let resp = send_and_read(
        &server,
        "POST /publish?topic=m HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n".into(),
        vec![],
    );
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_next_is_marker(&server, &mut client, "m");
}

#[test]
fn default_max_body_is_one_mebibyte() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=other", &[]);
    let exactly = "b".repeat(1 << 20);
    let resp = server.post("topic=big", &exactly, &[]);
    assert_eq!(resp.status, 200, "exactly 1 MiB: {}", resp.text());
    let head = format!(
        "POST /publish?topic=big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        (1 << 20) + 1
    );
    let resp = send_and_read(&server, head, vec![vec![b'b'; (1 << 20) + 1]]);
    assert_eq!(resp.status, 413, "{}", resp.text());
    let resp = send_and_read(
        &server,
        chunked_head("topic=big"),
        chunked(&[&vec![b'b'; 1 << 19], &vec![b'b'; 1 << 19], b"b"]),
    );
    assert_eq!(resp.status, 413, "chunked: {}", resp.text());
    assert_next_is_marker(&server, &mut client, "other");
}

/// Bug: with the defaults (`--max-body 1M`, `--max-queue-bytes 1M`) an accepted event whose
/// encoding is over 1 MiB (a body near the limit, or a few hundred KiB of short lines, each of
/// which gains a 7-byte `data: ` prefix) is never delivered live: every subscriber, idle and
/// reading, is disconnected as a "slow consumer" with nothing queued.
#[test]
fn regression_large_accepted_event_disconnects_every_subscriber_as_slow_consumer() {
    let server = TestServer::start(&[]);
    let at_limit = "n".repeat(1 << 20);
    let short_lines = "\n".repeat(200_000);
    let mut failures = Vec::new();
    for (what, body) in [
        ("a body of exactly --max-body (1 MiB)", &at_limit),
        ("200 KB of empty lines", &short_lines),
    ] {
        let mut client = server.subscribe("topic=large", &[]);
        let resp = server.post("topic=large", body, &[]);
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        let got = client
            .next_event_within(TIMEOUT)
            .map(|e| (e.id, e.data.len()));
        if got != Some((json_id(&resp.text()), body.len())) {
            failures.push(format!("{what}: subscriber got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}; slow-consumer closes: {}",
        server.metric("sseloop_closes_total{cause=\"slow_consumer\"}")
    );
}

#[test]
fn chunked_body_growing_over_max_body_is_413() {
    let server = TestServer::start(&["--max-body", "1k"]);
    let mut client = server.subscribe("topic=g", &[]);
    let half = vec![b'h'; 512];
    let resp = send_and_read(&server, chunked_head("topic=g"), chunked(&[&half, &half]));
    assert_eq!(resp.status, 200, "exactly the limit: {}", resp.text());
    assert_eq!(client.next_event().data.len(), 1024);
    let resp = send_and_read(
        &server,
        chunked_head("topic=g"),
        chunked(&[&half, &half, b"x"]),
    );
    assert_eq!(resp.status, 413, "one byte over: {}", resp.text());
    let many: Vec<&[u8]> = std::iter::repeat_n(&half[..100], 50).collect();
    let resp = send_and_read(&server, chunked_head("topic=g"), chunked(&many));
    assert_eq!(resp.status, 413, "many small chunks: {}", resp.text());
    let resp = send_and_read(&server, chunked_head("topic=g"), chunked(&[&[b'x'; 4096]]));
    assert_eq!(resp.status, 413, "one big chunk: {}", resp.text());
    assert_next_is_marker(&server, &mut client, "g");
}

const PUB_TOKEN: &str = "pub-9d1e-token";

#[test]
fn publish_token_is_required_as_a_bearer_header() {
    let server = TestServer::start(&["--publish-token", PUB_TOKEN]);
    let mut client = server.subscribe("topic=p", &[]);
    let wrong_suffix = format!("Bearer {PUB_TOKEN}x");
    let basic = format!("Basic {PUB_TOKEN}");
    let bare = PUB_TOKEN.to_string();
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", &wrong_suffix)],
        vec![("Authorization", &basic)],
        vec![("Authorization", &bare)],
        vec![("Authorization", "Bearer")],
    ];
    for headers in &refused {
        let resp = server.post("topic=p", "x", headers);
        assert_eq!(resp.status, 401, "{headers:?}: {}", resp.text());
        assert_eq!(
            resp.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
    }
    // The token in the query does not replace the header.
    let resp = server.post(&format!("topic=p&access_token={PUB_TOKEN}"), "x", &[]);
    assert_eq!(resp.status, 401, "query token: {}", resp.text());
    // A chunked body from an unauthorised client is refused too.
    let resp = send_and_read(&server, chunked_head("topic=p"), chunked(&[b"x"]));
    assert_eq!(resp.status, 401, "chunked: {}", resp.text());
    assert_next_is_marker_with_token(&server, &mut client);
}

fn assert_next_is_marker_with_token(server: &TestServer, client: &mut SseClient) {
    let bearer = format!("Bearer {PUB_TOKEN}");
    let resp = server.post("topic=p", "marker", &[("Authorization", &bearer)]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let ev = client.next_event();
    assert_eq!(
        (ev.id, ev.data),
        (json_id(&resp.text()), "marker".to_string()),
        "an unauthorised publish got through"
    );
}

#[test]
fn non_loopback_listen_without_publish_token_refuses_to_start() {
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (code, output) = run_binary(&["--listen", listen]);
        assert!(
            code.is_some_and(|c| c != 0),
            "--listen {listen}: exit code {code:?}; output: {output}"
        );
        assert!(
            output.contains("--publish-token") && output.contains("--open-publish"),
            "--listen {listen}: message does not say how to fix it: {output}"
        );
    }
}

#[test]
fn non_loopback_listen_starts_with_open_publish_or_a_token() {
    let open = TestServer::start_on("0.0.0.0:0", &["--open-publish"]);
    let resp = open.post("topic=o", "x", &[]);
    assert_eq!(resp.status, 200, "--open-publish: {}", resp.text());
    drop(open);
    let guarded = TestServer::start_on("0.0.0.0:0", &["--publish-token", PUB_TOKEN]);
    assert_eq!(guarded.post("topic=o", "x", &[]).status, 401);
    let bearer = format!("Bearer {PUB_TOKEN}");
    let resp = guarded.post("topic=o", "x", &[("Authorization", &bearer)]);
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn publishes_arriving_during_a_long_round_of_writes_are_answered_and_delivered_once_in_order() {
    raise_open_files(4096);
    let server = TestServer::start(&[]);
    // Enough readers that one round of writes lasts milliseconds: publishes arriving meanwhile
    // are taken in the middle of the round (`--round-input-us`, 250 µs by default), answered,
    // and written to the readers the round has not reached yet.
    const READERS: usize = 1100;
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 8;
    let mut subs: Vec<SseClient> = (0..READERS)
        .map(|_| server.subscribe("topic=many", &[]))
        .collect();
    assert!(subs.iter().all(|s| s.status == 200));
    let mut stream = connect(server.addr);
    let mut responses = ResponseReader::new(stream.try_clone().expect("clone"));
    for batch in 0..BATCHES {
        let raw: String = (0..PER_BATCH)
            .map(|k| raw_publish("many", &format!("e{}", batch * PER_BATCH + k)))
            .collect();
        stream.write_all(raw.as_bytes()).expect("send");
        // The next batch lands while this one's round is being written.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let total = BATCHES * PER_BATCH;
    let ids = accepted_ids(&mut responses, total);
    let want: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("e{i}")))
        .collect();
    for (n, sub) in subs.iter_mut().enumerate() {
        let got: Vec<(String, String)> = sub
            .events(total)
            .into_iter()
            .map(|e| (e.id, e.data))
            .collect();
        assert_eq!(got, want, "reader {n}: every event once, in publish order");
    }
    assert!(
        server.metric("sseloop_midround_polls_total") > 0.0,
        "no round took input in its middle"
    );
}
