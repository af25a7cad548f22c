//! The server API calls that walk every connection (`conn/api.rs` queues them): a page of the
//! connections listing, closing one connection by id, and revoking streams by subject or topic.
//! Each iteration visits at most [`WALK_SLICE`] slab slots over all calls, so no call holds the
//! loop for a time proportional to all connections: a revocation that is not done goes on at the
//! next iteration, and a listing page ends early with the cursor to go on from. Presence is
//! served in `presence.rs`. Also the delivery of join/leave notices to the streams that watch a
//! topic's presence.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Server;
use crate::api::{self, ApiCall};
use crate::conn::api::{answer_here, apply_ban, history_step, propagate};
use crate::conn::state::Life;
use crate::http::{response, HttpError, Method};
use crate::loop_state::ApiJob;
use crate::metrics::DisconnectCause;

/// Slab slots visited per iteration by the server API.
pub const WALK_SLICE: usize = 4096;

/// A revocation read from the backplane closes streams only if it was made this recently (a node
/// that warms its cache at start meets older ones: their streams were closed long ago).
const REMOTE_REVOKE_FRESH: Duration = Duration::from_secs(30);

impl Server {
    /// Serves one server API call for the host (the C API's `sseloop_api`), with no
    /// authorization: the host is trusted. `target` is the path with its query; `body` is a
    /// disconnect's JSON. Calls that walk the connections run to the end at once (the host
    /// chose to spend that time on its loop thread). Returns the status and the JSON body.
    pub fn api_request(&mut self, method: &str, target: &str, body: &[u8]) -> (u16, String) {
        let error = |e: &HttpError| (e.status, response::error_body(e));
        let Some(method) = Method::parse(method) else {
            return error(&HttpError::UNKNOWN_METHOD);
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let call = match api::parse(method, path, query) {
            Ok(ApiCall::Disconnect(_)) => match api::parse_revoke(body) {
                Ok(revoke) => {
                    apply_ban(&revoke, &mut self.sh);
                    propagate(&revoke, &mut self.sh);
                    ApiCall::Disconnect(revoke)
                }
                Err(e) => return error(&e),
            },
            Ok(call) => call,
            Err(e) => return error(&e),
        };
        let op = call.op();
        if let Some(body) = answer_here(&call, &mut self.sh) {
            self.sh.metrics.count_admin(op, 200);
            return (200, body);
        }
        let mut job = ApiJob::for_host(call, true);
        loop {
            let mut budget = usize::MAX;
            if let Some((status, body)) = self.advance(&mut job, &mut budget) {
                self.sh.metrics.count_admin(op, status);
                return (status, body);
            }
            if job.waiting {
                self.await_redis(&job);
            }
        }
    }

    /// Advances the queued API calls within this iteration's slice, answering those done.
    pub(super) fn serve_api_jobs(&mut self) {
        if !self.sh.api_waits.is_empty() {
            self.serve_api_waits();
        }
        let mut budget = WALK_SLICE;
        while budget > 0 {
            let Some(mut job) = self.sh.api_jobs.pop_front() else {
                return;
            };
            match self.advance(&mut job, &mut budget) {
                Some((status, body)) => self.answer(&job, status, &body),
                // Waiting for Redis: aside, so that the loop neither spins nor holds the others.
                None if job.waiting => self.sh.api_waits.push(job),
                None => {
                    self.sh.api_jobs.push_front(job);
                    return;
                }
            }
        }
    }

    /// Serves the calls waiting for Redis's answer (presence and history with a backplane):
    /// those answered (or past their deadline) are done, the others wait on.
    pub(super) fn serve_api_waits(&mut self) {
        let mut budget = WALK_SLICE;
        for mut job in std::mem::take(&mut self.sh.api_waits) {
            match self.advance(&mut job, &mut budget) {
                Some((status, body)) => self.answer(&job, status, &body),
                None => self.sh.api_waits.push(job),
            }
        }
    }

    /// Another node's revocation, read from the backplane's shared log (`api::CONTROL_TOPIC`):
    /// set its ban for what is left of it, and close the matching streams here if it is recent
    /// (an old one, met by a node warming its cache at start, only carries its ban).
    pub(super) fn on_control(&mut self, data: &str, appended_ms: u64) {
        let Some((node, revoke)) = api::decode_control(data) else {
            log::warn!(
                "ignored a revocation message from the backplane that this version cannot read"
            );
            return;
        };
        if *node == *self.sh.node {
            return; // applied when it was made
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let age = Duration::from_millis(now_ms.saturating_sub(appended_ms));
        if let (Some(sub), true) = (&revoke.filter.sub, revoke.ban_secs > 0) {
            let left = Duration::from_secs(revoke.ban_secs).saturating_sub(age);
            if !left.is_zero() {
                self.sh.bans.ban(sub, left.as_secs().max(1), self.sh.now);
            }
        }
        if age > REMOTE_REVOKE_FRESH {
            return;
        }
        log::info!("api: revocation from node {node}: {}", revoke.reason);
        let job = ApiJob::for_host(ApiCall::Disconnect(revoke), false);
        self.sh.api_jobs.push_back(job);
    }

    /// Hands the joins and leaves noted since the last call to the streams watching their
    /// topics (`presence=1`).
    pub(super) fn deliver_presence(&mut self) {
        let notes = std::mem::take(&mut self.sh.presence_notes);
        for note in &notes {
            let Some(watchers) = self.sh.presence_watch.get(&*note.topic).cloned() else {
                continue;
            };
            for key in watchers {
                if let Some(conn) = self.conns.get_mut(key) {
                    if conn.id() != note.conn {
                        conn.presence_notice(key, note, &mut self.sh);
                    }
                }
            }
        }
    }

    /// Walks part of the slab for `job`; its answer once it is done.
    fn advance(&mut self, job: &mut ApiJob, budget: &mut usize) -> Option<(u16, String)> {
        let cap = self.conns.capacity();
        let mut k = job.next_key.min(cap);
        match &job.call {
            ApiCall::Connections { filter, page } => {
                let mut list = Vec::new();
                while k < cap && list.len() < page.limit && *budget > 0 {
                    if let Some(info) = self.conns.get(k).and_then(|c| c.api_info(filter, &self.sh))
                    {
                        list.push(info);
                    }
                    k += 1;
                    *budget -= 1;
                }
                let next = (k < cap).then_some(k as u64);
                Some((200, api::render_connections(&list, next)))
            }
            ApiCall::CloseConnection { id, reason } => {
                let (id, reason) = (*id, reason.clone());
                while k < cap && *budget > 0 {
                    *budget -= 1;
                    let key = k;
                    k += 1;
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if conn.id() != id {
                        continue;
                    }
                    if matches!(conn.life(), Life::Graceful | Life::Closed) {
                        // Already saying goodbye (a shutdown, an earlier close).
                        return Some(not_found());
                    }
                    let flow = conn.api_disconnect(key, &reason, &mut self.sh);
                    self.settle(key, flow);
                    self.sh.metrics.disconnects[DisconnectCause::Admin as usize] += 1;
                    log::info!("api: connection {id} closed ({reason})");
                    return Some((200, api::render_closed(1, 0, false)));
                }
                job.next_key = k;
                (k >= cap).then(not_found)
            }
            ApiCall::Disconnect(revoke) => {
                let (filter, reason) = (revoke.filter.clone(), revoke.reason.clone());
                let ban_secs = revoke.ban_secs;
                let cause = if ban_secs > 0 {
                    DisconnectCause::Ban
                } else {
                    DisconnectCause::Revoke
                };
                while k < cap && *budget > 0 {
                    *budget -= 1;
                    let key = k;
                    k += 1;
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if !conn.api_matches(&filter, &self.sh) {
                        continue;
                    }
                    let flow = conn.api_disconnect(key, &reason, &mut self.sh);
                    self.settle(key, flow);
                    job.closed += 1;
                    self.sh.metrics.disconnects[cause as usize] += 1;
                }
                job.next_key = k;
                if k < cap {
                    return None;
                }
                log::info!(
                    "api: revocation closed {} streams (sub {:?}, topic {:?}, ban {} s): {}",
                    job.closed,
                    filter.sub,
                    filter.topic,
                    ban_secs,
                    reason
                );
                let cluster = self.sh.backplane.is_some();
                Some((200, api::render_closed(job.closed, ban_secs, cluster)))
            }
            ApiCall::Presence { .. } => self.advance_presence(job, budget),
            // Here only when Redis holds part of it.
            ApiCall::History { .. } => history_step(job, &mut self.sh),
            // Answered by the connection itself (`conn/api.rs`).
            ApiCall::Bans | ApiCall::Topics { .. } => {
                Some((500, "{\"error\":\"internal\",\"status\":500}\n".to_owned()))
            }
        }
    }

    pub(super) fn answer(&mut self, job: &ApiJob, status: u16, body: &str) {
        self.sh.metrics.count_admin(job.call.op(), status);
        if let Some(conn) = self.conns.get_mut(job.key) {
            if conn.id() == job.conn {
                conn.api_done(job.key, job.n, status, body, &mut self.sh);
            }
        }
    }
}

/// The answer for an id that names no open connection.
fn not_found() -> (u16, String) {
    const NO_SUCH: HttpError = HttpError {
        reason: "no such connection",
        ..HttpError::NOT_FOUND
    };
    (NO_SUCH.status, response::error_body(&NO_SUCH))
}
