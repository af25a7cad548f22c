//! A connection's side of JWT authorization: asking `crate::auth` at the points where requests
//! and frames arrive, answering refusals (401 with a challenge, 403, frame ERRORs; the static
//! tokens' 401 too) with their rate-limited INFO line, and ending a stream when its token expires
//! (`sseloop-reauth` on SSE, GOAWAY `TOKEN_EXPIRED` on frames).
//!
//! Kept apart from the stream and frame stages so that those only gain one call per check.

use std::time::SystemTime;

use super::state::Life;
use super::{Connection, Flow, Stage};
use crate::auth::{self, AuthFailure, Grants, Pattern, SubscriptionError, TokenSources};
use crate::frame::{self, ErrorCode, TopicList};
use crate::http::{HttpError, RequestHead};
use crate::loop_state::LoopState;
use crate::timer::{TimerKey, TimerKind};

use super::http_stage::MAX_TOPICS_PER_REQUEST;

/// The JWT state of a stream: what its token allows, and the timer that ends the stream when the
/// token expires.
pub(super) struct StreamAuth {
    grants: Grants,
    expiry: Option<TimerKey>,
}

/// A refusal whose answer is already queued.
pub(super) struct Refused;

/// Which grant list a frame request needs.
#[derive(Clone, Copy)]
pub(super) enum Need {
    Subscribe,
    Publish,
}

impl Connection {
    /// Authorizes a stream request (SSE or frame handshake) for `wanted` (topics or patterns).
    /// Without JWT the grants are `None`. On refusal the answer is queued.
    pub(super) fn authorize_stream(
        &mut self,
        key: usize,
        head: &RequestHead,
        access_token: Option<&str>,
        wanted: &[String],
        sh: &mut LoopState,
    ) -> Result<Option<Grants>, Refused> {
        let grants = if sh.auth.enabled() {
            let sources = TokenSources {
                authorization: head.authorization.as_deref(),
                query: access_token,
                cookie: head.cookie.as_deref(),
            };
            let token = sh.auth.subscribe_token(sources);
            let checked = sh
                .auth
                .verify(token)
                .and_then(|g| not_banned(g, sh))
                .and_then(|g| auth::check_subscribe(&g, wanted).map(|()| g));
            match checked {
                Ok(grants) => Some(grants),
                Err(failure) => {
                    self.refuse_auth(key, &head.path, failure, false, sh);
                    return Err(Refused);
                }
            }
        } else {
            None
        };
        Ok(grants)
    }

    /// Authorizes an HTTP publish to `topics`: the bearer token's publish patterns must match
    /// every topic. Returns the token's subject for the publish hook (`None` without JWT). Only
    /// the `Authorization` header counts: a cookie would let any site publish as the user (CSRF).
    pub(super) fn authorize_publish(
        &mut self,
        key: usize,
        head: &RequestHead,
        topics: &[String],
        keep_alive: bool,
        sh: &mut LoopState,
    ) -> Result<Option<String>, Refused> {
        if !sh.auth.enabled() {
            return Ok(None);
        }
        let token = head
            .authorization
            .as_deref()
            .and_then(crate::http::bearer_token);
        let checked = sh
            .auth
            .verify(token)
            .and_then(|g| not_banned(g, sh))
            .and_then(|g| auth::check_publish(&g, topics).map(|()| g.subject));
        checked.map_err(|failure| {
            self.refuse_auth(key, &head.path, failure, keep_alive, sh);
            Refused
        })
    }

    /// Answers a refused request: 403 when the token is valid but does not cover the request,
    /// 401 with an RFC 6750 challenge otherwise. Counted by reason; the token is never logged.
    pub(super) fn refuse_auth(
        &mut self,
        key: usize,
        path: &str,
        failure: AuthFailure,
        keep_alive: bool,
        sh: &mut LoopState,
    ) {
        log::debug!("conn {key}: authorization refused: {failure}");
        let err = match failure {
            AuthFailure::ForbiddenTopic => HttpError::FORBIDDEN_TOPIC,
            AuthFailure::NotAdmin => HttpError::FORBIDDEN_ADMIN,
            AuthFailure::Banned => HttpError::FORBIDDEN_BANNED,
            _ => HttpError::UNAUTHORIZED,
        };
        self.log_refusal(path, err.status, failure, sh);
        sh.metrics.count_auth_failure(failure);
        let challenge = [("WWW-Authenticate", failure.challenge())];
        self.respond_error(key, &err, keep_alive, &challenge, sh);
    }

    /// Answers a request refused by the static tokens (`--publish-token`, `--subscribe-token`):
    /// 401 with a challenge, logged and counted like a JWT refusal.
    pub(super) fn refuse_unauthorized(
        &mut self,
        key: usize,
        path: &str,
        token_given: bool,
        keep_alive: bool,
        sh: &mut LoopState,
    ) {
        let (failure, challenge) = if token_given {
            let challenge = "Bearer realm=\"sseloop\", error=\"invalid_token\"";
            (AuthFailure::WrongToken, challenge)
        } else {
            (AuthFailure::Missing, "Bearer realm=\"sseloop\"")
        };
        self.log_refusal(path, HttpError::UNAUTHORIZED.status, failure, sh);
        sh.metrics.count_auth_failure(failure);
        let err = &HttpError::UNAUTHORIZED;
        self.respond_error(key, err, keep_alive, &[("WWW-Authenticate", challenge)], sh);
    }

    /// The INFO line of a refused request, rate-limited: a flood of bad tokens must not fill a
    /// disk. The path carries no query string (it may hold `access_token`); the token is never
    /// logged.
    fn log_refusal(&self, path: &str, status: u16, failure: AuthFailure, sh: &mut LoopState) {
        let Some(skipped) = sh.auth_refusal_log.note(sh.now) else {
            return;
        };
        let peer = self
            .sock
            .peer_addr()
            .map_or_else(|_| "-".to_owned(), |a| a.to_string());
        let reason = failure.label();
        let suppressed = if skipped > 0 {
            format!(" suppressed={skipped}")
        } else {
            String::new()
        };
        log::info!(
            "authorization refused: peer={peer} path={path} status={status} \
             reason={reason}{suppressed}"
        );
    }

    /// Keeps a stream's grants and arms the timer that ends it when the token expires.
    pub(super) fn arm_token_expiry(
        &mut self,
        key: usize,
        grants: Option<Grants>,
        sh: &mut LoopState,
    ) {
        let Some(grants) = grants else {
            return;
        };
        let left = sh.auth.time_left(&grants, SystemTime::now());
        // An `exp` past what `Instant` can represent (centuries away) arms nothing.
        let expiry = sh
            .now
            .checked_add(left)
            .map(|at| sh.timers.arm(at, key, TimerKind::TokenExpiry));
        self.auth = Some(Box::new(StreamAuth { grants, expiry }));
    }

    /// The expiry timer fired (if `timer` is this connection's): the stream's last words, then a
    /// graceful close. What is already queued goes out first, so the stream ends on an event
    /// boundary; nothing published later is queued (delivery needs an active connection).
    pub(super) fn on_token_expiry_timer(
        &mut self,
        key: usize,
        timer: TimerKey,
        sh: &mut LoopState,
    ) -> Flow {
        match self.auth.as_mut() {
            Some(a) if a.expiry == Some(timer) => a.expiry = None,
            _ => return Flow::Keep,
        }
        if self.life != Life::Active {
            return Flow::Keep;
        }
        let mut bytes = Vec::with_capacity(64);
        match self.stage {
            Stage::Sse => bytes.extend_from_slice(auth::REAUTH_EVENT),
            Stage::Frames(_) => {
                let _ = frame::encode_goaway_frame(
                    &mut bytes,
                    ErrorCode::TOKEN_EXPIRED,
                    0,
                    "token expired",
                );
            }
            Stage::Http(_) => return Flow::Keep,
        }
        log::debug!("conn {key}: token expired, ending the stream");
        sh.metrics.streams_token_expired += 1;
        self.access_ending("token_expired");
        // The notice is the stream's last word: events recorded so far go before it, none after.
        self.freeze_streams(sh);
        self.push_private(key, &bytes, u64::MAX, sh);
        // As a shutdown or an API disconnect: the notice gets `--grace-ms` to reach a slow
        // reader before the connection is cut.
        self.drain_gracefully(key, sh)
    }

    /// Authorizes a PUBLISH or SUBSCRIBE frame for `wanted` against the handshake's token.
    /// `Ok` without JWT. An expired token is `UNAUTHORIZED` (its stream is about to end), a token
    /// that does not cover the request `FORBIDDEN`.
    pub(super) fn authorize_frame(
        &self,
        wanted: &[&str],
        need: Need,
        sh: &mut LoopState,
    ) -> Result<(), (ErrorCode, &'static str)> {
        if !sh.auth.enabled() {
            return Ok(());
        }
        let failure = match self.auth.as_deref() {
            None => AuthFailure::Missing,
            Some(a) if sh.auth.time_left(&a.grants, SystemTime::now()).is_zero() => {
                AuthFailure::Expired
            }
            Some(a) => {
                let covered = match need {
                    Need::Subscribe => auth::check_subscribe(&a.grants, wanted),
                    Need::Publish => auth::check_publish(&a.grants, wanted),
                };
                match covered {
                    Ok(()) => return Ok(()),
                    Err(failure) => failure,
                }
            }
        };
        sh.metrics.count_auth_failure(failure);
        let code = match failure {
            AuthFailure::ForbiddenTopic | AuthFailure::NotAdmin | AuthFailure::Banned => {
                ErrorCode::FORBIDDEN
            }
            _ => ErrorCode::UNAUTHORIZED,
        };
        Err((code, failure.description()))
    }

    /// The verified subject of this connection's token, for the publish hook.
    pub(super) fn subject(&self) -> Option<&str> {
        self.auth.as_deref()?.grants.subject.as_deref()
    }

    /// Cancels the expiry timer (the connection is being released).
    pub(super) fn release_auth(&mut self, sh: &mut LoopState) {
        if let Some(timer) = self.auth.take().and_then(|a| a.expiry) {
            sh.timers.cancel(timer);
        }
    }
}

/// The refusals left out of the log in a period that has ended, when no later refusal reported
/// them: a flood that stops still leaves its count.
pub(super) fn report_suppressed(sh: &mut LoopState) {
    if let Some(n) = sh.auth_refusal_log.take_summary(sh.now) {
        log::info!(
            "authorization refused: {n} more refusal(s) not logged in the last {}s \
             (suppressed={n})",
            crate::loop_state::AUTH_REFUSALS_EVERY.as_secs()
        );
    }
}

/// Adds a `topic=` value of a subscribe query (a topic or a pattern) to the request's list.
pub(super) fn push_wanted(list: &mut Vec<String>, value: &str) -> Result<(), HttpError> {
    match auth::push_subscription(list, value, MAX_TOPICS_PER_REQUEST) {
        Ok(_) => Ok(()),
        Err(SubscriptionError::TooMany) => Err(HttpError {
            reason: "too many topics in one request",
            ..HttpError::BAD_TOPIC
        }),
        Err(_) => Err(HttpError::BAD_TOPIC),
    }
}

/// The distinct topics or patterns of a SUBSCRIBE frame, if all are valid and there are at most
/// [`MAX_TOPICS_PER_REQUEST`].
pub(super) fn distinct_wanted(topics: TopicList<'_>) -> Option<Vec<&str>> {
    let mut names: Vec<&str> = Vec::with_capacity(topics.len());
    for name in topics.iter() {
        Pattern::parse(name).ok()?;
        if !names.contains(&name) {
            if names.len() >= MAX_TOPICS_PER_REQUEST {
                return None;
            }
            names.push(name);
        }
    }
    (!names.is_empty()).then_some(names)
}

/// Refuses the grants of a subject an operator banned (`POST /api/v1/disconnect` with
/// `ban_secs`); no lookup while nobody is banned.
pub(super) fn not_banned(grants: Grants, sh: &LoopState) -> Result<Grants, AuthFailure> {
    if sh.bans.is_empty() {
        return Ok(grants);
    }
    match grants.subject.as_deref() {
        Some(sub) if sh.bans.remaining(sub, sh.now).is_some() => Err(AuthFailure::Banned),
        _ => Ok(grants),
    }
}
