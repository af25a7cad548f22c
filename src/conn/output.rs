//! The write path of one connection: its private bytes merged, in order, with the shared events
//! past its cursors.
//!
//! A stream never copies an event. Its subscriptions are cursors into the hub's channel logs, and
//! each flush gathers, for one `writev`, the private segments and the encodings of the events
//! past those cursors, merged in id order (an event seen through several channels goes once).
//! A private segment carries a barrier (see `buf::OutQueue`): it goes out after the events up to
//! that seq and before any later one, which is how a response head precedes a replay, a
//! PUBLISH_ACK precedes the publisher's own event, and a farewell comes last.
//!
//! What a connection has not taken is `private bytes + log bytes past its cursors`, a few
//! subtractions: the slow-consumer rule judges it only when the socket has refused bytes, and
//! never counts the event already half-written (so one event as large as the cap never trips it).

use std::io::IoSlice;

use smallvec::SmallVec;

use crate::buf::{BufPool, OutQueue, SharedEvent, Wire, MAX_IOVECS};
use crate::hub::{Channel, Hub, Subscription};

/// Private bytes and cursors of one connection.
#[derive(Default)]
pub struct Output {
    /// Private output (responses, notices, heartbeats, frame replies).
    pub private: OutQueue,
    /// Cursors into the hub's logs (streams only). One topic is the common case: it is held
    /// inline, so a flush does not wait on a separate allocation (a cache miss per write in the
    /// profile, since the kernel's work between two writes evicts it).
    pub subs: Subs,
    /// The encoding this connection's events use (streams only).
    pub wire: Option<Wire>,
    /// Bytes of the front event already written.
    ev_off: usize,
}

/// A connection's subscriptions.
pub type Subs = SmallVec<[Subscription; 1]>;

/// The next thing to write.
enum Item<'h> {
    Private(&'h [u8]),
    Event(&'h SharedEvent),
}

/// A whole write of a contiguous slice, applied without walking the log again.
#[derive(Clone, Copy)]
pub struct Step {
    /// Events it completes.
    events: u64,
    /// The cursor once it is written.
    to: u64,
}

/// A walk over the merged output, not yet applied.
struct Walk {
    /// Cursor of each subscription.
    pos: [u64; MAX_SUBS],
    /// Next private segment.
    seg: usize,
}

/// Most subscriptions one connection holds (the per-request topic cap).
pub const MAX_SUBS: usize = crate::http::request::MAX_TOPICS_PER_REQUEST;

/// What a flush wrote.
pub struct Written {
    /// Events fully written.
    pub events: u64,
    /// Something is still waiting to be written (as [`Output::has_output`] would say).
    pub more: bool,
}

impl Output {
    /// The entry a subscription would send next from `pos`, within its limit.
    fn head<'h>(hub: &'h Hub, sub: &Subscription, pos: u64) -> Option<&'h SharedEvent> {
        if pos >= sub.limit() {
            return None;
        }
        hub.channel(sub.channel())
            .and_then(|c| c.entry(pos))
            .map(|e| &e.ev)
    }

    fn walk(&self, hub: &Hub) -> Walk {
        let mut pos = [0u64; MAX_SUBS];
        for (p, sub) in pos.iter_mut().zip(&self.subs) {
            *p = hub.cursor(sub);
        }
        Walk { pos, seg: 0 }
    }

    /// The next item of the merge, advancing `walk` past it.
    fn next_item<'h>(&'h self, hub: &'h Hub, walk: &mut Walk) -> Option<Item<'h>> {
        let mut best: Option<&'h SharedEvent> = None;
        for (sub, &pos) in self.subs.iter().zip(&walk.pos) {
            let Some(ev) = Self::head(hub, sub, pos) else {
                continue;
            };
            if best.is_none_or(|b| ev.seq < b.seq) {
                best = Some(ev);
            }
        }
        if let Some((barrier, bytes)) = self.private.segment(walk.seg) {
            if best.is_none_or(|b| b.seq > barrier) {
                walk.seg += 1;
                return Some(Item::Private(bytes));
            }
        }
        let event = best?;
        for (sub, pos) in self.subs.iter().zip(walk.pos.iter_mut()) {
            if Self::head(hub, sub, *pos).is_some_and(|e| e.seq == event.seq) {
                *pos += 1;
            }
        }
        Some(Item::Event(event))
    }

    /// The iteration's events joined into one slice (`Channel::batch_at`), when this reader's
    /// next bytes are exactly their start: what `gather` sends as one iovec and `consume` steps
    /// over at once, decided in one place so the two always agree.
    fn joined<'h>(&self, ch: &'h Channel, sub: &Subscription, pos: u64) -> Option<(u64, &'h [u8])> {
        if self.wire() != Wire::Sse || self.ev_off != 0 {
            return None;
        }
        ch.batch_at(pos).filter(|&(end, _)| end <= sub.limit())
    }

    fn wire(&self) -> Wire {
        self.wire.unwrap_or(Wire::Sse)
    }

    /// True when something is waiting to be written.
    pub fn has_output(&self, hub: &Hub) -> bool {
        !self.private.is_empty()
            || self
                .subs
                .iter()
                .any(|sub| Self::head(hub, sub, hub.cursor(sub)).is_some())
    }

    /// Events past the cursors (an event reached through two channels counts twice).
    pub fn backlog_events(&self, hub: &Hub) -> u64 {
        self.subs
            .iter()
            .filter_map(|sub| {
                hub.channel(sub.channel())
                    .map(|c| c.end().min(sub.limit()).saturating_sub(hub.cursor(sub)))
            })
            .sum()
    }

    /// Bytes not yet written: private bytes plus log bytes past the cursors (an event reached
    /// through two channels counts twice: an upper bound, on the safe side for memory).
    pub fn backlog(&self, hub: &Hub) -> u64 {
        let wire = self.wire();
        let logs: u64 = self
            .subs
            .iter()
            .filter_map(|sub| {
                hub.channel(sub.channel()).map(|c| {
                    let pending = c.pending_bytes(hub.cursor(sub), wire);
                    if sub.limit() < c.end() {
                        pending.saturating_sub(c.pending_bytes(sub.limit(), wire))
                    } else {
                        pending
                    }
                })
            })
            .sum();
        (self.private.len() as u64 + logs).saturating_sub(self.ev_off as u64)
    }

    /// The backlog behind the item being written: what the slow-consumer rule judges.
    pub fn judged_backlog(&self, hub: &Hub) -> u64 {
        let mut walk = self.walk(hub);
        let front = match self.next_item(hub, &mut walk) {
            None => 0,
            Some(Item::Private(bytes)) => bytes.len(),
            Some(Item::Event(ev)) => ev.encoded(self.wire()).len() - self.ev_off,
        };
        self.backlog(hub).saturating_sub(front as u64)
    }

    /// What is pending, when it is one contiguous slice: one active channel, nothing private,
    /// and either the iteration's joined events (all that is pending) or a single event. Most
    /// writes are this, and they need no iovec array. The slice is what `gather` would put in
    /// its one iovec, so `consume` applies any write of it as it would after `gather`; the
    /// [`Step`], present when the slice is everything pending, applies a write of all of it at
    /// once.
    pub fn contiguous<'h>(&self, hub: &'h Hub, budget: usize) -> Option<(&'h [u8], Option<Step>)> {
        let [sub] = self.subs.as_slice() else {
            return None;
        };
        if !self.private.is_empty() || !sub.is_active() {
            return None;
        }
        let ch = hub.channel(sub.channel())?;
        let pos = ch.next_of_sub(sub);
        let end = ch.end();
        let bytes = match self.joined(ch, sub, pos) {
            Some((to, bytes)) if to == end => bytes,
            Some(_) => return None,
            None if end.checked_sub(pos) == Some(1) => {
                ch.entry(pos)?.ev.encoded(self.wire()).get(self.ev_off..)?
            }
            None => return None,
        };
        if bytes.is_empty() {
            return None;
        }
        if bytes.len() > budget {
            return Some((&bytes[..budget], None));
        }
        let step = Step {
            events: end - pos,
            to: end,
        };
        Some((bytes, Some(step)))
    }

    /// Applies a write of `written` bytes of the `offered` that [`Self::contiguous`] gave: all
    /// of a slice with a [`Step`] moves the cursor to the log's end at once, anything else goes
    /// through `consume`.
    pub fn consume_contiguous(
        &mut self,
        written: usize,
        offered: usize,
        step: Option<Step>,
        hub: &mut Hub,
        pool: &mut BufPool,
    ) -> Written {
        match (step, self.subs.as_slice()) {
            (Some(step), [sub]) if written == offered => {
                hub.set_cursor(sub, step.to);
                self.ev_off = 0;
                Written {
                    events: step.events,
                    more: false,
                }
            }
            _ => self.consume(written, hub, pool),
        }
    }

    /// Fills `iov` with up to `budget` bytes of the merged output; returns (iovecs, bytes).
    pub fn gather<'h>(
        &'h self,
        hub: &'h Hub,
        iov: &mut [IoSlice<'h>; MAX_IOVECS],
        budget: usize,
    ) -> (usize, usize) {
        let wire = self.wire();
        let (mut count, mut total) = (0, 0);
        if let [sub] = self.subs.as_slice() {
            if self.private.is_empty() {
                if let Some(ch) = hub.channel(sub.channel()) {
                    let mut pos = ch.next_of_sub(sub);
                    // A caught-up SSE reader sends the whole iteration's events as one iovec
                    // (the channel joined them once for all its readers).
                    if let Some((end, bytes)) = self.joined(ch, sub, pos) {
                        let take = bytes.len().min(budget);
                        iov[0] = IoSlice::new(&bytes[..take]);
                        count = 1;
                        total = take;
                        pos = end;
                    }
                    // One channel, nothing private: the log's entries in order, no merge.
                    while count < iov.len() && total < budget && pos < sub.limit() {
                        let Some(e) = ch.entry(pos) else {
                            break;
                        };
                        let bytes = e.ev.encoded(wire);
                        let bytes = if count == 0 {
                            &bytes[self.ev_off..]
                        } else {
                            bytes
                        };
                        let take = bytes.len().min(budget - total);
                        iov[count] = IoSlice::new(&bytes[..take]);
                        count += 1;
                        total += take;
                        pos += 1;
                    }
                    return (count, total);
                }
            }
        }
        let mut walk = self.walk(hub);
        while count < iov.len() && total < budget {
            let bytes = match self.next_item(hub, &mut walk) {
                None => break,
                Some(Item::Private(bytes)) => bytes,
                Some(Item::Event(ev)) if count == 0 => &ev.encoded(wire)[self.ev_off..],
                Some(Item::Event(ev)) => ev.encoded(wire),
            };
            let take = bytes.len().min(budget - total);
            iov[count] = IoSlice::new(&bytes[..take]);
            count += 1;
            total += take;
        }
        (count, total)
    }

    /// Applies a write of `written` bytes: pops private segments, moves cursors past the events
    /// sent, remembers how far into the front item the write got.
    pub fn consume(&mut self, written: usize, hub: &mut Hub, pool: &mut BufPool) -> Written {
        if let Some(done) = self.consume_single(written, hub) {
            return done;
        }
        self.consume_merged(written, hub, pool)
    }

    /// The common case, one channel and nothing private: step the cursor over the events the
    /// write covered, reading the log once.
    fn consume_single(&mut self, mut written: usize, hub: &mut Hub) -> Option<Written> {
        let [sub] = self.subs.as_slice() else {
            return None;
        };
        if !self.private.is_empty() || !sub.is_active() {
            return None;
        }
        let wire = self.wire();
        let ch = hub.channel(sub.channel())?;
        let mut pos = ch.next_of_sub(sub);
        let mut events = 0;
        // The joined slice `gather` sent is stepped over at once when written whole; a partial
        // write of it is walked event by event below.
        let joined = self.joined(ch, sub, pos);
        if let Some((end, bytes)) = joined.filter(|(_, bytes)| written >= bytes.len()) {
            written -= bytes.len();
            events = end - pos;
            pos = end;
        }
        while written > 0 {
            let Some(e) = ch.entry(pos) else {
                break;
            };
            let len = e.ev.encoded(wire).len() - self.ev_off;
            if written < len {
                self.ev_off += written;
                break;
            }
            written -= len;
            self.ev_off = 0;
            events += 1;
            pos += 1;
        }
        let more = pos < sub.limit() && ch.entry(pos).is_some();
        hub.set_cursor(sub, pos);
        Some(Written { events, more })
    }

    fn consume_merged(&mut self, mut written: usize, hub: &mut Hub, pool: &mut BufPool) -> Written {
        let wire = self.wire();
        let mut events = 0;
        let mut walk = self.walk(hub);
        let mut front = true;
        while written > 0 {
            walk.seg = 0; // consumed private segments leave the queue
            let (len, private, seq) = match self.next_item(hub, &mut walk) {
                None => break,
                Some(Item::Private(bytes)) => (bytes.len(), true, 0),
                Some(Item::Event(ev)) => {
                    let off = if front { self.ev_off } else { 0 };
                    (ev.encoded(wire).len() - off, false, ev.seq)
                }
            };
            let take = written.min(len);
            written -= take;
            if private {
                self.private.consume(take, pool);
            } else if take == len {
                self.ev_off = 0;
                events += 1;
            } else {
                // Partial event: the walk moved the cursors past it; step them back.
                self.ev_off = if front { self.ev_off + take } else { take };
                self.rewind(hub, &mut walk, seq);
                break;
            }
            front = false;
        }
        for (sub, &pos) in self.subs.iter().zip(&walk.pos) {
            hub.set_cursor(sub, pos);
        }
        // Unsubscribed channels that have sent what was recorded before the UNSUBSCRIBE end.
        let mut i = 0;
        while i < self.subs.len() {
            if !self.subs[i].is_active() && hub.cursor(&self.subs[i]) >= self.subs[i].limit() {
                hub.unsubscribe(self.subs.remove(i));
            } else {
                i += 1;
            }
        }
        Written {
            events,
            more: self.has_output(hub),
        }
    }

    /// Steps back the cursors that the walk moved past event `seq` (it is not fully sent).
    fn rewind(&self, hub: &Hub, walk: &mut Walk, seq: u64) {
        for (sub, pos) in self.subs.iter().zip(walk.pos.iter_mut()) {
            let prev = pos.checked_sub(1).and_then(|p| Self::head(hub, sub, p));
            if prev.is_some_and(|e| e.seq == seq) {
                *pos -= 1;
            }
        }
    }

    /// Drops all private output (forced close). Cursors go with the subscriptions.
    pub fn clear(&mut self, pool: &mut BufPool) {
        self.private.clear(pool);
        self.ev_off = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Publish this many events to the topic.
        Publish(usize),
        /// An iteration's fan-out: the hub joins the new events for its readers.
        Round,
        /// A fan-out in the middle of a round: the new events extend the joined batch.
        MidRound,
        /// A private segment of this many bytes, after the newest event.
        Private(usize),
        /// One flush with this budget; the socket takes `taken / 255` of what is offered.
        Write { budget: usize, taken: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..4).prop_map(Op::Publish),
            Just(Op::Round),
            Just(Op::MidRound),
            (1usize..40).prop_map(Op::Private),
            (1usize..400, any::<u8>()).prop_map(|(budget, taken)| Op::Write { budget, taken }),
        ]
    }

    /// One reader of topic `a` (and a second reader, so that the hub joins each round).
    struct Reader {
        hub: Hub,
        out: Output,
        pool: BufPool,
        published: u64,
    }

    impl Reader {
        fn new(wire: Wire) -> Reader {
            let mut hub = Hub::new("t", 64);
            let mut out = Output {
                wire: Some(wire),
                ..Output::default()
            };
            out.subs.push(hub.subscribe("a", 1).unwrap());
            if wire == Wire::SseTopic {
                hub.want_topic_form(&out.subs[0]);
            }
            hub.subscribe("a", 2).unwrap();
            Reader {
                hub,
                out,
                pool: BufPool::default(),
                published: 0,
            }
        }

        fn apply(&mut self, op: &Op) {
            match op {
                Op::Publish(n) => {
                    for _ in 0..*n {
                        self.published += 1;
                        let data = "x".repeat(self.published as usize % 50);
                        self.hub.publish(&["a"], None, &data).unwrap();
                    }
                }
                Op::Round => self.hub.take_touched(&mut Vec::new()),
                Op::MidRound => self.hub.take_touched_midround(&mut Vec::new()),
                Op::Private(len) => {
                    let bytes = vec![b'p'; *len];
                    let barrier = self.published;
                    self.out
                        .private
                        .push_bytes(&bytes, barrier, &mut self.pool, 64);
                }
                Op::Write { .. } => {}
            }
        }

        /// Every slice the channel's batch offers is the events' own encodings, end to end.
        fn check_batch(&self) -> Result<(), TestCaseError> {
            let ch = self.hub.channel(self.out.subs[0].channel()).unwrap();
            for pos in 1..ch.end() {
                let Some((end, bytes)) = ch.batch_at(pos) else {
                    continue;
                };
                let mut joined = Vec::new();
                for idx in pos..end {
                    joined.extend_from_slice(ch.entry(idx).unwrap().ev.sse());
                }
                prop_assert_eq!(bytes, &joined[..], "batch slice from {} to {}", pos, end);
            }
            Ok(())
        }

        fn state(&self) -> (u64, usize, u64) {
            let cursor = self.hub.cursor(&self.out.subs[0]);
            (cursor, self.out.ev_off, self.out.backlog(&self.hub))
        }
    }

    const WRITE: usize = 1 << 18;

    fn taken(offered: usize, taken: u8) -> usize {
        offered * usize::from(taken) / 255
    }

    proptest! {
        /// The contiguous fast path offers exactly what `gather` would (as its single iovec) and
        /// leaves the reader exactly where `gather` + `consume` would, for whole, partial and
        /// budget-cut writes, with private segments and joined rounds (extended mid-round)
        /// mixed in; and a joined slice, from wherever a reader starts in it, is the events'
        /// own encodings.
        #[test]
        fn contiguous_writes_match_gather_and_consume(
            ops in proptest::collection::vec(op(), 1..80),
            wire in 0..3u8,
        ) {
            let wire = [Wire::Sse, Wire::Frame, Wire::SseTopic][usize::from(wire)];
            let (mut reference, mut fast) = (Reader::new(wire), Reader::new(wire));
            for op in &ops {
                reference.apply(op);
                fast.apply(op);
                reference.check_batch()?;
                let Op::Write { budget, taken: share } = *op else {
                    continue;
                };
                let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                let (count, offered) = reference.out.gather(&reference.hub, &mut iov, budget);
                let expected: Vec<u8> = iov[..count].iter().flat_map(|s| s.iter().copied()).collect();
                let written = taken(offered, share);
                let done = reference.out.consume(written, &mut reference.hub, &mut reference.pool);
                let got = match fast.out.contiguous(&fast.hub, budget) {
                    Some((bytes, step)) => {
                        prop_assert_eq!(count, 1, "a contiguous slice is gather's only iovec");
                        prop_assert_eq!(bytes, &expected[..]);
                        let (offered, written) = (bytes.len(), taken(bytes.len(), share));
                        fast.out
                            .consume_contiguous(written, offered, step, &mut fast.hub, &mut fast.pool)
                    }
                    None => {
                        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                        let (_, offered) = fast.out.gather(&fast.hub, &mut iov, budget);
                        let written = taken(offered, share);
                        fast.out.consume(written, &mut fast.hub, &mut fast.pool)
                    }
                };
                prop_assert_eq!((got.events, got.more), (done.events, done.more));
                prop_assert_eq!(fast.state(), reference.state());
                // The log's running count of this wire is the bytes the write path sends.
                let ch = reference.hub.channel(reference.out.subs[0].channel()).unwrap();
                let from = reference.hub.cursor(&reference.out.subs[0]);
                let sent: usize = (from..ch.end())
                    .map(|i| ch.entry(i).unwrap().ev.encoded(wire).len())
                    .sum();
                let private = reference.out.private.len();
                let backlog = reference.out.backlog(&reference.hub) as usize;
                prop_assert_eq!(backlog + reference.out.ev_off, sent + private);
            }
        }
    }

    /// The cases the fast path exists for: a caught-up reader's joined round, and one event.
    #[test]
    fn a_joined_round_and_a_single_event_are_one_contiguous_slice() {
        let mut r = Reader::new(Wire::Sse);
        r.apply(&Op::Publish(3));
        r.apply(&Op::Round);
        let (bytes, step) = r.out.contiguous(&r.hub, WRITE).unwrap();
        let len = bytes.len();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 9, "3 events");
        let done = r
            .out
            .consume_contiguous(len, len, step, &mut r.hub, &mut r.pool);
        assert_eq!((done.events, done.more), (3, false));
        r.apply(&Op::Publish(1));
        let (bytes, step) = r.out.contiguous(&r.hub, WRITE).unwrap();
        assert!(step.is_some() && bytes.starts_with(b"id: t-4"));
        r.apply(&Op::Private(5));
        assert!(
            r.out.contiguous(&r.hub, WRITE).is_none(),
            "private bytes: gather"
        );
    }
}
