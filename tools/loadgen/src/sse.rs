//! Incremental `text/event-stream` parser that keeps only what the tool needs.
//!
//! A subscriber's bytes arrive in arbitrary pieces. The parser keeps a few bytes of state per
//! connection (no buffer of the stream itself) and reports each dispatched event with the first
//! [`CAPTURE`] bytes of its first `data` line, which is where [`crate::payload`] puts the
//! timestamp and event number. Everything else (`id`, `event`, `retry`, comments, further data
//! lines, the rest of the first one) is skipped with a byte search, so the steady state costs a
//! handful of comparisons per line and never allocates.
//!
//! Follows the WHATWG rules that matter here: lines end in LF, CRLF or a lone CR; a field named
//! exactly `data` (with or without a colon) adds to the data buffer; one space after the colon is
//! dropped; a blank line dispatches the event only if some data line was seen.

use crate::payload::HEADER_LEN;

/// Bytes of the first data line kept for the caller.
pub const CAPTURE: usize = HEADER_LEN;

/// Where in the current line the parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// Nothing of this line seen yet.
    Start,
    /// The first `n` bytes of `data` matched.
    Name(u8),
    /// Right after `data:` of the event's first data line; one space may follow.
    Space,
    /// Copying the first data line's value.
    Capture,
    /// Ignoring the rest of the line.
    Skip,
}

/// Per-connection parser state.
#[derive(Clone, Debug)]
pub struct SseParser {
    line: Line,
    /// The previous line ended in CR, so an LF right now is part of that line ending.
    after_cr: bool,
    /// The current event has at least one data line (so a blank line dispatches it).
    has_data: bool,
    cap: [u8; CAPTURE],
    cap_len: u8,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser {
            line: Line::Start,
            after_cr: false,
            has_data: false,
            cap: [0; CAPTURE],
            cap_len: 0,
        }
    }
}

fn is_eol(b: &u8) -> bool {
    *b == b'\n' || *b == b'\r'
}

impl SseParser {
    /// Feeds the next piece of the stream; `on_event` gets the captured start of each dispatched
    /// event's first data line (shorter than [`CAPTURE`] when the line is).
    pub fn feed(&mut self, buf: &[u8], on_event: &mut impl FnMut(&[u8])) {
        let mut i = 0;
        while i < buf.len() {
            if self.after_cr {
                self.after_cr = false;
                if buf[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match self.line {
                Line::Start => {
                    let b = buf[i];
                    if is_eol(&b) {
                        i += 1;
                        self.after_cr = b == b'\r';
                        if self.has_data {
                            on_event(&self.cap[..usize::from(self.cap_len)]);
                        }
                        self.has_data = false;
                        self.cap_len = 0;
                    } else if buf[i..].starts_with(b"data:") {
                        // Fast path: the whole field name is in this piece.
                        i += 5;
                        let first = !self.has_data;
                        self.has_data = true;
                        self.line = if first { Line::Space } else { Line::Skip };
                    } else if b == b'd' {
                        i += 1;
                        self.line = Line::Name(1);
                    } else {
                        // Not a data line (id, event, retry, comment...): the EOL is found by Skip.
                        self.line = Line::Skip;
                    }
                }
                Line::Name(n) => {
                    let b = buf[i];
                    if n == 4 {
                        if b == b':' || is_eol(&b) {
                            let first = !self.has_data;
                            self.has_data = true;
                            if b == b':' {
                                i += 1;
                                self.line = if first { Line::Space } else { Line::Skip };
                            } else {
                                self.end_line(b);
                                i += 1;
                            }
                        } else {
                            self.line = Line::Skip;
                        }
                    } else if b == b"data"[usize::from(n)] {
                        i += 1;
                        self.line = Line::Name(n + 1);
                    } else {
                        self.line = Line::Skip;
                    }
                }
                Line::Space => {
                    if buf[i] == b' ' {
                        i += 1;
                    }
                    self.line = Line::Capture;
                }
                Line::Capture => {
                    let rest = &buf[i..];
                    let room = CAPTURE - usize::from(self.cap_len);
                    let limit = rest.len().min(room);
                    let at = usize::from(self.cap_len);
                    match memchr::memchr2(b'\n', b'\r', &rest[..limit]) {
                        Some(p) => {
                            self.cap[at..at + p].copy_from_slice(&rest[..p]);
                            self.cap_len += p as u8;
                            self.end_line(rest[p]);
                            i += p + 1;
                        }
                        None => {
                            self.cap[at..at + limit].copy_from_slice(&rest[..limit]);
                            self.cap_len += limit as u8;
                            i += limit;
                            if usize::from(self.cap_len) == CAPTURE {
                                self.line = Line::Skip;
                            }
                        }
                    }
                }
                Line::Skip => match memchr::memchr2(b'\n', b'\r', &buf[i..]) {
                    Some(p) => {
                        self.end_line(buf[i + p]);
                        i += p + 1;
                    }
                    None => i = buf.len(),
                },
            }
        }
    }

    fn end_line(&mut self, eol: u8) {
        self.line = Line::Start;
        self.after_cr = eol == b'\r';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            p.feed(&stream[from..cut], &mut |d: &[u8]| out.push(d.to_vec()));
            from = cut;
        }
        out
    }

    /// Every split into two pieces, and byte by byte, must give what one piece gives.
    fn check_splits(stream: &[u8], expected: &[&[u8]]) {
        let expected: Vec<Vec<u8>> = expected.iter().map(|e| e.to_vec()).collect();
        assert_eq!(parse_in_pieces(stream, &[]), expected, "whole");
        for cut in 0..=stream.len() {
            assert_eq!(parse_in_pieces(stream, &[cut]), expected, "cut at {cut}");
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(parse_in_pieces(stream, &every), expected, "byte by byte");
    }

    const BODY: &[u8] = b"00000000000000ff0000000000000007abcdefghijklmnopqrstuvwxyzABCDEF";

    #[test]
    fn sseloop_stream_split_at_every_byte() {
        let mut s = b"retry: 3000\n\n".to_vec();
        s.extend_from_slice(b"id: mwudyvxt-1\ndata: ");
        s.extend_from_slice(BODY);
        s.extend_from_slice(b"\n\n:\n:\nid: mwudyvxt-2\nevent: x\ndata: short\n\n");
        check_splits(&s, &[&BODY[..CAPTURE], b"short"]);
    }

    #[test]
    fn line_endings_crlf_and_lone_cr() {
        let s = b"data: a\r\n\r\ndata: b\r\rdata:c\n\ndata\n\n";
        check_splits(s, &[b"a", b"b", b"c", b""]);
    }

    #[test]
    fn only_the_first_data_line_is_captured() {
        let s = b"data: first\ndata: second\n\n";
        check_splits(s, &[b"first"]);
    }

    #[test]
    fn fields_that_only_look_like_data_are_ignored() {
        let s = b"dat: x\ndatax: y\n: data: z\nid: 1\n\ndata:  two spaces\n\n";
        // No event from the first block (no data field); one space is stripped, not two.
        check_splits(s, &[b" two spaces"]);
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        check_splits(b"\n\n\r\n:hb\n\nretry: 5\n\n", &[]);
    }

    #[test]
    fn long_data_line_is_truncated_to_the_capture() {
        let mut s = b"data: ".to_vec();
        s.extend_from_slice(&[b'7'; 500]);
        s.extend_from_slice(b"\n\n");
        check_splits(&s, &[&[b'7'; CAPTURE]]);
    }
}
