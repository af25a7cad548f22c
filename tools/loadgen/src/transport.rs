//! The seam between "how a subscriber asks for events and how they arrive" and the rest of the
//! tool. Today there is one transport, SSE over HTTP/1.1. sseloop's frame mode (`GET /frames`
//! upgraded to binary frames, decoded with `sseloop::frame`) becomes a second variant of
//! [`Transport`] and of [`StreamDecoder`]; the driver only calls the methods below, and both
//! transports hand it the same event body (see [`crate::payload`]).

use std::fmt;

use clap::ValueEnum;
use serde::Serialize;

use sseloop::frame::code::ErrorCode;
use sseloop::frame::codec::{FrameDecoder, FrameError, HEADER_LEN};
use sseloop::frame::payload::{self as fpayload, Payload, PayloadError};

use crate::http::{self, ChunkError, ChunkedDecoder, ResponseHead};
use crate::sse::SseParser;

/// Largest frame payload a frames subscriber accepts (the server's default limit).
pub const FRAME_MAX_PAYLOAD: usize = sseloop::frame::codec::DEFAULT_MAX_PAYLOAD;

/// How subscribers receive events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET` a `text/event-stream` (any SSE server).
    Sse,
    /// sseloop's frame mode: `GET /frames?topic=T` upgraded (`101`) to binary frames, decoded
    /// with `sseloop::frame`. Point `--url-template` at `/frames?topic={topic}`.
    Frames,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Sse => "sse",
            Transport::Frames => "frames",
        })
    }
}

impl Transport {
    /// Appends the bytes that open one subscription.
    pub fn subscribe_request(self, out: &mut Vec<u8>, authority: &str, target: &str) {
        match self {
            Transport::Sse => http::get_request(out, authority, target),
            Transport::Frames => {
                out.extend_from_slice(b"GET ");
                out.extend_from_slice(target.as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
                out.extend_from_slice(authority.as_bytes());
                out.extend_from_slice(b"\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n\r\n");
            }
        }
    }

    /// The status that opens the stream: 200 for SSE, 101 (Switching Protocols) for frames.
    pub fn expected_status(self) -> u16 {
        match self {
            Transport::Sse => 200,
            Transport::Frames => 101,
        }
    }

    /// The decoder for a stream whose response head was `head` (already checked to be 200).
    pub fn decoder(self, head: &ResponseHead) -> StreamDecoder {
        match self {
            Transport::Sse => StreamDecoder::Sse {
                chunked: head.chunked.then(ChunkedDecoder::default),
                parser: SseParser::default(),
            },
            Transport::Frames => StreamDecoder::Frames(FrameStream::new(FRAME_MAX_PAYLOAD)),
        }
    }
}

/// How events are published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishTransport {
    /// `POST` to the publish URL (any server).
    Http,
    /// sseloop PUBLISH frames, ACKed with PUBLISH_ACK.
    Frames,
}

/// A subscriber's stream could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The HTTP chunked framing was broken.
    Chunked(ChunkError),
    /// The frame stream was broken (bad magic, oversized frame).
    Frame(FrameError),
    /// A frame's payload did not parse.
    Payload(PayloadError),
    /// The server sent an ERROR or GOAWAY frame with this code.
    Server(ErrorCode),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Chunked(e) => e.fmt(f),
            DecodeError::Frame(e) => e.fmt(f),
            DecodeError::Payload(e) => write!(f, "frame payload: {e:?}"),
            DecodeError::Server(code) => write!(
                f,
                "server sent ERROR/GOAWAY {:#06x} ({})",
                code.0,
                code.name().unwrap_or("unknown")
            ),
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
    /// sseloop frames after the `101` head.
    Frames(FrameStream),
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
            StreamDecoder::Frames(frames) => frames.feed(bytes, on_event),
        }
    }
}

/// Incremental frame-stream decoder.
///
/// Zero-copy in steady state: frames that lie wholly inside one `feed` are decoded in place from
/// the caller's read buffer. Only a frame that straddles two reads is assembled in `pending`
/// (at most one frame, bounded by the decoder's limit), and only its missing bytes are copied.
#[derive(Clone, Debug)]
pub struct FrameStream {
    decoder: FrameDecoder,
    /// The start of a frame the previous reads left incomplete.
    pending: Vec<u8>,
}

impl FrameStream {
    /// A stream decoder accepting payloads up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> FrameStream {
        FrameStream {
            decoder: FrameDecoder::new(max_payload),
            pending: Vec::new(),
        }
    }

    /// Bytes held back for an incomplete frame.
    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Decodes `bytes`; `on_event` gets each EVENT frame's data.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        on_event: &mut impl FnMut(&[u8]),
    ) -> Result<Flow, DecodeError> {
        if !self.pending.is_empty() {
            // Complete the straddling frame: first its header, then exactly its remaining bytes.
            if self.pending.len() < HEADER_LEN {
                let take = (HEADER_LEN - self.pending.len()).min(bytes.len());
                self.pending.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.pending.len() < HEADER_LEN {
                    // Still no full header: let the decoder refuse bad magic early.
                    self.decoder
                        .decode(&self.pending)
                        .map_err(DecodeError::Frame)?;
                    return Ok(Flow::Open);
                }
            }
            self.decoder
                .decode(&self.pending)
                .map_err(DecodeError::Frame)?;
            let len = u32::from_be_bytes([
                self.pending[2],
                self.pending[3],
                self.pending[4],
                self.pending[5],
            ]) as usize
                + HEADER_LEN;
            let take = (len - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            match self
                .decoder
                .decode(&self.pending)
                .map_err(DecodeError::Frame)?
            {
                None => return Ok(Flow::Open),
                Some(frame) => {
                    let flow = handle_payload(&self.pending[frame.payload_range()], on_event)?;
                    self.pending.clear();
                    if flow == Flow::Ended {
                        return Ok(flow);
                    }
                }
            }
        }
        loop {
            match self.decoder.decode(bytes).map_err(DecodeError::Frame)? {
                Some(frame) => {
                    if handle_payload(&bytes[frame.payload_range()], on_event)? == Flow::Ended {
                        return Ok(Flow::Ended);
                    }
                    bytes = &bytes[frame.frame_len()..];
                }
                None => {
                    self.pending.extend_from_slice(bytes);
                    return Ok(Flow::Open);
                }
            }
        }
    }
}

/// Acts on one frame payload a subscriber received.
fn handle_payload(payload: &[u8], on_event: &mut impl FnMut(&[u8])) -> Result<Flow, DecodeError> {
    match fpayload::parse(payload).map_err(DecodeError::Payload)? {
        Payload::Event { data, .. } => {
            on_event(data);
            Ok(Flow::Open)
        }
        // A subscriber sends nothing after the handshake, so any ERROR (e.g. SLOW_CONSUMER) is
        // the server giving up on it.
        Payload::Error { code, .. } => Err(DecodeError::Server(code)),
        Payload::GoAway { code, .. } => {
            if code == ErrorCode::NO_ERROR {
                Ok(Flow::Ended)
            } else {
                Err(DecodeError::Server(code))
            }
        }
        // PING is not sent to subscribers by the server in these runs; other kinds carry nothing
        // a subscriber counts.
        _ => Ok(Flow::Open),
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

    fn frames_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (i, data) in [&b"0000000000000001first"[..], b"", b"x", &[b'z'; 300][..]]
            .iter()
            .enumerate()
        {
            fpayload::encode_event_frame(&mut stream, &i.to_string(), &["t0"], "", data).unwrap();
            want.push(data.to_vec());
        }
        // A non-fatal frame in the middle must be skipped, not counted.
        fpayload::encode_pong_frame(&mut stream, b"op").unwrap();
        fpayload::encode_event_frame(&mut stream, "9", &["t0", "t1"], "ty", b"last").unwrap();
        want.push(b"last".to_vec());
        (stream, want)
    }

    #[test]
    fn frames_whole_stream_in_one_read() {
        let (stream, want) = frames_stream();
        let mut d = FrameStream::new(FRAME_MAX_PAYLOAD);
        let mut got = Vec::new();
        assert_eq!(
            d.feed(&stream, &mut |e: &[u8]| got.push(e.to_vec())),
            Ok(Flow::Open)
        );
        assert_eq!(got, want);
        assert_eq!(d.pending_len(), 0);
    }

    #[test]
    fn frames_split_at_every_point() {
        let (stream, want) = frames_stream();
        for a in 0..=stream.len() {
            let mut d = FrameStream::new(FRAME_MAX_PAYLOAD);
            let mut got = Vec::new();
            let mut on = |e: &[u8]| got.push(e.to_vec());
            d.feed(&stream[..a], &mut on).unwrap();
            d.feed(&stream[a..], &mut on).unwrap();
            assert_eq!(got, want, "split at {a}");
            assert_eq!(d.pending_len(), 0, "split at {a}");
        }
    }

    #[test]
    fn frames_split_at_every_pair_of_points() {
        let (stream, want) = frames_stream();
        let n = stream.len();
        for a in 0..=n {
            for b in a..=n {
                let mut d = FrameStream::new(FRAME_MAX_PAYLOAD);
                let mut got = Vec::new();
                let mut on = |e: &[u8]| got.push(e.to_vec());
                d.feed(&stream[..a], &mut on).unwrap();
                d.feed(&stream[a..b], &mut on).unwrap();
                d.feed(&stream[b..], &mut on).unwrap();
                assert_eq!(got, want, "splits at {a}, {b}");
            }
        }
    }

    #[test]
    fn frames_byte_at_a_time() {
        let (stream, want) = frames_stream();
        let mut d = FrameStream::new(FRAME_MAX_PAYLOAD);
        let mut got = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b), &mut |e: &[u8]| {
                got.push(e.to_vec())
            })
            .unwrap();
        }
        assert_eq!(got, want);
    }

    #[test]
    fn frames_bad_magic_and_fatal_error() {
        let mut d = FrameStream::new(FRAME_MAX_PAYLOAD);
        assert_eq!(d.feed(b"\xCA", &mut |_: &[u8]| {}), Ok(Flow::Open));
        assert_eq!(
            d.feed(b"\x00", &mut |_: &[u8]| {}),
            Err(DecodeError::Frame(FrameError::BadMagic))
        );
        let mut out = Vec::new();
        fpayload::encode_error_frame(&mut out, ErrorCode::SLOW_CONSUMER, 0, b"", "slow").unwrap();
        let mut d = FrameStream::new(FRAME_MAX_PAYLOAD);
        assert_eq!(
            d.feed(&out, &mut |_: &[u8]| {}),
            Err(DecodeError::Server(ErrorCode::SLOW_CONSUMER))
        );
    }

    #[test]
    fn frames_request_upgrades() {
        let mut out = Vec::new();
        Transport::Frames.subscribe_request(&mut out, "127.0.0.1:1", "/frames?topic=t0");
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("GET /frames?topic=t0 HTTP/1.1\r\n"));
        assert!(s.contains("Upgrade: cafe\r\n") && s.contains("Connection: Upgrade\r\n"));
        assert_eq!(Transport::Frames.expected_status(), 101);
    }
}
