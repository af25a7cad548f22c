//! The server API (`/api/v1/`, docs/API.md) against a real server over real sockets: listing and
//! paging connections, closing one, revoking and banning a subject, bans expiring, history
//! matching a resume, and who may call what; with a backplane, revocations and presence across
//! two nodes.

#[path = "util/redis.rs"]
mod redis;
mod util;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use util::*;

const SECRET: &str = "test-secret-of-at-least-32-bytes!!";
const ADMIN: &str = "admin-token-for-tests";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn user(sub: &str) -> String {
    jwt(&json!({"sub": sub, "exp": now() + 600, "sseloop": {"subscribe": ["*"], "publish": ["*"]}}))
}

/// `METHOD path` with an optional bearer token and JSON body; the response.
fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Response {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    if let Some(t) = token {
        raw.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        raw.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    request(server.addr, &raw)
}

fn json_of(resp: &Response) -> Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.text()))
}

/// Every connection the listing shows for `query`, following `next_cursor` page by page.
fn list_all(server: &TestServer, query: &str, token: Option<&str>) -> (Vec<Value>, usize) {
    let mut all = Vec::new();
    let mut cursor = 0u64;
    let mut pages = 0;
    loop {
        let resp = call(
            server,
            "GET",
            &format!("/api/v1/connections?{query}&limit=1000&cursor={cursor}"),
            token,
            "",
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        let doc = json_of(&resp);
        pages += 1;
        all.extend(doc["connections"].as_array().unwrap().iter().cloned());
        match doc["next_cursor"].as_u64() {
            Some(next) => cursor = next,
            None => return (all, pages),
        }
        assert!(pages < 100, "the walk does not end");
    }
}

#[test]
fn thousand_connections_listed_filtered_paged_and_one_closed() {
    raise_open_files(4096);
    let server = TestServer::start(&["--admin-token", ADMIN, "--max-connections", "2000"]);
    let mut clients: Vec<SseClient> = (0..1000)
        .map(|i| {
            let topic = if i % 100 == 0 { "rare" } else { "common" };
            server.subscribe(&format!("topic={topic}"), &[])
        })
        .collect();

    let (all, _) = list_all(&server, "", Some(ADMIN));
    let sse: Vec<&Value> = all.iter().filter(|c| c["kind"] == "sse").collect();
    assert_eq!(sse.len(), 1000, "every stream is listed once");
    let mut ids: Vec<u64> = sse.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "ids are unique");
    let first = sse[0];
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["age_ms"].as_u64().is_some());
    assert!(
        first["bytes_written"].as_u64().unwrap() > 0,
        "the head was written"
    );

    // Small pages walk the same set.
    let mut seen = 0;
    let mut cursor = 0;
    loop {
        let resp = call(
            &server,
            "GET",
            &format!("/api/v1/connections?topic=common&limit=100&cursor={cursor}"),
            Some(ADMIN),
            "",
        );
        let doc = json_of(&resp);
        let page = doc["connections"].as_array().unwrap();
        assert!(page.len() <= 100);
        seen += page.len();
        match doc["next_cursor"].as_u64() {
            Some(c) => cursor = c,
            None => break,
        }
    }
    assert_eq!(seen, 990);

    let (rare, _) = list_all(&server, "topic=rare", Some(ADMIN));
    assert_eq!(rare.len(), 10);
    assert!(rare.iter().all(|c| c["topics"] == json!(["rare"])));

    // Close one of them: it gets the notice, then the end of the stream.
    let victim = rare[0]["id"].as_u64().unwrap();
    let resp = call(
        &server,
        "DELETE",
        &format!("/api/v1/connections/{victim}?reason=maintenance"),
        Some(ADMIN),
        "",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(json_of(&resp), json!({"closed": 1}));
    let mut notified = 0;
    for i in (0..1000).step_by(100) {
        let c = &mut clients[i];
        if let Some(ev) = c.next_event_within(Duration::from_millis(200)) {
            assert_eq!(ev.event, "sseloop-disconnect");
            assert_eq!(ev.data, r#"{"reason":"maintenance"}"#);
            assert!(c.ended_within(TIMEOUT), "the stream ends after its notice");
            notified += 1;
        }
    }
    assert_eq!(notified, 1, "exactly the one connection was closed");
    let (rare, _) = list_all(&server, "topic=rare", Some(ADMIN));
    assert_eq!(rare.len(), 9);
    let resp = call(
        &server,
        "DELETE",
        &format!("/api/v1/connections/{victim}"),
        Some(ADMIN),
        "",
    );
    assert_eq!(resp.status, 404);
    assert_eq!(
        server.metric("sseloop_disconnects_total{cause=\"admin\"}"),
        1.0
    );
    assert!(server.metric("sseloop_admin_requests_total{op=\"connections\",code=\"200\"}") >= 3.0);

    // The others still receive events.
    server.publish("topic=common", "still here");
    assert_eq!(clients[1].next_event().data, "still here");
}

#[test]
fn admin_calls_need_the_admin_token_and_errors_are_json() {
    let server = TestServer::start(&["--admin-token", ADMIN, "--publish-token", "pub"]);
    let missing = call(&server, "GET", "/api/v1/connections", None, "");
    assert_eq!(missing.status, 401);
    assert!(missing.header("WWW-Authenticate").is_some());
    assert_eq!(json_of(&missing)["status"], 401);
    let publish_token = call(&server, "GET", "/api/v1/bans", Some("pub"), "");
    assert_eq!(
        publish_token.status, 401,
        "a publish token is not an admin token"
    );
    let bad = call(
        &server,
        "GET",
        "/api/v1/connections?limit=5000",
        Some(ADMIN),
        "",
    );
    assert_eq!(bad.status, 400);
    assert!(json_of(&bad)["error"].as_str().unwrap().contains("limit"));
    let wrong_method = call(&server, "GET", "/api/v1/disconnect", Some(ADMIN), "");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(
        wrong_method.header("Allow").as_deref(),
        Some("POST, OPTIONS")
    );
    let bad_body = call(
        &server,
        "POST",
        "/api/v1/disconnect",
        Some(ADMIN),
        "{\"who\":1}",
    );
    assert_eq!(bad_body.status, 400);
    assert_eq!(
        call(&server, "GET", "/api/v1/nothing", Some(ADMIN), "").status,
        404
    );
    // The admin token never reaches the log.
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains(ADMIN), "{log}");
}

#[test]
fn revoking_a_subject_closes_its_streams_and_a_ban_expires() {
    raise_open_files(1024);
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0"]);
    let admin = jwt(&json!({"sub": "ops", "exp": now() + 600, "sseloop": {"admin": true}}));
    let alice = user("alice");
    let bob = user("bob");
    let auth_alice = format!("Bearer {alice}");
    let auth_bob = format!("Bearer {bob}");
    let mut alices: Vec<SseClient> = (0..50)
        .map(|_| server.subscribe("topic=room", &[("Authorization", &auth_alice)]))
        .collect();
    let mut bobs: Vec<SseClient> = (0..5)
        .map(|_| server.subscribe("topic=room", &[("Authorization", &auth_bob)]))
        .collect();

    // A user token is not an admin token.
    let forbidden = call(
        &server,
        "POST",
        "/api/v1/disconnect",
        Some(&bob),
        r#"{"sub":"alice"}"#,
    );
    assert_eq!(forbidden.status, 403);

    let (listed, _) = list_all(&server, "sub=alice", Some(&admin));
    assert_eq!(listed.len(), 50);

    let resp = call(
        &server,
        "POST",
        "/api/v1/disconnect",
        Some(&admin),
        r#"{"sub":"alice","ban_secs":2,"reason":"abuse"}"#,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(json_of(&resp), json!({"closed": 50, "banned_secs": 2}));
    let banned_at = Instant::now();
    // Alice is refused while banned, streams and publishes alike, and listed (checked first:
    // the ban lasts 2 s).
    let refused = SseClient::open(
        server.addr,
        "/events?topic=room",
        &[("Authorization", &auth_alice)],
    );
    assert_eq!(refused.status, 403);
    let publish = server.post("topic=room", "x", &[("Authorization", &auth_alice)]);
    assert_eq!(publish.status, 403);
    assert!(publish.text().contains("subject banned"));
    let bans = json_of(&call(&server, "GET", "/api/v1/bans", Some(&admin), ""));
    assert_eq!(bans["bans"][0]["sub"], "alice");
    for c in &mut alices {
        let ev = c.next_event();
        assert_eq!(ev.event, "sseloop-disconnect");
        assert!(c.ended_within(TIMEOUT));
    }
    // Bob's streams are untouched.
    server.post("topic=room", "for bob", &[("Authorization", &auth_bob)]);
    for c in &mut bobs {
        assert_eq!(c.next_event().data, "for bob");
    }
    assert_eq!(
        server.metric("sseloop_disconnects_total{cause=\"ban\"}"),
        50.0
    );
    assert!(server.metric("sseloop_auth_failures_total{reason=\"banned\"}") >= 2.0);

    // After the ban, she is served again.
    std::thread::sleep(
        Duration::from_secs(2).saturating_sub(banned_at.elapsed()) + Duration::from_millis(300),
    );
    let back = SseClient::open(
        server.addr,
        "/events?topic=room",
        &[("Authorization", &auth_alice)],
    );
    assert_eq!(back.status, 200);
    let bans = json_of(&call(&server, "GET", "/api/v1/bans", Some(&admin), ""));
    assert_eq!(bans["bans"], json!([]));

    // Revoking by topic closes every stream of it.
    let resp = call(
        &server,
        "POST",
        "/api/v1/disconnect",
        Some(&admin),
        r#"{"topic":"room"}"#,
    );
    assert_eq!(json_of(&resp), json!({"closed": 6}));
}

#[test]
fn history_through_the_api_is_what_a_resume_replays() {
    let server = TestServer::start(&["--history", "4", "--subscribe-token", "sub"]);
    let ids: Vec<String> = (0..6)
        .map(|i| server.publish("topic=h&event=tick", &format!("event {i}\nline two")))
        .collect();
    // Retained: the last 4. A resume from ids[2] replays ids[3..].
    let resume_from = &ids[2];
    let mut resumed = server.subscribe(
        "topic=h",
        &[
            ("Authorization", "Bearer sub"),
            ("Last-Event-ID", resume_from),
        ],
    );
    let replayed = resumed.events(3);
    let resp = call(
        &server,
        "GET",
        &format!("/api/v1/history?topic=h&after={resume_from}"),
        Some("sub"),
        "",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let doc = json_of(&resp);
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), replayed.len());
    for (api, sse) in events.iter().zip(&replayed) {
        assert_eq!(api["id"], sse.id.as_str());
        assert_eq!(api["data"], sse.data.as_str());
        assert_eq!(api["event"], "tick");
        assert_eq!(api["topics"], json!(["h"]));
    }
    assert_eq!(doc["reset"], Value::Null);
    assert_eq!(doc["more"], false);

    // From before what history keeps: the same answer a resume's notice gives.
    let expired = json_of(&call(
        &server,
        "GET",
        &format!("/api/v1/history?topic=h&after={}", ids[0]),
        Some("sub"),
        "",
    ));
    assert_eq!(expired["reset"], "expired");
    assert_eq!(expired["events"].as_array().unwrap().len(), 4);
    let unknown = json_of(&call(
        &server,
        "GET",
        "/api/v1/history?topic=h&after=nope-1",
        Some("sub"),
        "",
    ));
    assert_eq!(unknown["reset"], "unknown");
    let page = json_of(&call(
        &server,
        "GET",
        "/api/v1/history?topic=h&limit=2",
        Some("sub"),
        "",
    ));
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["more"], true);

    // Reading history needs what subscribing needs.
    let resp = call(&server, "GET", "/api/v1/history?topic=h", None, "");
    assert_eq!(resp.status, 401);

    // Listing topics is an admin call: a subscribe token is not enough.
    let topics = call(&server, "GET", "/api/v1/topics?prefix=h", Some("sub"), "");
    assert_eq!(topics.status, 401);
}

#[test]
fn a_frame_connection_closed_by_the_api_gets_a_goaway() {
    use sseloop::frame::{ErrorCode, FrameClient, OwnedPayload};
    let server = TestServer::start(&["--admin-token", ADMIN]);
    let mut frames = FrameClient::connect(server.addr, &["f"], None, None).unwrap();
    let (listed, _) = list_all(&server, "topic=f", Some(ADMIN));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kind"], "frames");
    let id = listed[0]["id"].as_u64().unwrap();
    let resp = call(
        &server,
        "DELETE",
        &format!("/api/v1/connections/{id}?reason=moved"),
        Some(ADMIN),
        "",
    );
    assert_eq!(resp.status, 200);
    loop {
        match frames.recv(Some(TIMEOUT)).unwrap() {
            OwnedPayload::GoAway { code, message, .. } => {
                assert_eq!(code, ErrorCode::DISCONNECTED);
                assert_eq!(message, "moved");
                break;
            }
            OwnedPayload::Event { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn topics_are_listed_with_their_figures() {
    let server = TestServer::start(&["--history", "8"]);
    let _watch = server.subscribe("topic=news/a&topic=news/*", &[]);
    server.publish("topic=news/a", "1");
    server.publish("topic=news/a", "22");
    server.publish("topic=other", "3");
    let doc = json_of(&call(
        &server,
        "GET",
        "/api/v1/topics?prefix=news/",
        None,
        "",
    ));
    let topics = doc["topics"].as_array().unwrap();
    let a = topics.iter().find(|t| t["name"] == "news/a").unwrap();
    assert_eq!(a["subscribers"], 1);
    assert_eq!(a["retained_events"], 2);
    assert!(a["retained_bytes"].as_u64().unwrap() > 0);
    assert!(a["last_event_unix"].as_u64().unwrap() + 5 >= now());
    assert_eq!(a["pattern"], false);
    let p = topics.iter().find(|t| t["name"] == "news/*").unwrap();
    assert_eq!(p["pattern"], true);
    assert!(topics.iter().all(|t| t["name"] != "other"));
    assert_eq!(doc["next_cursor"], Value::Null);
}

#[test]
fn presence_counts_subjects_and_notices_follow_streams() {
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0"]);
    let watcher = jwt(&json!({"sub": "mod", "exp": now() + 600,
        "sseloop": {"subscribe": ["room"], "presence": ["room"]}}));
    let auth_watcher = format!("Bearer {watcher}");
    let mut watch = server.subscribe("topic=room&presence=1", &[("Authorization", &auth_watcher)]);
    // Without the presence grant, no notices and no subjects.
    let plain = user("carol");
    let auth_plain = format!("Bearer {plain}");
    let refused = SseClient::open(
        server.addr,
        "/events?topic=room&presence=1",
        &[("Authorization", &auth_plain)],
    );
    assert_eq!(refused.status, 403);

    let mut streams = Vec::new();
    for sub in ["alice", "bob", "alice", "dave"] {
        let auth = format!("Bearer {}", user(sub));
        streams.push(server.subscribe("topic=room", &[("Authorization", &auth)]));
        let ev = watch.next_event();
        assert_eq!(ev.event, "sseloop-join");
        let note: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(note["topic"], "room");
        assert_eq!(note["sub"], sub);
        assert!(note["conn"].as_u64().is_some());
    }
    let presence = |token: &str, query: &str| {
        json_of(&call(
            &server,
            "GET",
            &format!("/api/v1/presence?topic=room{query}"),
            Some(token),
            "",
        ))
    };
    let doc = presence(&watcher, "");
    assert_eq!(doc["subscribers"], 5, "the watcher and four streams: {doc}");
    assert_eq!(doc["subjects"], json!(["alice", "bob", "dave", "mod"]));
    let page = presence(&watcher, "&limit=2");
    assert_eq!(page["subjects"], json!(["alice", "bob"]));
    assert_eq!(page["next_cursor"], "bob");
    let page = presence(&watcher, "&limit=2&cursor=bob");
    assert_eq!(page["subjects"], json!(["dave", "mod"]));
    assert_eq!(page["next_cursor"], Value::Null);
    // A subscriber without the presence grant sees the count only.
    let counted = presence(&plain, "");
    assert_eq!(counted["subscribers"], 5);
    assert_eq!(counted["subjects"], Value::Null);

    // Bob leaves: a notice, and the figures follow.
    drop(streams.remove(1));
    let ev = watch.next_event();
    assert_eq!(ev.event, "sseloop-leave");
    assert_eq!(
        serde_json::from_str::<Value>(&ev.data).unwrap()["sub"],
        "bob"
    );
    assert!(wait_until(TIMEOUT, || presence(&watcher, "")
        ["subscribers"]
        == 4));
    assert_eq!(
        presence(&watcher, "")["subjects"],
        json!(["alice", "dave", "mod"])
    );
    // One of alice's two streams leaves: she is still present.
    drop(streams.remove(0));
    assert_eq!(watch.next_event().event, "sseloop-leave");
    assert!(wait_until(TIMEOUT, || presence(&watcher, "")
        ["subscribers"]
        == 3));
    assert_eq!(
        presence(&watcher, "")["subjects"],
        json!(["alice", "dave", "mod"])
    );
    // A stream the API closes leaves too (its subscriptions are stopped before its release).
    let admin = jwt(&json!({"sub": "root", "exp": now() + 600, "sseloop": {"admin": true}}));
    let closed = call(
        &server,
        "POST",
        "/api/v1/disconnect",
        Some(&admin),
        r#"{"sub":"dave","reason":"test"}"#,
    );
    assert_eq!(closed.status, 200, "{}", closed.text());
    let ev = watch.next_event();
    assert_eq!(ev.event, "sseloop-leave");
    assert_eq!(
        serde_json::from_str::<Value>(&ev.data).unwrap()["sub"],
        "dave"
    );
    // An unknown topic has nobody.
    let none = json_of(&call(
        &server,
        "GET",
        "/api/v1/presence?topic=empty",
        Some(&plain),
        "",
    ));
    assert_eq!(none["subscribers"], 0);
    // Reading presence needs the subscribe grant for the topic.
    let other =
        jwt(&json!({"sub": "x", "exp": now() + 600, "sseloop": {"subscribe": ["elsewhere"]}}));
    assert_eq!(
        call(
            &server,
            "GET",
            "/api/v1/presence?topic=room",
            Some(&other),
            ""
        )
        .status,
        403
    );
}

/// A node of a backplane on `redis` with JWT authorization, waited for on `/readyz`.
fn jwt_node(redis: &redis::RedisServer) -> TestServer {
    jwt_node_with(redis, &[])
}

fn jwt_node_with(redis: &redis::RedisServer, extra: &[&str]) -> TestServer {
    let url = redis.url();
    let mut args = vec![
        "--backplane",
        &url,
        "--jwt-secret",
        SECRET,
        "--jwt-leeway",
        "0",
    ];
    args.extend_from_slice(extra);
    let node = TestServer::start_with(&args, |cmd| {
        cmd.env_remove("SSELOOP_BACKPLANE");
    });
    let ready = || {
        request(
            node.addr,
            "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .status
            == 200
    };
    assert!(wait_until(TIMEOUT, ready), "node never ready");
    node
}

/// Redis and two JWT nodes on it; `None` (the test is skipped) without redis-server.
fn two_nodes() -> Option<(redis::RedisServer, TestServer, TestServer)> {
    if !redis::redis_available() {
        return None;
    }
    let redis = redis::RedisServer::start(redis::Persistence::None);
    let (a, b) = (jwt_node(&redis), jwt_node(&redis));
    Some((redis, a, b))
}

#[test]
fn a_revocation_on_one_node_closes_streams_and_bans_on_every_node() {
    let Some((_redis, a, b)) = two_nodes() else {
        return;
    };
    let admin = jwt(&json!({"sub": "ops", "exp": now() + 600, "sseloop": {"admin": true}}));
    let auth_alice = format!("Bearer {}", user("alice"));
    let auth_bob = format!("Bearer {}", user("bob"));
    let mut on_a: Vec<SseClient> = (0..2)
        .map(|_| a.subscribe("topic=room", &[("Authorization", &auth_alice)]))
        .collect();
    let mut on_b: Vec<SseClient> = (0..3)
        .map(|_| b.subscribe("topic=room", &[("Authorization", &auth_alice)]))
        .collect();
    let mut bob_b = b.subscribe("topic=lobby", &[("Authorization", &auth_bob)]);

    let resp = call(
        &a,
        "POST",
        "/api/v1/disconnect",
        Some(&admin),
        r#"{"sub":"alice","ban_secs":60,"reason":"abuse"}"#,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        json_of(&resp),
        json!({"closed": 2, "banned_secs": 60, "cluster": true}),
        "A closes its own and tells the others"
    );
    for c in on_a.iter_mut().chain(on_b.iter_mut()) {
        let ev = c.next_event();
        assert_eq!(ev.event, "sseloop-disconnect");
        assert_eq!(ev.data, r#"{"reason":"abuse"}"#);
        assert!(c.ended_within(TIMEOUT));
    }
    // B applied the ban too, and lists it.
    let refused = SseClient::open(
        b.addr,
        "/events?topic=room",
        &[("Authorization", &auth_alice)],
    );
    assert_eq!(refused.status, 403);
    let bans = json_of(&call(&b, "GET", "/api/v1/bans", Some(&admin), ""));
    assert_eq!(bans["bans"][0]["sub"], "alice");
    assert_eq!(b.metric("sseloop_disconnects_total{cause=\"ban\"}"), 3.0);

    // A revocation by topic on B reaches A's streams; bob's stream on another topic stays.
    let mut room_a = a.subscribe("topic=room", &[("Authorization", &auth_bob)]);
    let resp = call(
        &b,
        "POST",
        "/api/v1/disconnect",
        Some(&admin),
        r#"{"topic":"room"}"#,
    );
    assert_eq!(json_of(&resp), json!({"closed": 0, "cluster": true}));
    assert_eq!(room_a.next_event().event, "sseloop-disconnect");
    // The control message is not an event: nobody on the reserved topic, and bob's lobby stream
    // gets only what is published to it.
    let id = b.post("topic=lobby", "still here", &[("Authorization", &auth_bob)]);
    assert_eq!(id.status, 200);
    let ev = bob_b.next_event();
    assert_eq!(ev.data, "still here");
    let topics = json_of(&call(&a, "GET", "/api/v1/topics", Some(&admin), ""));
    assert!(
        !topics.to_string().contains("sseloop:revoke"),
        "the control topic never reaches the hub: {topics}"
    );
}

/// Streams of a test on the nodes of a backplane, and the presence they must add up to.
struct Crowd<'a> {
    nodes: [&'a TestServer; 2],
    streams: Vec<(usize, &'static str, SseClient)>,
}

impl Crowd<'_> {
    fn join(&mut self, node: usize, sub: &'static str) {
        let auth = format!("Bearer {}", user(sub));
        let stream = self.nodes[node].subscribe("topic=room", &[("Authorization", &auth)]);
        self.streams.push((node, sub, stream));
    }

    /// The first stream of `sub` on `node` leaves.
    fn leave(&mut self, node: usize, sub: &str) {
        let i = self
            .streams
            .iter()
            .position(|(n, s, _)| *n == node && *s == sub)
            .unwrap();
        drop(self.streams.remove(i));
    }

    /// Streams join (or leave) one by one, and every node is exact after each.
    fn one_by_one(&mut self, steps: &[(usize, &'static str)], join: bool, token: &str) {
        for &(node, sub) in steps {
            if join {
                self.join(node, sub);
            } else {
                self.leave(node, sub);
            }
            self.converge(token, None);
        }
    }

    /// The truth: streams on `room` and their distinct subjects.
    fn truth(&self, dead: Option<usize>) -> Value {
        let alive = self.streams.iter().filter(|(n, _, _)| Some(*n) != dead);
        let mut subs: Vec<&str> = alive.clone().map(|(_, s, _)| *s).collect();
        subs.sort_unstable();
        subs.dedup();
        json!({"subscribers": alive.count(), "subjects": subs})
    }

    /// Every live node's answer converges on the truth, then equals it exactly.
    fn converge(&self, token: &str, dead: Option<usize>) {
        let want = self.truth(dead);
        for (i, node) in self.nodes.iter().enumerate() {
            if Some(i) == dead {
                continue;
            }
            // A 503 (Redis late on a busy machine) is a "not yet", not a failure.
            let seen = || {
                let resp = call(node, "GET", "/api/v1/presence?topic=room", Some(token), "");
                (resp.status == 200).then(|| {
                    let doc = json_of(&resp);
                    json!({"subscribers": doc["subscribers"], "subjects": doc["subjects"]})
                })
            };
            let ok = wait_until(TIMEOUT, || seen().as_ref() == Some(&want));
            assert!(ok, "node {i}: {:?}, want {want}", seen());
        }
    }
}

fn presence_of(node: &TestServer, token: &str, topic: &str) -> Value {
    let resp = call(
        node,
        "GET",
        &format!("/api/v1/presence?topic={topic}"),
        Some(token),
        "",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    json_of(&resp)
}

#[test]
fn presence_is_exact_across_two_nodes_while_streams_come_and_go() {
    let Some((redis, a, b)) = two_nodes() else {
        return;
    };
    let watcher = jwt(&json!({"sub": "mod", "exp": now() + 600,
        "sseloop": {"subscribe": ["room"], "presence": ["room"]}}));
    let mut crowd = Crowd {
        nodes: [&a, &b],
        streams: Vec::new(),
    };
    crowd.converge(&watcher, None);
    let joins = [
        (0, "alice"),
        (1, "bob"),
        (1, "alice"),
        (0, "carol"),
        (1, "dave"),
    ];
    crowd.one_by_one(&joins, true, &watcher);
    // A burst on both nodes at once, then leaves: still exact once it settles.
    for sub in ["erin", "frank", "alice", "bob"] {
        crowd.join(0, sub);
        crowd.join(1, sub);
    }
    crowd.converge(&watcher, None);
    let leaves = [
        (1, "bob"),
        (0, "alice"),
        (1, "dave"),
        (0, "erin"),
        (1, "erin"),
    ];
    crowd.one_by_one(&leaves, false, &watcher);
    // The count is cluster-wide for a subscriber without the presence grant; subjects are not.
    let plain = user("zed");
    let counted = presence_of(&b, &plain, "room");
    assert_eq!(counted["subscribers"], crowd.streams.len());
    assert_eq!(counted["subjects"], Value::Null);
    let other =
        jwt(&json!({"sub": "x", "exp": now() + 600, "sseloop": {"subscribe": ["elsewhere"]}}));
    let refused = call(&a, "GET", "/api/v1/presence?topic=room", Some(&other), "");
    assert_eq!(refused.status, 403);
    // Redis loses every part (FLUSHALL): each node finds its part gone at its next refresh
    // and writes it again whole.
    redis.command(&["FLUSHALL"]);
    crowd.converge(&watcher, None);
    // Every stream leaves: nothing is left, in Redis either.
    while let Some((node, sub, _)) = crowd.streams.first().map(|(n, s, _)| (*n, *s, ())) {
        crowd.leave(node, sub);
    }
    crowd.converge(&watcher, None);
}

#[test]
fn a_node_killed_with_sigkill_leaves_no_presence_after_its_ttl() {
    if !redis::redis_available() {
        return;
    }
    let redis = redis::RedisServer::start(redis::Persistence::None);
    let a = jwt_node(&redis);
    // Refreshed every third of the TTL: B's part outlives B by 2.7 to 4 s.
    let b = jwt_node_with(&redis, &["--backplane-presence-ttl-secs", "4"]);
    let admin = jwt(&json!({"sub": "ops", "exp": now() + 600, "sseloop": {"admin": true}}));
    let mut crowd = Crowd {
        nodes: [&a, &b],
        streams: Vec::new(),
    };
    for (node, sub) in [(0, "alice"), (1, "bob"), (1, "carol"), (1, "alice")] {
        crowd.join(node, sub);
    }
    crowd.converge(&admin, None);
    // B dies without a word: its part stays until its TTL passes, then A counts its own.
    b.signal(libc::SIGKILL);
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        presence_of(&a, &admin, "room")["subscribers"],
        4,
        "B's part outlives B until its TTL"
    );
    crowd.converge(&admin, Some(1));
    assert!(killed.elapsed() < Duration::from_secs(8));
    assert_eq!(
        presence_of(&a, &admin, "room")["subjects"],
        json!(["alice"])
    );
    drop(crowd);
    drop(b);
}

#[test]
fn presence_with_redis_silent_or_gone_is_503_backplane_unavailable() {
    if !redis::redis_available() {
        return;
    }
    let mut redis = redis::RedisServer::start(redis::Persistence::None);
    // The call waits up to 3 s: room to tell a free loop (the probe) from a held one.
    let node = jwt_node_with(&redis, &["--backplane-timeout-ms", "3000"]);
    let admin = jwt(&json!({"sub": "ops", "exp": now() + 600, "sseloop": {"admin": true}}));
    let _alice = node.subscribe(
        "topic=room",
        &[("Authorization", &format!("Bearer {}", user("alice")))],
    );
    assert_eq!(presence_of(&node, &admin, "room")["subscribers"], 1);
    // Redis answers nothing: the call waits at most the backplane timeout, then 503.
    redis.pause();
    let asked = Instant::now();
    let resp = std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            call(
                &node,
                "GET",
                "/api/v1/presence?topic=room",
                Some(&admin),
                "",
            )
        });
        // The loop is not held meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        let probe = Instant::now();
        let health = request(
            node.addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(health.status, 200);
        assert!(probe.elapsed() < Duration::from_millis(1500));
        waiting.join().unwrap()
    });
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(json_of(&resp)["error"], "backplane unavailable");
    assert!(asked.elapsed() < Duration::from_secs(5));
    // Presence works again once Redis does; with Redis gone, 503 again.
    let status = || {
        call(
            &node,
            "GET",
            "/api/v1/presence?topic=room",
            Some(&admin),
            "",
        )
        .status
    };
    redis.resume();
    assert!(wait_until(TIMEOUT, || status() == 200));
    redis.stop();
    assert!(wait_until(TIMEOUT, || status() == 503));
    assert!(node.metric("sseloop_presence_writes_total") >= 1.0);
}

#[test]
fn the_hosts_synchronous_presence_call_waits_for_redis() {
    let Some((redis, a, _b)) = two_nodes() else {
        return;
    };
    let _alice = a.subscribe(
        "topic=room",
        &[("Authorization", &format!("Bearer {}", user("alice")))],
    );
    // An embedded server on the same Redis, driven by this thread: `sseloop_api`'s form.
    let url = sseloop::backplane::RedisUrl::parse(&redis.url()).unwrap();
    let config = sseloop::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        backplane: Some(url),
        ..sseloop::Config::default()
    };
    let mut host = sseloop::Server::bind(config).unwrap();
    let ask = |host: &mut sseloop::Server| {
        host.poll_once(Some(Duration::from_millis(10))).unwrap();
        host.api_request("GET", "/api/v1/presence?topic=room", b"")
    };
    assert!(wait_until(TIMEOUT, || ask(&mut host).0 == 200));
    assert!(wait_until(TIMEOUT, || {
        let (_, body) = ask(&mut host);
        serde_json::from_str::<Value>(&body).unwrap()["subjects"] == json!(["alice"])
    }));
    let (status, body) = ask(&mut host);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["subscribers"],
        1
    );
}

/// Events of a history answer as (id, topics, data).
fn history_of(
    node: &TestServer,
    token: &str,
    query: &str,
) -> (Vec<(String, Value, String)>, Value) {
    let resp = call(
        node,
        "GET",
        &format!("/api/v1/history?{query}"),
        Some(token),
        "",
    );
    assert_eq!(resp.status, 200, "{query}: {}", resp.text());
    let doc = json_of(&resp);
    let events = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let data = e["data"].as_str().unwrap().to_owned();
            (
                e["id"].as_str().unwrap().to_owned(),
                e["topics"].clone(),
                data,
            )
        })
        .collect();
    (events, doc)
}

#[test]
fn history_older_than_a_nodes_cache_comes_from_redis_as_a_resume_gets_it() {
    if !redis::redis_available() {
        return;
    }
    let mut redis = redis::RedisServer::start(redis::Persistence::None);
    let a = jwt_node_with(&redis, &["--history", "4"]);
    let b = jwt_node_with(&redis, &["--history", "4"]);
    let admin = jwt(&json!({"sub": "ops", "exp": now() + 600, "sseloop": {"admin": true}}));
    let auth = format!("Bearer {}", user("alice"));
    let topics = ["news/a", "news/b", "news/a", "other"];
    let mut sent: Vec<(String, &str, String)> = Vec::new();
    for i in 0..14 {
        let topic = topics[i % topics.len()];
        let data = format!("event {i}");
        if i == 3 {
            // A revocation goes through the shared log too: no topic's history, not even `*`'s.
            let resp = call(
                &a,
                "POST",
                "/api/v1/disconnect",
                Some(&admin),
                r#"{"sub":"nobody"}"#,
            );
            assert_eq!(resp.status, 200, "{}", resp.text());
        }
        let resp = a.post(
            &format!("topic={topic}"),
            &data,
            &[("Authorization", &auth)],
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        sent.push((json_id(&resp.text()), topic, data));
    }
    let (last, last_topic, _) = sent.last().unwrap().clone();
    assert!(wait_until(TIMEOUT, || {
        let query = format!("topic={last_topic}");
        history_of(&b, &admin, &query).0.last().map(|e| &e.0) == Some(&last)
    }));
    let from = sent[1].0.clone();
    for name in ["news/a", "news/*", "*"] {
        let matches = |t: &str| match name.strip_suffix('*') {
            Some(prefix) => t.starts_with(prefix),
            None => t == name,
        };
        let want: Vec<&(String, &str, String)> =
            sent[2..].iter().filter(|e| matches(e.1)).collect();
        // Asked first, while nothing on B subscribes to the pattern (it has no channel there).
        let (events, doc) = history_of(&b, &admin, &format!("topic={name}&after={from}"));
        // What a stream resuming from the same id on node B gets (from Redis, then its cache).
        let mut resumed = b.subscribe(
            &format!("topic={name}"),
            &[("Authorization", &auth), ("Last-Event-ID", &from)],
        );
        let replayed = resumed.events(want.len());
        assert_eq!(doc["reset"], Value::Null, "{name}: {doc}");
        assert_eq!(doc["more"], false, "{name}");
        assert_eq!(events.len(), want.len(), "{name}: {doc}");
        for ((api, sse), w) in events.iter().zip(&replayed).zip(&want) {
            assert_eq!((&api.0, &api.2), (&sse.id, &sse.data), "{name}");
            assert_eq!((&api.0, &api.2), (&w.0, &w.2), "{name}");
            assert_eq!(api.1, json!([w.1]), "{name}");
        }
        // Nothing else came on the stream (the revocation above all).
        assert!(resumed
            .next_event_within(Duration::from_millis(200))
            .is_none());
        // A page that ends among the events Redis sent.
        let (page, doc) = history_of(&b, &admin, &format!("topic={name}&after={from}&limit=2"));
        assert_eq!(doc["more"], true, "{name}");
        assert_eq!(page, events[..2].to_vec(), "{name}");
    }
    assert!(b.metric("sseloop_admin_requests_total{op=\"history\",code=\"200\"}") >= 7.0);
    // Without Redis, such a call cannot be answered (what the cache holds still can).
    redis.stop();
    let resp = call(
        &b,
        "GET",
        &format!("/api/v1/history?topic=news/a&after={from}"),
        Some(&admin),
        "",
    );
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(json_of(&resp)["error"], "backplane unavailable");
    assert_eq!(history_of(&b, &admin, "topic=news/a").0.len(), 4);
}
