//! History accounting and eviction: `--history` per topic, `--history-bytes` over all (each
//! retained event counted once with every encoding it holds, whatever number of topics hold
//! it), `--max-topics`; and the memory the hub holds beyond history (`transient_bytes`).
//!
//! `retained` lists every retained event once, oldest first. An event that left every topic's
//! history out of order (per-topic `--history`) is removed from it lazily, but its bytes count
//! against `--history-bytes` until then (`retained_gone_bytes`): what history keeps alive never
//! exceeds the bound. The list is compacted once such bytes reach an eighth of the bound or
//! exceed the replayable bytes, or such events fill half of it, so that its cost per eviction
//! stays constant.

use std::collections::HashSet;

use super::{Hub, Subscription};
use crate::buf::SharedEvent;

impl Hub {
    /// Makes every retained event unreplayable (the backplane's dataset was lost: those ids name
    /// nothing any more). Live cursors are not moved.
    pub fn forget_history(&mut self) {
        while self.evict_oldest_retained() {}
    }

    /// History holds no event at or below `through`, nor, for each of `topics`, at or below its
    /// seq (a backplane node's warm-up left them out, or they belong to a dataset's earlier
    /// epoch): a resume from before that is told it may have missed events (a backfill from
    /// Redis, or a reset), exactly as for events evicted normally.
    pub fn raise_floor(&mut self, through: u64, topics: &[(Box<str>, u64)]) {
        self.removed_through = self.removed_through.max(through);
        for (_, ch) in self.channels.iter_mut() {
            ch.evicted_through = ch.evicted_through.max(through);
        }
        for (name, seq) in topics {
            match self.by_name.get(name) {
                Some(&id) => {
                    let ch = &mut self.channels[id.0];
                    ch.evicted_through = ch.evicted_through.max(*seq);
                }
                // Forgotten since (history-bytes evicted it): channels created later already
                // start above its events; never silence, whatever happened.
                None => self.removed_through = self.removed_through.max(*seq),
            }
        }
    }

    /// An event left one topic's history: when no topic retains it any more, its bytes no
    /// longer count.
    pub(super) fn release(&mut self, ev: &SharedEvent) {
        let holders = ev.holders.get().saturating_sub(1);
        ev.holders.set(holders);
        if holders == 0 {
            let bytes = ev.footprint();
            // Saturating: a topic-line form built outside `build_topic_forms` (a bug, asserted
            // in debug builds) must not wrap the count.
            self.history_bytes = self.history_bytes.saturating_sub(bytes);
            self.retained_gone += 1;
            self.retained_gone_bytes += bytes;
        }
    }

    /// Evicts the oldest retained events until history fits `--history-bytes`.
    pub(super) fn enforce_history_bytes(&mut self) {
        let limit = self.limits.history_bytes;
        let gone = self.retained_gone_bytes;
        if gone > limit / 8
            || gone > self.history_bytes
            || (self.retained_gone > 64 && self.retained_gone * 2 > self.retained.len())
        {
            self.retained.retain(|e| e.holders.get() > 0);
            self.retained_gone = 0;
            self.retained_gone_bytes = 0;
        }
        while self.history_bytes + self.retained_gone_bytes > limit {
            if !self.evict_oldest_retained() {
                break;
            }
        }
    }

    /// Makes the globally oldest retained event unreplayable in every topic; false when nothing
    /// is retained.
    pub(super) fn evict_oldest_retained(&mut self) -> bool {
        let Some(ev) = self.retained.pop_front() else {
            return false;
        };
        if ev.holders.get() == 0 {
            self.retained_gone = self.retained_gone.saturating_sub(1);
            self.retained_gone_bytes = self.retained_gone_bytes.saturating_sub(ev.footprint());
            return true;
        }
        for name in ev.topics.iter() {
            let Some(&id) = self.by_name.get(name) else {
                continue;
            };
            let ch = &mut self.channels[id.0];
            if ch.oldest_replayable().is_some_and(|o| o.seq == ev.seq) {
                ch.evict_oldest();
                self.history_events -= 1;
                ev.holders.set(ev.holders.get().saturating_sub(1));
                ch.trim();
            }
            self.remove_if_vacant(id);
        }
        if ev.holders.get() > 0 {
            // Not at the front of some topic's history (cannot happen: eviction is oldest
            // first everywhere); never leave bytes counted for an event no longer listed.
            ev.holders.set(0);
        }
        self.history_bytes = self.history_bytes.saturating_sub(ev.footprint());
        true
    }

    /// Builds the topic-line form of the events a `topic_line=1` stream is about to replay:
    /// those past the cursors of `subs` and its patterns' `replay`. Events recorded while
    /// such a reader was subscribed have it already (`record`). Retained ones now hold more
    /// bytes, which count against `--history-bytes` like the rest of them.
    pub fn build_topic_forms(&mut self, subs: &[Subscription], replay: &[SharedEvent]) {
        let mut added = 0;
        let mut build = |ev: &SharedEvent| {
            let bytes = ev.build_topic_form();
            if ev.holders.get() > 0 {
                added += bytes;
            }
        };
        for sub in subs {
            let Some(ch) = self.channels.get(sub.channel().0) else {
                continue;
            };
            for pos in ch.next_of_sub(sub)..ch.end().min(sub.limit()) {
                if let Some(e) = ch.entry(pos) {
                    build(&e.ev);
                }
            }
        }
        replay.iter().for_each(build);
        if added > 0 {
            self.history_bytes += added;
            self.enforce_history_bytes();
        }
    }

    /// Bytes the hub holds beyond history, each event once: entries still ahead of a reader that
    /// no history retains, the joined batches, and the backlog waiting to be recorded. With readers
    /// that keep up it returns to the backlog alone once a round ends. Computed on demand (a
    /// walk over the channels and what they hold beyond history), for the gauge.
    pub fn transient_bytes(&self) -> usize {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut total = 0;
        for ev in self
            .channels
            .iter()
            .flat_map(|(_, c)| c.unreplayable_events())
        {
            // Held by no history (those count there), and once though several logs hold it.
            if ev.holders.get() == 0 && seen.insert(ev.seq) {
                total += ev.footprint();
            }
        }
        let batches: usize = self.channels.iter().map(|(_, c)| c.batch_bytes()).sum();
        let backlog: usize = self.backlog.iter().map(|e| e.footprint()).sum();
        total + batches + backlog
    }
}
