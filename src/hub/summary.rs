//! Per-topic figures for the console and `/stats`: the busiest channels by subscriber count.
//!
//! Read-only and on demand (once per stats request), so it costs nothing while nobody asks.

use super::Hub;

/// One channel's size, as the console's busiest-topics table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSummary {
    /// Topic name (or pattern, ending in `*`).
    pub name: String,
    /// Connections subscribed to it.
    pub subscribers: usize,
    /// Events in its history.
    pub retained_events: usize,
    /// Bytes those events hold, encodings included (an event retained by several topics counts
    /// in each).
    pub retained_bytes: usize,
}

/// Most channel slots one page of the server API's topic list visits, so that a page never
/// walks every topic (the page then ends early, with a cursor to go on).
const TOPICS_SCAN: usize = 8192;

impl Hub {
    /// One page of `GET /api/v1/topics`: channels whose name starts with `prefix`, from the
    /// channel slot `cursor` on, at most `limit`, with the cursor of the next page (`None`: the
    /// end). Patterns are listed too, marked by their `*`; their retained figures are those of
    /// their own log (a pattern keeps no history: its replays come from its topics).
    pub fn topics_page(
        &self,
        prefix: &str,
        cursor: u64,
        limit: usize,
    ) -> (Vec<crate::api::TopicInfo>, Option<u64>) {
        let cap = self.channels.capacity();
        let mut k = usize::try_from(cursor).unwrap_or(usize::MAX).min(cap);
        let end = k.saturating_add(TOPICS_SCAN).min(cap);
        let mut list = Vec::new();
        while k < end && list.len() < limit {
            if let Some(c) = self.channels.get(k) {
                if c.name.starts_with(prefix) {
                    list.push(crate::api::TopicInfo {
                        name: c.name.to_string(),
                        subscribers: c.reader_count(),
                        retained_events: c.replayable(),
                        retained_bytes: c.replayable_events().map(|e| e.footprint()).sum(),
                        last_event_unix: (c.last_event_secs > 0).then_some(c.last_event_secs),
                    });
                }
            }
            k += 1;
        }
        (list, (k < cap).then_some(k as u64))
    }

    /// The `limit` channels with the most subscribers, most first (ties: more retained events
    /// first, then by name, so the order is stable between polls).
    pub fn topic_summaries(&self, limit: usize) -> Vec<TopicSummary> {
        let mut ranked: Vec<(usize, usize, &str, usize)> = self
            .channels
            .iter()
            .map(|(key, c)| (c.reader_count(), c.replayable(), &*c.name, key))
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
                retained_bytes: self.channels[key]
                    .replayable_events()
                    .map(|e| e.footprint())
                    .sum(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Event;

    #[test]
    fn busiest_first_with_sizes_and_limit() {
        let mut hub = Hub::new("r", 2);
        let mut subs = Vec::new();
        for conn in 0..3 {
            subs.push(hub.subscribe("b", conn).unwrap());
        }
        subs.push(hub.subscribe("a", 9).unwrap());
        subs.push(hub.subscribe("c", 9).unwrap());
        hub.publish(&["a"], None, "12345").unwrap();
        for data in ["x", "yy", "zzz"] {
            hub.publish(&["c"], None, data).unwrap();
        }
        let top = hub.topic_summaries(10);
        let names: Vec<&str> = top.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["b", "c", "a"],
            "by subscribers, then retained events"
        );
        assert_eq!((top[0].subscribers, top[0].retained_events), (3, 0));
        let size = |seq: u64, data: &str| {
            Event::new(
                seq,
                format!("r-{seq}").into(),
                vec!["c".into()].into(),
                None,
                data.into(),
            )
            .footprint()
        };
        assert_eq!(
            (top[1].retained_events, top[1].retained_bytes),
            (2, size(3, "yy") + size(4, "zzz"))
        );
        assert_eq!(top[2].retained_events, 1);
        let top1 = hub.topic_summaries(1);
        assert_eq!(top1.len(), 1);
        assert_eq!(top1[0].name, "b");
        assert!(hub.topic_summaries(0).is_empty());
        for s in subs {
            hub.unsubscribe(s);
        }
    }
}
