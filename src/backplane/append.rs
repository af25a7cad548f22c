//! Append batching on the writer link: publishes staged during an iteration go out as APPEND
//! script calls of at most [`MAX_BATCH`] events / [`MAX_BATCH_BYTES`] bytes; each reply answers
//! its publishers in order, and a node's own event is recorded at once when every earlier seq has
//! been read. Refusals (writer down, too many bytes waiting, an error reply) answer "unavailable".

use std::time::Instant;

use redis_protocol::resp2::types::OwnedFrame;

use super::link::{Expect, Phase};
use super::redis::{integer, text};
pub(super) use super::replicas::Replicating;
use super::{
    AppendError, AppendRequest, Backplane, Completion, Origin, RemoteEvent, MAX_BATCH,
    MAX_BATCH_BYTES, TOPIC_TTL_SECS,
};

/// What an append carried, kept until Redis answers: when every earlier seq has been read, the
/// node records its own event from this at once instead of waiting for the reader to bring it
/// back (one Redis round trip less between a publish and its local fan-out).
pub(super) struct Sent {
    pub(super) topics: Vec<String>,
    pub(super) event_type: Option<String>,
    pub(super) data: String,
}

impl Sent {
    /// What it counts against `--publish-queue-bytes` while Redis has not answered for it.
    pub(super) fn cost(&self) -> usize {
        self.data.len() + self.topics.iter().map(|t| t.len() + 1).sum::<usize>() + 64
    }
}

/// An append waiting for the iteration's batch.
pub(super) struct Staged {
    pub(super) origin: Origin,
    pub(super) cost: usize,
    pub(super) sent: Sent,
    pub(super) idempotency_key: Option<String>,
}

impl Backplane {
    /// Queues one append (sent with the iteration's batch by [`Backplane::flush_output`]);
    /// refused at once when the writer is not ready.
    pub fn append(&mut self, req: AppendRequest) {
        let ready = matches!(&self.writer, Phase::Up(link) if link.epoch.is_some());
        if !ready {
            return self.fail(req.origin);
        }
        let sent = Sent {
            topics: req.topics,
            event_type: req.event_type,
            data: req.data,
        };
        let cost = sent.cost();
        let idle = self.inflight.is_empty() && self.staged.is_empty();
        if self.inflight_bytes + cost > self.cfg.max_inflight_bytes && !idle {
            log::debug!(
                "backplane: {} bytes already waiting for Redis",
                self.inflight_bytes
            );
            return self.fail(req.origin);
        }
        self.inflight_bytes += cost;
        self.staged.push(Staged {
            origin: req.origin,
            cost,
            sent,
            idempotency_key: req.idempotency_key,
        });
    }

    /// Sends the staged appends as APPEND calls of at most [`MAX_BATCH`] events each.
    pub(super) fn send_staged(&mut self, now: Instant) {
        if self.staged.is_empty() {
            return;
        }
        let gated = self.cfg.min_replicas > 0;
        let link = match &mut self.writer {
            // With replicated acknowledgements one WAIT is in flight at a time: what is staged
            // meanwhile goes out in one call after it (a WAIT may hold the link for the timeout;
            // appends queued behind it would miss their deadlines).
            Phase::Up(link) if gated && link.waits_for_replicas() => {
                return;
            }
            Phase::Up(link) if link.epoch.is_some() => link,
            // Not reached: `lose` refuses the staged appends when the writer goes down.
            _ => return self.fail_pending(),
        };
        let mut events = 0;
        let epoch = link.epoch.clone().unwrap_or_default();
        let staged = std::mem::take(&mut self.staged);
        let fixed = [
            self.cfg.retention.to_string(),
            self.cfg.idempotency_secs.to_string(),
            self.cfg.history.to_string(),
            TOPIC_TTL_SECS.to_string(),
        ];
        let mut staged = staged.into_iter().peekable();
        while staged.peek().is_some() {
            let mut batch: Vec<Staged> = Vec::new();
            let mut bytes = 0;
            while let Some(s) = staged.next_if(|s| {
                batch.is_empty() || (batch.len() < MAX_BATCH && bytes + s.cost <= MAX_BATCH_BYTES)
            }) {
                bytes += s.cost;
                batch.push(s);
            }
            // Owned arguments, referenced by `args` below: each event's idempotency key and
            // topic stream keys (in KEYS order), and its topic count and topic list.
            let mut keys: Vec<String> = Vec::new();
            let mut shapes: Vec<(String, String)> = Vec::with_capacity(batch.len());
            for s in &batch {
                keys.push(match &s.idempotency_key {
                    Some(k) => format!("{}{k}", self.keys.idem),
                    None => self.keys.idem.clone(),
                });
                let topics = &s.sent.topics;
                keys.extend(topics.iter().map(|t| format!("{}{t}", self.keys.topic)));
                shapes.push((topics.len().to_string(), topics.join(" ")));
            }
            let nkeys = (3 + keys.len()).to_string();
            let n = batch.len().to_string();
            let mut args: Vec<&[u8]> = vec![
                b"EVALSHA",
                link.append_sha.as_bytes(),
                nkeys.as_bytes(),
                self.keys.seq.as_bytes(),
                self.keys.epoch.as_bytes(),
                self.keys.log.as_bytes(),
            ];
            args.extend(keys.iter().map(|k| k.as_bytes()));
            args.push(epoch.as_bytes());
            args.extend(fixed.iter().map(|a| a.as_bytes()));
            args.push(n.as_bytes());
            for (s, (count, topics)) in batch.iter().zip(&shapes) {
                args.extend_from_slice(&[
                    count.as_bytes(),
                    topics.as_bytes(),
                    s.sent.event_type.as_deref().unwrap_or("").as_bytes(),
                    s.sent.data.as_bytes(),
                    if s.idempotency_key.is_some() {
                        b"1"
                    } else {
                        b"0"
                    },
                ]);
            }
            link.conn.command(&args);
            link.expect.push_back(Expect::Append(batch.len()));
            link.deadlines.push_back(now + self.cfg.timeout);
            events += batch.len();
            self.stats.append_calls += 1;
            for s in batch {
                self.inflight.push_back((s.origin, s.cost, s.sent));
            }
        }
        if gated {
            super::replicas::send_wait(link, &self.cfg, events, now);
        }
    }

    /// The reply to one APPEND call of `n` events: one `{status, seq}` per event, or `{'EPOCH',
    /// epoch}` for the whole call. An error here drops the link, which refuses every append
    /// still in flight.
    pub(super) fn on_append(&mut self, n: usize, frame: &OwnedFrame) -> Result<(), String> {
        let parts = match frame {
            OwnedFrame::Array(p) => p.as_slice(),
            _ => return Err("APPEND: unexpected reply".into()),
        };
        if parts.first().and_then(text) == Some("EPOCH") {
            // The dataset changed under this link: refuse, and say HELLO again.
            return Err("the dataset changed (epoch mismatch)".into());
        }
        if parts.len() != n {
            return Err(format!("APPEND: {} results for {n} events", parts.len()));
        }
        for part in parts {
            let Some((origin, sent)) = self.pop_inflight() else {
                return Err("append reply without an append".into());
            };
            if self.cfg.min_replicas > 0 {
                // Answered, and delivered, once the batch's WAIT says the replicas hold it.
                let entry = match self.appended_seq(part) {
                    Some((seq, new)) => {
                        // Held until the WAIT answers: still counted as waiting for Redis.
                        self.inflight_bytes += sent.cost();
                        Replicating::Event {
                            origin,
                            sent,
                            seq,
                            new,
                        }
                    }
                    None => {
                        self.fail(origin);
                        Replicating::Refused
                    }
                };
                self.replicating.push_back(entry);
                continue;
            }
            self.on_appended(origin, sent, part)?;
        }
        Ok(())
    }

    /// An APPEND call of `n` events failed: each is refused (and, with replicated
    /// acknowledgements, settles nothing when its WAIT answers).
    pub(super) fn refuse_append(&mut self, n: usize) {
        for _ in 0..n {
            if let Some((origin, _)) = self.pop_inflight() {
                self.fail(origin);
            }
            if self.cfg.min_replicas > 0 {
                self.replicating.push_back(Replicating::Refused);
            }
        }
    }

    /// One event's `{status, seq}` in an APPEND reply: its seq, and whether it is new (not a
    /// duplicate of an idempotency key seen before).
    fn appended_seq(&self, part: &OwnedFrame) -> Option<(u64, bool)> {
        let OwnedFrame::Array(p) = part else {
            return None;
        };
        let status = text(p.first()?)?;
        let seq = integer(p.get(1)?).and_then(|s| u64::try_from(s).ok())?;
        matches!(status, "OK" | "DUP").then_some((seq, status == "OK"))
    }

    /// One event's result in an APPEND reply.
    pub(super) fn on_appended(
        &mut self,
        origin: Origin,
        sent: Sent,
        part: &OwnedFrame,
    ) -> Result<(), String> {
        let Some((seq, new)) = self.appended_seq(part) else {
            self.fail(origin);
            return Err("APPEND: unexpected result".into());
        };
        let Phase::Up(link) = &mut self.writer else {
            self.fail(origin);
            return Ok(());
        };
        let epoch = link.epoch.clone().unwrap_or_default();
        self.acknowledge(origin, sent, seq, new, &epoch);
        Ok(())
    }

    /// Answers a publisher whose event Redis holds (and, with `--backplane-min-replicas`, its
    /// replicas too); records the node's own event at once when every earlier seq was read.
    pub(super) fn acknowledge(
        &mut self,
        origin: Origin,
        sent: Sent,
        seq: u64,
        new: bool,
        epoch: &str,
    ) {
        self.stats.appends += u64::from(new);
        self.issued = self.issued.max(seq);
        self.out.completions.push(Completion {
            origin,
            outcome: Ok((format!("{epoch}-{seq}"), seq)),
        });
        // Every seq before this one has been read (seqs are consecutive in a dataset): record
        // it now; the reader skips it when it comes back.
        if new
            && self.last_read != 0
            && seq == self.last_read + 1
            && self.epoch.as_deref() == Some(epoch)
        {
            self.take(RemoteEvent {
                seq,
                topics: sent
                    .topics
                    .into_iter()
                    .map(String::into_boxed_str)
                    .collect(),
                event_type: sent.event_type.map(String::into_boxed_str),
                data: sent.data.into_boxed_str(),
                appended_ms: 0,
            });
        }
    }

    pub(super) fn fail(&mut self, origin: Origin) {
        self.stats.append_failures += 1;
        self.out.completions.push(Completion {
            origin,
            outcome: Err(AppendError::Unavailable),
        });
    }

    /// Appends sent (or staged) that Redis has not answered yet.
    pub fn appends_unanswered(&self) -> bool {
        !self.inflight.is_empty()
            || !self.staged.is_empty()
            || self
                .replicating
                .iter()
                .any(|r| matches!(r, Replicating::Event { .. }))
    }

    /// Refuses everything the writer carries that Redis has not answered: appends sent or
    /// staged, and backfills.
    pub(super) fn fail_pending(&mut self) {
        while let Some((origin, _)) = self.pop_inflight() {
            self.fail(origin);
        }
        for s in std::mem::take(&mut self.staged) {
            self.inflight_bytes -= s.cost;
            self.fail(s.origin);
        }
        while let Some(req) = self.fetches.pop_front() {
            self.backfill_failed(req);
        }
        while let Some(r) = self.replicating.pop_front() {
            if let Replicating::Event { origin, sent, .. } = r {
                self.inflight_bytes -= sent.cost();
                self.fail(origin);
            }
        }
    }

    pub(super) fn pop_inflight(&mut self) -> Option<(Origin, Sent)> {
        let (origin, cost, sent) = self.inflight.pop_front()?;
        self.inflight_bytes -= cost;
        Some((origin, sent))
    }
}
