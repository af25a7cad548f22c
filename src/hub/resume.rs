//! Resume: a client's `Last-Event-ID`, where a new stream's cursors start, the reset notice, and
//! the replay of a SUBSCRIBE frame on a live connection.

use std::rc::Rc;

use super::{Channel, Hub, Resume, Skip, StreamStart, Subscription, AHEAD_MAX};
use crate::buf::SharedEvent;
use crate::metrics::ResetReason;

impl Hub {
    /// Interprets a client's `Last-Event-ID`.
    pub fn parse_resume(&self, last_event_id: &str) -> Resume {
        let seq = last_event_id
            .strip_prefix(&*self.run)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|digits| {
                // Plain decimal only, so that one seq has exactly one spelling.
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    digits.parse::<u64>().ok()
                }
            });
        // A backplane node that has recorded nothing yet knows where its dataset's seqs start
        // (the epoch's start, warm-up's floor): ids just past it are this run's, not foreign.
        let head = self
            .backlog
            .back()
            .map_or(self.last_seq, |e| e.seq)
            .max(self.removed_through);
        match seq {
            Some(seq) if seq <= head => Resume::After(seq),
            Some(seq) if self.ahead_ok && seq - head <= AHEAD_MAX => Resume::After(seq),
            _ => Resume::Foreign,
        }
    }

    /// Places the cursors of `subs` (one stream's subscriptions, just made) for `resume`: after
    /// the resume point within each topic's history, and says whether the client missed events.
    /// A pattern's cursor starts live, and its replay (its topics' history) is returned in
    /// [`StreamStart::replay`], so a resume on a pattern replays exactly what the same resume on
    /// its matching topics would, with a reset only when one of them lost an event after it.
    pub fn start_stream(&mut self, subs: &mut [Subscription], resume: Resume) -> StreamStart {
        let (after, mut reset) = match resume {
            Resume::After(seq) => (seq, None),
            Resume::Foreign => (0, Some(ResetReason::Unknown)),
        };
        let mut first_replayed = u64::MAX;
        let mut expired = false;
        let patterns = subs.iter().any(|s| {
            self.channels
                .get(s.channel.0)
                .is_some_and(|c| c.prefix.is_some())
        });
        // Seqs the topic subscriptions replay through their cursors (a pattern's replay leaves
        // them out, so that nothing goes twice).
        let mut by_cursor: Vec<u64> = Vec::new();
        for sub in subs.iter_mut() {
            sub.start_seq = after;
            let Some(ch) = self.channels.get_mut(sub.channel.0) else {
                continue;
            };
            expired |= ch.prefix.is_none() && ch.evicted_through > after;
            let start = ch.start_after(after);
            if let Some(e) = ch.entry(start) {
                first_replayed = first_replayed.min(e.ev.seq);
            }
            if patterns {
                by_cursor.extend((start..ch.end()).filter_map(|i| ch.entry(i).map(|e| e.ev.seq)));
            }
            ch.set_next(sub.handle, start);
            if after > self.last_seq {
                self.skips.push(Skip {
                    channel: sub.channel,
                    handle: sub.handle,
                    through: after,
                });
            }
        }
        let mut replay = Vec::new();
        if patterns {
            for sub in subs.iter() {
                if let Some(ch) = self.channels.get(sub.channel.0) {
                    if ch.prefix.is_some() {
                        expired |= self.history_after(ch, after, &mut replay);
                    }
                }
            }
            by_cursor.sort_unstable();
            sort_unique(&mut replay);
            replay.retain(|e| by_cursor.binary_search(&e.seq).is_err());
            if let Some(e) = replay.first() {
                first_replayed = first_replayed.min(e.seq);
            }
        }
        if reset.is_none() && expired {
            reset = Some(ResetReason::Expired);
        }
        let before_first = if first_replayed == u64::MAX {
            self.last_seq
        } else {
            first_replayed - 1
        };
        StreamStart {
            after,
            reset,
            reset_id: self.id_for(before_first),
            replay,
        }
    }

    /// Appends the replayable events of `ch` after `after` to `out` (a pattern: those of every
    /// topic it matches); true when it, or one of those topics, evicted an event after `after`.
    /// A pattern costs a walk over the channels, as creating one does.
    fn history_after(&self, ch: &Channel, after: u64, out: &mut Vec<SharedEvent>) -> bool {
        let Some(prefix) = ch.prefix.as_deref() else {
            out.extend(ch.replayable_events().filter(|e| e.seq > after).cloned());
            return ch.evicted_through > after;
        };
        // Its own mark: matching topics that were forgotten (and, at its creation, any).
        self.matching_history(prefix, ch.evicted_through, after, out)
    }

    /// [`Hub::history_after`] for a name that may have no channel here (the server API's
    /// history): answered as the channel a resume would make now, which starts with
    /// `removed_through` as its mark.
    fn history_of(&self, name: &str, after: u64, out: &mut Vec<SharedEvent>) -> bool {
        match (self.by_name.get(name), name.strip_suffix('*')) {
            (Some(&id), _) => self.history_after(&self.channels[id.0], after, out),
            (None, Some(prefix)) => self.matching_history(prefix, self.removed_through, after, out),
            (None, None) => self.removed_through > after,
        }
    }

    /// The events after `after` of every topic starting with `prefix`, and whether one of them,
    /// or the pattern's own mark `own`, evicted one after `after`.
    fn matching_history(
        &self,
        prefix: &str,
        own: u64,
        after: u64,
        out: &mut Vec<SharedEvent>,
    ) -> bool {
        let mut expired = own > after;
        for (_, topic) in self.channels.iter() {
            if topic.prefix.is_none() && topic.name.starts_with(prefix) {
                expired |= topic.evicted_through > after;
                let start = topic.start_after(after);
                out.extend(
                    (start..topic.end()).filter_map(|i| topic.entry(i).map(|e| Rc::clone(&e.ev))),
                );
            }
        }
        expired
    }

    /// The seq after which the logs of `subs` hold every event (what history evicted is at or
    /// below it; for a pattern, in the topics it matches).
    pub fn cache_floor(&self, subs: &[Subscription]) -> u64 {
        subs.iter()
            .filter_map(|s| self.channels.get(s.channel.0))
            .map(|c| self.channel_floor(c))
            .max()
            .unwrap_or(0)
    }

    /// [`Hub::cache_floor`] for topics or patterns by name, with no subscription (the server
    /// API's history); a name without a channel here counts as the channel a resume would make
    /// now (its mark starts at `removed_through`).
    pub fn cache_floor_of(&self, names: &[&str]) -> u64 {
        names
            .iter()
            .map(|n| match self.by_name.get(*n) {
                Some(id) => self.channel_floor(&self.channels[id.0]),
                None => self.floor_for(n.strip_suffix('*'), self.removed_through),
            })
            .max()
            .unwrap_or(0)
    }

    fn channel_floor(&self, c: &Channel) -> u64 {
        self.floor_for(c.prefix.as_deref(), c.evicted_through)
    }

    /// A channel's floor from its own mark: a pattern's is also that of every topic it matches.
    fn floor_for(&self, prefix: Option<&str>, own: u64) -> u64 {
        match prefix {
            None => own,
            Some(prefix) => self
                .channels
                .iter()
                .filter(|(_, t)| t.prefix.is_none() && t.name.starts_with(prefix))
                .map(|(_, t)| t.evicted_through)
                .fold(own, u64::max),
        }
    }

    /// Retained events of `names` (topics or patterns) after `after`, merged in id order without
    /// duplicates (a SUBSCRIBE frame's replay on a live connection), and whether one of them
    /// evicted an event after `after`.
    pub fn replay(&self, names: &[&str], after: u64) -> (Vec<SharedEvent>, bool) {
        let mut events: Vec<SharedEvent> = Vec::new();
        let mut expired = false;
        for name in names {
            expired |= self.history_of(name, after, &mut events);
        }
        sort_unique(&mut events);
        (events, expired)
    }
}

/// Sorts events by seq and drops repeats (an event reached through several topics).
fn sort_unique(events: &mut Vec<SharedEvent>) {
    events.sort_unstable_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
}
