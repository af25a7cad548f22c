//! The web console (`--ui`): its compiled-in assets and the `/stats` JSON document.
//!
//! Pure: nothing here touches a connection or the loop. `conn/console.rs` answers the requests
//! with what this module builds. The console costs nothing on the hot path: the page polls
//! `/stats` once a second and computes rates in the browser from counter deltas, and the figures
//! it reads are the counters and gauges the loop keeps anyway.

mod assets;
mod stats;

pub use assets::{lookup, Asset, Lookup, ASSETS};
pub use stats::{render_stats, StatsInput, DEFAULT_TOPICS, MAX_TOPICS};

/// Policy for every console response: scripts, styles, images and fetches from this origin only;
/// no inline script or style, no plugins, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// True when an `If-None-Match` value names `etag` (weak comparison, RFC 9110 §13.1.2).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Characters escaped for a JSON string (the one writer of them, shared with the logs).
pub(crate) use crate::json::push_json_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_comparison_is_weak_and_handles_lists() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", \"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
        assert!(!etag_matches("", "\"abc\""));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}</");
        assert_eq!(out, r#""a\"b\\c\nd\u0001\u003c/""#);
    }
}
