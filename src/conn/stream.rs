//! Streams, SSE and frames alike: opening one (auth, subscriptions, resume and replay), queueing
//! live events with the slow-consumer check, and heartbeats (a comment line on SSE, a PING frame
//! on frame streams).

use super::authz::push_wanted;
use super::frame_stage::FrameConn;
use super::http_stage::common;
use super::state::Life;
use super::{Closing, Connection, Flow, Stage};
use crate::auth::Grants;
use crate::buf::{SharedEvent, Wire};
use crate::event_loop::LoopState;
use crate::frame::{self, ErrorCode};
use crate::http::request::query_pairs;
use crate::http::response;
use crate::http::{self, HttpError, RequestHead};
use crate::hub::Resume;
use crate::metrics::{CloseCause, ConnKind};
use crate::sse;
use crate::timer::TimerKind;

/// What a stream request asked for, once validated and authorised.
struct StreamRequest {
    topics: Vec<String>,
    last_event_id: Option<String>,
    /// The credential presented (header or `access_token`), checked later for frame publishes.
    credential: Option<Vec<u8>>,
    /// What the stream's JWT allows (JWT authorization only).
    grants: Option<Grants>,
}

impl Connection {
    /// Validates a stream request (shutdown, topics, subscribe token); answers the error itself.
    fn accept_stream_request(
        &mut self,
        key: usize,
        head: &RequestHead,
        sh: &mut LoopState,
    ) -> Option<StreamRequest> {
        if sh.shutting_down {
            self.respond_error(
                key,
                &HttpError::SHUTTING_DOWN,
                false,
                &[("Retry-After", "1")],
                sh,
            );
            return None;
        }
        let query = match parse_subscribe_query(&head.query) {
            Ok(q) => q,
            Err(err) => {
                self.respond_error(key, &err, false, &[], sh);
                return None;
            }
        };
        let credential: Option<Vec<u8>> = head
            .authorization
            .as_deref()
            .and_then(http::bearer_token)
            .or(query.access_token.as_deref().map(str::as_bytes))
            .map(<[u8]>::to_vec);
        if let Some(expected) = sh.config.subscribe_token.as_deref() {
            if !credential
                .as_deref()
                .is_some_and(|t| http::token_matches(t, expected))
            {
                self.refuse_unauthorized(key, credential.is_some(), false, sh);
                return None;
            }
        }
        let access_token = query.access_token.as_deref();
        let grants = self
            .authorize_stream(key, head, access_token, &query.topics, sh)
            .ok()?;
        // The header wins over the query parameter; an empty id means "no id" (browsers never
        // send one, and the spec resets the last event id to "" on an empty `id:`).
        let last_event_id = head
            .last_event_id
            .clone()
            .filter(|id| !id.is_empty())
            .or(query.last_event_id.filter(|id| !id.is_empty()));
        Some(StreamRequest {
            topics: query.topics,
            last_event_id,
            credential,
            grants,
        })
    }

    pub(super) fn start_sse(&mut self, key: usize, head: &RequestHead, sh: &mut LoopState) {
        let Some(req) = self.accept_stream_request(key, head, sh) else {
            return;
        };
        sh.metrics.count_response(200);
        let mut prelude = Vec::with_capacity(256);
        response::write_sse_head(&mut prelude, &common(sh));
        sse::encode_retry(&mut prelude, sh.config.retry_ms);
        self.out.push_bytes(&prelude, &mut sh.pool, self.chunk_cap);
        self.stage = Stage::Sse;
        self.open_stream(
            key,
            ConnKind::Sse,
            &req.topics,
            req.last_event_id.as_deref(),
            sh,
        );
        self.arm_token_expiry(key, req.grants, sh);
    }

    /// `GET /frames` with `Upgrade: cafe`: answers 101 and hands the bytes read past the request
    /// head to the frame decoder.
    pub(super) fn start_frames(&mut self, key: usize, head: &RequestHead, sh: &mut LoopState) {
        let upgrade_ok = head.connection_upgrade
            && head
                .upgrade
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case("cafe"));
        if !upgrade_ok {
            return self.respond_error(
                key,
                &HttpError::UPGRADE_REQUIRED,
                false,
                &[("Upgrade", "cafe")],
                sh,
            );
        }
        let Some(req) = self.accept_stream_request(key, head, sh) else {
            return;
        };
        let may_publish = match sh.config.publish_token.as_deref() {
            None => true,
            Some(expected) => req
                .credential
                .as_deref()
                .is_some_and(|t| http::token_matches(t, expected)),
        };
        sh.metrics.count_response(101);
        let mut prelude = Vec::with_capacity(192);
        response::write_upgrade_head(&mut prelude, &common(sh));
        self.out.push_bytes(&prelude, &mut sh.pool, self.chunk_cap);
        let tail = match &mut self.stage {
            Stage::Http(http) => std::mem::take(&mut http.rbuf),
            _ => Vec::new(),
        };
        self.stage = Stage::Frames(Box::new(FrameConn::new(
            tail,
            sh.config.max_frame,
            may_publish,
        )));
        self.open_stream(
            key,
            ConnKind::Frames,
            &req.topics,
            req.last_event_id.as_deref(),
            sh,
        );
        self.arm_token_expiry(key, req.grants, sh);
    }

    /// Subscribes to `topics` and queues the replay after `last_event_id` (with a reset notice
    /// when events were missed); the response head is already queued.
    fn open_stream(
        &mut self,
        key: usize,
        kind: ConnKind,
        topics: &[String],
        last_event_id: Option<&str>,
        sh: &mut LoopState,
    ) {
        sh.metrics.open[ConnKind::Http as usize] -= 1;
        sh.metrics.open[kind as usize] += 1;
        for topic in topics {
            self.subs.push(sh.hub.subscribe(topic, key));
        }
        if let Some(id) = last_event_id {
            self.replay(key, topics, id, sh);
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

    /// Queues the retained events of `topics` after `last_event_id`, preceded by a reset notice
    /// when the id cannot be honoured in full.
    pub(super) fn replay(
        &mut self,
        key: usize,
        topics: &[String],
        last_event_id: &str,
        sh: &mut LoopState,
    ) {
        let Some(wire) = self.wire() else {
            return;
        };
        let resume = if last_event_id.len() > http::request::MAX_LAST_EVENT_ID {
            Resume::Foreign
        } else {
            sh.hub.parse_resume(last_event_id)
        };
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let replay = sh.hub.replay(&names, resume);
        if let Some(reason) = replay.reset {
            sh.metrics.resume_resets[reason as usize] += 1;
            let data = format!("{{\"reason\":\"{}\"}}", reason.as_str());
            let mut notice = Vec::with_capacity(96);
            match wire {
                Wire::Sse => sse::encode_event(
                    &mut notice,
                    &replay.reset_id,
                    Some(sse::RESET_EVENT_TYPE),
                    &data,
                ),
                Wire::Frame => {
                    let encoded = frame::encode_event_frame(
                        &mut notice,
                        &replay.reset_id,
                        &names,
                        sse::RESET_EVENT_TYPE,
                        data.as_bytes(),
                    );
                    debug_assert!(encoded.is_ok(), "reset notice within frame limits");
                }
            }
            self.out.push_bytes(&notice, &mut sh.pool, self.chunk_cap);
        }
        let before = self.out.len();
        for event in &replay.events {
            self.out
                .push_event(event, wire, &mut sh.pool, self.chunk_cap);
            self.last_seq = self.last_seq.max(event.seq);
        }
        self.replay_credit += self.out.len() - before;
        let n = replay.events.len() as u64;
        sh.metrics.replayed += n;
        sh.metrics.deliveries += n;
        self.mark_dirty(key, sh);
    }

    /// The encoding this connection's stream receives, if it is a stream.
    fn wire(&self) -> Option<Wire> {
        match self.stage {
            Stage::Http(_) => None,
            Stage::Sse => Some(Wire::Sse),
            Stage::Frames(_) => Some(Wire::Frame),
        }
    }

    /// Queues a live event for this subscriber. `Flow::Close` when it is a slow consumer.
    pub fn deliver(&mut self, key: usize, event: &SharedEvent, sh: &mut LoopState) -> Flow {
        if event.seq <= self.last_seq || self.life != Life::Active {
            return Flow::Keep;
        }
        let Some(wire) = self.wire() else {
            return Flow::Keep;
        };
        self.last_seq = event.seq;
        // The cap judges what the client was offered and did not take: bytes queued before the
        // last write attempt (minus replay). An event meeting such a backlog that would take it
        // past the cap makes this a slow consumer. Bytes queued in this iteration do not count
        // yet, so a burst published at once is offered before anyone is judged; memory stays
        // bounded by the cap plus one iteration's publishes.
        let encoded_len = event.encoded(wire).len();
        let unoffered = self.out.len().saturating_sub(self.fresh);
        let offered = unoffered - self.replay_credit.min(unoffered);
        if offered > 0 && offered + encoded_len > sh.config.max_queue_bytes {
            log::info!(
                "conn {key}: slow consumer, {} bytes queued; disconnecting",
                self.out.len()
            );
            return Flow::Close(Closing::Forced {
                cause: CloseCause::SlowConsumer,
                linger0: true,
            });
        }
        self.fresh += encoded_len;
        self.out
            .push_event(event, wire, &mut sh.pool, self.chunk_cap);
        sh.metrics.deliveries += 1;
        self.last_queued = sh.now;
        self.mark_dirty(key, sh);
        Flow::Keep
    }

    /// The heartbeat timer fired: a comment (SSE) or a PING (frames) on a stream quiet for a
    /// heartbeat period. A frame client that left the previous PING unanswered for a whole period
    /// is gone.
    pub(super) fn on_heartbeat(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        if self.life != Life::Active {
            return Flow::Keep;
        }
        let due = self.last_queued + sh.heartbeat();
        if due <= sh.now {
            match &mut self.stage {
                Stage::Sse => self
                    .out
                    .push_bytes(sse::HEARTBEAT, &mut sh.pool, self.chunk_cap),
                Stage::Frames(frames) => {
                    if frames.ping_unanswered {
                        log::debug!("conn {key}: PING unanswered for a heartbeat period");
                        return Flow::Close(Closing::Forced {
                            cause: CloseCause::IdleTimeout,
                            linger0: true,
                        });
                    }
                    frames.ping_unanswered = true;
                    let mut ping = Vec::with_capacity(8);
                    let _ = frame::encode_ping_frame(&mut ping, b"");
                    self.out.push_bytes(&ping, &mut sh.pool, self.chunk_cap);
                }
                Stage::Http(_) => return Flow::Keep,
            }
            sh.metrics.heartbeats += 1;
            self.last_queued = sh.now;
            self.mark_dirty(key, sh);
        }
        self.heartbeat = Some(sh.timers.arm(
            self.last_queued + sh.heartbeat(),
            key,
            TimerKind::Heartbeat,
        ));
        Flow::Keep
    }

    /// The last words of a stream before a graceful close on shutdown: a jittered `retry:` (SSE)
    /// or a GOAWAY with a jittered retry hint (frames).
    pub(super) fn queue_farewell(&mut self, sh: &mut LoopState) {
        let retry = sh.jittered_retry();
        let mut bytes = Vec::with_capacity(32);
        match self.stage {
            Stage::Sse => sse::encode_retry(&mut bytes, retry),
            Stage::Frames(_) => {
                let retry = u32::try_from(retry).unwrap_or(u32::MAX);
                let _ = frame::encode_goaway_frame(
                    &mut bytes,
                    ErrorCode::SHUTTING_DOWN,
                    retry,
                    "server shutting down",
                );
            }
            Stage::Http(_) => return,
        }
        self.out.push_bytes(&bytes, &mut sh.pool, self.chunk_cap);
    }
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
            "topic" => push_wanted(&mut q.topics, &value)?,
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
