//! Inner payloads: one kind byte, then that kind's fields in a fixed order, each either
//! fixed-size (big-endian) or length-prefixed. docs/PROTOCOL.md is the byte-level specification.
//!
//! Invariants:
//! - [`parse`] borrows from the payload and never allocates or panics. Every length prefix is
//!   checked against the bytes actually present before it is used, and the fields must use up
//!   the payload exactly, so each message has exactly one encoding.
//! - An unknown kind byte is [`PayloadError::UnknownKind`], which is not fatal: the outer framing
//!   is intact, so the receiver answers with an ERROR frame and reads on.
//! - The codec checks only structure, lengths and UTF-8. Topic syntax, id syntax and whether
//!   event data is UTF-8 are the server's to check.
//! - Optional fields are written empty when absent; "empty" and "absent" mean the same thing.
//! - Encoders check every length before writing, so a failing encoder appends nothing.

use std::fmt;

use super::code::ErrorCode;
use super::codec::{encode_header, PayloadTooLarge, HEADER_LEN};

/// The kind byte, the first byte of every payload.
///
/// Kinds 0x01-0x3F belong to protocol version 1 (0x0A-0x3F are reserved for later core kinds);
/// 0x40-0x7F are reserved for extensions negotiated in the handshake; 0x80-0xFE are for private
/// use and never assigned here; 0x00 and 0xFF are never valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Server to client: one published event.
    Event = 0x01,
    /// Client to server: publish one event to one or more topics.
    Publish = 0x02,
    /// Server to client: a PUBLISH was accepted, with the id it was given.
    PublishAck = 0x03,
    /// Client to server: add topics to the connection, optionally resuming after an id.
    Subscribe = 0x04,
    /// Client to server: remove topics from the connection.
    Unsubscribe = 0x05,
    /// Either way: asks the peer to echo the opaque bytes in a PONG.
    Ping = 0x06,
    /// Either way: the answer to a PING.
    Pong = 0x07,
    /// Either way: a request failed, or the connection is about to be closed for an error.
    Error = 0x08,
    /// Server to client: the server is closing the connection gracefully.
    GoAway = 0x09,
}

impl Kind {
    /// Every kind, in byte order.
    pub const ALL: [Kind; 9] = [
        Kind::Event,
        Kind::Publish,
        Kind::PublishAck,
        Kind::Subscribe,
        Kind::Unsubscribe,
        Kind::Ping,
        Kind::Pong,
        Kind::Error,
        Kind::GoAway,
    ];

    /// The kind a byte names, if this version knows it.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.byte() == byte)
    }

    /// The byte that names this kind on the wire.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The name docs/PROTOCOL.md uses.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Event => "EVENT",
            Kind::Publish => "PUBLISH",
            Kind::PublishAck => "PUBLISH_ACK",
            Kind::Subscribe => "SUBSCRIBE",
            Kind::Unsubscribe => "UNSUBSCRIBE",
            Kind::Ping => "PING",
            Kind::Pong => "PONG",
            Kind::Error => "ERROR",
            Kind::GoAway => "GOAWAY",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field of a payload, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// An event id (EVENT, PUBLISH_ACK).
    Id,
    /// The count byte of a topic list.
    TopicCount,
    /// One topic of a topic list.
    Topic,
    /// The event type.
    EventType,
    /// Event data.
    Data,
    /// A client's correlation id.
    Correlation,
    /// SUBSCRIBE's resume point.
    LastEventId,
    /// PING and PONG's opaque bytes.
    Opaque,
    /// The code of ERROR and GOAWAY.
    Code,
    /// ERROR's kind byte of the frame it answers.
    About,
    /// The message of ERROR and GOAWAY.
    Message,
    /// GOAWAY's reconnect hint.
    RetryMs,
    /// PUBLISH's optional idempotency key.
    IdempotencyKey,
}

impl fmt::Display for Field {
    /// The field's name in words, for ERROR messages a person reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Id => "id",
            Field::TopicCount => "topic count",
            Field::Topic => "topic",
            Field::EventType => "event type",
            Field::Data => "data",
            Field::Correlation => "correlation id",
            Field::LastEventId => "last event id",
            Field::Opaque => "opaque bytes",
            Field::Code => "code",
            Field::About => "about",
            Field::Message => "message",
            Field::RetryMs => "retry_ms",
            Field::IdempotencyKey => "idempotency key",
        })
    }
}

/// Why a payload did not parse. None of these is fatal: the frame boundaries are intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// The payload has no bytes, not even a kind.
    Empty,
    /// The kind byte is not one this version knows.
    UnknownKind(u8),
    /// The payload ends inside this field or its length prefix.
    Truncated(Field),
    /// Bytes are left after the kind's last field.
    TrailingBytes(usize),
    /// This string field is not UTF-8.
    NotUtf8(Field),
    /// A topic list has a count of zero.
    NoTopics,
    /// An optional field is present but empty (absent is how a payload says "none").
    EmptyOptional(Field),
}

impl PayloadError {
    /// The ERROR frame code for this error (the one place this mapping lives).
    pub fn code(self) -> ErrorCode {
        match self {
            PayloadError::UnknownKind(_) => ErrorCode::UNKNOWN_KIND,
            PayloadError::NotUtf8(_) => ErrorCode::NOT_UTF8,
            PayloadError::Empty
            | PayloadError::Truncated(_)
            | PayloadError::TrailingBytes(_)
            | PayloadError::NoTopics
            | PayloadError::EmptyOptional(_) => ErrorCode::MALFORMED_PAYLOAD,
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::Empty => f.write_str("empty payload"),
            PayloadError::UnknownKind(k) => write!(f, "unknown frame kind 0x{k:02x}"),
            PayloadError::Truncated(field) => write!(f, "payload ends inside the {field}"),
            PayloadError::TrailingBytes(n) => write!(f, "{n} bytes after the last field"),
            PayloadError::NotUtf8(field) => write!(f, "{field} is not UTF-8"),
            PayloadError::NoTopics => f.write_str("empty topic list"),
            PayloadError::EmptyOptional(field) => write!(f, "{field} is present but empty"),
        }
    }
}

impl std::error::Error for PayloadError {}

/// Why an encoder refused its input. Nothing was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The field is longer than its length prefix can say (topic lists: more than 255 topics).
    TooLong(Field),
    /// A topic list must name at least one topic.
    NoTopics,
    /// The whole payload is longer than the frame header can announce.
    PayloadTooLarge,
}

impl From<PayloadTooLarge> for EncodeError {
    fn from(_: PayloadTooLarge) -> Self {
        EncodeError::PayloadTooLarge
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLong(Field::TopicCount) => f.write_str("more than 255 topics"),
            EncodeError::TooLong(field) => write!(f, "{field:?} too long for its length prefix"),
            EncodeError::NoTopics => f.write_str("empty topic list"),
            EncodeError::PayloadTooLarge => f.write_str("payload longer than u32::MAX bytes"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// A parsed payload, borrowing from the frame. Empty strings and byte strings stand for absent
/// optional fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// See [`Kind::Event`].
    Event {
        /// The event's id: what to send as `Last-Event-ID` to resume after it.
        id: &'a str,
        /// Every topic the event was published to.
        topics: TopicList<'a>,
        /// The event type, empty for none.
        event_type: &'a str,
        /// The body.
        data: &'a [u8],
    },
    /// See [`Kind::Publish`].
    Publish {
        /// Echoed in the PUBLISH_ACK or ERROR that answers it; empty for none.
        correlation: &'a [u8],
        /// Topics to publish to.
        topics: TopicList<'a>,
        /// The event type, empty for none.
        event_type: &'a str,
        /// The body (the server requires UTF-8).
        data: &'a [u8],
        /// Optional trailing field: a repeat with the same key answers the first PUBLISH's id
        /// instead of publishing again (empty: none; an older client simply omits it).
        idempotency_key: &'a str,
    },
    /// See [`Kind::PublishAck`].
    PublishAck {
        /// The PUBLISH's correlation id.
        correlation: &'a [u8],
        /// The id the event was given.
        id: &'a str,
    },
    /// See [`Kind::Subscribe`].
    Subscribe {
        /// Topics to add.
        topics: TopicList<'a>,
        /// Replay retained events after this id; empty for no replay.
        last_event_id: &'a str,
    },
    /// See [`Kind::Unsubscribe`].
    Unsubscribe {
        /// Topics to remove.
        topics: TopicList<'a>,
    },
    /// See [`Kind::Ping`].
    Ping {
        /// Bytes the PONG must carry back.
        opaque: &'a [u8],
    },
    /// See [`Kind::Pong`].
    Pong {
        /// The PING's bytes.
        opaque: &'a [u8],
    },
    /// See [`Kind::Error`].
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Kind byte of the frame this answers; 0 when it answers none.
        about: u8,
        /// Correlation id of the PUBLISH this answers; empty otherwise.
        correlation: &'a [u8],
        /// Human-readable detail.
        message: &'a str,
    },
    /// See [`Kind::GoAway`].
    GoAway {
        /// Why ([`ErrorCode::NO_ERROR`], [`ErrorCode::SHUTTING_DOWN`], ...).
        code: ErrorCode,
        /// Suggested wait before reconnecting, in milliseconds; 0 for no hint.
        retry_ms: u32,
        /// Human-readable detail.
        message: &'a str,
    },
}

impl Payload<'_> {
    /// This payload's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Payload::Event { .. } => Kind::Event,
            Payload::Publish { .. } => Kind::Publish,
            Payload::PublishAck { .. } => Kind::PublishAck,
            Payload::Subscribe { .. } => Kind::Subscribe,
            Payload::Unsubscribe { .. } => Kind::Unsubscribe,
            Payload::Ping { .. } => Kind::Ping,
            Payload::Pong { .. } => Kind::Pong,
            Payload::Error { .. } => Kind::Error,
            Payload::GoAway { .. } => Kind::GoAway,
        }
    }

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

/// A parsed topic list: 1 to 255 UTF-8 topics, in wire order, read lazily from the frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TopicList<'a> {
    /// The topics' encoding after the count byte, already checked by [`parse`].
    raw: &'a [u8],
    count: u8,
}

impl<'a> TopicList<'a> {
    /// Number of topics (at least one).
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Always false for a parsed list; here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The topics, in wire order.
    pub fn iter(&self) -> TopicIter<'a> {
        TopicIter {
            rest: self.raw,
            left: self.count,
        }
    }
}

impl fmt::Debug for TopicList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for TopicList<'a> {
    type Item = &'a str;
    type IntoIter = TopicIter<'a>;

    fn into_iter(self) -> TopicIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`TopicList`].
#[derive(Clone, Debug)]
pub struct TopicIter<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for TopicIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.left = self.left.checked_sub(1)?;
        // `parse` checked these bytes; the checks here only keep this code panic-free.
        let (&len, tail) = self.rest.split_first()?;
        let (topic, rest) = tail.split_at_checked(usize::from(len))?;
        self.rest = rest;
        std::str::from_utf8(topic).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for TopicIter<'_> {}

/// Parses one payload (the bytes of a frame after its header).
pub fn parse(payload: &[u8]) -> Result<Payload<'_>, PayloadError> {
    let (&byte, body) = payload.split_first().ok_or(PayloadError::Empty)?;
    let kind = Kind::from_byte(byte).ok_or(PayloadError::UnknownKind(byte))?;
    let mut r = Reader { rest: body };
    // Struct fields are evaluated in the order written, which is the wire order.
    let parsed = match kind {
        Kind::Event => Payload::Event {
            id: r.str8(Field::Id)?,
            topics: r.topics()?,
            event_type: r.str8(Field::EventType)?,
            data: r.bytes32(Field::Data)?,
        },
        Kind::Publish => Payload::Publish {
            correlation: r.bytes8(Field::Correlation)?,
            topics: r.topics()?,
            event_type: r.str8(Field::EventType)?,
            data: r.bytes32(Field::Data)?,
            // Present-but-empty would re-encode as absent, so it is refused rather than
            // read as "no key".
            idempotency_key: if r.rest.is_empty() {
                ""
            } else {
                match r.str8(Field::IdempotencyKey)? {
                    "" => return Err(PayloadError::EmptyOptional(Field::IdempotencyKey)),
                    key => key,
                }
            },
        },
        Kind::PublishAck => Payload::PublishAck {
            correlation: r.bytes8(Field::Correlation)?,
            id: r.str8(Field::Id)?,
        },
        Kind::Subscribe => Payload::Subscribe {
            topics: r.topics()?,
            last_event_id: r.str8(Field::LastEventId)?,
        },
        Kind::Unsubscribe => Payload::Unsubscribe {
            topics: r.topics()?,
        },
        Kind::Ping => Payload::Ping {
            opaque: r.bytes8(Field::Opaque)?,
        },
        Kind::Pong => Payload::Pong {
            opaque: r.bytes8(Field::Opaque)?,
        },
        Kind::Error => Payload::Error {
            code: ErrorCode(u16::from_be_bytes(r.array(Field::Code)?)),
            about: u8::from_be_bytes(r.array(Field::About)?),
            correlation: r.bytes8(Field::Correlation)?,
            message: r.str16(Field::Message)?,
        },
        Kind::GoAway => Payload::GoAway {
            code: ErrorCode(u16::from_be_bytes(r.array(Field::Code)?)),
            retry_ms: u32::from_be_bytes(r.array(Field::RetryMs)?),
            message: r.str16(Field::Message)?,
        },
    };
    match r.rest.len() {
        0 => Ok(parsed),
        extra => Err(PayloadError::TrailingBytes(extra)),
    }
}

/// Consumes a payload front to back; every read checks the bytes present first.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], PayloadError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(PayloadError::Truncated(field))?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], PayloadError> {
        self.take(N, field)?
            .try_into()
            .map_err(|_| PayloadError::Truncated(field))
    }

    fn bytes8(&mut self, field: Field) -> Result<&'a [u8], PayloadError> {
        let [len] = self.array(field)?;
        self.take(usize::from(len), field)
    }

    fn bytes16(&mut self, field: Field) -> Result<&'a [u8], PayloadError> {
        let len = u16::from_be_bytes(self.array(field)?);
        self.take(usize::from(len), field)
    }

    fn bytes32(&mut self, field: Field) -> Result<&'a [u8], PayloadError> {
        let len = u32::from_be_bytes(self.array(field)?);
        // A length past the end (even one above usize::MAX) is caught by `take`, which only
        // compares it with what is present.
        let len = usize::try_from(len).map_err(|_| PayloadError::Truncated(field))?;
        self.take(len, field)
    }

    fn str8(&mut self, field: Field) -> Result<&'a str, PayloadError> {
        let bytes = self.bytes8(field)?;
        std::str::from_utf8(bytes).map_err(|_| PayloadError::NotUtf8(field))
    }

    fn str16(&mut self, field: Field) -> Result<&'a str, PayloadError> {
        let bytes = self.bytes16(field)?;
        std::str::from_utf8(bytes).map_err(|_| PayloadError::NotUtf8(field))
    }

    fn topics(&mut self) -> Result<TopicList<'a>, PayloadError> {
        let [count] = self.array(Field::TopicCount)?;
        if count == 0 {
            return Err(PayloadError::NoTopics);
        }
        let start = self.rest;
        for _ in 0..count {
            self.str8(Field::Topic)?;
        }
        let used = start.len() - self.rest.len();
        let raw = start
            .get(..used)
            .ok_or(PayloadError::Truncated(Field::Topic))?;
        Ok(TopicList { raw, count })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::codec::FrameDecoder;

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
        let bytes =
            payload_of(|o| encode_event_frame(o, "r-42", &["a/b", "c:d"], "tick", b"\0body"));
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
}
