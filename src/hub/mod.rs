//! The hub: topics, who subscribes to them, the server-wide id sequence and per-topic history.
//!
//! The hub knows connections only as slab keys; it never touches sockets. Publishing is one call,
//! [`Hub::publish`], which assigns the next id, stores the event once (as an `Rc`) in the history
//! ring of every topic it names, and returns it with the topics' subscriber lists so the loop can
//! fan it out. That call is the seam where a backplane (e.g. Redis Streams) would sit: the id
//! would come from the backplane's sequencer instead of the local one (`handle::Sequencer`), and
//! events arriving from other nodes would enter through the same path. Ids are opaque strings to
//! everyone but [`Hub::parse_resume`].
//!
//! Ids are `<run>-<seq>`: `run` is fixed for one process (its start time plus a random salt) so an
//! id from an earlier run is recognised, and `seq` is strictly increasing across all topics.

mod ring;
mod summary;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use slab::Slab;

pub use ring::Ring;
pub use summary::TopicSummary;

use crate::buf::{Event, SharedEvent};
use crate::handle::{QueuedEvent, Sequencer};
use crate::metrics::ResetReason;

/// Index of a topic in the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TopicId(usize);

/// A connection's membership in one topic; given back to [`Hub::unsubscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription {
    topic: TopicId,
    slot: usize,
}

struct Topic {
    name: Box<str>,
    history: Ring,
    /// Slab keys of subscribed connections.
    subscribers: Slab<usize>,
}

impl Subscription {
    /// The topic subscribed to.
    pub fn topic(&self) -> TopicId {
        self.topic
    }
}

/// Where a resuming client stands, from its `Last-Event-ID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// An id of this run: replay what came after `seq`.
    After(u64),
    /// Not an id this run issued (earlier run, or garbage): replay everything retained, after a
    /// reset notice.
    Foreign,
}

/// What a resume yields: an optional reset notice, then the events to replay in id order.
pub struct Replay {
    /// Set when events were missed; the client is told before the replay.
    pub reset: Option<ResetReason>,
    /// The id to put on the reset notice: just before the first replayed event, so a client that
    /// reconnects right after the notice resumes without a gap.
    pub reset_id: String,
    /// Retained events after the resume point, in id order, each once.
    pub events: Vec<SharedEvent>,
}

/// An event recorded in history and waiting to be fanned out to the listed topics' subscribers.
pub type Outgoing = (SharedEvent, Vec<TopicId>);

/// Topics, subscriptions and history.
pub struct Hub {
    seq: Arc<Sequencer>,
    /// Highest seq recorded in history (ids above it were never seen by any client).
    last_seq: u64,
    /// Recorded events not yet fanned out, in id order.
    outbox: Vec<Outgoing>,
    history_per_topic: usize,
    by_name: HashMap<Box<str>, TopicId>,
    topics: Slab<Topic>,
    subscriptions: usize,
    history_events: usize,
    history_bytes: usize,
}

impl Hub {
    /// A hub whose ids start with `run` and which retains `history_per_topic` events per topic.
    pub fn new(run: &str, history_per_topic: usize) -> Hub {
        Hub::with_sequencer(Arc::new(Sequencer::new(run, usize::MAX)), history_per_topic)
    }

    pub(crate) fn with_sequencer(seq: Arc<Sequencer>, history_per_topic: usize) -> Hub {
        Hub {
            seq,
            last_seq: 0,
            outbox: Vec::new(),
            history_per_topic,
            by_name: HashMap::new(),
            topics: Slab::new(),
            subscriptions: 0,
            history_events: 0,
            history_bytes: 0,
        }
    }

    /// The run prefix of every id this hub issues.
    pub fn run(&self) -> &str {
        self.seq.run()
    }

    /// The id string of sequence number `seq`.
    pub fn id_for(&self, seq: u64) -> String {
        self.seq.id_for(seq)
    }

    /// Highest sequence number recorded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Publishes one event to `topics` (already validated, at least one, no duplicates): assigns
    /// the next id and records it in each topic's history, then queues it in the outbox for
    /// fan-out (after any event other threads queued before it).
    pub fn publish(
        &mut self,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
    ) -> SharedEvent {
        let (seq, queued) = {
            let mut state = self.seq.lock();
            state.last += 1;
            (state.last, std::mem::take(&mut state.queued))
        };
        self.record_queued(queued);
        let topics: Box<[Box<str>]> = topics.iter().map(|&t| Box::<str>::from(t)).collect();
        self.record(seq, topics, event_type.map(Box::from), data.into())
    }

    /// Records the events other threads queued (they already have their ids).
    pub fn drain_queued(&mut self) {
        let queued = std::mem::take(&mut self.seq.lock().queued);
        self.record_queued(queued);
    }

    /// Moves the events waiting for fan-out into `into` (which should be empty).
    pub fn take_outbox(&mut self, into: &mut Vec<Outgoing>) {
        std::mem::swap(&mut self.outbox, into);
    }

    fn record_queued(&mut self, queued: Vec<QueuedEvent>) {
        for q in queued {
            let topics = q.topics.into_iter().map(String::into_boxed_str).collect();
            self.record(
                q.seq,
                topics,
                q.event_type.map(String::into_boxed_str),
                q.data.into_boxed_str(),
            );
        }
    }

    fn record(
        &mut self,
        seq: u64,
        topics: Box<[Box<str>]>,
        event_type: Option<Box<str>>,
        data: Box<str>,
    ) -> SharedEvent {
        debug_assert!(seq > self.last_seq);
        self.last_seq = seq;
        let event = Rc::new(Event::new(
            seq,
            self.id_for(seq).into_boxed_str(),
            topics,
            event_type,
            data,
        ));
        let mut ids = Vec::with_capacity(event.topics.len());
        for name in event.topics.iter() {
            let id = self.topic_id_or_insert(name);
            let topic = &mut self.topics[id.0];
            let cost = event_cost(&event);
            if let Some(evicted) = topic
                .history
                .push(Rc::clone(&event), self.history_per_topic)
            {
                self.history_bytes -= event_cost(&evicted);
            } else if self.history_per_topic > 0 {
                self.history_events += 1;
            }
            if self.history_per_topic > 0 {
                self.history_bytes += cost;
            }
            ids.push(id);
        }
        self.outbox.push((Rc::clone(&event), ids));
        event
    }

    /// Subscribes connection `conn` to topic `name`.
    pub fn subscribe(&mut self, name: &str, conn: usize) -> Subscription {
        let topic = self.topic_id_or_insert(name);
        let slot = self.topics[topic.0].subscribers.insert(conn);
        self.subscriptions += 1;
        Subscription { topic, slot }
    }

    /// Ends a subscription; a topic left with no subscribers and no history is forgotten.
    pub fn unsubscribe(&mut self, sub: Subscription) {
        let Some(topic) = self.topics.get_mut(sub.topic.0) else {
            debug_assert!(false, "unsubscribe from a missing topic");
            return;
        };
        if topic.subscribers.try_remove(sub.slot).is_some() {
            self.subscriptions -= 1;
        }
        if topic.subscribers.is_empty() && topic.history.is_empty() {
            let topic = self.topics.remove(sub.topic.0);
            self.by_name.remove(&topic.name);
        }
    }

    /// The id of topic `name`, if the hub knows it.
    pub fn topic_id(&self, name: &str) -> Option<TopicId> {
        self.by_name.get(name).copied()
    }

    /// Slab keys of the connections subscribed to `topic`.
    pub fn subscribers(&self, topic: TopicId) -> impl Iterator<Item = usize> + '_ {
        self.topics
            .get(topic.0)
            .into_iter()
            .flat_map(|t| t.subscribers.iter().map(|(_, &conn)| conn))
    }

    /// Interprets a client's `Last-Event-ID`.
    pub fn parse_resume(&self, last_event_id: &str) -> Resume {
        let seq = last_event_id
            .strip_prefix(self.seq.run())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|digits| {
                // Plain decimal only, so that one seq has exactly one spelling.
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    digits.parse::<u64>().ok()
                }
            });
        match seq {
            Some(seq) if seq <= self.last_seq => Resume::After(seq),
            _ => Resume::Foreign,
        }
    }

    /// The events of `topics` to replay for a client at `resume`, merged in id order and without
    /// duplicates (an event published to several of them is replayed once).
    pub fn replay(&self, topics: &[&str], resume: Resume) -> Replay {
        let (after, mut reset) = match resume {
            Resume::After(seq) => (seq, None),
            Resume::Foreign => (0, Some(ResetReason::Unknown)),
        };
        let mut events: Vec<SharedEvent> = Vec::new();
        for name in topics {
            let Some(&id) = self.by_name.get(*name) else {
                continue;
            };
            let history = &self.topics[id.0].history;
            if reset.is_none() && history.evicted_through() > after {
                reset = Some(ResetReason::Expired);
            }
            events.extend(history.after(after).cloned());
        }
        if topics.len() > 1 {
            events.sort_unstable_by_key(|e| e.seq);
            events.dedup_by_key(|e| e.seq);
        }
        let before_first = events.first().map_or(self.last_seq, |e| e.seq - 1);
        Replay {
            reset,
            reset_id: self.id_for(before_first),
            events,
        }
    }

    /// Topic subscriptions held.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    /// Topics known (with subscribers or history).
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Events retained, summed over topics.
    pub fn history_events(&self) -> usize {
        self.history_events
    }

    /// Bytes of id and data retained, summed over topics.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    fn topic_id_or_insert(&mut self, name: &str) -> TopicId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = TopicId(self.topics.insert(Topic {
            name: name.into(),
            history: Ring::default(),
            subscribers: Slab::new(),
        }));
        self.by_name.insert(name.into(), id);
        id
    }
}

fn event_cost(event: &Event) -> usize {
    event.id.len() + event.data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(events: &[SharedEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn ids_increase_across_topics_and_multi_topic_publish_is_one_event() {
        let mut hub = Hub::new("run", 8);
        let a = hub.publish(&["a"], None, "1");
        let ab = hub.publish(&["a", "b"], Some("t"), "2");
        assert_eq!(&*a.id, "run-1");
        assert_eq!(&*ab.id, "run-2");
        let mut out = Vec::new();
        hub.take_outbox(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].1.len(), 2, "one event, two topics");
        let replay = hub.replay(&["a", "b"], Resume::After(0));
        assert_eq!(
            seqs(&replay.events),
            vec![1, 2],
            "event in a and b replayed once"
        );
        assert!(replay.reset.is_none());
    }

    #[test]
    fn replay_interleaves_topics_in_id_order() {
        let mut hub = Hub::new("r", 8);
        for (i, topic) in ["a", "b", "a", "c", "b"].iter().enumerate() {
            hub.publish(&[topic], None, &i.to_string());
        }
        let replay = hub.replay(&["b", "a"], Resume::After(1));
        assert_eq!(seqs(&replay.events), vec![2, 3, 5]);
        assert_eq!(replay.reset_id, "r-1");
    }

    #[test]
    fn resume_older_than_history_is_expired_and_foreign_is_unknown() {
        let mut hub = Hub::new("r", 2);
        for i in 0..5 {
            hub.publish(&["a"], None, &i.to_string());
        }
        assert_eq!(hub.history_events(), 2);
        let expired = hub.replay(&["a"], Resume::After(1));
        assert_eq!(expired.reset, Some(ResetReason::Expired));
        assert_eq!(seqs(&expired.events), vec![4, 5]);
        assert_eq!(expired.reset_id, "r-3");
        let exact = hub.replay(&["a"], Resume::After(3));
        assert!(
            exact.reset.is_none(),
            "3 was the last evicted: nothing missed"
        );
        assert_eq!(hub.parse_resume("other-3"), Resume::Foreign);
        assert_eq!(hub.parse_resume("r-6"), Resume::Foreign, "from the future");
        assert_eq!(hub.parse_resume("r-+3"), Resume::Foreign);
        assert_eq!(hub.parse_resume("r-"), Resume::Foreign);
        assert_eq!(hub.parse_resume("r-5"), Resume::After(5));
        let foreign = hub.replay(&["a"], Resume::Foreign);
        assert_eq!(foreign.reset, Some(ResetReason::Unknown));
        assert_eq!(seqs(&foreign.events), vec![4, 5]);
    }

    #[test]
    fn subscriptions_are_counted_and_empty_topics_forgotten() {
        let mut hub = Hub::new("r", 0);
        let s1 = hub.subscribe("a", 7);
        let s2 = hub.subscribe("a", 9);
        let s3 = hub.subscribe("b", 7);
        assert_eq!(hub.subscription_count(), 3);
        hub.publish(&["a"], None, "x");
        let mut out = Vec::new();
        hub.take_outbox(&mut out);
        let mut subs: Vec<usize> = hub.subscribers(out[0].1[0]).collect();
        subs.sort();
        assert_eq!(subs, vec![7, 9]);
        for s in [s1, s2, s3] {
            hub.unsubscribe(s);
        }
        assert_eq!(hub.subscription_count(), 0);
        assert_eq!(
            hub.topic_count(),
            0,
            "history 0: topics vanish with their subscribers"
        );
        assert_eq!(hub.history_events(), 0);
    }
}
