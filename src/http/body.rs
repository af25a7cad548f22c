//! Request bodies: `Content-Length` and an incremental `chunked` decoder (RFC 9112 §7.1) that
//! checks the body limit before it stores a byte, and requires CRLF exactly where the grammar has
//! it (lenient chunk parsing is a classic request-smuggling hole).

use super::HttpError;

/// Most bytes of chunk extensions plus trailer fields accepted.
const MAX_CHUNK_METADATA: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// `;ext` after the size, up to CR.
    Ext { value: u64 },
    /// LF after the size line's CR.
    SizeLf { value: u64 },
    /// Chunk data still to come.
    Data(u64),
    /// CR after chunk data.
    DataCr,
    /// LF after chunk data.
    DataLf,
    /// Start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// LF ending a trailer field line.
    TrailerLf,
    /// LF of the final empty line.
    FinalLf,
    /// Body complete.
    Done,
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    metadata: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            metadata: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Decodes from `input`, appending chunk data to `body` (never past `max_body` bytes: 413).
    /// Returns how many input bytes were consumed; stops at the end of the body.
    pub fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        max_body: usize,
    ) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            let b = input[i];
            self.state = match self.state {
                State::Size { value, digits } => match (b as char).to_digit(16) {
                    Some(d) if digits < 16 => State::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(HttpError::MALFORMED),
                    None if digits == 0 => return Err(HttpError::MALFORMED),
                    None => match b {
                        b'\r' => State::SizeLf { value },
                        b';' | b' ' | b'\t' => State::Ext { value },
                        _ => return Err(HttpError::MALFORMED),
                    },
                },
                State::Ext { value } => {
                    self.count_metadata()?;
                    match b {
                        b'\r' => State::SizeLf { value },
                        b'\n' => return Err(HttpError::MALFORMED),
                        _ => State::Ext { value },
                    }
                }
                State::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => {
                        if body.len() as u64 + n > max_body as u64 {
                            return Err(HttpError::BODY_TOO_LARGE);
                        }
                        State::Data(n)
                    }
                    _ => return Err(HttpError::MALFORMED),
                },
                State::Data(left) => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    body.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size {
                    value: 0,
                    digits: 0,
                },
                State::DataCr | State::DataLf => return Err(HttpError::MALFORMED),
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    b'\n' => return Err(HttpError::MALFORMED),
                    _ => {
                        self.count_metadata()?;
                        State::TrailerLine
                    }
                },
                State::TrailerLine => {
                    self.count_metadata()?;
                    match b {
                        b'\r' => State::TrailerLf,
                        b'\n' => return Err(HttpError::MALFORMED),
                        _ => State::TrailerLine,
                    }
                }
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::FinalLf if b == b'\n' => State::Done,
                State::TrailerLf | State::FinalLf => return Err(HttpError::MALFORMED),
                State::Done => State::Done,
            };
            i += 1;
        }
        Ok(i)
    }

    /// True once the last chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn count_metadata(&mut self) -> Result<(), HttpError> {
        self.metadata += 1;
        if self.metadata > MAX_CHUNK_METADATA {
            return Err(HttpError::MALFORMED);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(input: &[u8], split: usize, max: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut dec = ChunkedDecoder::default();
        let mut body = Vec::new();
        let first = dec.decode(&input[..split], &mut body, max)?;
        assert_eq!(first, split, "consumes all it is given before the end");
        let second = dec.decode(&input[split..], &mut body, max)?;
        assert!(dec.is_done());
        Ok((body, split + second))
    }

    #[test]
    fn decodes_at_every_split_point() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: v\r\n\r\nNEXT";
        let body_end = wire.len() - 4;
        for split in 0..=body_end {
            let (body, used) = decode_split(wire, split, 100).unwrap();
            assert_eq!(body, b"hello, world");
            assert_eq!(used, body_end, "stops before the pipelined request");
        }
    }

    #[test]
    fn rejects_malformed_and_oversize() {
        let cases: &[(&[u8], u16)] = &[
            (b"x\r\n", 400),
            (b"\r\n", 400),
            (b"5\nhello\r\n0\r\n\r\n", 400),
            (b"5\r\nhelloX\r\n", 400),
            (b"11111111111111111\r\n", 400),
            (b"0\r\n\n", 400),
            (b"b\r\n", 413),
            (b"5\r\nhello\r\n7\r\n", 413),
        ];
        for (wire, status) in cases {
            let mut dec = ChunkedDecoder::default();
            let got = dec
                .decode(wire, &mut Vec::new(), 10)
                .err()
                .map(|e| e.status);
            assert_eq!(got, Some(*status), "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn bounds_extensions_and_trailers() {
        let mut wire = b"1;".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_CHUNK_METADATA + 1));
        let mut dec = ChunkedDecoder::default();
        assert!(dec.decode(&wire, &mut Vec::new(), 10).is_err());
    }
}
