//! Access control and operations at the edges, against the real binary: who may read `/stats`
//! in each authorization mode (the JWT admin claim), what the configuration panel shows and
//! never shows (secrets), the CORS preflight for publishers that retry with `Idempotency-Key`,
//! and the probes answered at `--max-connections`. The browser side of CORS and of the admin
//! claim is in tests/console.rs (`browser_*`).

mod util;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use util::*;

const SECRET: &str = "jwt-secret-of-at-least-32-bytes-xyz";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    request(server.addr, &raw)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn stats_under_jwt_need_a_token_with_the_admin_claim() {
    let server = TestServer::start(&["--ui", "--jwt-secret", SECRET, "--jwt-leeway", "0"]);
    publish_authorized(&server, "topic=private/alice", "x");

    let none = get(&server, "/stats", &[]);
    assert_eq!(none.status, 401, "{}", none.text());
    assert!(none
        .header("WWW-Authenticate")
        .is_some_and(|c| c.contains("error=\"invalid_token\"")));
    assert_eq!(
        none.text(),
        "{\"error\":\"missing or invalid bearer token\",\"status\":401}\n"
    );
    assert!(!none.text().contains("private/alice"));

    let reader = hs(&json!({"exp": now() + 60, "sseloop": {"subscribe": ["*"]}}));
    let refused = get(&server, "/stats", &[("Authorization", &bearer(&reader))]);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.header("WWW-Authenticate").is_some_and(|c| {
        c.contains("error=\"insufficient_scope\"")
            && c.contains("error_description=\"token does not grant admin\"")
    }));
    assert!(refused
        .text()
        .starts_with("{\"error\":\"token does not grant admin"));
    assert!(!refused.text().contains("private/alice"));

    let forged = hs(&json!({"exp": now() + 60, "sseloop": {"admin": true}}));
    let tampered = format!("{}x", &forged[..forged.len() - 1]);
    let bad = get(&server, "/stats", &[("Authorization", &bearer(&tampered))]);
    assert_eq!(bad.status, 401);

    let expired = hs(&json!({"exp": now() - 5, "sseloop": {"admin": true}}));
    let old = get(&server, "/stats", &[("Authorization", &bearer(&expired))]);
    assert_eq!(old.status, 401);

    // Only the header: neither the query parameter nor a cookie opens the figures.
    let admin = hs(&json!({"exp": now() + 60, "sseloop": {"admin": true}}));
    assert_eq!(
        get(&server, &format!("/stats?access_token={admin}"), &[]).status,
        401
    );
    let ok = get(&server, "/stats", &[("Authorization", &bearer(&admin))]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.text().contains("\"name\":\"private/alice\""));
    assert!(ok.text().contains("\"auth\":\"JWT (HMAC)\""));

    // The admin claim grants the figures, not the topics.
    let status = SseClient::open(
        server.addr,
        "/events?topic=private/alice",
        &[("Authorization", &bearer(&admin))],
    )
    .status;
    assert_eq!(status, 403);

    assert_eq!(
        server.metric("sseloop_auth_failures_total{reason=\"not_admin\"}"),
        1.0
    );
    assert_eq!(
        server.metric("sseloop_auth_failures_total{reason=\"missing\"}"),
        2.0
    );
}

/// Publishes with a JWT that may publish everywhere.
fn publish_authorized(server: &TestServer, query: &str, body: &str) {
    let token = hs(&json!({"exp": now() + 60, "sseloop": {"publish": ["*"]}}));
    let resp = server.post(query, body, &[("Authorization", &bearer(&token))]);
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn stats_with_only_a_publish_token_need_it() {
    let server = TestServer::start(&["--ui", "--publish-token", "pub-secret"]);
    server.post(
        "topic=orders",
        "x",
        &[("Authorization", "Bearer pub-secret")],
    );
    let none = get(&server, "/stats", &[]);
    assert_eq!(none.status, 401, "{}", none.text());
    assert!(!none.text().contains("orders"));
    let wrong = get(&server, "/stats", &[("Authorization", "Bearer nope")]);
    assert_eq!(wrong.status, 401);
    let ok = get(&server, "/stats", &[("Authorization", "Bearer pub-secret")]);
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("\"name\":\"orders\""));
    assert!(ok.text().contains("\"auth\":\"static tokens\""));

    // With both tokens, either opens them (as the subscribe token always did).
    let both = TestServer::start(&[
        "--ui",
        "--publish-token",
        "pub-secret",
        "--subscribe-token",
        "sub-secret",
    ]);
    for token in ["Bearer pub-secret", "Bearer sub-secret"] {
        assert_eq!(
            get(&both, "/stats", &[("Authorization", token)]).status,
            200
        );
    }
    assert_eq!(get(&both, "/stats", &[]).status, 401);
}

/// Every byte the console serves: its files and `/stats`.
fn everything_served(server: &TestServer, auth: &str) -> String {
    let mut all = String::new();
    for path in [
        "/ui/",
        "/ui/app.js",
        "/ui/server.js",
        "/ui/streams.js",
        "/ui/sse.js",
        "/ui/chart.js",
        "/ui/console.css",
        "/ui/favicon.svg",
        "/stats?topics=100",
    ] {
        let resp = get(server, path, &[("Authorization", auth)]);
        assert_eq!(resp.status, 200, "{path}");
        all.push_str(&resp.head);
        all.push_str(&resp.text());
    }
    all
}

#[test]
fn config_panel_shows_modes_and_settings_but_never_a_secret() {
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://ops:redis-pass-1234@127.0.0.1:{redis_port}/3");
    let statics = TestServer::start(&[
        "--ui",
        "--publish-token",
        "pub-token-5678",
        "--subscribe-token",
        "sub-token-9012",
        "--backplane",
        &url,
        "--backplane-prefix",
        "app1:",
        "--idempotency-window-secs",
        "42",
        "--reuse-port",
    ]);
    let all = everything_served(&statics, "Bearer sub-token-9012");
    for secret in ["pub-token-5678", "sub-token-9012", "redis-pass-1234"] {
        assert!(!all.contains(secret), "{secret} served");
    }
    let stats = get(
        &statics,
        "/stats",
        &[("Authorization", "Bearer sub-token-9012")],
    )
    .text();
    for part in [
        "\"auth\":\"static tokens\"",
        "\"publish_token\":\"<set>\"",
        "\"subscribe_token\":\"<set>\"",
        &format!("\"backplane\":\"redis://ops:***@127.0.0.1:{redis_port}/3\""),
        "\"backplane_prefix\":\"app1:\"",
        "\"idempotency_window_secs\":42",
        "\"reuse_port\":true",
    ] {
        assert!(stats.contains(part), "missing {part} in {stats}");
    }

    let jwt = TestServer::start(&["--ui", "--jwt-secret", SECRET]);
    let admin = hs(&json!({"exp": now() + 60, "sseloop": {"admin": true}}));
    let all = everything_served(&jwt, &bearer(&admin));
    assert!(!all.contains(SECRET), "the JWT secret served");
    assert!(all.contains("\"auth\":\"JWT (HMAC)\""));
    assert!(all.contains("\"backplane\":null"));
    assert!(all.contains("\"reuse_port\":false"));

    let keys = format!("{}/tests/keys", env!("CARGO_MANIFEST_DIR"));
    let pem = |name: &str| std::fs::read(format!("{keys}/{name}")).unwrap();
    let families = [
        (
            "rsa",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&pem("rsa.key")).unwrap(),
            "JWT (RSA)",
        ),
        (
            "p256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&pem("p256.key")).unwrap(),
            "JWT (EC)",
        ),
        (
            "ed25519",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&pem("ed25519.key")).unwrap(),
            "JWT (EdDSA)",
        ),
    ];
    for (name, alg, key, mode) in families {
        let public = format!("{keys}/{name}.pub");
        let server = TestServer::start(&["--ui", "--jwt-public-key", &public]);
        let claims = json!({"exp": now() + 60, "sseloop": {"admin": true}});
        let admin = encode(&Header::new(alg), &claims, &key).unwrap();
        let stats = get(&server, "/stats", &[("Authorization", &bearer(&admin))]);
        assert_eq!(stats.status, 200, "{mode}: {}", stats.text());
        assert!(
            stats.text().contains(&format!("\"auth\":\"{mode}\"")),
            "{mode}: {}",
            stats.text()
        );
    }

    let open = TestServer::start(&["--ui"]);
    assert!(get(&open, "/stats", &[])
        .text()
        .contains("\"auth\":\"none\""));
}

#[test]
fn preflight_allows_idempotency_key_and_errors_expose_retry_after() {
    let server = TestServer::start(&["--cors-origin", "https://app.example"]);
    let resp = request(
        server.addr,
        "OPTIONS /publish HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type, idempotency-key, authorization\r\n\
         Connection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 204);
    let allowed = resp
        .header("Access-Control-Allow-Headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in [
        "idempotency-key",
        "authorization",
        "content-type",
        "last-event-id",
    ] {
        assert!(allowed.split(", ").any(|a| a == h), "{h} not in {allowed}");
    }
    let err = server.post("topic=", "x", &[]);
    assert_eq!(err.status, 400);
    let exposed = err
        .header("Access-Control-Expose-Headers")
        .unwrap_or_default();
    assert!(exposed.contains("Retry-After") && exposed.contains("WWW-Authenticate"));
}

#[test]
fn probes_are_answered_at_the_connection_limit_and_the_limit_is_logged() {
    let server = TestServer::start(&["--max-connections", "3"]);
    let _streams: Vec<SseClient> = (0..3)
        .map(|_| server.subscribe("topic=full", &[]))
        .collect();
    assert_eq!(server.metric("sseloop_connections_open{kind=\"sse\"}"), 3.0);

    let health = get(&server, "/healthz", &[]);
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let ready = get(&server, "/readyz", &[]);
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    let metrics = get(&server, "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .text()
        .contains("sseloop_connections_open{kind=\"sse\"} 3\n"));
    // A probe's connection closes after its answer (it does not hold a slot).
    assert_eq!(health.header("Connection").as_deref(), Some("close"));

    let events = get(&server, "/events?topic=full", &[]);
    assert_eq!(events.status, 503, "{}", events.text());
    assert_eq!(events.header("Retry-After").as_deref(), Some("1"));
    assert_eq!(
        events.text(),
        "{\"error\":\"server at connection limit\",\"status\":503}\n"
    );
    let publish = server.post("topic=full", "x", &[]);
    assert_eq!(publish.status, 503);

    // A connection over the limit that sends nothing is let go within a second or so.
    let mut silent = ResponseReader::new(connect(server.addr));
    assert!(silent.closed_within(Duration::from_secs(5)));
    // Keep-alive is not granted over the limit: one answer, then the close.
    let mut keep = ResponseReader::new(connect(server.addr));
    keep.stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    assert_eq!(keep.next().map(|r| r.status), Some(200));
    assert!(keep.closed_within(TIMEOUT));

    // Still full: the streams were never disturbed.
    assert_eq!(server.metric("sseloop_connections_open{kind=\"sse\"}"), 3.0);
    assert!(server.metric("sseloop_closes_total{cause=\"over_capacity\"}") >= 3.0);
    let log = server.log.lock().unwrap().clone();
    let lines: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("connection limit reached"))
        .collect();
    assert_eq!(lines.len(), 1, "rate-limited to one line: {lines:?}");
    assert!(lines[0].contains("--max-connections 3"), "{}", lines[0]);
}
