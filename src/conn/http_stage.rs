//! The HTTP stage of a connection: reading requests (heads, bodies, pipelining), routing them,
//! publishing, and queueing responses. Switching to a stream hands over to `sse.rs`.

use std::collections::VecDeque;
use std::time::Instant;

use super::state::{Life, LifeEvent};
use super::{Connection, Flow, Stage, PIPELINE_OUTPUT_LIMIT};
use crate::backplane::{AppendError, Origin};
use crate::http::request::{query_pairs, topic_is_new, valid_event_type, TopicError};
use crate::http::response::{self, Common};
use crate::http::{self, BodyKind, ChunkedDecoder, HeadParse, HttpError, RequestHead, Route};
use crate::hub::HubError;
use crate::loop_state::{LoopState, PublishStart};

pub use crate::http::request::MAX_TOPICS_PER_REQUEST;

/// Publishes of one keep-alive connection that may wait for the backplane at once. A client
/// that pipelines its publishes keeps that many in flight instead of one per round trip.
const MAX_PIPELINED_PUBLISHES: usize = 16;

#[derive(Default)]
pub(super) struct HttpConn {
    /// Bytes read and not yet parsed. Freed when the connection goes idle.
    pub(super) rbuf: Vec<u8>,
    /// A request whose head is parsed and whose body is being read.
    pub(super) body: Option<Box<BodyInProgress>>,
    /// When the current request's first byte arrived (header deadline).
    pub(super) request_started: Option<Instant>,
    /// Responses not sent yet because a publish before them is still with the backplane,
    /// oldest first: they go out in request order as the answers arrive.
    pub(super) pending: VecDeque<Pending>,
    /// Number of the next publish handed to the backplane on this connection.
    pub(super) next_publish: u64,
    /// The next request cannot be read until `pending` is empty (it is not a publish, or it
    /// expects `100 Continue`): reading is paused.
    pub(super) stalled: bool,
}

impl HttpConn {
    /// No further request may be read for now: one is stalled behind waiting publishes, as many
    /// publishes wait as allowed, or the last response ends the connection.
    pub(super) fn holds_input(&self) -> bool {
        self.stalled
            || self.pending.len() >= MAX_PIPELINED_PUBLISHES
            || self.pending.back().is_some_and(|p| !p.keep_alive())
    }
}

/// One response in request order.
pub(super) enum Pending {
    /// A publish still with the backplane: its number on this connection (and its access-log
    /// line, written with the answer).
    Publish {
        n: u64,
        keep_alive: bool,
        line: Option<Box<super::access::RequestLine>>,
    },
    /// A server API call the loop answers once it has walked the connections (its number,
    /// from the same count).
    Api { n: u64, keep_alive: bool },
    /// A response ready behind one.
    Ready(Reply),
}

impl Pending {
    fn keep_alive(&self) -> bool {
        match self {
            Pending::Publish { keep_alive, .. } | Pending::Api { keep_alive, .. } => *keep_alive,
            Pending::Ready(r) => r.keep_alive,
        }
    }
}

/// A response's bytes, its status (for the metrics) and whether the connection stays open.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) bytes: Vec<u8>,
    pub(super) keep_alive: bool,
}

pub(super) struct BodyInProgress {
    pub(super) head: Box<RequestHead>,
    /// The publish it carries; `None`: a server API call's body (`conn/api.rs`).
    publish: Option<PublishTarget>,
    framing: BodyFraming,
    pub(super) data: Vec<u8>,
}

pub(super) enum BodyFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// What a publish request asked for, validated before its body is read.
pub(super) struct PublishTarget {
    topics: Vec<String>,
    event_type: Option<String>,
    /// The verified JWT subject, for the publish hook.
    subject: Option<String>,
}

impl Connection {
    /// Parses and answers every complete request buffered, in order.
    pub(super) fn process_http(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        loop {
            if self.life != Life::Active || self.out.private.len() >= PIPELINE_OUTPUT_LIMIT {
                return Flow::Keep;
            }
            let Stage::Http(http) = &mut self.stage else {
                return Flow::Keep;
            };
            http.stalled = false;
            if http.holds_input() {
                return Flow::Keep;
            }
            if let Some(body) = http.body.as_mut() {
                let consumed = match &mut body.framing {
                    BodyFraming::Length(left) => {
                        let take = http
                            .rbuf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        body.data.extend_from_slice(&http.rbuf[..take]);
                        *left -= take as u64;
                        Ok(take)
                    }
                    BodyFraming::Chunked(decoder) => {
                        decoder.decode(&http.rbuf, &mut body.data, sh.config.max_body)
                    }
                };
                let consumed = match consumed {
                    Ok(n) => n,
                    Err(err) => {
                        http.body = None;
                        http.rbuf = Vec::new();
                        self.respond_error(key, &err, false, &[], sh);
                        return Flow::Keep;
                    }
                };
                http.rbuf.drain(..consumed);
                let complete = match &body.framing {
                    BodyFraming::Length(left) => *left == 0,
                    BodyFraming::Chunked(decoder) => decoder.is_done(),
                };
                if !complete {
                    return Flow::Keep;
                }
                let Some(done) = http.body.take() else {
                    return Flow::Keep;
                };
                http.request_started = (!http.rbuf.is_empty()).then_some(sh.now);
                if done.publish.is_some() {
                    self.finish_publish(key, *done, sh);
                } else {
                    self.finish_api_body(key, *done, sh);
                }
                continue;
            }
            if http.rbuf.is_empty() {
                let done = http.pending.is_empty() && http.request_started.is_none();
                if done && self.out.private.is_empty() {
                    return self.exchange_done(sh);
                }
                return Flow::Keep;
            }
            match http::parse_head(&http.rbuf) {
                Ok(HeadParse::Partial) => return Flow::Keep,
                Err(err) => {
                    http.rbuf = Vec::new();
                    log::debug!("conn {key}: bad request head: {}", err.reason);
                    self.respond_error(key, &err, false, &[], sh);
                    return Flow::Keep;
                }
                Ok(HeadParse::Complete(head, _))
                    if !http.pending.is_empty() && !pipelinable(&head) =>
                {
                    // Its response would have to overtake the pending ones: read it once they
                    // are out.
                    http.stalled = true;
                    return Flow::Keep;
                }
                Ok(HeadParse::Complete(head, len)) => {
                    let started = http.request_started.unwrap_or(sh.now);
                    http.rbuf.drain(..len);
                    http.request_started = (!http.rbuf.is_empty()).then_some(sh.now);
                    self.access_request(&head, started);
                    self.on_head(key, head, sh);
                }
            }
        }
    }

    /// Routes a complete request head.
    pub(super) fn on_head(&mut self, key: usize, head: Box<RequestHead>, sh: &mut LoopState) {
        // A body we will not read makes the connection unusable for another request.
        if self.limit.is_some() && self.limit_request(key, &head, sh) {
            return;
        }
        let has_body = head.body != BodyKind::None;
        let keep_alive = head.keep_alive && !sh.shutting_down && !self.refused && !self.internal;
        let route = match http::route(head.method, &head.path) {
            Ok(route) => route,
            Err(err) => {
                log::debug!(
                    "conn {key}: {:?} {} -> {}",
                    head.method,
                    head.path,
                    err.status
                );
                return self.respond_error(key, &err, keep_alive && !has_body, &[], sh);
            }
        };
        log::debug!("conn {key}: {:?} {} ({route:?})", head.method, head.path);
        if (self.refused || self.internal) && !super::capacity::answered_at_limit(route) {
            if self.internal {
                return self.refuse_internal(key, sh);
            }
            return self.refuse_over_capacity(key, sh);
        }
        let head_only = head.method == http::Method::Head;
        let reuse = keep_alive && !has_body;
        match route {
            Route::Preflight => {
                let mut bytes = Vec::new();
                response::write_preflight(&mut bytes, &common(sh), reuse);
                let reply = Reply {
                    status: 204,
                    bytes,
                    keep_alive: reuse,
                };
                self.queue_response(key, reply, sh);
            }
            Route::Healthz => self.respond_ok(key, "text/plain", b"ok\n", reuse, head_only, sh),
            Route::Readyz if sh.ready() => {
                self.respond_ok(key, "text/plain", b"ready\n", reuse, head_only, sh)
            }
            Route::Readyz => self.respond_error(key, &HttpError::NOT_READY, reuse, RETRY_SOON, sh),
            Route::Metrics => {
                let text = sh.render_metrics();
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                self.respond_ok(key, ct, text.as_bytes(), reuse, head_only, sh);
            }
            Route::Events => self.start_sse(key, &head, sh),
            Route::Frames => self.start_frames(key, &head, sh),
            Route::Publish => self.start_publish(key, head, keep_alive, sh),
            Route::Console => self.serve_console(key, &head, reuse, sh),
            Route::Stats => self.serve_stats(key, &head, reuse, sh),
            Route::Api => self.serve_api(key, head, keep_alive, sh),
        }
    }

    // ----- publish -----------------------------------------------------------------------------

    pub(super) fn start_publish(
        &mut self,
        key: usize,
        head: Box<RequestHead>,
        keep_alive: bool,
        sh: &mut LoopState,
    ) {
        let has_body = head.body != BodyKind::None;
        let reuse_on_error = keep_alive && !has_body;
        if let Some(expected) = sh.config.publish_token.as_deref() {
            let presented = head.authorization.as_deref().and_then(http::bearer_token);
            if !presented.is_some_and(|t| http::token_matches(t, expected)) {
                return self.refuse_unauthorized(
                    key,
                    &head.path,
                    presented.is_some(),
                    reuse_on_error,
                    sh,
                );
            }
        }
        let mut target = match parse_publish_query(&head.query) {
            Ok(target) => target,
            Err(err) => return self.respond_error(key, &err, reuse_on_error, &[], sh),
        };
        if let Some(k) = &head.idempotency_key {
            if !crate::idempotency::valid_key(k) {
                let err = &HttpError::BAD_IDEMPOTENCY_KEY;
                return self.respond_error(key, err, reuse_on_error, &[], sh);
            }
        }
        match self.authorize_publish(key, &head, &target.topics, reuse_on_error, sh) {
            Ok(subject) => target.subject = subject,
            Err(_) => return,
        }
        let max_body = sh.config.max_body;
        self.read_body(key, head, Some(target), max_body, sh);
    }

    /// Reads the body of `head` (at most `max_body` bytes) for `publish`, or for a server API
    /// call when `None`; handles it at once when there is none.
    pub(super) fn read_body(
        &mut self,
        key: usize,
        head: Box<RequestHead>,
        publish: Option<PublishTarget>,
        max_body: usize,
        sh: &mut LoopState,
    ) {
        let framing = match head.body {
            BodyKind::None => {
                let done = BodyInProgress {
                    head,
                    publish,
                    framing: BodyFraming::Length(0),
                    data: Vec::new(),
                };
                return if done.publish.is_some() {
                    self.finish_publish(key, done, sh)
                } else {
                    self.finish_api_body(key, done, sh)
                };
            }
            BodyKind::Length(n) if n > max_body as u64 => {
                return self.respond_error(key, &HttpError::BODY_TOO_LARGE, false, &[], sh);
            }
            BodyKind::Length(n) => BodyFraming::Length(n),
            BodyKind::Chunked => BodyFraming::Chunked(ChunkedDecoder::default()),
        };
        if head.expect_continue {
            self.push_private(key, b"HTTP/1.1 100 Continue\r\n\r\n", 0, sh);
        }
        let capacity = match framing {
            BodyFraming::Length(n) => n as usize,
            BodyFraming::Chunked(_) => 0,
        };
        if let Stage::Http(http) = &mut self.stage {
            http.body = Some(Box::new(BodyInProgress {
                head,
                publish,
                framing,
                data: Vec::with_capacity(capacity),
            }));
        }
    }

    pub(super) fn finish_publish(&mut self, key: usize, req: BodyInProgress, sh: &mut LoopState) {
        if sh.shutting_down {
            // The streams already have their farewell: an event accepted now would reach nobody,
            // so it is refused rather than acknowledged.
            return self.respond_error(key, &HttpError::SHUTTING_DOWN, false, RETRY_SOON, sh);
        }
        let keep_alive = req.head.keep_alive;
        let Some(publish) = req.publish else {
            return;
        };
        // Judged once the body is read, so that the connection stays usable for the retry.
        if let Err(r) = self.take_publish_token(publish.subject.as_deref(), sh) {
            return self.refuse_publish_rate(key, r, keep_alive, sh);
        }
        let Ok(data) = String::from_utf8(req.data) else {
            return self.respond_error(key, &HttpError::NOT_UTF8, keep_alive, &[], sh);
        };
        let topics: Vec<&str> = publish.topics.iter().map(String::as_str).collect();
        let event_type = publish.event_type.as_deref();
        let subject = publish.subject.as_deref();
        self.access_subject(subject);
        if !sh.allow_publish(&topics, event_type, &data, self.id, subject) {
            return self.respond_error(key, &HttpError::FORBIDDEN, keep_alive, &[], sh);
        }
        let conn = self.id;
        let idem = req.head.idempotency_key.as_deref();
        let n = match &mut self.stage {
            Stage::Http(http) => {
                http.next_publish += 1;
                http.next_publish
            }
            _ => 0,
        };
        let origin = || Origin::Http { key, conn, n };
        match sh.publish(origin, &topics, event_type, &data, idem) {
            PublishStart::Done(Ok(event)) => self.answer_publish(key, &event.id, keep_alive, sh),
            PublishStart::Done(Err(err)) => self.refuse_publish_http(key, err, keep_alive, sh),
            PublishStart::Pending => {
                let line = self.access_take();
                if let Stage::Http(http) = &mut self.stage {
                    http.pending.push_back(Pending::Publish {
                        n,
                        keep_alive,
                        line,
                    });
                }
            }
        }
    }

    fn answer_publish(&mut self, key: usize, id: &str, keep_alive: bool, sh: &mut LoopState) {
        let body = publish_body(id);
        self.respond_ok(key, JSON, body.as_bytes(), keep_alive, false, sh);
    }

    /// The backplane answered publish `n` of this connection: its response, and those ready
    /// behind it, go out now if nothing before them is still waiting.
    pub fn http_publish_done(
        &mut self,
        key: usize,
        n: u64,
        outcome: Result<(String, u64), AppendError>,
        sh: &mut LoopState,
    ) {
        let Stage::Http(http) = &mut self.stage else {
            return;
        };
        let waiting = |p: &Pending| matches!(p, Pending::Publish { n: m, .. } if *m == n);
        let Some(at) = http.pending.iter().position(waiting) else {
            return;
        };
        let keep_alive = http.pending[at].keep_alive();
        let line = match &mut http.pending[at] {
            Pending::Publish { line, .. } => line.take(),
            Pending::Ready(_) | Pending::Api { .. } => None,
        };
        let reply = match outcome {
            Ok((id, _)) => ok_reply(JSON, publish_body(&id).as_bytes(), keep_alive, false, sh),
            Err(AppendError::Unavailable) => error_reply(
                &HttpError::BACKPLANE_UNAVAILABLE,
                keep_alive,
                RETRY_SOON,
                sh,
            ),
        };
        self.access_answered_for(line, reply.status, reply.bytes.len(), sh);
        if let Stage::Http(http) = &mut self.stage {
            http.pending[at] = Pending::Ready(reply);
        }
        self.release_pending(key, sh);
        self.mark_dirty(key, sh);
    }

    /// The loop answered server API call `n` of this connection (`event_loop/admin.rs`).
    pub fn api_done(&mut self, key: usize, n: u64, status: u16, body: &str, sh: &mut LoopState) {
        let Stage::Http(http) = &mut self.stage else {
            return;
        };
        let waiting = |p: &Pending| matches!(p, Pending::Api { n: m, .. } if *m == n);
        let Some(at) = http.pending.iter().position(waiting) else {
            return;
        };
        let keep_alive = http.pending[at].keep_alive();
        let mut bytes = Vec::with_capacity(256 + body.len());
        let c = common(sh);
        response::write_response(
            &mut bytes,
            &c,
            status,
            JSON,
            body.as_bytes(),
            keep_alive,
            false,
            &[],
        );
        let reply = Reply {
            status,
            bytes,
            keep_alive,
        };
        http.pending[at] = Pending::Ready(reply);
        self.release_pending(key, sh);
        self.mark_dirty(key, sh);
    }

    /// Sends the ready responses at the front of `pending`, in order.
    fn release_pending(&mut self, key: usize, sh: &mut LoopState) {
        loop {
            let Stage::Http(http) = &mut self.stage else {
                return;
            };
            if !matches!(http.pending.front(), Some(Pending::Ready(_))) {
                return;
            }
            let Some(Pending::Ready(reply)) = http.pending.pop_front() else {
                return;
            };
            self.emit_response(key, &reply, sh);
        }
    }

    // ----- responses ---------------------------------------------------------------------------

    /// Queues a `200` with `body` (omitted for HEAD).
    fn respond_ok(
        &mut self,
        key: usize,
        content_type: &str,
        body: &[u8],
        keep_alive: bool,
        head_only: bool,
        sh: &mut LoopState,
    ) {
        let reply = ok_reply(content_type, body, keep_alive, head_only, sh);
        self.queue_response(key, reply, sh);
    }

    /// Queues a response, behind any publish of this connection still with the backplane.
    pub(super) fn queue_response(&mut self, key: usize, reply: Reply, sh: &mut LoopState) {
        self.access_answered(reply.status, reply.bytes.len(), sh);
        if let Stage::Http(http) = &mut self.stage {
            if !http.pending.is_empty() {
                http.pending.push_back(Pending::Ready(reply));
                return;
            }
        }
        self.emit_response(key, &reply, sh);
    }

    fn emit_response(&mut self, key: usize, reply: &Reply, sh: &mut LoopState) {
        sh.metrics.count_response(reply.status);
        self.push_private(key, &reply.bytes, 0, sh);
        if !reply.keep_alive && self.life == Life::Active {
            if let Stage::Http(http) = &mut self.stage {
                http.rbuf = Vec::new();
                http.body = None;
            }
            let _ = self.transition(LifeEvent::Exchanged { keep_alive: false }, sh);
        }
    }

    pub(super) fn respond_error(
        &mut self,
        key: usize,
        err: &HttpError,
        keep_alive: bool,
        extra: &[(&str, &str)],
        sh: &mut LoopState,
    ) {
        let reply = error_reply(err, keep_alive, extra, sh);
        self.queue_response(key, reply, sh);
    }

    /// The hub refused an event: too large once encoded, or no room for another topic.
    fn refuse_publish_http(
        &mut self,
        key: usize,
        err: HubError,
        keep_alive: bool,
        sh: &mut LoopState,
    ) {
        match err {
            HubError::TooLarge => {
                let err = HttpError {
                    reason: "encoded event would exceed --max-queue-bytes",
                    ..HttpError::BODY_TOO_LARGE
                };
                self.respond_error(key, &err, keep_alive, &[], sh)
            }
            HubError::TooManyTopics => {
                self.respond_error(key, &HttpError::TOO_MANY_TOPICS, keep_alive, RETRY_SOON, sh)
            }
        }
    }
}

pub(super) const JSON: &str = "application/json";

/// The body answering an accepted publish.
fn publish_body(id: &str) -> String {
    format!("{{\"id\":\"{id}\"}}\n")
}

/// `Retry-After` for a refusal the client may retry shortly (shutting down, over capacity, not
/// ready, backplane unavailable).
pub(super) const RETRY_SOON: &[(&str, &str)] = &[("Retry-After", "1")];

/// A `200` response with `body` (omitted for HEAD).
pub(super) fn ok_reply(
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
    sh: &LoopState,
) -> Reply {
    let mut bytes = Vec::with_capacity(256 + body.len());
    let c = common(sh);
    response::write_response(
        &mut bytes,
        &c,
        200,
        content_type,
        body,
        keep_alive,
        head_only,
        &[],
    );
    Reply {
        status: 200,
        bytes,
        keep_alive,
    }
}

/// An error response (it closes the connection when the error says so).
pub(super) fn error_reply(
    err: &HttpError,
    keep_alive: bool,
    extra: &[(&str, &str)],
    sh: &LoopState,
) -> Reply {
    let keep_alive = keep_alive && !err.close;
    let mut bytes = Vec::new();
    response::write_error(&mut bytes, &common(sh), err, keep_alive, extra);
    Reply {
        status: err.status,
        bytes,
        keep_alive,
    }
}

/// A request that may be read while publishes before it wait for the backplane: another publish
/// whose response can simply queue behind theirs (not an upgrade or a stream, and not one
/// expecting `100 Continue`, which would overtake them).
fn pipelinable(head: &RequestHead) -> bool {
    matches!(http::route(head.method, &head.path), Ok(Route::Publish)) && !head.expect_continue
}

pub(super) fn common(sh: &LoopState) -> Common<'_> {
    Common {
        cors_origin: &sh.config.cors_origin,
        date: &sh.date,
        allow_credentials: sh.config.jwt_cookie.is_some(),
    }
}

/// Adds a query's topic to the request's list (validated, deduplicated, capped).
pub(super) fn push_topic(topics: &mut Vec<String>, topic: &str) -> Result<(), HttpError> {
    match topic_is_new(topics, topic, MAX_TOPICS_PER_REQUEST) {
        Ok(true) => topics.push(topic.to_string()),
        Ok(false) => {}
        Err(TopicError::Invalid) => return Err(HttpError::BAD_TOPIC),
        Err(TopicError::TooMany) => {
            return Err(HttpError {
                reason: "too many topics in one request",
                ..HttpError::BAD_TOPIC
            })
        }
    }
    Ok(())
}

fn parse_publish_query(query: &str) -> Result<PublishTarget, HttpError> {
    let mut target = PublishTarget {
        topics: Vec::new(),
        event_type: None,
        subject: None,
    };
    for pair in query_pairs(query) {
        let (name, value) = pair?;
        match &*name {
            "topic" => push_topic(&mut target.topics, &value)?,
            "event" => {
                if !valid_event_type(&value) {
                    return Err(HttpError::BAD_EVENT_TYPE);
                }
                target.event_type = Some(value.into_owned());
            }
            _ => {}
        }
    }
    if target.topics.is_empty() {
        return Err(HttpError::BAD_TOPIC);
    }
    Ok(target)
}
