//! Per-topic JWT authorization against the real binary (docs/SECURITY.md): every algorithm
//! family, the refusals (wrong key, tampering, `alg: none`, HS/RS confusion, time, issuer,
//! audience), each token source, pattern coverage for subscriptions and publishes, and the end of
//! a stream whose token expires, on SSE and on frames.
//!
//! Tokens are minted here with `jsonwebtoken` and the test-only keys in `tests/keys/`.

mod util;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sseloop::frame::client::handshake_status;
use sseloop::frame::{ErrorCode, FrameClient, OwnedPayload};
use util::*;

const SECRET: &str = "test-secret-of-at-least-32-bytes!!";

fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn key_pem(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for a minute granting `subscribe` and `publish`.
fn claims(subscribe: &[&str], publish: &[&str]) -> Value {
    json!({"sub": "alice", "exp": now() + 60, "sseloop": {"subscribe": subscribe, "publish": publish}})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn hs_server(extra: &[&str]) -> TestServer {
    let mut args = vec!["--jwt-secret", SECRET, "--jwt-leeway", "0"];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Status of `GET /events?{query}` with an `Authorization: Bearer` token.
fn subscribe_status(server: &TestServer, query: &str, token: &str) -> u16 {
    let auth = bearer(token);
    SseClient::open(
        server.addr,
        &format!("/events?{query}"),
        &[("Authorization", &auth)],
    )
    .status
}

fn failures(server: &TestServer, reason: &str) -> f64 {
    server.metric(&format!(
        "sseloop_auth_failures_total{{reason=\"{reason}\"}}"
    ))
}

/// Asserts a 401 with the RFC 6750 challenge and the expected description.
fn assert_401(server: &TestServer, query: &str, token: &str, description: &str) {
    let auth = bearer(token);
    let c = SseClient::open(
        server.addr,
        &format!("/events?{query}"),
        &[("Authorization", &auth)],
    );
    assert_eq!(c.status, 401, "{description}: {}", c.head);
    let challenge = c.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains("error=\"invalid_token\"")
            && challenge.contains(&format!("error_description=\"{description}\"")),
        "{challenge}"
    );
}

// ----- algorithm families and refusals ----------------------------------------------------------

#[test]
fn every_hmac_algorithm_is_accepted_with_the_secret() {
    let server = hs_server(&[]);
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, &key, &claims(&["t"], &[]));
        assert_eq!(subscribe_status(&server, "topic=t", &token), 200, "{alg:?}");
    }
    let wrong = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more!"),
        &claims(&["t"], &[]),
    );
    assert_401(&server, "topic=t", &wrong, "invalid signature");
    assert_eq!(failures(&server, "invalid_signature"), 1.0);
}

#[test]
fn rsa_key_accepts_rs_and_refuses_hs_confusion_none_and_tampering() {
    let server = TestServer::start(&["--jwt-public-key", &key_path("rsa.pub")]);
    let key = EncodingKey::from_rsa_pem(&key_pem("rsa.key")).unwrap();
    let grant = claims(&["t"], &["t"]);
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let token = sign(alg, &key, &grant);
        assert_eq!(subscribe_status(&server, "topic=t", &token), 200, "{alg:?}");
    }

    // Another RSA key: the signature does not verify.
    let other = EncodingKey::from_rsa_pem(&key_pem("rsa-other.key")).unwrap();
    let token = sign(Algorithm::RS256, &other, &grant);
    assert_401(&server, "topic=t", &token, "invalid signature");

    // The classic confusion: HS256 keyed with the server's public key bytes.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&key_pem("rsa.pub")),
        &grant,
    );
    assert_401(&server, "topic=t", &confused, "algorithm not accepted");

    // alg none, with the payload of a good token and no signature.
    let good = sign(Algorithm::RS256, &key, &grant);
    let payload = good.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT"}
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    assert_401(&server, "topic=t", &none, "algorithm not accepted");

    // A payload swapped for one granting more, under the original signature.
    let mut parts: Vec<&str> = good.split('.').collect();
    let wider = hs(&claims(&["*"], &["*"]));
    parts[1] = wider.split('.').nth(1).unwrap();
    let tampered = parts.join(".");
    assert_401(&server, "topic=t", &tampered, "invalid signature");

    assert_401(&server, "topic=t", "not-a-jwt", "malformed token");
    assert_eq!(failures(&server, "wrong_algorithm"), 2.0);
    assert_eq!(failures(&server, "invalid_signature"), 2.0);
    assert_eq!(failures(&server, "malformed"), 1.0);
}

#[test]
fn ec_and_ed25519_keys() {
    for (public, private, alg) in [
        ("p256.pub", "p256.key", Algorithm::ES256),
        ("p384.pub", "p384.key", Algorithm::ES384),
        ("ed25519.pub", "ed25519.key", Algorithm::EdDSA),
    ] {
        let server = TestServer::start(&["--jwt-public-key", &key_path(public)]);
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&key_pem(private)).unwrap(),
            _ => EncodingKey::from_ec_pem(&key_pem(private)).unwrap(),
        };
        let token = sign(alg, &key, &claims(&["t"], &[]));
        assert_eq!(subscribe_status(&server, "topic=t", &token), 200, "{alg:?}");
        // An RSA-signed token is of the wrong family for this key.
        let rsa = EncodingKey::from_rsa_pem(&key_pem("rsa.key")).unwrap();
        let token = sign(Algorithm::RS256, &rsa, &claims(&["t"], &[]));
        assert_401(&server, "topic=t", &token, "algorithm not accepted");
    }
}

#[test]
fn time_issuer_and_audience_are_checked() {
    let server = hs_server(&[
        "--jwt-issuer",
        "https://auth.example",
        "--jwt-audience",
        "sseloop",
    ]);
    let base = || {
        let mut c = claims(&["t"], &[]);
        c["iss"] = json!("https://auth.example");
        c["aud"] = json!("sseloop");
        c
    };
    assert_eq!(subscribe_status(&server, "topic=t", &hs(&base())), 200);
    let with = |k: &str, v: Value| {
        let mut c = base();
        c[k] = v;
        hs(&c)
    };
    let cases = [
        (with("exp", json!(now() - 30)), "token expired", "expired"),
        (
            with("nbf", json!(now() + 300)),
            "token not yet valid",
            "not_yet_valid",
        ),
        (
            with("iss", json!("https://evil.example")),
            "wrong issuer",
            "wrong_issuer",
        ),
        (
            with("aud", json!("someone-else")),
            "wrong audience",
            "wrong_audience",
        ),
    ];
    for (token, description, label) in cases {
        assert_401(&server, "topic=t", &token, description);
        assert_eq!(failures(&server, label), 1.0, "{label}");
    }
    let missing = SseClient::open(server.addr, "/events?topic=t", &[]);
    assert_eq!(missing.status, 401);
    assert!(missing
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("error_description=\"no token\""));
    assert_eq!(failures(&server, "missing"), 1.0);
}

#[test]
fn leeway_tolerates_recent_expiry() {
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-leeway", "60"]);
    let mut c = claims(&["t"], &[]);
    c["exp"] = json!(now() - 10);
    assert_eq!(subscribe_status(&server, "topic=t", &hs(&c)), 200);
}

// ----- token sources ------------------------------------------------------------------------------

#[test]
fn token_from_header_query_and_cookie_with_credentials_cors() {
    let origin = "https://app.example";
    let server = hs_server(&["--jwt-cookie", "sseloop_token", "--cors-origin", origin]);
    let token = hs(&claims(&["t"], &[]));

    let mut by_header = server.subscribe("topic=t", &[("Authorization", &bearer(&token))]);
    let mut by_query = server.subscribe(&format!("topic=t&access_token={token}"), &[]);
    let cookie = format!("theme=dark; sseloop_token={token}");
    let mut by_cookie = server.subscribe("topic=t", &[("Cookie", &cookie), ("Origin", origin)]);
    assert_eq!(
        by_cookie
            .header("access-control-allow-credentials")
            .as_deref(),
        Some("true")
    );
    assert_eq!(
        by_cookie.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let id = server.publish_as(&hs(&claims(&[], &["t"])), "topic=t", "hello");
    for c in [&mut by_header, &mut by_query, &mut by_cookie] {
        let e = c.next_event();
        assert_eq!((e.id.as_str(), e.data.as_str()), (id.as_str(), "hello"));
    }

    // An error answer carries the credentials header too.
    let refused = SseClient::open(server.addr, "/events?topic=t", &[("Cookie", "other=x")]);
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused
            .header("access-control-allow-credentials")
            .as_deref(),
        Some("true")
    );
    // A cookie does not authorize publishing (a cross-site form could send it).
    let publish_cookie = format!("sseloop_token={}", hs(&claims(&[], &["t"])));
    let resp = server.post("topic=t", "x", &[("Cookie", &publish_cookie)]);
    assert_eq!(resp.status, 401);
}

#[test]
fn cookie_with_wildcard_origin_or_mixed_static_tokens_refuse_to_start() {
    let (code, stderr) = run_binary(&["--jwt-secret", SECRET, "--jwt-cookie", "tok"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("specific --cors-origin"), "{stderr}");
    let (code, stderr) = run_binary(&["--jwt-secret", SECRET, "--publish-token", "p"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("exclusive"), "{stderr}");
    let (code, stderr) = run_binary(&["--jwt-secret", "short"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("32 bytes"), "{stderr}");
    let (code, stderr) = run_binary(&["--jwt-public-key", &key_path("README.md")]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("not a PEM"), "{stderr}");
}

// ----- coverage -------------------------------------------------------------------------------------

#[test]
fn subscribe_patterns_cover_topics_and_patterns() {
    let server = hs_server(&[]);
    let token = hs(&claims(&["news/*"], &[]));
    assert_eq!(subscribe_status(&server, "topic=news/a", &token), 200);
    assert_eq!(
        subscribe_status(&server, "topic=news/a&topic=news/b/c", &token),
        200
    );
    assert_eq!(subscribe_status(&server, "topic=sport", &token), 403);
    assert_eq!(
        subscribe_status(&server, "topic=news/a&topic=sport", &token),
        403
    );
    assert_eq!(subscribe_status(&server, "topic=*", &token), 403);
    assert_eq!(subscribe_status(&server, "topic=news", &token), 403);
    assert_eq!(failures(&server, "forbidden_topic"), 4.0);
    // `news/*` is covered: a pattern subscription within the token's grants.
    let auth = bearer(&token);
    let c = SseClient::open(
        server.addr,
        "/events?topic=news/*",
        &[("Authorization", &auth)],
    );
    assert_eq!(c.status, 200, "{}", c.head);
    assert_eq!(failures(&server, "forbidden_topic"), 4.0);
    // A 403 says why, and carries the RFC 6750 scope error.
    let c = SseClient::open(
        server.addr,
        "/events?topic=sport",
        &[("Authorization", &auth)],
    );
    assert!(c
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("insufficient_scope"));
}

#[test]
fn every_topic_of_a_publish_must_be_covered() {
    let server = hs_server(&[]);
    let token = hs(&claims(&[], &["chat/*", "alerts"]));
    let auth = bearer(&token);
    let headers = [("Authorization", auth.as_str())];
    let mut watcher = server.subscribe(
        "topic=chat/a&topic=alerts",
        &[("Authorization", &bearer(&hs(&claims(&["*"], &[]))))],
    );
    assert_eq!(
        server
            .post("topic=chat/a&topic=alerts", "ok", &headers)
            .status,
        200
    );
    assert_eq!(
        server
            .post("topic=chat/a&topic=news", "no", &headers)
            .status,
        403
    );
    assert_eq!(server.post("topic=news", "no", &headers).status, 403);
    assert_eq!(server.post("topic=chat/a", "no", &[]).status, 401);
    let subscribe_only = bearer(&hs(&claims(&["*"], &[])));
    let r = server.post("topic=chat/a", "no", &[("Authorization", &subscribe_only)]);
    assert_eq!(r.status, 403);
    assert_eq!(watcher.next_event().data, "ok");
    assert!(
        watcher
            .next_event_within(Duration::from_millis(300))
            .is_none(),
        "a refused publish was delivered"
    );
    // Subscribing needs a subscribe grant: a publish-only token is refused.
    assert_eq!(subscribe_status(&server, "topic=alerts", &token), 403);
}

// ----- expiry during a stream ---------------------------------------------------------------------

#[test]
fn sse_stream_gets_reauth_then_ends_when_its_token_expires() {
    let server = hs_server(&[]);
    let mut c = claims(&["t"], &[]);
    // Whole seconds: the token lives 3 to 4 s, room for the steps before it expires.
    c["exp"] = json!(now() + 4);
    let token = hs(&c);
    let mut stream = server.subscribe("topic=t", &[("Authorization", &bearer(&token))]);
    let id = server.publish_as(&hs(&claims(&[], &["t"])), "topic=t", "before");
    assert_eq!(stream.next_event().id, id);
    let reauth = stream
        .next_event_within(TIMEOUT)
        .expect("a reauth event before the close");
    assert_eq!(reauth.event, "sseloop-reauth");
    assert_eq!(reauth.data, "{\"reason\":\"token_expired\"}");
    assert_eq!(
        reauth.id, id,
        "the reauth event must not move the last event id"
    );
    assert!(stream.ended_within(TIMEOUT), "the stream did not end");
    assert!(stream.raw_text().ends_with("\n\n"), "ended mid-event");
    assert_eq!(server.metric("sseloop_streams_token_expired_total"), 1.0);
    // The same token is now refused.
    assert_401(&server, "topic=t", &token, "token expired");
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_connections_open{kind=\"sse\"}")
        == 0.0));
}

#[test]
fn a_slow_reader_still_gets_the_reauth_notice_after_what_was_queued_before_it() {
    // 12 MB queued for a stream that does not read: more than the sockets' kernel buffers hold,
    // so most of it, and the notice behind it, still waits in the server when the token expires.
    let server = hs_server(&["--max-queue-bytes", "67108864"]);
    let mut c = claims(&["t"], &[]);
    let exp = now() + 5;
    c["exp"] = json!(exp);
    let token = hs(&c);
    let mut stream = server.subscribe("topic=t", &[("Authorization", &bearer(&token))]);
    let publisher = hs(&claims(&[], &["t"]));
    let chunk = "x".repeat(1_000_000);
    for _ in 0..12 {
        server.publish_as(&publisher, "topic=t", &chunk);
    }
    assert!(now() < exp, "publishing took longer than the token lives");
    // Past the expiry, then read it all.
    std::thread::sleep(Duration::from_secs(exp + 2 - now()));
    let mut got = 0;
    let reauth = loop {
        let ev = stream
            .next_event_within(TIMEOUT)
            .unwrap_or_else(|| panic!("the stream ended after {got} events, without the notice"));
        if ev.event == "sseloop-reauth" {
            break ev;
        }
        got += 1;
    };
    assert_eq!(got, 12, "events queued before the expiry");
    assert_eq!(reauth.data, "{\"reason\":\"token_expired\"}");
    assert!(stream.ended_within(TIMEOUT), "the stream did not end");
}

#[test]
fn frame_stream_gets_goaway_token_expired() {
    let server = hs_server(&[]);
    let mut c = claims(&["t", "u/*"], &["t"]);
    // Whole seconds: the token lives 3 to 4 s, room for the round trips before it expires.
    c["exp"] = json!(now() + 4);
    let token = hs(&c);
    let mut frames = FrameClient::connect(server.addr, &["t"], None, Some(&token)).unwrap();

    // Covered PUBLISH and SUBSCRIBE work; uncovered ones are FORBIDDEN.
    frames.publish(&["t"], "", b"mine", b"p1").unwrap();
    let ack = frames.recv(Some(TIMEOUT)).unwrap();
    assert!(
        matches!(&ack, OwnedPayload::PublishAck { correlation, .. } if correlation == b"p1"),
        "{ack:?}"
    );
    let echo = frames.recv(Some(TIMEOUT)).unwrap();
    assert!(matches!(echo, OwnedPayload::Event { .. }), "{echo:?}");
    frames.publish(&["other"], "", b"no", b"p2").unwrap();
    assert_error(frames.recv(Some(TIMEOUT)).unwrap(), ErrorCode::FORBIDDEN);
    frames.subscribe(&["v"], None).unwrap();
    assert_error(frames.recv(Some(TIMEOUT)).unwrap(), ErrorCode::FORBIDDEN);
    frames.subscribe(&["u/1"], None).unwrap();
    frames.ping(b"b").unwrap();
    assert!(matches!(
        frames.recv(Some(TIMEOUT)).unwrap(),
        OwnedPayload::Pong { .. }
    ));

    let goaway = frames.recv(Some(TIMEOUT)).unwrap();
    match goaway {
        OwnedPayload::GoAway { code, .. } => assert_eq!(code, ErrorCode::TOKEN_EXPIRED),
        other => panic!("expected GOAWAY, got {other:?}"),
    }
    assert!(
        frames.recv(Some(TIMEOUT)).is_err(),
        "the connection must end after GOAWAY"
    );
    let err = FrameClient::connect(server.addr, &["t"], None, Some(&token))
        .err()
        .expect("an expired token must be refused");
    assert_eq!(handshake_status(&err), Some(401));
}

#[test]
fn frame_handshake_needs_a_covering_token() {
    let server = hs_server(&[]);
    let err = FrameClient::connect(server.addr, &["t"], None, None)
        .err()
        .unwrap();
    assert_eq!(handshake_status(&err), Some(401));
    let token = hs(&claims(&["news/*"], &[]));
    let err = FrameClient::connect(server.addr, &["sport"], None, Some(&token))
        .err()
        .unwrap();
    assert_eq!(handshake_status(&err), Some(403));
    let mut ok = FrameClient::connect(server.addr, &["news/a"], None, Some(&token)).unwrap();
    // A token without publish grants cannot publish.
    ok.publish(&["news/a"], "", b"x", b"c").unwrap();
    assert_error(ok.recv(Some(TIMEOUT)).unwrap(), ErrorCode::FORBIDDEN);
    ok.subscribe(&["*"], None).unwrap();
    assert_error(ok.recv(Some(TIMEOUT)).unwrap(), ErrorCode::FORBIDDEN);
}

fn assert_error(p: OwnedPayload, want: ErrorCode) {
    match p {
        OwnedPayload::Error { code, .. } => assert_eq!(code, want),
        other => panic!("expected ERROR {want}, got {other:?}"),
    }
}

trait PublishAs {
    fn publish_as(&self, token: &str, query: &str, body: &str) -> String;
}

impl PublishAs for TestServer {
    /// Publishes with a JWT; returns the id.
    fn publish_as(&self, token: &str, query: &str, body: &str) -> String {
        let resp = self.post(query, body, &[("Authorization", &bearer(token))]);
        assert_eq!(resp.status, 200, "publish: {}", resp.text());
        json_id(&resp.text())
    }
}

// ----- the publish hook sees the verified subject ------------------------------------------------

#[test]
fn publish_hook_receives_the_verified_subject() {
    use sseloop::hooks::Verdict;
    use sseloop::{Config, Server};
    use std::sync::mpsc;

    let (addr_tx, addr_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel::<Option<String>>();
    // The server is not Send: it is built and driven on its own thread.
    let loop_thread = std::thread::spawn(move || {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            jwt_secret: Some(SECRET.to_string()),
            ..Config::default()
        };
        let mut server = Server::bind(config).unwrap();
        server.set_publish_hook(move |attempt| {
            let _ = seen_tx.send(attempt.subject.map(str::to_string));
            Verdict::Allow
        });
        addr_tx
            .send((server.local_addr(), server.handle()))
            .unwrap();
        server.run().unwrap();
    });
    let (addr, handle) = addr_rx.recv_timeout(TIMEOUT).unwrap();
    let post = |token: &str| {
        let raw = format!(
            "POST /publish?topic=t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 1\r\n\r\nx"
        );
        request(addr, &raw).status
    };
    assert_eq!(post(&hs(&claims(&[], &["t"]))), 200);
    assert_eq!(
        seen_rx.recv_timeout(TIMEOUT).unwrap().as_deref(),
        Some("alice")
    );
    let mut anonymous = claims(&[], &["t"]);
    anonymous.as_object_mut().unwrap().remove("sub");
    assert_eq!(post(&hs(&anonymous)), 200);
    assert_eq!(seen_rx.recv_timeout(TIMEOUT).unwrap(), None);

    // Frames: the handshake token's subject.
    let token = hs(&claims(&["t"], &["t"]));
    let mut frames = FrameClient::connect(addr, &["t"], None, Some(&token)).unwrap();
    frames.publish(&["t"], "", b"y", b"c").unwrap();
    assert_eq!(
        seen_rx.recv_timeout(TIMEOUT).unwrap().as_deref(),
        Some("alice")
    );
    drop(frames);
    handle.stop();
    loop_thread.join().unwrap();
}
