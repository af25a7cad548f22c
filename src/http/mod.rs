//! HTTP/1.1 for the loop: request heads and bodies in, canned responses out, and routing.
//!
//! Nothing here touches a socket: `conn` feeds bytes in and queues what comes out. Every error a
//! request can cause is an [`HttpError`] carrying its status, so the status of each failure is
//! decided in exactly one place.

pub mod body;
pub mod request;
pub mod response;

pub use body::ChunkedDecoder;
pub use request::{parse_head, BodyKind, HeadParse, Method, RequestHead};

/// A request the server answers with an error status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpError {
    /// Status code.
    pub status: u16,
    /// Short reason, sent in the JSON body and logged.
    pub reason: &'static str,
    /// The request's framing is unknown or broken: the connection cannot be reused.
    pub close: bool,
    /// Methods for the `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl HttpError {
    const fn new(status: u16, reason: &'static str, close: bool) -> HttpError {
        HttpError {
            status,
            reason,
            close,
            allow: None,
        }
    }
    /// Syntax the parser rejects, or ambiguous framing.
    pub const MALFORMED: HttpError = HttpError::new(400, "malformed request", true);
    /// Invalid percent-encoding or non-UTF-8 in the query.
    pub const BAD_ENCODING: HttpError =
        HttpError::new(400, "invalid percent-encoding in query", false);
    /// Missing or invalid topic.
    pub const BAD_TOPIC: HttpError = HttpError::new(
        400,
        "missing or invalid topic (1-128 bytes of A-Z a-z 0-9 . _ ~ : / -)",
        false,
    );
    /// Invalid `event` parameter.
    pub const BAD_EVENT_TYPE: HttpError = HttpError::new(
        400,
        "invalid event type (1-128 bytes, no CR, LF or NUL)",
        false,
    );
    /// A `topic_line` parameter other than `1` or `0`.
    pub const BAD_TOPIC_LINE: HttpError = HttpError::new(
        400,
        "invalid topic_line (1 to start each event's data with its topics, or 0)",
        false,
    );
    /// Body is not UTF-8.
    pub const NOT_UTF8: HttpError = HttpError::new(400, "body is not valid UTF-8", false);
    /// Missing or wrong bearer token.
    pub const UNAUTHORIZED: HttpError =
        HttpError::new(401, "missing or invalid bearer token", false);
    /// A valid JWT that does not cover a requested topic.
    pub const FORBIDDEN_TOPIC: HttpError =
        HttpError::new(403, "token does not cover the topic", false);
    /// A valid JWT whose subject is banned for now (the server API's revocation).
    pub const FORBIDDEN_BANNED: HttpError = HttpError::new(403, "subject banned", false);
    /// A valid JWT without the admin claim, asking for the server's figures.
    pub const FORBIDDEN_ADMIN: HttpError = HttpError::new(
        403,
        "token does not grant admin (the sseloop.admin claim)",
        false,
    );
    /// Refused by the host's publish hook.
    pub const FORBIDDEN: HttpError = HttpError::new(403, "refused by the host", false);
    /// Unknown path.
    pub const NOT_FOUND: HttpError = HttpError::new(404, "not found", false);
    /// Body larger than `--max-body`.
    pub const BODY_TOO_LARGE: HttpError = HttpError::new(413, "body exceeds --max-body", true);
    /// An `Expect` other than `100-continue`.
    pub const EXPECTATION_FAILED: HttpError = HttpError::new(417, "unsupported expectation", true);
    /// `Upgrade` missing or not `cafe` on `/frames`.
    pub const UPGRADE_REQUIRED: HttpError = HttpError::new(426, "upgrade to cafe required", false);
    /// Head over the size or header-count limit.
    pub const HEAD_TOO_LARGE: HttpError =
        HttpError::new(431, "request header fields too large", true);
    /// Method not known at all.
    pub const UNKNOWN_METHOD: HttpError = HttpError::new(501, "method not implemented", true);
    /// Transfer coding other than chunked.
    pub const UNSUPPORTED_CODING: HttpError =
        HttpError::new(501, "transfer coding not implemented (only chunked)", true);
    /// Over `--max-connections`.
    pub const OVER_CAPACITY: HttpError = HttpError::new(503, "server at connection limit", true);
    /// Over `--max-connections-per-ip` or `--max-new-connections-rate` (RFC 6585); sent with
    /// `Retry-After`, then the connection closes.
    pub const TOO_MANY_CONNECTIONS: HttpError =
        HttpError::new(429, "too many connections from this address", true);
    /// Over `--publish-rate`; sent with `Retry-After` (nothing was published).
    pub const PUBLISH_RATE: HttpError =
        HttpError::new(429, "publish rate exceeded (--publish-rate)", false);
    /// Over `--max-subscriptions-per-conn`.
    pub const TOO_MANY_SUBSCRIPTIONS: HttpError = HttpError::new(
        400,
        "too many subscriptions on one stream (--max-subscriptions-per-conn)",
        false,
    );
    /// Shutting down.
    pub const SHUTTING_DOWN: HttpError = HttpError::new(503, "server shutting down", true);
    /// `--max-topics` reached and no topic can be released (a publish or subscription that needs
    /// a new one).
    pub const TOO_MANY_TOPICS: HttpError =
        HttpError::new(503, "too many topics on this server (--max-topics)", true);

    /// The backplane did not accept a publish (unreachable, or no answer within
    /// `--backplane-timeout-ms`); sent with `Retry-After`.
    pub const BACKPLANE_UNAVAILABLE: HttpError = HttpError::new(
        503,
        "backplane unavailable, retry (with the same Idempotency-Key)",
        false,
    );
    /// `/readyz` while publishing does not work.
    pub const NOT_READY: HttpError = HttpError::new(503, "not ready: backplane unavailable", false);
    /// An `Idempotency-Key` that is not 1..=128 visible ASCII characters.
    pub const BAD_IDEMPOTENCY_KEY: HttpError = HttpError::new(
        400,
        "Idempotency-Key must be 1..=128 visible ASCII characters",
        false,
    );

    /// 405 listing the methods the path allows.
    pub const fn method_not_allowed(allow: &'static str) -> HttpError {
        HttpError {
            status: 405,
            reason: "method not allowed",
            close: false,
            allow: Some(allow),
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /events`: an SSE stream.
    Events,
    /// `POST /publish`.
    Publish,
    /// `GET|HEAD /healthz`.
    Healthz,
    /// `GET|HEAD /readyz`: 200 while publishing works.
    Readyz,
    /// `GET|HEAD /metrics`.
    Metrics,
    /// `GET /frames` with `Upgrade: cafe`.
    Frames,
    /// `OPTIONS` on a known path (CORS preflight).
    Preflight,
    /// `GET|HEAD /ui` and `/ui/<asset>`: the web console (404 without `--ui`).
    Console,
    /// `GET|HEAD /stats`: the console's JSON numbers (404 without `--ui`).
    Stats,
    /// `/api/v1/…`: the server API (its methods are checked by `api::parse`).
    Api,
}

/// Maps method and path to a route, or to 404/405.
pub fn route(method: Method, path: &str) -> Result<Route, HttpError> {
    let (route, allow) = match path {
        "/events" => (Route::Events, "GET, OPTIONS"),
        "/publish" => (Route::Publish, "POST, OPTIONS"),
        "/healthz" => (Route::Healthz, "GET, HEAD, OPTIONS"),
        "/readyz" => (Route::Readyz, "GET, HEAD, OPTIONS"),
        "/metrics" => (Route::Metrics, "GET, HEAD, OPTIONS"),
        "/frames" => (Route::Frames, "GET, OPTIONS"),
        "/stats" => (Route::Stats, "GET, HEAD, OPTIONS"),
        p if p == "/ui" || p.starts_with("/ui/") => (Route::Console, "GET, HEAD, OPTIONS"),
        p if p.starts_with("/api/v1/") => (Route::Api, ""),
        "*" if method == Method::Options => return Ok(Route::Preflight),
        _ => return Err(HttpError::NOT_FOUND),
    };
    let allowed = match (route, method) {
        (_, Method::Options) => return Ok(Route::Preflight),
        (Route::Events | Route::Frames, Method::Get) => true,
        (Route::Publish, Method::Post) => true,
        (Route::Healthz | Route::Readyz | Route::Metrics, Method::Get | Method::Head) => true,
        (Route::Console | Route::Stats, Method::Get | Method::Head) => true,
        (Route::Api, _) => true,
        _ => false,
    };
    if allowed {
        Ok(route)
    } else {
        Err(HttpError::method_not_allowed(allow))
    }
}

/// Compares a presented credential with the configured token in time independent of where they
/// differ (the length of the configured token is not secret-critical and may leak).
pub fn token_matches(presented: &[u8], expected: &str) -> bool {
    let expected = expected.as_bytes();
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        diff |= e ^ presented.get(i).copied().unwrap_or(!e);
    }
    // Keep the optimiser from short-circuiting the loop.
    std::hint::black_box(diff) == 0
}

/// The token in an `Authorization: Bearer <token>` header value (scheme is case-insensitive).
pub fn bearer_token(authorization: &[u8]) -> Option<&[u8]> {
    let scheme_end = authorization.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = authorization.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_method_errors() {
        assert_eq!(route(Method::Get, "/events"), Ok(Route::Events));
        assert_eq!(route(Method::Post, "/publish"), Ok(Route::Publish));
        assert_eq!(route(Method::Head, "/healthz"), Ok(Route::Healthz));
        assert_eq!(route(Method::Options, "/publish"), Ok(Route::Preflight));
        assert_eq!(route(Method::Options, "*"), Ok(Route::Preflight));
        assert_eq!(route(Method::Get, "/nope"), Err(HttpError::NOT_FOUND));
        assert_eq!(route(Method::Get, "/events/"), Err(HttpError::NOT_FOUND));
        let err = route(Method::Get, "/publish").unwrap_err();
        assert_eq!((err.status, err.allow), (405, Some("POST, OPTIONS")));
        assert_eq!(route(Method::Post, "/events").unwrap_err().status, 405);
        assert_eq!(route(Method::Delete, "/metrics").unwrap_err().status, 405);
        assert_eq!(route(Method::Get, "/ui"), Ok(Route::Console));
        assert_eq!(route(Method::Head, "/ui/app.js"), Ok(Route::Console));
        assert_eq!(route(Method::Get, "/uix"), Err(HttpError::NOT_FOUND));
        assert_eq!(route(Method::Get, "/stats"), Ok(Route::Stats));
        assert_eq!(route(Method::Post, "/stats").unwrap_err().status, 405);
    }

    #[test]
    fn bearer_and_constant_time_compare() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert!(token_matches(b"secret", "secret"));
        assert!(!token_matches(b"secreT", "secret"));
        assert!(!token_matches(b"secret2", "secret"));
        assert!(!token_matches(b"secre", "secret"));
        assert!(!token_matches(b"", "secret"));
    }
}
