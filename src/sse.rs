//! Server-Sent Events encoder: event → bytes, in the WHATWG `text/event-stream` format.
//!
//! Pure functions that append to a caller's buffer. Invariants the rest of the server relies on:
//! - only LF is ever written as a line ending (parsers disagree on mixed CRLF/LF streams);
//! - every event carries at least one `data:` line, because a browser drops an event whose data
//!   buffer is empty;
//! - the body is split on LF, CR and CRLF, so that what a browser's `EventSource` hands to the page
//!   is exactly the published body with CR and CRLF normalised to LF;
//! - a value is always written after `": "`, so a value that itself starts with a space keeps it
//!   (the parser strips exactly one space).

use std::io::Write as _;

/// The reserved event type sent before a replay when the client's `Last-Event-ID` cannot be
/// honoured in full (history no longer holds everything after it, or it comes from another run).
pub const RESET_EVENT_TYPE: &str = "sseloop-reset";

/// Appends one complete event (ending with the blank line that dispatches it).
pub fn encode_event(out: &mut Vec<u8>, id: &str, event_type: Option<&str>, data: &str) {
    encode(out, id, event_type, None::<&[&str]>, data);
}

/// Appends one complete event whose first `data:` line names its topics (the `topic_line=1`
/// form of `GET /events`): a browser's `EventSource` hands the page `"<topics>\n<body>"`, the
/// topics separated by one space. Topic names hold no line break and no space (`valid_topic`),
/// so everything up to the first LF is the topic line, whatever the body holds.
pub fn encode_event_with_topics<T: AsRef<str>>(
    out: &mut Vec<u8>,
    id: &str,
    event_type: Option<&str>,
    topics: &[T],
    data: &str,
) {
    encode(out, id, event_type, Some(topics), data);
}

/// Bytes the topic line adds to an event's encoding: `data: `, the names with a space between
/// them, and the LF.
pub fn topic_line_len<T: AsRef<str>>(topics: &[T]) -> usize {
    let names: usize = topics.iter().map(|t| t.as_ref().len() + 1).sum();
    6 + names.max(1)
}

fn encode<T: AsRef<str>>(
    out: &mut Vec<u8>,
    id: &str,
    event_type: Option<&str>,
    topics: Option<&[T]>,
    data: &str,
) {
    let line = topics.map_or(0, topic_line_len);
    out.reserve(encoded_len_hint(id, event_type, data) + line);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.push(b'\n');
    if let Some(event_type) = event_type {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event_type.as_bytes());
        out.push(b'\n');
    }
    if let Some(topics) = topics {
        out.extend_from_slice(b"data: ");
        for (i, topic) in topics.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(topic.as_ref().as_bytes());
        }
        out.push(b'\n');
    }
    for line in DataLines::new(data.as_bytes()) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Upper bound of the encoded size, so the output is reserved once.
pub fn encoded_len_hint(id: &str, event_type: Option<&str>, data: &str) -> usize {
    // "id: " + "\n", "event: " + "\n", blank line, and per line "data: " + "\n"; a line break in
    // the body costs at most 7 more bytes than the break itself.
    let breaks = data.bytes().filter(|&b| b == b'\n' || b == b'\r').count();
    5 + id.len() + event_type.map_or(0, |t| 8 + t.len()) + 1 + 7 * (breaks + 1) + data.len()
}

/// Appends the `retry:` field followed by a blank line (the blank line is harmless: with no data
/// buffered, a browser dispatches nothing).
pub fn encode_retry(out: &mut Vec<u8>, retry_ms: u64) {
    // Digits only: a browser ignores `retry:` values with any other character.
    let _ = write!(out, "retry: {retry_ms}\n\n");
}

/// The heartbeat: a comment line, which every parser ignores, that keeps proxies from timing out.
pub const HEARTBEAT: &[u8] = b":\n";

/// Iterator over the lines of an event body, split on LF, CR and CRLF. A body with N line breaks
/// yields N + 1 lines, so an empty body yields one empty line and a trailing break yields a last
/// empty line (which is what makes the body round-trip through the browser's parser).
pub struct DataLines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> DataLines<'a> {
    /// Splits `body`.
    pub fn new(body: &'a [u8]) -> Self {
        DataLines { rest: Some(body) }
    }
}

impl<'a> Iterator for DataLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            None => {
                self.rest = None;
                Some(rest)
            }
            Some(at) => {
                let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.rest = Some(&rest[at + skip..]);
                Some(&rest[..at])
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An independent reading of the WHATWG event-stream interpretation rules, used to check that
    /// what we encode is what a browser dispatches. Returns (last event id, type, data) per event.
    pub(crate) fn parse_stream(stream: &str) -> Vec<(String, String, String)> {
        let mut events = Vec::new();
        let (mut data, mut event_type, mut last_id) = (String::new(), String::new(), String::new());
        let mut lines = Vec::new();
        let mut cur = String::new();
        let mut chars = stream.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    lines.push(std::mem::take(&mut cur));
                }
                '\n' => lines.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        for line in lines {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    let ty = if event_type.is_empty() {
                        "message".to_string()
                    } else {
                        event_type.clone()
                    };
                    events.push((last_id.clone(), ty, std::mem::take(&mut data)));
                }
                data.clear();
                event_type.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (line.as_str(), ""),
            };
            match field {
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "event" => event_type = value.to_string(),
                "id" if !value.contains('\0') => last_id = value.to_string(),
                _ => {}
            }
        }
        events
    }

    fn enc(id: &str, ty: Option<&str>, data: &str) -> String {
        let mut out = Vec::new();
        encode_event(&mut out, id, ty, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn exact_bytes_for_table_of_bodies() {
        let cases: &[(&str, Option<&str>, &str, &str)] = &[
            ("1", None, "hello", "id: 1\ndata: hello\n\n"),
            ("1", Some("tick"), "x", "id: 1\nevent: tick\ndata: x\n\n"),
            ("2", None, "", "id: 2\ndata: \n\n"),
            ("3", None, "a\n", "id: 3\ndata: a\ndata: \n\n"),
            ("4", None, "a\nb", "id: 4\ndata: a\ndata: b\n\n"),
            (
                "5",
                None,
                "a\r\nb\rc",
                "id: 5\ndata: a\ndata: b\ndata: c\n\n",
            ),
            ("6", None, "\r\n", "id: 6\ndata: \ndata: \n\n"),
            ("7", None, "\n\r", "id: 7\ndata: \ndata: \ndata: \n\n"),
            ("8", None, " lead", "id: 8\ndata:  lead\n\n"),
            ("9", None, "é€😀", "id: 9\ndata: é€😀\n\n"),
        ];
        for (id, ty, body, want) in cases {
            assert_eq!(enc(id, *ty, body), *want, "body {body:?}");
        }
    }

    #[test]
    fn browser_sees_the_lf_normalised_body() {
        for body in [
            "",
            "\n",
            "a\n",
            "a\n\nb",
            "x\r\ny",
            "\r",
            "trailing\r\n",
            " sp",
            ":colon",
            "data: x",
        ] {
            let parsed = parse_stream(&enc("7", Some("t"), body));
            let want = body.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(
                parsed,
                vec![("7".into(), "t".into(), want)],
                "body {body:?}"
            );
        }
    }

    #[test]
    fn topic_line_is_the_first_data_line_and_the_browser_splits_it_off() {
        let mut out = Vec::new();
        encode_event_with_topics(&mut out, "r-4", Some("t"), &["news/a", "x"], "a\r\nb");
        assert_eq!(
            out,
            b"id: r-4\nevent: t\ndata: news/a x\ndata: a\ndata: b\n\n".to_vec()
        );
        assert_eq!(
            out.len(),
            enc("r-4", Some("t"), "a\r\nb").len() + topic_line_len(&["news/a", "x"])
        );
        for body in ["", "\n", "one", "a\nb\r\n", " sp"] {
            let mut out = Vec::new();
            encode_event_with_topics(&mut out, "7", None, &["news/sport"], body);
            let parsed = parse_stream(std::str::from_utf8(&out).unwrap());
            let want = body.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(parsed.len(), 1);
            let (topic, rest) = parsed[0].2.split_once('\n').unwrap();
            assert_eq!(
                (topic, rest),
                ("news/sport", want.as_str()),
                "body {body:?}"
            );
        }
    }

    #[test]
    fn hint_is_an_upper_bound() {
        for body in ["", "\n\n\n", "\r\n\r\n", "abc", "a\rb\nc\r\nd"] {
            let mut out = Vec::new();
            encode_event(&mut out, "12", Some("type"), body);
            assert!(out.len() <= encoded_len_hint("12", Some("type"), body));
        }
    }

    #[test]
    fn retry_is_digits_then_blank_line() {
        let mut out = Vec::new();
        encode_retry(&mut out, 3000);
        assert_eq!(out, b"retry: 3000\n\n");
    }
}
