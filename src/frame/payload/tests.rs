use super::*;
use crate::frame::codec::FrameDecoder;
use crate::frame::codec::HEADER_LEN;

/// Encodes with `f`, checks the outer frame, and returns the payload.
fn payload_of(f: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out).unwrap();
    let frame = FrameDecoder::new(usize::MAX).decode(&out).unwrap().unwrap();
    assert_eq!(
        frame.frame_len(),
        out.len(),
        "encoder wrote exactly one frame"
    );
    out[frame.payload_range()].to_vec()
}

fn topics(p: &Payload<'_>) -> Vec<String> {
    match p {
        Payload::Event { topics, .. }
        | Payload::Publish { topics, .. }
        | Payload::Subscribe { topics, .. }
        | Payload::Unsubscribe { topics } => topics.iter().map(String::from).collect(),
        _ => Vec::new(),
    }
}

/// One encoded sample of every kind, with fields at awkward values.
fn samples() -> Vec<Vec<u8>> {
    let long = "t".repeat(255);
    vec![
        payload_of(|o| encode_event_frame(o, "mhc1x2k9-42", &["a/b", "c"], "tick", b"hi")),
        payload_of(|o| encode_event_frame(o, "", &[long.as_str()], "", b"")),
        payload_of(|o| encode_publish_frame(o, b"c-1", &["x"], "", b"{\"k\":1}")),
        payload_of(|o| encode_publish_frame(o, b"", &["x", "y", "z"], "t", &[0xFF; 300])),
        payload_of(|o| encode_publish_ack_frame(o, b"c-1", "run-7")),
        payload_of(|o| encode_subscribe_frame(o, &["news"], "run-3")),
        payload_of(|o| encode_subscribe_frame(o, &["a", "b"], "")),
        payload_of(|o| encode_unsubscribe_frame(o, &["a"])),
        payload_of(|o| encode_ping_frame(o, b"\0\x01")),
        payload_of(|o| encode_pong_frame(o, b"")),
        payload_of(|o| encode_error_frame(o, ErrorCode::BAD_TOPIC, 0x02, b"c", "bad topic")),
        payload_of(|o| encode_goaway_frame(o, ErrorCode::SHUTTING_DOWN, 1500, "bye")),
    ]
}

#[test]
fn every_kind_round_trips() {
    let mut seen = Vec::new();
    for bytes in samples() {
        let parsed = parse(&bytes).unwrap();
        seen.push(parsed.kind());
        assert_eq!(bytes[0], parsed.kind().byte());
        let mut again = Vec::new();
        parsed.encode_frame(&mut again).unwrap();
        assert_eq!(again[HEADER_LEN..], bytes[..], "{parsed:?}");
    }
    for kind in Kind::ALL {
        assert!(seen.contains(&kind), "{kind} has no sample");
    }
}

#[test]
fn fields_come_back() {
    let bytes = payload_of(|o| encode_event_frame(o, "r-42", &["a/b", "c:d"], "tick", b"\0body"));
    let p = parse(&bytes).unwrap();
    assert_eq!(topics(&p), ["a/b", "c:d"]);
    let Payload::Event {
        id,
        event_type,
        data,
        topics,
    } = p
    else {
        panic!("{p:?}")
    };
    assert_eq!((id, event_type, data), ("r-42", "tick", &b"\0body"[..]));
    assert_eq!((topics.len(), topics.is_empty()), (2, false));
    assert_eq!(topics.iter().len(), 2);
    assert_eq!(format!("{topics:?}"), r#"["a/b", "c:d"]"#);

    let bytes = payload_of(|o| encode_error_frame(o, ErrorCode(0x7777), 9, b"k", "m"));
    assert_eq!(
        parse(&bytes),
        Ok(Payload::Error {
            code: ErrorCode(0x7777),
            about: 9,
            correlation: b"k",
            message: "m"
        })
    );
}

#[test]
fn every_truncation_is_an_error_naming_a_field() {
    for bytes in samples() {
        for cut in 1..bytes.len() {
            match parse(&bytes[..cut]) {
                Err(PayloadError::Truncated(_)) => {}
                other => panic!("cut {cut} of {bytes:x?}: {other:?}"),
            }
        }
    }
}

#[test]
fn truncation_table() {
    use Field::*;
    let cases: &[(&[u8], Field)] = &[
        (b"\x01", Id),
        (b"\x01\x03ab", Id),
        (b"\x01\x00", TopicCount),
        (b"\x01\x00\x02\x01a", Topic),
        (b"\x01\x00\x01\x05abc", Topic),
        (b"\x01\x00\x01\x01a", EventType),
        (b"\x01\x00\x01\x01a\x00", Data),
        (b"\x01\x00\x01\x01a\x00\x00\x00\x00", Data),
        (b"\x01\x00\x01\x01a\x00\x00\x00\x00\x02x", Data),
        (b"\x01\x00\x01\x01a\x00\xFF\xFF\xFF\xFF", Data),
        (b"\x02", Correlation),
        (b"\x02\x00", TopicCount),
        (b"\x02\x00\x01\x01a\x01", EventType),
        (b"\x03\x00", Id),
        (b"\x04\x01\x01a", LastEventId),
        (b"\x04\x01\x01a\x09run", LastEventId),
        (b"\x05", TopicCount),
        (b"\x06", Opaque),
        (b"\x07\x02\x00", Opaque),
        (b"\x08\x01", Code),
        (b"\x08\x01\x01", About),
        (b"\x08\x01\x01\x02", Correlation),
        (b"\x08\x01\x01\x02\x00", Message),
        (b"\x08\x01\x01\x02\x00\x00", Message),
        (b"\x08\x01\x01\x02\x00\x00\x03ab", Message),
        (b"\x09\x03", Code),
        (b"\x09\x03\x02\x00\x00", RetryMs),
        (b"\x09\x03\x02\x00\x00\x00\x00", Message),
        (b"\x09\x03\x02\x00\x00\x00\x00\xFF\xFF", Message),
    ];
    for (input, field) in cases {
        assert_eq!(
            parse(input),
            Err(PayloadError::Truncated(*field)),
            "input {input:x?}"
        );
    }
}

#[test]
fn other_errors_table() {
    let cases: &[(&[u8], PayloadError)] = &[
        (b"", PayloadError::Empty),
        (b"\x00", PayloadError::UnknownKind(0x00)),
        (b"\x0A", PayloadError::UnknownKind(0x0A)),
        (b"\x40anything", PayloadError::UnknownKind(0x40)),
        (b"\xFF", PayloadError::UnknownKind(0xFF)),
        (b"\x06\x00\x00", PayloadError::TrailingBytes(1)),
        (b"\x07\x01x\x01\x02\x03", PayloadError::TrailingBytes(3)),
        (b"\x05\x01\x01a\x00", PayloadError::TrailingBytes(1)),
        (b"\x05\x00", PayloadError::NoTopics),
        (b"\x04\x00\x00", PayloadError::NoTopics),
        (
            b"\x01\x01\xFF\x01\x01a\x00\x00\x00\x00\x00",
            PayloadError::NotUtf8(Field::Id),
        ),
        (b"\x05\x01\x02\xC3\x28", PayloadError::NotUtf8(Field::Topic)),
        (
            b"\x02\x00\x01\x01a\x01\x80",
            PayloadError::NotUtf8(Field::EventType),
        ),
        (
            b"\x04\x01\x01a\x01\xFE",
            PayloadError::NotUtf8(Field::LastEventId),
        ),
        (b"\x03\x00\x01\xFF", PayloadError::NotUtf8(Field::Id)),
        (
            b"\x08\x00\x00\x00\x00\x00\x01\xFF",
            PayloadError::NotUtf8(Field::Message),
        ),
        (
            b"\x09\x00\x00\0\0\0\0\x00\x01\xFF",
            PayloadError::NotUtf8(Field::Message),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input), Err(*want), "input {input:x?}");
    }
}

#[test]
fn data_is_bytes_not_text() {
    let bytes = payload_of(|o| encode_publish_frame(o, b"", &["t"], "", &[0xFF, 0x00]));
    let Ok(Payload::Publish { data, .. }) = parse(&bytes) else {
        panic!()
    };
    assert_eq!(data, [0xFF, 0x00]);
}

#[test]
fn error_codes_for_payload_errors() {
    use PayloadError::*;
    assert_eq!(UnknownKind(0x33).code(), ErrorCode::UNKNOWN_KIND);
    assert_eq!(NotUtf8(Field::Topic).code(), ErrorCode::NOT_UTF8);
    for e in [Empty, Truncated(Field::Data), TrailingBytes(1), NoTopics] {
        assert_eq!(e.code(), ErrorCode::MALFORMED_PAYLOAD, "{e}");
    }
}

#[test]
fn encoder_limits_append_nothing() {
    let s256 = "x".repeat(256);
    let b256 = vec![0u8; 256];
    let many: Vec<String> = (0..256).map(|i| i.to_string()).collect();
    let none: [&str; 0] = [];
    let m65536 = "m".repeat(65_536);
    type Enc<'a> = Box<dyn Fn(&mut Vec<u8>) -> Result<(), EncodeError> + 'a>;
    let cases: Vec<(Enc<'_>, EncodeError)> = vec![
        (
            Box::new(|o| encode_event_frame(o, &s256, &["t"], "", b"")),
            EncodeError::TooLong(Field::Id),
        ),
        (
            Box::new(|o| encode_event_frame(o, "1", &[&s256], "", b"")),
            EncodeError::TooLong(Field::Topic),
        ),
        (
            Box::new(|o| encode_event_frame(o, "1", &["t"], &s256, b"")),
            EncodeError::TooLong(Field::EventType),
        ),
        (
            Box::new(|o| encode_publish_frame(o, &b256, &["t"], "", b"")),
            EncodeError::TooLong(Field::Correlation),
        ),
        (
            Box::new(|o| encode_publish_frame(o, b"", &many, "", b"")),
            EncodeError::TooLong(Field::TopicCount),
        ),
        (
            Box::new(|o| encode_publish_frame(o, b"", &none, "", b"")),
            EncodeError::NoTopics,
        ),
        (
            Box::new(|o| encode_publish_ack_frame(o, b"", &s256)),
            EncodeError::TooLong(Field::Id),
        ),
        (
            Box::new(|o| encode_subscribe_frame(o, &["a"], &s256)),
            EncodeError::TooLong(Field::LastEventId),
        ),
        (
            Box::new(|o| encode_unsubscribe_frame(o, &none)),
            EncodeError::NoTopics,
        ),
        (
            Box::new(|o| encode_ping_frame(o, &b256)),
            EncodeError::TooLong(Field::Opaque),
        ),
        (
            Box::new(|o| encode_error_frame(o, ErrorCode::INTERNAL, 0, b"", &m65536)),
            EncodeError::TooLong(Field::Message),
        ),
        (
            Box::new(|o| encode_goaway_frame(o, ErrorCode::NO_ERROR, 0, &m65536)),
            EncodeError::TooLong(Field::Message),
        ),
    ];
    for (i, (enc, want)) in cases.iter().enumerate() {
        let mut out = b"keep".to_vec();
        assert_eq!(enc(&mut out), Err(*want), "case {i}");
        assert_eq!(out, b"keep", "case {i}");
    }
    // The limits themselves are accepted.
    let s255 = "x".repeat(255);
    let max: Vec<String> = (0..255).map(|i| i.to_string()).collect();
    let mut out = Vec::new();
    encode_event_frame(&mut out, &s255, &[&s255], &s255, b"").unwrap();
    encode_publish_frame(&mut out, &[0; 255], &max, "", b"").unwrap();
    encode_goaway_frame(&mut out, ErrorCode::NO_ERROR, 0, &m65536[1..]).unwrap();
}

#[test]
fn kind_bytes_and_names() {
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        assert_eq!(usize::from(kind.byte()), i + 1);
        assert_eq!(Kind::from_byte(kind.byte()), Some(kind));
    }
    for byte in [0x00, 0x0A, 0x3F, 0x40, 0x7F, 0x80, 0xFE, 0xFF] {
        assert_eq!(Kind::from_byte(byte), None);
    }
    assert_eq!(Kind::PublishAck.to_string(), "PUBLISH_ACK");
    assert_eq!(ErrorCode::BAD_TOPIC.to_string(), "BAD_TOPIC (0x0201)");
    assert_eq!(ErrorCode(0x0999).to_string(), "0x0999");
    assert!(ErrorCode::BAD_MAGIC.is_fatal() && !ErrorCode::UNKNOWN_KIND.is_fatal());
}
