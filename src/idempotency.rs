//! `Idempotency-Key` without a backplane: the id each key was answered with, for a window, so a
//! publisher that retries after a lost answer gets the original id instead of a second event.
//! Bounded in count (the oldest keys go first) and in time. With a backplane the same record
//! lives in Redis, written by the append script atomically with the event.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Keys remembered at most; past it the oldest are forgotten (their retries publish again).
pub const MAX_KEYS: usize = 65_536;
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// True when `key` is 1..=128 visible ASCII characters (what goes into a Redis key name and a
/// log line safely).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Remembered answers: key -> (seq, id).
pub struct Idempotency {
    window: Duration,
    answers: HashMap<Box<str>, (u64, Box<str>)>,
    /// Keys in the order they were first answered, with when.
    order: VecDeque<(Instant, Box<str>)>,
}

impl Default for Idempotency {
    /// The default window, 300 s (`--idempotency-window-secs`).
    fn default() -> Self {
        Idempotency::new(Duration::from_secs(300))
    }
}

impl Idempotency {
    /// Remembers each answer for `window`.
    pub fn new(window: Duration) -> Idempotency {
        Idempotency {
            window,
            answers: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The answer given to `key`, if it is still remembered.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<(u64, String)> {
        self.expire(now);
        self.answers
            .get(key)
            .map(|(seq, id)| (*seq, id.to_string()))
    }

    /// Remembers the answer to `key`.
    pub fn put(&mut self, key: &str, seq: u64, id: &str, now: Instant) {
        self.expire(now);
        if self.answers.contains_key(key) {
            return;
        }
        while self.order.len() >= MAX_KEYS {
            if let Some((_, old)) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
        self.answers.insert(key.into(), (seq, id.into()));
        self.order.push_back((now, key.into()));
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.answers.remove(&key);
            }
        }
        if self.order.is_empty() && self.order.capacity() > 1024 {
            self.order = VecDeque::new();
            self.answers = HashMap::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_within_the_window_then_forgets() {
        let t0 = Instant::now();
        let mut idem = Idempotency::new(Duration::from_secs(10));
        assert_eq!(idem.get("k", t0), None);
        idem.put("k", 7, "run-7", t0);
        assert_eq!(
            idem.get("k", t0 + Duration::from_secs(9)),
            Some((7, "run-7".into()))
        );
        // A second answer for the same key does not replace the first.
        idem.put("k", 8, "run-8", t0);
        assert_eq!(idem.get("k", t0), Some((7, "run-7".into())));
        assert_eq!(idem.get("k", t0 + Duration::from_secs(10)), None);
        assert!(idem.is_empty());
    }

    #[test]
    fn bounded_in_count() {
        let t0 = Instant::now();
        let mut idem = Idempotency::new(Duration::from_secs(3600));
        for i in 0..(MAX_KEYS as u64 + 10) {
            idem.put(&format!("k{i}"), i, "x", t0);
        }
        assert_eq!(idem.len(), MAX_KEYS);
        assert_eq!(idem.get("k0", t0), None);
        assert!(idem.get(&format!("k{}", MAX_KEYS + 9), t0).is_some());
    }

    #[test]
    fn key_syntax() {
        assert!(valid_key("order-42:retry"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"k".repeat(129)));
        assert!(!valid_key("é"));
    }
}
