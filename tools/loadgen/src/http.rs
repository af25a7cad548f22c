//! The little HTTP/1.1 the tool needs as a client: request bytes, response heads, and a
//! streaming `Transfer-Encoding: chunked` decoder (sseloop's stream is close-delimited, but other
//! SSE servers chunk theirs).

use std::fmt;

/// A response head larger than this is refused rather than buffered without end.
pub const MAX_HEAD: usize = 16 * 1024;

/// What the tool reads from a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// `Content-Length`, if present.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding` ends in `chunked`.
    pub chunked: bool,
}

/// A response head the tool cannot use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// No blank line within [`MAX_HEAD`] bytes.
    TooLarge,
    /// The status line is not `HTTP/1.x NNN ...`.
    BadStatusLine,
    /// A `Content-Length` that is not a number.
    BadContentLength,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::TooLarge => "response head too large",
            HeadError::BadStatusLine => "malformed status line",
            HeadError::BadContentLength => "malformed Content-Length",
        })
    }
}

/// Parses a response head at the start of `buf`. `Ok(None)` means "need more bytes";
/// `Ok(Some((head, len)))` gives the head and its length including the blank line.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let text = &buf[..end];
    let mut lines = text.split(|&b| b == b'\n').map(trim_cr);
    let status_line = lines.next().ok_or(HeadError::BadStatusLine)?;
    if !status_line.starts_with(b"HTTP/1.") || status_line.len() < 12 || status_line[8] != b' ' {
        return Err(HeadError::BadStatusLine);
    }
    let status = parse_decimal(&status_line[9..12])
        .and_then(|s| u16::try_from(s).ok())
        .ok_or(HeadError::BadStatusLine)?;
    let mut head = ResponseHead {
        status,
        content_length: None,
        chunked: false,
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(HeadError::BadContentLength)?;
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.chunked =
                value.len() >= 7 && value[value.len() - 7..].eq_ignore_ascii_case(b"chunked");
        }
    }
    Ok(Some((head, end + 4)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + usize::from(d - b'0'))
    })
}

/// Where the chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` seen so far.
    Size { value: u64, digits: u8 },
    /// Skipping a chunk extension (or the CR) up to the LF that ends the size line.
    Ext { value: u64 },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CR (or a bare LF) after chunk data.
    DataEnd,
    /// Expecting the LF after that CR.
    DataLf,
    /// Saw the last (zero-size) chunk: the body is over, trailers are ignored.
    Done,
}

const SIZE_START: Chunk = Chunk::Size {
    value: 0,
    digits: 0,
};

fn after_size(value: u64) -> Chunk {
    if value == 0 {
        Chunk::Done
    } else {
        Chunk::Data(value)
    }
}

/// A malformed chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkError;

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed chunked encoding")
    }
}

/// Streaming de-chunker: hands the data of each chunk, in pieces, to a callback.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: Chunk,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: SIZE_START }
    }
}

impl ChunkedDecoder {
    /// True after the terminating zero-size chunk.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes `buf`, passing data pieces to `out`.
    pub fn feed(&mut self, buf: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                Chunk::Size { value, digits } => {
                    i += 1;
                    let nibble = match b {
                        b'0'..=b'9' => Some(b - b'0'),
                        b'a'..=b'f' => Some(b - b'a' + 10),
                        b'A'..=b'F' => Some(b - b'A' + 10),
                        _ => None,
                    };
                    self.state = match nibble {
                        // 15 hex digits is far past any sane chunk and keeps the shift in range.
                        Some(n) if digits < 15 => Chunk::Size {
                            value: (value << 4) | u64::from(n),
                            digits: digits + 1,
                        },
                        None if digits > 0 && b == b'\n' => after_size(value),
                        None if digits > 0 && matches!(b, b'\r' | b';' | b' ' | b'\t') => {
                            Chunk::Ext { value }
                        }
                        _ => return Err(ChunkError),
                    };
                }
                Chunk::Ext { value } => match buf[i..].iter().position(|&c| c == b'\n') {
                    Some(p) => {
                        i += p + 1;
                        self.state = after_size(value);
                    }
                    None => i = buf.len(),
                },
                Chunk::Data(left) => {
                    let n = (buf.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out(&buf[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::DataEnd => {
                    i += 1;
                    self.state = match b {
                        b'\r' => Chunk::DataLf,
                        b'\n' => SIZE_START,
                        _ => return Err(ChunkError),
                    };
                }
                Chunk::DataLf => {
                    i += 1;
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = SIZE_START;
                }
                Chunk::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Appends a GET request for a long-lived stream.
pub fn get_request(out: &mut Vec<u8>, authority: &str, target: &str) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n");
}

/// The head of a POST with a body of `len` bytes (the body follows it directly).
pub fn post_head(authority: &str, target: &str, len: usize) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain\r\n\
         Content-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 3000\n\n";
        let (head, len) = parse_head(h).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length, None);
        assert!(!head.chunked);
        assert_eq!(&h[len..], b"retry: 3000\n\n");

        let h = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 12\r\n\
                  Transfer-Encoding: gzip, chunked\r\n\r\n";
        let (head, _) = parse_head(h).unwrap().unwrap();
        assert_eq!(
            (head.status, head.content_length, head.chunked),
            (503, Some(12), true)
        );

        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n\r"), Ok(None));
        assert_eq!(
            parse_head(b"SSH-2.0\r\n\r\n"),
            Err(HeadError::BadStatusLine)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(parse_head(&[b'a'; MAX_HEAD + 1]), Err(HeadError::TooLarge));
    }

    fn dechunk(stream: &[u8], cut: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        d.feed(&stream[..cut], &mut |p: &[u8]| out.extend_from_slice(p))?;
        d.feed(&stream[cut..], &mut |p: &[u8]| out.extend_from_slice(p))?;
        Ok((out, d.is_done()))
    }

    #[test]
    fn chunked_split_at_every_byte() {
        let s = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\nabcdefghij\n0\r\n\r\n";
        for cut in 0..=s.len() {
            assert_eq!(
                dechunk(s, cut),
                Ok((b"hello abcdefghij".to_vec(), true)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn chunked_errors() {
        assert_eq!(dechunk(b"x\r\n", 0), Err(ChunkError));
        assert_eq!(dechunk(b"\r\n", 0), Err(ChunkError));
        assert_eq!(dechunk(b"2\r\nabX", 0), Err(ChunkError));
        assert_eq!(dechunk(b"ffffffffffffffff\r\n", 0), Err(ChunkError));
    }
}
