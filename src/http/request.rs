//! Request heads: httparse plus the checks HTTP/1.1 framing needs (RFC 9112), kept to what the
//! routes use so nothing is copied that is not read.

use std::borrow::Cow;

use super::HttpError;

/// Largest request head accepted; past it the answer is 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in a head; past it the answer is 431.
pub const MAX_HEADERS: usize = 64;
/// Longest `Last-Event-ID` kept; ours are far shorter, and a longer one is treated as foreign.
pub const MAX_LAST_EVENT_ID: usize = 256;

/// Request methods (RFC 9110 §9); anything else is answered 501.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// OPTIONS
    Options,
    /// CONNECT
    Connect,
    /// TRACE
    Trace,
}

/// Each method's name on the wire.
const METHODS: [(&str, Method); 9] = [
    ("GET", Method::Get),
    ("HEAD", Method::Head),
    ("POST", Method::Post),
    ("PUT", Method::Put),
    ("DELETE", Method::Delete),
    ("PATCH", Method::Patch),
    ("OPTIONS", Method::Options),
    ("CONNECT", Method::Connect),
    ("TRACE", Method::Trace),
];

impl Method {
    /// The method named `s` (case-sensitive, as RFC 9110 says), if it is one of these.
    pub fn parse(s: &str) -> Option<Method> {
        METHODS.iter().find(|(name, _)| *name == s).map(|&(_, m)| m)
    }

    /// The method's name on the wire (`GET`), for the access log.
    pub fn as_str(self) -> &'static str {
        METHODS
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("-", |(name, _)| name)
    }
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (no Content-Length, or zero).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the server needs from a request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method.
    pub method: Method,
    /// Path of the target, without the query.
    pub path: String,
    /// Raw query string (after `?`), possibly empty.
    pub query: String,
    /// HTTP/1.0 (as opposed to 1.1).
    pub http10: bool,
    /// The client allows the connection to be reused.
    pub keep_alive: bool,
    /// Body delimitation.
    pub body: BodyKind,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// `Last-Event-ID` header, if any (lossy UTF-8, bounded).
    pub last_event_id: Option<String>,
    /// `Authorization` header value, if any.
    pub authorization: Option<Vec<u8>>,
    /// `Sseloop-Publish-Token` header value, if any: the publish credential of a frame
    /// connection whose subscribe credential goes in `Authorization`.
    pub publish_token: Option<Vec<u8>>,
    /// `Upgrade` header value, if any.
    pub upgrade: Option<String>,
    /// `Connection` lists `upgrade`.
    pub connection_upgrade: bool,
    /// `If-None-Match` header value, if any and short (console asset revalidation).
    pub if_none_match: Option<String>,
    /// `Cookie` header value(s), joined with `; ` when repeated (RFC 9113 allows splitting).
    pub cookie: Option<Vec<u8>>,
    /// `Idempotency-Key` header value, if any (checked by the publish route).
    pub idempotency_key: Option<String>,
    /// `Forwarded` header values, joined with `, ` when repeated (read only behind a
    /// `--trusted-proxy`).
    pub forwarded: Option<Vec<u8>>,
    /// `X-Forwarded-For` header values, joined the same way.
    pub x_forwarded_for: Option<Vec<u8>>,
}

impl RequestHead {
    /// The request asks to switch to the frame protocol (`Connection: upgrade`,
    /// `Upgrade: cafe`).
    pub fn upgrades_to_cafe(&self) -> bool {
        self.connection_upgrade
            && self
                .upgrade
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case("cafe"))
    }
}

/// Outcome of parsing the bytes buffered so far.
#[derive(Debug)]
pub enum HeadParse {
    /// The head is not complete yet.
    Partial,
    /// A complete head of `len` bytes.
    Complete(Box<RequestHead>, usize),
}

/// Parses a request head from the start of `buf`.
pub fn parse_head(buf: &[u8]) -> Result<HeadParse, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD_BYTES {
                Err(HttpError::HEAD_TOO_LARGE)
            } else {
                Ok(HeadParse::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HEAD_TOO_LARGE),
        Err(_) => return Err(HttpError::MALFORMED),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HttpError::HEAD_TOO_LARGE);
    }
    let method_name = req.method.ok_or(HttpError::MALFORMED)?;
    let method = Method::parse(method_name).ok_or(HttpError::UNKNOWN_METHOD)?;
    let target = req.path.ok_or(HttpError::MALFORMED)?;
    let http10 = req.version == Some(0);
    let (path, query) = split_target(target)?;

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut connection_upgrade = false;
    let mut expect_continue = false;
    let mut last_event_id = None;
    let mut authorization = None;
    let mut publish_token = None;
    let mut upgrade = None;
    let mut cookie: Option<Vec<u8>> = None;
    let mut host_seen = false;
    let mut if_none_match = None;
    let mut idempotency_key = None;
    let mut forwarded: Option<Vec<u8>> = None;
    let mut x_forwarded_for: Option<Vec<u8>> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            // Repeated Content-Length with differing values is a smuggling vector (RFC 9112 §6.3).
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HttpError::MALFORMED);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in tokens(h.value) {
                if chunked {
                    // Anything after chunked: the body's end cannot be found (RFC 9112 §6.3).
                    return Err(HttpError::MALFORMED);
                }
                if coding.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    return Err(HttpError::UNSUPPORTED_CODING);
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    connection_keep_alive = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if h.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(HttpError::EXPECTATION_FAILED);
            }
        } else if name.eq_ignore_ascii_case("last-event-id") {
            let value = &h.value[..h.value.len().min(MAX_LAST_EVENT_ID + 1)];
            last_event_id = Some(String::from_utf8_lossy(value).trim().to_string());
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(HttpError::MALFORMED);
            }
            authorization = Some(h.value.to_vec());
        } else if name.eq_ignore_ascii_case("sseloop-publish-token") {
            if publish_token.is_some() {
                return Err(HttpError::MALFORMED);
            }
            publish_token = Some(h.value.trim_ascii().to_vec());
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(String::from_utf8_lossy(h.value).trim().to_string());
        } else if name.eq_ignore_ascii_case("if-none-match") && h.value.len() <= 256 {
            if_none_match = Some(String::from_utf8_lossy(h.value).into_owned());
        } else if name.eq_ignore_ascii_case("cookie") {
            match &mut cookie {
                Some(joined) => {
                    joined.extend_from_slice(b"; ");
                    joined.extend_from_slice(h.value);
                }
                None => cookie = Some(h.value.to_vec()),
            }
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            if idempotency_key.is_some() {
                return Err(HttpError::MALFORMED);
            }
            let value = &h.value[..h.value.len().min(crate::idempotency::MAX_KEY_LEN + 1)];
            idempotency_key = Some(String::from_utf8_lossy(value).trim().to_string());
        } else if name.eq_ignore_ascii_case("forwarded") {
            append_list(&mut forwarded, h.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            append_list(&mut x_forwarded_for, h.value);
        } else if name.eq_ignore_ascii_case("host") {
            if host_seen {
                return Err(HttpError::MALFORMED);
            }
            host_seen = true;
        }
    }
    if transfer_encoding && (content_length.is_some() || http10) {
        // Both framings at once, or chunked in 1.0: refuse rather than guess (RFC 9112 §6.1).
        return Err(HttpError::MALFORMED);
    }
    if transfer_encoding && !chunked {
        return Err(HttpError::MALFORMED);
    }
    let body = if chunked {
        BodyKind::Chunked
    } else {
        match content_length {
            None | Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    };
    let keep_alive = if http10 {
        connection_keep_alive && !connection_close
    } else {
        !connection_close
    };
    Ok(HeadParse::Complete(
        Box::new(RequestHead {
            method,
            path: path.to_string(),
            query: query.to_string(),
            http10,
            keep_alive,
            body,
            expect_continue: expect_continue && !http10,
            last_event_id,
            authorization,
            publish_token,
            upgrade,
            connection_upgrade,
            if_none_match,
            cookie,
            idempotency_key,
            forwarded,
            x_forwarded_for,
        }),
        len,
    ))
}

/// Adds a repeated list header's value to the ones before it (`, `-joined, as RFC 9110 §5.3
/// allows); the head's size limit bounds the total.
fn append_list(list: &mut Option<Vec<u8>>, value: &[u8]) {
    match list {
        Some(joined) => {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(value);
        }
        None => *list = Some(value.to_vec()),
    }
}

/// Splits a request target into path and query; absolute-form targets lose scheme and authority.
fn split_target(target: &str) -> Result<(&str, &str), HttpError> {
    // The request-target grammar is ASCII; raw UTF-8 must arrive percent-encoded.
    if !target.is_ascii() {
        return Err(HttpError::MALFORMED);
    }
    let origin_form = if target.starts_with('/') || target == "*" {
        target
    } else {
        let rest = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
            .ok_or(HttpError::MALFORMED)?;
        match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        }
    };
    Ok(match origin_form.split_once('?') {
        Some((path, query)) => (path, query),
        None => (origin_form, ""),
    })
}

fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::MALFORMED);
    }
    value
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(HttpError::MALFORMED)
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value)
        .unwrap_or("\u{fffd}")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Decoded `(name, value)` pairs of a query string (`application/x-www-form-urlencoded`: `+` is a
/// space, `%XX` a byte, and the result must be UTF-8).
pub fn query_pairs(
    query: &str,
) -> impl Iterator<Item = Result<(Cow<'_, str>, Cow<'_, str>), HttpError>> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        Ok((percent_decode(name)?, percent_decode(value)?))
    })
}

/// Decodes one query component.
pub fn percent_decode(s: &str) -> Result<Cow<'_, str>, HttpError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(HttpError::BAD_ENCODING)?;
                let hi = hex_val(hex[0]).ok_or(HttpError::BAD_ENCODING)?;
                let lo = hex_val(hex[1]).ok_or(HttpError::BAD_ENCODING)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| HttpError::BAD_ENCODING)
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Topic names: 1..=128 bytes of `[A-Za-z0-9._~:/-]`.
pub fn valid_topic(topic: &str) -> bool {
    (1..=128).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~:/-".contains(&b))
}

/// Why a topic cannot join a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// Not 1..=128 bytes of `[A-Za-z0-9._~:/-]`.
    Invalid,
    /// The list already holds `limit` distinct topics.
    TooMany,
}

/// Most topics one subscription, publish or frame connection may name.
pub const MAX_TOPICS_PER_REQUEST: usize = 64;

/// Checks `topic` against the naming rule and the list it would join: `Ok(true)` when it is new
/// and fits under `limit` distinct topics, `Ok(false)` when the list already has it. One rule for
/// HTTP queries, frames and the publish handle.
pub fn topic_is_new<T: AsRef<str>>(
    topics: &[T],
    topic: &str,
    limit: usize,
) -> Result<bool, TopicError> {
    if !valid_topic(topic) {
        return Err(TopicError::Invalid);
    }
    if topics.iter().any(|t| t.as_ref() == topic) {
        return Ok(false);
    }
    if topics.len() >= limit {
        return Err(TopicError::TooMany);
    }
    Ok(true)
}

/// Event types: 1..=128 bytes, no CR, LF or NUL (they would end the `event:` line or be dropped).
pub fn valid_event_type(event_type: &str) -> bool {
    (1..=128).contains(&event_type.len())
        && !event_type.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Box<RequestHead>, HttpError> {
        match parse_head(raw.as_bytes())? {
            HeadParse::Complete(h, len) => {
                assert_eq!(len, raw.len());
                Ok(h)
            }
            HeadParse::Partial => panic!("partial: {raw:?}"),
        }
    }

    #[test]
    fn parses_the_fields_routes_use() {
        let h =
            head("GET /events?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: r-5\r\n\r\n")
                .unwrap();
        assert_eq!(
            (h.method, h.path.as_str(), h.query.as_str()),
            (Method::Get, "/events", "topic=a&topic=b")
        );
        assert!(h.keep_alive && !h.http10);
        assert_eq!(h.last_event_id.as_deref(), Some("r-5"));
        let h = head("POST http://host:1/publish?topic=a HTTP/1.0\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        assert_eq!(
            (h.path.as_str(), h.body, h.keep_alive),
            ("/publish", BodyKind::Length(5), false)
        );
        let h = head("POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!((h.body, h.keep_alive), (BodyKind::Chunked, false));
        let h = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        assert_eq!(h.cookie, None);
        let h = head("GET / HTTP/1.1\r\nCookie: a=1\r\ncookie: b=2\r\n\r\n").unwrap();
        assert_eq!(h.cookie.as_deref(), Some(&b"a=1; b=2"[..]));
    }

    #[test]
    fn framing_errors_table() {
        let cases: &[(&str, u16)] = &[
            ("BREW /pot HTTP/1.1\r\n\r\n", 501),
            ("GET /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (
                "GET /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "GET /x HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            (
                "GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("GET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "GET /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
            ("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET /x HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417),
            ("GET x HTTP/1.1\r\n\r\n", 400),
            ("GET /x HTTP/2.0\r\n\r\n", 400),
            ("GET /\0 HTTP/1.1\r\n\r\n", 400),
            ("GET /h\u{e9} HTTP/1.1\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let got = head(raw).err().map(|e| e.status);
            assert_eq!(got, Some(*status), "{raw:?}");
        }
        let same =
            head("GET /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(same.body, BodyKind::Length(3));
    }

    #[test]
    fn head_limits() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Ok(HeadParse::Partial)
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            parse_head(long.as_bytes()).err().map(|e| e.status),
            Some(431)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_head(raw.as_bytes()).err().map(|e| e.status),
            Some(431)
        );
    }

    #[test]
    fn query_decoding() {
        let pairs: Vec<_> = query_pairs("topic=a%2Fb&event=hello+world&flag&=x")
            .map(|p| p.map(|(n, v)| (n.into_owned(), v.into_owned())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("topic".into(), "a/b".into()),
                ("event".into(), "hello world".into()),
                ("flag".into(), "".into()),
                ("".into(), "x".into())
            ]
        );
        for bad in ["a=%", "a=%4", "a=%zz", "a=%ff"] {
            assert!(query_pairs(bad).any(|p| p.is_err()), "{bad}");
        }
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
    }

    #[test]
    fn topic_lists_dedupe_and_cap() {
        let list = vec!["a", "b"];
        assert_eq!(topic_is_new(&list, "c", 3), Ok(true));
        assert_eq!(
            topic_is_new(&list, "a", 2),
            Ok(false),
            "a repeat never counts against the cap"
        );
        assert_eq!(topic_is_new(&list, "c", 2), Err(TopicError::TooMany));
        assert_eq!(topic_is_new(&list, "c d", 9), Err(TopicError::Invalid));
    }

    #[test]
    fn topic_and_event_type_rules() {
        for ok in ["a", "A-z_0.9~:/x", &"t".repeat(128)] {
            assert!(valid_topic(ok), "{ok}");
        }
        for bad in ["", "a b", "é", "a?b", &"t".repeat(129), "a\0"] {
            assert!(!valid_topic(bad), "{bad:?}");
        }
        assert!(valid_event_type("update ✓"));
        for bad in ["", "a\nb", "a\rb", "a\0", &"e".repeat(129)] {
            assert!(!valid_event_type(bad), "{bad:?}");
        }
    }
}
