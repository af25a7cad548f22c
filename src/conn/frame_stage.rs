//! The frame stage of a connection: after the `101`, frames in both directions. Input is decoded
//! straight out of the read buffer (the decoder checks magic and length before anything is
//! reserved), each frame is handled before the next, and every reply is queued with a barrier at
//! the newest recorded event, so replies keep the order of the frames they answer and follow the
//! events published before them (a publisher gets its own EVENT after its PUBLISH_ACK and before
//! the replies to its later frames).

use super::authz::{distinct_wanted, Need};
use super::state::{Life, LifeEvent};
use super::stream::{delivered_by, BackfillWait};
use super::{Connection, Flow, Stage, PIPELINE_OUTPUT_LIMIT};
use crate::auth::AuthFailure;
use crate::backplane::{AppendError, Origin};
use crate::buf::Wire;
use crate::frame::{self, ErrorCode, FrameDecoder, Kind, Payload, TopicList};
use crate::http::request::{topic_is_new, valid_event_type};
use crate::hub::{HubError, Resume};
use crate::loop_state::{LoopState, PublishStart};
use crate::metrics::ResetReason;

use super::http_stage::MAX_TOPICS_PER_REQUEST;

/// Frame-mode state of a connection.
pub(super) struct FrameConn {
    /// Bytes read and not yet decoded (at most one frame plus one read). Freed when empty.
    rbuf: Vec<u8>,
    decoder: FrameDecoder,
    /// The handshake presented the publish token (or none is configured).
    may_publish: bool,
    /// A heartbeat PING went out and nothing has been read since.
    pub(super) ping_unanswered: bool,
    /// PUBLISH frames with the backplane, not answered yet; at [`MAX_AWAITING`] the connection
    /// stops reading until answers come back (its memory, and Redis's queue, stay bounded).
    pub(super) awaiting: u32,
}

/// PUBLISH frames one connection may have with the backplane at once.
pub(super) const MAX_AWAITING: u32 = 64;

impl FrameConn {
    /// Frame state starting with the bytes read past the upgrade request's head.
    pub(super) fn new(rbuf: Vec<u8>, max_frame: usize, may_publish: bool) -> FrameConn {
        FrameConn {
            rbuf,
            decoder: FrameDecoder::new(max_frame),
            may_publish,
            ping_unanswered: false,
            awaiting: 0,
        }
    }
}

impl FrameConn {
    /// Appends bytes read from the peer; any input answers a pending heartbeat PING.
    pub(super) fn push_input(&mut self, bytes: &[u8]) {
        self.ping_unanswered = false;
        self.rbuf.extend_from_slice(bytes);
    }
}

/// A PUBLISH frame's fields.
struct FramePublish<'a> {
    correlation: &'a [u8],
    topics: TopicList<'a>,
    event_type: &'a str,
    data: &'a [u8],
    idempotency_key: &'a str,
}

impl Connection {
    /// Handles every complete frame buffered. A broken frame stream (bad magic, oversize length)
    /// gets one fatal ERROR and a graceful close.
    pub(super) fn process_frames(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        if self.backfill.is_some() {
            // Replies would overtake the replay still on its way from Redis.
            return Flow::Keep;
        }
        let Stage::Frames(frames) = &mut self.stage else {
            return Flow::Keep;
        };
        if frames.rbuf.is_empty() {
            frames.rbuf = Vec::new();
            return Flow::Keep;
        }
        let mut rbuf = std::mem::take(&mut frames.rbuf);
        let decoder = frames.decoder;
        let mut start = 0;
        let mut fatal = None;
        let mut flow = Flow::Keep;
        while flow == Flow::Keep
            && self.life == Life::Active
            && self.out.private.len() < PIPELINE_OUTPUT_LIMIT
            && !matches!(&self.stage, Stage::Frames(f) if f.awaiting >= MAX_AWAITING)
            && self.backfill.is_none()
        {
            match decoder.decode(&rbuf[start..]) {
                Ok(Some(found)) => {
                    let payload = &rbuf[start..][found.payload_range()];
                    sh.metrics.frames_received += 1;
                    flow = self.on_frame(key, payload, sh);
                    start += found.frame_len();
                }
                Ok(None) => break,
                Err(err) => {
                    fatal = Some(err);
                    break;
                }
            }
        }
        rbuf.drain(..start);
        if let Some(err) = fatal {
            let text = err.to_string();
            log::debug!("conn {key}: broken frame stream: {text}");
            self.queue_frame_error(key, err.code(), 0, b"", &text, sh);
            self.access_ending("protocol_error");
            // A fatal ERROR is followed by the close, without GOAWAY.
            let _ = self.transition(LifeEvent::Drain, sh);
            rbuf = Vec::new();
        }
        if let Stage::Frames(frames) = &mut self.stage {
            frames.rbuf = if rbuf.is_empty() { Vec::new() } else { rbuf };
        }
        flow
    }

    fn on_frame(&mut self, key: usize, payload: &[u8], sh: &mut LoopState) -> Flow {
        let about = payload.first().copied().unwrap_or(0);
        match Kind::from_byte(about) {
            // Never answer an ERROR or a PONG, even a malformed one, so two peers cannot loop.
            Some(Kind::Error | Kind::Pong) if frame::parse(payload).is_err() => return Flow::Keep,
            // Kinds that only flow server to client are unknown here, whatever their payload.
            Some(Kind::Event | Kind::PublishAck | Kind::GoAway) => {
                let msg = "kind is server-to-client only";
                self.queue_frame_error(key, ErrorCode::UNKNOWN_KIND, about, b"", msg, sh);
                return Flow::Keep;
            }
            _ => {}
        }
        let message = match frame::parse(payload) {
            Ok(message) => message,
            Err(err) => {
                // Words for a person reading logs, never a Rust debug string (PROTOCOL.md 4.8).
                let text = err.to_string();
                // A refused PUBLISH is answered with its correlation id when that is readable.
                let correlation = if about == Kind::Publish.byte() {
                    publish_correlation(payload)
                } else {
                    b""
                };
                self.queue_frame_error(key, err.code(), about, correlation, &text, sh);
                return Flow::Keep;
            }
        };
        match message {
            Payload::Publish {
                correlation,
                topics,
                event_type,
                data,
                idempotency_key,
            } => {
                let publish = FramePublish {
                    correlation,
                    topics,
                    event_type,
                    data,
                    idempotency_key,
                };
                return self.frame_publish(key, publish, sh);
            }
            Payload::Subscribe {
                topics,
                last_event_id,
            } => self.frame_subscribe(key, topics, last_event_id, sh),
            Payload::Unsubscribe { topics } => {
                for name in topics.iter() {
                    let Some(channel) = sh.hub.channel_id(name) else {
                        continue;
                    };
                    let found = self
                        .out
                        .subs
                        .iter()
                        .position(|s| s.channel() == channel && s.is_active());
                    if let Some(i) = found {
                        // Events recorded before the UNSUBSCRIBE still go out (they were
                        // acknowledged while it was subscribed); later ones do not.
                        if sh.hub.stop_at_end(&mut self.out.subs[i]) {
                            sh.hub.unsubscribe(self.out.subs.remove(i));
                        }
                    }
                }
            }
            Payload::Ping { opaque } => {
                let mut pong = Vec::with_capacity(8 + opaque.len());
                let _ = frame::encode_pong_frame(&mut pong, opaque);
                self.queue_bytes(key, &pong, sh);
            }
            Payload::Pong { .. } => {}
            Payload::Error { code, message, .. } => {
                log::debug!("conn {key}: client reported error {code:?}: {message}");
            }
            // Filtered out above; kept so a new kind cannot slip through unanswered.
            Payload::Event { .. } | Payload::PublishAck { .. } | Payload::GoAway { .. } => {
                let msg = "kind is server-to-client only";
                self.queue_frame_error(key, ErrorCode::UNKNOWN_KIND, about, b"", msg, sh);
            }
        }
        Flow::Keep
    }

    fn frame_publish(&mut self, key: usize, publish: FramePublish<'_>, sh: &mut LoopState) -> Flow {
        let FramePublish {
            correlation,
            topics,
            event_type,
            data,
            idempotency_key,
        } = publish;
        // Nobody would receive an event accepted now: the farewell is already on its way.
        if sh.shutting_down {
            let msg = "server shutting down";
            return self.refuse_publish(key, ErrorCode::SHUTTING_DOWN, correlation, msg, sh);
        }
        let may_publish = matches!(&self.stage, Stage::Frames(f) if f.may_publish);
        if !may_publish {
            sh.metrics.count_auth_failure(AuthFailure::WrongToken);
            return self.refuse_publish(
                key,
                ErrorCode::UNAUTHORIZED,
                correlation,
                "publish token required",
                sh,
            );
        }
        let Some(names) = distinct_topics(topics) else {
            return self.refuse_publish(
                key,
                ErrorCode::BAD_TOPIC,
                correlation,
                "missing or invalid topic",
                sh,
            );
        };
        if let Err((code, why)) = self.authorize_frame(&names, Need::Publish, sh) {
            return self.refuse_publish(key, code, correlation, why, sh);
        }
        let event_type = match event_type {
            "" => None,
            t if valid_event_type(t) => Some(t),
            _ => {
                return self.refuse_publish(
                    key,
                    ErrorCode::BAD_EVENT_TYPE,
                    correlation,
                    "invalid event type",
                    sh,
                )
            }
        };
        // The same limit as an HTTP body or a PublishHandle event.
        if data.len() > sh.config.max_body {
            let msg = "data larger than --max-body";
            return self.refuse_publish(key, ErrorCode::TOO_LARGE, correlation, msg, sh);
        }
        let idem = match idempotency_key {
            "" => None,
            k if crate::idempotency::valid_key(k) => Some(k),
            _ => {
                let msg = "idempotency key must be 1..=128 visible ASCII characters";
                let code = ErrorCode::MALFORMED_PAYLOAD;
                return self.refuse_publish(key, code, correlation, msg, sh);
            }
        };
        let Ok(data) = std::str::from_utf8(data) else {
            return self.refuse_publish(
                key,
                ErrorCode::NOT_UTF8,
                correlation,
                "data is not UTF-8",
                sh,
            );
        };
        let (id, subject) = (self.id, self.subject());
        if let Err(r) = self.take_publish_token(subject, sh) {
            let msg = Connection::publish_rate_message(r);
            return self.refuse_publish(key, ErrorCode::RATE_LIMITED, correlation, &msg, sh);
        }
        if !sh.allow_publish(&names, event_type, data, id, subject) {
            return self.refuse_publish(
                key,
                ErrorCode::FORBIDDEN,
                correlation,
                "refused by the host",
                sh,
            );
        }
        let conn = self.id;
        let origin = || Origin::Frame {
            key,
            conn,
            correlation: correlation.to_vec(),
        };
        let event = match sh.publish(origin, &names, event_type, data, idem) {
            PublishStart::Pending => {
                if let Stage::Frames(f) = &mut self.stage {
                    f.awaiting += 1;
                }
                return Flow::Keep;
            }
            PublishStart::Done(Ok(event)) => event,
            PublishStart::Done(Err(HubError::TooLarge)) => {
                let msg = "encoded event would exceed --max-queue-bytes";
                return self.refuse_publish(key, ErrorCode::TOO_LARGE, correlation, msg, sh);
            }
            PublishStart::Done(Err(HubError::TooManyTopics)) => {
                let msg = "too many topics on this server";
                return self.refuse_publish(key, ErrorCode::OVERLOADED, correlation, msg, sh);
            }
        };
        // Before its own event (seq), after everything earlier.
        self.queue_publish_ack(key, correlation, &event.id, event.seq - 1, sh);
        Flow::Keep
    }

    fn queue_publish_ack(
        &mut self,
        key: usize,
        correlation: &[u8],
        id: &str,
        barrier: u64,
        sh: &mut LoopState,
    ) {
        let mut ack = Vec::with_capacity(16 + correlation.len() + id.len());
        let _ = frame::encode_publish_ack_frame(&mut ack, correlation, id);
        self.push_private(key, &ack, barrier, sh);
    }

    /// The backplane answered one of this connection's PUBLISH frames.
    pub fn frame_publish_done(
        &mut self,
        key: usize,
        correlation: &[u8],
        outcome: Result<(String, u64), AppendError>,
        sh: &mut LoopState,
    ) {
        let Stage::Frames(f) = &mut self.stage else {
            return;
        };
        f.awaiting = f.awaiting.saturating_sub(1);
        if self.life != Life::Active {
            return;
        }
        match outcome {
            Ok((id, _)) => {
                // The event itself comes back through the backplane's stream, before or after
                // this answer: the ack only follows what this node has recorded so far.
                let barrier = sh.hub.last_seq();
                self.queue_publish_ack(key, correlation, &id, barrier, sh);
            }
            Err(AppendError::Unavailable) => {
                let msg = "backplane unavailable; retry later";
                let code = ErrorCode::BACKPLANE_UNAVAILABLE;
                self.refuse_publish(key, code, correlation, msg, sh);
            }
        }
        self.mark_dirty(key, sh);
    }

    fn refuse_publish(
        &mut self,
        key: usize,
        code: ErrorCode,
        correlation: &[u8],
        message: &str,
        sh: &mut LoopState,
    ) -> Flow {
        self.queue_frame_error(key, code, Kind::Publish.byte(), correlation, message, sh);
        Flow::Keep
    }

    fn frame_subscribe(
        &mut self,
        key: usize,
        topics: TopicList<'_>,
        last_event_id: &str,
        sh: &mut LoopState,
    ) {
        let about = Kind::Subscribe.byte();
        let Some(names) = distinct_wanted(topics) else {
            return self.queue_frame_error(
                key,
                ErrorCode::BAD_TOPIC,
                about,
                b"",
                "missing or invalid topic",
                sh,
            );
        };
        if let Err((code, why)) = self.authorize_frame(&names, Need::Subscribe, sh) {
            return self.queue_frame_error(key, code, about, b"", why, sh);
        }
        let added: Vec<String> = names
            .iter()
            .filter(|name| {
                sh.hub.channel_id(name).is_none_or(|id| {
                    !self
                        .out
                        .subs
                        .iter()
                        .any(|s| s.channel() == id && s.is_active())
                })
            })
            .map(|name| (*name).to_string())
            .collect();
        if sh.limits.max_subscriptions() > 0 {
            let active = self.out.subs.iter().filter(|s| s.is_active()).count();
            if self.over_subscription_cap(active + added.len(), sh) {
                return self.refuse_subscribe_frame(key, sh);
            }
        }
        if self.out.subs.len() + added.len() > MAX_TOPICS_PER_REQUEST {
            return self.queue_frame_error(
                key,
                ErrorCode::BAD_TOPIC,
                about,
                b"",
                "too many topics on one connection",
                sh,
            );
        }
        let before = self.out.subs.len();
        for name in &added {
            match sh.hub.subscribe(name, key) {
                Ok(sub) => self.out.subs.push(sub),
                Err(_) => {
                    // Nothing of a refused SUBSCRIBE stays.
                    for sub in self.out.subs.drain(before..) {
                        sh.hub.unsubscribe(sub);
                    }
                    let msg = "too many topics on this server";
                    return self.queue_frame_error(key, ErrorCode::OVERLOADED, about, b"", msg, sh);
                }
            }
        }
        if !last_event_id.is_empty() && !added.is_empty() {
            self.replay_added(key, &added, before, last_event_id, sh);
        }
    }

    /// A SUBSCRIBE with a resume id on a live connection: the new topics' retained events after
    /// it are queued by reference (the connection's other cursors are ahead of them), except
    /// those the connection gets through a subscription it already had. With a backplane, what
    /// this node no longer holds is asked of Redis first, as for a stream opened with that id.
    fn replay_added(
        &mut self,
        key: usize,
        added: &[String],
        before: usize,
        last_event_id: &str,
        sh: &mut LoopState,
    ) {
        let resume = if last_event_id.len() > crate::http::request::MAX_LAST_EVENT_ID {
            Resume::Foreign
        } else {
            sh.hub.parse_resume(last_event_id)
        };
        let (after, foreign) = match resume {
            Resume::After(seq) => (seq, false),
            Resume::Foreign => (0, true),
        };
        let names: Vec<&str> = added.iter().map(String::as_str).collect();
        let (events, expired) = sh.hub.replay(&names, after);
        let barrier = sh.hub.last_seq();
        // Older than this node's cache: the events in between come from Redis, then the
        // retained ones after them.
        let upto = sh.hub.cache_floor(&self.out.subs[before..]);
        let backfill = expired && !foreign && sh.backplane.is_some() && upto > after;
        let (events, reset_id) = if backfill {
            (sh.hub.replay(&names, upto).0, sh.hub.id_for(upto))
        } else {
            let reset_id = sh.hub.id_for(events.first().map_or(barrier, |e| e.seq - 1));
            (events, reset_id)
        };
        let reason = if foreign {
            Some(ResetReason::Unknown)
        } else if expired && !backfill {
            Some(ResetReason::Expired)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.queue_reset_notice(key, reason, &reset_id, &names, barrier, sh);
        }
        let old = &self.out.subs[..before];
        let fresh: Vec<_> = events
            .into_iter()
            .filter(|e| !delivered_by(old, e.seq, &e.topics, &sh.hub))
            .collect();
        sh.metrics.replayed += fresh.len() as u64;
        sh.metrics.deliveries += fresh.len() as u64;
        if backfill {
            let wait = BackfillWait {
                reset_id,
                topics: added.to_vec(),
                barrier,
                first_new: before,
                then: fresh,
                replay: Vec::new(),
            };
            self.request_backfill(key, after, upto, wait, sh);
        } else {
            for event in &fresh {
                self.out.private.push_event(event, Wire::Frame, barrier);
            }
        }
        self.mark_dirty(key, sh);
    }

    pub(super) fn queue_frame_error(
        &mut self,
        key: usize,
        code: ErrorCode,
        about: u8,
        correlation: &[u8],
        message: &str,
        sh: &mut LoopState,
    ) {
        let mut bytes = Vec::with_capacity(16 + correlation.len() + message.len());
        let _ = frame::encode_error_frame(&mut bytes, code, about, correlation, message);
        self.queue_bytes(key, &bytes, sh);
    }

    fn queue_bytes(&mut self, key: usize, bytes: &[u8], sh: &mut LoopState) {
        let barrier = sh.hub.last_seq();
        self.push_private(key, bytes, barrier, sh);
        self.last_queued = sh.now;
    }
}

/// The distinct topics of a list, if all are valid and there are at most
/// [`MAX_TOPICS_PER_REQUEST`].
fn distinct_topics(topics: TopicList<'_>) -> Option<Vec<&str>> {
    let mut names: Vec<&str> = Vec::with_capacity(topics.len());
    for name in topics.iter() {
        if topic_is_new(&names, name, MAX_TOPICS_PER_REQUEST).ok()? {
            names.push(name);
        }
    }
    (!names.is_empty()).then_some(names)
}

/// The correlation id of a PUBLISH payload whose later fields failed to parse, if the id itself
/// is intact (kind byte, then a u8 length and that many bytes).
fn publish_correlation(payload: &[u8]) -> &[u8] {
    let Some(&len) = payload.get(1) else {
        return b"";
    };
    payload.get(2..2 + usize::from(len)).unwrap_or(b"")
}
