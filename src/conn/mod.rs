//! One client connection: its socket, protocol stage, lifecycle, output queue and deadlines.
//!
//! Handlers never remove a connection: they return [`Flow::Close`] and the loop releases
//! everything in one place ([`Connection::release`] via `Server::close`). Output is queued here and
//! written by [`Connection::flush`], which the loop calls once per iteration for each connection
//! marked dirty: at most one `sendmsg` per connection per iteration, within a byte budget.

pub mod io;
pub mod state;

use std::io::IoSlice;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::buf::{OutQueue, SharedEvent, MAX_IOVECS};
use crate::event_loop::LoopState;
use crate::http::request::{query_pairs, valid_event_type, valid_topic};
use crate::http::response::{self, Common};
use crate::http::{self, BodyKind, ChunkedDecoder, HeadParse, HttpError, RequestHead, Route};
use crate::hub::{Resume, Subscription};
use crate::metrics::{CloseCause, ConnKind};
use crate::sse;
use crate::timer::{TimerKey, TimerKind};
use io::Io;
use state::{Life, LifeEvent};

/// Most bytes one connection may write per loop iteration, so one fast reader with a large backlog
/// cannot starve the others.
pub const WRITE_BUDGET: usize = 256 * 1024;
/// Most bytes read from one connection per iteration (fairness on the read side).
pub const READ_BUDGET: usize = 256 * 1024;
/// Pipelined requests stop being read while this much output is queued (backpressure: a client
/// that sends requests without reading responses cannot grow our memory).
pub const PIPELINE_OUTPUT_LIMIT: usize = 256 * 1024;
/// Most topics one subscription or publish may name.
pub const MAX_TOPICS_PER_REQUEST: usize = 64;
/// Grace given to a connection refused for capacity (it only has to read its 503).
const REJECT_GRACE: Duration = Duration::from_secs(1);

/// What the loop should do with a connection after a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep it.
    Keep,
    /// Release it now.
    Close(Closing),
}

/// How a connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Orderly: the exchange or the graceful close finished, or the peer left.
    Done,
    /// The socket failed (reset, broken pipe).
    Broken,
    /// The server gives up on it; `linger0` sends RST instead of FIN (misbehaving peer).
    Forced {
        /// The cause, counted in metrics.
        cause: CloseCause,
        /// Close with RST.
        linger0: bool,
    },
}

/// Which lifecycle deadline is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    Header,
    Body,
    WriteStall,
    Idle,
    Grace,
}

/// The protocol the connection speaks.
enum Stage {
    /// HTTP/1.1 requests and responses.
    Http(HttpConn),
    /// A Server-Sent Events stream (response head sent; only events from now on).
    Sse,
}

#[derive(Default)]
struct HttpConn {
    /// Bytes read and not yet parsed. Freed when the connection goes idle.
    rbuf: Vec<u8>,
    /// A request whose head is parsed and whose body is being read.
    body: Option<Box<BodyInProgress>>,
    /// When the current request's first byte arrived (header deadline).
    request_started: Option<Instant>,
}

struct BodyInProgress {
    head: Box<RequestHead>,
    publish: PublishTarget,
    framing: BodyFraming,
    data: Vec<u8>,
}

enum BodyFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// What a publish request asked for, validated before its body is read.
struct PublishTarget {
    topics: Vec<String>,
    event_type: Option<String>,
}

/// A client connection.
pub struct Connection {
    /// The socket.
    pub sock: TcpStream,
    life: Life,
    stage: Stage,
    out: OutQueue,
    chunk_cap: usize,
    deadline: Option<(TimerKey, Deadline)>,
    heartbeat: Option<TimerKey>,
    subs: Vec<Subscription>,
    /// Highest event seq queued: an event published to several subscribed topics goes out once.
    last_seq: u64,
    /// Replayed bytes still queued; they do not count against `--max-queue-bytes` (they are
    /// bounded by history and mostly shared with it).
    replay_credit: usize,
    opened_at: Instant,
    /// Last time the socket accepted bytes (write-stall deadline).
    last_write: Instant,
    /// Last time bytes were read (body deadline).
    last_read: Instant,
    /// Last time output was queued on a stream (heartbeat).
    last_queued: Instant,
    /// Entered Idle or Graceful at.
    state_since: Instant,
    grace: Duration,
    /// In the loop's dirty list.
    dirty: bool,
    /// The last write came up short: wait for a writable edge.
    write_blocked: bool,
    /// Stopped reading (pipelined output over the limit); resume once the queue drains.
    read_paused: bool,
    /// The peer has sent FIN.
    peer_eof: bool,
    /// Our FIN has been sent.
    shut_write: bool,
    /// Stopped reading at the per-iteration budget with bytes left: read again from the dirty
    /// list.
    read_pending: bool,
    /// Accepted over `--max-connections`: only here to deliver its 503.
    refused: bool,
}

impl Connection {
    /// A connection just accepted, with write chunks sized for `chunk_cap`.
    pub fn new(sock: TcpStream, now: Instant, chunk_cap: usize) -> Connection {
        Connection {
            sock,
            life: Life::Active,
            stage: Stage::Http(HttpConn {
                request_started: Some(now),
                ..HttpConn::default()
            }),
            out: OutQueue::default(),
            chunk_cap,
            deadline: None,
            heartbeat: None,
            subs: Vec::new(),
            last_seq: 0,
            replay_credit: 0,
            opened_at: now,
            last_write: now,
            last_read: now,
            last_queued: now,
            state_since: now,
            grace: Duration::ZERO,
            dirty: false,
            write_blocked: false,
            read_paused: false,
            peer_eof: false,
            shut_write: false,
            read_pending: false,
            refused: false,
        }
    }

    /// The connection's lifecycle state.
    pub fn life(&self) -> Life {
        self.life
    }

    /// The kind counted in `sseloop_connections_open`.
    pub fn kind(&self) -> ConnKind {
        match self.stage {
            Stage::Http(_) => ConnKind::Http,
            Stage::Sse => ConnKind::Sse,
        }
    }

    /// Bytes queued for output.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Arms the first deadline; a connection over the limit gets its 503 and winds down.
    pub fn start(&mut self, key: usize, over_capacity: bool, sh: &mut LoopState) -> Flow {
        if over_capacity {
            self.refused = true;
            sh.refused += 1;
            sh.metrics.closes[CloseCause::OverCapacity as usize] += 1;
            self.respond_error(
                key,
                &HttpError::OVER_CAPACITY,
                false,
                &[("Retry-After", "1")],
                sh,
            );
            self.grace = REJECT_GRACE;
        }
        self.sync_deadline(key, sh);
        Flow::Keep
    }

    // ----- readiness ---------------------------------------------------------------------------

    /// Handles a readiness event.
    pub fn on_ready(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        sh: &mut LoopState,
    ) -> Flow {
        if writable && self.write_blocked {
            self.write_blocked = false;
            self.mark_dirty(key, sh);
        }
        if !readable || self.read_paused {
            return Flow::Keep;
        }
        let flow = match (&self.stage, self.life) {
            (_, Life::Graceful) => self.read_discard(key, sh),
            (Stage::Sse, _) => self.read_discard(key, sh),
            (Stage::Http(_), _) => self.read_http(key, sh),
        };
        if flow == Flow::Keep {
            self.sync_deadline(key, sh);
        }
        flow
    }

    /// Reads and drops whatever the peer sends (SSE streams, winding-down connections); notices
    /// the peer's FIN.
    fn read_discard(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        let mut budget = READ_BUDGET;
        loop {
            match io::read(&mut self.sock, &mut sh.scratch) {
                Io::Done(n) => {
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        // Serve the others first; edge-triggered readiness will not fire again
                        // for bytes already waiting, so come back through the dirty list.
                        self.read_pending = true;
                        self.mark_dirty(key, sh);
                        return Flow::Keep;
                    }
                }
                Io::WouldBlock => return Flow::Keep,
                Io::Eof => {
                    self.peer_eof = true;
                    return match self.life {
                        // Our FIN is out and theirs arrived: done. Otherwise keep flushing.
                        Life::Graceful if self.shut_write || self.out.is_empty() => {
                            Flow::Close(Closing::Done)
                        }
                        Life::Graceful => Flow::Keep,
                        _ => self.transition(
                            LifeEvent::PeerClosed {
                                output_pending: false,
                            },
                            sh.now,
                        ),
                    };
                }
                Io::Closed(_) => return Flow::Close(Closing::Broken),
            }
        }
    }

    fn read_http(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        let mut budget = READ_BUDGET;
        loop {
            if let Flow::Close(c) = self.process_http(key, sh) {
                return Flow::Close(c);
            }
            if self.life == Life::Graceful || !matches!(self.stage, Stage::Http(_)) {
                // Switched to streaming, or answering with Connection: close: input is over.
                return Flow::Keep;
            }
            if self.out.len() >= PIPELINE_OUTPUT_LIMIT {
                // Resumed by on_drained once the client has read its responses.
                self.read_paused = true;
                return Flow::Keep;
            }
            if budget == 0 {
                self.read_pending = true;
                self.mark_dirty(key, sh);
                return Flow::Keep;
            }
            let n = match io::read(&mut self.sock, &mut sh.scratch) {
                Io::Done(n) => n,
                Io::WouldBlock => return Flow::Keep,
                Io::Eof => {
                    self.peer_eof = true;
                    let pending = !self.out.is_empty();
                    return self.transition(
                        LifeEvent::PeerClosed {
                            output_pending: pending,
                        },
                        sh.now,
                    );
                }
                Io::Closed(_) => return Flow::Close(Closing::Broken),
            };
            budget = budget.saturating_sub(n);
            self.last_read = sh.now;
            if self.life == Life::Idle {
                if let Flow::Close(c) = self.transition(LifeEvent::RequestStarted, sh.now) {
                    return Flow::Close(c);
                }
            }
            if let Stage::Http(http) = &mut self.stage {
                if http.rbuf.is_empty() && http.body.is_none() {
                    http.request_started = Some(sh.now);
                }
                http.rbuf.extend_from_slice(&sh.scratch[..n]);
            }
        }
    }

    /// Parses and answers every complete request buffered, in order.
    fn process_http(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        loop {
            if self.life != Life::Active || self.out.len() >= PIPELINE_OUTPUT_LIMIT {
                return Flow::Keep;
            }
            let Stage::Http(http) = &mut self.stage else {
                return Flow::Keep;
            };
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
                self.finish_publish(key, *done, sh);
                continue;
            }
            if http.rbuf.is_empty() {
                if self.out.is_empty() && http.request_started.is_none() {
                    return self.transition(LifeEvent::Exchanged { keep_alive: true }, sh.now);
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
                Ok(HeadParse::Complete(head, len)) => {
                    http.rbuf.drain(..len);
                    http.request_started = (!http.rbuf.is_empty()).then_some(sh.now);
                    self.on_head(key, head, sh);
                }
            }
        }
    }

    /// Routes a complete request head.
    fn on_head(&mut self, key: usize, head: Box<RequestHead>, sh: &mut LoopState) {
        // A body we will not read makes the connection unusable for another request.
        let has_body = head.body != BodyKind::None;
        let keep_alive = head.keep_alive && !sh.shutting_down;
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
        let head_only = head.method == http::Method::Head;
        let reuse = keep_alive && !has_body;
        match route {
            Route::Preflight => {
                let mut bytes = Vec::new();
                response::write_preflight(&mut bytes, &common(sh), reuse);
                self.queue_response(key, 204, &bytes, reuse, sh);
            }
            Route::Healthz => {
                let mut bytes = Vec::new();
                let c = common(sh);
                response::write_response(
                    &mut bytes,
                    &c,
                    200,
                    "text/plain",
                    b"ok\n",
                    reuse,
                    head_only,
                    &[],
                );
                self.queue_response(key, 200, &bytes, reuse, sh);
            }
            Route::Metrics => {
                let text = sh.render_metrics();
                let mut bytes = Vec::new();
                let c = common(sh);
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                response::write_response(
                    &mut bytes,
                    &c,
                    200,
                    ct,
                    text.as_bytes(),
                    reuse,
                    head_only,
                    &[],
                );
                self.queue_response(key, 200, &bytes, reuse, sh);
            }
            Route::Events => self.start_sse(key, &head, sh),
            Route::Frames => {
                let err = HttpError {
                    status: 501,
                    reason: "frame mode is not available in this build",
                    close: false,
                    allow: None,
                };
                self.respond_error(key, &err, reuse, &[], sh);
            }
            Route::Publish => self.start_publish(key, head, keep_alive, sh),
        }
    }

    // ----- publish -----------------------------------------------------------------------------

    fn start_publish(
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
                return self.refuse_unauthorized(key, presented.is_some(), reuse_on_error, sh);
            }
        }
        let target = match parse_publish_query(&head.query) {
            Ok(target) => target,
            Err(err) => return self.respond_error(key, &err, reuse_on_error, &[], sh),
        };
        let framing = match head.body {
            BodyKind::None => {
                let done = BodyInProgress {
                    head,
                    publish: target,
                    framing: BodyFraming::Length(0),
                    data: Vec::new(),
                };
                return self.finish_publish(key, done, sh);
            }
            BodyKind::Length(n) if n > sh.config.max_body as u64 => {
                return self.respond_error(key, &HttpError::BODY_TOO_LARGE, false, &[], sh);
            }
            BodyKind::Length(n) => BodyFraming::Length(n),
            BodyKind::Chunked => BodyFraming::Chunked(ChunkedDecoder::default()),
        };
        if head.expect_continue {
            self.out.push_bytes(
                b"HTTP/1.1 100 Continue\r\n\r\n",
                &mut sh.pool,
                self.chunk_cap,
            );
            self.mark_dirty(key, sh);
        }
        let capacity = match framing {
            BodyFraming::Length(n) => n as usize,
            BodyFraming::Chunked(_) => 0,
        };
        if let Stage::Http(http) = &mut self.stage {
            http.body = Some(Box::new(BodyInProgress {
                head,
                publish: target,
                framing,
                data: Vec::with_capacity(capacity),
            }));
        }
    }

    fn finish_publish(&mut self, key: usize, req: BodyInProgress, sh: &mut LoopState) {
        let keep_alive = req.head.keep_alive && !sh.shutting_down;
        let Ok(data) = String::from_utf8(req.data) else {
            return self.respond_error(key, &HttpError::NOT_UTF8, keep_alive, &[], sh);
        };
        let topics: Vec<&str> = req.publish.topics.iter().map(String::as_str).collect();
        let event = sh
            .hub
            .publish(&topics, req.publish.event_type.as_deref(), &data);
        sh.metrics.published += 1;
        let body = format!("{{\"id\":\"{}\"}}\n", event.id);
        let mut bytes = Vec::new();
        let c = common(sh);
        response::write_response(
            &mut bytes,
            &c,
            200,
            "application/json",
            body.as_bytes(),
            keep_alive,
            false,
            &[],
        );
        self.queue_response(key, 200, &bytes, keep_alive, sh);
    }

    // ----- SSE ---------------------------------------------------------------------------------

    fn start_sse(&mut self, key: usize, head: &RequestHead, sh: &mut LoopState) {
        if sh.shutting_down {
            return self.respond_error(
                key,
                &HttpError::SHUTTING_DOWN,
                false,
                &[("Retry-After", "1")],
                sh,
            );
        }
        let query = match parse_subscribe_query(&head.query) {
            Ok(q) => q,
            Err(err) => return self.respond_error(key, &err, false, &[], sh),
        };
        if let Some(expected) = sh.config.subscribe_token.as_deref() {
            let presented = head
                .authorization
                .as_deref()
                .and_then(http::bearer_token)
                .or(query.access_token.as_deref().map(str::as_bytes));
            if !presented.is_some_and(|t| http::token_matches(t, expected)) {
                return self.refuse_unauthorized(key, presented.is_some(), false, sh);
            }
        }
        // The header wins over the query parameter; an empty id means "no id" (browsers never
        // send one, and the spec resets the last event id to "" on an empty `id:`).
        let last_event_id = head
            .last_event_id
            .clone()
            .filter(|id| !id.is_empty())
            .or(query.last_event_id.filter(|id| !id.is_empty()));

        sh.metrics.open[ConnKind::Http as usize] -= 1;
        sh.metrics.open[ConnKind::Sse as usize] += 1;
        sh.metrics.count_response(200);
        self.stage = Stage::Sse;
        for topic in &query.topics {
            self.subs.push(sh.hub.subscribe(topic, key));
        }
        let mut prelude = Vec::with_capacity(256);
        response::write_sse_head(&mut prelude, &common(sh));
        sse::encode_retry(&mut prelude, sh.config.retry_ms);
        if let Some(id) = last_event_id {
            let resume = if id.len() > http::request::MAX_LAST_EVENT_ID {
                Resume::Foreign
            } else {
                sh.hub.parse_resume(&id)
            };
            let topics: Vec<&str> = query.topics.iter().map(String::as_str).collect();
            let replay = sh.hub.replay(&topics, resume);
            if let Some(reason) = replay.reset {
                sh.metrics.resume_resets[reason as usize] += 1;
                let data = format!("{{\"reason\":\"{}\"}}", reason.as_str());
                sse::encode_event(
                    &mut prelude,
                    &replay.reset_id,
                    Some(sse::RESET_EVENT_TYPE),
                    &data,
                );
            }
            self.out.push_bytes(&prelude, &mut sh.pool, self.chunk_cap);
            let before = self.out.len();
            for event in &replay.events {
                self.out.push_sse(event, &mut sh.pool, self.chunk_cap);
                self.last_seq = event.seq;
            }
            self.replay_credit = self.out.len() - before;
            let n = replay.events.len() as u64;
            sh.metrics.replayed += n;
            sh.metrics.deliveries += n;
        } else {
            self.out.push_bytes(&prelude, &mut sh.pool, self.chunk_cap);
        }
        // Live events are never filtered by the client's id, only deduplicated by what this
        // connection already queued.
        self.last_seq = self.last_seq.max(sh.hub.last_seq());
        self.last_queued = sh.now;
        self.heartbeat = Some(
            sh.timers
                .arm(sh.now + sh.heartbeat(), key, TimerKind::Heartbeat),
        );
        self.mark_dirty(key, sh);
    }

    /// Queues a live event for this subscriber. `Flow::Close` when it is a slow consumer.
    pub fn deliver(&mut self, key: usize, event: &SharedEvent, sh: &mut LoopState) -> Flow {
        if event.seq <= self.last_seq
            || self.life != Life::Active
            || !matches!(self.stage, Stage::Sse)
        {
            return Flow::Keep;
        }
        self.last_seq = event.seq;
        let live_queued = self.out.len() - self.replay_credit.min(self.out.len());
        if live_queued + event.sse().len() > sh.config.max_queue_bytes {
            log::info!(
                "conn {key}: slow consumer, {} bytes queued; disconnecting",
                self.out.len()
            );
            return Flow::Close(Closing::Forced {
                cause: CloseCause::SlowConsumer,
                linger0: true,
            });
        }
        self.out.push_sse(event, &mut sh.pool, self.chunk_cap);
        sh.metrics.deliveries += 1;
        self.last_queued = sh.now;
        self.mark_dirty(key, sh);
        Flow::Keep
    }

    // ----- responses ---------------------------------------------------------------------------

    fn queue_response(
        &mut self,
        key: usize,
        status: u16,
        bytes: &[u8],
        keep_alive: bool,
        sh: &mut LoopState,
    ) {
        sh.metrics.count_response(status);
        self.out.push_bytes(bytes, &mut sh.pool, self.chunk_cap);
        self.mark_dirty(key, sh);
        if !keep_alive && self.life == Life::Active {
            if let Stage::Http(http) = &mut self.stage {
                http.rbuf = Vec::new();
                http.body = None;
            }
            let _ = self.transition(LifeEvent::Exchanged { keep_alive: false }, sh.now);
            self.grace = sh.linger();
        }
    }

    fn respond_error(
        &mut self,
        key: usize,
        err: &HttpError,
        keep_alive: bool,
        extra: &[(&str, &str)],
        sh: &mut LoopState,
    ) {
        let keep_alive = keep_alive && !err.close;
        let mut bytes = Vec::new();
        response::write_error(&mut bytes, &common(sh), err, keep_alive, extra);
        self.queue_response(key, err.status, &bytes, keep_alive, sh);
    }

    fn refuse_unauthorized(
        &mut self,
        key: usize,
        token_given: bool,
        keep_alive: bool,
        sh: &mut LoopState,
    ) {
        sh.metrics.auth_failures += 1;
        let challenge = if token_given {
            "Bearer realm=\"sseloop\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"sseloop\""
        };
        self.respond_error(
            key,
            &HttpError::UNAUTHORIZED,
            keep_alive,
            &[("WWW-Authenticate", challenge)],
            sh,
        );
    }

    // ----- writing -----------------------------------------------------------------------------

    fn mark_dirty(&mut self, key: usize, sh: &mut LoopState) {
        if !self.dirty {
            self.dirty = true;
            sh.dirty.push(key);
        }
    }

    /// Writes what is queued (one `sendmsg`, within the budget). Called by the loop for dirty
    /// connections once per iteration.
    pub fn flush(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        if !self.dirty {
            return Flow::Keep;
        }
        self.dirty = false;
        if self.read_pending {
            self.read_pending = false;
            if let Flow::Close(c) = self.on_ready(key, true, false, sh) {
                return Flow::Close(c);
            }
        }
        if self.write_blocked {
            return Flow::Keep;
        }
        if !self.out.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let (count, offered) = self.out.gather(&mut iov, WRITE_BUDGET);
            match io::write_vectored(&self.sock, &iov[..count]) {
                Io::Done(written) => {
                    self.out.consume(written, &mut sh.pool);
                    self.replay_credit = self.replay_credit.saturating_sub(written);
                    sh.metrics.bytes_written += written as u64;
                    self.last_write = sh.now;
                    if !self.out.is_empty() {
                        if written < offered {
                            self.write_blocked = true;
                        } else {
                            // Budget used up: continue next iteration, after the others.
                            self.mark_dirty(key, sh);
                        }
                    }
                }
                Io::WouldBlock => self.write_blocked = true,
                Io::Eof | Io::Closed(_) => return Flow::Close(Closing::Broken),
            }
        }
        let flow = if self.out.is_empty() {
            self.on_drained(key, sh)
        } else {
            Flow::Keep
        };
        if flow == Flow::Keep {
            self.sync_deadline(key, sh);
        }
        flow
    }

    /// Everything queued has been written.
    fn on_drained(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        match self.life {
            Life::Graceful => {
                if !self.shut_write {
                    io::shutdown_write(&self.sock);
                    self.shut_write = true;
                }
                if self.peer_eof {
                    return Flow::Close(Closing::Done);
                }
                // The FIN may already be waiting: edge-triggered readiness fired before we shut.
                self.read_discard(key, sh)
            }
            Life::Active if self.read_paused => {
                self.read_paused = false;
                match self.stage {
                    Stage::Http(_) => self.read_http(key, sh),
                    Stage::Sse => self.read_discard(key, sh),
                }
            }
            Life::Active => match &self.stage {
                Stage::Http(http) if http.body.is_none() && http.request_started.is_none() => {
                    self.transition(LifeEvent::Exchanged { keep_alive: true }, sh.now)
                }
                _ => Flow::Keep,
            },
            Life::Idle | Life::Closed => Flow::Keep,
        }
    }

    // ----- lifecycle and deadlines -------------------------------------------------------------

    /// Applies a lifecycle event. An illegal one is a bug: asserted in debug builds, and the
    /// connection is forced closed rather than left in a state nobody expects.
    fn transition(&mut self, event: LifeEvent, now: Instant) -> Flow {
        match self.life.next(event) {
            Ok(next) => {
                if next != self.life {
                    self.state_since = now;
                    self.life = next;
                }
                if next == Life::Idle {
                    if let Stage::Http(http) = &mut self.stage {
                        // An idle keep-alive connection holds no read buffer.
                        http.rbuf = Vec::new();
                        http.request_started = None;
                    }
                }
                match next {
                    Life::Closed => Flow::Close(Closing::Done),
                    _ => Flow::Keep,
                }
            }
            Err(invalid) => {
                debug_assert!(false, "invalid lifecycle transition {invalid:?}");
                log::error!("invalid lifecycle transition {invalid:?}; forcing close");
                Flow::Close(Closing::Forced {
                    cause: CloseCause::Internal,
                    linger0: true,
                })
            }
        }
    }

    /// Moves the connection to graceful close (server shutdown): streams get a jittered `retry:`
    /// so that clients do not all reconnect at once; idle keep-alive connections close now.
    pub fn begin_shutdown(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        match (self.life, &self.stage) {
            (Life::Graceful | Life::Closed, _) => return Flow::Keep,
            (Life::Active, Stage::Http(http))
                if http.rbuf.is_empty() && http.body.is_none() && self.out.is_empty() =>
            {
                // Accepted but no request yet: nothing to finish.
                return Flow::Close(Closing::Done);
            }
            // A request in progress finishes (its response says Connection: close).
            (Life::Active, Stage::Http(_)) => return Flow::Keep,
            (Life::Active, Stage::Sse) => {
                let retry = sh.jittered_retry();
                let mut bytes = Vec::with_capacity(24);
                sse::encode_retry(&mut bytes, retry);
                self.out.push_bytes(&bytes, &mut sh.pool, self.chunk_cap);
            }
            (Life::Idle, _) => {}
        }
        let flow = self.transition(LifeEvent::Drain, sh.now);
        if flow == Flow::Keep {
            self.grace = sh.grace();
            self.mark_dirty(key, sh);
            self.sync_deadline(key, sh);
        }
        flow
    }

    /// The deadline this connection should have armed now, if any.
    fn wanted_deadline(&self, sh: &LoopState) -> Option<(Deadline, Instant)> {
        match self.life {
            Life::Closed => None,
            Life::Idle => Some((Deadline::Idle, self.state_since + sh.idle_timeout())),
            Life::Graceful => Some((Deadline::Grace, self.state_since + self.grace)),
            Life::Active if self.write_blocked => {
                Some((Deadline::WriteStall, self.last_write + sh.write_stall()))
            }
            Life::Active => match &self.stage {
                Stage::Sse => None,
                Stage::Http(http) if http.body.is_some() => {
                    Some((Deadline::Body, self.last_read + sh.header_timeout()))
                }
                Stage::Http(http) => http
                    .request_started
                    .map(|started| (Deadline::Header, started + sh.header_timeout())),
            },
        }
    }

    /// Makes the armed deadline match [`Self::wanted_deadline`]. A deadline that only moved later
    /// stays armed at its earlier time and is re-armed when it fires (one timer operation per
    /// period instead of one per byte).
    fn sync_deadline(&mut self, key: usize, sh: &mut LoopState) {
        let wanted = self.wanted_deadline(sh);
        match (self.deadline, wanted) {
            (Some((armed, kind)), Some((want_kind, at)))
                if kind == want_kind && armed.at() <= at => {}
            (current, wanted) => {
                if let Some((armed, _)) = current {
                    sh.timers.cancel(armed);
                }
                self.deadline =
                    wanted.map(|(kind, at)| (sh.timers.arm(at, key, TimerKind::Deadline), kind));
            }
        }
    }

    /// A timer of this connection fired.
    pub fn on_timer(
        &mut self,
        key: usize,
        timer: TimerKey,
        kind: TimerKind,
        sh: &mut LoopState,
    ) -> Flow {
        match kind {
            TimerKind::Heartbeat if self.heartbeat == Some(timer) => {
                self.heartbeat = None;
                self.on_heartbeat(key, sh);
                Flow::Keep
            }
            TimerKind::Deadline if self.deadline.is_some_and(|(t, _)| t == timer) => {
                self.deadline = None;
                match self.wanted_deadline(sh) {
                    Some((kind, at)) if at <= sh.now => self.expire(key, kind, sh),
                    _ => {
                        self.sync_deadline(key, sh);
                        Flow::Keep
                    }
                }
            }
            _ => Flow::Keep,
        }
    }

    fn expire(&mut self, key: usize, deadline: Deadline, sh: &mut LoopState) -> Flow {
        let (cause, linger0) = match deadline {
            Deadline::Header | Deadline::Body => (CloseCause::HeaderTimeout, true),
            Deadline::Idle => (CloseCause::IdleTimeout, false),
            Deadline::WriteStall => (CloseCause::WriteStall, true),
            Deadline::Grace => (CloseCause::GraceExpired, true),
        };
        log::debug!(
            "conn {key}: {deadline:?} deadline passed in {:?}",
            self.life
        );
        match self.transition(LifeEvent::Expired, sh.now) {
            Flow::Close(_) => Flow::Close(Closing::Forced { cause, linger0 }),
            keep => keep,
        }
    }

    fn on_heartbeat(&mut self, key: usize, sh: &mut LoopState) {
        if self.life != Life::Active || !matches!(self.stage, Stage::Sse) {
            return;
        }
        let due = self.last_queued + sh.heartbeat();
        if due <= sh.now {
            self.out
                .push_bytes(sse::HEARTBEAT, &mut sh.pool, self.chunk_cap);
            sh.metrics.heartbeats += 1;
            self.last_queued = sh.now;
            self.mark_dirty(key, sh);
        }
        self.heartbeat = Some(sh.timers.arm(
            self.last_queued + sh.heartbeat(),
            key,
            TimerKind::Heartbeat,
        ));
    }

    /// Releases every resource this connection holds except the socket and the slab slot (the
    /// loop owns those): timers, subscriptions, queued output. Records metrics.
    pub fn release(&mut self, sh: &mut LoopState) {
        if let Some((timer, _)) = self.deadline.take() {
            sh.timers.cancel(timer);
        }
        if let Some(timer) = self.heartbeat.take() {
            sh.timers.cancel(timer);
        }
        for sub in self.subs.drain(..) {
            sh.hub.unsubscribe(sub);
        }
        self.subs = Vec::new();
        self.out.clear(&mut sh.pool);
        if let Stage::Http(http) = &mut self.stage {
            http.rbuf = Vec::new();
            http.body = None;
        }
        self.life = Life::Closed;
        if self.refused {
            sh.refused -= 1;
        }
        sh.metrics.open[self.kind() as usize] -= 1;
        sh.metrics
            .observe_lifetime(sh.now.saturating_duration_since(self.opened_at));
    }
}

fn common(sh: &LoopState) -> Common<'_> {
    Common {
        cors_origin: &sh.config.cors_origin,
        date: &sh.date,
    }
}

/// Topics of a query, validated and deduplicated.
fn push_topic(topics: &mut Vec<String>, topic: &str) -> Result<(), HttpError> {
    if !valid_topic(topic) {
        return Err(HttpError::BAD_TOPIC);
    }
    if !topics.iter().any(|t| t == topic) {
        if topics.len() == MAX_TOPICS_PER_REQUEST {
            return Err(HttpError {
                reason: "too many topics in one request",
                ..HttpError::BAD_TOPIC
            });
        }
        topics.push(topic.to_string());
    }
    Ok(())
}

fn parse_publish_query(query: &str) -> Result<PublishTarget, HttpError> {
    let mut target = PublishTarget {
        topics: Vec::new(),
        event_type: None,
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

struct SubscribeQuery {
    topics: Vec<String>,
    last_event_id: Option<String>,
    access_token: Option<String>,
}

fn parse_subscribe_query(query: &str) -> Result<SubscribeQuery, HttpError> {
    let mut q = SubscribeQuery {
        topics: Vec::new(),
        last_event_id: None,
        access_token: None,
    };
    for pair in query_pairs(query) {
        let (name, value) = pair?;
        match &*name {
            "topic" => push_topic(&mut q.topics, &value)?,
            "lastEventId" | "last_event_id" => q.last_event_id = Some(value.into_owned()),
            "access_token" => q.access_token = Some(value.into_owned()),
            _ => {}
        }
    }
    if q.topics.is_empty() {
        return Err(HttpError::BAD_TOPIC);
    }
    Ok(q)
}
