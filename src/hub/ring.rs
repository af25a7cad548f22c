//! A topic's history: the last N events, in id order, by reference.

use std::collections::VecDeque;

use crate::buf::SharedEvent;

/// Bounded history of one topic.
#[derive(Default)]
pub struct Ring {
    events: VecDeque<SharedEvent>,
    /// Highest sequence number evicted: a client that resumes from before it has missed events.
    evicted_through: u64,
}

impl Ring {
    /// Appends `event` (whose seq is higher than any held), evicting the oldest past `cap`.
    /// Returns the evicted event, if any.
    pub fn push(&mut self, event: SharedEvent, cap: usize) -> Option<SharedEvent> {
        if cap == 0 {
            self.evicted_through = event.seq;
            return None;
        }
        debug_assert!(self.events.back().is_none_or(|last| last.seq < event.seq));
        self.events.push_back(event);
        if self.events.len() > cap {
            let evicted = self.events.pop_front()?;
            self.evicted_through = evicted.seq;
            return Some(evicted);
        }
        None
    }

    /// Events with seq greater than `seq`, oldest first.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &SharedEvent> {
        let start = self.events.partition_point(|e| e.seq <= seq);
        self.events.range(start..)
    }

    /// Highest evicted seq (0 when nothing was ever evicted).
    pub fn evicted_through(&self) -> u64 {
        self.evicted_through
    }

    /// True when no event is retained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events retained.
    pub fn len(&self) -> usize {
        self.events.len()
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
            seq.to_string().into(),
            Box::new([]),
            None,
            "".into(),
        ))
    }

    #[test]
    fn keeps_last_cap_and_remembers_eviction() {
        let mut ring = Ring::default();
        for seq in [2, 5, 9, 10] {
            ring.push(ev(seq), 3);
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.evicted_through(), 2);
        let after: Vec<u64> = ring.after(5).map(|e| e.seq).collect();
        assert_eq!(after, vec![9, 10]);
        let all: Vec<u64> = ring.after(0).map(|e| e.seq).collect();
        assert_eq!(all, vec![5, 9, 10]);
        assert_eq!(ring.after(10).count(), 0);
    }
}
