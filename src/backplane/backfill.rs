//! Backfills: a stream resuming from before this node's cache asks Redis (the FETCH script on the
//! writer link) for the events it missed, per topic stream, or from the shared log filtered by
//! pattern; the answer, or `None` when Redis no longer holds them all, goes to
//! [`Output::backfills`](super::Output::backfills). The server API's history call asks the same
//! way ([`Backplane::history_query`]) and polls for its answer.

use std::collections::HashMap;
use std::time::Instant;

use redis_protocol::resp2::types::OwnedFrame;

use super::link::{Expect, Phase};
use super::read::parse_entry;
use super::redis::integer;
use super::{Backfill, Backplane, FetchRequest, RemoteEvent, FETCH_LOG_MAX};
use crate::http::request::valid_topic;

/// What Redis answered a history query: the events, `Ok(None)` when it no longer holds them
/// all, `Err` when it did not answer (the writer is down or was lost).
pub type HistoryAnswer = Result<Option<Vec<RemoteEvent>>, ()>;

/// The server API's history queries in flight and their answers not yet taken (each taken once,
/// or dropped by its caller at its deadline: at most one per waiting API call).
#[derive(Default)]
pub struct HistoryQueries {
    next_id: u64,
    waiting: HashMap<u64, Option<HistoryAnswer>>,
}

impl Backplane {
    /// Asks Redis for the events of `names` in `(after, upto]` for `GET /api/v1/history` (the
    /// node's cache holds everything after `upto`); poll [`Backplane::history_answer`] with the
    /// id returned.
    pub fn history_query(&mut self, names: &[String], after: u64, upto: u64, now: Instant) -> u64 {
        let q = &mut self.history;
        q.next_id += 1;
        let id = q.next_id;
        q.waiting.insert(id, None);
        let mut req = FetchRequest::new(usize::MAX, u64::MAX, names, after, upto);
        req.query = Some(id);
        self.fetch(req, now);
        id
    }

    /// The answer to history query `id` once it came (given once; `Some(Err)` for an unknown
    /// id).
    pub fn history_answer(&mut self, id: u64) -> Option<HistoryAnswer> {
        match self.history.waiting.get(&id) {
            Some(None) => None,
            _ => Some(
                self.history
                    .waiting
                    .remove(&id)
                    .flatten()
                    .unwrap_or(Err(())),
            ),
        }
    }

    /// Drops query `id` (its caller gave up); a late answer is then ignored.
    pub fn history_forget(&mut self, id: u64) {
        self.history.waiting.remove(&id);
    }

    /// A history answer came that its caller has not taken yet (the loop must not sleep).
    pub(super) fn history_answered(&self) -> bool {
        self.history.waiting.values().any(Option::is_some)
    }

    /// Hands a fetch's answer to its stream, or to the history query that asked.
    fn answer_fetch(&mut self, req: FetchRequest, answer: HistoryAnswer) {
        match req.query {
            Some(id) => {
                if let Some(slot) = self.history.waiting.get_mut(&id) {
                    *slot = Some(answer);
                }
            }
            None => self.out.backfills.push(Backfill {
                key: req.key,
                conn: req.conn,
                events: answer.ok().flatten(),
            }),
        }
    }

    /// Asks Redis for the events a resumed stream missed (answered in [`Backplane::backfills`]).
    pub fn fetch(&mut self, req: FetchRequest, now: Instant) {
        let Phase::Up(link) = &mut self.writer else {
            return self.backfill_failed(req);
        };
        if link.epoch.is_none() || link.fetch_sha.is_empty() {
            return self.backfill_failed(req);
        }
        let mut keys: Vec<String> = req
            .topics
            .iter()
            .map(|t| format!("{}{t}", self.keys.topic))
            .collect();
        let patterns = !req.prefixes.is_empty();
        if patterns {
            keys.push(self.keys.log.clone());
        }
        let nkeys = keys.len().to_string();
        // Entries at or below `since` belong to an earlier epoch.
        let after = req.after.max(self.since).to_string();
        let upto = req.upto.to_string();
        let count = if patterns {
            FETCH_LOG_MAX
        } else {
            self.cfg.history + 1
        }
        .to_string();
        let sha = link.fetch_sha.clone();
        let mut args: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), nkeys.as_bytes()];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        args.extend_from_slice(&[
            after.as_bytes(),
            upto.as_bytes(),
            count.as_bytes(),
            if patterns { b"1" } else { b"0" },
        ]);
        link.conn.command(&args);
        link.expect.push_back(Expect::Fetch);
        link.deadlines.push_back(now + self.cfg.timeout);
        self.fetches.push_back(req);
    }

    pub(super) fn backfill_failed(&mut self, req: FetchRequest) {
        self.answer_fetch(req, Err(()));
    }

    pub(super) fn on_fetch(&mut self, frame: &OwnedFrame) -> Result<(), String> {
        let Some(req) = self.fetches.pop_front() else {
            return Err("backfill reply without a backfill".into());
        };
        let OwnedFrame::Array(per_key) = frame else {
            self.backfill_failed(req);
            return Err("FETCH: unexpected reply".into());
        };
        let mut events: Vec<RemoteEvent> = Vec::new();
        let mut complete = true;
        for (i, part) in per_key.iter().enumerate() {
            let OwnedFrame::Array(pair) = part else {
                complete = false;
                continue;
            };
            complete &= pair.first().and_then(integer) == Some(1);
            let Some(OwnedFrame::Array(entries)) = pair.get(1) else {
                continue;
            };
            let from_log = i >= req.topics.len();
            for entry in entries {
                let Some(ev) = parse_entry(entry) else {
                    continue;
                };
                // A name outside the topic alphabet is the nodes' own message (a revocation),
                // which even `*` does not match.
                if from_log
                    && !ev.topics.iter().any(|t| {
                        valid_topic(t) && req.prefixes.iter().any(|p| t.starts_with(p.as_str()))
                    })
                {
                    continue;
                }
                events.push(ev);
            }
        }
        events.sort_unstable_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        self.answer_fetch(req, Ok(complete.then_some(events)));
        Ok(())
    }
}
