//! HTTP behaviour around the routes: CORS preflight and headers on every response, `/healthz`,
//! keep-alive and pipelining, HTTP/1.0 connection close, and the command line (`--help`).

mod util;

use std::io::Write;

use util::*;

const ORIGIN: &str = "https://app.example";

fn header_tokens(resp: &Response, name: &str) -> Vec<String> {
    resp.header(name)
        .unwrap_or_else(|| panic!("no {name} header: {}", resp.head))
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

#[test]
fn options_preflight_is_204_with_cors_headers() {
    let server = TestServer::start(&[]);
    let mut reader = ResponseReader::new(connect(server.addr));
    for path in ["/events?topic=a", "/publish?topic=a"] {
        let raw = format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: t\r\nOrigin: https://page.example\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, content-type, last-event-id\r\n\r\n"
        );
        reader.stream.write_all(raw.as_bytes()).unwrap();
        let resp = reader.next().expect("preflight response");
        assert_eq!(resp.status, 204, "OPTIONS {path}: {}", resp.head);
        assert_eq!(
            resp.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        let methods = header_tokens(&resp, "access-control-allow-methods");
        for m in ["get", "post"] {
            assert!(
                methods.iter().any(|x| x == m),
                "{path}: methods {methods:?}"
            );
        }
        let headers = header_tokens(&resp, "access-control-allow-headers");
        for h in ["authorization", "content-type", "last-event-id"] {
            assert!(
                headers.iter().any(|x| x == h),
                "{path}: headers {headers:?}"
            );
        }
    }
    // The preflight left the connection usable.
    reader
        .stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(reader.next().expect("healthz after preflight").status, 200);
}

#[test]
fn preflight_with_a_configured_origin_names_it_and_varies() {
    let server = TestServer::start(&["--cors-origin", ORIGIN]);
    let resp = request(
        server.addr,
        "OPTIONS /publish HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 204);
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert!(header_tokens(&resp, "vary").iter().any(|v| v == "origin"));
}

/// One request of each kind the server answers, success and error alike.
fn every_kind_of_response(server: &TestServer) -> Vec<(String, Response)> {
    let requests = [
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        "OPTIONS /events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        "POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi".to_string(),
        "POST /publish?topic=a%20 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi".to_string(),
        "GET /events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        "GET /missing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        "GET /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        "BREW /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        "GET /healthz HTTP/1.1\r\nno colon\r\n\r\n".to_string(),
    ];
    let mut out: Vec<(String, Response)> = requests
        .iter()
        .map(|raw| {
            let line = raw.lines().next().unwrap().to_string();
            (line, request(server.addr, raw))
        })
        .collect();
    let statuses: Vec<u16> = out.iter().map(|(_, r)| r.status).collect();
    assert_eq!(statuses, [200, 200, 204, 200, 400, 400, 404, 405, 501, 400]);
    let stream = server.subscribe("topic=a", &[]);
    out.push((
        "GET /events?topic=a".into(),
        Response {
            status: stream.status,
            head: stream.head.clone(),
            body: Vec::new(),
        },
    ));
    out
}

#[test]
fn every_response_carries_the_cors_origin() {
    let server = TestServer::start(&[]);
    for (line, resp) in every_kind_of_response(&server) {
        assert_eq!(
            resp.header("access-control-allow-origin").as_deref(),
            Some("*"),
            "{line}: {}",
            resp.head
        );
        assert_eq!(resp.header("vary"), None, "{line}: Vary with origin *");
    }
    let server = TestServer::start(&["--cors-origin", ORIGIN]);
    for (line, resp) in every_kind_of_response(&server) {
        assert_eq!(
            resp.header("access-control-allow-origin").as_deref(),
            Some(ORIGIN),
            "{line}: {}",
            resp.head
        );
        assert!(
            resp.header("vary")
                .is_some_and(|v| v.to_ascii_lowercase().contains("origin")),
            "{line}: no Vary: Origin: {}",
            resp.head
        );
    }
}

#[test]
fn healthz_is_200() {
    let server = TestServer::start(&[]);
    let resp = request(
        server.addr,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{}", resp.head);
}

#[test]
fn keep_alive_serves_successive_requests_on_one_connection() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=k", &[]);
    let mut reader = ResponseReader::new(connect(server.addr));
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = format!("ka{i}");
        let raw = format!(
            "POST /publish?topic=k HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        reader.stream.write_all(raw.as_bytes()).unwrap();
        let resp = reader
            .next()
            .expect("response on the kept-alive connection");
        assert_eq!(resp.status, 200);
        ids.push(json_id(&resp.text()));
        reader
            .stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(reader.next().expect("healthz").status, 200);
    }
    let got: Vec<String> = client.events(3).into_iter().map(|e| e.id).collect();
    assert_eq!(got, ids);
}

#[test]
fn pipelined_publishes_and_healthz_are_answered_in_order() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=pipe", &[]);
    let mut batch = String::new();
    for i in 0..3 {
        let body = format!("pipelined {i}");
        batch.push_str(&format!(
            "POST /publish?topic=pipe HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    batch.push_str("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut reader = ResponseReader::new(connect(server.addr));
    reader.stream.write_all(batch.as_bytes()).unwrap();
    let mut seqs = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let resp = reader.next().unwrap_or_else(|| panic!("response {i}"));
        assert_eq!(resp.status, 200, "publish {i}: {}", resp.text());
        let id = json_id(&resp.text());
        seqs.push(split_id(&id).1);
        ids.push(id);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
    let health = reader.next().expect("healthz response");
    assert_eq!(health.status, 200);
    assert!(
        !health.text().contains("\"id\""),
        "4th response is not the healthz: {}",
        health.text()
    );
    for (i, id) in ids.iter().enumerate() {
        let ev = client.next_event();
        assert_eq!((&ev.id, ev.data), (id, format!("pipelined {i}")));
    }
}

#[test]
fn pipelined_mixed_requests_survive_any_split() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=mix", &[]);
    let batch = concat!(
        "POST /publish?topic=mix HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none",
        "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        "POST /publish?topic=mix&event=e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
        "OPTIONS /publish HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
        "POST /publish?topic=mix HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nthree",
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let want = [200, 200, 200, 204, 404, 200, 200];
    for piece in [batch.len(), 7, 1] {
        let mut reader = ResponseReader::new(connect(server.addr));
        for part in batch.as_bytes().chunks(piece) {
            reader.stream.write_all(part).unwrap();
        }
        let statuses: Vec<u16> = (0..want.len())
            .map(|_| reader.next().map_or(0, |r| r.status))
            .collect();
        assert_eq!(statuses, want, "written in pieces of {piece}");
        let data: Vec<String> = client.events(3).into_iter().map(|e| e.data).collect();
        assert_eq!(
            data,
            ["one", "two", "three"],
            "written in pieces of {piece}"
        );
        assert!(reader.closed_within(TIMEOUT), "Connection: close honoured");
    }
}

#[test]
fn http10_without_keep_alive_is_closed_after_the_response() {
    let server = TestServer::start(&[]);
    let mut client = server.subscribe("topic=old", &[]);
    for raw in [
        "GET /healthz HTTP/1.0\r\n\r\n".to_string(),
        "GET /missing HTTP/1.0\r\n\r\n".to_string(),
        "POST /publish?topic=old HTTP/1.0\r\nContent-Length: 4\r\n\r\n1.0!".to_string(),
    ] {
        let mut reader = ResponseReader::new(connect(server.addr));
        reader.stream.write_all(raw.as_bytes()).unwrap();
        let resp = reader.next().expect("response");
        assert!(resp.status == 200 || resp.status == 404, "{}", resp.head);
        assert!(
            reader.closed_within(TIMEOUT),
            "{raw:?}: connection left open"
        );
    }
    assert_eq!(client.next_event().data, "1.0!");
    // HTTP/1.1 with Connection: close too.
    let mut reader = ResponseReader::new(connect(server.addr));
    reader
        .stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(reader.next().expect("response").status, 200);
    assert!(reader.closed_within(TIMEOUT));
}

#[test]
fn help_exits_zero_and_lists_every_flag() {
    let (code, output) = run_binary(&["--help"]);
    assert_eq!(code, Some(0), "{output}");
    for flag in [
        "--listen",
        "--heartbeat-ms",
        "--retry-ms",
        "--history",
        "--publish-token",
        "--subscribe-token",
        "--cors-origin",
        "--max-body",
        "--max-connections",
        "--grace-ms",
        "--open-publish",
    ] {
        assert!(
            output.contains(flag),
            "--help does not list {flag}:\n{output}"
        );
    }
}
