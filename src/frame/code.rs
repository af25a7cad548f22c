//! The error codes of ERROR and GOAWAY frames, in one registry shared by the codec (framing
//! errors) and the payload layer (parse errors), and by the server for its own refusals.
//!
//! The high byte of a code is its class, so a peer can act on a code it does not know: 0x00 no
//! error, 0x01 the frame could not be processed, 0x02 the request was refused, 0x03 the
//! connection is ending, 0x05 server fault. New codes are added within these classes.

use std::fmt;

/// The code carried by ERROR and GOAWAY frames. An open set: a peer may send codes this version
/// does not name, so it is a newtype rather than an enum. The high byte is the class (0x01 the
/// frame could not be processed, 0x02 the request was refused, 0x03 the connection is ending,
/// 0x05 server fault), so a receiver can act on the class of a code it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// Not an error: a GOAWAY for an ordinary close.
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0000);
    /// The frame did not start with `CA FE`. Fatal.
    pub const BAD_MAGIC: ErrorCode = ErrorCode(0x0101);
    /// The frame announced a payload over the receiver's limit. Fatal.
    pub const FRAME_TOO_LARGE: ErrorCode = ErrorCode(0x0102);
    /// The payload's fields did not parse (truncated, trailing bytes, empty topic list, ...).
    pub const MALFORMED_PAYLOAD: ErrorCode = ErrorCode(0x0103);
    /// The kind byte is unknown, or not accepted in this direction.
    pub const UNKNOWN_KIND: ErrorCode = ErrorCode(0x0104);
    /// A topic is empty, too long or has a character outside `[A-Za-z0-9._~:/-]`.
    pub const BAD_TOPIC: ErrorCode = ErrorCode(0x0201);
    /// The event type breaks the server's rules for event types.
    pub const BAD_EVENT_TYPE: ErrorCode = ErrorCode(0x0202);
    /// A string field, or the data of a PUBLISH, is not UTF-8.
    pub const NOT_UTF8: ErrorCode = ErrorCode(0x0203);
    /// The connection is not allowed to do this (e.g. publish without a token).
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(0x0204);
    /// The host embedding the server refused the request (its publish hook vetoed the event).
    pub const FORBIDDEN: ErrorCode = ErrorCode(0x0205);
    /// A PUBLISH whose data exceeds `--max-body`, or whose encoding would exceed
    /// `--max-queue-bytes`.
    pub const TOO_LARGE: ErrorCode = ErrorCode(0x0206);
    /// A PUBLISH over `--publish-rate`: nothing was published; the message says in how many
    /// seconds a token is back.
    pub const RATE_LIMITED: ErrorCode = ErrorCode(0x0207);
    /// A SUBSCRIBE that would take the stream past `--max-subscriptions-per-conn`: nothing of
    /// it was subscribed.
    pub const TOO_MANY_SUBSCRIPTIONS: ErrorCode = ErrorCode(0x0208);
    /// The client read too slowly and its queue overflowed.
    pub const SLOW_CONSUMER: ErrorCode = ErrorCode(0x0301);
    /// The server is shutting down.
    pub const SHUTTING_DOWN: ErrorCode = ErrorCode(0x0302);
    /// A server-wide capacity limit is reached (e.g. `--max-topics`); retry later.
    pub const OVERLOADED: ErrorCode = ErrorCode(0x0304);
    /// The token the connection was opened with has expired: reconnect with a fresh one.
    pub const TOKEN_EXPIRED: ErrorCode = ErrorCode(0x0303);
    /// The backplane did not accept a PUBLISH (Redis unreachable, or no answer within the
    /// append timeout). The event may still have been appended; retry later.
    pub const BACKPLANE_UNAVAILABLE: ErrorCode = ErrorCode(0x0305);
    /// An operator closed the connection through the server API (`DELETE
    /// /api/v1/connections/{id}` or a revocation); the message says why. Reconnecting is allowed
    /// (a banned subject's new stream is refused with `FORBIDDEN`).
    pub const DISCONNECTED: ErrorCode = ErrorCode(0x0310);
    /// GOAWAY answering a frame handshake over `--max-connections-per-ip` or
    /// `--max-new-connections-rate`; its retry hint says when to try again.
    pub const CONNECTION_LIMITED: ErrorCode = ErrorCode(0x0306);
    /// The server failed in a way that is not the client's fault.
    pub const INTERNAL: ErrorCode = ErrorCode(0x0501);

    /// The symbolic name of a code this version defines.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::NO_ERROR => "NO_ERROR",
            ErrorCode::BAD_MAGIC => "BAD_MAGIC",
            ErrorCode::FRAME_TOO_LARGE => "FRAME_TOO_LARGE",
            ErrorCode::MALFORMED_PAYLOAD => "MALFORMED_PAYLOAD",
            ErrorCode::UNKNOWN_KIND => "UNKNOWN_KIND",
            ErrorCode::BAD_TOPIC => "BAD_TOPIC",
            ErrorCode::BAD_EVENT_TYPE => "BAD_EVENT_TYPE",
            ErrorCode::NOT_UTF8 => "NOT_UTF8",
            ErrorCode::UNAUTHORIZED => "UNAUTHORIZED",
            ErrorCode::FORBIDDEN => "FORBIDDEN",
            ErrorCode::TOO_LARGE => "TOO_LARGE",
            ErrorCode::RATE_LIMITED => "RATE_LIMITED",
            ErrorCode::TOO_MANY_SUBSCRIPTIONS => "TOO_MANY_SUBSCRIPTIONS",
            ErrorCode::SLOW_CONSUMER => "SLOW_CONSUMER",
            ErrorCode::SHUTTING_DOWN => "SHUTTING_DOWN",
            ErrorCode::OVERLOADED => "OVERLOADED",
            ErrorCode::TOKEN_EXPIRED => "TOKEN_EXPIRED",
            ErrorCode::BACKPLANE_UNAVAILABLE => "BACKPLANE_UNAVAILABLE",
            ErrorCode::DISCONNECTED => "DISCONNECTED",
            ErrorCode::CONNECTION_LIMITED => "CONNECTION_LIMITED",
            ErrorCode::INTERNAL => "INTERNAL",
            _ => return None,
        })
    }

    /// The class: the high byte (see the module docs).
    pub fn class(self) -> u8 {
        let [class, _] = self.0.to_be_bytes();
        class
    }

    /// Whether the sender closes the connection after an ERROR with this code: the framing is
    /// lost, so nothing after it can be read.
    pub fn is_fatal(self) -> bool {
        matches!(self, ErrorCode::BAD_MAGIC | ErrorCode::FRAME_TOO_LARGE)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:04x})", self.0),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_classes_and_display() {
        let table = [
            (ErrorCode::NO_ERROR, "NO_ERROR", 0x00),
            (ErrorCode::BAD_MAGIC, "BAD_MAGIC", 0x01),
            (ErrorCode::FRAME_TOO_LARGE, "FRAME_TOO_LARGE", 0x01),
            (ErrorCode::MALFORMED_PAYLOAD, "MALFORMED_PAYLOAD", 0x01),
            (ErrorCode::UNKNOWN_KIND, "UNKNOWN_KIND", 0x01),
            (ErrorCode::BAD_TOPIC, "BAD_TOPIC", 0x02),
            (ErrorCode::BAD_EVENT_TYPE, "BAD_EVENT_TYPE", 0x02),
            (ErrorCode::NOT_UTF8, "NOT_UTF8", 0x02),
            (ErrorCode::UNAUTHORIZED, "UNAUTHORIZED", 0x02),
            (ErrorCode::FORBIDDEN, "FORBIDDEN", 0x02),
            (ErrorCode::TOO_LARGE, "TOO_LARGE", 0x02),
            (ErrorCode::RATE_LIMITED, "RATE_LIMITED", 0x02),
            (
                ErrorCode::TOO_MANY_SUBSCRIPTIONS,
                "TOO_MANY_SUBSCRIPTIONS",
                0x02,
            ),
            (ErrorCode::SLOW_CONSUMER, "SLOW_CONSUMER", 0x03),
            (ErrorCode::SHUTTING_DOWN, "SHUTTING_DOWN", 0x03),
            (ErrorCode::DISCONNECTED, "DISCONNECTED", 0x03),
            (ErrorCode::OVERLOADED, "OVERLOADED", 0x03),
            (ErrorCode::TOKEN_EXPIRED, "TOKEN_EXPIRED", 0x03),
            (
                ErrorCode::BACKPLANE_UNAVAILABLE,
                "BACKPLANE_UNAVAILABLE",
                0x03,
            ),
            (ErrorCode::CONNECTION_LIMITED, "CONNECTION_LIMITED", 0x03),
            (ErrorCode::INTERNAL, "INTERNAL", 0x05),
        ];
        for (code, name, class) in table {
            assert_eq!(code.name(), Some(name));
            assert_eq!(code.class(), class, "{name}");
            assert_eq!(code.to_string(), format!("{name} (0x{:04x})", code.0));
            assert_eq!(code.is_fatal(), class == 0x01 && code.0 <= 0x0102, "{name}");
        }
        assert_eq!(ErrorCode(0x0299).name(), None);
        assert_eq!(ErrorCode(0x0209).name(), None);
        assert_eq!(ErrorCode(0x0299).class(), 0x02);
        assert_eq!(ErrorCode(0x0299).to_string(), "0x0299");
    }
}
