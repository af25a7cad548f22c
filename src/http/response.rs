//! Response heads and canned bodies. Every response carries `Access-Control-Allow-Origin` (and
//! `Vary: Origin` when it is not `*`) so that browser pages can both subscribe and publish.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::HttpError;

/// Methods and headers a preflight allows. `*` would not cover `Authorization`, so every header
/// the docs tell a browser to send is listed: `Idempotency-Key` lets a page retry a publish
/// answered `503` without publishing it twice.
const PREFLIGHT_METHODS: &str = "GET, POST, OPTIONS";
const PREFLIGHT_HEADERS: &str =
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Cache-Control, X-Requested-With";
/// Response headers of error answers that a cross-origin page may read (besides the CORS
/// safelist): when to retry a `503`, and why a token was refused.
const EXPOSED_HEADERS: &str = "Retry-After, WWW-Authenticate";

/// What every response of this server shares.
pub struct Common<'a> {
    /// `--cors-origin`.
    pub cors_origin: &'a str,
    /// The cached `Date` value.
    pub date: &'a str,
    /// Send `Access-Control-Allow-Credentials: true` (a JWT cookie is configured, so a page's
    /// `EventSource` with `withCredentials` may read the stream; the origin is then specific).
    pub allow_credentials: bool,
}

/// The reason phrase of a status.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn status_line_and_common(out: &mut String, status: u16, common: &Common<'_>) {
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nServer: sseloop\r\nDate: {}\r\nAccess-Control-Allow-Origin: {}\r\n",
        reason_phrase(status),
        common.date,
        common.cors_origin
    );
    if common.cors_origin != "*" {
        out.push_str("Vary: Origin\r\n");
    }
    if common.allow_credentials {
        out.push_str("Access-Control-Allow-Credentials: true\r\n");
    }
}

/// Appends a complete response with a body (omitted for HEAD, length kept).
#[allow(clippy::too_many_arguments)]
pub fn write_response(
    out: &mut Vec<u8>,
    common: &Common<'_>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
    extra_headers: &[(&str, &str)],
) {
    let mut head = String::with_capacity(256);
    status_line_and_common(&mut head, status, common);
    for (name, value) in extra_headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    // 204 and 304 have no content (RFC 9110 §15.3.5, §15.4.5).
    let no_content = status == 204 || status == 304;
    if !no_content {
        let _ = write!(
            head,
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    // Explicit either way: HTTP/1.0 clients assume close unless told keep-alive.
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n"
    } else {
        "Connection: close\r\n"
    });
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if !head_only && !no_content {
        out.extend_from_slice(body);
    }
}

/// The JSON body of an error answer: `{"error":"…","status":N}` and a newline.
pub fn error_body(err: &HttpError) -> String {
    format!(
        "{{\"error\":\"{}\",\"status\":{}}}\n",
        err.reason, err.status
    )
}

/// Appends the JSON error response for `err` (its body from [`error_body`]).
pub fn write_error(
    out: &mut Vec<u8>,
    common: &Common<'_>,
    err: &HttpError,
    keep_alive: bool,
    extra: &[(&str, &str)],
) {
    let body = error_body(err);
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    headers.push(("Access-Control-Expose-Headers", EXPOSED_HEADERS));
    if let Some(allow) = err.allow {
        headers.push(("Allow", allow));
    }
    write_response(
        out,
        common,
        err.status,
        "application/json",
        body.as_bytes(),
        keep_alive,
        false,
        &headers,
    );
}

/// Appends the 204 answer to a CORS preflight.
pub fn write_preflight(out: &mut Vec<u8>, common: &Common<'_>, keep_alive: bool) {
    write_response(
        out,
        common,
        204,
        "",
        b"",
        keep_alive,
        false,
        &[
            ("Access-Control-Allow-Methods", PREFLIGHT_METHODS),
            ("Access-Control-Allow-Headers", PREFLIGHT_HEADERS),
            ("Access-Control-Max-Age", "86400"),
        ],
    );
}

/// Appends the head of an SSE stream. The body is delimited by the connection's end (no
/// Content-Length, no chunking), so every subscriber's bytes are the same shared encoding.
pub fn write_sse_head(out: &mut Vec<u8>, common: &Common<'_>) {
    let mut head = String::with_capacity(256);
    status_line_and_common(&mut head, 200, common);
    head.push_str(
        "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n",
    );
    out.extend_from_slice(head.as_bytes());
}

/// Appends a `101 Switching Protocols` to the frame protocol.
pub fn write_upgrade_head(out: &mut Vec<u8>, common: &Common<'_>) {
    let mut head = String::with_capacity(192);
    status_line_and_common(&mut head, 101, common);
    head.push_str("Upgrade: cafe\r\nConnection: Upgrade\r\n\r\n");
    out.extend_from_slice(head.as_bytes());
}

/// IMF-fixdate of `now` (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn date_format() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn error_response_bytes() {
        let common = Common {
            cors_origin: "https://a.example",
            date: "D",
            allow_credentials: true,
        };
        let mut out = Vec::new();
        write_error(
            &mut out,
            &common,
            &HttpError::method_not_allowed("GET"),
            true,
            &[],
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(
            text.contains("\r\nAccess-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n")
        );
        assert!(text.contains("\r\nAllow: GET\r\n"));
        assert!(
            text.contains("\r\nAccess-Control-Expose-Headers: Retry-After, WWW-Authenticate\r\n")
        );
        assert!(text.contains("\r\nAccess-Control-Allow-Credentials: true\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"method not allowed\",\"status\":405}\n"));
        assert!(text.contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn preflight_lists_authorization() {
        let common = Common {
            cors_origin: "*",
            date: "D",
            allow_credentials: false,
        };
        let mut out = Vec::new();
        write_preflight(&mut out, &common, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(text.contains(
            "Access-Control-Allow-Headers: Authorization, Content-Type, Idempotency-Key, \
             Last-Event-ID"
        ));
        assert!(!text.contains("Content-Length"));
        assert!(!text.contains("Vary"));
        assert!(!text.contains("Credentials"));
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }
}
