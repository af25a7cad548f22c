//! Backfills: a stream resuming from before this node's cache asks Redis (the FETCH script on the
//! writer link) for the events it missed, per topic stream, or from the shared log filtered by
//! pattern; the answer, or `None` when Redis no longer holds them all, goes to
//! [`Output::backfills`](super::Output::backfills).

use std::time::Instant;

use redis_protocol::resp2::types::OwnedFrame;

use super::link::{Expect, Phase};
use super::read::parse_entry;
use super::redis::integer;
use super::{Backfill, Backplane, FetchRequest, RemoteEvent, FETCH_LOG_MAX};

impl Backplane {
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
        self.out.backfills.push(Backfill {
            key: req.key,
            conn: req.conn,
            events: None,
        });
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
                if from_log
                    && !ev
                        .topics
                        .iter()
                        .any(|t| req.prefixes.iter().any(|p| t.starts_with(p.as_str())))
                {
                    continue;
                }
                events.push(ev);
            }
        }
        events.sort_unstable_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        self.out.backfills.push(Backfill {
            key: req.key,
            conn: req.conn,
            events: complete.then_some(events),
        });
        Ok(())
    }
}
