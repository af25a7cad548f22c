//! Frame mode (docs/PROTOCOL.md) against the real binary over loopback sockets: the handshake and
//! its refusals, events crossing between SSE and frames with the same ids, resume and reset
//! notices, frames pipelined behind the upgrade request, slow consumers, heartbeats, GOAWAY on
//! shutdown, and every error the server answers with.
//!
//! Frames are read with the crate's blocking [`FrameClient`] (it tolerates any split) or, where
//! the handshake itself has to be shaped by hand, with [`RawFrames`]. Replies are compared whole,
//! except the free-text `message` of ERROR and GOAWAY, which clients must not parse.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sseloop::frame::client::handshake_status;
use sseloop::frame::{
    encode_frame, encode_header, encode_ping_frame, encode_publish_frame, encode_subscribe_frame,
    encode_unsubscribe_frame, parse, ErrorCode, FrameClient, FrameDecoder, OwnedPayload,
    HEADER_LEN,
};
use util::*;

// Kind bytes, as on the wire (section 4).
const EVENT: u8 = 0x01;
const PUBLISH: u8 = 0x02;
const PUBLISH_ACK: u8 = 0x03;
const SUBSCRIBE: u8 = 0x04;
const PING: u8 = 0x06;
const ERROR: u8 = 0x08;
const GOAWAY: u8 = 0x09;

const FRAMES_OPEN: &str = "sseloop_connections_open{kind=\"frames\"}";

// ----- helpers -----------------------------------------------------------------------------------

/// A frame connection subscribed to `topics`, past its `101`.
fn open(server: &TestServer, topics: &[&str]) -> FrameClient {
    FrameClient::connect(server.addr, topics, None, None)
        .unwrap_or_else(|e| panic!("frame handshake for {topics:?}: {e}"))
}

/// The next frame (panics after [`TIMEOUT`] or if the connection ends).
fn next(c: &mut FrameClient) -> OwnedPayload {
    c.recv(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("expected a frame: {e}"))
}

/// Sends PING `tag` and returns every frame that arrived before its PONG (section 6.1: when the
/// PONG arrives, every earlier frame has been handled and answered).
fn barrier(c: &mut FrameClient, tag: &[u8]) -> Vec<OwnedPayload> {
    c.ping(tag).expect("send PING");
    let mut before = Vec::new();
    loop {
        match next(c) {
            OwnedPayload::Pong { opaque } if opaque == tag => return before,
            other => before.push(other),
        }
    }
}

/// Reads until the server ends the connection (EOF or reset) and returns the frames that came
/// first. Panics if the connection is still open after [`TIMEOUT`].
fn read_to_close(c: &mut FrameClient) -> Vec<OwnedPayload> {
    let deadline = Instant::now() + TIMEOUT;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv(Some(left.max(Duration::from_millis(1)))) {
            Ok(p) => frames.push(p),
            Err(e) if is_closed(&e) => return frames,
            Err(e) => panic!("the server did not close the connection ({e}); frames: {frames:?}"),
        }
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn event(id: &str, topics: &[&str], event_type: &str, data: &str) -> OwnedPayload {
    OwnedPayload::Event {
        id: id.to_string(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        event_type: event_type.to_string(),
        data: data.as_bytes().to_vec(),
    }
}

/// The id of a PUBLISH_ACK carrying `correlation`; panics on anything else.
fn ack_id(p: OwnedPayload, correlation: &[u8]) -> String {
    match p {
        OwnedPayload::PublishAck {
            correlation: got,
            id,
        } if got == correlation => {
            assert!(!id.is_empty(), "PUBLISH_ACK without an id");
            id
        }
        other => panic!(
            "expected PUBLISH_ACK {:?}, got {other:?}",
            String::from_utf8_lossy(correlation)
        ),
    }
}

/// Asserts an ERROR with this code, `about` and correlation (the message is free text).
#[track_caller]
fn assert_error(p: &OwnedPayload, code: ErrorCode, about: u8, correlation: &[u8]) {
    match p {
        OwnedPayload::Error {
            code: got_code,
            about: got_about,
            correlation: got_corr,
            ..
        } => assert_eq!(
            (*got_code, *got_about, got_corr.as_slice()),
            (code, about, correlation),
            "ERROR fields (code, about, correlation) of {p:?}"
        ),
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

/// A frame whose payload is `payload`, whatever it contains.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, &[payload]).unwrap();
    out
}

fn publish_frame(correlation: &[u8], topics: &[&str], event_type: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_publish_frame(&mut out, correlation, topics, event_type, data).unwrap();
    out
}

fn ping_frame(opaque: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_ping_frame(&mut out, opaque).unwrap();
    out
}

/// PUBLISH payload bytes built by hand, for fields the encoder would not produce (non-UTF-8
/// topics or event types): correlation, topics, event type, data.
fn raw_publish_payload(
    correlation: &[u8],
    topics: &[&[u8]],
    event_type: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let mut p = vec![PUBLISH, correlation.len() as u8];
    p.extend_from_slice(correlation);
    p.push(topics.len() as u8);
    for t in topics {
        p.push(t.len() as u8);
        p.extend_from_slice(t);
    }
    p.push(event_type.len() as u8);
    p.extend_from_slice(event_type);
    p.extend_from_slice(&(data.len() as u32).to_be_bytes());
    p.extend_from_slice(data);
    p
}

/// A header's value in a raw response head.
fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// A frame connection whose handshake is written by hand, in one `write` together with any bytes
/// that follow it; frames are decoded from whatever arrives after the response head.
struct RawFrames {
    stream: TcpStream,
    status: u16,
    head: String,
    buf: Vec<u8>,
    decoder: FrameDecoder,
}

impl RawFrames {
    /// `GET target` with the upgrade headers plus `headers`, then `after_head`, in one write.
    fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)], after_head: &[u8]) -> Self {
        let mut stream = connect(addr);
        let mut raw =
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(after_head);
        stream.write_all(&bytes).expect("write handshake");
        let mut buf = Vec::new();
        let head_len = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16384];
            let n = stream.read(&mut chunk).expect("read response head");
            assert!(n > 0, "closed before the response head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        buf.drain(..head_len);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        RawFrames {
            stream,
            status,
            head,
            buf,
            decoder: FrameDecoder::new(16 << 20),
        }
    }

    /// The next frame (the socket's read timeout is [`TIMEOUT`]).
    fn next(&mut self) -> OwnedPayload {
        loop {
            match self.decoder.decode(&self.buf) {
                Ok(Some(f)) => {
                    let payload = parse(&self.buf[f.payload_range()])
                        .map(OwnedPayload::from)
                        .expect("server frame parses");
                    self.buf.drain(..f.frame_len());
                    return payload;
                }
                Ok(None) => {}
                Err(e) => panic!("broken frame stream from the server: {e}"),
            }
            let mut chunk = [0u8; 16384];
            let n = self
                .stream
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("expected a frame: {e}"));
            assert!(n > 0, "server closed the connection; expected a frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

// ----- 1. events across SSE and frames -----------------------------------------------------------

#[test]
fn sse_publish_reaches_a_frame_subscriber_with_the_same_id_type_and_data() {
    let server = TestServer::start(&[]);
    let mut frames = open(&server, &["news"]);
    let mut sse = server.subscribe("topic=news", &[]);

    let id = server.publish("topic=news&event=score", "1-0");
    assert_eq!(next(&mut frames), event(&id, &["news"], "score", "1-0"));
    assert_eq!(
        sse.next_event(),
        SseEvent {
            id: id.clone(),
            event: "score".into(),
            data: "1-0".into()
        }
    );

    // No event type, and data with a line break and non-ASCII text: the frame carries the exact
    // bytes, SSE the same text in two data lines.
    let body = "line one\nligne deux \u{2014} \u{2713}";
    let id2 = server.publish("topic=news", body);
    assert_ne!(id2, id);
    assert_eq!(next(&mut frames), event(&id2, &["news"], "", body));
    assert_eq!(
        sse.next_event(),
        SseEvent {
            id: id2,
            event: "message".into(),
            data: body.into()
        }
    );
}

#[test]
fn frame_publish_reaches_sse_and_frame_subscribers_with_the_acked_id() {
    let server = TestServer::start(&[]);
    let mut sse = server.subscribe("topic=sport%2Feu", &[]);
    let mut sub = open(&server, &["sport/eu"]);
    let mut publisher = open(&server, &["elsewhere"]);

    publisher
        .publish(&["sport/eu"], "score", b"1-0", b"c7")
        .unwrap();
    let id = ack_id(next(&mut publisher), b"c7");
    assert_eq!(
        sse.next_event(),
        SseEvent {
            id: id.clone(),
            event: "score".into(),
            data: "1-0".into()
        }
    );
    assert_eq!(next(&mut sub), event(&id, &["sport/eu"], "score", "1-0"));

    // No event type and no correlation id: SSE sees the default type.
    publisher.publish(&["sport/eu"], "", b"hello", b"").unwrap();
    let id2 = ack_id(next(&mut publisher), b"");
    assert_ne!(id2, id);
    assert_eq!(
        sse.next_event(),
        SseEvent {
            id: id2.clone(),
            event: "message".into(),
            data: "hello".into()
        }
    );
    assert_eq!(next(&mut sub), event(&id2, &["sport/eu"], "", "hello"));

    // A publisher subscribed to the topic also gets the EVENT, in either order with its ACK.
    publisher.subscribe(&["sport/eu"], None).unwrap();
    assert_eq!(barrier(&mut publisher, b"sub"), vec![]);
    publisher
        .publish(&["sport/eu"], "mine", b"own", b"c9")
        .unwrap();
    let (a, b) = (next(&mut publisher), next(&mut publisher));
    let (ack, ev) = match (&a, &b) {
        (OwnedPayload::PublishAck { .. }, _) => (a, b),
        _ => (b, a),
    };
    let id3 = ack_id(ack, b"c9");
    assert_eq!(ev, event(&id3, &["sport/eu"], "mine", "own"));
    assert_eq!(sse.next_event().id, id3);
}

#[test]
fn multi_topic_publish_reaches_a_frame_client_once_with_every_topic() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["a", "b"]);

    let id = server.publish("topic=c&topic=a&topic=b", "three");
    assert_eq!(next(&mut c), event(&id, &["c", "a", "b"], "", "three"));
    assert_eq!(barrier(&mut c, b"1"), vec![], "delivered more than once");

    // The same through a PUBLISH frame from another connection.
    let mut p = open(&server, &["p"]);
    p.publish(&["b", "x", "a"], "multi", b"again", b"m")
        .unwrap();
    let id2 = ack_id(next(&mut p), b"m");
    assert_eq!(
        next(&mut c),
        event(&id2, &["b", "x", "a"], "multi", "again")
    );
    assert_eq!(barrier(&mut c, b"2"), vec![], "delivered more than once");

    // Topics added later by SUBSCRIBE do not cause duplicates either.
    c.subscribe(&["x"], None).unwrap();
    assert_eq!(barrier(&mut c, b"3"), vec![]);
    let id3 = server.publish("topic=x&topic=a&topic=b", "xab");
    assert_eq!(next(&mut c), event(&id3, &["x", "a", "b"], "", "xab"));
    assert_eq!(barrier(&mut c, b"4"), vec![], "delivered more than once");
}

// ----- 2. resume ---------------------------------------------------------------------------------

#[test]
fn last_event_id_header_replays_retained_events_in_order_then_live() {
    let server = TestServer::start(&[]);
    let ids: Vec<String> = (0..5)
        .map(|i| server.publish("topic=r", &format!("r{i}")))
        .collect();
    server.publish("topic=unrelated", "not replayed");

    let mut c = FrameClient::connect(server.addr, &["r"], Some(&ids[1]), None).unwrap();
    for (i, id) in ids.iter().enumerate().skip(2) {
        assert_eq!(next(&mut c), event(id, &["r"], "", &format!("r{i}")));
    }
    let live = server.publish("topic=r", "live");
    assert_eq!(next(&mut c), event(&live, &["r"], "", "live"));
    assert_eq!(barrier(&mut c, b"end"), vec![]);

    // Two topics: merged in id order, an event of both replayed once, listing both.
    let a1 = server.publish("topic=a", "a1");
    let b1 = server.publish("topic=b", "b1");
    let ab = server.publish("topic=b&topic=a", "ab");
    let a2 = server.publish("topic=a", "a2");
    let mut m = FrameClient::connect(server.addr, &["a", "b"], Some(&live), None).unwrap();
    assert_eq!(next(&mut m), event(&a1, &["a"], "", "a1"));
    assert_eq!(next(&mut m), event(&b1, &["b"], "", "b1"));
    assert_eq!(next(&mut m), event(&ab, &["b", "a"], "", "ab"));
    assert_eq!(next(&mut m), event(&a2, &["a"], "", "a2"));
    assert_eq!(barrier(&mut m, b"end"), vec![]);
}

#[test]
fn last_event_id_query_parameter_resumes_and_the_header_wins() {
    let server = TestServer::start(&[]);
    let ids: Vec<String> = (0..5)
        .map(|i| server.publish("topic=q", &format!("q{i}")))
        .collect();

    let target = format!("/frames?topic=q&lastEventId={}", ids[2]);
    let mut c = RawFrames::open(server.addr, &target, &[], b"");
    assert_eq!(c.status, 101, "{}", c.head);
    assert_eq!(c.next(), event(&ids[3], &["q"], "", "q3"));
    assert_eq!(c.next(), event(&ids[4], &["q"], "", "q4"));

    let target = format!("/frames?topic=q&lastEventId={}", ids[0]);
    let mut c = RawFrames::open(server.addr, &target, &[("Last-Event-ID", &ids[3])], b"");
    assert_eq!(c.status, 101, "{}", c.head);
    assert_eq!(
        c.next(),
        event(&ids[4], &["q"], "", "q4"),
        "the header wins"
    );

    // An empty id means "no id": no replay and no reset notice, only live events.
    let mut c = RawFrames::open(
        server.addr,
        "/frames?topic=q",
        &[("Last-Event-ID", "")],
        b"",
    );
    assert_eq!(c.status, 101, "{}", c.head);
    let live = server.publish("topic=q", "live");
    assert_eq!(c.next(), event(&live, &["q"], "", "live"));
}

#[test]
fn expired_resume_sends_the_reset_notice_before_the_replay() {
    let server = TestServer::start(&["--history", "2"]);
    let ids: Vec<String> = (0..5)
        .map(|i| server.publish("topic=h", &format!("h{i}")))
        .collect();

    let mut c = FrameClient::connect(server.addr, &["h"], Some(&ids[0]), None).unwrap();
    // The notice's id is the point just before the first replayed event (ids[3]), which in this
    // run, where every event went to `h`, is ids[2].
    assert_eq!(
        next(&mut c),
        event(&ids[2], &["h"], "sseloop-reset", r#"{"reason":"expired"}"#)
    );
    assert_eq!(next(&mut c), event(&ids[3], &["h"], "", "h3"));
    assert_eq!(next(&mut c), event(&ids[4], &["h"], "", "h4"));
    let live = server.publish("topic=h", "live");
    assert_eq!(next(&mut c), event(&live, &["h"], "", "live"));
    assert_eq!(
        server.metric("sseloop_resume_resets_total{reason=\"expired\"}"),
        1.0
    );

    // The last evicted id itself is honoured in full: no notice.
    let mut exact = FrameClient::connect(server.addr, &["h"], Some(&ids[3]), None).unwrap();
    assert_eq!(next(&mut exact), event(&ids[4], &["h"], "", "h4"));
}

#[test]
fn foreign_id_sends_the_unknown_reset_notice_then_everything_retained() {
    let server = TestServer::start(&["--history", "2"]);
    let ids: Vec<String> = (0..5)
        .map(|i| server.publish("topic=h", &format!("h{i}")))
        .collect();

    let mut c = FrameClient::connect(server.addr, &["h"], Some("otherrun-3"), None).unwrap();
    assert_eq!(
        next(&mut c),
        event(&ids[2], &["h"], "sseloop-reset", r#"{"reason":"unknown"}"#)
    );
    assert_eq!(next(&mut c), event(&ids[3], &["h"], "", "h3"));
    assert_eq!(next(&mut c), event(&ids[4], &["h"], "", "h4"));
    assert_eq!(barrier(&mut c, b"end"), vec![]);

    // The notice names every topic being resumed, in request order.
    let mut two = FrameClient::connect(server.addr, &["z", "h"], Some("otherrun-3"), None).unwrap();
    assert_eq!(
        next(&mut two),
        event(
            &ids[2],
            &["z", "h"],
            "sseloop-reset",
            r#"{"reason":"unknown"}"#
        )
    );
    assert_eq!(next(&mut two), event(&ids[3], &["h"], "", "h3"));
    assert_eq!(next(&mut two), event(&ids[4], &["h"], "", "h4"));

    // The same through SUBSCRIBE.
    let mut s = open(&server, &["other"]);
    s.subscribe(&["h"], Some("nope-1")).unwrap();
    assert_eq!(
        barrier(&mut s, b"sub"),
        vec![
            event(&ids[2], &["h"], "sseloop-reset", r#"{"reason":"unknown"}"#),
            event(&ids[3], &["h"], "", "h3"),
            event(&ids[4], &["h"], "", "h4"),
        ]
    );
    assert_eq!(
        server.metric("sseloop_resume_resets_total{reason=\"unknown\"}"),
        3.0
    );
}

#[test]
fn subscribe_with_last_event_id_replays_only_the_added_topic() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["a"]);
    let start = server.publish("topic=b", "b0");
    let b1 = server.publish("topic=b", "b1");
    let ab = server.publish("topic=a&topic=b", "ab");
    let a_only = server.publish("topic=a", "a-only");
    assert_eq!(next(&mut c), event(&ab, &["a", "b"], "", "ab"));
    assert_eq!(next(&mut c), event(&a_only, &["a"], "", "a-only"));

    // `a` is already subscribed (a no-op for it); `b` is added and replayed after `start`.
    c.subscribe(&["a", "b"], Some(&start)).unwrap();
    let replayed = barrier(&mut c, b"sub");
    let want_b1 = event(&b1, &["b"], "", "b1");
    let want_ab = event(&ab, &["a", "b"], "", "ab");
    // Section 6.4 allows the replay through `b` to repeat `ab`, already received through `a`.
    assert!(
        replayed == vec![want_b1.clone()] || replayed == vec![want_b1, want_ab],
        "replay after SUBSCRIBE: {replayed:?}"
    );

    let live = server.publish("topic=b", "live");
    assert_eq!(next(&mut c), event(&live, &["b"], "", "live"));

    // SUBSCRIBE for topics the connection already has: no replay, no duplicate.
    c.subscribe(&["b"], Some(&start)).unwrap();
    assert_eq!(barrier(&mut c, b"again"), vec![]);
    let live2 = server.publish("topic=b", "live2");
    assert_eq!(next(&mut c), event(&live2, &["b"], "", "live2"));
    assert_eq!(barrier(&mut c, b"end"), vec![]);
}

// ----- 3. pipelining and splitting ---------------------------------------------------------------

#[test]
fn frames_pipelined_behind_the_upgrade_request_are_all_answered_in_order() {
    let server = TestServer::start(&[]);
    let mut sse = server.subscribe("topic=elsewhere", &[]);
    let mut after_head = publish_frame(b"c1", &["elsewhere"], "", b"one");
    after_head.extend(ping_frame(b"p1"));
    after_head.extend(publish_frame(b"c2", &["elsewhere"], "t", b"two"));
    after_head.extend(ping_frame(b"p2"));

    // The request head and all four frames leave in one write, before the 101 is read.
    let mut c = RawFrames::open(server.addr, "/frames?topic=pipe", &[], &after_head);
    assert_eq!(c.status, 101, "{}", c.head);
    let id1 = ack_id(c.next(), b"c1");
    assert_eq!(
        c.next(),
        OwnedPayload::Pong {
            opaque: b"p1".to_vec()
        }
    );
    let id2 = ack_id(c.next(), b"c2");
    assert_eq!(
        c.next(),
        OwnedPayload::Pong {
            opaque: b"p2".to_vec()
        }
    );
    assert_eq!(sse.next_event().id, id1);
    assert_eq!(sse.next_event().id, id2);
}

#[test]
fn frames_split_at_every_byte_are_reassembled() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["split"]);
    let mut bytes = publish_frame(b"s1", &["other"], "kind", b"byte by byte");
    bytes.extend(ping_frame(b"after"));
    for b in &bytes {
        c.send_raw(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    ack_id(next(&mut c), b"s1");
    assert_eq!(
        next(&mut c),
        OwnedPayload::Pong {
            opaque: b"after".to_vec()
        }
    );
}

#[test]
fn own_event_is_queued_before_later_replies_when_frames_arrive_together() {
    // Section 6.1: a PUBLISH_ACK means the event is queued for every current subscriber, the
    // publishing connection included, and everything queued before a reply is delivered before
    // it. So when PUBLISH and PING arrive in one read, the EVENT still precedes the PONG.
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["self"]);
    let mut bytes = publish_frame(b"k", &["self"], "", b"mine");
    bytes.extend(ping_frame(b"b"));
    c.send_raw(&bytes).unwrap();
    let mut before = Vec::new();
    loop {
        match next(&mut c) {
            OwnedPayload::Pong { opaque } if opaque == b"b" => break,
            other => before.push(other),
        }
    }
    let ack = before
        .iter()
        .position(|p| matches!(p, OwnedPayload::PublishAck { .. }))
        .expect("PUBLISH_ACK before the PONG");
    let id = ack_id(before.remove(ack), b"k");
    assert_eq!(
        before,
        vec![event(&id, &["self"], "", "mine")],
        "own EVENT must precede the PONG that follows the PUBLISH"
    );
}

#[test]
fn own_event_is_delivered_when_unsubscribe_follows_publish_in_the_same_read() {
    // Subscribed when it published, so the event was "queued for every current subscriber" by
    // the time of the ACK (section 6.1); a later UNSUBSCRIBE cannot take it back.
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["self"]);
    let mut bytes = publish_frame(b"k", &["self"], "", b"mine");
    let mut unsub = Vec::new();
    encode_unsubscribe_frame(&mut unsub, &["self"]).unwrap();
    bytes.extend(unsub);
    bytes.extend(ping_frame(b"b"));
    c.send_raw(&bytes).unwrap();
    let mut before = Vec::new();
    loop {
        match next(&mut c) {
            OwnedPayload::Pong { opaque } if opaque == b"b" => break,
            other => before.push(other),
        }
    }
    let ack = before
        .iter()
        .position(|p| matches!(p, OwnedPayload::PublishAck { .. }))
        .expect("PUBLISH_ACK before the PONG");
    let id = ack_id(before.remove(ack), b"k");
    assert_eq!(before, vec![event(&id, &["self"], "", "mine")]);
}

// ----- 4. slow consumers -------------------------------------------------------------------------

#[test]
fn never_reading_frame_client_is_cut_at_the_queue_cap_while_a_healthy_one_gets_everything() {
    // Loopback buffers absorb ~3 MiB for a client that never reads before the server's queue
    // grows at all, so publish well past that.
    const EVENTS: usize = 600;
    // Publish a few events per round trip, so that the healthy client's queue is written out
    // between batches (see the burst test below for what happens otherwise).
    const BATCH: usize = 4;
    // The cap must hold the largest event: --max-body + 64 KiB at least.
    let server = TestServer::start(&[
        "--max-queue-bytes",
        "128k",
        "--max-body",
        "64k",
        "--history",
        "16",
    ]);
    let body = vec![b'x'; 8 * 1024];

    let slow = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow.set_recv_buffer_size(4096).unwrap();
    slow.connect(&server.addr.into()).unwrap();
    let mut slow: TcpStream = slow.into();
    slow.write_all(
        b"GET /frames?topic=load HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n\r\n",
    )
    .unwrap();

    let mut healthy = open(&server, &["load"]);
    let progress = Progress::new(1);
    let reader = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            (0..EVENTS)
                .map(|_| match next(&mut healthy) {
                    OwnedPayload::Event { id, data, .. } => {
                        progress.received(0);
                        (id, data.len())
                    }
                    other => panic!("healthy client got {other:?}"),
                })
                .collect::<Vec<_>>()
        })
    };
    assert!(wait_until(TIMEOUT, || server.metric(FRAMES_OPEN) == 2.0));

    let mut publisher = open(&server, &["publisher"]);
    let mut acks = Vec::with_capacity(EVENTS);
    for batch in 0..EVENTS / BATCH {
        // The healthy reader is at most two batches (64 KiB, half the cap) behind, however
        // its thread is scheduled.
        progress.wait_all((batch * BATCH).saturating_sub(2 * BATCH));
        let mut bytes = Vec::new();
        for i in 0..BATCH {
            let corr = ((batch * BATCH + i) as u32).to_be_bytes();
            bytes.extend(publish_frame(&corr, &["load"], "", &body));
        }
        publisher.send_raw(&bytes).unwrap();
        for i in 0..BATCH {
            let corr = ((batch * BATCH + i) as u32).to_be_bytes();
            acks.push(ack_id(next(&mut publisher), &corr));
        }
    }

    let got = reader.join().expect("healthy reader");
    let got_ids: Vec<&String> = got.iter().map(|(id, _)| id).collect();
    let want_ids: Vec<&String> = acks.iter().collect();
    assert_eq!(got_ids, want_ids, "healthy client: every event, in order");
    assert!(got.iter().all(|&(_, len)| len == body.len()));
    assert!(
        wait_until(TIMEOUT, || server
            .metric("sseloop_closes_total{cause=\"slow_consumer\"}")
            >= 1.0),
        "slow consumer not cut"
    );

    // What the slow client did receive is a clean prefix: the 101, then events in order.
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut received = Vec::new();
    let _ = slow.read_to_end(&mut received);
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("101 head")
        + 4;
    assert!(received.starts_with(b"HTTP/1.1 101"));
    let mut rest = &received[head_end..];
    let decoder = FrameDecoder::new(1 << 20);
    let mut events = 0;
    while let Ok(Some(f)) = decoder.decode(rest) {
        match parse(&rest[f.payload_range()]).map(OwnedPayload::from) {
            Ok(OwnedPayload::Event { id, .. }) => {
                assert_eq!(id, acks[events], "slow client's events in order");
                events += 1;
            }
            Ok(OwnedPayload::GoAway { code, .. }) => {
                assert_eq!(code, ErrorCode::SLOW_CONSUMER);
            }
            other => panic!("slow client got {other:?}"),
        }
        rest = &rest[f.frame_len()..];
    }
    assert!(events < EVENTS, "the slow client got everything");
    assert!(wait_until(TIMEOUT, || server.metric(FRAMES_OPEN) == 1.0));
}

/// Linux signal numbers, to freeze the server while a burst piles up in its socket buffer.
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

#[test]
fn healthy_frame_client_is_not_cut_by_a_publish_burst_it_was_never_offered() {
    // The server reads a burst of PUBLISH frames in one go (up to its 256 KiB read budget) and
    // queues all of their events for every subscriber before it tries to write any of them. A
    // subscriber that has read everything it was ever sent is not "reading too slowly"
    // (section 6.2), so it must not be cut as a slow consumer.
    const EVENTS: u8 = 12;
    // The smallest cap the server accepts for 8 KiB events (--max-body + 64 KiB), and a burst
    // larger than it.
    let server = TestServer::start(&["--max-queue-bytes", "72k", "--max-body", "8k"]);
    let mut healthy = open(&server, &["burst"]);
    let mut publisher = open(&server, &["publisher"]);
    let body = vec![b'b'; 8 * 1024];
    let mut bytes = Vec::new();
    for i in 0..EVENTS {
        bytes.extend(publish_frame(&[i], &["burst"], "", &body));
    }
    // 97 KiB: within the loopback receive window, so the whole burst is buffered for the
    // server's next read.
    server.signal(SIGSTOP);
    publisher.send_raw(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal(SIGCONT);
    for i in 0..EVENTS {
        ack_id(next(&mut publisher), &[i]);
    }
    for i in 0..EVENTS {
        match healthy.recv(Some(TIMEOUT)) {
            Ok(OwnedPayload::Event { data, .. }) => assert_eq!(data, body),
            Ok(other) => panic!("healthy client got {other:?}"),
            Err(e) => panic!(
                "healthy client cut after {i} of {EVENTS} events ({e}); slow_consumer closes: {}",
                server.metric("sseloop_closes_total{cause=\"slow_consumer\"}")
            ),
        }
    }
}

// ----- 5. shutdown -------------------------------------------------------------------------------

#[test]
fn sigterm_delivers_every_published_event_then_goaway_then_eof_and_exit_zero() {
    const EVENTS: usize = 300;
    let mut server = TestServer::start(&["--grace-ms", "8000", "--retry-ms", "2000"]);
    let mut sub = open(&server, &["final"]);
    let mut publisher = open(&server, &["publisher"]);
    let body = "y".repeat(1024);
    let mut bytes = Vec::new();
    for i in 0..EVENTS {
        bytes.extend(publish_frame(
            &(i as u32).to_be_bytes(),
            &["final"],
            "",
            body.as_bytes(),
        ));
    }
    publisher.send_raw(&bytes).unwrap();
    let acks: Vec<String> = (0..EVENTS)
        .map(|i| ack_id(next(&mut publisher), &(i as u32).to_be_bytes()))
        .collect();

    // The subscriber has not read anything yet: its events are still queued when the signal
    // arrives.
    let signalled = Instant::now();
    server.signal(SIGTERM);
    for id in &acks {
        assert_eq!(next(&mut sub), event(id, &["final"], "", &body));
    }
    match next(&mut sub) {
        OwnedPayload::GoAway { code, retry_ms, .. } => {
            assert_eq!(code, ErrorCode::SHUTTING_DOWN);
            assert!(
                (2000..=4000).contains(&retry_ms),
                "retry hint {retry_ms} ms (--retry-ms 2000, jittered)"
            );
        }
        other => panic!("expected GOAWAY, got {other:?}"),
    }
    // GOAWAY is the last frame: a PING sent now is not answered, and the server closes.
    let _ = sub.ping(b"late");
    assert_eq!(read_to_close(&mut sub), vec![], "frames after GOAWAY");
    // The idle publisher gets its GOAWAY too.
    let rest = read_to_close(&mut publisher);
    assert!(
        matches!(
            rest.as_slice(),
            [OwnedPayload::GoAway {
                code: ErrorCode::SHUTTING_DOWN,
                ..
            }]
        ),
        "publisher got {rest:?}"
    );
    drop(sub);
    drop(publisher);
    assert_eq!(server.wait_exit(TIMEOUT), Some(0), "exit code");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "took longer than the grace period"
    );
}

// ----- 6. errors ---------------------------------------------------------------------------------

#[test]
fn bad_magic_gets_a_fatal_error_then_close_without_goaway_or_further_replies() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["t"]);
    let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
    bytes.extend(ping_frame(b"never"));
    c.send_raw(&bytes).unwrap();
    let frames = read_to_close(&mut c);
    assert_eq!(
        frames.len(),
        1,
        "exactly one ERROR, then the close: {frames:?}"
    );
    assert_error(&frames[0], ErrorCode::BAD_MAGIC, 0, b"");

    // A wrong second byte is enough, without waiting for a whole header; earlier frames were
    // answered first.
    let mut c = open(&server, &["t"]);
    let mut bytes = ping_frame(b"ok");
    bytes.extend([0xCA, 0x00]);
    c.send_raw(&bytes).unwrap();
    let frames = read_to_close(&mut c);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(
        frames[0],
        OwnedPayload::Pong {
            opaque: b"ok".to_vec()
        }
    );
    assert_error(&frames[1], ErrorCode::BAD_MAGIC, 0, b"");
    assert!(wait_until(TIMEOUT, || server.metric(FRAMES_OPEN) == 0.0));
}

#[test]
fn oversize_length_is_refused_on_the_header_alone_and_the_limit_itself_is_accepted() {
    let server = TestServer::start(&["--max-frame", "1k"]);

    // Exactly 1024 payload bytes: accepted. One more: FRAME_TOO_LARGE.
    let base = publish_frame(b"k", &["t"], "", b"").len() - HEADER_LEN;
    let mut c = open(&server, &["other"]);
    let at_limit = publish_frame(b"k", &["t"], "", &vec![b'z'; 1024 - base]);
    assert_eq!(at_limit.len(), HEADER_LEN + 1024);
    c.send_raw(&at_limit).unwrap();
    ack_id(next(&mut c), b"k");
    let over = publish_frame(b"k", &["t"], "", &vec![b'z'; 1025 - base]);
    c.send_raw(&over).unwrap();
    let frames = read_to_close(&mut c);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_error(&frames[0], ErrorCode::FRAME_TOO_LARGE, 0, b"");

    // The limit is on what the server receives: an EVENT carrying a larger body (published
    // over HTTP) still goes out whole (section 2).
    let mut sub = open(&server, &["big"]);
    let big = "B".repeat(4096);
    let id = server.publish("topic=big", &big);
    assert_eq!(next(&mut sub), event(&id, &["big"], "", &big));

    // Only the six header bytes of a 1 MiB frame: the answer comes without the payload.
    let mut c = open(&server, &["t"]);
    let started = Instant::now();
    c.send_raw(&encode_header(1 << 20)).unwrap();
    let frames = read_to_close(&mut c);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_error(&frames[0], ErrorCode::FRAME_TOO_LARGE, 0, b"");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "server waited {:?} before refusing",
        started.elapsed()
    );
}

#[test]
fn unknown_and_wrong_direction_kinds_get_unknown_kind_and_the_connection_stays() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["t"]);
    // The worked session's frame from a later version, byte for byte.
    c.send_raw(b"\xca\xfe\x00\x00\x00\x02\x0a\x01").unwrap();
    assert_error(&next(&mut c), ErrorCode::UNKNOWN_KIND, 0x0a, b"");
    assert_eq!(barrier(&mut c, b"0a"), vec![]);

    for kind in [0x00u8, 0x0B, 0x3F, 0x40, 0x7F, 0x80, 0xFE, 0xFF] {
        c.send_raw(&frame(&[kind, 1, 2, 3])).unwrap();
        assert_error(&next(&mut c), ErrorCode::UNKNOWN_KIND, kind, b"");
        assert_eq!(barrier(&mut c, &[kind]), vec![], "kind {kind:#04x}");
    }

    // Server-to-client kinds, well formed, sent by the client.
    let wrong_way = [
        (EVENT, event("x-1", &["t"], "", "d")),
        (
            PUBLISH_ACK,
            OwnedPayload::PublishAck {
                correlation: b"c".to_vec(),
                id: "x-1".into(),
            },
        ),
        (
            GOAWAY,
            OwnedPayload::GoAway {
                code: ErrorCode::NO_ERROR,
                retry_ms: 0,
                message: String::new(),
            },
        ),
    ];
    for (kind, payload) in wrong_way {
        c.send(&payload).unwrap();
        assert_error(&next(&mut c), ErrorCode::UNKNOWN_KIND, kind, b"");
        assert_eq!(barrier(&mut c, &[kind]), vec![], "kind {kind:#04x}");
    }
    // The connection still works for real traffic.
    let id = server.publish("topic=t", "still here");
    assert_eq!(next(&mut c), event(&id, &["t"], "", "still here"));
}

#[test]
fn wrong_direction_kinds_are_unknown_whatever_their_payload() {
    // Section 4: a kind received in a direction the table does not list is treated as unknown,
    // and section 8: an unknown kind's payload is skipped by its length, not parsed. So the
    // answer is UNKNOWN_KIND even when the payload would not parse as that kind.
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["t"]);
    for (kind, payload) in [
        (EVENT, vec![EVENT, 0xFF]),
        (PUBLISH_ACK, vec![PUBLISH_ACK]),
        (GOAWAY, vec![GOAWAY, 3]),
    ] {
        c.send_raw(&frame(&payload)).unwrap();
        assert_error(&next(&mut c), ErrorCode::UNKNOWN_KIND, kind, b"");
        assert_eq!(barrier(&mut c, &[kind]), vec![], "kind {kind:#04x}");
    }
}

#[test]
fn malformed_payloads_get_malformed_payload_and_the_connection_stays() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["t"]);
    let cases: &[(&str, Vec<u8>, u8)] = &[
        ("empty payload", vec![], 0),
        ("PING opaque runs past the end", vec![PING, 5, 1, 2], PING),
        ("PING with a trailing byte", vec![PING, 0, 9], PING),
        ("PING without its length", vec![PING], PING),
        ("SUBSCRIBE with no topics", vec![SUBSCRIBE, 0, 0], SUBSCRIBE),
        (
            "SUBSCRIBE without last_event_id",
            vec![SUBSCRIBE, 1, 1, b'a'],
            SUBSCRIBE,
        ),
        (
            "PUBLISH data length past the end",
            vec![PUBLISH, 0, 1, 1, b't', 0, 0, 0, 0, 10, b'a', b'b', b'c'],
            PUBLISH,
        ),
        (
            "PUBLISH with trailing bytes",
            vec![PUBLISH, 0, 1, 1, b't', 0, 0, 0, 0, 1, b'a', b'!'],
            PUBLISH,
        ),
    ];
    for (what, payload, about) in cases {
        c.send_raw(&frame(payload)).unwrap();
        let reply = next(&mut c);
        match &reply {
            OwnedPayload::Error { code, about: a, .. } => assert_eq!(
                (*code, *a),
                (ErrorCode::MALFORMED_PAYLOAD, *about),
                "{what}: {reply:?}"
            ),
            other => panic!("{what}: expected ERROR, got {other:?}"),
        }
        assert_eq!(barrier(&mut c, what.as_bytes()), vec![], "{what}");
    }
    // Nothing was published by the broken PUBLISH frames.
    assert_eq!(server.metric("sseloop_events_published_total"), 0.0);
}

#[test]
fn refused_publish_gets_the_right_code_with_its_correlation_and_publishes_nothing() {
    let server = TestServer::start(&[]);
    let mut watcher = open(&server, &["ok"]);
    let mut c = open(&server, &["other"]);
    let long_topic = "t".repeat(129);
    let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let long_type = "e".repeat(129);
    let cases: Vec<(&[u8], Vec<u8>, ErrorCode)> = vec![
        (
            b"empty-topic",
            publish_frame(b"empty-topic", &["ok", ""], "", b"d"),
            ErrorCode::BAD_TOPIC,
        ),
        (
            b"space",
            publish_frame(b"space", &["ok", "a b"], "", b"d"),
            ErrorCode::BAD_TOPIC,
        ),
        (
            b"non-ascii",
            publish_frame(b"non-ascii", &["ok", "caf\u{e9}"], "", b"d"),
            ErrorCode::BAD_TOPIC,
        ),
        (
            b"long-topic",
            publish_frame(b"long-topic", &["ok", &long_topic], "", b"d"),
            ErrorCode::BAD_TOPIC,
        ),
        (
            b"65-topics",
            publish_frame(b"65-topics", &many, "", b"d"),
            ErrorCode::BAD_TOPIC,
        ),
        (
            b"lf",
            publish_frame(b"lf", &["ok"], "a\nb", b"d"),
            ErrorCode::BAD_EVENT_TYPE,
        ),
        (
            b"cr",
            publish_frame(b"cr", &["ok"], "a\rb", b"d"),
            ErrorCode::BAD_EVENT_TYPE,
        ),
        (
            b"nul",
            publish_frame(b"nul", &["ok"], "a\0b", b"d"),
            ErrorCode::BAD_EVENT_TYPE,
        ),
        (
            b"long-type",
            publish_frame(b"long-type", &["ok"], &long_type, b"d"),
            ErrorCode::BAD_EVENT_TYPE,
        ),
        (
            b"data",
            publish_frame(b"data", &["ok"], "", b"ok\xff\xfe"),
            ErrorCode::NOT_UTF8,
        ),
    ];
    for (correlation, bytes, code) in &cases {
        c.send_raw(bytes).unwrap();
        assert_error(&next(&mut c), *code, PUBLISH, correlation);
    }
    assert_eq!(
        barrier(&mut watcher, b"w"),
        vec![],
        "a refused PUBLISH was delivered"
    );
    assert_eq!(server.metric("sseloop_events_published_total"), 0.0);

    // The limits themselves are accepted: 64 distinct topics (plus a repeat), a 128-byte topic
    // and a 128-byte event type.
    let mut topics: Vec<&str> = many[..63].to_vec();
    topics.push("ok");
    topics.push("ok");
    c.publish(&topics, "", b"64", b"64").unwrap();
    let id = ack_id(next(&mut c), b"64");
    match next(&mut watcher) {
        OwnedPayload::Event { id: got, .. } => assert_eq!(got, id),
        other => panic!("expected the 64-topic EVENT, got {other:?}"),
    }
    let t128 = "t".repeat(128);
    let e128 = "e".repeat(128);
    c.publish(&["ok", &t128], &e128, b"max", b"max").unwrap();
    let id = ack_id(next(&mut c), b"max");
    assert_eq!(next(&mut watcher), event(&id, &["ok", &t128], &e128, "max"));
}

#[test]
fn publish_with_non_utf8_topic_or_event_type_gets_not_utf8_with_its_correlation() {
    // Section 3: a str field that is not UTF-8 is NOT_UTF8, a "request refused" code; section
    // 6.1: every PUBLISH gets exactly one reply with its correlation id.
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["t"]);
    let bad_type = raw_publish_payload(b"bad-type", &[b"t"], b"\xff\xfe", b"d");
    c.send_raw(&frame(&bad_type)).unwrap();
    assert_error(&next(&mut c), ErrorCode::NOT_UTF8, PUBLISH, b"bad-type");
    let bad_topic = raw_publish_payload(b"bad-topic", &[b"t", b"\xc3("], b"", b"d");
    c.send_raw(&frame(&bad_topic)).unwrap();
    assert_error(&next(&mut c), ErrorCode::NOT_UTF8, PUBLISH, b"bad-topic");
    assert_eq!(barrier(&mut c, b"end"), vec![]);
}

#[test]
fn refused_subscribe_gets_an_error_without_correlation() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["t0"]);
    let mut bytes = Vec::new();
    encode_subscribe_frame(&mut bytes, &["ok", "no spaces"], "").unwrap();
    c.send_raw(&bytes).unwrap();
    assert_error(&next(&mut c), ErrorCode::BAD_TOPIC, SUBSCRIBE, b"");

    // Non-UTF-8 topic.
    c.send_raw(&frame(&[SUBSCRIBE, 1, 2, 0xC3, 0x28, 0]))
        .unwrap();
    assert_error(&next(&mut c), ErrorCode::NOT_UTF8, SUBSCRIBE, b"");

    // 64 topics per connection at most: 63 more fit, one beyond does not.
    let more: Vec<String> = (1..64).map(|i| format!("t{i}")).collect();
    let more: Vec<&str> = more.iter().map(String::as_str).collect();
    c.subscribe(&more, None).unwrap();
    assert_eq!(barrier(&mut c, b"64"), vec![]);
    c.subscribe(&["t64"], None).unwrap();
    assert_error(&next(&mut c), ErrorCode::BAD_TOPIC, SUBSCRIBE, b"");
    assert_eq!(barrier(&mut c, b"end"), vec![]);
    // The refused topic was not added; the others were.
    server.publish("topic=t64", "no");
    let id = server.publish("topic=t63", "yes");
    assert_eq!(next(&mut c), event(&id, &["t63"], "", "yes"));
}

#[test]
fn client_error_and_pong_frames_are_never_answered_even_when_malformed() {
    // Section 6.1: a receiver never answers an ERROR, not even a malformed one.
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["t"]);
    c.send(&OwnedPayload::Error {
        code: ErrorCode::INTERNAL,
        about: 0,
        correlation: Vec::new(),
        message: "client side trouble".into(),
    })
    .unwrap();
    c.pong(b"unsolicited").unwrap();
    assert_eq!(barrier(&mut c, b"wellformed"), vec![]);

    c.send_raw(&frame(&[ERROR])).unwrap();
    c.send_raw(&frame(&[ERROR, 0x05, 0x01, 0, 0, 0, 1, 0xFF]))
        .unwrap();
    assert_eq!(
        barrier(&mut c, b"malformed"),
        vec![],
        "a malformed ERROR was answered"
    );
}

// ----- 7. handshake ------------------------------------------------------------------------------

#[test]
fn handshake_without_the_upgrade_is_426_and_bad_topics_are_400() {
    let server = TestServer::start(&[]);
    let plain = request(
        server.addr,
        "GET /frames?topic=a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(plain.status, 426, "{}", plain.head);
    assert_eq!(plain.header("upgrade").as_deref(), Some("cafe"));

    let websocket = request(
        server.addr,
        "GET /frames?topic=a HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(websocket.status, 426, "{}", websocket.head);
    assert_eq!(websocket.header("upgrade").as_deref(), Some("cafe"));

    // Both headers are required.
    let no_connection = request(
        server.addr,
        "GET /frames?topic=a HTTP/1.1\r\nHost: t\r\nUpgrade: cafe\r\n\r\n",
    );
    assert_eq!(no_connection.status, 426, "{}", no_connection.head);

    // The token is matched case-insensitively, and Connection may list other tokens.
    let mut s = connect(server.addr);
    s.write_all(
        b"GET /frames?topic=a HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\nUpgrade: CAFE\r\n\r\n",
    )
    .unwrap();
    let resp = ResponseReader::new(s).next().expect("response");
    assert_eq!(resp.status, 101, "{}", resp.head);
    assert!(resp
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("cafe")));
    assert!(resp
        .header("connection")
        .is_some_and(|u| u.eq_ignore_ascii_case("upgrade")));

    // 64 distinct topics (one of them repeated) are accepted; 65 are not.
    let sixty_four: String = (0..64).map(|i| format!("topic=t{i}&")).collect();
    let c64 = RawFrames::open(
        server.addr,
        &format!("/frames?{sixty_four}topic=t0"),
        &[],
        b"",
    );
    assert_eq!(c64.status, 101, "{}", c64.head);
    drop(c64);
    let too_many: String = (0..65).map(|i| format!("topic=t{i}&")).collect();
    let long = "t".repeat(129);
    for target in [
        "/frames".to_string(),
        "/frames?topic=".to_string(),
        "/frames?topic=a%20b".to_string(),
        "/frames?topic=%zz".to_string(),
        format!("/frames?topic={long}"),
        format!("/frames?{too_many}"),
    ] {
        let c = RawFrames::open(server.addr, &target, &[], b"");
        assert_eq!(c.status, 400, "{target}: {}", c.head);
    }
    // Refused handshakes never became frame connections; the accepted ones are gone.
    assert!(wait_until(TIMEOUT, || server.metric(FRAMES_OPEN) == 0.0));
}

#[test]
fn subscribe_token_is_required_in_the_header_or_access_token() {
    let server = TestServer::start(&["--subscribe-token", "s3cret"]);
    let err = FrameClient::connect(server.addr, &["t"], None, None)
        .err()
        .expect("no token must be refused");
    assert_eq!(handshake_status(&err), Some(401), "{err}");
    let missing = RawFrames::open(server.addr, "/frames?topic=t", &[], b"");
    assert_eq!(missing.status, 401);
    assert!(
        header_in(&missing.head, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")),
        "{}",
        missing.head
    );

    let err = FrameClient::connect(server.addr, &["t"], None, Some("wrong"))
        .err()
        .expect("a wrong token must be refused");
    assert_eq!(handshake_status(&err), Some(401), "{err}");
    let wrong = RawFrames::open(server.addr, "/frames?topic=t&access_token=wrong", &[], b"");
    assert_eq!(wrong.status, 401, "{}", wrong.head);

    let mut c = FrameClient::connect(server.addr, &["t"], None, Some("s3cret")).unwrap();
    let mut q = RawFrames::open(server.addr, "/frames?topic=t&access_token=s3cret", &[], b"");
    assert_eq!(q.status, 101, "{}", q.head);
    let id = server.publish("topic=t", "authorised");
    assert_eq!(next(&mut c), event(&id, &["t"], "", "authorised"));
    assert_eq!(q.next(), event(&id, &["t"], "", "authorised"));
}

#[test]
fn publish_token_is_checked_against_the_handshake_credential() {
    let server = TestServer::start(&["--publish-token", "pub"]);
    let mut watcher = open(&server, &["t"]);

    let mut anon = open(&server, &["x"]);
    anon.publish(&["t"], "", b"denied", b"a1").unwrap();
    assert_error(&next(&mut anon), ErrorCode::UNAUTHORIZED, PUBLISH, b"a1");
    // The connection stays open for reading, and still answers.
    assert_eq!(barrier(&mut anon, b"still"), vec![]);
    let mut wrong = FrameClient::connect(server.addr, &["x"], None, Some("nope")).unwrap();
    wrong.publish(&["t"], "", b"denied", b"w1").unwrap();
    assert_error(&next(&mut wrong), ErrorCode::UNAUTHORIZED, PUBLISH, b"w1");
    assert_eq!(
        barrier(&mut watcher, b"none"),
        vec![],
        "an unauthorised PUBLISH was delivered"
    );

    let mut authed = FrameClient::connect(server.addr, &["x"], None, Some("pub")).unwrap();
    authed.publish(&["t"], "", b"allowed", b"p1").unwrap();
    let id = ack_id(next(&mut authed), b"p1");
    assert_eq!(next(&mut watcher), event(&id, &["t"], "", "allowed"));

    // The access_token query parameter is the handshake's credential too.
    let mut q = RawFrames::open(server.addr, "/frames?topic=x&access_token=pub", &[], b"");
    assert_eq!(q.status, 101, "{}", q.head);
    q.stream
        .write_all(&publish_frame(b"q1", &["t"], "", b"via query"))
        .unwrap();
    let id = ack_id(q.next(), b"q1");
    assert_eq!(next(&mut watcher), event(&id, &["t"], "", "via query"));
}

// ----- 8. liveness -------------------------------------------------------------------------------

#[test]
fn ping_is_answered_with_the_same_opaque_bytes_in_order() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["t"]);
    let all: Vec<u8> = (0..=254).collect();
    let opaques: Vec<Vec<u8>> = vec![vec![], vec![0, 0, 0, 1], vec![0xFF; 255], all];
    let mut bytes = Vec::new();
    for o in &opaques {
        bytes.extend(ping_frame(o));
    }
    c.send_raw(&bytes).unwrap();
    for o in opaques {
        assert_eq!(next(&mut c), OwnedPayload::Pong { opaque: o });
    }
}

#[test]
fn heartbeat_pings_keep_an_answering_client_connected() {
    // One silent period resets the client: 1 s leaves room for a stalled test thread.
    let server = TestServer::start(&["--heartbeat-ms", "1000"]);
    let mut c = open(&server, &["quiet"]);
    let run = Duration::from_millis(4000);
    let started = Instant::now();
    let mut pings = 0;
    loop {
        let left = run.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match c.recv(Some(left)) {
            Ok(OwnedPayload::Ping { opaque }) => {
                pings += 1;
                c.pong(&opaque).unwrap();
            }
            Ok(other) => panic!("unexpected frame on a quiet connection: {other:?}"),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
            Err(e) => panic!("connection lost after {pings} PINGs: {e}"),
        }
    }
    assert!(pings >= 3, "only {pings} PINGs in {run:?} at 1 s");
    assert_eq!(server.metric(FRAMES_OPEN), 1.0);
    let id = server.publish("topic=quiet", "still subscribed");
    loop {
        match next(&mut c) {
            OwnedPayload::Ping { opaque } => c.pong(&opaque).unwrap(),
            other => {
                assert_eq!(other, event(&id, &["quiet"], "", "still subscribed"));
                break;
            }
        }
    }
}

#[test]
fn client_that_never_answers_pings_is_closed_after_about_two_periods() {
    let server = TestServer::start(&["--heartbeat-ms", "200"]);
    let mut c = open(&server, &["quiet"]);
    let started = Instant::now();
    let frames = read_to_close(&mut c);
    let lasted = started.elapsed();
    assert!(!frames.is_empty(), "closed without a PING");
    assert!(
        frames
            .iter()
            .all(|f| matches!(f, OwnedPayload::Ping { .. })),
        "{frames:?}"
    );
    assert!(
        lasted >= Duration::from_millis(250) && lasted < Duration::from_secs(5),
        "closed after {lasted:?}"
    );
    assert!(wait_until(TIMEOUT, || server.metric(FRAMES_OPEN) == 0.0));
}

// ----- 9. unsubscribe ----------------------------------------------------------------------------

#[test]
fn unsubscribe_stops_delivery_through_the_removed_topics_only() {
    let server = TestServer::start(&[]);
    let mut c = open(&server, &["a", "b"]);
    c.unsubscribe(&["a", "never-had"]).unwrap();
    assert_eq!(barrier(&mut c, b"1"), vec![], "UNSUBSCRIBE is not answered");

    server.publish("topic=a", "gone");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        barrier(&mut c, b"2"),
        vec![],
        "EVENT through a removed topic"
    );

    let kept = server.publish("topic=b", "kept");
    assert_eq!(next(&mut c), event(&kept, &["b"], "", "kept"));
    let both = server.publish("topic=a&topic=b", "both");
    assert_eq!(next(&mut c), event(&both, &["a", "b"], "", "both"));
    assert_eq!(barrier(&mut c, b"3"), vec![]);

    // With no topic left the connection stays open, quiet, and can subscribe again.
    c.unsubscribe(&["b"]).unwrap();
    assert_eq!(barrier(&mut c, b"4"), vec![]);
    server.publish("topic=b", "gone too");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(barrier(&mut c, b"5"), vec![]);
    c.subscribe(&["a"], None).unwrap();
    assert_eq!(barrier(&mut c, b"6"), vec![]);
    let back = server.publish("topic=a", "back");
    assert_eq!(next(&mut c), event(&back, &["a"], "", "back"));
}

// ----- 10. metrics -------------------------------------------------------------------------------

#[test]
fn frame_connections_and_received_frames_are_counted() {
    let server = TestServer::start(&[]);
    assert_eq!(server.metric(FRAMES_OPEN), 0.0);
    let mut clients: Vec<FrameClient> = (0..3).map(|_| open(&server, &["m"])).collect();
    assert!(wait_until(TIMEOUT, || server.metric(FRAMES_OPEN) == 3.0));
    assert_eq!(server.metric("sseloop_connections_open{kind=\"sse\"}"), 0.0);

    let before = server.metric("sseloop_frames_received_total");
    let mut bytes = Vec::new();
    for i in 0..5u8 {
        bytes.extend(ping_frame(&[i]));
    }
    clients[0].send_raw(&bytes).unwrap();
    for i in 0..5u8 {
        assert_eq!(
            next(&mut clients[0]),
            OwnedPayload::Pong { opaque: vec![i] }
        );
    }
    assert_eq!(server.metric("sseloop_frames_received_total") - before, 5.0);

    // One closed by a fatal error, one by the client, one by the client after a half-close.
    clients[1].send_raw(b"junk").unwrap();
    read_to_close(&mut clients[1]);
    assert!(wait_until(TIMEOUT, || server.metric(FRAMES_OPEN) == 2.0));
    clients[2]
        .stream()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert_eq!(read_to_close(&mut clients[2]), vec![]);
    drop(clients);
    assert!(wait_until(TIMEOUT, || server.metric(FRAMES_OPEN) == 0.0));
    assert_eq!(server.metric("sseloop_subscriptions"), 0.0);
}

// ----- 9. limits shared with the other publish paths, and the publish credential ----------------

#[test]
fn frame_publish_over_max_body_is_refused_with_too_large_like_http_413() {
    let server = TestServer::start(&["--max-body", "4k"]);
    let mut watcher = open(&server, &["t"]);
    let mut c = open(&server, &["other"]);
    // The HTTP path refuses the same data with 413.
    let over = "o".repeat(4097);
    let resp = server.post("topic=t", &over, &[]);
    assert_eq!(resp.status, 413, "{}", resp.text());
    c.publish(&["t"], "", over.as_bytes(), b"big").unwrap();
    assert_error(&next(&mut c), ErrorCode::TOO_LARGE, PUBLISH, b"big");
    assert_eq!(
        barrier(&mut watcher, b"w"),
        vec![],
        "an oversize PUBLISH was delivered"
    );
    assert_eq!(server.metric("sseloop_events_published_total"), 0.0);
    // The connection carries on, and the limit itself is accepted.
    let at = "a".repeat(4096);
    c.publish(&["t"], "", at.as_bytes(), b"at").unwrap();
    let id = ack_id(next(&mut c), b"at");
    assert_eq!(next(&mut watcher), event(&id, &["t"], "", &at));
}

#[test]
fn an_event_frame_is_at_most_max_body_plus_64_kib_whatever_max_frame_is() {
    // Section 2: --max-frame bounds what the server reads; EVENT frames carry up to --max-body
    // of data plus at most 64 KiB of id, topics and event type.
    const MAX_BODY: usize = 64 * 1024;
    let server = TestServer::start(&["--max-frame", "1k", "--max-body", "64k"]);
    let topics: Vec<String> = (0..64).map(|i| format!("{i:0>128}")).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut sub = open(&server, &topics[..1]);
    sub.set_max_payload(MAX_BODY + 64 * 1024);
    let data = "d".repeat(MAX_BODY);
    let event_type = "e".repeat(128);
    let mut query = topics
        .iter()
        .map(|t| format!("topic={t}"))
        .collect::<Vec<_>>()
        .join("&");
    query.push_str(&format!("&event={event_type}"));
    let id = server.publish(&query, &data);
    let got = next(&mut sub);
    let mut encoded = Vec::new();
    sseloop::frame::encode_event_frame(&mut encoded, &id, &topics, &event_type, data.as_bytes())
        .unwrap();
    let payload_len = encoded.len() - HEADER_LEN;
    assert!(payload_len > 1024, "the EVENT is larger than --max-frame");
    assert!(payload_len <= MAX_BODY + 64 * 1024, "{payload_len}");
    assert_eq!(got, event(&id, &topics, &event_type, &data));
}

#[test]
fn publish_token_header_authorizes_frame_publishes_when_the_tokens_differ() {
    let server = TestServer::start(&["--subscribe-token", "sub", "--publish-token", "pub"]);
    let mut watcher = FrameClient::connect(server.addr, &["t"], None, Some("sub")).unwrap();
    let auth = ("Authorization", "Bearer sub");

    // The subscribe token alone lets the connection in, not publish.
    let mut reader = RawFrames::open(server.addr, "/frames?topic=x", &[auth], b"");
    assert_eq!(reader.status, 101, "{}", reader.head);
    reader
        .stream
        .write_all(&publish_frame(b"r1", &["t"], "", b"denied"))
        .unwrap();
    assert_error(&reader.next(), ErrorCode::UNAUTHORIZED, PUBLISH, b"r1");

    // A wrong publish token: subscribed, publishes refused.
    let wrong = ("Sseloop-Publish-Token", "nope");
    let mut bad = RawFrames::open(server.addr, "/frames?topic=x", &[auth, wrong], b"");
    assert_eq!(bad.status, 101, "{}", bad.head);
    bad.stream
        .write_all(&publish_frame(b"b1", &["t"], "", b"denied"))
        .unwrap();
    assert_error(&bad.next(), ErrorCode::UNAUTHORIZED, PUBLISH, b"b1");

    // The publish token alone does not subscribe: the subscribe token is still required.
    let only_pub = RawFrames::open(
        server.addr,
        "/frames?topic=x",
        &[("Sseloop-Publish-Token", "pub")],
        b"",
    );
    assert_eq!(only_pub.status, 401, "{}", only_pub.head);

    // Both: subscribed with one, publishing with the other.
    let both = ("Sseloop-Publish-Token", "pub");
    let mut c = RawFrames::open(server.addr, "/frames?topic=t", &[auth, both], b"");
    assert_eq!(c.status, 101, "{}", c.head);
    c.stream
        .write_all(&publish_frame(b"p1", &["t"], "", b"allowed"))
        .unwrap();
    let mut acked = None;
    let mut own = None;
    for _ in 0..2 {
        match c.next() {
            OwnedPayload::PublishAck { correlation, id } => {
                assert_eq!(correlation, b"p1");
                acked = Some(id);
            }
            OwnedPayload::Event { id, .. } => own = Some(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    let id = acked.expect("PUBLISH_ACK");
    assert_eq!(own.as_deref(), Some(id.as_str()), "its own EVENT");
    assert_eq!(next(&mut watcher), event(&id, &["t"], "", "allowed"));
    // Nothing the refused connections sent was delivered.
    assert_eq!(barrier(&mut watcher, b"w"), vec![]);
}
