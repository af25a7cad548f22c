//! [`OwnedPayload`]: a payload that owns its fields, for code that keeps a message past the life
//! of the buffer it came from (the blocking client, tests, tools). The server itself works on the
//! borrowed [`Payload`] and never needs this.

use super::code::ErrorCode;
use super::payload::{
    encode_error_frame, encode_event_frame, encode_goaway_frame, encode_ping_frame,
    encode_pong_frame, encode_publish_ack_frame, encode_publish_frame_idempotent,
    encode_subscribe_frame, encode_unsubscribe_frame, EncodeError, Kind, Payload,
};

/// An owned [`Payload`]; the fields mean the same, and empty still stands for absent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // Each field is documented on the matching `Payload` variant.
pub enum OwnedPayload {
    /// See [`Payload::Event`].
    Event {
        id: String,
        topics: Vec<String>,
        event_type: String,
        data: Vec<u8>,
    },
    /// See [`Payload::Publish`].
    Publish {
        correlation: Vec<u8>,
        topics: Vec<String>,
        event_type: String,
        data: Vec<u8>,
        idempotency_key: String,
    },
    /// See [`Payload::PublishAck`].
    PublishAck { correlation: Vec<u8>, id: String },
    /// See [`Payload::Subscribe`].
    Subscribe {
        topics: Vec<String>,
        last_event_id: String,
    },
    /// See [`Payload::Unsubscribe`].
    Unsubscribe { topics: Vec<String> },
    /// See [`Payload::Ping`].
    Ping { opaque: Vec<u8> },
    /// See [`Payload::Pong`].
    Pong { opaque: Vec<u8> },
    /// See [`Payload::Error`].
    Error {
        code: ErrorCode,
        about: u8,
        correlation: Vec<u8>,
        message: String,
    },
    /// See [`Payload::GoAway`].
    GoAway {
        code: ErrorCode,
        retry_ms: u32,
        message: String,
    },
}

impl OwnedPayload {
    /// This payload's kind.
    pub fn kind(&self) -> Kind {
        match self {
            OwnedPayload::Event { .. } => Kind::Event,
            OwnedPayload::Publish { .. } => Kind::Publish,
            OwnedPayload::PublishAck { .. } => Kind::PublishAck,
            OwnedPayload::Subscribe { .. } => Kind::Subscribe,
            OwnedPayload::Unsubscribe { .. } => Kind::Unsubscribe,
            OwnedPayload::Ping { .. } => Kind::Ping,
            OwnedPayload::Pong { .. } => Kind::Pong,
            OwnedPayload::Error { .. } => Kind::Error,
            OwnedPayload::GoAway { .. } => Kind::GoAway,
        }
    }

    /// Appends this payload as a complete frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            OwnedPayload::Event {
                id,
                topics,
                event_type,
                data,
            } => encode_event_frame(out, id, topics, event_type, data),
            OwnedPayload::Publish {
                correlation,
                topics,
                event_type,
                data,
                idempotency_key,
            } => encode_publish_frame_idempotent(
                out,
                correlation,
                topics,
                event_type,
                data,
                idempotency_key,
            ),
            OwnedPayload::PublishAck { correlation, id } => {
                encode_publish_ack_frame(out, correlation, id)
            }
            OwnedPayload::Subscribe {
                topics,
                last_event_id,
            } => encode_subscribe_frame(out, topics, last_event_id),
            OwnedPayload::Unsubscribe { topics } => encode_unsubscribe_frame(out, topics),
            OwnedPayload::Ping { opaque } => encode_ping_frame(out, opaque),
            OwnedPayload::Pong { opaque } => encode_pong_frame(out, opaque),
            OwnedPayload::Error {
                code,
                about,
                correlation,
                message,
            } => encode_error_frame(out, *code, *about, correlation, message),
            OwnedPayload::GoAway {
                code,
                retry_ms,
                message,
            } => encode_goaway_frame(out, *code, *retry_ms, message),
        }
    }
}

impl From<Payload<'_>> for OwnedPayload {
    fn from(p: Payload<'_>) -> OwnedPayload {
        let strings =
            |topics: super::payload::TopicList<'_>| topics.iter().map(String::from).collect();
        match p {
            Payload::Event {
                id,
                topics,
                event_type,
                data,
            } => OwnedPayload::Event {
                id: id.into(),
                topics: strings(topics),
                event_type: event_type.into(),
                data: data.into(),
            },
            Payload::Publish {
                correlation,
                topics,
                event_type,
                data,
                idempotency_key,
            } => OwnedPayload::Publish {
                correlation: correlation.into(),
                topics: strings(topics),
                event_type: event_type.into(),
                data: data.into(),
                idempotency_key: idempotency_key.into(),
            },
            Payload::PublishAck { correlation, id } => OwnedPayload::PublishAck {
                correlation: correlation.into(),
                id: id.into(),
            },
            Payload::Subscribe {
                topics,
                last_event_id,
            } => OwnedPayload::Subscribe {
                topics: strings(topics),
                last_event_id: last_event_id.into(),
            },
            Payload::Unsubscribe { topics } => OwnedPayload::Unsubscribe {
                topics: strings(topics),
            },
            Payload::Ping { opaque } => OwnedPayload::Ping {
                opaque: opaque.into(),
            },
            Payload::Pong { opaque } => OwnedPayload::Pong {
                opaque: opaque.into(),
            },
            Payload::Error {
                code,
                about,
                correlation,
                message,
            } => OwnedPayload::Error {
                code,
                about,
                correlation: correlation.into(),
                message: message.into(),
            },
            Payload::GoAway {
                code,
                retry_ms,
                message,
            } => OwnedPayload::GoAway {
                code,
                retry_ms,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::codec::HEADER_LEN;
    use crate::frame::payload::parse;

    #[test]
    fn owned_and_borrowed_encode_alike() {
        let all = [
            OwnedPayload::Event {
                id: "r-1".into(),
                topics: vec!["a".into(), "b/c".into()],
                event_type: "t".into(),
                data: b"d".to_vec(),
            },
            OwnedPayload::Publish {
                correlation: b"7".to_vec(),
                topics: vec!["a".into()],
                event_type: String::new(),
                data: Vec::new(),
                idempotency_key: String::new(),
            },
            OwnedPayload::Publish {
                correlation: b"8".to_vec(),
                topics: vec!["a".into()],
                event_type: String::new(),
                data: b"d".to_vec(),
                idempotency_key: "order-42".into(),
            },
            OwnedPayload::PublishAck {
                correlation: Vec::new(),
                id: "r-2".into(),
            },
            OwnedPayload::Subscribe {
                topics: vec!["x".into()],
                last_event_id: "r-0".into(),
            },
            OwnedPayload::Unsubscribe {
                topics: vec!["x".into()],
            },
            OwnedPayload::Ping { opaque: vec![1, 2] },
            OwnedPayload::Pong { opaque: vec![] },
            OwnedPayload::Error {
                code: ErrorCode::INTERNAL,
                about: 2,
                correlation: b"7".to_vec(),
                message: "oops".into(),
            },
            OwnedPayload::GoAway {
                code: ErrorCode::NO_ERROR,
                retry_ms: 0,
                message: String::new(),
            },
        ];
        for owned in all {
            let mut bytes = Vec::new();
            owned.encode_frame(&mut bytes).unwrap();
            let parsed = parse(&bytes[HEADER_LEN..]).unwrap();
            assert_eq!(parsed.kind(), owned.kind());
            assert_eq!(OwnedPayload::from(parsed), owned);
            let mut again = Vec::new();
            parsed.encode_frame(&mut again).unwrap();
            assert_eq!(again, bytes);
        }
    }
}
