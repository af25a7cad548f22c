//! Outer framing: `CA FE`, the payload length as a big-endian `u32`, then the payload.
//!
//! The decoder works on the caller's buffer and never copies or allocates: it tells the caller
//! that a whole frame is present and where its payload lies, or that more bytes are needed
//! (`Ok(None)`, httparse's `Partial`). It rejects a wrong magic as soon as the first wrong byte is
//! present and an oversize length as soon as the six header bytes are, so a peer cannot make the
//! server hold more than [`FrameDecoder::max_frame_len`] bytes for one frame. Encoders append to
//! a caller-supplied `Vec` because the server coalesces output into its own write chunks.

use std::fmt;
use std::ops::Range;

use super::code::ErrorCode;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = [0xCA, 0xFE];

/// Magic plus the length field.
pub const HEADER_LEN: usize = 6;

/// The server's default limit on a received payload (`--max-frame`): large enough for any
/// reasonable event body, small enough that a slow peer announcing it costs little memory.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// The header of a frame whose payload is `payload_len` bytes long.
pub fn encode_header(payload_len: u32) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = payload_len.to_be_bytes();
    [MAGIC[0], MAGIC[1], a, b, c, d]
}

/// Appends one frame whose payload is the concatenation of `parts`. Fails, appending nothing,
/// when the parts add up to more than `u32::MAX` bytes.
pub fn encode_frame(out: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), PayloadTooLarge> {
    let len = parts
        .iter()
        .try_fold(0u32, |sum, part| {
            sum.checked_add(u32::try_from(part.len()).ok()?)
        })
        .ok_or(PayloadTooLarge)?;
    out.reserve(HEADER_LEN + len as usize);
    out.extend_from_slice(&encode_header(len));
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// Starts a frame whose payload the caller appends next; [`FrameStart::finish`] then writes its
/// length. Useful when the payload size is not known up front.
pub fn begin_frame(out: &mut Vec<u8>) -> FrameStart {
    let at = out.len();
    out.extend_from_slice(&encode_header(0));
    FrameStart { at }
}

/// A frame opened by [`begin_frame`] whose length is not yet written.
#[derive(Debug)]
#[must_use = "a frame left unfinished announces a zero-length payload"]
pub struct FrameStart {
    at: usize,
}

impl FrameStart {
    /// Writes the length of everything appended to `out` since [`begin_frame`]. If that is more
    /// than `u32::MAX` bytes, removes the whole frame again and fails.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), PayloadTooLarge> {
        let payload_len = out.len().saturating_sub(self.at + HEADER_LEN);
        let Ok(len) = u32::try_from(payload_len) else {
            out.truncate(self.at);
            return Err(PayloadTooLarge);
        };
        match out.get_mut(self.at..self.at + HEADER_LEN) {
            Some(header) => {
                header.copy_from_slice(&encode_header(len));
                Ok(())
            }
            // `out` was shortened below the header by the caller; nothing sensible is left.
            None => {
                out.truncate(self.at);
                Err(PayloadTooLarge)
            }
        }
    }
}

/// An encoder was handed more than the `u32` length field can announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadTooLarge;

impl fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("payload longer than u32::MAX bytes")
    }
}

impl std::error::Error for PayloadTooLarge {}

/// Why the byte stream is no longer a frame stream. Both are fatal: the frame boundaries are
/// lost, so the receiver sends an ERROR frame and closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame does not start with [`MAGIC`].
    BadMagic,
    /// The header announces a payload longer than the decoder's limit.
    TooLarge {
        /// The length the header announced.
        announced: u32,
    },
}

impl FrameError {
    /// The ERROR frame code for this error (the one place this mapping lives).
    pub fn code(self) -> ErrorCode {
        match self {
            FrameError::BadMagic => ErrorCode::BAD_MAGIC,
            FrameError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic => f.write_str("frame does not start with 0xCA 0xFE"),
            FrameError::TooLarge { announced } => {
                write!(
                    f,
                    "frame announces a {announced}-byte payload, over the limit"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A complete frame at the start of the buffer given to [`FrameDecoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    payload_len: u32,
}

impl Frame {
    /// Length of the payload.
    pub fn payload_len(self) -> usize {
        self.payload_len as usize
    }

    /// Bytes the frame occupies, header included: advance the buffer by this much.
    pub fn frame_len(self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Where the payload lies in the decoded buffer (always in bounds of that buffer).
    pub fn payload_range(self) -> Range<usize> {
        HEADER_LEN..self.frame_len()
    }
}

/// Finds frames in a buffer the caller accumulates.
///
/// Contract of [`FrameDecoder::decode`], called on the unconsumed bytes:
/// - `Ok(Some(frame))`: a whole frame starts the buffer; its payload is
///   `&buf[frame.payload_range()]`, and the caller consumes `frame.frame_len()` bytes and calls
///   again, since one read often carries several frames;
/// - `Ok(None)`: the buffer is a proper prefix of a valid frame; keep the bytes, read more, and
///   call again with the longer buffer;
/// - `Err(_)`: the stream is broken; stop reading.
///
/// The decoder is stateless, so calling again with a longer buffer only re-reads six header
/// bytes. After every complete frame is consumed, fewer than [`FrameDecoder::max_frame_len`]
/// bytes remain, which bounds the read buffer a connection needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameDecoder {
    max_payload: u32,
}

impl FrameDecoder {
    /// A decoder that accepts payloads of up to `max_payload` bytes (saturated to `u32::MAX`).
    pub fn new(max_payload: usize) -> FrameDecoder {
        // Also keep `HEADER_LEN + max_payload` within `usize` on 32-bit targets.
        let max_payload = max_payload.min(usize::MAX - HEADER_LEN);
        FrameDecoder {
            max_payload: u32::try_from(max_payload).unwrap_or(u32::MAX),
        }
    }

    /// The largest payload accepted.
    pub fn max_payload(&self) -> usize {
        self.max_payload as usize
    }

    /// The largest frame accepted, header included.
    pub fn max_frame_len(&self) -> usize {
        HEADER_LEN + self.max_payload()
    }

    /// Looks for one frame at the start of `buf`; see the type's docs for the contract.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        // Check the magic byte by byte, so garbage is refused before six bytes have arrived.
        for (at, &want) in MAGIC.iter().enumerate() {
            match buf.get(at) {
                None => return Ok(None),
                Some(&got) if got != want => return Err(FrameError::BadMagic),
                Some(_) => {}
            }
        }
        let Some(&[a, b, c, d]) = buf.get(MAGIC.len()..HEADER_LEN) else {
            return Ok(None);
        };
        let announced = u32::from_be_bytes([a, b, c, d]);
        // Validated before anything depends on the announced size.
        if announced > self.max_payload {
            return Err(FrameError::TooLarge { announced });
        }
        let frame = Frame {
            payload_len: announced,
        };
        if buf.len() < frame.frame_len() {
            return Ok(None);
        }
        Ok(Some(frame))
    }
}

impl Default for FrameDecoder {
    /// A decoder with the server's default limit, [`DEFAULT_MAX_PAYLOAD`].
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, &[payload]).unwrap();
        out
    }

    #[test]
    fn header_bytes() {
        assert_eq!(encode_header(0), [0xCA, 0xFE, 0, 0, 0, 0]);
        assert_eq!(encode_header(0x0102_0304), [0xCA, 0xFE, 1, 2, 3, 4]);
        assert_eq!(
            encode_header(u32::MAX),
            [0xCA, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF]
        );
    }

    #[test]
    fn encode_frame_joins_parts_after_existing_bytes() {
        let mut out = b"xy".to_vec();
        encode_frame(&mut out, &[b"ab", b"", b"c"]).unwrap();
        assert_eq!(out, b"xy\xCA\xFE\0\0\0\x03abc");
    }

    #[test]
    fn begin_finish_patches_length() {
        let mut out = b"z".to_vec();
        let start = begin_frame(&mut out);
        out.extend_from_slice(b"hello");
        start.finish(&mut out).unwrap();
        assert_eq!(out, b"z\xCA\xFE\0\0\0\x05hello");

        let start = begin_frame(&mut out);
        out.truncate(3);
        assert_eq!(start.finish(&mut out), Err(PayloadTooLarge));
        assert_eq!(out.len(), 3, "a broken frame leaves nothing behind");
    }

    #[test]
    fn decode_table() {
        let dec = FrameDecoder::new(8);
        type Want = Result<Option<usize>, FrameError>;
        let cases: &[(&[u8], Want)] = &[
            (b"", Ok(None)),
            (b"\xCA", Ok(None)),
            (b"\xCA\xFE", Ok(None)),
            (b"\xCA\xFE\0\0\0", Ok(None)),
            (b"\xCA\xFE\0\0\0\0", Ok(Some(0))),
            (b"\xCA\xFE\0\0\0\x02a", Ok(None)),
            (b"\xCA\xFE\0\0\0\x02ab", Ok(Some(2))),
            (b"\xCA\xFE\0\0\0\x02abTRAILING", Ok(Some(2))),
            (b"\xCA\xFE\0\0\0\x08", Ok(None)),
            (b"\xCA\xFE\0\0\0\x0812345678", Ok(Some(8))),
            // Bad magic is seen on its first wrong byte.
            (b"G", Err(FrameError::BadMagic)),
            (b"\xCA\xFF", Err(FrameError::BadMagic)),
            (b"\xFE\xCA\0\0\0\0", Err(FrameError::BadMagic)),
            (b"GET / HTTP/1.1\r\n", Err(FrameError::BadMagic)),
            // Oversize is seen on the header alone, before any payload byte.
            (
                b"\xCA\xFE\0\0\0\x09",
                Err(FrameError::TooLarge { announced: 9 }),
            ),
            (
                b"\xCA\xFE\xFF\xFF\xFF\xFF",
                Err(FrameError::TooLarge {
                    announced: u32::MAX,
                }),
            ),
        ];
        for (input, want) in cases {
            let got = dec.decode(input).map(|f| f.map(Frame::payload_len));
            assert_eq!(got, *want, "input {input:x?}");
        }
    }

    #[test]
    fn payload_range_and_frame_len() {
        let buf = [frame(b"abc"), frame(b"")].concat();
        let dec = FrameDecoder::default();
        let first = dec.decode(&buf).unwrap().unwrap();
        assert_eq!(&buf[first.payload_range()], b"abc");
        assert_eq!(first.frame_len(), 9);
        let second = dec.decode(&buf[first.frame_len()..]).unwrap().unwrap();
        assert_eq!(second.payload_len(), 0);
        assert_eq!(first.frame_len() + second.frame_len(), buf.len());
    }

    #[test]
    fn max_size_boundary() {
        for max in [0usize, 1, 255, 65_536, DEFAULT_MAX_PAYLOAD] {
            let dec = FrameDecoder::new(max);
            let at_max = frame(&vec![7; max]);
            let got = dec.decode(&at_max).unwrap().unwrap();
            assert_eq!(got.frame_len(), at_max.len(), "max {max}");
            let over = encode_header(max as u32 + 1);
            assert_eq!(
                dec.decode(&over),
                Err(FrameError::TooLarge {
                    announced: max as u32 + 1
                }),
                "max {max}"
            );
        }
    }

    #[test]
    fn limit_saturates_and_reports() {
        let dec = FrameDecoder::new(usize::MAX);
        assert_eq!(dec.max_payload(), u32::MAX as usize);
        assert_eq!(FrameDecoder::new(10).max_frame_len(), 16);
        let buf = encode_header(u32::MAX);
        assert_eq!(dec.decode(&buf), Ok(None));
    }

    #[test]
    fn every_prefix_of_a_frame_needs_more() {
        let buf = frame(b"0123456789");
        let dec = FrameDecoder::default();
        for cut in 0..buf.len() {
            assert_eq!(dec.decode(&buf[..cut]), Ok(None), "cut {cut}");
        }
        assert!(dec.decode(&buf).unwrap().is_some());
    }

    #[test]
    fn errors_map_to_codes() {
        assert_eq!(FrameError::BadMagic.code(), ErrorCode::BAD_MAGIC);
        assert_eq!(
            FrameError::TooLarge { announced: 1 }.code(),
            ErrorCode::FRAME_TOO_LARGE
        );
    }
}
