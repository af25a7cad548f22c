//! The backplane's turn in an iteration: other threads' publishes become appends, the links
//! reconnect and read, and what the backplane hands out ([`Backplane::out`]) is recorded and
//! delivered: events through the hub as a local publish is, notices in their place, answers to
//! their publishers, backfills to their streams. Before a large fan-out, a short wait for Redis's
//! answers.
//!
//! [`Backplane::out`]: crate::backplane::Backplane::out

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Server;
use crate::backplane::{self, Completion, Notice, Origin};
use crate::metrics::ResetReason;

/// With a backplane, a fan-out to at least this many readers first waits (at most
/// [`APPEND_WAIT`]) for Redis to answer the appends already sent, so that their events go out in
/// this round rather than one whole round later. Below it a round is short and waiting buys
/// nothing.
const APPEND_WAIT_READERS: usize = 1024;
/// Longest such wait: a local Redis answers in ~0.1 ms, a batch of 64 events in ~1 ms.
const APPEND_WAIT: Duration = Duration::from_millis(2);
/// After a wait that came back empty (Redis slow or gone), no waiting for this long.
const APPEND_WAIT_BACKOFF: Duration = Duration::from_millis(500);

impl Server {
    /// Before a large fan-out, waits briefly for Redis to answer the appends sent so far. True
    /// when answers came (the caller pumps the backplane again to record their events).
    ///
    /// Under a trickle of publishes to many subscribers, a round of writes takes tens of
    /// milliseconds; without the wait, the events this iteration sent to Redis would come back
    /// just after the round started and wait for the whole next one, so each event would live
    /// one round longer than without a backplane and each write would carry fewer events.
    pub(super) fn await_appends(&mut self) -> bool {
        let Some(bp) = self.sh.backplane.as_mut() else {
            return false;
        };
        if !bp.appends_unanswered()
            || self.append_wait_off_until.is_some_and(|t| self.sh.now < t)
            || self.sh.hub.touched_readers() < APPEND_WAIT_READERS
        {
            return false;
        }
        let answered = bp.await_writer(self.poll.registry(), APPEND_WAIT, &mut self.sh.scratch);
        if !answered {
            self.append_wait_off_until = Some(self.sh.now + APPEND_WAIT_BACKOFF);
        }
        answered
    }

    /// The backplane's turn: other threads' publishes become appends; links reconnect and read;
    /// events read are queued for recording (notices in their place); answers go to the
    /// publishers.
    pub(super) fn pump_backplane(&mut self) {
        let Some(bp) = self.sh.backplane.as_mut() else {
            return;
        };
        for q in self.seq.take_queued() {
            let Some(reply) = q.reply else { continue };
            let request = backplane::AppendRequest {
                origin: Origin::Handle(reply),
                topics: q.topics,
                event_type: q.event_type,
                data: q.data,
                idempotency_key: q.idempotency_key,
            };
            bp.append(request);
        }
        let unrecorded = self.sh.hub.backlog_len();
        let floor = self.sh.hub.last_seq();
        bp.tick(self.poll.registry(), self.sh.now, unrecorded, floor);
        let events = std::mem::take(&mut bp.out.events);
        let notices = std::mem::take(&mut bp.out.notices);
        let completions = std::mem::take(&mut bp.out.completions);
        let mut notices = notices.into_iter().peekable();
        let wall_ms = if events.is_empty() {
            0
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        for (i, ev) in events.into_iter().enumerate() {
            while let Some((_, notice)) = notices.next_if(|(at, _)| *at <= i) {
                self.on_backplane_notice(notice, ev.seq);
            }
            if ev
                .topics
                .first()
                .is_some_and(|t| &**t == crate::api::CONTROL_TOPIC)
            {
                // Not an event: another node's revocation (`admin.rs`).
                self.on_control(&ev.data, ev.appended_ms);
                continue;
            }
            if ev.appended_ms > 0 {
                let lag = wall_ms.saturating_sub(ev.appended_ms) as f64 / 1000.0;
                self.sh.metrics.observe_read_lag(lag);
            }
            self.sh
                .hub
                .record_remote(ev.seq, ev.topics, ev.event_type, ev.data);
        }
        for (_, notice) in notices {
            let next = self.sh.hub.last_seq() + 1;
            self.on_backplane_notice(notice, next);
        }
        for c in completions {
            self.complete(c);
        }
        let backfills = self
            .sh
            .backplane
            .as_mut()
            .map(|bp| std::mem::take(&mut bp.out.backfills))
            .unwrap_or_default();
        for b in backfills {
            if let Some(cn) = self.conns.get_mut(b.key).filter(|cn| cn.id() == b.conn) {
                cn.backfill_done(b.key, b.events, &mut self.sh);
            }
        }
    }

    /// A notice from the backplane, placed before the event with seq `next`.
    pub(super) fn on_backplane_notice(&mut self, notice: Notice, next: u64) {
        match notice {
            Notice::Epoch {
                epoch, lost: false, ..
            } => self.sh.hub.set_epoch(&epoch),
            Notice::Epoch {
                epoch,
                lost: true,
                since,
            } => {
                // Everything of the old dataset goes out first; then each stream hears that
                // the ids before this point name nothing, and history forgets them.
                self.sh.hub.record_backlog(usize::MAX);
                self.fan_out(false);
                self.sh.hub.forget_history();
                self.sh.hub.set_epoch(&epoch);
                self.sh.hub.raise_floor(since, &[]);
                let reset_id = self.sh.hub.id_for(since);
                self.reset_streams(ResetReason::BackplaneLost, &reset_id);
            }
            Notice::Floor {
                through,
                mut topics,
            } => {
                // Warm-up's events are in the backlog: their channels exist once recorded. The
                // revocation messages are no topic's history.
                topics.retain(|(t, _)| &**t != crate::api::CONTROL_TOPIC);
                self.sh.hub.record_backlog(usize::MAX);
                self.sh.hub.raise_floor(through, &topics);
            }
            Notice::Gap => {
                self.sh.hub.record_backlog(usize::MAX);
                self.fan_out(false);
                let reset_id = self.sh.hub.id_for(next.saturating_sub(1));
                self.reset_streams(ResetReason::Expired, &reset_id);
            }
        }
    }

    pub(super) fn reset_streams(&mut self, reason: ResetReason, reset_id: &str) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.backplane_reset(key, reason, reset_id, &mut self.sh);
            }
        }
    }

    /// Delivers the backplane's answer to a publish.
    pub(super) fn complete(&mut self, c: Completion) {
        match c.origin {
            Origin::Handle(slot) => slot.set(c.outcome.map(|(id, _)| id)),
            Origin::Http { key, conn, n } => {
                if let Some(cn) = self.conns.get_mut(key).filter(|cn| cn.id() == conn) {
                    cn.http_publish_done(key, n, c.outcome, &mut self.sh);
                }
            }
            Origin::Frame {
                key,
                conn,
                correlation,
            } => {
                if let Some(cn) = self.conns.get_mut(key).filter(|cn| cn.id() == conn) {
                    cn.frame_publish_done(key, &correlation, c.outcome, &mut self.sh);
                }
            }
        }
    }
}
