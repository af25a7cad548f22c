//! Frame mode: the binary protocol spoken after `GET /frames` upgrades to `cafe`.
//!
//! This module owns the wire format and nothing else: [`codec`] finds frames (`CA FE`, a u32
//! length, the payload) in a buffer, [`payload`] parses and encodes the inner kinds, [`code`] is
//! the registry of error codes, and [`client`] is a small blocking client for tests and tools.
//! `codec`, `payload` and `code` are pure: no I/O, no allocation while decoding, and no panic on
//! any input. docs/PROTOCOL.md is the specification; its examples are checked byte for byte by
//! `tests/docs_examples.rs`.
//!
//! The server keeps the connection's read buffer and runs [`FrameDecoder::decode`] on it; each
//! complete frame's payload goes to [`parse`], and the replies and events go out through the
//! `encode_*_frame` functions, which append to the server's own write buffers.

// Parsing untrusted bytes must not panic: keep the panicking shortcuts out of non-test code.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod code;
pub mod codec;
mod owned;
pub mod payload;

#[cfg(test)]
mod tests;

pub use client::FrameClient;
pub use code::ErrorCode;
pub use codec::{
    begin_frame, encode_frame, encode_header, Frame, FrameDecoder, FrameError, FrameStart,
    PayloadTooLarge, DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAGIC,
};
pub use owned::OwnedPayload;
pub use payload::{
    encode_error_frame, encode_event_frame, encode_goaway_frame, encode_ping_frame,
    encode_pong_frame, encode_publish_ack_frame, encode_publish_frame,
    encode_publish_frame_idempotent, encode_subscribe_frame, encode_unsubscribe_frame, parse,
    EncodeError, Field, Kind, Payload, PayloadError, TopicIter, TopicList,
};
