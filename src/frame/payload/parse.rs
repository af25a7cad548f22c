//! The payload parser: borrows from the payload, never allocates or panics; every length prefix is
//! checked against the bytes present, and the fields must use up the payload exactly.

use super::super::code::ErrorCode;
use super::{Field, Kind, Payload, PayloadError, TopicList};

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
