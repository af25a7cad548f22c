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

//!
//! Files: this one holds the kinds, the parsed [`Payload`] and the errors; `parse.rs` the parser
//! ([`parse`]), `encode.rs` the encoders (`encode_*_frame`).

mod encode;
mod parse;

#[cfg(test)]
mod tests;

use std::fmt;

use super::code::ErrorCode;
use super::codec::PayloadTooLarge;

pub use self::encode::{
    encode_error_frame, encode_event_frame, encode_goaway_frame, encode_ping_frame,
    encode_pong_frame, encode_publish_ack_frame, encode_publish_frame,
    encode_publish_frame_idempotent, encode_subscribe_frame, encode_unsubscribe_frame,
};
pub use self::parse::parse;

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
