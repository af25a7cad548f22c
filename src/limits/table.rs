//! The bounded tables behind the rate limits: a token bucket per key, at most `cap` keys.
//!
//! Entries are kept in a doubly linked list in order of last use (indices into one slot
//! vector, no allocation per entry after the first `cap`). Each use moves its entry to the
//! front; each insertion first drops, from the back, up to two entries idle long enough that
//! their bucket is full again (they remember nothing), then, at the cap, the least recently
//! used one. Every operation is O(1), and the memory never exceeds `cap` entries whatever the
//! number of distinct keys: a million source addresses cost the same as `cap`.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens at most, refilled at `rate` per second.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: u64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst as f64,
            at: now,
        }
    }

    /// Takes one token, or says how many whole seconds until one is there (at least 1).
    pub fn take(&mut self, rate: u64, burst: u64, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst as f64);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / (rate.max(1) as f64);
        Err((wait.ceil() as u64).max(1))
    }
}

/// How long an unused bucket takes to fill up again: past that it can be forgotten.
pub fn refill_time(rate: u64, burst: u64) -> Duration {
    Duration::from_secs_f64(burst as f64 / rate.max(1) as f64).max(Duration::from_secs(1))
}

const NIL: usize = usize::MAX;

struct Slot<K> {
    key: K,
    bucket: Bucket,
    used: Instant,
    prev: usize,
    next: usize,
}

/// Token buckets by key, bounded to `cap` entries, least recently used first out.
pub struct Table<K> {
    index: HashMap<K, usize>,
    slots: Vec<Slot<K>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used.
    tail: usize,
    cap: usize,
    /// Entries evicted at the cap while still remembering something.
    pub evicted: u64,
}

impl<K: Copy + Eq + Hash> Table<K> {
    /// An empty table of at most `cap` entries (at least 1).
    pub fn new(cap: usize) -> Table<K> {
        Table {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            cap: cap.max(1),
            evicted: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// No entry held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Slots allocated (never more than the cap).
    pub fn allocated(&self) -> usize {
        self.slots.len()
    }

    /// Takes a token from `key`'s bucket (a full one for a key not seen, or forgotten).
    pub fn take(&mut self, key: K, rate: u64, burst: u64, now: Instant) -> Result<(), u64> {
        let i = match self.index.get(&key) {
            Some(&i) => {
                self.unlink(i);
                i
            }
            None => self.insert(key, Bucket::full(burst, now), refill_time(rate, burst), now),
        };
        self.slots[i].used = now;
        self.push_front(i);
        self.slots[i].bucket.take(rate, burst, now)
    }

    fn insert(&mut self, key: K, bucket: Bucket, idle: Duration, now: Instant) -> usize {
        for _ in 0..2 {
            let t = self.tail;
            if t == NIL || now.saturating_duration_since(self.slots[t].used) < idle {
                break;
            }
            self.remove(t);
        }
        if self.index.len() >= self.cap {
            self.evicted += 1;
            self.remove(self.tail);
        }
        let slot = Slot {
            key,
            bucket,
            used: now,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.index.insert(key, i);
        i
    }

    fn remove(&mut self, i: usize) {
        if i == NIL {
            return;
        }
        self.unlink(i);
        self.index.remove(&self.slots[i].key);
        self.free.push(i);
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n].prev = prev,
        }
        self.slots[i].prev = NIL;
        self.slots[i].next = NIL;
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].next = self.head;
        self.slots[i].prev = NIL;
        match self.head {
            NIL => self.tail = i,
            h => self.slots[h].prev = i,
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_one_token_per_period() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(1, 3, t0), Ok(()));
        }
        assert_eq!(b.take(1, 3, t0), Err(1));
        assert_eq!(b.take(1, 3, t0 + Duration::from_millis(400)), Err(1));
        assert_eq!(b.take(1, 3, t0 + Duration::from_millis(1000)), Ok(()));
        // Half a token per second: two seconds to wait for the next one.
        let mut slow = Bucket::full(1, t0);
        assert_eq!(slow.take(1, 1, t0), Ok(()));
        let mut half = Bucket {
            tokens: 0.0,
            at: t0,
        };
        assert_eq!(half.take(1, 1, t0), Err(1));
        assert_eq!(half.take(1, 1, t0 + Duration::from_millis(999)), Err(1));
        // Refill never exceeds the burst.
        let mut long = Bucket::full(2, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(long.take(10, 2, later), Ok(()));
        assert_eq!(long.take(10, 2, later), Ok(()));
        assert_eq!(long.take(10, 2, later), Err(1));
    }

    #[test]
    fn a_million_distinct_keys_never_grow_the_table_past_its_cap() {
        let t0 = Instant::now();
        let mut t: Table<u32> = Table::new(1000);
        for k in 0..1_000_000u32 {
            // All within one second: nothing is idle, so the cap does the bounding.
            let now = t0 + Duration::from_nanos(u64::from(k));
            assert_eq!(t.take(k, 1, 1, now), Ok(()));
            assert!(t.len() <= 1000);
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.allocated(), 1000);
        assert_eq!(t.evicted, 999_000);
        // The most recent keys are the ones kept (their buckets are empty), the oldest are gone.
        let now = t0 + Duration::from_millis(2);
        assert_eq!(t.take(999_999, 1, 1, now), Err(1));
        assert_eq!(t.take(0, 1, 1, now), Ok(()), "evicted: a fresh bucket");
    }

    #[test]
    fn idle_entries_expire_before_the_cap_is_reached() {
        let t0 = Instant::now();
        let mut t: Table<u32> = Table::new(100);
        for k in 0..10 {
            assert_eq!(t.take(k, 1, 1, t0), Ok(()));
        }
        assert_eq!(t.len(), 10);
        // Two idle entries go per insertion, oldest first, without any eviction at the cap.
        let later = t0 + Duration::from_secs(2);
        for k in 10..20 {
            assert_eq!(t.take(k, 1, 1, later), Ok(()));
        }
        assert_eq!(t.len(), 10, "the ten idle ones were dropped");
        assert_eq!(t.evicted, 0);
        // A key used again moves to the front and survives the others' expiry.
        assert_eq!(t.take(10, 1, 1, later), Err(1));
    }

    #[test]
    fn list_order_is_least_recently_used_first_out() {
        let t0 = Instant::now();
        let mut t: Table<u32> = Table::new(3);
        for k in [1, 2, 3] {
            let _ = t.take(k, 1, 1, t0);
        }
        let _ = t.take(1, 1, 1, t0); // 1 is now the most recent
        let _ = t.take(4, 1, 1, t0); // evicts 2
        assert_eq!(t.take(2, 1, 1, t0), Ok(()), "2 was evicted: fresh bucket");
        assert_eq!(t.take(1, 1, 1, t0), Err(1), "1 was kept");
        assert_eq!(t.len(), 3);
    }
}
