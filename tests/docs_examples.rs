//! The documents' examples, under test byte for byte so that they cannot drift from the server:
//! every frame dump of docs/PROTOCOL.md against the codec and against an independent
//! field-by-field reading of the specification, its handshake, its worked session, its
//! refusals and its two forms of one event against a real server over loopback sockets; and the
//! JSON and JWT claims examples of README.md and docs/SECURITY.md against a real server.
//!
//! An example is found by its fenced block's info string, the language then a label
//! (```` ```hex 4.1 ````); section 7's table is read row by row. The server names its events
//! `<run>-<seq>` with a run id of 12 characters drawn at start; the document's examples use
//! [`DOC_RUN`] instead, so bytes cross between the two with that one string swapped and nothing
//! else (the `Date` header and GOAWAY's jittered `retry_ms` are checked, then masked).

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;
use sseloop::frame::{
    encode_frame, parse, ErrorCode, FrameClient, FrameDecoder, Kind, OwnedPayload, HEADER_LEN,
    MAGIC,
};
use util::*;

const PROTOCOL_MD: &str = include_str!("../docs/PROTOCOL.md");
const README_MD: &str = include_str!("../README.md");
const SECURITY_MD: &str = include_str!("../docs/SECURITY.md");

/// The run id of the document's example ids (`mhc1x2k9w3qf-42`).
const DOC_RUN: &str = "mhc1x2k9w3qf";

// ----- reading the documents ---------------------------------------------------------------------

/// A fenced block: its language, its label (the info string's second word) and its lines, each
/// ended by LF, with the fence's own indentation removed.
struct Block {
    lang: String,
    label: String,
    text: String,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for line in md.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split_whitespace();
                    let block = Block {
                        lang: words.next().unwrap_or("").to_string(),
                        label: words.next().unwrap_or("").to_string(),
                        text: String::new(),
                    };
                    open = Some((indent, block));
                }
            }
            Some((_, block)) if trimmed == "```" => out.push(block),
            Some((at, mut block)) => {
                block.text.push_str(line.get(at..).unwrap_or(""));
                block.text.push('\n');
                open = Some((at, block));
            }
        }
    }
    assert!(open.is_none(), "a fenced block is never closed");
    out
}

/// The one block of PROTOCOL.md labelled `label`.
fn example(label: &str) -> Block {
    let mut found: Vec<Block> = blocks(PROTOCOL_MD)
        .into_iter()
        .filter(|b| b.label == label)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "PROTOCOL.md has one example labelled {label}"
    );
    found.remove(0)
}

/// The bytes of a hex dump: on each line, the two-digit hex tokens before the comment.
fn hex_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        for token in line.split_whitespace() {
            match (token.len(), u8::from_str_radix(token, 16)) {
                (2, Ok(b)) => out.push(b),
                _ => break,
            }
        }
    }
    out
}

/// The frame of hex example `label`.
fn frame_of(label: &str) -> Vec<u8> {
    let block = example(label);
    assert_eq!(block.lang, "hex", "example {label}");
    hex_bytes(&block.text)
}

/// The lines of a text example as they travel: LF becomes CR LF (HTTP heads).
fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// The arguments of the example server (section 1), without the program name.
fn example_server_args() -> Vec<String> {
    let block = example("example-server");
    let mut words = block.text.split_whitespace().map(str::to_string);
    assert_eq!(words.next().as_deref(), Some("sseloop"));
    words.collect()
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args.iter().position(|a| a == flag);
    let value = at.and_then(|i| args.get(i + 1));
    value.unwrap_or_else(|| panic!("the example server has no {flag}"))
}

// ----- the specification read field by field ----------------------------------------------------

/// The layout of a payload as the document prints it: each field's bytes and the comment beside
/// them, written from sections 2 to 4 independently of the encoder.
fn layout(p: &OwnedPayload) -> Vec<(Vec<u8>, String)> {
    let mut s = Spec(Vec::new());
    let kind = p.kind();
    s.put(
        &[kind.byte()],
        format!("kind 0x{:02x} {}", kind.byte(), kind.name()),
    );
    match p {
        OwnedPayload::Event {
            id,
            topics,
            event_type,
            data,
        } => {
            s.str8("id", id.as_bytes());
            s.topics(topics);
            s.str8("event type", event_type.as_bytes());
            s.data(data);
        }
        OwnedPayload::Publish {
            correlation,
            topics,
            event_type,
            data,
            idempotency_key,
        } => {
            s.str8("correlation", correlation);
            s.topics(topics);
            s.str8("event type", event_type.as_bytes());
            s.data(data);
            if !idempotency_key.is_empty() {
                s.str8("idempotency key", idempotency_key.as_bytes());
            }
        }
        OwnedPayload::PublishAck { correlation, id } => {
            s.str8("correlation", correlation);
            s.str8("id", id.as_bytes());
        }
        OwnedPayload::Subscribe {
            topics,
            last_event_id,
        } => {
            s.topics(topics);
            s.str8("last event id", last_event_id.as_bytes());
        }
        OwnedPayload::Unsubscribe { topics } => s.topics(topics),
        OwnedPayload::Ping { opaque } | OwnedPayload::Pong { opaque } => {
            s.str8("opaque", opaque);
        }
        OwnedPayload::Error {
            code,
            about,
            correlation,
            message,
        } => {
            s.put(&code.0.to_be_bytes(), format!("code {code}"));
            let name = Kind::from_byte(*about).map_or("not a known kind", Kind::name);
            s.put(&[*about], format!("about 0x{about:02x} ({name})"));
            s.str8("correlation", correlation);
            s.message(message);
        }
        OwnedPayload::GoAway {
            code,
            retry_ms,
            message,
        } => {
            s.put(&code.0.to_be_bytes(), format!("code {code}"));
            s.put(&retry_ms.to_be_bytes(), format!("retry_ms {retry_ms}"));
            s.message(message);
        }
    }
    let payload_len: usize = s.0.iter().map(|(b, _)| b.len()).sum();
    let mut all = vec![
        (MAGIC.to_vec(), "magic".to_string()),
        (
            u32::try_from(payload_len).unwrap().to_be_bytes().to_vec(),
            format!("payload length {payload_len}"),
        ),
    ];
    all.extend(s.0);
    all
}

/// Fields as docs/PROTOCOL.md describes them, with their comments.
struct Spec(Vec<(Vec<u8>, String)>);

impl Spec {
    fn put(&mut self, bytes: &[u8], comment: String) {
        self.0.push((bytes.to_vec(), comment));
    }

    /// A u8 length, then the bytes (omitted from the listing when empty).
    fn str8(&mut self, name: &str, value: &[u8]) {
        let len = u8::try_from(value.len()).unwrap();
        self.put(&[len], format!("{name} length {len}"));
        if !value.is_empty() {
            self.put(value, format!("{name} {}", show(value)));
        }
    }

    fn topics(&mut self, topics: &[String]) {
        let count = u8::try_from(topics.len()).unwrap();
        self.put(&[count], format!("topic count {count}"));
        for t in topics {
            self.str8("topic", t.as_bytes());
        }
    }

    fn data(&mut self, data: &[u8]) {
        let len = u32::try_from(data.len()).unwrap();
        self.put(&len.to_be_bytes(), format!("data length {len}"));
        if !data.is_empty() {
            self.put(data, format!("data {}", show(data)));
        }
    }

    fn message(&mut self, message: &str) {
        let len = u16::try_from(message.len()).unwrap();
        self.put(&len.to_be_bytes(), format!("message length {len}"));
        if !message.is_empty() {
            self.put(
                message.as_bytes(),
                format!("message {}", show(message.as_bytes())),
            );
        }
    }
}

/// Text fields are shown quoted; anything else is left to the hex.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.contains(|c: char| c.is_control()) => format!("{s:?}"),
        _ => "(bytes)".into(),
    }
}

/// Renders a layout as the document prints it: hex bytes (at most eight per line), then the
/// comment from column 26.
fn render(layout: &[(Vec<u8>, String)]) -> String {
    let mut text = String::new();
    for (bytes, comment) in layout {
        for (i, line) in bytes.chunks(8).enumerate() {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            let hex = hex.join(" ");
            if i == 0 {
                text.push_str(&format!("{hex:<25} {comment}\n"));
            } else {
                text.push_str(&hex);
                text.push('\n');
            }
        }
    }
    text
}

/// One whole frame, decoded and parsed.
fn decode_one(bytes: &[u8]) -> OwnedPayload {
    let frame = FrameDecoder::default()
        .decode(bytes)
        .unwrap_or_else(|e| panic!("{e}: {bytes:02x?}"))
        .unwrap_or_else(|| panic!("an incomplete frame: {bytes:02x?}"));
    assert_eq!(frame.frame_len(), bytes.len(), "exactly one frame");
    OwnedPayload::from(parse(&bytes[frame.payload_range()]).unwrap())
}

// ----- talking to the server ----------------------------------------------------------------------

/// The server's run id, from one of its event ids.
fn run_of(id: &str) -> String {
    let (run, _) = split_id(id);
    assert_eq!(
        run.len(),
        DOC_RUN.len(),
        "the server's run ids no longer have the length of the document's ({id})"
    );
    run
}

fn swap(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// A frame connection (or any request) read by hand, with what arrived past the response head.
struct Raw {
    stream: TcpStream,
    head: String,
    pending: Vec<u8>,
}

impl Raw {
    /// Sends `request` and reads the response head.
    fn open(addr: std::net::SocketAddr, request: &[u8]) -> Raw {
        let mut stream = connect(addr);
        stream.write_all(request).unwrap();
        let (head, pending) = (String::new(), Vec::new());
        let mut raw = Raw {
            stream,
            head,
            pending,
        };
        let end = loop {
            match raw.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(at) => break at + 4,
                None => raw.fill("the response head"),
            }
        };
        raw.head = String::from_utf8(raw.take(end)).unwrap();
        raw
    }

    /// Reads what the socket has (waiting up to [`TIMEOUT`]); the stream must not end.
    fn fill(&mut self, what: &str) {
        let mut chunk = [0u8; 4096];
        let got = self.stream.read(&mut chunk);
        let got = got.unwrap_or_else(|e| panic!("waiting for {what}: {e}; {:02x?}", self.pending));
        assert!(got > 0, "closed before {what}; {:02x?}", self.pending);
        self.pending.extend_from_slice(&chunk[..got]);
    }

    /// The next `n` bytes of the stream.
    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            self.fill(&format!("{n} bytes"));
        }
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }

    /// The next whole frame, however long its header says it is.
    fn frame(&mut self) -> Vec<u8> {
        let mut frame = self.take(HEADER_LEN);
        let len = u32::from_be_bytes(frame[2..HEADER_LEN].try_into().unwrap());
        frame.extend(self.take(len as usize));
        frame
    }

    /// The server closed the connection with nothing more sent.
    fn assert_closed(&mut self) {
        assert_eq!(self.pending, b"", "bytes before the close");
        let mut chunk = [0u8; 64];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("expected the close, got {:02x?}", &chunk[..n]),
            Err(e) => panic!("expected the close: {e}"),
        }
    }
}

/// Asserts that the server sent exactly the document's frame; on a mismatch both are shown as
/// the document prints them.
fn assert_frame(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let show = |b: &[u8]| match FrameDecoder::default().decode(b) {
            Ok(Some(f)) if f.frame_len() == b.len() => match parse(&b[f.payload_range()]) {
                Ok(p) => render(&layout(&OwnedPayload::from(p))),
                Err(e) => format!("{b:02x?} ({e})"),
            },
            _ => format!("{b:02x?}"),
        };
        panic!(
            "{what}: the server sent\n{}\nthe document shows\n{}",
            show(got),
            show(want)
        );
    }
}

/// The example server of section 1, with the history the document describes: events 1 to 41 on
/// `weather`, then the event of example 4.1. Returns it with its run id.
fn example_server() -> (TestServer, String) {
    let args = example_server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::start(&args);
    let auth = format!(
        "Bearer {}",
        flag_value(&example_server_args(), "--publish-token")
    );
    let headers = [("Authorization", auth.as_str())];
    for i in 1..=41 {
        let resp = server.post("topic=weather", &format!("sunny {i}"), &headers);
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let OwnedPayload::Event {
        id,
        topics,
        event_type,
        data,
    } = decode_one(&frame_of("4.1"))
    else {
        panic!("example 4.1 is an EVENT");
    };
    let mut query: Vec<String> = topics.iter().map(|t| format!("topic={}", pct(t))).collect();
    query.push(format!("event={event_type}"));
    let body = String::from_utf8(data).unwrap();
    let resp = server.post(&query.join("&"), &body, &headers);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = json_id(&resp.text());
    let run = run_of(&got);
    assert_eq!(
        swap(got.as_bytes(), &run, DOC_RUN),
        id.as_bytes(),
        "event 42"
    );
    (server, run)
}

/// Percent-encodes a query value (everything outside the unreserved set).
fn pct(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `GET /frames` upgrade request with the example server's tokens.
fn upgrade_request(query: &str, publish_token: bool) -> Vec<u8> {
    let args = example_server_args();
    let mut req = format!(
        "GET /frames?{query} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n\
         Authorization: Bearer {}\r\n",
        flag_value(&args, "--subscribe-token")
    );
    if publish_token {
        let token = flag_value(&args, "--publish-token");
        req.push_str(&format!("Sseloop-Publish-Token: {token}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ----- PROTOCOL.md: the codec ---------------------------------------------------------------------

#[test]
fn every_hex_example_is_one_frame_that_re_encodes_to_itself_as_annotated() {
    let hex: Vec<Block> = blocks(PROTOCOL_MD)
        .into_iter()
        .filter(|b| b.lang == "hex")
        .collect();
    assert!(hex.len() >= 14, "examples went missing: {}", hex.len());
    for block in hex {
        assert!(!block.label.is_empty(), "an unlabelled hex example");
        let bytes = hex_bytes(&block.text);
        let payload = decode_one(&bytes);
        let mut encoded = Vec::new();
        payload.encode_frame(&mut encoded).unwrap();
        assert_eq!(
            encoded, bytes,
            "example {}: not the codec's encoding",
            block.label
        );
        assert_eq!(
            block.text,
            render(&layout(&payload)),
            "example {}: the dump or its comments drifted from the specification",
            block.label
        );
    }
}

// ----- PROTOCOL.md: the server --------------------------------------------------------------------

#[test]
fn handshake_example_gets_the_documented_101_then_the_replay_of_example_4_1() {
    let (server, run) = example_server();
    let request = crlf(&example("handshake-request").text);
    let request = swap(request.as_bytes(), DOC_RUN, &run);
    let mut c = Raw::open(server.addr, &request);

    // Everything but the date, byte for byte; the date is a valid IMF-fixdate.
    let want = crlf(&example("handshake-response").text);
    let date_of = |head: &str| {
        let line = head.lines().find(|l| l.starts_with("Date: ")).unwrap();
        line.to_string()
    };
    let (got_date, want_date) = (date_of(&c.head), date_of(&want));
    assert_eq!(got_date.len(), want_date.len(), "{got_date}");
    assert!(got_date.ends_with(" GMT"), "{got_date}");
    assert_eq!(c.head.replace(&got_date, &want_date), want);

    let replay = frame_of("4.1");
    let got = c.frame();
    assert_frame(&swap(&got, &run, DOC_RUN), &replay, "the replay");
    // Nothing else was queued ahead of a PONG (no reset notice, no other event).
    c.stream.write_all(&frame_of("4.6")).unwrap();
    let pong = frame_of("4.7");
    assert_frame(&c.frame(), &pong, "the PONG");
}

/// One row of section 7's table.
enum Step {
    Send(Vec<u8>),
    Expect(Vec<u8>),
    Stop,
    Closed,
}

fn worked_session() -> Vec<Step> {
    let start = PROTOCOL_MD.find("## 7. Worked session").unwrap();
    let end = PROTOCOL_MD[start..].find("\n## ").unwrap() + start;
    let mut steps = Vec::new();
    for row in PROTOCOL_MD[start..end].lines() {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, direction, _, bytes, _] = cells[..] else {
            continue;
        };
        let frame = || match bytes.strip_prefix("example ") {
            Some(label) => frame_of(label),
            None => {
                let inline = hex_bytes(bytes.trim_matches('`'));
                assert!(!inline.is_empty(), "section 7: no bytes in {row}");
                inline
            }
        };
        steps.push(match (direction, bytes) {
            ("S → C", "end") => Step::Closed,
            ("S → C", _) => Step::Expect(frame()),
            ("C → S", _) => Step::Send(frame()),
            ("stop", _) => Step::Stop,
            _ => continue,
        });
    }
    steps
}

#[test]
fn worked_session_is_the_servers_own_transcript_byte_for_byte() {
    let (mut server, run) = example_server();
    let retry_ms: u32 = flag_value(&example_server_args(), "--retry-ms")
        .parse()
        .unwrap();
    let steps = worked_session();
    assert_eq!(steps.len(), 15, "rows of section 7");
    let mut c = Raw::open(server.addr, &upgrade_request("topic=news", true));
    assert_eq!(status_of(&c.head), 101, "{}", c.head);
    let mut unsent = Vec::new();
    for (row, step) in steps.into_iter().enumerate() {
        let what = format!("section 7, row {}", row + 1);
        // Frames sent one after the other go out together, as a client may send them.
        if !matches!(step, Step::Send(_)) && !unsent.is_empty() {
            c.stream.write_all(&swap(&unsent, DOC_RUN, &run)).unwrap();
            unsent.clear();
        }
        match step {
            Step::Send(bytes) => unsent.extend(bytes),
            Step::Expect(want) => {
                let mut got = swap(&c.frame(), &run, DOC_RUN);
                let goaway = Some(&Kind::GoAway.byte());
                if want.get(HEADER_LEN) == goaway && got.get(HEADER_LEN) == goaway {
                    // The hint is drawn from [R, R + max(R, 1000)] (section 6.5).
                    let at = HEADER_LEN + 3..HEADER_LEN + 7;
                    let drawn = u32::from_be_bytes(got[at.clone()].try_into().unwrap());
                    let spread = retry_ms.max(1000);
                    assert!((retry_ms..=retry_ms + spread).contains(&drawn), "{drawn}");
                    got[at.clone()].copy_from_slice(&want[at]);
                }
                assert_frame(&got, &want, &what);
            }
            Step::Stop => server.signal(libc::SIGTERM),
            Step::Closed => c.assert_closed(),
        }
    }
    assert_eq!(server.wait_exit(TIMEOUT), Some(0));
}

#[test]
fn error_messages_quoted_in_4_8_are_the_servers_words() {
    // A PUBLISH whose event type announces 5 bytes and has 2: MALFORMED_PAYLOAD.
    let payload = [&[0x02, 0, 1, 1, b't', 5][..], b"ab"].concat();
    let server = TestServer::start(&[]);
    let mut c = FrameClient::connect(server.addr, &["t"], None, None).unwrap();
    let mut frames = Vec::new();
    for payload in [&payload[..], &[0x0A, 0x01]] {
        encode_frame(&mut frames, &[payload]).unwrap();
    }
    c.send_raw(&frames).unwrap();
    for words in [
        "payload ends inside the event type",
        "unknown frame kind 0x0a",
    ] {
        assert!(
            PROTOCOL_MD.contains(&format!("`{words}`")),
            "4.8 quotes {words}"
        );
        match c.recv(Some(TIMEOUT)).unwrap() {
            OwnedPayload::Error { message, .. } => assert_eq!(message, words),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn publish_without_the_publish_token_gets_example_6_1_and_publishes_nothing() {
    let (server, run) = example_server();
    let mut c = Raw::open(server.addr, &upgrade_request("topic=news", false));
    assert_eq!(status_of(&c.head), 101, "{}", c.head);
    c.stream.write_all(&frame_of("4.2")).unwrap();
    let want = frame_of("6.1");
    assert_frame(&swap(&c.frame(), &run, DOC_RUN), &want, "6.1");
    // The connection stays open, and no EVENT of `news` came before the PONG.
    c.stream.write_all(&frame_of("4.6")).unwrap();
    let pong = frame_of("4.7");
    assert_frame(&c.frame(), &pong, "the PONG");
}

#[test]
fn sse_turns_cr_and_crlf_into_lf_while_frames_keep_the_bytes_as_in_6_2() {
    let want_frame = frame_of("6.2");
    let OwnedPayload::Event { topics, data, .. } = decode_one(&want_frame) else {
        panic!("example 6.2 is an EVENT");
    };
    assert!(data.contains(&b'\r'), "the example publishes a CR");
    let server = TestServer::start(&[]);
    let query = format!("topic={}", pct(&topics[0]));
    let mut frames = Raw::open(
        server.addr,
        format!("GET /frames?{query} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status_of(&frames.head), 101, "{}", frames.head);
    let mut sse = server.subscribe(&query, &[]);
    let id = server.publish(&query, std::str::from_utf8(&data).unwrap());
    let run = run_of(&id);

    let got = swap(&frames.frame(), &run, DOC_RUN);
    assert_frame(&got, &want_frame, "6.2, frames");
    let want_sse = example("6.2-sse").text;
    assert_eq!(first_sse_event(&mut sse, &run), want_sse, "6.2, SSE");
}

/// A stream's bytes from its first event on (after `retry:`), once it ends with a whole event,
/// with the run id swapped for the document's.
fn first_sse_event(sse: &mut SseClient, run: &str) -> String {
    assert!(
        sse.read_raw_until(|raw| raw.ends_with(b"\n\n") && raw.windows(3).any(|w| w == b"id:")),
        "{}",
        sse.raw_text()
    );
    let raw = swap(&sse.raw, run, DOC_RUN);
    let at = raw.windows(3).position(|w| w == b"id:").unwrap();
    String::from_utf8_lossy(&raw[at..]).into_owned()
}

#[test]
fn a_topic_line_stream_names_the_frame_topics_as_in_6_2_topic_line() {
    let (publish, subscribe) = (
        "POST /publish?topic=news/a&topic=news/b&event=kind",
        "GET /events?topic=news/*&topic_line=1",
    );
    assert!(PROTOCOL_MD.contains(publish) && PROTOCOL_MD.contains(subscribe));
    let server = TestServer::start(&[]);
    let mut frames = FrameClient::connect(server.addr, &["news/*"], None, None).unwrap();
    frames.ping(b"sync").unwrap();
    while !matches!(
        frames.recv(Some(TIMEOUT)).unwrap(),
        OwnedPayload::Pong { .. }
    ) {}
    let mut sse = server.subscribe("topic=news/*&topic_line=1", &[]);
    let id = server.publish("topic=news/a&topic=news/b&event=kind", "a\r\nb");
    let run = run_of(&id);
    let want = example("6.2-topic-line").text;
    assert_eq!(first_sse_event(&mut sse, &run), want, "6.2-topic-line");
    let OwnedPayload::Event { topics, .. } = frames.recv(Some(TIMEOUT)).unwrap() else {
        panic!("an EVENT");
    };
    let line = want.lines().find_map(|l| l.strip_prefix("data: "));
    assert_eq!(
        Some(topics.join(" ").as_str()),
        line,
        "the frame names the same topics"
    );
}

#[test]
fn event_frames_outgrow_max_frame_up_to_max_body_as_section_2_says() {
    // The configuration and sizes section 2 names.
    let example = "`--max-frame 1k --max-body 64k`";
    assert!(
        PROTOCOL_MD.contains(example),
        "section 2 changed its example"
    );
    assert!(PROTOCOL_MD.contains("PUBLISH frame of 2,048 bytes"));
    let server = TestServer::start(&["--max-frame", "1k", "--max-body", "64k"]);
    let mut big_enough = FrameClient::connect(server.addr, &["t"], None, None).unwrap();
    big_enough.set_max_payload(64 * 1024 + 65_536);
    let mut too_small = FrameClient::connect(server.addr, &["t"], None, None).unwrap();
    too_small.set_max_payload(1024);

    // A 64 KiB body on POST /publish is accepted and sent whole as one EVENT.
    let body = "x".repeat(64 * 1024);
    let id = server.publish("topic=t", &body);
    let event = big_enough.recv(Some(TIMEOUT)).unwrap();
    let mut encoded = Vec::new();
    event.encode_frame(&mut encoded).unwrap();
    assert!(encoded.len() - HEADER_LEN > 65_536, "{}", encoded.len());
    let OwnedPayload::Event { id: got, data, .. } = event else {
        panic!("{event:?}")
    };
    assert_eq!((got, data.len()), (id, body.len()));
    // A client whose limit is --max-frame fails on it: the server did not cut it down.
    let err = too_small.recv(Some(TIMEOUT)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");

    // A PUBLISH frame of 2,048 payload bytes is over --max-frame: fatal.
    let mut publisher = FrameClient::connect(server.addr, &["p"], None, None).unwrap();
    // Kind, correlation, one topic `t`, no event type, the data's length: 10 bytes.
    let data = vec![b'y'; 2048 - 10];
    publisher.publish(&["t"], "", &data, b"").unwrap();
    match publisher.recv(Some(TIMEOUT)).unwrap() {
        OwnedPayload::Error { code, about, .. } => {
            assert_eq!((code, about), (ErrorCode::FRAME_TOO_LARGE, 0));
        }
        other => panic!("{other:?}"),
    }
    // Then the close (a reset when the unread payload was still in the server's buffer).
    let end = publisher.recv(Some(TIMEOUT)).unwrap_err();
    let closed = [ErrorKind::UnexpectedEof, ErrorKind::ConnectionReset];
    assert!(closed.contains(&end.kind()), "{end}");
}

// ----- README.md and SECURITY.md: JSON and JWT claims ----------------------------------------------

/// Every JSON example of a document: ```json blocks, and code spans that open with `{`.
fn json_examples(md: &str) -> Vec<String> {
    let mut found: Vec<String> = blocks(md)
        .into_iter()
        .filter(|b| b.lang == "json")
        .map(|b| b.text)
        .collect();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            let spans = line.split('`').skip(1).step_by(2);
            found.extend(spans.filter(|s| s.starts_with('{')).map(str::to_string));
        }
    }
    found
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A topic a grant pattern covers: the pattern itself, or its prefix with `example` for `*`.
fn topic_under(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some(prefix) => format!("{prefix}example"),
        None => pattern.to_string(),
    }
}

#[test]
fn every_json_example_of_readme_and_security_parses() {
    for (doc, md) in [("README.md", README_MD), ("SECURITY.md", SECURITY_MD)] {
        let examples = json_examples(md);
        assert!(!examples.is_empty(), "{doc} has no JSON example");
        for text in examples {
            if let Err(e) = serde_json::from_str::<Value>(&text) {
                panic!("{doc}: {e} in\n{text}");
            }
        }
    }
}

#[test]
fn jwt_example_claims_of_readme_and_security_are_accepted_by_a_real_server() {
    const SECRET: &str = "docs-examples-secret-of-32-bytes!!";
    let server = TestServer::start(&["--jwt-secret", SECRET]);
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let mut checked = 0;
    for (doc, md) in [("README.md", README_MD), ("SECURITY.md", SECURITY_MD)] {
        for text in json_examples(md) {
            let claims: Value = serde_json::from_str(&text).unwrap();
            let Some(grants) = claims.get("sseloop") else {
                continue;
            };
            let token = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
            let auth = format!("Bearer {token}");
            let patterns = |list: &str| -> Vec<String> {
                let all = grants.get(list).and_then(Value::as_array);
                all.into_iter()
                    .flatten()
                    .map(|p| topic_under(p.as_str().unwrap()))
                    .collect()
            };
            for topic in patterns("subscribe") {
                let query = format!("topic={}", pct(&topic));
                let sse = SseClient::open(
                    server.addr,
                    &format!("/events?{query}"),
                    &[("Authorization", &auth)],
                );
                assert_eq!(sse.status, 200, "{doc}: stream {topic} with {text}");
                let frames = FrameClient::connect(server.addr, &[&topic], None, Some(&token));
                assert!(frames.is_ok(), "{doc}: frames {topic} with {text}");
                checked += 1;
            }
            for topic in patterns("publish") {
                let query = format!("topic={}", pct(&topic));
                let resp = server.post(&query, "hi", &[("Authorization", &auth)]);
                assert_eq!(resp.status, 200, "{doc}: publish {topic} with {text}");
                checked += 1;
            }
            // A reader who copies the example should not meet an expired token for years.
            let exp = claims["exp"].as_u64().unwrap_or(0);
            let years = 10 * 365 * 86_400;
            assert!(
                exp > now() + years,
                "{doc}: exp {exp} expires too soon in {text}"
            );
        }
    }
    assert!(checked >= 10, "claims examples went missing: {checked}");
}
