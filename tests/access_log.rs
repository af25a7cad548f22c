//! The access log (`--access-log`) and the internal metrics address (`--metrics-listen`) against
//! the real binary: lines parsed in text (logfmt) and JSON for a stream the client closed, a
//! publish, a refusal whose query holds a token (which appears nowhere), a frame connection and
//! a request refused at the connection limit; the probes and metrics answered on the internal
//! address while `--max-connections` is full and JWT authorization is on.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sseloop::frame::client::FrameClient;
use util::*;

const SECRET: &str = "access-log-secret-of-at-least-32-bytes";

fn jwt(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let claims = json!({
        "sub": sub,
        "exp": exp,
        "sseloop": {"subscribe": ["news"], "publish": ["news"]},
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// The access lines logged so far.
fn access_lines(server: &TestServer) -> Vec<String> {
    let log = server.log.lock().unwrap();
    log.iter()
        .filter(|l| l.contains("sseloop::access"))
        .cloned()
        .collect()
}

/// A text access line's fields (`key=value`, values possibly quoted as JSON strings).
fn logfmt(line: &str) -> HashMap<String, String> {
    let body = line.split_once("] ").map_or(line, |(_, b)| b);
    let mut fields = HashMap::new();
    let mut rest = body;
    while let Some((key, after)) = rest.split_once('=') {
        let (value, next) = if after.starts_with('"') {
            let mut de = serde_json::Deserializer::from_str(after).into_iter::<String>();
            let v = de.next().unwrap().unwrap();
            (v, &after[de.byte_offset()..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        fields.insert(key.trim().to_string(), value);
        rest = next.trim_start();
    }
    fields
}

/// Waits for the access line of `path` with `status`; returns its fields.
fn wait_line(
    server: &TestServer,
    parse: fn(&str) -> HashMap<String, String>,
    path: &str,
    status: &str,
) -> HashMap<String, String> {
    let mut found = None;
    let ok = wait_until(TIMEOUT, || {
        found = access_lines(server)
            .iter()
            .map(|l| parse(l))
            .find(|f| f.get("path").map(String::as_str) == Some(path) && f["status"] == status);
        found.is_some()
    });
    assert!(ok, "no {path} {status} line in {:?}", access_lines(server));
    found.unwrap()
}

fn number(fields: &HashMap<String, String>, key: &str) -> f64 {
    fields[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {fields:?}"))
}

/// Opens a stream (token in the query), publishes to it, and closes it from the client side
/// after at least 100 ms; then a 401 with a token-shaped secret in the query and a frame
/// connection. Returns the tokens used, which must appear nowhere in the log.
fn exercise(server: &TestServer) -> Vec<String> {
    let (alice, bob) = (jwt("alice"), jwt("bob"));
    let mut stream = SseClient::open(
        server.addr,
        &format!("/events?topic=news&access_token={alice}"),
        &[],
    );
    assert_eq!(stream.status, 200, "{:?}", stream.head);
    let resp = server.post(
        "topic=news",
        "hello",
        &[("Authorization", &format!("Bearer {bob}"))],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(stream.next_event().data, "hello");
    std::thread::sleep(Duration::from_millis(100));
    drop(stream);
    let refused = request(
        server.addr,
        "GET /events?topic=news&access_token=SECRET-IN-QUERY HTTP/1.1\r\nHost: t\r\n\
         Connection: close\r\n\r\n",
    );
    assert_eq!(refused.status, 401);
    let frames = FrameClient::connect(server.addr, &["news"], None, Some(&alice)).unwrap();
    drop(frames);
    vec![alice, bob, "SECRET-IN-QUERY".to_string()]
}

fn check_lines(server: &TestServer, parse: fn(&str) -> HashMap<String, String>, null: &str) {
    let stream = wait_line(server, parse, "/events", "200");
    assert_eq!(stream["method"], "GET");
    assert_eq!(stream["topics"], "news");
    assert_eq!(stream["sub"], "alice");
    assert_eq!(stream["reason"], "client_closed");
    assert!(stream["peer"].starts_with("127.0.0.1:"), "{stream:?}");
    // The head, the retry line and the event.
    assert!(number(&stream, "bytes") > 100.0, "{stream:?}");
    assert!(number(&stream, "duration_ms") >= 100.0, "{stream:?}");

    let publish = wait_line(server, parse, "/publish", "200");
    assert_eq!(publish["method"], "POST");
    assert_eq!(publish["topics"], "news");
    assert_eq!(publish["sub"], "bob");
    assert!(number(&publish, "bytes") > 0.0, "{publish:?}");
    let ms = number(&publish, "duration_ms");
    assert!((0.0..5000.0).contains(&ms), "{publish:?}");
    assert!(!publish.contains_key("reason"), "{publish:?}");

    let refused = wait_line(server, parse, "/events", "401");
    assert_eq!(refused["sub"], null);
    assert!(number(&refused, "bytes") > 0.0, "{refused:?}");

    let frames = wait_line(server, parse, "/frames", "101");
    assert_eq!(frames["sub"], "alice");
    assert_eq!(frames["reason"], "client_closed");
    assert!(number(&frames, "bytes") > 0.0, "{frames:?}");
}

fn assert_nowhere(server: &TestServer, secrets: &[String]) {
    let log = server.log.lock().unwrap();
    for secret in secrets {
        assert!(
            log.iter().all(|l| !l.contains(secret.as_str())),
            "{secret} logged: {log:?}"
        );
    }
}

#[test]
fn access_lines_in_text_for_a_stream_a_publish_a_refusal_and_frames() {
    let server = TestServer::start(&["--access-log", "--jwt-secret", SECRET]);
    let secrets = exercise(&server);
    check_lines(&server, logfmt, "-");
    assert_nowhere(&server, &secrets);
    // docs/OPERATIONS.md's example is a stream line with the same fields in the same order.
    let example = guide_line("sseloop::access] ");
    let real = access_lines(&server)
        .into_iter()
        .find(|l| l.contains("path=/events ") && l.contains("status=200"))
        .unwrap();
    assert_eq!(keys(&example), keys(&real), "{example}\n{real}");
    assert_eq!(logfmt(&example)["reason"], "client_closed");
}

/// The line of docs/OPERATIONS.md that contains `marker`.
fn guide_line(marker: &str) -> String {
    let doc = std::fs::read_to_string(format!("{}/docs/OPERATIONS.md", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    doc.lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker} in docs/OPERATIONS.md"))
        .to_string()
}

/// The keys of a text line without quoted values, in order.
fn keys(line: &str) -> Vec<String> {
    let body = line.split_once("] ").unwrap().1;
    body.split(' ')
        .map(|kv| kv.split('=').next().unwrap().to_string())
        .collect()
}

/// A JSON line's access fields as text (arrays joined by commas, `null` as `null`).
fn json_fields(line: &str) -> HashMap<String, String> {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{line}");
    for key in ["ts", "level", "target", "msg"] {
        assert!(v[key].is_string(), "{key} in {line}");
    }
    let fields = v.as_object().unwrap();
    for key in ["status", "bytes", "duration_ms"] {
        assert!(fields[key].is_number(), "{key} in {line}");
    }
    assert!(fields["topics"].is_array(), "{line}");
    fields
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

#[test]
fn access_lines_in_json_have_their_fields_as_keys() {
    let server = TestServer::start(&[
        "--access-log",
        "--log-format",
        "json",
        "--jwt-secret",
        SECRET,
    ]);
    let secrets = exercise(&server);
    check_lines(&server, json_fields, "null");
    assert_nowhere(&server, &secrets);
    // docs/OPERATIONS.md's example is a publish line with the same keys.
    let example = json_fields(&guide_line("\"target\":\"sseloop::access\""));
    let real = access_lines(&server)
        .into_iter()
        .map(|l| json_fields(&l))
        .find(|f| f["path"] == "/publish")
        .unwrap();
    assert_eq!(real["msg"], "POST /publish 200");
    let mut want: Vec<&String> = real.keys().collect();
    let mut got: Vec<&String> = example.keys().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn without_the_option_nothing_is_logged_per_request() {
    let server = TestServer::start(&[]);
    server.publish("topic=t", "x");
    let _ = server.metrics();
    assert!(access_lines(&server).is_empty());
}

/// The internal address from the start-up line (`metrics address HOST:PORT,`).
fn metrics_addr(server: &TestServer) -> SocketAddr {
    let start_line = || -> Option<String> {
        let log = server.log.lock().unwrap();
        log.iter().find(|l| l.contains("metrics address ")).cloned()
    };
    // The line may reach the log just after the address was handed to the test.
    assert!(wait_until(TIMEOUT, || start_line().is_some()));
    let line = start_line().unwrap();
    let rest = line.split("metrics address ").nth(1).unwrap();
    rest.split(',').next().unwrap().parse().unwrap()
}

fn get(addr: SocketAddr, path: &str) -> Response {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn the_metrics_address_answers_probes_at_the_connection_limit_under_jwt() {
    let server = TestServer::start(&[
        "--max-connections",
        "2",
        "--jwt-secret",
        SECRET,
        "--metrics-listen",
        "127.0.0.1:0",
        "--access-log",
    ]);
    let internal = metrics_addr(&server);
    let token = jwt("alice");
    let auth = format!("Bearer {token}");
    let mut first = server.subscribe("topic=news", &[("Authorization", &auth)]);
    let second = server.subscribe("topic=news", &[("Authorization", &auth)]);
    // The main address is full: a third stream is refused.
    let third = SseClient::open(
        server.addr,
        "/events?topic=news",
        &[("Authorization", &auth)],
    );
    assert_eq!(third.status, 503);

    let metrics = get(internal, "/metrics");
    assert_eq!(metrics.status, 200);
    let m = parse_metrics(&metrics.text());
    assert_eq!(m["sseloop_connections_open{kind=\"sse\"}"], 2.0);
    assert_eq!(get(internal, "/healthz").status, 200);
    assert_eq!(get(internal, "/readyz").status, 200);
    assert_eq!(get(internal, "/events?topic=news").status, 404);
    assert_eq!(get(internal, "/ui/").status, 404);
    let publish = request(
        internal,
        &format!(
            "POST /publish?topic=news HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\
             Connection: close\r\nContent-Length: 1\r\n\r\nx"
        ),
    );
    assert_eq!(publish.status, 404);
    // Internal requests are not access-logged; the main address's refusal is.
    // (The log is read by another thread: wait for the line.)
    let refused_logged = || {
        access_lines(&server)
            .iter()
            .any(|l| l.contains("status=503"))
    };
    assert!(
        wait_until(TIMEOUT, refused_logged),
        "{:?}",
        access_lines(&server)
    );
    let lines = access_lines(&server);
    assert!(lines.iter().all(|l| !l.contains("/metrics")), "{lines:?}");

    // The main address still works: with room again, a publish reaches the open stream.
    drop(second);
    assert!(wait_until(TIMEOUT, || {
        server.metric("sseloop_connections_open{kind=\"sse\"}") == 1.0
    }));
    let resp = server.post("topic=news", "still", &[("Authorization", &auth)]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(first.next_event().data, "still");
}

#[test]
fn the_metrics_address_closes_connections_past_its_own_cap() {
    let server = TestServer::start(&["--metrics-listen", "127.0.0.1:0"]);
    let internal = metrics_addr(&server);
    // Held open without a request (each gets at most a second for it).
    let held: Vec<_> = (0..64).map(|_| connect(internal)).collect();
    assert!(wait_until(TIMEOUT, || {
        server.metric("sseloop_connections_open{kind=\"http\"}") >= 65.0
    }));
    let mut extra = connect(internal);
    let started = Instant::now();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    extra.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "the 65th connection was served after {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&answer)
    );
    drop(held);
    // Once the server has seen them go, the address serves again (until then a new connection
    // may still be closed unanswered, so the probe tolerates that).
    assert!(wait_until(TIMEOUT, || {
        let mut s = connect(internal);
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        ResponseReader::new(s)
            .next()
            .is_some_and(|r| r.status == 200)
    }));
}

#[test]
fn a_request_never_answered_is_logged_when_its_connection_ends() {
    let server = TestServer::start(&["--access-log"]);
    let mut s = connect(server.addr);
    s.write_all(b"POST /publish?topic=t HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(s);
    let line = wait_line(&server, logfmt, "/publish", "-");
    assert_eq!(line["reason"], "client_closed", "{line:?}");
    assert_eq!(line["bytes"], "0", "{line:?}");
}
