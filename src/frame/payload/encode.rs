//! The payload encoders, one per kind, each appending one whole frame (header and payload) to the
//! caller's buffer; every length is checked before anything is written, so a failing encoder
//! appends nothing.

use super::super::code::ErrorCode;
use super::super::codec::{encode_header, HEADER_LEN};
use super::{EncodeError, Field, Kind, Payload};

impl Payload<'_> {
    /// Appends this payload as a complete frame (re-encoding a parsed payload gives back the
    /// same bytes).
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match *self {
            Payload::Event {
                id,
                topics,
                event_type,
                data,
            } => event_frame(out, id, topics.iter(), event_type, data),
            Payload::Publish {
                correlation,
                topics,
                event_type,
                data,
                idempotency_key,
            } => publish_frame(
                out,
                correlation,
                topics.iter(),
                event_type,
                data,
                idempotency_key,
            ),
            Payload::PublishAck { correlation, id } => {
                encode_publish_ack_frame(out, correlation, id)
            }
            Payload::Subscribe {
                topics,
                last_event_id,
            } => topics_frame(out, Kind::Subscribe, topics.iter(), Some(last_event_id)),
            Payload::Unsubscribe { topics } => {
                topics_frame(out, Kind::Unsubscribe, topics.iter(), None)
            }
            Payload::Ping { opaque } => encode_ping_frame(out, opaque),
            Payload::Pong { opaque } => encode_pong_frame(out, opaque),
            Payload::Error {
                code,
                about,
                correlation,
                message,
            } => encode_error_frame(out, code, about, correlation, message),
            Payload::GoAway {
                code,
                retry_ms,
                message,
            } => encode_goaway_frame(out, code, retry_ms, message),
        }
    }
}

/// Appends an EVENT frame. `topics` are all the topics the event was published to, so one
/// encoding serves every subscriber.
pub fn encode_event_frame<T: AsRef<str>>(
    out: &mut Vec<u8>,
    id: &str,
    topics: &[T],
    event_type: &str,
    data: &[u8],
) -> Result<(), EncodeError> {
    event_frame(out, id, topics.iter().map(T::as_ref), event_type, data)
}

/// Appends a PUBLISH frame.
pub fn encode_publish_frame<T: AsRef<str>>(
    out: &mut Vec<u8>,
    correlation: &[u8],
    topics: &[T],
    event_type: &str,
    data: &[u8],
) -> Result<(), EncodeError> {
    publish_frame(
        out,
        correlation,
        topics.iter().map(T::as_ref),
        event_type,
        data,
        "",
    )
}

/// Appends a PUBLISH frame carrying an idempotency key (1..=128 visible ASCII characters for
/// the server to accept it).
pub fn encode_publish_frame_idempotent<T: AsRef<str>>(
    out: &mut Vec<u8>,
    correlation: &[u8],
    topics: &[T],
    event_type: &str,
    data: &[u8],
    idempotency_key: &str,
) -> Result<(), EncodeError> {
    publish_frame(
        out,
        correlation,
        topics.iter().map(T::as_ref),
        event_type,
        data,
        idempotency_key,
    )
}

/// Appends a PUBLISH_ACK frame.
pub fn encode_publish_ack_frame(
    out: &mut Vec<u8>,
    correlation: &[u8],
    id: &str,
) -> Result<(), EncodeError> {
    let len = 1 + len8(Field::Correlation, correlation)? + len8(Field::Id, id.as_bytes())?;
    let mut w = Writer::start(out, Kind::PublishAck, len)?;
    w.bytes8(correlation);
    w.bytes8(id.as_bytes());
    Ok(())
}

/// Appends a SUBSCRIBE frame; an empty `last_event_id` asks for no replay.
pub fn encode_subscribe_frame<T: AsRef<str>>(
    out: &mut Vec<u8>,
    topics: &[T],
    last_event_id: &str,
) -> Result<(), EncodeError> {
    let topics = topics.iter().map(T::as_ref);
    topics_frame(out, Kind::Subscribe, topics, Some(last_event_id))
}

/// Appends an UNSUBSCRIBE frame.
pub fn encode_unsubscribe_frame<T: AsRef<str>>(
    out: &mut Vec<u8>,
    topics: &[T],
) -> Result<(), EncodeError> {
    topics_frame(out, Kind::Unsubscribe, topics.iter().map(T::as_ref), None)
}

/// Appends a PING frame.
pub fn encode_ping_frame(out: &mut Vec<u8>, opaque: &[u8]) -> Result<(), EncodeError> {
    opaque_frame(out, Kind::Ping, opaque)
}

/// Appends a PONG frame.
pub fn encode_pong_frame(out: &mut Vec<u8>, opaque: &[u8]) -> Result<(), EncodeError> {
    opaque_frame(out, Kind::Pong, opaque)
}

/// Appends an ERROR frame. `about` is the kind byte of the frame it answers (0 for none),
/// `correlation` the id of the PUBLISH it answers (empty otherwise).
pub fn encode_error_frame(
    out: &mut Vec<u8>,
    code: ErrorCode,
    about: u8,
    correlation: &[u8],
    message: &str,
) -> Result<(), EncodeError> {
    let len = 1 + 2 + 1 + len8(Field::Correlation, correlation)? + len16(message.as_bytes())?;
    let mut w = Writer::start(out, Kind::Error, len)?;
    w.out.extend_from_slice(&code.0.to_be_bytes());
    w.out.push(about);
    w.bytes8(correlation);
    w.bytes16(message.as_bytes());
    Ok(())
}

/// Appends a GOAWAY frame; `retry_ms` 0 means no reconnect hint.
pub fn encode_goaway_frame(
    out: &mut Vec<u8>,
    code: ErrorCode,
    retry_ms: u32,
    message: &str,
) -> Result<(), EncodeError> {
    let len = 1 + 2 + 4 + len16(message.as_bytes())?;
    let mut w = Writer::start(out, Kind::GoAway, len)?;
    w.out.extend_from_slice(&code.0.to_be_bytes());
    w.out.extend_from_slice(&retry_ms.to_be_bytes());
    w.bytes16(message.as_bytes());
    Ok(())
}

fn event_frame<'t>(
    out: &mut Vec<u8>,
    id: &str,
    topics: impl Iterator<Item = &'t str> + Clone,
    event_type: &str,
    data: &[u8],
) -> Result<(), EncodeError> {
    let (topics_len, count) = topics_len(topics.clone())?;
    let len = 1
        + len8(Field::Id, id.as_bytes())?
        + topics_len
        + len8(Field::EventType, event_type.as_bytes())?
        + len32(data)?;
    let mut w = Writer::start(out, Kind::Event, len)?;
    w.bytes8(id.as_bytes());
    w.topics(count, topics);
    w.bytes8(event_type.as_bytes());
    w.bytes32(data);
    Ok(())
}

fn publish_frame<'t>(
    out: &mut Vec<u8>,
    correlation: &[u8],
    topics: impl Iterator<Item = &'t str> + Clone,
    event_type: &str,
    data: &[u8],
    idempotency_key: &str,
) -> Result<(), EncodeError> {
    let (topics_len, count) = topics_len(topics.clone())?;
    let key_len = match idempotency_key {
        "" => 0,
        key => len8(Field::IdempotencyKey, key.as_bytes())?,
    };
    let len = 1
        + len8(Field::Correlation, correlation)?
        + topics_len
        + len8(Field::EventType, event_type.as_bytes())?
        + len32(data)?
        + key_len;
    let mut w = Writer::start(out, Kind::Publish, len)?;
    w.bytes8(correlation);
    w.topics(count, topics);
    w.bytes8(event_type.as_bytes());
    w.bytes32(data);
    if !idempotency_key.is_empty() {
        w.bytes8(idempotency_key.as_bytes());
    }
    Ok(())
}

/// SUBSCRIBE (with a last event id) and UNSUBSCRIBE (without).
fn topics_frame<'t>(
    out: &mut Vec<u8>,
    kind: Kind,
    topics: impl Iterator<Item = &'t str> + Clone,
    last_event_id: Option<&str>,
) -> Result<(), EncodeError> {
    let (topics_len, count) = topics_len(topics.clone())?;
    let last_len = match last_event_id {
        Some(id) => len8(Field::LastEventId, id.as_bytes())?,
        None => 0,
    };
    let mut w = Writer::start(out, kind, 1 + topics_len + last_len)?;
    w.topics(count, topics);
    if let Some(id) = last_event_id {
        w.bytes8(id.as_bytes());
    }
    Ok(())
}

fn opaque_frame(out: &mut Vec<u8>, kind: Kind, opaque: &[u8]) -> Result<(), EncodeError> {
    let mut w = Writer::start(out, kind, 1 + len8(Field::Opaque, opaque)?)?;
    w.bytes8(opaque);
    Ok(())
}

/// Encoded size of a u8-prefixed field.
fn len8(field: Field, bytes: &[u8]) -> Result<usize, EncodeError> {
    match u8::try_from(bytes.len()) {
        Ok(_) => Ok(1 + bytes.len()),
        Err(_) => Err(EncodeError::TooLong(field)),
    }
}

/// Encoded size of a u16-prefixed field (only the message uses one).
fn len16(bytes: &[u8]) -> Result<usize, EncodeError> {
    match u16::try_from(bytes.len()) {
        Ok(_) => Ok(2 + bytes.len()),
        Err(_) => Err(EncodeError::TooLong(Field::Message)),
    }
}

/// Encoded size of a u32-prefixed field (only data uses one).
fn len32(bytes: &[u8]) -> Result<usize, EncodeError> {
    match u32::try_from(bytes.len()) {
        Ok(_) => Ok(4 + bytes.len()),
        Err(_) => Err(EncodeError::TooLong(Field::Data)),
    }
}

/// Encoded size and count of a topic list.
fn topics_len<'t>(topics: impl Iterator<Item = &'t str>) -> Result<(usize, u8), EncodeError> {
    let mut count = 0usize;
    let mut len = 1;
    for topic in topics {
        count += 1;
        len += len8(Field::Topic, topic.as_bytes())?;
    }
    match u8::try_from(count) {
        Ok(0) => Err(EncodeError::NoTopics),
        Ok(count) => Ok((len, count)),
        Err(_) => Err(EncodeError::TooLong(Field::TopicCount)),
    }
}

/// Writes a frame whose payload length was computed (and every field length checked) up front,
/// so the output is reserved once and the writes below cannot fail.
struct Writer<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> Writer<'o> {
    fn start(out: &'o mut Vec<u8>, kind: Kind, payload_len: usize) -> Result<Self, EncodeError> {
        let len = u32::try_from(payload_len).map_err(|_| EncodeError::PayloadTooLarge)?;
        out.reserve(HEADER_LEN + payload_len);
        out.extend_from_slice(&encode_header(len));
        out.push(kind.byte());
        Ok(Writer { out })
    }

    // The casts below are lossless: `len8`, `len16` and `len32` checked each length.

    fn bytes8(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= usize::from(u8::MAX));
        self.out.push(bytes.len() as u8);
        self.out.extend_from_slice(bytes);
    }

    fn bytes16(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= usize::from(u16::MAX));
        self.out
            .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        self.out.extend_from_slice(bytes);
    }

    fn bytes32(&mut self, bytes: &[u8]) {
        debug_assert!(u32::try_from(bytes.len()).is_ok());
        self.out
            .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.out.extend_from_slice(bytes);
    }

    fn topics<'t>(&mut self, count: u8, topics: impl Iterator<Item = &'t str>) {
        self.out.push(count);
        for topic in topics {
            self.bytes8(topic.as_bytes());
        }
    }
}
