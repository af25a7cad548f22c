//! Accounting: which events each subscriber saw, which events are still travelling, latency.
//!
//! Pure and allocation-free per event. Loss is counted at the end (events acknowledged by the
//! server minus distinct events received); duplicates and reordering are caught as they happen by
//! a 128-event bitmap per subscriber and publishing lane; the in-flight window counts an event
//! until every live subscriber of its topic has it, which is what bounds the server's
//! per-connection queues.
//!
//! A *lane* is one publisher connection of a topic. Normally a topic has one lane, so its whole
//! sequence must arrive in order. With `--spread-publishers` a topic's events go round-robin over
//! P connections: the server may then interleave the connections' requests in any order, and only
//! each lane's own sequence (per-topic sequence `s`, lane `s % P`) has an order to check.

use hdrhistogram::Histogram;

use crate::payload;

/// How far behind the newest event a late arrival is still checked exactly.
pub const REORDER_SPAN: u64 = 128;

/// What a delivery was, for one subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The next event, or a newer one (a gap is counted as loss at the end, not here).
    New,
    /// An event older than one already received, not seen before.
    Reordered,
    /// Already received (or too old to tell, which a correct server never produces).
    Duplicate,
}

/// The per-topic sequence numbers one subscriber has received.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    /// One past the highest sequence received.
    high: u64,
    /// Bit k set: sequence `high - 1 - k` was received.
    recent: u128,
    /// Distinct sequences received.
    pub unique: u64,
}

impl SeqTracker {
    /// Records sequence `s`.
    pub fn observe(&mut self, s: u64) -> Seen {
        if s >= self.high {
            let shift = s + 1 - self.high;
            self.recent = if shift >= 128 {
                0
            } else {
                self.recent << shift
            };
            self.recent |= 1;
            self.high = s + 1;
            self.unique += 1;
            return Seen::New;
        }
        let back = self.high - 1 - s;
        if back >= REORDER_SPAN || self.recent & (1 << back) != 0 {
            return Seen::Duplicate;
        }
        self.recent |= 1 << back;
        self.unique += 1;
        Seen::Reordered
    }

    /// Whether `s` was received (assumed so when older than the bitmap reaches).
    pub fn has_seen(&self, s: u64) -> bool {
        if s >= self.high {
            return false;
        }
        let back = self.high - 1 - s;
        back >= REORDER_SPAN || self.recent & (1 << back) != 0
    }
}

/// One subscriber's trackers, one per publishing lane of its topic.
#[derive(Clone, Debug)]
pub struct Tracker {
    lanes: Box<[SeqTracker]>,
}

impl Tracker {
    /// A tracker for a topic published over `lanes` connections (at least one).
    pub fn new(lanes: usize) -> Self {
        Tracker {
            lanes: vec![SeqTracker::default(); lanes.max(1)].into_boxed_slice(),
        }
    }

    fn lane(&self, s: u64) -> (usize, u64) {
        let n = self.lanes.len() as u64;
        ((s % n) as usize, s / n)
    }

    /// Records per-topic sequence `s`.
    pub fn observe(&mut self, s: u64) -> Seen {
        let (lane, k) = self.lane(s);
        self.lanes[lane].observe(k)
    }

    /// Whether per-topic sequence `s` was received (see [`SeqTracker::has_seen`]).
    pub fn has_seen(&self, s: u64) -> bool {
        let (lane, k) = self.lane(s);
        self.lanes[lane].has_seen(k)
    }

    /// Distinct events received.
    pub fn unique(&self) -> u64 {
        self.lanes.iter().map(|t| t.unique).sum()
    }
}

/// Events published but not yet received by every live subscriber of their topic.
#[derive(Clone, Debug)]
pub struct DeliveryWindow {
    /// Receivers still missing each in-flight event, indexed by `g % capacity`.
    remaining: Vec<u32>,
    oldest: u64,
    next: u64,
}

impl DeliveryWindow {
    /// A window of at most `capacity` in-flight events.
    pub fn new(capacity: usize) -> Self {
        DeliveryWindow {
            remaining: vec![0; capacity.max(1)],
            oldest: 0,
            next: 0,
        }
    }

    /// Events in flight.
    pub fn in_flight(&self) -> u64 {
        self.next - self.oldest
    }

    /// No room for another event.
    pub fn is_full(&self) -> bool {
        self.in_flight() >= self.remaining.len() as u64
    }

    /// The number the next published event gets.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The oldest event still in flight (equal to `next()` when none is).
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    fn slot(&self, g: u64) -> usize {
        (g % self.remaining.len() as u64) as usize
    }

    /// Starts tracking the next event, expected by `receivers` subscribers; returns its number.
    /// The caller checks `is_full()` first.
    pub fn push(&mut self, receivers: u32) -> u64 {
        let g = self.next;
        let slot = self.slot(g);
        self.remaining[slot] = receivers;
        self.next += 1;
        self.advance();
        g
    }

    /// One receiver got event `g` (call only for a first delivery to that receiver).
    pub fn delivered(&mut self, g: u64) {
        if g < self.oldest || g >= self.next {
            return;
        }
        let slot = self.slot(g);
        self.remaining[slot] = self.remaining[slot].saturating_sub(1);
        if g == self.oldest {
            self.advance();
        }
    }

    /// Event `g` will never arrive (the server refused it): stop waiting for it.
    pub fn cancel(&mut self, g: u64) {
        if g >= self.oldest && g < self.next {
            let slot = self.slot(g);
            self.remaining[slot] = 0;
            self.advance();
        }
    }

    fn advance(&mut self) {
        while self.oldest < self.next && self.remaining[self.slot(self.oldest)] == 0 {
            self.oldest += 1;
        }
    }
}

/// Run-wide delivery accounting.
pub struct Tally {
    /// Publish→receive latency of measured deliveries, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Number of topics (event `g` goes to topic `g % topics`).
    pub topics: u64,
    /// Events numbered from here on are measured (the rest is warm-up); `u64::MAX` until then.
    pub measure_from: u64,
    /// First deliveries of measured events.
    pub measured: u64,
    /// First deliveries of any event.
    pub delivered: u64,
    /// Repeated deliveries (error).
    pub duplicates: u64,
    /// Deliveries older than one already received (error: ids must increase).
    pub reordered: u64,
    /// Events whose body the tool did not write (another publisher, a reset notice).
    pub foreign: u64,
    /// Tool events arriving on a subscriber of another topic (error).
    pub wrong_topic: u64,
    /// In-flight window.
    pub window: DeliveryWindow,
    /// Events the server acknowledged with 200, per topic.
    pub acked: Vec<u64>,
}

impl Tally {
    /// Accounting for `topics` topics and an in-flight window of `window` events.
    pub fn new(topics: usize, window: usize) -> Result<Self, hdrhistogram::CreationError> {
        Ok(Tally {
            // 1 ns to 1 hour at 3 significant digits; out-of-range values are clamped.
            latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?,
            topics: topics.max(1) as u64,
            measure_from: u64::MAX,
            measured: 0,
            delivered: 0,
            duplicates: 0,
            reordered: 0,
            foreign: 0,
            wrong_topic: 0,
            window: DeliveryWindow::new(window),
            acked: vec![0; topics.max(1)],
        })
    }

    /// One event body arrived at a subscriber of `topic` at `now_ns` (tool clock).
    pub fn on_event(&mut self, tracker: &mut Tracker, topic: u64, body: &[u8], now_ns: u64) {
        let Some((ts, g)) = payload::decode(body) else {
            self.foreign += 1;
            return;
        };
        if g % self.topics != topic {
            self.wrong_topic += 1;
            return;
        }
        match tracker.observe(g / self.topics) {
            Seen::Duplicate => {
                self.duplicates += 1;
                return;
            }
            Seen::Reordered => self.reordered += 1,
            Seen::New => {}
        }
        self.delivered += 1;
        self.window.delivered(g);
        if g >= self.measure_from {
            self.measured += 1;
            self.latency
                .saturating_record(now_ns.saturating_sub(ts).max(1));
        }
    }

    /// Events acknowledged on `topic` that a subscriber with this tracker never received.
    pub fn lost_for(&self, topic: u64, tracker: &Tracker) -> u64 {
        let acked = self.acked.get(topic as usize).copied().unwrap_or(0);
        acked.saturating_sub(tracker.unique())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(ts: u64, g: u64) -> Vec<u8> {
        let mut b = Vec::new();
        payload::encode(&mut b, ts, g, 64);
        b
    }

    #[test]
    fn tracker_classifies_new_duplicate_reordered() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Seen::New);
        assert_eq!(t.observe(1), Seen::New);
        assert_eq!(t.observe(1), Seen::Duplicate);
        assert_eq!(t.observe(5), Seen::New); // 2..=4 missing
        assert!(!t.has_seen(3));
        assert_eq!(t.observe(3), Seen::Reordered);
        assert!(t.has_seen(3));
        assert_eq!(t.observe(3), Seen::Duplicate);
        assert_eq!(t.observe(0), Seen::Duplicate);
        assert_eq!(t.unique, 4);
        assert_eq!(t.observe(1000), Seen::New);
        assert_eq!(t.observe(1000 - REORDER_SPAN), Seen::Duplicate); // too old to tell
        assert_eq!(t.observe(999), Seen::Reordered);
    }

    #[test]
    fn lanes_are_ordered_separately() {
        // Three lanes: sequences 0, 3, 6… are lane 0; 1, 4, 7… lane 1; 2, 5, 8… lane 2.
        let mut t = Tracker::new(3);
        assert_eq!(t.observe(1), Seen::New);
        assert_eq!(t.observe(0), Seen::New); // another lane: not a reorder
        assert_eq!(t.observe(4), Seen::New);
        assert_eq!(t.observe(2), Seen::New);
        assert_eq!(t.observe(1), Seen::Duplicate);
        assert_eq!(t.observe(7), Seen::New);
        assert!(!t.has_seen(3) && t.has_seen(4));
        assert_eq!(t.observe(3), Seen::New); // lane 0's second event, in lane order
        assert_eq!(t.observe(10), Seen::New);
        assert_eq!(t.observe(6), Seen::New);
        assert_eq!(t.unique(), 8);
        // Lane 0 in order (0, 3, 6, 9); 0 again is a duplicate.
        assert_eq!(t.observe(9), Seen::New);
        assert_eq!(t.observe(0), Seen::Duplicate);
        // Lane 1 got 1, 4, 7, 10, then 16 before 13: within one lane that is a reorder.
        assert_eq!(t.observe(16), Seen::New);
        assert_eq!(t.observe(13), Seen::Reordered);
        let mut one = Tracker::new(1);
        assert_eq!(one.observe(1), Seen::New);
        assert_eq!(one.observe(0), Seen::Reordered);
    }

    #[test]
    fn window_drains_when_every_receiver_has_the_event() {
        let mut w = DeliveryWindow::new(3);
        let a = w.push(2);
        let b = w.push(1);
        let c = w.push(0); // no receiver: complete at once, but behind b
        assert_eq!((a, b, c), (0, 1, 2));
        assert!(w.is_full());
        w.delivered(b);
        assert_eq!(w.in_flight(), 3);
        w.delivered(a);
        assert_eq!(w.in_flight(), 3);
        w.delivered(a);
        assert_eq!(w.in_flight(), 0);
        w.delivered(a); // stale: ignored
        let d = w.push(1);
        assert_eq!(d, 3);
        w.cancel(d);
        assert_eq!((w.in_flight(), w.oldest(), w.next()), (0, 4, 4));
    }

    #[test]
    fn tally_counts_loss_duplicates_wrong_topic_and_latency() {
        // Two topics, two subscribers on topic 1: events g = 1, 3, 5, 7 are theirs.
        let mut tally = Tally::new(2, 16).unwrap();
        let mut s1 = Tracker::new(1);
        let mut s2 = Tracker::new(1);
        for _ in 0..8 {
            let g = tally
                .window
                .push(if tally.window.next() % 2 == 1 { 2 } else { 0 });
            tally.acked[(g % 2) as usize] += 1;
        }
        tally.measure_from = 3;
        for g in [1, 3, 5, 7] {
            tally.on_event(&mut s1, 1, &body(1_000, g), 1_000 + 10_000 * g);
        }
        tally.on_event(&mut s2, 1, &body(0, 1), 5);
        tally.on_event(&mut s2, 1, &body(0, 1), 6); // duplicate
        tally.on_event(&mut s2, 1, &body(0, 7), 7); // 3 and 5 lost
        tally.on_event(&mut s2, 1, &body(0, 2), 8); // topic 0 event on a topic 1 stream
        tally.on_event(&mut s2, 1, b"{\"reason\":\"expired\"}", 9);
        assert_eq!(tally.delivered, 6);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.wrong_topic, 1);
        assert_eq!(tally.foreign, 1);
        assert_eq!(tally.lost_for(1, &s1), 0);
        assert_eq!(tally.lost_for(1, &s2), 2);
        // Measured: g >= 3 → s1's 3, 5, 7 and s2's 7.
        assert_eq!(tally.measured, 4);
        assert_eq!(tally.latency.len(), 4);
        assert_eq!(
            tally.latency.max(),
            tally.latency.highest_equivalent(70_000)
        );
        // Events 3 and 5 wait for s2 forever: the window keeps them in flight.
        assert_eq!(tally.window.oldest(), 3);
    }
}
