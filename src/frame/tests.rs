//! Cross-module tests: property tests of encoder → stream → split reads → decoder → parser, and
//! the worked examples of docs/PROTOCOL.md, which are checked byte for byte against an
//! independent field-by-field reading of the specification.

use proptest::collection::vec;
use proptest::prelude::*;

use super::code::ErrorCode;
use super::codec::{FrameDecoder, HEADER_LEN, MAGIC};
use super::owned::OwnedPayload;
use super::payload::{encode_publish_frame, parse, Kind, Payload};

/// Feeds `chunks` to a decoder the way the server does: append each read to one buffer, take
/// every complete frame out of it, then drop the consumed prefix.
fn decode_stream(dec: &FrameDecoder, chunks: &[&[u8]]) -> Vec<OwnedPayload> {
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(frame) = dec.decode(&buf[start..]).unwrap() {
            let payload = &buf[start..][frame.payload_range()];
            got.push(OwnedPayload::from(parse(payload).unwrap()));
            start += frame.frame_len();
        }
        buf.drain(..start);
        assert!(
            buf.len() < dec.max_frame_len(),
            "the remainder is one partial frame"
        );
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    got
}

fn encode_all(payloads: &[OwnedPayload]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        p.encode_frame(&mut out).unwrap();
    }
    out
}

/// A string of at most `max` bytes of arbitrary characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(move |chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

/// Limits of generated fields: full-size, or small enough that splitting a stream at every
/// byte stays cheap.
#[derive(Clone, Copy)]
struct Sizes {
    text: usize,
    message: usize,
    data: usize,
    topics: usize,
}

const FULL: Sizes = Sizes {
    text: 255,
    message: 1024,
    data: 2048,
    topics: 20,
};

const SMALL: Sizes = Sizes {
    text: 12,
    message: 12,
    data: 24,
    topics: 3,
};

fn topics(z: Sizes) -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        4 => vec("[A-Za-z0-9._~:/-]{1,128}", 1..=4).prop_map(move |mut t| {
            for topic in &mut t {
                topic.truncate(z.text.max(1));
            }
            t
        }),
        1 => vec(text(z.text), 1..=z.topics),
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode)
}

fn payload(z: Sizes) -> impl Strategy<Value = OwnedPayload> {
    let (t, d, m) = (z.text, z.data, z.message);
    prop_oneof![
        (text(t), topics(z), text(t), bytes(d)).prop_map(|(id, topics, event_type, data)| {
            OwnedPayload::Event {
                id,
                topics,
                event_type,
                data,
            }
        }),
        (bytes(t), topics(z), text(t), bytes(d)).prop_map(
            |(correlation, topics, event_type, data)| OwnedPayload::Publish {
                idempotency_key: if correlation.len() % 2 == 0 {
                    String::new()
                } else {
                    event_type.clone()
                },
                correlation,
                topics,
                event_type,
                data,
            }
        ),
        (bytes(t), text(t))
            .prop_map(|(correlation, id)| OwnedPayload::PublishAck { correlation, id }),
        (topics(z), text(t)).prop_map(|(topics, last_event_id)| OwnedPayload::Subscribe {
            topics,
            last_event_id
        }),
        topics(z).prop_map(|topics| OwnedPayload::Unsubscribe { topics }),
        bytes(t).prop_map(|opaque| OwnedPayload::Ping { opaque }),
        bytes(t).prop_map(|opaque| OwnedPayload::Pong { opaque }),
        (code(), any::<u8>(), bytes(t), text(m)).prop_map(|(code, about, correlation, message)| {
            OwnedPayload::Error {
                code,
                about,
                correlation,
                message,
            }
        }),
        (code(), any::<u32>(), text(m)).prop_map(|(code, retry_ms, message)| {
            OwnedPayload::GoAway {
                code,
                retry_ms,
                message,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn random_splits_give_back_the_same_payloads(
        payloads in vec(payload(FULL), 1..12),
        cuts in vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let stream = encode_all(&payloads);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        at.push(0);
        at.push(stream.len());
        at.sort_unstable();
        let chunks: Vec<&[u8]> = at.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
        let dec = FrameDecoder::new(1 << 20);
        prop_assert_eq!(decode_stream(&dec, &chunks), payloads);
    }

    #[test]
    fn small_streams_survive_every_split(payloads in vec(payload(SMALL), 1..4)) {
        let stream = encode_all(&payloads);
        let dec = FrameDecoder::new(1 << 20);
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&decode_stream(&dec, &bytewise), &payloads);
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            prop_assert_eq!(&decode_stream(&dec, &[a, b]), &payloads, "cut {}", cut);
        }
    }

    #[test]
    fn parse_never_panics_and_is_canonical(kind in 0u8..=11, body in bytes(96)) {
        // Mostly known kinds, so the bytes reach the field parsers.
        let mut input = vec![kind];
        input.extend_from_slice(&body);
        if let Ok(p) = parse(&input) {
            let mut again = Vec::new();
            p.encode_frame(&mut again).unwrap();
            prop_assert_eq!(&again[HEADER_LEN..], &input[..]);
        }
    }

    #[test]
    fn parse_never_panics_on_mutations(
        p in payload(FULL),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        p.encode_frame(&mut bytes).unwrap();
        let mut payload = bytes.split_off(HEADER_LEN);
        for (at, value) in edits {
            let i = at.index(payload.len());
            payload[i] = value;
        }
        payload.truncate(cut.index(payload.len() + 1));
        let _ = parse(&payload);
    }

    #[test]
    fn decode_never_panics_and_stays_in_bounds(buf in bytes(64), max in 0usize..40) {
        let dec = FrameDecoder::new(max);
        let mut input = MAGIC.to_vec();
        input.extend_from_slice(&buf);
        for candidate in [&buf[..], &input[..]] {
            if let Ok(Some(frame)) = dec.decode(candidate) {
                prop_assert!(frame.frame_len() <= candidate.len());
                prop_assert!(frame.payload_len() <= max);
            }
        }
    }
}

/// The worked examples of docs/PROTOCOL.md, in the order the document gives them.
fn examples() -> Vec<OwnedPayload> {
    vec![
        OwnedPayload::Event {
            id: "mhc1x2k9-42".into(),
            topics: vec!["news".into(), "sport/eu".into()],
            event_type: "score".into(),
            data: b"1-0".to_vec(),
        },
        OwnedPayload::Publish {
            correlation: b"c7".to_vec(),
            topics: vec!["news".into()],
            event_type: String::new(),
            data: b"hello".to_vec(),
            idempotency_key: String::new(),
        },
        OwnedPayload::PublishAck {
            correlation: b"c7".to_vec(),
            id: "mhc1x2k9-43".into(),
        },
        OwnedPayload::Subscribe {
            topics: vec!["sport/eu".into()],
            last_event_id: "mhc1x2k9-40".into(),
        },
        OwnedPayload::Unsubscribe {
            topics: vec!["news".into()],
        },
        OwnedPayload::Ping {
            opaque: vec![0, 0, 0, 1],
        },
        OwnedPayload::Pong {
            opaque: vec![0, 0, 0, 1],
        },
        OwnedPayload::Error {
            code: ErrorCode::BAD_TOPIC,
            about: Kind::Publish.byte(),
            correlation: b"c8".to_vec(),
            message: "bad topic".into(),
        },
        OwnedPayload::Error {
            code: ErrorCode::UNKNOWN_KIND,
            about: 0x0A,
            correlation: Vec::new(),
            message: String::new(),
        },
        OwnedPayload::GoAway {
            code: ErrorCode::SHUTTING_DOWN,
            retry_ms: 2000,
            message: "restarting".into(),
        },
    ]
}

/// The specification read field by field, independently of the encoder: each entry is the
/// bytes of one field and the comment the document prints beside them.
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

const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");

/// The ```hex blocks of the document, in order.
fn doc_hex_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in PROTOCOL_MD.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```hex") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The bytes of a hex block: on each line, the two-digit hex tokens before the comment.
fn hex_bytes(block: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in block.lines() {
        for token in line.split_whitespace() {
            match (token.len(), u8::from_str_radix(token, 16)) {
                (2, Ok(b)) => out.push(b),
                _ => break,
            }
        }
    }
    out
}

#[test]
fn layout_matches_the_encoder() {
    for p in examples() {
        let spec: Vec<u8> = layout(&p).into_iter().flat_map(|(b, _)| b).collect();
        let mut enc = Vec::new();
        p.encode_frame(&mut enc).unwrap();
        assert_eq!(spec, enc, "{p:?}");
    }
}

#[test]
fn protocol_md_examples_decode_as_documented() {
    let blocks = doc_hex_blocks();
    let examples = examples();
    assert_eq!(blocks.len(), examples.len(), "one hex block per example");
    let dec = FrameDecoder::default();
    for (block, want) in blocks.iter().zip(&examples) {
        assert_eq!(
            *block,
            render(&layout(want)),
            "document drifted from the examples"
        );
        let bytes = hex_bytes(block);
        let frame = dec.decode(&bytes).unwrap().unwrap();
        assert_eq!(frame.frame_len(), bytes.len());
        let parsed = parse(&bytes[frame.payload_range()]).unwrap();
        assert_eq!(OwnedPayload::from(parsed), *want);
    }
}

#[test]
fn protocol_md_unknown_kind_example() {
    // The document's example of a frame from a later version: kind 0x0A with one byte.
    let bytes = [0xCA, 0xFE, 0, 0, 0, 2, 0x0A, 0x01];
    let frame = FrameDecoder::default().decode(&bytes).unwrap().unwrap();
    let err = parse(&bytes[frame.payload_range()]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNKNOWN_KIND);
    assert!(PROTOCOL_MD.contains("ca fe 00 00 00 02 0a 01"));
}

#[test]
fn zero_length_payload_is_a_frame_but_not_a_message() {
    let bytes = [0xCA, 0xFE, 0, 0, 0, 0];
    let frame = FrameDecoder::default().decode(&bytes).unwrap().unwrap();
    assert_eq!(frame.frame_len(), HEADER_LEN);
    assert_eq!(
        parse(&bytes[frame.payload_range()]),
        Err(super::payload::PayloadError::Empty)
    );
}

#[test]
fn borrowed_payload_points_into_the_read_buffer() {
    let mut buf = Vec::new();
    OwnedPayload::Ping {
        opaque: b"xyz".to_vec(),
    }
    .encode_frame(&mut buf)
    .unwrap();
    let frame = FrameDecoder::default().decode(&buf).unwrap().unwrap();
    let Ok(Payload::Ping { opaque }) = parse(&buf[frame.payload_range()]) else {
        panic!()
    };
    // Zero copy: the parsed field is a slice of the caller's buffer.
    assert_eq!(opaque.as_ptr(), buf[HEADER_LEN + 2..].as_ptr());
}

/// Prints the examples as the document shows them:
/// `cargo test print_protocol_examples -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_protocol_examples() {
    for p in examples() {
        println!("{}\n```hex\n{}```\n", p.kind(), render(&layout(&p)));
    }
}

#[test]
fn present_but_empty_idempotency_key_is_malformed() {
    // Found by the frame_decode fuzz target: a zero-length key field would parse as "no key"
    // and re-encode without the field.
    let mut buf = Vec::new();
    encode_publish_frame(&mut buf, b"", &["t"], "", b"").unwrap();
    buf.push(0);
    let len = (buf.len() - HEADER_LEN) as u32;
    buf[2..6].copy_from_slice(&len.to_be_bytes());
    let err = parse(&buf[HEADER_LEN..]).unwrap_err();
    assert_eq!(
        err,
        super::payload::PayloadError::EmptyOptional(super::payload::Field::IdempotencyKey)
    );
    assert_eq!(err.code(), ErrorCode::MALFORMED_PAYLOAD);
}
