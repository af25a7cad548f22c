//! Cross-module tests: property tests of encoder → stream → split reads → decoder → parser. The
//! examples of docs/PROTOCOL.md are checked byte for byte, against this codec, an independent
//! field-by-field reading of the specification and a real server, by `tests/docs_examples.rs`.

use proptest::collection::vec;
use proptest::prelude::*;

use super::code::ErrorCode;
use super::codec::{FrameDecoder, HEADER_LEN, MAGIC};
use super::owned::OwnedPayload;
use super::payload::{encode_publish_frame, parse, Payload};

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

#[test]
fn parse_errors_read_as_words_for_error_frames_not_as_debug_strings() {
    use super::payload::{Field, PayloadError};
    let cases = [
        (PayloadError::Empty, "empty payload"),
        (PayloadError::UnknownKind(0x0A), "unknown frame kind 0x0a"),
        (
            PayloadError::Truncated(Field::EventType),
            "payload ends inside the event type",
        ),
        (
            PayloadError::TrailingBytes(3),
            "3 bytes after the last field",
        ),
        (PayloadError::NotUtf8(Field::Topic), "topic is not UTF-8"),
        (PayloadError::NoTopics, "empty topic list"),
        (
            PayloadError::EmptyOptional(Field::IdempotencyKey),
            "idempotency key is present but empty",
        ),
    ];
    for (err, words) in cases {
        assert_eq!(err.to_string(), words);
    }
}
