//! Which topics' readers changed, for a node's presence part in the backplane's Redis
//! (`backplane/presence.rs`): a set of topic names, filled by every subscribe and unsubscribe
//! while tracking is on (with a backplane only) and emptied by the loop when it writes the part.
//! Bounded by the number of topics; patterns have no presence.

use std::collections::HashSet;

use super::{ChannelId, Hub};

impl Hub {
    /// Starts noting the topics whose readers change (a node with a backplane).
    pub fn track_presence(&mut self) {
        self.presence_changed.get_or_insert_with(HashSet::new);
    }

    /// Notes that `id`'s readers changed (one lookup; the name is copied once per period).
    pub(super) fn note_presence(&mut self, id: ChannelId) {
        let Some(set) = &mut self.presence_changed else {
            return;
        };
        let Some(ch) = self.channels.get(id.0) else {
            return;
        };
        if ch.prefix.is_none() && !set.contains(&ch.name) {
            set.insert(ch.name.clone());
        }
    }

    /// The topics whose readers changed since the last call.
    pub fn take_presence_changes(&mut self) -> HashSet<Box<str>> {
        match &mut self.presence_changed {
            Some(set) => std::mem::take(set),
            None => HashSet::new(),
        }
    }

    /// How many topics are noted (a gauge: at most the number of topics).
    pub fn presence_changes(&self) -> usize {
        self.presence_changed.as_ref().map_or(0, HashSet::len)
    }

    /// Notes every topic with readers among the channel slots `from..from + scan` (a node's
    /// whole part is rewritten after Redis may have lost it, a bounded slice per call); the
    /// slot to go on from, `None` at the end.
    pub fn note_all_presence(&mut self, from: usize, scan: usize) -> Option<usize> {
        let cap = self.channels.capacity();
        let end = from.saturating_add(scan).min(cap);
        for k in from..end {
            if self.channels.get(k).is_some_and(|c| c.reader_count() > 0) {
                self.note_presence(ChannelId(k));
            }
        }
        (end < cap).then_some(end)
    }

    /// The number of readers of topic `name` (0 when it has no channel).
    pub fn topic_readers(&self, name: &str) -> usize {
        self.by_name
            .get(name)
            .and_then(|id| self.channels.get(id.0))
            .map_or(0, |c| c.reader_count())
    }
}
