//! Answers for the web console's routes (`--ui`): its files under `/ui/` and the `/stats`
//! document. What they contain is built in [`crate::console`]; this file only decides status,
//! headers and access.

use std::borrow::Cow;

use super::authz::Refused;
use super::http_stage::{common, Reply};
use super::Connection;
use crate::auth::AuthFailure;
use crate::console::{self, Lookup, StatsInput};
use crate::http::request::query_pairs;
use crate::http::response;
use crate::http::{self, HttpError, Method, RequestHead};
use crate::loop_state::LoopState;

/// Headers every console answer carries.
const HARDENING: [(&str, &str); 3] = [
    ("Content-Security-Policy", console::CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
];

impl Connection {
    /// `GET|HEAD /ui`, `/ui/`, `/ui/<file>`. The files hold no data, so they need no token.
    pub(super) fn serve_console(
        &mut self,
        key: usize,
        head: &RequestHead,
        reuse: bool,
        sh: &mut LoopState,
    ) {
        if !sh.config.ui {
            return self.respond_error(key, &HttpError::NOT_FOUND, reuse, &[], sh);
        }
        let asset = match console::lookup(&head.path) {
            Lookup::Asset(asset) => asset,
            Lookup::Missing => {
                return self.respond_error(key, &HttpError::NOT_FOUND, reuse, &[], sh)
            }
            Lookup::Redirect(location) => {
                let headers = [("Location", location), HARDENING[1]];
                return self.respond_console(
                    key,
                    308,
                    "text/plain",
                    b"",
                    reuse,
                    true,
                    &headers,
                    sh,
                );
            }
        };
        let etag = asset.etag();
        let fresh = head
            .if_none_match
            .as_deref()
            .is_some_and(|tags| console::etag_matches(tags, &etag));
        // `no-cache`: reuse only after revalidating, so a new binary's files are picked up at once.
        let mut headers = vec![("ETag", etag.as_str()), ("Cache-Control", "no-cache")];
        headers.extend(HARDENING);
        let status = if fresh { 304 } else { 200 };
        let head_only = head.method == Method::Head;
        self.respond_console(
            key,
            status,
            asset.content_type,
            asset.body,
            reuse,
            head_only,
            &headers,
            sh,
        );
    }

    /// `GET|HEAD /stats[?topics=N]`: the console's numbers, which name every topic. Open only
    /// when no authorization is configured ([`Self::authorize_stats`]).
    pub(super) fn serve_stats(
        &mut self,
        key: usize,
        head: &RequestHead,
        reuse: bool,
        sh: &mut LoopState,
    ) {
        if !sh.config.ui {
            return self.respond_error(key, &HttpError::NOT_FOUND, reuse, &[], sh);
        }
        if self.authorize_stats(key, head, reuse, sh).is_err() {
            return;
        }
        let (limit, samples) = match stats_query(&head.query) {
            Ok(q) => q,
            Err(err) => return self.respond_error(key, &err, reuse, &[], sh),
        };
        let topics = sh.hub.topic_summaries(limit);
        let body = console::render_stats(&StatsInput {
            config: &sh.config,
            auth_mode: sh.auth.mode(&sh.config),
            max_connections: sh.max_connections,
            run: sh.hub.run(),
            uptime: sh.now.saturating_duration_since(sh.started),
            metrics: &sh.metrics,
            gauges: sh.gauges(),
            topics: &topics,
            samples: samples.then_some(&sh.samples),
        });
        let headers = [("Cache-Control", "no-store"), HARDENING[1]];
        let head_only = head.method == Method::Head;
        self.respond_console(
            key,
            200,
            "application/json",
            body.as_bytes(),
            reuse,
            head_only,
            &headers,
            sh,
        );
    }

    /// Who may read `/stats`, in every authorization mode. The token comes only from
    /// `Authorization: Bearer` (a URL would leave it in logs; a cookie would let any page the
    /// origin trusts read the figures). With JWT: a token with `"sseloop":{"admin":true}`
    /// (missing or invalid `401`, valid without the claim `403`). With static tokens: either
    /// configured token (`401` otherwise). `--admin-token` in every mode. Without authorization:
    /// anyone.
    fn authorize_stats(
        &mut self,
        key: usize,
        head: &RequestHead,
        reuse: bool,
        sh: &mut LoopState,
    ) -> Result<(), Refused> {
        let presented = head.authorization.as_deref().and_then(http::bearer_token);
        if let (Some(p), Some(admin)) = (presented, sh.config.admin_token.as_deref()) {
            if http::token_matches(p, admin) {
                return Ok(());
            }
        }
        if sh.auth.enabled() {
            let admin = sh.auth.verify(presented).and_then(|grants| {
                if grants.admin {
                    Ok(())
                } else {
                    Err(AuthFailure::NotAdmin)
                }
            });
            return admin.map_err(|failure| {
                self.refuse_auth(key, &head.path, failure, reuse, sh);
                Refused
            });
        }
        let tokens = [
            &sh.config.subscribe_token,
            &sh.config.publish_token,
            &sh.config.admin_token,
        ];
        if tokens.iter().all(|t| t.is_none()) {
            return Ok(());
        }
        let accepted = presented.is_some_and(|p| {
            tokens
                .iter()
                .filter_map(|t| t.as_deref())
                .fold(false, |ok, expected| http::token_matches(p, expected) | ok)
        });
        if accepted {
            return Ok(());
        }
        self.refuse_unauthorized(key, &head.path, presented.is_some(), reuse, sh);
        Err(Refused)
    }

    #[allow(clippy::too_many_arguments)]
    fn respond_console(
        &mut self,
        key: usize,
        status: u16,
        content_type: &str,
        body: &[u8],
        reuse: bool,
        head_only: bool,
        headers: &[(&str, &str)],
        sh: &mut LoopState,
    ) {
        let mut bytes = Vec::with_capacity(512 + body.len());
        response::write_response(
            &mut bytes,
            &common(sh),
            status,
            content_type,
            body,
            reuse,
            head_only,
            headers,
        );
        let reply = Reply {
            status,
            bytes,
            keep_alive: reuse,
        };
        self.queue_response(key, reply, sh);
    }
}

/// The query of `/stats`: how many busiest topics to list, and whether to add the samples.
fn stats_query(query: &str) -> Result<(usize, bool), HttpError> {
    let samples = query_pairs(query).any(|p| matches!(p, Ok((n, v)) if n == "samples" && v == "1"));
    Ok((topics_limit(query)?, samples))
}

/// The `topics` query parameter of `/stats`: how many busiest topics to list.
fn topics_limit(query: &str) -> Result<usize, HttpError> {
    const BAD: HttpError = HttpError {
        reason: "topics must be a number from 0 to 100",
        ..HttpError::BAD_ENCODING
    };
    let mut limit = console::DEFAULT_TOPICS;
    for pair in query_pairs(query) {
        let (name, value): (Cow<'_, str>, Cow<'_, str>) = pair?;
        if name == "topics" {
            limit = value.parse().map_err(|_| BAD)?;
        }
    }
    if limit > console::MAX_TOPICS {
        return Err(BAD);
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_limit_defaults_and_bounds() {
        assert_eq!(topics_limit(""), Ok(console::DEFAULT_TOPICS));
        assert_eq!(topics_limit("topics=3&x=1"), Ok(3));
        assert_eq!(topics_limit("topics=0"), Ok(0));
        assert_eq!(topics_limit("topics=100"), Ok(100));
        assert_eq!(topics_limit("topics=101").unwrap_err().status, 400);
        assert_eq!(topics_limit("topics=-1").unwrap_err().status, 400);
        assert_eq!(topics_limit("topics=%zz").unwrap_err().status, 400);
    }
}
