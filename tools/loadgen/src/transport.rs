//! The seam between "how a subscriber asks for events and how they arrive" and the rest of the
//! tool. Today there is one transport, SSE over HTTP/1.1. sseloop's frame mode (`GET /frames`
//! upgraded to binary frames, decoded with `sseloop::frame`) becomes a second variant of
//! [`Transport`] and of [`StreamDecoder`]; the driver only calls the methods below, and both
//! transports hand it the same event body (see [`crate::payload`]).

use std::fmt;

use clap::ValueEnum;
use serde::Serialize;

use crate::http::{self, ChunkError, ChunkedDecoder, ResponseHead};
use crate::sse::SseParser;

/// How subscribers receive events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET` a `text/event-stream` (any SSE server).
    Sse,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Sse => "sse",
        })
    }
}

impl Transport {
    /// Appends the bytes that open one subscription.
    pub fn subscribe_request(self, out: &mut Vec<u8>, authority: &str, target: &str) {
        match self {
            Transport::Sse => http::get_request(out, authority, target),
        }
    }

    /// The decoder for a stream whose response head was `head` (already checked to be 200).
    pub fn decoder(self, head: &ResponseHead) -> StreamDecoder {
        match self {
            Transport::Sse => StreamDecoder::Sse {
                chunked: head.chunked.then(ChunkedDecoder::default),
                parser: SseParser::default(),
            },
        }
    }
}

/// A subscriber's stream could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The HTTP chunked framing was broken.
    Chunked(ChunkError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Chunked(e) => e.fmt(f),
        }
    }
}

/// Whether the stream goes on after a piece was decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// More may come.
    Open,
    /// The server ended the body (last chunk); the connection is done.
    Ended,
}

/// Per-subscriber decoding state once the stream is established.
#[derive(Clone, Debug)]
pub enum StreamDecoder {
    /// SSE, possibly inside HTTP chunked framing.
    Sse {
        /// Present when the body is chunked.
        chunked: Option<ChunkedDecoder>,
        /// The event-stream parser.
        parser: SseParser,
    },
}

impl StreamDecoder {
    /// Decodes the next bytes of the stream; `on_event` gets each event's body start.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        on_event: &mut impl FnMut(&[u8]),
    ) -> Result<Flow, DecodeError> {
        match self {
            StreamDecoder::Sse {
                chunked: None,
                parser,
            } => {
                parser.feed(bytes, on_event);
                Ok(Flow::Open)
            }
            StreamDecoder::Sse {
                chunked: Some(chunked),
                parser,
            } => {
                chunked
                    .feed(bytes, &mut |piece: &[u8]| parser.feed(piece, on_event))
                    .map_err(DecodeError::Chunked)?;
                Ok(if chunked.is_done() {
                    Flow::Ended
                } else {
                    Flow::Open
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_sse_stream() {
        let head = ResponseHead {
            status: 200,
            content_length: None,
            chunked: true,
        };
        let mut d = Transport::Sse.decoder(&head);
        let mut got = Vec::new();
        let stream = b"7\r\ndata: a\r\n6\r\n\n\ndata\r\n5\r\n: b\n\n\r\n0\r\n\r\n";
        let flow = d
            .feed(stream, &mut |e: &[u8]| got.push(e.to_vec()))
            .unwrap();
        assert_eq!(flow, Flow::Ended);
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
    }
}
