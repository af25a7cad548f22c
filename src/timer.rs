//! Every deadline of the loop in one ordered structure, and "how long until the next one".
//!
//! Connections keep the [`TimerKey`] of each timer they armed and cancel it exactly, so the number
//! of armed timers is an exact count (the resource-accounting tests read it). Deadlines that move
//! on every byte (heartbeat after the last write, write stall after the last progress) are not
//! re-armed per byte: the connection stores the time of its last activity and, when the timer
//! fires early, arms it again for the real deadline. The poll timeout (and the C API's
//! `timeout_ms`) come from [`Timers::next_timeout`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a timer is for; the connection decides what firing means in its current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Lifecycle deadline (header, idle, write stall, grace): see `conn::state`.
    Deadline,
    /// Heartbeat comment on a quiet stream.
    Heartbeat,
    /// A stream's JWT expires: it is told to re-authenticate and closed.
    TokenExpiry,
}

/// Identifies one armed timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerKey {
    at: Instant,
    unique: u64,
}

impl TimerKey {
    /// When it fires.
    pub fn at(&self) -> Instant {
        self.at
    }
}

/// The loop's timers, ordered by deadline.
#[derive(Default)]
pub struct Timers {
    armed: BTreeMap<TimerKey, (usize, TimerKind)>,
    next_unique: u64,
}

impl Timers {
    /// Arms a timer for connection `conn` at `at`.
    pub fn arm(&mut self, at: Instant, conn: usize, kind: TimerKind) -> TimerKey {
        self.next_unique += 1;
        let key = TimerKey {
            at,
            unique: self.next_unique,
        };
        self.armed.insert(key, (conn, kind));
        key
    }

    /// Cancels a timer; cancelling one that already fired is harmless.
    pub fn cancel(&mut self, key: TimerKey) {
        self.armed.remove(&key);
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerKey, usize, TimerKind)> {
        let entry = self.armed.first_entry()?;
        if entry.key().at > now {
            return None;
        }
        let key = *entry.key();
        let (conn, kind) = entry.remove();
        Some((key, conn, kind))
    }

    /// Time until the earliest deadline (zero if one is due), or `None` with nothing armed.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.armed
            .first_key_value()
            .map(|(key, _)| key.at.saturating_duration_since(now))
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order_and_cancel_is_exact() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let late = timers.arm(t0 + Duration::from_millis(30), 1, TimerKind::Deadline);
        let early = timers.arm(t0 + Duration::from_millis(10), 2, TimerKind::Heartbeat);
        let same = timers.arm(t0 + Duration::from_millis(10), 3, TimerKind::Deadline);
        assert_eq!(timers.len(), 3);
        assert_eq!(timers.next_timeout(t0), Some(Duration::from_millis(10)));
        timers.cancel(same);
        timers.cancel(same);
        assert_eq!(timers.len(), 2);
        assert!(timers.pop_due(t0).is_none());
        let now = t0 + Duration::from_millis(40);
        assert_eq!(timers.pop_due(now), Some((early, 2, TimerKind::Heartbeat)));
        assert_eq!(timers.pop_due(now), Some((late, 1, TimerKind::Deadline)));
        assert!(timers.pop_due(now).is_none());
        assert!(timers.is_empty());
        assert_eq!(timers.next_timeout(now), None);
    }
}
