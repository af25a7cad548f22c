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

#[cfg(test)]
mod tests {
    use crate::hub::Hub;

    fn sorted(hub: &mut Hub) -> Vec<String> {
        let mut v: Vec<String> = hub
            .take_presence_changes()
            .into_iter()
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn subscribes_and_unsubscribes_note_their_topics_not_patterns_and_only_when_asked() {
        let mut hub = Hub::new("t", 4);
        let quiet = hub.subscribe("a", 1).unwrap();
        assert_eq!(
            hub.presence_changes(),
            0,
            "nothing is noted unless tracking is on"
        );
        hub.track_presence();
        let b = hub.subscribe("b", 2).unwrap();
        let b2 = hub.subscribe("b", 3).unwrap();
        let p = hub.subscribe("news/*", 2).unwrap();
        assert_eq!(hub.presence_changes(), 1);
        assert_eq!(sorted(&mut hub), ["b"]);
        hub.unsubscribe(b);
        hub.unsubscribe(quiet);
        hub.unsubscribe(p);
        assert_eq!(sorted(&mut hub), ["a", "b"]);
        assert_eq!((hub.topic_readers("b"), hub.topic_readers("a")), (1, 0));
        // A rewrite notes every topic with readers, a slice at a time.
        let _c = hub.subscribe("c", 4).unwrap();
        hub.take_presence_changes();
        let mut from = Some(0);
        while let Some(k) = from {
            from = hub.note_all_presence(k, 1);
        }
        assert_eq!(sorted(&mut hub), ["b", "c"]);
        hub.unsubscribe(b2);
    }
}
