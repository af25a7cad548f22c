//! Per-topic figures for the console and `/stats`: the busiest topics by subscriber count.
//!
//! Read-only and on demand (once per stats request), so it costs nothing while nobody asks.

use super::{event_cost, Hub};

/// One topic's size, as the console's busiest-topics table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Connections subscribed to it.
    pub subscribers: usize,
    /// Events in its history.
    pub retained_events: usize,
    /// Bytes of id and data of those events (counted per topic, so an event retained by several
    /// topics counts in each).
    pub retained_bytes: usize,
}

impl Hub {
    /// The `limit` topics with the most subscribers, most first (ties: more retained events
    /// first, then by name, so the order is stable between polls).
    pub fn topic_summaries(&self, limit: usize) -> Vec<TopicSummary> {
        let mut ranked: Vec<(usize, usize, &str, usize)> = self
            .topics
            .iter()
            .map(|(key, t)| (t.subscribers.len(), t.history.len(), &*t.name, key))
            .collect();
        let order = |a: &(usize, usize, &str, usize), b: &(usize, usize, &str, usize)| {
            b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2))
        };
        // Select first so a hub with many topics sorts only the ones shown.
        if limit < ranked.len() {
            if limit == 0 {
                return Vec::new();
            }
            ranked.select_nth_unstable_by(limit - 1, order);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(order);
        ranked
            .into_iter()
            .map(|(subscribers, retained_events, name, key)| TopicSummary {
                name: name.to_string(),
                subscribers,
                retained_events,
                retained_bytes: self.topics[key]
                    .history
                    .after(0)
                    .map(|e| event_cost(e))
                    .sum(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_first_with_sizes_and_limit() {
        let mut hub = Hub::new("r", 2);
        for conn in 0..3 {
            hub.subscribe("b", conn);
        }
        hub.subscribe("a", 9);
        hub.subscribe("c", 9);
        hub.publish(&["a"], None, "12345");
        for data in ["x", "yy", "zzz"] {
            hub.publish(&["c"], None, data);
        }
        let top = hub.topic_summaries(10);
        let names: Vec<&str> = top.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["b", "c", "a"],
            "by subscribers, then retained events"
        );
        assert_eq!((top[0].subscribers, top[0].retained_events), (3, 0));
        // History keeps 2 events of c: "r-3"+"yy" and "r-4"+"zzz", id and data bytes.
        assert_eq!((top[1].retained_events, top[1].retained_bytes), (2, 5 + 6));
        assert_eq!((top[2].retained_events, top[2].retained_bytes), (1, 8));
        let top1 = hub.topic_summaries(1);
        assert_eq!(top1.len(), 1);
        assert_eq!(top1[0].name, "b");
        assert!(hub.topic_summaries(0).is_empty());
    }
}
