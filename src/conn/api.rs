//! A connection's side of the server API (`/api/v1/`, docs/API.md): who may call it, the
//! answers one connection and the hub can give (bans, topics, history), and handing the calls
//! that walk every connection to the loop (`event_loop/admin.rs`). Also what an API
//! disconnect does to a stream: its notice and a graceful close.

use std::sync::Arc;

use super::http_stage::{Pending, JSON};
use super::{Closing, Connection, Flow, Stage};
use crate::api::{self, ApiCall, ConnInfo, HistoryEvent, Kind};
use crate::auth::{self, AuthFailure};
use crate::backplane::{AppendRequest, Origin, ReplySlot};
use crate::frame::{self, ErrorCode};
use crate::http::{self, BodyKind, RequestHead};
use crate::hub::Resume;
use crate::json::push_json_str;
use crate::loop_state::{ApiJob, LoopState};

impl Connection {
    /// Routes an `/api/v1/` request: parse, authorize, then answer or queue it for the loop.
    pub(super) fn serve_api(
        &mut self,
        key: usize,
        head: Box<RequestHead>,
        keep_alive: bool,
        sh: &mut LoopState,
    ) {
        let has_body = head.body != BodyKind::None;
        let reuse = keep_alive && !has_body;
        let call = match api::parse(head.method, &head.path, &head.query) {
            Ok(call) => call,
            Err(err) => {
                sh.metrics.count_admin("invalid", err.status);
                return self.respond_error(key, &err, reuse, &[], sh);
            }
        };
        let checked = match &call {
            ApiCall::History { topic, .. } | ApiCall::Presence { topic, .. } => {
                read_check(&head, topic, sh)
            }
            _ => admin_check(&head, sh),
        };
        if let Err(failure) = checked {
            let status = match failure {
                AuthFailure::ForbiddenTopic | AuthFailure::NotAdmin | AuthFailure::Banned => 403,
                _ => 401,
            };
            sh.metrics.count_admin(call.op(), status);
            return self.refuse_auth(key, &head.path, failure, reuse, sh);
        }
        if let ApiCall::Disconnect(_) = call {
            if !has_body {
                sh.metrics.count_admin("disconnect", 400);
                return self.respond_error(key, &api::BAD_BODY, keep_alive, &[], sh);
            }
            return self.read_body(key, head, None, api::MAX_BODY, sh);
        }
        let show_subjects = match &call {
            ApiCall::Presence { topic, .. } => presence_check(&head, topic, sh),
            _ => false,
        };
        match answer_here(&call, sh) {
            Some(body) => self.respond_api(key, call.op(), &body, reuse, sh),
            None => self.queue_api_job(key, call, reuse, show_subjects, sh),
        }
    }

    /// The body of `POST /api/v1/disconnect` is in: a revocation, with its ban set at once so
    /// that no new stream of the subject opens while the loop walks the old ones.
    pub(super) fn finish_api_body(
        &mut self,
        key: usize,
        req: super::http_stage::BodyInProgress,
        sh: &mut LoopState,
    ) {
        let keep_alive = req.head.keep_alive;
        let revoke = match api::parse_revoke(&req.data) {
            Ok(revoke) => revoke,
            Err(err) => {
                sh.metrics.count_admin("disconnect", err.status);
                return self.respond_error(key, &err, keep_alive, &[], sh);
            }
        };
        apply_ban(&revoke, sh);
        propagate(&revoke, sh);
        self.queue_api_job(key, ApiCall::Disconnect(revoke), keep_alive, false, sh);
    }

    fn queue_api_job(
        &mut self,
        key: usize,
        call: ApiCall,
        keep_alive: bool,
        show_subjects: bool,
        sh: &mut LoopState,
    ) {
        let Stage::Http(http) = &mut self.stage else {
            return;
        };
        http.next_publish += 1;
        let n = http.next_publish;
        http.pending.push_back(Pending::Api { n, keep_alive });
        sh.api_jobs.push_back(ApiJob {
            key,
            conn: self.id,
            n,
            keep_alive,
            ..ApiJob::for_host(call, show_subjects)
        });
    }

    fn respond_api(
        &mut self,
        key: usize,
        op: &'static str,
        body: &str,
        reuse: bool,
        sh: &mut LoopState,
    ) {
        sh.metrics.count_admin(op, 200);
        let reply = super::http_stage::ok_reply(JSON, body.as_bytes(), reuse, false, sh);
        self.queue_response(key, reply, sh);
    }

    /// This connection as the connections listing shows it, if `filter` selects it (checked
    /// first: the peer address is a system call).
    pub fn api_info(&self, filter: &api::Filter, sh: &LoopState) -> Option<ConnInfo> {
        if !self.selected_by(filter, sh) {
            return None;
        }
        let kind = match self.stage {
            Stage::Http(_) => Kind::Http,
            Stage::Sse => Kind::Sse,
            Stage::Frames(_) => Kind::Frames,
        };
        let topics = self
            .out
            .subs
            .iter()
            .filter(|s| s.is_active())
            .filter_map(|s| sh.hub.channel(s.channel()).map(|c| c.name.to_string()))
            .collect();
        Some(ConnInfo {
            id: self.id,
            peer: self
                .sock
                .peer_addr()
                .map_or_else(|_| "-".to_owned(), |a| a.to_string()),
            kind,
            topics,
            sub: self.subject().map(str::to_owned),
            age_ms: sh.now.saturating_duration_since(self.opened_at).as_millis(),
            bytes_written: self.written,
            bytes_queued: self.out.backlog(&sh.hub),
            events_behind: self.out.backlog_events(&sh.hub),
        })
    }

    /// Whether `filter`'s subject and topic (or pattern, by name) name this connection.
    fn selected_by(&self, filter: &api::Filter, sh: &LoopState) -> bool {
        let sub_ok = filter
            .sub
            .as_deref()
            .is_none_or(|want| self.subject() == Some(want));
        let topic_ok = filter.topic.as_deref().is_none_or(|want| {
            self.out.subs.iter().any(|s| {
                s.is_active()
                    && sh
                        .hub
                        .channel(s.channel())
                        .is_some_and(|c| &*c.name == want)
            })
        });
        sub_ok && topic_ok
    }

    /// The subject of the token this stream was opened with (JWT only).
    pub fn api_subject(&self) -> Option<&str> {
        self.subject()
    }

    /// Whether a revocation's filter selects this stream (HTTP connections carry no
    /// subscription or subject, so only streams match).
    pub fn api_matches(&self, filter: &api::Filter, sh: &LoopState) -> bool {
        if matches!(self.stage, Stage::Http(_)) || self.life != super::state::Life::Active {
            return false;
        }
        self.selected_by(filter, sh)
    }

    /// Ends the connection for the server API: a stream gets a notice (SSE `sseloop-disconnect`
    /// event, frame GOAWAY `DISCONNECTED`) after what is already recorded for it, then a
    /// graceful close; an HTTP connection closes at once.
    pub fn api_disconnect(&mut self, key: usize, reason: &str, sh: &mut LoopState) -> Flow {
        let mut bytes = Vec::with_capacity(64 + reason.len());
        match self.stage {
            Stage::Sse => {
                let mut data = String::from("{\"reason\":");
                push_json_str(&mut data, reason);
                data.push('}');
                bytes.extend_from_slice(b"event: sseloop-disconnect\ndata: ");
                bytes.extend_from_slice(data.as_bytes());
                bytes.extend_from_slice(b"\n\n");
            }
            Stage::Frames(_) => {
                let _ = frame::encode_goaway_frame(&mut bytes, ErrorCode::DISCONNECTED, 0, reason);
            }
            Stage::Http(_) => return Flow::Close(Closing::Done),
        }
        self.access_ending("api_disconnect");
        self.freeze_streams(sh);
        self.push_private(key, &bytes, u64::MAX, sh);
        self.drain_gracefully(key, sh)
    }
}

/// The answer of a call that needs no walk of the connections (bans, topics, history); `None`
/// for the others, which the loop serves.
pub fn answer_here(call: &ApiCall, sh: &mut LoopState) -> Option<String> {
    Some(match call {
        ApiCall::Bans => {
            sh.bans.sweep(sh.now);
            api::bans::render_bans(&sh.bans, sh.now)
        }
        ApiCall::Topics { prefix, page } => {
            let (list, next) = sh.hub.topics_page(prefix, page.cursor, page.limit);
            api::render_topics(&list, next)
        }
        ApiCall::History {
            topic,
            after,
            limit,
        } => match history_plan(topic, after.as_deref(), sh) {
            HistoryPlan::Here { after, reset } => history(topic, after, reset, *limit, sh),
            // Older than this node's cache: the loop asks Redis (`history_step`).
            HistoryPlan::Redis { .. } => return None,
        },
        ApiCall::Connections { .. }
        | ApiCall::CloseConnection { .. }
        | ApiCall::Disconnect(_)
        | ApiCall::Presence { .. } => return None,
    })
}

/// A revocation's ban starts before its walk, so that no new stream of the subject opens while
/// the loop closes the old ones.
pub fn apply_ban(revoke: &api::Revoke, sh: &mut LoopState) {
    if let (Some(sub), true) = (&revoke.filter.sub, revoke.ban_secs > 0) {
        sh.bans.ban(sub, revoke.ban_secs, sh.now);
        log::info!(
            "api: subject banned for {} s (reason: {})",
            revoke.ban_secs,
            revoke.reason
        );
    }
}

/// With the backplane, tells the other nodes of a revocation: an event on the reserved
/// `api::CONTROL_TOPIC` in the shared log, which every node reads in order (`on_control`). Its
/// answer is not awaited: the revocation here does not depend on Redis.
pub fn propagate(revoke: &api::Revoke, sh: &mut LoopState) {
    let node = sh.node.to_string();
    let Some(bp) = sh.backplane.as_mut() else {
        return;
    };
    bp.append(AppendRequest {
        origin: Origin::Handle(Arc::new(ReplySlot::default())),
        topics: vec![api::CONTROL_TOPIC.to_owned()],
        event_type: None,
        data: api::encode_control(&node, revoke),
        idempotency_key: None,
    });
}

/// Admin calls: `--admin-token`, or under JWT a token with `"sseloop":{"admin":true}`. With no
/// authorization configured at all the API is open, like `/stats` (and publishing, which
/// `--listen` on a public address refuses without a token).
fn admin_check(head: &RequestHead, sh: &LoopState) -> Result<(), AuthFailure> {
    let presented = head.authorization.as_deref().and_then(http::bearer_token);
    if let Some(expected) = sh.config.admin_token.as_deref() {
        if presented.is_some_and(|p| http::token_matches(p, expected)) {
            return Ok(());
        }
    }
    if sh.auth.enabled() {
        let grants = sh.auth.verify(presented)?;
        return if grants.admin {
            Ok(())
        } else {
            Err(AuthFailure::NotAdmin)
        };
    }
    let configured = sh.config.admin_token.is_some()
        || sh.config.publish_token.is_some()
        || sh.config.subscribe_token.is_some();
    match (configured, presented) {
        (false, _) => Ok(()),
        (true, None) => Err(AuthFailure::Missing),
        (true, Some(_)) => Err(AuthFailure::WrongToken),
    }
}

/// Reading a topic's history: what subscribing to it needs (or admin).
fn read_check(head: &RequestHead, topic: &str, sh: &LoopState) -> Result<(), AuthFailure> {
    if admin_check(head, sh).is_ok() {
        return Ok(());
    }
    let presented = head.authorization.as_deref().and_then(http::bearer_token);
    if sh.auth.enabled() {
        let grants = sh.auth.verify(presented)?;
        return auth::check_subscribe(&grants, &[topic]);
    }
    match (sh.config.subscribe_token.as_deref(), presented) {
        (None, _) => Ok(()),
        (Some(expected), Some(p)) if http::token_matches(p, expected) => Ok(()),
        (Some(_), None) => Err(AuthFailure::Missing),
        (Some(_), Some(_)) => Err(AuthFailure::WrongToken),
    }
}

/// Whether the caller may see the subjects of `topic`'s subscribers: admin, or under JWT a
/// token whose `presence` patterns cover the topic. Without JWT there are no subjects to hide.
fn presence_check(head: &RequestHead, topic: &str, sh: &LoopState) -> bool {
    if admin_check(head, sh).is_ok() {
        return true;
    }
    if !sh.auth.enabled() {
        return true;
    }
    let presented = head.authorization.as_deref().and_then(http::bearer_token);
    sh.auth
        .verify(presented)
        .is_ok_and(|g| crate::auth::pattern::any_matches(&g.presence, topic))
}

/// Where `GET /api/v1/history` finds the events a resume from `after` would replay.
enum HistoryPlan {
    /// In this node's history: those after seq `after`, with the resume's reset.
    Here {
        after: u64,
        reset: Option<&'static str>,
    },
    /// With the backplane, partly older than this node's cache: Redis holds those in
    /// `(after, upto]`, the cache those after `upto`.
    Redis { after: u64, upto: u64 },
}

fn history_plan(topic: &str, after: Option<&str>, sh: &LoopState) -> HistoryPlan {
    let after_seq = match after.map(|a| sh.hub.parse_resume(a)) {
        None => 0,
        Some(Resume::After(seq)) => seq,
        Some(Resume::Foreign) => {
            return HistoryPlan::Here {
                after: 0,
                reset: Some("unknown"),
            }
        }
    };
    let upto = sh.hub.cache_floor_of(&[topic]);
    if after.is_none() || upto <= after_seq {
        // Nothing evicted after the id (without one: every retained event, no reset).
        return HistoryPlan::Here {
            after: after_seq,
            reset: None,
        };
    }
    if sh.backplane.is_some() {
        return HistoryPlan::Redis {
            after: after_seq,
            upto,
        };
    }
    HistoryPlan::Here {
        after: after_seq,
        reset: Some("expired"),
    }
}

/// A history call the loop serves because Redis holds part of it (`event_loop/admin.rs`): asks
/// Redis on the first visit, then waits (`job.waiting`) until the answer or its deadline.
/// Events Redis sends come first, then this node's retained ones after them.
pub fn history_step(job: &mut ApiJob, sh: &mut LoopState) -> Option<(u16, String)> {
    let ApiCall::History {
        topic,
        after,
        limit,
    } = &job.call
    else {
        return Some(api::unavailable());
    };
    let now = sh.now;
    let (id, deadline) = match job.asked {
        Some(asked) => asked,
        None => match (history_plan(topic, after.as_deref(), sh), &mut sh.backplane) {
            (HistoryPlan::Here { after, reset }, _) => {
                return Some((200, history(topic, after, reset, *limit, sh)))
            }
            (HistoryPlan::Redis { after, upto }, Some(bp)) => {
                let names = [topic.clone()];
                let id = bp.history_query(&names, after, upto, now);
                job.range = (after, upto);
                job.asked = Some((id, now + bp.timeout()));
                (id, now + bp.timeout())
            }
            (HistoryPlan::Redis { .. }, None) => return Some(api::unavailable()),
        },
    };
    let Some(bp) = sh.backplane.as_mut() else {
        return Some(api::unavailable());
    };
    let answer = match bp.history_answer(id) {
        None if now < deadline => {
            job.waiting = true;
            return None;
        }
        None => {
            bp.history_forget(id);
            return Some(api::unavailable());
        }
        Some(Err(())) => return Some(api::unavailable()),
        Some(Ok(answer)) => answer,
    };
    job.waiting = false;
    let (after, upto) = job.range;
    let Some(remote) = answer else {
        // Redis no longer holds them all either: what this node retains, as a resume gets it.
        return Some((200, history(topic, after, Some("expired"), *limit, sh)));
    };
    let (cached, expired) = sh.hub.replay(&[topic.as_str()], upto);
    let ids: Vec<String> = remote.iter().map(|e| sh.hub.id_for(e.seq)).collect();
    let from_redis = remote.iter().zip(&ids).map(|(e, id)| HistoryEvent {
        id,
        event: e.event_type.as_deref(),
        data: &e.data,
        topics: &e.topics,
    });
    let shown: Vec<HistoryEvent<'_>> = from_redis
        .chain(cached.iter().map(history_event))
        .take(*limit + 1)
        .collect();
    let more = shown.len() > *limit;
    // The cache may have evicted past `upto` while Redis answered.
    let reset = expired.then_some("expired");
    Some((
        200,
        api::render_history(&shown[..shown.len().min(*limit)], reset, more),
    ))
}

/// `GET /api/v1/history` from this node's history: what a resume from seq `after` would
/// replay, as JSON, with the resume's reset.
fn history(topic: &str, after: u64, reset: Option<&str>, limit: usize, sh: &LoopState) -> String {
    let (events, _) = sh.hub.replay(&[topic], after);
    let more = events.len() > limit;
    let shown: Vec<HistoryEvent<'_>> = events.iter().take(limit).map(history_event).collect();
    api::render_history(&shown, reset, more)
}

fn history_event(e: &crate::buf::SharedEvent) -> HistoryEvent<'_> {
    HistoryEvent {
        id: &e.id,
        event: e.event_type.as_deref(),
        data: &e.data,
        topics: &e.topics,
    }
}
