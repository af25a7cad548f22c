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
//!
//! A *pattern* subscriber (`--subscribe-pattern`) receives every topic, so it has K × P lanes.
//! One [`SeqTracker`] per lane would cost 32 B × K × P per subscriber (256 MB at 10,000
//! subscribers, 100 topics, 8 lanes), so [`PatternTracker`] keeps one bitmap over the global event
//! numbers instead, as wide as the in-flight window: an event a subscriber has not received is
//! still in flight, so it is never further behind the newest event received than the window is
//! wide, and every event of its lane that could have overtaken it is inside the bitmap too.

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

/// One pattern subscriber's received events over every topic and lane, by global event number.
///
/// Event `g` is topic `g % K`, per-topic sequence `g / K`, lane `(g / K) % P`, so the events of
/// one lane are `stride = K × P` apart. Exact as long as the window of events in flight is at
/// most [`PatternTracker::span`] (see the module doc); older events count as duplicates, as in
/// [`SeqTracker`].
#[derive(Clone, Debug)]
pub struct PatternTracker {
    /// Bit `g % span` set: event `g` was received (for `g` in `high - span .. high`).
    bits: Box<[u64]>,
    /// One past the highest event received.
    high: u64,
    /// Distance between consecutive events of one topic's lane.
    stride: u64,
    /// Distinct events received.
    pub unique: u64,
}

impl PatternTracker {
    /// A tracker for `topics` topics, each published over `lanes` connections, with at most
    /// `window` events in flight.
    pub fn new(topics: usize, lanes: usize, window: usize) -> Self {
        let words = window.max(128).div_ceil(64);
        PatternTracker {
            bits: vec![0; words].into_boxed_slice(),
            high: 0,
            stride: (topics.max(1) * lanes.max(1)) as u64,
            unique: 0,
        }
    }

    /// Events the bitmap covers behind the newest one received.
    pub fn span(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn bit(&self, g: u64) -> bool {
        let i = g % self.span();
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, g: u64, on: bool) {
        let i = g % self.span();
        let word = &mut self.bits[(i / 64) as usize];
        if on {
            *word |= 1 << (i % 64);
        } else {
            *word &= !(1 << (i % 64));
        }
    }

    /// Records global event `g`.
    pub fn observe(&mut self, g: u64) -> Seen {
        if g >= self.high {
            // Forget what slides out of the bitmap: the slots are reused for high..=g.
            if g - self.high >= self.span() {
                self.bits.fill(0);
            } else {
                for old in self.high..g {
                    self.set(old, false);
                }
            }
            self.set(g, true);
            self.high = g + 1;
            self.unique += 1;
            return Seen::New;
        }
        if self.high - 1 - g >= self.span() || self.bit(g) {
            return Seen::Duplicate;
        }
        // A later event of the same lane already received means this one is out of order.
        let mut later = g + self.stride;
        let mut overtaken = false;
        while later < self.high {
            if self.bit(later) {
                overtaken = true;
                break;
            }
            later += self.stride;
        }
        self.set(g, true);
        self.unique += 1;
        if overtaken {
            Seen::Reordered
        } else {
            Seen::New
        }
    }

    /// Whether event `g` was received (assumed so when older than the bitmap reaches).
    pub fn has_seen(&self, g: u64) -> bool {
        if g >= self.high {
            return false;
        }
        self.high - 1 - g >= self.span() || self.bit(g)
    }

    /// Heap bytes this tracker holds.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.bits.len() * std::mem::size_of::<u64>()
    }
}

/// What one subscriber receives, and its accounting.
#[derive(Clone, Debug)]
pub enum SubTracker {
    /// One topic (the subscriber's), its lanes tracked by per-topic sequence.
    Topic(Tracker),
    /// Every topic through one pattern, tracked by global event number.
    Pattern(PatternTracker),
}

impl SubTracker {
    /// Whether global event `g` (of `topics` topics) was received by a subscriber of `topic`;
    /// `false` for another topic's event unless this is a pattern subscriber.
    pub fn has_seen(&self, g: u64, topic: u64, topics: u64) -> bool {
        match self {
            SubTracker::Topic(t) => g % topics == topic && t.has_seen(g / topics),
            SubTracker::Pattern(p) => p.has_seen(g),
        }
    }

    /// Whether the subscriber expects global event `g` (of `topics` topics).
    pub fn expects(&self, g: u64, topic: u64, topics: u64) -> bool {
        match self {
            SubTracker::Topic(_) => g % topics == topic,
            SubTracker::Pattern(_) => true,
        }
    }

    /// Distinct events received.
    pub fn unique(&self) -> u64 {
        match self {
            SubTracker::Topic(t) => t.unique(),
            SubTracker::Pattern(p) => p.unique,
        }
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

    /// One event body arrived at a subscriber of `topic` at `now_ns` (tool clock); a pattern
    /// subscriber's `topic` is ignored (every topic is its own).
    pub fn on_event(&mut self, tracker: &mut SubTracker, topic: u64, body: &[u8], now_ns: u64) {
        let Some((ts, g)) = payload::decode(body) else {
            self.foreign += 1;
            return;
        };
        let seen = match tracker {
            SubTracker::Topic(t) => {
                if g % self.topics != topic {
                    self.wrong_topic += 1;
                    return;
                }
                t.observe(g / self.topics)
            }
            SubTracker::Pattern(p) => p.observe(g),
        };
        match seen {
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

    /// Acknowledged events a subscriber of `topic` with this tracker should have received:
    /// its topic's, or every topic's for a pattern subscriber.
    pub fn expected_for(&self, topic: u64, tracker: &SubTracker) -> u64 {
        match tracker {
            SubTracker::Topic(_) => self.acked.get(topic as usize).copied().unwrap_or(0),
            SubTracker::Pattern(_) => self.acked.iter().sum(),
        }
    }

    /// Acknowledged events a subscriber of `topic` with this tracker never received.
    pub fn lost_for(&self, topic: u64, tracker: &SubTracker) -> u64 {
        self.expected_for(topic, tracker)
            .saturating_sub(tracker.unique())
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
        let mut s1 = SubTracker::Topic(Tracker::new(1));
        let mut s2 = SubTracker::Topic(Tracker::new(1));
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

    /// A small deterministic generator (xorshift), so the tests need no crate.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn pattern_tracker_matches_one_tracker_per_topic() {
        // The compact tracker must classify every arrival as one lane tracker per topic would:
        // random arrival orders (events displaced by less than the window), some duplicates.
        for (topics, lanes, window, seed) in [
            (1, 1, 32, 1),
            (3, 1, 64, 2),
            (10, 8, 128, 3),
            (100, 8, 256, 4),
            (7, 3, 1000, 5),
        ] {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
            let mut pattern = PatternTracker::new(topics, lanes, window);
            let mut per_topic: Vec<Tracker> = (0..topics).map(|_| Tracker::new(lanes)).collect();
            // Arrival order: ids 0..n, each delayed by less than half the window (as the
            // in-flight window bounds a real server's delays).
            let n = 20_000u64;
            let mut order: Vec<(u64, u64)> = (0..n)
                .map(|g| (g + rng.below(window as u64 / 2), g))
                .collect();
            order.sort_unstable();
            let order: Vec<u64> = order.into_iter().map(|(_, g)| g).collect();
            let (mut reordered, mut dups) = (0, 0);
            for (k, &g) in order.iter().enumerate() {
                // Sometimes repeat a recent arrival (a duplicate both must call one).
                let again = (rng.below(50) == 0 && k > 0)
                    .then(|| order[k - rng.below(k.min(8) as u64) as usize - 1]);
                for g in std::iter::once(g).chain(again) {
                    let topic = (g % topics as u64) as usize;
                    let want = per_topic[topic].observe(g / topics as u64);
                    assert_eq!(
                        pattern.observe(g),
                        want,
                        "event {g} ({topics} topics, {lanes} lanes)"
                    );
                    reordered += usize::from(want == Seen::Reordered);
                    dups += usize::from(want == Seen::Duplicate);
                }
            }
            let unique: u64 = per_topic.iter().map(Tracker::unique).sum();
            assert_eq!((pattern.unique, unique), (n, n));
            assert!(dups > 0, "the test repeats some events");
            if lanes * topics < window / 2 {
                assert!(reordered > 0, "the test reorders within a lane");
            }
            assert!((0..n).all(|g| pattern.has_seen(g)));
            assert!(!pattern.has_seen(n));
        }
    }

    #[test]
    fn pattern_tracker_checks_order_per_lane() {
        // Two topics, two lanes: stride 4. Lane (topic 0, lane 0) is 0, 4, 8…; (1, 0) is 1, 5, 9…
        let mut t = PatternTracker::new(2, 2, 32);
        assert_eq!(t.observe(4), Seen::New);
        assert_eq!(t.observe(1), Seen::New); // another topic: not a reorder
        assert_eq!(t.observe(2), Seen::New); // topic 0, lane 1: nothing of its lane seen yet
        assert_eq!(t.observe(0), Seen::Reordered); // 4 of its lane came first
        assert_eq!(t.observe(0), Seen::Duplicate);
        assert!(!t.has_seen(3) && t.has_seen(2));
        // Far ahead: the bitmap is reset, older events are "too old to tell" (duplicates).
        assert_eq!(t.observe(1000), Seen::New);
        assert!(!t.has_seen(873) && t.has_seen(872)); // 872 is 128 behind 1000
        assert_eq!(t.observe(1000 - 128), Seen::Duplicate);
        assert_eq!(t.observe(999), Seen::New); // lane of 999 has nothing later
        assert_eq!(t.observe(996), Seen::Reordered); // 1000 is its lane's next
        assert_eq!(t.unique, 7);
    }

    #[test]
    fn tally_counts_pattern_subscribers_over_every_topic() {
        // Three topics, two pattern subscribers: every event is for both.
        let mut tally = Tally::new(3, 16).unwrap();
        let mut a = SubTracker::Pattern(PatternTracker::new(3, 1, 16));
        let mut b = SubTracker::Pattern(PatternTracker::new(3, 1, 16));
        for _ in 0..9 {
            let g = tally.window.push(2);
            tally.acked[(g % 3) as usize] += 1;
        }
        tally.measure_from = 0;
        for g in 0..9 {
            // `topic` is ignored: a pattern subscriber has no wrong topic.
            tally.on_event(&mut a, 0, &body(0, g), 10);
        }
        for g in [0, 2, 1, 4, 3, 3, 8] {
            tally.on_event(&mut b, 0, &body(0, g), 10);
        }
        assert_eq!(tally.wrong_topic, 0);
        assert_eq!(tally.duplicates, 1); // b's second 3
        assert_eq!(tally.reordered, 0); // 2 before 1, 4 before 3: different topics
        assert_eq!(
            (tally.expected_for(0, &a), tally.expected_for(2, &b)),
            (9, 9)
        );
        assert_eq!(tally.lost_for(0, &a), 0);
        assert_eq!(tally.lost_for(0, &b), 3); // 5, 6, 7
        assert_eq!(tally.delivered, 9 + 6);
        // b abandoned: the window no longer waits for what it missed.
        assert_eq!(tally.window.oldest(), 5);
        for g in tally.window.oldest()..tally.window.next() {
            if b.expects(g, 0, 3) && !b.has_seen(g, 0, 3) {
                tally.window.delivered(g);
            }
        }
        assert_eq!(tally.window.in_flight(), 0);
        // Reordering inside one topic is caught: topic 1 is 1, 4, 7…
        let mut c = SubTracker::Pattern(PatternTracker::new(3, 1, 16));
        tally.on_event(&mut c, 0, &body(0, 4), 10);
        tally.on_event(&mut c, 0, &body(0, 1), 10);
        assert_eq!(tally.reordered, 1);
        // An exact subscriber of topic 1 expects only topic 1's events.
        let d = SubTracker::Topic(Tracker::new(1));
        assert_eq!(tally.expected_for(1, &d), 3);
        assert!(!d.expects(3, 1, 3) && d.expects(4, 1, 3));
    }

    #[test]
    fn pattern_trackers_stay_small_at_10k_by_100_topics() {
        // 10,000 pattern subscribers over 100 topics and 8 lanes, window 256 (fanout-10k's):
        // one bitmap each, not 800 lane trackers (which would be 800 × 32 B = 25.6 KB each).
        let t = PatternTracker::new(100, 8, 256);
        let per_sub = std::mem::size_of::<SubTracker>() + t.heap_bytes();
        assert!(per_sub <= 96, "{per_sub} B per subscriber");
        assert_eq!(std::mem::size_of::<SeqTracker>(), 32);
    }
}
