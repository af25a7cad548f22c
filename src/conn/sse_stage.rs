//! The SSE stage of a connection: starting a stream (auth, subscriptions, resume and replay),
//! queueing live events with the slow-consumer check, and heartbeats.

use super::http_stage::{common, push_topic};
use super::state::Life;
use super::{Closing, Connection, Flow, Stage};
use crate::buf::SharedEvent;
use crate::event_loop::LoopState;
use crate::http::request::query_pairs;
use crate::http::response;
use crate::http::{self, HttpError, RequestHead};
use crate::hub::Resume;
use crate::metrics::{CloseCause, ConnKind};
use crate::sse;
use crate::timer::TimerKind;

impl Connection {
    // ----- SSE ---------------------------------------------------------------------------------

    pub(super) fn start_sse(&mut self, key: usize, head: &RequestHead, sh: &mut LoopState) {
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

    pub(super) fn on_heartbeat(&mut self, key: usize, sh: &mut LoopState) {
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
