//! A channel: the shared log of one topic (or one topic pattern) and the cursors of its readers.
//!
//! The log holds events by reference, in id order, each with the running byte count of both wire
//! encodings (and, only while a `topic_line=1` stream reads the channel, of the topic-line form,
//! in a list beside it: `TopicEnds`) so that "how much has this reader not taken" is one subtraction. Its tail serves two
//! purposes at once: the last `--history` events are *replayable* (resume starts a cursor inside
//! them), and any older entry stays only while some reader's cursor has not passed it. A reader
//! too far behind is cut by the slow-consumer rule, so what a log holds beyond its history is
//! bounded by `--max-queue-bytes`. A pattern's log has no replayable part: its entries stay only
//! for its readers (a resume on a pattern replays its topics' history, see `hub::resume`).
//!
//! When a round of writes ends, `release_passed` drops what every reader has passed, the joined
//! batch included, so a caught-up channel holds nothing beyond its history.

use std::collections::VecDeque;

use slab::Slab;

use crate::buf::{SharedEvent, Wire};

/// One logged event and the cumulative bytes of each encoding through it.
pub(crate) struct Entry {
    pub(crate) ev: SharedEvent,
    end: [u64; 2],
}

/// The running byte count of the topic-line form of each entry, beside `entries` (same
/// indices). A log has it only while a reader writes that form, so the entries of every other
/// log stay as small as they were without it.
struct TopicEnds {
    ends: VecDeque<u64>,
    /// Count before `ends[0]`.
    base: u64,
}

impl TopicEnds {
    /// Bytes from entry offset `off` (relative to the log's first entry) to the end.
    fn pending(&self, off: u64) -> u64 {
        let total = self.ends.back().copied().unwrap_or(self.base);
        let before = match off.checked_sub(1) {
            None => self.base,
            Some(i) => usize::try_from(i)
                .ok()
                .and_then(|i| self.ends.get(i).copied())
                .unwrap_or(total),
        };
        total.saturating_sub(before)
    }

    fn push(&mut self, len: usize) {
        let prev = self.ends.back().copied().unwrap_or(self.base);
        self.ends.push_back(prev + len as u64);
    }
}

/// A subscriber's cursor: the absolute index of the next entry it has to send.
struct Reader {
    conn: usize,
    next: u64,
    handle: usize,
}

/// The log and readers of one topic or pattern.
pub struct Channel {
    pub(crate) name: Box<str>,
    /// `Some(prefix)` for a pattern channel (`prefix*`).
    pub(crate) prefix: Option<Box<str>>,
    entries: VecDeque<Entry>,
    /// Absolute index of `entries[0]`.
    first: u64,
    /// Cumulative bytes per wire before `entries[0]`.
    base: [u64; 2],
    /// Absolute index of the oldest replayable entry.
    hist_from: u64,
    /// Highest seq that is no longer replayable (0: nothing ever evicted).
    pub(crate) evicted_through: u64,
    readers: Vec<Reader>,
    /// Stable handle -> index in `readers` (readers are kept dense so fan-out walks only them).
    handles: Slab<usize>,
    /// Gets new entries this round (in the hub's touched list).
    pub(crate) touched: bool,
    /// Listed in the hub's `held` list: it may hold entries or a batch beyond its history that
    /// the end of a round releases once every reader has passed them.
    pub(crate) held: bool,
    /// For a topic: the pattern channels that match it.
    pub(crate) patterns: Vec<usize>,
    /// Handles of the readers that write the topic-line form (`topic_line=1`): while there is
    /// one, the events this channel gets have that form built (`Hub::record`) and its bytes
    /// counted (`topic_ends`).
    topic_readers: Vec<usize>,
    topic_ends: Option<TopicEnds>,
    /// Index of the first entry appended in the current iteration.
    pub(crate) round_start: u64,
    /// Unix seconds of its last event (a topic's; the server API's topic list).
    pub(crate) last_event_secs: u64,
    /// The SSE encodings of one iteration's entries, end to end: a reader caught up with the
    /// start of that iteration sends them as one iovec instead of one per event.
    batch: Option<Batch>,
}

/// Most bytes a joined batch holds, built at once or grown by mid-round extensions (a reader
/// writes at most 256 KiB per flush anyway): the entries of a larger round past it are written
/// one iovec each, and mid-round entries past it start a batch of their own. It bounds the copy
/// a channel makes of one round's events.
const MAX_BATCH: u64 = 256 * 1024;

/// Consecutive entries' SSE bytes in one buffer.
struct Batch {
    first: u64,
    end: u64,
    bytes: Vec<u8>,
}

impl Channel {
    pub(crate) fn new(name: &str, prefix: Option<&str>) -> Channel {
        Channel {
            name: name.into(),
            prefix: prefix.map(Into::into),
            entries: VecDeque::new(),
            first: 1,
            base: [0; 2],
            hist_from: 1,
            evicted_through: 0,
            readers: Vec::new(),
            handles: Slab::new(),
            touched: false,
            held: false,
            patterns: Vec::new(),
            topic_readers: Vec::new(),
            topic_ends: None,
            round_start: 1,
            last_event_secs: 0,
            batch: None,
        }
    }

    /// Joins the SSE encodings of the entries appended this iteration (two or more) into one
    /// buffer, once per channel, so that every caught-up reader writes them with one iovec.
    /// `extend` (input taken in the middle of a round): when the new entries follow the batch,
    /// they are appended to it instead, so a reader the round has not reached yet still sends
    /// everything it has not taken as one slice, and one it has written sends the new part,
    /// a suffix of the same buffer.
    pub(crate) fn build_batch(&mut self, extend: bool) {
        let (first, end) = (self.round_start.max(self.first), self.end());
        if first >= end {
            return;
        }
        let adding = self.logged_bytes(first, Wire::Sse);
        let batch = match self.batch.as_mut() {
            Some(b) if extend && b.end == first && b.bytes.len() as u64 + adding <= MAX_BATCH => {
                b.end = end;
                b
            }
            _ if end - first < 2 => return,
            _ => {
                // A round larger than the cap joins its first entries only (two at least).
                let mut to = first;
                let mut bytes = 0;
                while to < end {
                    let len = self.entry(to).map_or(0, |e| e.ev.sse().len() as u64);
                    if to >= first + 2 && bytes + len > MAX_BATCH {
                        break;
                    }
                    bytes += len;
                    to += 1;
                }
                self.batch.insert(Batch {
                    first,
                    end: to,
                    bytes: Vec::with_capacity(usize::try_from(bytes).unwrap_or(0)),
                })
            }
        };
        let (from, to) = (
            (first - self.first) as usize,
            (batch.end - self.first) as usize,
        );
        for e in self.entries.range(from..to) {
            batch.bytes.extend_from_slice(e.ev.sse());
        }
    }

    /// Bytes the joined batch holds (its allocation).
    pub(crate) fn batch_bytes(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.bytes.capacity())
    }

    /// At the end of a round: drops the entries that are neither replayable nor ahead of any
    /// reader, and the joined batch once every reader has passed its end (a reader still behind
    /// keeps it: it sends the rest as one slice). True when something beyond history is still
    /// held for a reader, so the channel is looked at again after the next round.
    pub(crate) fn release_passed(&mut self) -> bool {
        let slowest = self.slowest();
        if self.batch.as_ref().is_some_and(|b| slowest >= b.end) {
            self.batch = None;
        }
        self.trim_to(slowest);
        self.batch.is_some() || self.first < self.hist_from
    }

    /// Makes every entry unreplayable (a pattern's log: its readers' live tail only).
    pub(crate) fn pass_history(&mut self) {
        self.hist_from = self.end();
    }

    /// The joined SSE bytes of entries `[pos, end)`, when `pos` falls inside a batch.
    pub(crate) fn batch_at(&self, pos: u64) -> Option<(u64, &[u8])> {
        let b = self.batch.as_ref()?;
        if pos < b.first || pos >= b.end || pos < self.first {
            return None;
        }
        // Bytes of [pos, b.end) from the log's running counts: the suffix of the buffer.
        let tail = self.logged_bytes(pos, Wire::Sse) - self.logged_bytes(b.end, Wire::Sse);
        let from = b.bytes.len().checked_sub(usize::try_from(tail).ok()?)?;
        Some((b.end, &b.bytes[from..]))
    }

    /// Absolute index one past the newest entry.
    pub(crate) fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// The entry at absolute index `idx`, if held.
    pub(crate) fn entry(&self, idx: u64) -> Option<&Entry> {
        let off = idx.checked_sub(self.first)?;
        self.entries.get(usize::try_from(off).ok()?)
    }

    /// Seq of the newest entry (0 when empty).
    pub(crate) fn last_seq(&self) -> u64 {
        self.entries.back().map_or(0, |e| e.ev.seq)
    }

    /// Appends an event (its seq is above every held one). It is replayable at once.
    pub(crate) fn append(&mut self, ev: &SharedEvent) {
        debug_assert!(self.entries.back().is_none_or(|e| e.ev.seq < ev.seq));
        let prev = self.entries.back().map_or(self.base, |e| e.end);
        let end = [
            prev[0] + ev.sse().len() as u64,
            prev[1] + ev.frame().len() as u64,
        ];
        if let Some(topic) = self.topic_ends.as_mut() {
            topic.push(ev.topic_form_len());
        }
        self.entries.push_back(Entry {
            ev: SharedEvent::clone(ev),
            end,
        });
    }

    /// Replayable entries.
    pub(crate) fn replayable(&self) -> usize {
        (self.end() - self.hist_from) as usize
    }

    /// The oldest replayable event.
    pub(crate) fn oldest_replayable(&self) -> Option<&SharedEvent> {
        self.entry(self.hist_from).map(|e| &e.ev)
    }

    /// Makes the oldest replayable entry unreplayable; returns its event.
    pub(crate) fn evict_oldest(&mut self) -> Option<SharedEvent> {
        let ev = SharedEvent::clone(&self.entry(self.hist_from)?.ev);
        self.hist_from += 1;
        self.evicted_through = self.evicted_through.max(ev.seq);
        Some(ev)
    }

    /// Drops entries that are neither replayable nor ahead of any reader's cursor. Walks the
    /// readers only when the log holds unreplayable entries, i.e. when someone is behind.
    pub(crate) fn trim(&mut self) {
        if self.first >= self.hist_from {
            return;
        }
        let slowest = self.slowest();
        self.trim_to(slowest);
    }

    /// The slowest reader's cursor (`u64::MAX` without readers).
    fn slowest(&self) -> u64 {
        self.readers
            .iter()
            .map(|r| r.next)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Drops entries below both `slowest` (the slowest reader's cursor) and the history.
    fn trim_to(&mut self, slowest: u64) {
        let floor = slowest.min(self.hist_from);
        if self.first >= floor {
            return;
        }
        while self.first < floor {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            self.base = entry.end;
            self.first += 1;
            if let Some(topic) = self.topic_ends.as_mut() {
                topic.base = topic.ends.pop_front().unwrap_or(topic.base);
            }
        }
        if self.entries.is_empty() {
            self.entries = VecDeque::new();
        }
        if self.batch.as_ref().is_some_and(|b| b.first < self.first) {
            // Its head is gone (a reader that could start there was cut or left); a batch is
            // only read from inside `[first, end)` anyway, but its bytes serve nobody now.
            self.batch = self.batch.take().filter(|b| b.end > self.first);
        }
    }

    /// The unreplayable entries (held for readers behind), oldest first.
    pub(crate) fn unreplayable_events(&self) -> impl Iterator<Item = &SharedEvent> {
        let to = (self.hist_from.min(self.end()) - self.first) as usize;
        self.entries.range(..to).map(|e| &e.ev)
    }

    /// Absolute index of the first replayable entry with a seq above `seq`.
    pub(crate) fn start_after(&self, seq: u64) -> u64 {
        let from = (self.hist_from - self.first) as usize;
        let (a, b) = self.entries.as_slices();
        let skip = |part: &[Entry]| part.partition_point(|e| e.ev.seq <= seq);
        let pos = if from < a.len() {
            let in_a = skip(&a[from..]);
            if from + in_a < a.len() {
                from + in_a
            } else {
                a.len() + skip(b)
            }
        } else {
            from + skip(&b[from - a.len()..])
        };
        self.first + pos as u64
    }

    /// Bytes of `wire` from absolute index `next` to the end of the log.
    pub(crate) fn pending_bytes(&self, next: u64, wire: Wire) -> u64 {
        match (wire, &self.topic_ends) {
            (Wire::SseTopic, Some(topic)) => topic.pending(next.saturating_sub(self.first)),
            // Not counted without such a reader (cannot happen: its subscriptions make one).
            (Wire::SseTopic, None) => self.logged_bytes(next, Wire::Sse),
            (wire, _) => self.logged_bytes(next, wire),
        }
    }

    /// [`Channel::pending_bytes`] of a form every entry counts (SSE or frames): the joined
    /// batch's arithmetic on the write path, with no other case to rule out.
    fn logged_bytes(&self, next: u64, wire: Wire) -> u64 {
        let w = wire as usize;
        let total = self.entries.back().map_or(self.base[w], |e| e.end[w]);
        let before = match next.checked_sub(self.first + 1) {
            None => self.base[w],
            Some(off) => self
                .entries
                .get(off as usize)
                .map_or(total, |e: &Entry| e.end[w]),
        };
        total.saturating_sub(before)
    }

    /// Adds a reader whose cursor starts at the end of the log (live).
    pub(crate) fn add_reader(&mut self, conn: usize) -> usize {
        let handle = self.handles.insert(self.readers.len());
        self.readers.push(Reader {
            conn,
            next: self.end(),
            handle,
        });
        handle
    }

    /// Marks a reader as one that writes the topic-line form.
    pub(crate) fn want_topic_form(&mut self, handle: usize) {
        if self.handles.contains(handle) && !self.topic_readers.contains(&handle) {
            self.topic_readers.push(handle);
        }
        if self.topic_ends.is_none() {
            let mut topic = TopicEnds {
                ends: VecDeque::with_capacity(self.entries.len()),
                base: 0,
            };
            for e in &self.entries {
                topic.push(e.ev.topic_form_len());
            }
            self.topic_ends = Some(topic);
        }
    }

    /// True while a reader writes the topic-line form.
    pub(crate) fn has_topic_readers(&self) -> bool {
        !self.topic_readers.is_empty()
    }

    /// Removes a reader; false when the handle is unknown.
    pub(crate) fn remove_reader(&mut self, handle: usize) -> bool {
        let Some(i) = self.handles.try_remove(handle) else {
            return false;
        };
        if !self.topic_readers.is_empty() {
            self.topic_readers.retain(|&h| h != handle);
            if self.topic_readers.is_empty() {
                self.topic_ends = None;
            }
        }
        self.readers.swap_remove(i);
        if let Some(moved) = self.readers.get(i) {
            self.handles[moved.handle] = i;
        }
        if self.readers.is_empty() {
            // After a peak, give the memory back: fan-out cost follows current readers only.
            self.readers = Vec::new();
            self.handles = Slab::new();
        }
        true
    }

    /// The cursor of subscription `sub` (of this channel).
    pub(crate) fn next_of_sub(&self, sub: &crate::hub::Subscription) -> u64 {
        self.next_of(sub.handle())
    }

    /// A reader's cursor.
    pub(crate) fn next_of(&self, handle: usize) -> u64 {
        self.handles
            .get(handle)
            .and_then(|&i| self.readers.get(i))
            .map_or(self.end(), |r| r.next)
    }

    /// Moves a reader's cursor.
    pub(crate) fn set_next(&mut self, handle: usize, next: u64) {
        let (first, end) = (self.first, self.end());
        if let Some(&i) = self.handles.get(handle) {
            if let Some(r) = self.readers.get_mut(i) {
                r.next = next.clamp(first, end);
            }
        }
    }

    /// Slab keys of the readers' connections.
    pub(crate) fn reader_conns(&self) -> impl Iterator<Item = usize> + '_ {
        self.readers.iter().map(|r| r.conn)
    }

    pub(crate) fn reader_count(&self) -> usize {
        self.readers.len()
    }

    /// Nothing replayable, nothing held, nobody reading: the channel can go.
    pub(crate) fn is_vacant(&self) -> bool {
        self.readers.is_empty() && self.entries.is_empty()
    }

    /// Replayable events, oldest first.
    pub(crate) fn replayable_events(&self) -> impl Iterator<Item = &SharedEvent> {
        let from = (self.hist_from - self.first) as usize;
        self.entries.range(from..).map(|e| &e.ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Event;
    use std::rc::Rc;

    fn ev(seq: u64) -> SharedEvent {
        Rc::new(Event::new(
            seq,
            format!("r-{seq}").into(),
            vec!["t".into()].into(),
            None,
            "data".into(),
        ))
    }

    #[test]
    fn cursors_pin_entries_until_passed_and_history_bounds_replay() {
        let mut ch = Channel::new("t", None);
        let slow = ch.add_reader(1);
        let fast = ch.add_reader(2);
        for seq in [3, 5, 8, 9] {
            ch.append(&ev(seq));
        }
        let one = ev(3).sse().len() as u64;
        assert_eq!(ch.pending_bytes(ch.next_of(slow), Wire::Sse), 4 * one);
        ch.set_next(slow, 1);
        assert_eq!(ch.pending_bytes(1, Wire::Sse), 4 * one);
        assert_eq!(ch.pending_bytes(3, Wire::Sse), 2 * one);
        // History of 2: evict two; the slow reader still holds them.
        ch.evict_oldest();
        ch.evict_oldest();
        ch.trim();
        assert_eq!(
            ch.entry(1).map(|e| e.ev.seq),
            Some(3),
            "pinned by the slow reader"
        );
        assert_eq!(ch.start_after(0), 3, "replay starts at the history window");
        assert_eq!(ch.start_after(8), 4);
        assert_eq!(ch.evicted_through, 5);
        ch.set_next(slow, 3);
        ch.set_next(fast, 5);
        ch.trim();
        assert!(ch.entry(2).is_none(), "released once passed");
        assert_eq!(ch.pending_bytes(3, Wire::Sse), 2 * one);
        assert!(ch.remove_reader(slow));
        assert!(!ch.remove_reader(slow));
        assert_eq!(ch.reader_conns().collect::<Vec<_>>(), vec![2]);
        assert_eq!(ch.next_of(fast), 5);
    }

    #[test]
    fn topic_form_bytes_are_counted_only_while_a_reader_writes_that_form() {
        let mut ch = Channel::new("t", None);
        let slow = ch.add_reader(1);
        for seq in 1..=4 {
            ch.append(&ev(seq));
        }
        assert!(ch.topic_ends.is_none(), "no such reader: nothing counted");
        ch.set_next(slow, 1);
        let topic = ch.add_reader(2);
        ch.want_topic_form(topic);
        ch.set_next(topic, 1);
        let one = ev(1).topic_form_len() as u64;
        assert_eq!(
            ch.pending_bytes(1, Wire::SseTopic),
            4 * one,
            "counted from the log"
        );
        ch.append(&ev(5));
        assert_eq!(ch.pending_bytes(3, Wire::SseTopic), 3 * one);
        ch.evict_oldest();
        ch.evict_oldest();
        ch.set_next(slow, 2);
        ch.set_next(topic, 3);
        ch.trim();
        assert_eq!(ch.entry(1).map(|e| e.ev.seq), None, "trimmed");
        assert_eq!(ch.pending_bytes(2, Wire::SseTopic), 4 * one);
        assert_eq!(ch.pending_bytes(ch.end(), Wire::SseTopic), 0);
        assert!(ch.remove_reader(topic));
        assert!(ch.topic_ends.is_none() && !ch.has_topic_readers());
    }
}
