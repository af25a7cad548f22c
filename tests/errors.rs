//! Error statuses: 404, 405 with `Allow`, 501 for unknown methods and transfer codings, 400 for
//! malformed requests, 431 past the 16 KiB head limit. Every error carries the CORS headers.

mod util;

use util::*;

const ORIGIN: &str = "https://app.example";

fn server() -> TestServer {
    TestServer::start(&["--cors-origin", ORIGIN])
}

/// Sends `raw` on its own connection and asserts the status and the CORS headers of the answer.
fn assert_status(server: &TestServer, raw: &[u8], status: u16) -> Response {
    let resp = request_bytes(server.addr, raw);
    let shown = String::from_utf8_lossy(&raw[..raw.len().min(120)]).into_owned();
    assert_eq!(resp.status, status, "{shown:?} -> {}", resp.head);
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some(ORIGIN),
        "{shown:?}: {}",
        resp.head
    );
    assert!(
        resp.header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("origin")),
        "{shown:?}: no Vary: Origin: {}",
        resp.head
    );
    resp
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn unknown_path_is_404() {
    let server = server();
    for path in [
        "/",
        "/nope",
        "/events/",
        "/event",
        "/publish/x",
        "/healthz2",
        "/metrics.txt",
    ] {
        assert_status(&server, &get(path), 404);
    }
    assert_status(
        &server,
        b"POST /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        404,
    );
}

#[test]
fn method_not_allowed_is_405_with_allow() {
    let server = server();
    // (method, path, a method Allow must list)
    let cases = [
        ("GET", "/publish?topic=a", "POST"),
        ("POST", "/events?topic=a", "GET"),
        ("PUT", "/publish?topic=a", "POST"),
        ("DELETE", "/events?topic=a", "GET"),
        ("PATCH", "/healthz", "GET"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/metrics", "GET"),
    ];
    for (method, path, allowed) in cases {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        let resp = assert_status(&server, raw.as_bytes(), 405);
        let allow = resp
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header: {}", resp.head));
        let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        assert!(
            methods.contains(&allowed),
            "{method} {path}: Allow {allow:?} lacks {allowed}"
        );
        assert!(
            !methods.contains(&method),
            "{method} {path}: Allow {allow:?} lists the refused method"
        );
    }
}

#[test]
fn unknown_method_is_501() {
    let server = server();
    for method in ["BREW", "FOO", "PROPFIND", "get"] {
        let raw = format!("{method} /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_status(&server, raw.as_bytes(), 501);
    }
    assert_status(
        &server,
        b"BREW /events?topic=a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        501,
    );
}

#[test]
fn malformed_requests_are_400() {
    let server = server();
    let cases: &[&[u8]] = &[
        b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n",
        b"GET /healthz HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /hea\x00lthz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        b"POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
        b"POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"GET /events?topic=%zz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /publish?topic=a&event=%E2%28 HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
    ];
    for raw in cases {
        assert_status(&server, raw, 400);
    }
}

/// A GET /healthz whose head is exactly `len` bytes.
fn head_of_len(len: usize) -> Vec<u8> {
    let start = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = len - start.len() - end.len();
    format!("{start}{}{end}", "p".repeat(pad)).into_bytes()
}

#[test]
fn head_over_16_kib_is_431() {
    let server = server();
    let resp = request_bytes(server.addr, &head_of_len(16 * 1024));
    assert_eq!(
        resp.status, 200,
        "a head of exactly 16 KiB is within the limit"
    );
    assert_status(&server, &head_of_len(16 * 1024 + 1), 431);
    assert_status(&server, &head_of_len(64 * 1024), 431);
    // Many ordinary headers adding up past the limit.
    let mut raw = String::from("GET /events?topic=a HTTP/1.1\r\nHost: t\r\n");
    let mut i = 0;
    while raw.len() <= 17 * 1024 {
        raw.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(400)));
        i += 1;
    }
    raw.push_str("\r\n");
    assert_status(&server, raw.as_bytes(), 431);
    // A head that never ends is refused once it passes the limit, without waiting for its end.
    let mut endless = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Endless: ".to_vec();
    endless.resize(20 * 1024, b'e');
    assert_status(&server, &endless, 431);
}

#[test]
fn transfer_coding_other_than_chunked_is_501() {
    let server = server();
    for coding in [
        "gzip",
        "deflate",
        "compress",
        "identity",
        "gzip, chunked",
        "br",
    ] {
        let raw = format!(
            "POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n"
        );
        assert_status(&server, raw.as_bytes(), 501);
    }
}

#[test]
fn subscribe_and_publish_errors_carry_cors_headers() {
    let server = TestServer::start(&[
        "--cors-origin",
        ORIGIN,
        "--publish-token",
        "p-tok",
        "--subscribe-token",
        "s-tok",
        "--max-body",
        "8",
    ]);
    assert_status(&server, &get("/events?topic=a"), 401);
    assert_status(&server, &get("/events?topic=bad!&access_token=s-tok"), 400);
    let post = |query: &str, auth: &str, body: &str| {
        format!(
            "POST /publish?{query} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let auth = "Authorization: Bearer p-tok\r\n";
    assert_status(&server, &post("topic=a", "", "x"), 401);
    assert_status(&server, &post("topic=bad!", auth, "x"), 400);
    assert_status(&server, &post("topic=a&event=", auth, "x"), 400);
    assert_status(&server, &post("topic=a", auth, "123456789"), 413);
    let ok = assert_status(&server, &post("topic=a", auth, "fine"), 200);
    assert!(ok.text().contains("\"id\":\""), "{}", ok.text());
}
