//! A connection's side of the per-client limits (`crate::limits` decides, this answers): a
//! connection over its address's limits, refused with `429` + `Retry-After` (a `101` and a GOAWAY
//! CONNECTION_LIMITED to a frame handshake) and closed; the client of a proxied connection,
//! taken from each request head; publishes over `--publish-rate` (`429` + `Retry-After`, ERROR
//! RATE_LIMITED); streams over `--max-subscriptions-per-conn` (`400`, ERROR
//! TOO_MANY_SUBSCRIPTIONS). With the limits off, each hook is one test of a field.

use super::capacity::REJECT_GRACE;
use super::http_stage::{common, Reply};
use super::Connection;
use crate::frame::{self, ErrorCode, Kind};
use crate::http::{response, HttpError, RequestHead};
use crate::limits::{ConnLimit, LimitKind, Refusal};
use crate::loop_state::LoopState;

impl Connection {
    /// Hands over what the limits decided at accept (see `Limits::on_accept`).
    pub fn set_limit(&mut self, limit: Option<Box<ConnLimit>>) {
        self.limit = limit;
    }

    /// Gives back the connection's count (a connection dropped before it started).
    pub fn release_limit(&mut self, sh: &mut LoopState) {
        sh.limits.release(self.limit.take());
    }

    /// Accepted over a per-address limit: like a connection over `--max-connections`, it does
    /// not count against that limit and may send one request head within [`REJECT_GRACE`],
    /// answered with the refusal (so that a frame client gets its GOAWAY).
    pub(super) fn admit_limited(&mut self, sh: &mut LoopState) {
        self.refused = true;
        sh.refused += 1;
        self.grace = REJECT_GRACE;
        if let Some(limit) = self.limit.as_deref() {
            if let (Some(r), Some(client)) = (limit.refusal, limit.client()) {
                sh.limits.note(r.kind, &client, sh.now);
            }
        }
    }

    /// Before a request is routed: the refusal decided at accept, or, on a proxied connection,
    /// the client its headers name, charged now. True when the request was answered (refused).
    pub(super) fn limit_request(
        &mut self,
        key: usize,
        head: &RequestHead,
        sh: &mut LoopState,
    ) -> bool {
        let Some(limit) = self.limit.as_deref_mut() else {
            return false;
        };
        let refusal = match limit.refusal {
            Some(r) => r,
            None if limit.proxied() => {
                let fwd = head.forwarded.as_deref();
                let xff = head.x_forwarded_for.as_deref();
                match sh.limits.on_request(limit, fwd, xff, sh.now) {
                    Ok(()) => return false,
                    Err(r) => {
                        if let Some(client) = limit.client() {
                            sh.limits.note(r.kind, &client, sh.now);
                        }
                        r
                    }
                }
            }
            None => return false,
        };
        self.refuse_connection(key, head, refusal, sh);
        true
    }

    /// `429` with `Retry-After`, or to a frame handshake a `101` and a GOAWAY whose retry hint
    /// says the same; then the connection closes.
    fn refuse_connection(
        &mut self,
        key: usize,
        head: &RequestHead,
        refusal: Refusal,
        sh: &mut LoopState,
    ) {
        if head.upgrades_to_cafe() {
            let mut bytes = Vec::with_capacity(256);
            response::write_upgrade_head(&mut bytes, &common(sh));
            let ms = u32::try_from(refusal.retry_after.saturating_mul(1000)).unwrap_or(u32::MAX);
            let why = "too many connections from this address";
            let _ = frame::encode_goaway_frame(&mut bytes, ErrorCode::CONNECTION_LIMITED, ms, why);
            let reply = Reply {
                status: 101,
                bytes,
                keep_alive: false,
            };
            return self.queue_response(key, reply, sh);
        }
        let retry = refusal.retry_after.to_string();
        let extra = [("Retry-After", retry.as_str())];
        self.respond_error(key, &HttpError::TOO_MANY_CONNECTIONS, false, &extra, sh);
    }

    /// A token of `--publish-rate` for a publish by `subject` (else by this connection's
    /// client), or the refusal, counted and logged.
    pub(super) fn take_publish_token(
        &self,
        subject: Option<&str>,
        sh: &mut LoopState,
    ) -> Result<(), Refusal> {
        let limit = self.limit.as_deref();
        let taken = sh.limits.take_publish(limit, subject, sh.now);
        if let Err(r) = taken {
            let client = limit.and_then(ConnLimit::client);
            match (subject, client) {
                (Some(sub), _) => sh
                    .limits
                    .note(r.kind, &format_args!("subject {sub}"), sh.now),
                (None, Some(addr)) => sh.limits.note(r.kind, &addr, sh.now),
                (None, None) => sh.limits.note(r.kind, &"a publisher", sh.now),
            }
        }
        taken
    }

    /// An HTTP publish over `--publish-rate`: `429` with `Retry-After`, nothing published
    /// (and its `Idempotency-Key` not recorded, so a retry is published once).
    pub(super) fn refuse_publish_rate(
        &mut self,
        key: usize,
        refusal: Refusal,
        keep_alive: bool,
        sh: &mut LoopState,
    ) {
        let retry = refusal.retry_after.to_string();
        let extra = [("Retry-After", retry.as_str())];
        self.respond_error(key, &HttpError::PUBLISH_RATE, keep_alive, &extra, sh);
    }

    /// The ERROR message of a PUBLISH frame over `--publish-rate`.
    pub(super) fn publish_rate_message(refusal: Refusal) -> String {
        format!(
            "publish rate exceeded (--publish-rate); retry in {} s",
            refusal.retry_after
        )
    }

    /// Whether a stream would hold more than `--max-subscriptions-per-conn` topics and
    /// patterns with `count`; if so the refusal is counted and logged (the caller answers).
    pub(super) fn over_subscription_cap(&self, count: usize, sh: &mut LoopState) -> bool {
        let max = sh.limits.max_subscriptions();
        if max == 0 || count <= max {
            return false;
        }
        let who = format_args!("conn {} ({count} subscriptions)", self.id);
        sh.limits
            .note(LimitKind::SubscriptionsPerConn, &who, sh.now);
        true
    }

    /// A SUBSCRIBE frame past `--max-subscriptions-per-conn`: ERROR TOO_MANY_SUBSCRIPTIONS.
    pub(super) fn refuse_subscribe_frame(&mut self, key: usize, sh: &mut LoopState) {
        let msg = format!(
            "too many subscriptions on this connection (--max-subscriptions-per-conn {})",
            sh.limits.max_subscriptions()
        );
        let about = Kind::Subscribe.byte();
        let code = ErrorCode::TOO_MANY_SUBSCRIPTIONS;
        self.queue_frame_error(key, code, about, b"", &msg, sh);
    }
}
