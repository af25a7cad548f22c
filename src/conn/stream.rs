//! Streams, SSE and frames alike: opening one (auth, subscriptions, where the cursors start for a
//! resume, the reset notice), heartbeats (a comment line on SSE, a PING frame on frame streams)
//! and farewells. Events themselves are never queued here: the write path reads them from the
//! shared logs (`output`), except a pattern's replay, queued by reference (a pattern's log holds
//! no history).

use super::authz::push_wanted;
use super::frame_stage::FrameConn;
use super::http_stage::{common, RETRY_SOON};
use super::state::Life;
use super::{Closing, Connection, Flow, Stage};
use crate::auth::Grants;
use crate::backplane::{FetchRequest, RemoteEvent};
use crate::buf::{encode_wire, SharedEvent, Wire};
use crate::frame::{self, ErrorCode};
use crate::http::request::query_pairs;
use crate::http::response;
use crate::http::{self, HttpError, RequestHead};
use crate::hub::{Hub, HubError, Resume, Subscription};
use crate::loop_state::LoopState;
use crate::metrics::{CloseCause, ConnKind, ResetReason};
use crate::sse;
use crate::timer::TimerKind;

/// What a stream request asked for, once validated and authorised.
struct StreamRequest {
    topics: Vec<String>,
    /// `topic_line=1`: each SSE event's first data line names its topics.
    topic_line: bool,
    last_event_id: Option<String>,
    /// The credential presented (header or `access_token`), checked later for frame publishes.
    credential: Option<Vec<u8>>,
    /// What the stream's JWT allows (JWT authorization only).
    grants: Option<Grants>,
    /// `presence=1`: join/leave notices for its topics (`conn/presence.rs`).
    presence: bool,
}

/// A stream waiting for Redis to send the events its resume needs (a stream opened with a resume
/// id, or a SUBSCRIBE frame with one on a live connection: the same request, the same answer).
pub(crate) struct BackfillWait {
    /// The id for the reset notice if Redis no longer holds them.
    pub(super) reset_id: String,
    /// The topics resumed (for a frame notice, and the request).
    pub(super) topics: Vec<String>,
    /// Where the backfill goes among the shared events: 0 when a stream opens (before any),
    /// the newest recorded seq when a SUBSCRIBE asked (after what the connection had).
    pub(super) barrier: u64,
    /// Subscriptions before this index were there before the SUBSCRIBE: what they deliver is
    /// not sent again.
    pub(super) first_new: usize,
    /// The node's own retained events that follow the backfill (a SUBSCRIBE's replay).
    pub(super) then: Vec<SharedEvent>,
    /// A stream's patterns' replay from this node's history, queued after the events Redis
    /// sends (each after the shared events before it).
    pub(super) replay: Vec<SharedEvent>,
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
            self.respond_error(key, &HttpError::SHUTTING_DOWN, false, RETRY_SOON, sh);
            return None;
        }
        let query = match parse_subscribe_query(&head.query) {
            Ok(q) => q,
            Err(err) => {
                self.respond_error(key, &err, false, &[], sh);
                return None;
            }
        };
        if self.over_subscription_cap(query.topics.len(), sh) {
            self.respond_error(key, &HttpError::TOO_MANY_SUBSCRIPTIONS, false, &[], sh);
            return None;
        }
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
                self.refuse_unauthorized(key, &head.path, credential.is_some(), false, sh);
                return None;
            }
        }
        let access_token = query.access_token.as_deref();
        let grants = self
            .authorize_stream(key, head, access_token, &query.topics, sh)
            .ok()?;
        if query.presence {
            // Join/leave notices name subjects: under JWT they need the `presence` grant (or
            // admin) for every topic, as the presence API does.
            let allowed = grants.as_ref().is_none_or(|g| {
                g.admin
                    || query
                        .topics
                        .iter()
                        .all(|t| crate::auth::pattern::any_matches(&g.presence, t))
            });
            if !allowed {
                let failure = crate::auth::AuthFailure::ForbiddenTopic;
                self.refuse_auth(key, &head.path, failure, false, sh);
                return None;
            }
        }
        // The header wins over the query parameter; an empty id means "no id" (browsers never
        // send one, and the spec resets the last event id to "" on an empty `id:`).
        let last_event_id = head
            .last_event_id
            .clone()
            .filter(|id| !id.is_empty())
            .or(query.last_event_id.filter(|id| !id.is_empty()));
        Some(StreamRequest {
            topics: query.topics,
            topic_line: query.topic_line,
            last_event_id,
            credential,
            grants,
            presence: query.presence,
        })
    }

    pub(super) fn start_sse(&mut self, key: usize, head: &RequestHead, sh: &mut LoopState) {
        let Some(req) = self.accept_stream_request(key, head, sh) else {
            return;
        };
        let mut prelude = Vec::with_capacity(256);
        response::write_sse_head(&mut prelude, &common(sh));
        sse::encode_retry(&mut prelude, sh.config.retry_ms);
        if !self.subscribe_all(key, &req.topics, sh) {
            return;
        }
        sh.metrics.count_response(200);
        // Barrier 0: the head goes before any event, replayed ones included.
        self.push_private(key, &prelude, 0, sh);
        self.stage = Stage::Sse;
        self.out.wire = Some(if req.topic_line {
            for sub in &self.out.subs {
                sh.hub.want_topic_form(sub);
            }
            Wire::SseTopic
        } else {
            Wire::Sse
        });
        self.open_stream(
            key,
            ConnKind::Sse,
            &req.topics,
            req.last_event_id.as_deref(),
            sh,
        );
        self.arm_token_expiry(key, req.grants, sh);
        self.presence_opened(key, req.presence, sh);
    }

    /// `GET /frames` with `Upgrade: cafe`: answers 101 and hands the bytes read past the request
    /// head to the frame decoder.
    pub(super) fn start_frames(&mut self, key: usize, head: &RequestHead, sh: &mut LoopState) {
        if !head.upgrades_to_cafe() {
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
        // `Sseloop-Publish-Token` carries the publish credential when it differs from the
        // subscribe one; without it, the handshake's credential is checked as before.
        let publish_credential = head.publish_token.as_deref().or(req.credential.as_deref());
        let may_publish = match sh.config.publish_token.as_deref() {
            None => true,
            Some(expected) => publish_credential.is_some_and(|t| http::token_matches(t, expected)),
        };
        if !self.subscribe_all(key, &req.topics, sh) {
            return;
        }
        sh.metrics.count_response(101);
        let mut prelude = Vec::with_capacity(192);
        response::write_upgrade_head(&mut prelude, &common(sh));
        self.push_private(key, &prelude, 0, sh);
        self.out.wire = Some(Wire::Frame);
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
        self.presence_opened(key, req.presence, sh);
    }

    /// Subscribes the connection to every topic of a stream request; on refusal (no room for
    /// another topic) undoes them and answers 503.
    fn subscribe_all(&mut self, key: usize, topics: &[String], sh: &mut LoopState) -> bool {
        for topic in topics {
            match sh.hub.subscribe(topic, key) {
                Ok(sub) => self.out.subs.push(sub),
                Err(HubError::TooManyTopics | HubError::TooLarge) => {
                    for sub in self.out.subs.drain(..) {
                        sh.hub.unsubscribe(sub);
                    }
                    let err = &HttpError::TOO_MANY_TOPICS;
                    self.respond_error(key, err, false, RETRY_SOON, sh);
                    return false;
                }
            }
        }
        true
    }

    /// Starts the stream: cursors after `last_event_id` (a reset notice first when events were
    /// missed), or live; the response head is already queued.
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
        if let Some(id) = last_event_id {
            let resume = if id.len() > http::request::MAX_LAST_EVENT_ID {
                Resume::Foreign
            } else {
                sh.hub.parse_resume(id)
            };
            let start = sh.hub.start_stream(&mut self.out.subs, resume);
            self.build_topic_forms(&start.replay, sh);
            let backfill = match (start.reset, resume) {
                (Some(ResetReason::Expired), Resume::After(after)) if sh.backplane.is_some() => {
                    Some(after)
                }
                _ => None,
            };
            if let Some(after) = backfill {
                self.start_backfill(key, after, topics, start.reset_id, sh);
            } else {
                if let Some(reason) = start.reset {
                    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                    self.queue_reset_notice(key, reason, &start.reset_id, &names, 0, sh);
                }
                self.queue_replay(&start.replay, sh);
            }
            let replayed = self.out.backlog_events(&sh.hub);
            sh.metrics.replayed += replayed;
        }
        self.last_queued = sh.now;
        self.heartbeat = Some(
            sh.timers
                .arm(sh.now + sh.heartbeat(), key, TimerKind::Heartbeat),
        );
        self.mark_dirty(key, sh);
    }

    /// The client's id is older than this node's cache: the cursors start where the cache is
    /// complete, and Redis is asked for the events in between (they go out first, before any
    /// live event; output and frame input wait for them).
    fn start_backfill(
        &mut self,
        key: usize,
        after: u64,
        topics: &[String],
        reset_id: String,
        sh: &mut LoopState,
    ) {
        let upto = sh.hub.cache_floor(&self.out.subs);
        let replay = sh
            .hub
            .start_stream(&mut self.out.subs, Resume::After(upto))
            .replay;
        self.build_topic_forms(&replay, sh);
        let wait = BackfillWait {
            reset_id,
            topics: topics.to_vec(),
            barrier: 0,
            first_new: 0,
            then: Vec::new(),
            replay,
        };
        self.request_backfill(key, after, upto, wait, sh);
    }

    /// Asks Redis for the events of `wait.topics` in `(after, upto]` (the node's cache holds
    /// everything after `upto`); the connection's output and frame input wait for the answer
    /// ([`Connection::backfill_done`]).
    pub(super) fn request_backfill(
        &mut self,
        key: usize,
        after: u64,
        upto: u64,
        wait: BackfillWait,
        sh: &mut LoopState,
    ) {
        let request = FetchRequest::new(key, self.id, &wait.topics, after, upto);
        self.backfill = Some(Box::new(wait));
        if let Some(bp) = sh.backplane.as_mut() {
            bp.fetch(request, sh.now);
        }
    }

    /// Redis answered this stream's backfill: the missed events go out first, or the reset
    /// notice when Redis no longer holds them all; then the node's own retained events that
    /// follow them (a SUBSCRIBE's).
    pub fn backfill_done(
        &mut self,
        key: usize,
        events: Option<Vec<RemoteEvent>>,
        sh: &mut LoopState,
    ) {
        let Some(wait) = self.backfill.take() else {
            return;
        };
        self.mark_dirty(key, sh);
        if self.life != Life::Active {
            return;
        }
        // Only this stream's wire form: these events are not shared, nothing else reads them.
        let wire = self.out.wire.unwrap_or(Wire::Sse);
        match events {
            None => {
                let names: Vec<&str> = wait.topics.iter().map(String::as_str).collect();
                let reason = ResetReason::Expired;
                self.queue_reset_notice(key, reason, &wait.reset_id, &names, wait.barrier, sh);
            }
            Some(events) => {
                let old = &self.out.subs[..wait.first_new.min(self.out.subs.len())];
                let mut bytes = Vec::new();
                for ev in events {
                    if delivered_by(old, ev.seq, &ev.topics, &sh.hub) {
                        continue;
                    }
                    let id = sh.hub.id_for(ev.seq);
                    let ty = ev.event_type.as_deref();
                    encode_wire(&mut bytes, wire, &id, &ev.topics, ty, &ev.data);
                    sh.metrics.replayed += 1;
                }
                if !bytes.is_empty() {
                    self.push_private(key, &bytes, wait.barrier, sh);
                }
            }
        }
        for event in &wait.then {
            self.out.private.push_event(event, wire, wait.barrier);
        }
        self.queue_replay(&wait.replay, sh);
    }

    /// A `topic_line=1` stream resumed: the events it replays from this node's history get
    /// their topic-line form (those recorded while it reads get it as they are recorded).
    fn build_topic_forms(&self, replay: &[SharedEvent], sh: &mut LoopState) {
        if self.out.wire == Some(Wire::SseTopic) {
            sh.hub.build_topic_forms(&self.out.subs, replay);
        }
    }

    /// Queues a pattern's replay by reference, each event after the shared events before it so
    /// that it merges in id order with what the stream's cursors replay.
    fn queue_replay(&mut self, events: &[SharedEvent], sh: &mut LoopState) {
        let wire = self.out.wire.unwrap_or(Wire::Sse);
        for event in events {
            self.out
                .private
                .push_event(event, wire, event.seq.saturating_sub(1));
        }
        sh.metrics.replayed += events.len() as u64;
        sh.metrics.deliveries += events.len() as u64;
    }

    /// Tells a live stream that events were lost on the backplane (its dataset was lost, or a
    /// gap was trimmed before this node read it): the notice follows everything recorded so far
    /// and precedes what comes next.
    pub fn backplane_reset(
        &mut self,
        key: usize,
        reason: crate::metrics::ResetReason,
        reset_id: &str,
        sh: &mut LoopState,
    ) {
        if self.life != Life::Active || self.out.subs.is_empty() {
            return;
        }
        let names: Vec<String> = self
            .out
            .subs
            .iter()
            .filter_map(|s| sh.hub.channel(s.channel()).map(|c| c.name.to_string()))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let barrier = sh.hub.last_seq();
        self.queue_reset_notice(key, reason, reset_id, &names, barrier, sh);
        self.mark_dirty(key, sh);
    }

    /// Queues the `sseloop-reset` notice (SSE event or EVENT frame) after the events up to
    /// `barrier`.
    pub(super) fn queue_reset_notice(
        &mut self,
        key: usize,
        reason: crate::metrics::ResetReason,
        reset_id: &str,
        topics: &[&str],
        barrier: u64,
        sh: &mut LoopState,
    ) {
        sh.metrics.resume_resets[reason as usize] += 1;
        let data = format!("{{\"reason\":\"{}\"}}", reason.as_str());
        let mut notice = Vec::with_capacity(96);
        match self.out.wire {
            Some(Wire::Frame) => {
                let encoded = frame::encode_event_frame(
                    &mut notice,
                    reset_id,
                    topics,
                    sse::RESET_EVENT_TYPE,
                    data.as_bytes(),
                );
                debug_assert!(encoded.is_ok(), "reset notice within frame limits");
            }
            _ => sse::encode_event(&mut notice, reset_id, Some(sse::RESET_EVENT_TYPE), &data),
        }
        self.push_private(key, &notice, barrier, sh);
    }

    /// The heartbeat timer fired: a comment (SSE) or a PING (frames) on a stream quiet for a
    /// heartbeat period. A frame client that left the previous PING unanswered for a whole period
    /// is gone.
    pub(super) fn on_heartbeat(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        if self.life != Life::Active {
            return Flow::Keep;
        }
        let due = self.last_queued + sh.heartbeat();
        // A stream waiting for its backfill sends nothing that could overtake it.
        if due <= sh.now && self.backfill.is_none() {
            let barrier = sh.hub.last_seq();
            match &mut self.stage {
                Stage::Sse => self.push_private(key, sse::HEARTBEAT, barrier, sh),
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
                    self.push_private(key, &ping, barrier, sh);
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
    pub(super) fn queue_farewell(&mut self, key: usize, sh: &mut LoopState) {
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
        // After every event already recorded, and nothing after it: the stream's last word.
        self.access_ending("shutdown");
        self.freeze_streams(sh);
        self.push_private(key, &bytes, u64::MAX, sh);
    }

    /// Stops every cursor at the current end of its log: what is recorded goes out, nothing
    /// later does (the stream is ending).
    pub(super) fn freeze_streams(&mut self, sh: &mut LoopState) {
        self.presence_leaving(sh);
        for sub in self.out.subs.iter_mut() {
            sh.hub.stop_at_end(sub);
        }
    }
}

struct SubscribeQuery {
    topics: Vec<String>,
    topic_line: bool,
    last_event_id: Option<String>,
    access_token: Option<String>,
    presence: bool,
}

fn parse_subscribe_query(query: &str) -> Result<SubscribeQuery, HttpError> {
    let mut q = SubscribeQuery {
        topics: Vec::new(),
        topic_line: false,
        last_event_id: None,
        access_token: None,
        presence: false,
    };
    for pair in query_pairs(query) {
        let (name, value) = pair?;
        match &*name {
            "topic" => push_wanted(&mut q.topics, &value)?,
            // SSE only: frames name the topics of every EVENT anyway.
            "topic_line" => {
                q.topic_line = match &*value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(HttpError::BAD_TOPIC_LINE),
                }
            }
            "lastEventId" | "last_event_id" => q.last_event_id = Some(value.into_owned()),
            "access_token" => q.access_token = Some(value.into_owned()),
            "presence" => q.presence = value == "1" || value == "true",
            _ => {}
        }
    }
    if q.topics.is_empty() {
        return Err(HttpError::BAD_TOPIC);
    }
    Ok(q)
}

/// True when one of `old`'s subscriptions delivers the event `seq` with `topics` anyway (it is
/// active and started before it), so that a replay does not send it twice.
pub(super) fn delivered_by(old: &[Subscription], seq: u64, topics: &[Box<str>], hub: &Hub) -> bool {
    old.iter().any(|sub| {
        sub.is_active() && seq > sub.start_seq() && topics.iter().any(|t| hub.covers(sub, t))
    })
}
