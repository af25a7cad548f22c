//! The hub: channels (topics and topic patterns), their shared logs and readers, the server-wide
//! id sequence, history, and the backlog of events waiting to be logged.
//!
//! The hub knows connections only as slab keys; it never touches sockets. Every event, whoever
//! published it (HTTP, PUBLISH frame, another thread through a `PublishHandle`), enters through
//! one path: it gets the next id from the sequencer, waits in the backlog if events are ahead of
//! it, and is then *recorded*: appended once, by reference, to the log of each of its topics and
//! of each pattern channel matching one of them. Subscribers hold cursors into those logs; the
//! write path sends each one everything past its cursor (see `conn::output`). So the order every
//! subscriber sees is the order of recording, which is id order, and an event reaches a reader at
//! most once per channel (a reader of several channels merges them by id, once).
//!
//! History is the replayable tail of each topic's log: at most `--history` events per topic and
//! `--history-bytes` in total (each event counted once, encodings included; the oldest go
//! first). Resume starts a cursor inside it. A topic with no reader and nothing retained does not
//! exist, and `--max-topics` bounds how many channels exist at once.
//!
//! `record` is the one entry point of every event. Without a backplane, `publish` assigns the id
//! and records; with one (see `backplane`), ids come from Redis and the events read back from the
//! shared stream enter through `record_remote`, then the same backlog and `record`: fan-out,
//! history, replay and the slow-consumer rules are one code path either way.

mod channel;
mod summary;

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use slab::Slab;

pub use channel::Channel;
pub use summary::TopicSummary;

use crate::buf::{encoded_len_bound, Event, SharedEvent};
use crate::handle::{QueuedEvent, Sequencer};
use crate::metrics::ResetReason;

/// Index of a channel in the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelId(pub(crate) usize);

/// One connection's subscription to one channel: the handle of its cursor.
#[derive(Debug, PartialEq, Eq)]
pub struct Subscription {
    channel: ChannelId,
    handle: usize,
    /// Events above this seq reach the subscriber through this subscription.
    start_seq: u64,
    /// Absolute log index where this subscription stops (an UNSUBSCRIBE lets it finish what
    /// was recorded before it, then ends it); `u64::MAX` while subscribed.
    limit: u64,
}

impl Subscription {
    /// The channel subscribed to.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Events with a higher seq reach the subscriber through this subscription.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }

    /// Absolute log index where the subscription stops (`u64::MAX`: it does not).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// True until an UNSUBSCRIBE.
    pub fn is_active(&self) -> bool {
        self.limit == u64::MAX
    }

    pub(crate) fn handle(&self) -> usize {
        self.handle
    }
}

/// How a client's `Last-Event-ID` relates to this run's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// An id of this run: replay what came after this sequence number.
    After(u64),
    /// Not an id of this run (earlier run, another server, garbage): replay everything retained,
    /// after a reset notice.
    Foreign,
}

/// Where a new stream starts: after which seq, and whether the client is told it missed events.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamStart {
    /// Cursors start after this seq (within each log's history).
    pub after: u64,
    /// Set when events were missed; the client is told before the replay.
    pub reset: Option<ResetReason>,
    /// The id to put on the reset notice: just before the first replayed event, so a client that
    /// reconnects right after the notice resumes without a gap.
    pub reset_id: String,
}

/// Why the hub refused something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubError {
    /// `--max-topics` channels exist and none could be released.
    TooManyTopics,
    /// The event's encoding could exceed `--max-queue-bytes`.
    TooLarge,
}

/// A published event: its seq and the id returned to the publisher.
#[derive(Debug)]
pub struct Published {
    /// Sequence number.
    pub seq: u64,
    /// The id string (`<run>-<seq>`).
    pub id: String,
}

/// Bounds the hub enforces.
#[derive(Clone, Copy, Debug)]
pub struct HubLimits {
    /// Replayable events per topic (0: no history).
    pub history: usize,
    /// Total bytes of retained history (events counted once, encodings included).
    pub history_bytes: usize,
    /// Most channels (topics and patterns) at once.
    pub max_topics: usize,
    /// Largest encoded event (the per-connection queue cap).
    pub max_event_bytes: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            history: 1024,
            history_bytes: 64 << 20,
            max_topics: 65_536,
            max_event_bytes: 2 << 20,
        }
    }
}

/// A resumed reader whose id is ahead of what this node has recorded (a backplane node lagging
/// the node that served the client before): events up to `through` are skipped for it as they
/// arrive, since the client has them.
struct Skip {
    channel: ChannelId,
    handle: usize,
    through: u64,
}

/// How far ahead of the last recorded seq a resume id may be on a backplane node (ids further
/// ahead are not believed: they would make the stream skip events).
const AHEAD_MAX: u64 = 1 << 20;

/// Channels, subscriptions, history and the backlog.
pub struct Hub {
    seq: Arc<Sequencer>,
    /// The id prefix: the run id, or the backplane dataset's epoch.
    run: Box<str>,
    /// Ids ahead of `last_seq` may be resumed from (the events are on their way from Redis).
    ahead_ok: bool,
    skips: Vec<Skip>,
    limits: HubLimits,
    /// Highest seq recorded (ids above it were never seen by any client).
    last_seq: u64,
    /// Events with ids, waiting to be recorded behind earlier ones (cross-thread publishes, and
    /// local ones that arrive while a backlog is being worked off).
    backlog: VecDeque<Event>,
    by_name: HashMap<Box<str>, ChannelId>,
    /// Pattern prefix -> pattern channel.
    patterns: HashMap<Box<str>, ChannelId>,
    channels: Slab<Channel>,
    /// Channels that got entries since the last `take_touched`.
    touched: Vec<ChannelId>,
    subscriptions: usize,
    /// Every retained event once, oldest first (history-bytes eviction order); may hold events
    /// already evicted everywhere (`holders == 0`), removed lazily.
    retained: VecDeque<SharedEvent>,
    retained_gone: usize,
    history_events: usize,
    history_bytes: usize,
    recorded: u64,
    /// The highest seq evicted from a channel that was then forgotten: a channel created later
    /// may have had events up to it, so a resume from before it is told it may have missed some
    /// (never silence).
    removed_through: u64,
}

impl Hub {
    /// A hub whose ids start with `run` and which retains `history_per_topic` events per topic.
    pub fn new(run: &str, history_per_topic: usize) -> Hub {
        Hub::with_sequencer(
            Arc::new(Sequencer::new(run, usize::MAX, usize::MAX)),
            HubLimits {
                history: history_per_topic,
                ..HubLimits::default()
            },
        )
    }

    pub(crate) fn with_sequencer(seq: Arc<Sequencer>, limits: HubLimits) -> Hub {
        Hub {
            run: seq.run().into(),
            ahead_ok: false,
            skips: Vec::new(),
            seq,
            limits,
            last_seq: 0,
            backlog: VecDeque::new(),
            by_name: HashMap::new(),
            patterns: HashMap::new(),
            channels: Slab::new(),
            touched: Vec::new(),
            subscriptions: 0,
            retained: VecDeque::new(),
            retained_gone: 0,
            history_events: 0,
            history_bytes: 0,
            recorded: 0,
            removed_through: 0,
        }
    }

    /// The sequencer shared with other threads' publish handles.
    pub(crate) fn sequencer(&self) -> &Sequencer {
        &self.seq
    }

    /// The run prefix of every id this hub issues.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The id string of sequence number `seq`.
    pub fn id_for(&self, seq: u64) -> String {
        format!("{}-{}", self.run, seq)
    }

    /// Takes ids from a backplane: they are prefixed by its dataset's `epoch`, and a resume id
    /// may be ahead of what this node has recorded.
    pub fn set_epoch(&mut self, epoch: &str) {
        self.run = epoch.into();
        self.ahead_ok = true;
    }

    /// Makes every retained event unreplayable (the backplane's dataset was lost: those ids name
    /// nothing any more). Live cursors are not moved.
    pub fn forget_history(&mut self) {
        while self.evict_oldest_retained() {}
    }

    /// Queues an event read from the backplane, to be recorded in turn. Seqs not above the last
    /// one queued are dropped (a duplicate read cannot reach a subscriber twice).
    pub fn record_remote(
        &mut self,
        seq: u64,
        topics: Vec<Box<str>>,
        event_type: Option<Box<str>>,
        data: Box<str>,
    ) {
        let last = self.backlog.back().map_or(self.last_seq, |e| e.seq);
        if seq <= last {
            log::error!("backplane event {seq} is not after {last}: dropped");
            return;
        }
        let id = self.id_for(seq).into_boxed_str();
        self.backlog
            .push_back(Event::new(seq, id, topics.into(), event_type, data));
    }

    /// Highest sequence number recorded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    // ----- publishing ------------------------------------------------------------------------

    /// Publishes one event to `topics` (validated, at least one, no duplicates): assigns the next
    /// id and records it, or queues it behind a backlog. Never fails once it returns an id.
    pub fn publish(
        &mut self,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
    ) -> Result<Published, HubError> {
        self.check_size(topics, event_type, data)?;
        // Refuse before an id is given, rather than acknowledge an event with nowhere to go.
        for topic in topics {
            self.channel_or_insert(topic)?;
        }
        let (seq, queued) = {
            let mut state = self.seq.lock();
            state.last += 1;
            state.queued_bytes = 0;
            (state.last, std::mem::take(&mut state.queued))
        };
        self.take_queued(queued);
        let id = self.id_for(seq);
        let event = Event::new(
            seq,
            id.clone().into_boxed_str(),
            topics.iter().map(|&t| Box::<str>::from(t)).collect(),
            event_type.map(Box::from),
            data.into(),
        );
        if self.backlog.is_empty() {
            // Nothing ahead of it: the common case records at once.
            if let Err(e) = self.record(event) {
                log::warn!("event {id} not recorded: {e:?}");
            }
        } else {
            self.backlog.push_back(event);
        }
        Ok(Published { seq, id })
    }

    /// Refuses an event whose encoding could exceed the per-connection queue cap.
    pub fn check_size(
        &self,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
    ) -> Result<(), HubError> {
        // Room for an id of this run or of a backplane epoch (same shape) and a 20-digit seq.
        let id_len = self.run.len() + 21;
        if encoded_len_bound(id_len, topics, event_type, data) > self.limits.max_event_bytes {
            return Err(HubError::TooLarge);
        }
        Ok(())
    }

    /// Moves the events other threads queued (ids already assigned) into the backlog.
    pub fn drain_queued(&mut self) {
        let queued = {
            let mut state = self.seq.lock();
            state.queued_bytes = 0;
            std::mem::take(&mut state.queued)
        };
        self.take_queued(queued);
    }

    fn take_queued(&mut self, queued: Vec<QueuedEvent>) {
        for q in queued {
            let id = self.id_for(q.seq).into_boxed_str();
            let topics = q.topics.into_iter().map(String::into_boxed_str).collect();
            let event = Event::new(
                q.seq,
                id,
                topics,
                q.event_type.map(String::into_boxed_str),
                q.data.into_boxed_str(),
            );
            self.backlog.push_back(event);
        }
    }

    /// Records backlog events, oldest first, until about `budget` bytes were recorded: a large
    /// backlog is fanned out in slices, one per loop iteration, so each slice passes the
    /// slow-consumer check before the next one is added.
    pub fn record_backlog(&mut self, budget: usize) {
        let mut done = 0;
        while done < budget {
            let Some(event) = self.backlog.pop_front() else {
                break;
            };
            done += event.footprint();
            let seq = event.seq;
            if let Err(e) = self.record(event) {
                log::warn!("event {} not recorded: {e:?}", self.id_for(seq));
            }
        }
        if self.backlog.is_empty() && self.backlog.capacity() > 64 {
            self.backlog = VecDeque::new();
        }
    }

    /// Events waiting in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Appends `event` to its topics' logs and to the matching pattern logs, and retains it as
    /// history. Channels that cannot be created (`--max-topics`) are skipped with an error.
    fn record(&mut self, event: Event) -> Result<(), HubError> {
        debug_assert!(event.seq > self.last_seq);
        self.last_seq = event.seq;
        self.recorded += 1;
        let event = Rc::new(event);
        let mut result = Ok(());
        for name in event.topics.iter() {
            let id = match self.channel_or_insert(name) {
                Ok(id) => id,
                Err(e) => {
                    result = Err(e);
                    continue;
                }
            };
            let ch = &mut self.channels[id.0];
            if !ch.touched {
                ch.round_start = ch.end();
            }
            ch.append(&event);
            if !self.skips.is_empty() {
                Self::skip_for(&self.skips, ch, id, event.seq);
            }
            Self::touch(&mut self.touched, ch, id);
            if self.limits.history > 0 {
                event.holders.set(event.holders.get() + 1);
                self.history_events += 1;
                if ch.replayable() > self.limits.history {
                    if let Some(old) = ch.evict_oldest() {
                        self.history_events -= 1;
                        Self::release(&mut self.history_bytes, &mut self.retained_gone, &old);
                    }
                }
            } else {
                ch.evict_oldest();
            }
            let patterns = std::mem::take(&mut ch.patterns);
            for &p in &patterns {
                let Some(pc) = self.channels.get_mut(p) else {
                    continue;
                };
                if pc.last_seq() == event.seq {
                    continue; // matched through another of its topics already
                }
                if !pc.touched {
                    pc.round_start = pc.end();
                }
                pc.append(&event);
                if !self.skips.is_empty() {
                    Self::skip_for(&self.skips, pc, ChannelId(p), event.seq);
                }
                if pc.replayable() > self.limits.history {
                    pc.evict_oldest();
                }
                Self::touch(&mut self.touched, pc, ChannelId(p));
            }
            self.channels[id.0].patterns = patterns;
        }
        if !self.skips.is_empty() {
            self.skips.retain(|s| s.through > event.seq);
        }
        if event.holders.get() > 0 {
            self.history_bytes += event.footprint();
            self.retained.push_back(event);
            self.enforce_history_bytes();
        }
        // A topic nobody reads and that keeps nothing (history 0) is removed by `take_touched`
        // once the loop has seen it: it does not outlive its publish.
        result
    }

    /// Moves the cursors of readers resumed ahead past the entry just appended (seq `seq`).
    fn skip_for(skips: &[Skip], ch: &mut Channel, id: ChannelId, seq: u64) {
        let last = ch.end() - 1;
        for s in skips {
            if s.channel == id && s.through >= seq && ch.next_of(s.handle) == last {
                ch.set_next(s.handle, last + 1);
            }
        }
    }

    fn touch(touched: &mut Vec<ChannelId>, ch: &mut Channel, id: ChannelId) {
        if !ch.touched {
            ch.touched = true;
            touched.push(id);
        }
    }

    /// An event left one topic's history: when no topic retains it any more, its bytes no
    /// longer count.
    fn release(history_bytes: &mut usize, gone: &mut usize, ev: &SharedEvent) {
        let holders = ev.holders.get().saturating_sub(1);
        ev.holders.set(holders);
        if holders == 0 {
            *history_bytes -= ev.footprint();
            *gone += 1;
        }
    }

    /// Evicts the oldest retained events until history fits `--history-bytes`.
    fn enforce_history_bytes(&mut self) {
        while self.history_bytes > self.limits.history_bytes {
            if !self.evict_oldest_retained() {
                break;
            }
        }
        if self.retained_gone > 64 && self.retained_gone * 2 > self.retained.len() {
            self.retained.retain(|e| e.holders.get() > 0);
            self.retained_gone = 0;
        }
    }

    /// Makes the globally oldest retained event unreplayable in every topic; false when nothing
    /// is retained.
    fn evict_oldest_retained(&mut self) -> bool {
        let Some(ev) = self.retained.pop_front() else {
            return false;
        };
        if ev.holders.get() == 0 {
            self.retained_gone = self.retained_gone.saturating_sub(1);
            return true;
        }
        for name in ev.topics.iter() {
            let Some(&id) = self.by_name.get(name) else {
                continue;
            };
            let ch = &mut self.channels[id.0];
            if ch.oldest_replayable().is_some_and(|o| o.seq == ev.seq) {
                ch.evict_oldest();
                self.history_events -= 1;
                ev.holders.set(ev.holders.get().saturating_sub(1));
                ch.trim();
            }
            self.remove_if_vacant(id);
        }
        if ev.holders.get() > 0 {
            // Not at the front of some topic's history (cannot happen: eviction is oldest
            // first everywhere); never leave bytes counted for an event no longer listed.
            ev.holders.set(0);
        }
        self.history_bytes -= ev.footprint();
        true
    }

    // ----- channels --------------------------------------------------------------------------

    fn channel_or_insert(&mut self, name: &str) -> Result<ChannelId, HubError> {
        if let Some(&id) = self.by_name.get(name) {
            return Ok(id);
        }
        self.make_room()?;
        let prefix = name.strip_suffix('*');
        let mut ch = Channel::new(name, prefix);
        ch.evicted_through = self.removed_through;
        let id = ChannelId(self.channels.vacant_key());
        match prefix {
            None => {
                if !self.patterns.is_empty() {
                    for end in 0..=name.len() {
                        if let Some(p) = name.get(..end).and_then(|pre| self.patterns.get(pre)) {
                            ch.patterns.push(p.0);
                        }
                    }
                }
            }
            Some(prefix) => {
                // Seed the pattern's log with the retained events of every topic it matches, in
                // id order, so a resume on the pattern replays them.
                let mut seed: Vec<SharedEvent> = Vec::new();
                let mut evicted = self.removed_through;
                for (_, other) in self.channels.iter_mut() {
                    if other.prefix.is_none() && other.name.starts_with(prefix) {
                        other.patterns.push(id.0);
                        evicted = evicted.max(other.evicted_through);
                        seed.extend(other.replayable_events().cloned());
                    }
                }
                seed.sort_unstable_by_key(|e| e.seq);
                seed.dedup_by_key(|e| e.seq);
                if seed.len() > self.limits.history {
                    let cut = seed.len() - self.limits.history;
                    evicted = evicted.max(seed[cut - 1].seq);
                    seed.drain(..cut);
                }
                ch.seed(&seed, evicted);
                self.patterns.insert(prefix.into(), id);
            }
        }
        let key = self.channels.insert(ch);
        debug_assert_eq!(key, id.0);
        self.by_name.insert(name.into(), id);
        Ok(id)
    }

    /// Makes room for one more channel under `--max-topics` by evicting the oldest history.
    fn make_room(&mut self) -> Result<(), HubError> {
        while self.channels.len() >= self.limits.max_topics {
            if !self.evict_oldest_retained() {
                return Err(HubError::TooManyTopics);
            }
        }
        Ok(())
    }

    /// Forgets a channel nobody reads and that holds nothing.
    fn remove_if_vacant(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get(id.0) else {
            return;
        };
        // A removed channel may still be listed as touched; its slot then marks nobody, or the
        // readers of a channel that reused it, which costs one spare flush at most.
        if !ch.is_vacant() {
            return;
        }
        let ch = self.channels.remove(id.0);
        if ch.prefix.is_none() {
            self.removed_through = self.removed_through.max(ch.evicted_through);
        }
        self.by_name.remove(&ch.name);
        if let Some(prefix) = &ch.prefix {
            self.patterns.remove(prefix);
            for (_, other) in self.channels.iter_mut() {
                if other.prefix.is_none() && other.name.starts_with(&**prefix) {
                    other.patterns.retain(|&p| p != id.0);
                }
            }
        }
    }

    /// Subscribes connection `conn` to `name` (a topic, or a pattern ending in `*`); the cursor
    /// starts live, see [`Hub::start_stream`] to move it back for a resume.
    pub fn subscribe(&mut self, name: &str, conn: usize) -> Result<Subscription, HubError> {
        let channel = self.channel_or_insert(name)?;
        let handle = self.channels[channel.0].add_reader(conn);
        self.subscriptions += 1;
        Ok(Subscription {
            channel,
            handle,
            start_seq: self.last_seq,
            limit: u64::MAX,
        })
    }

    /// Ends a subscription; a channel left with no reader and nothing retained is forgotten.
    pub fn unsubscribe(&mut self, sub: Subscription) {
        let Some(ch) = self.channels.get_mut(sub.channel.0) else {
            debug_assert!(false, "unsubscribe from a missing channel");
            return;
        };
        if ch.remove_reader(sub.handle) {
            self.subscriptions -= 1;
        }
        if !self.skips.is_empty() {
            self.skips
                .retain(|s| !(s.channel == sub.channel && s.handle == sub.handle));
        }
        if ch.prefix.is_some() && ch.reader_count() == 0 {
            // A pattern's log is a view of its topics' logs: rebuilt when next needed.
            let ch = &mut self.channels[sub.channel.0];
            while ch.evict_oldest().is_some() {}
            ch.trim();
        } else {
            ch.trim();
        }
        self.remove_if_vacant(sub.channel);
    }

    /// Stops `sub` at the end of its log as it is now: events already recorded are still sent,
    /// later ones are not. True when nothing is left to send (the caller can unsubscribe).
    pub fn stop_at_end(&self, sub: &mut Subscription) -> bool {
        let Some(ch) = self.channels.get(sub.channel.0) else {
            return true;
        };
        sub.limit = ch.end();
        ch.next_of(sub.handle) >= sub.limit
    }

    /// True when `sub`'s channel carries events of `topic` (the topic itself, or a pattern
    /// matching it).
    pub fn covers(&self, sub: &Subscription, topic: &str) -> bool {
        self.channels
            .get(sub.channel.0)
            .is_some_and(|c| match &c.prefix {
                Some(prefix) => topic.starts_with(&**prefix),
                None => *c.name == *topic,
            })
    }

    /// The channel id of `name`, if it exists.
    pub fn channel_id(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    /// A channel.
    pub fn channel(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.get(id.0)
    }

    /// A subscription's cursor (absolute index of the next entry to send).
    pub fn cursor(&self, sub: &Subscription) -> u64 {
        self.channels
            .get(sub.channel.0)
            .map_or(0, |c| c.next_of(sub.handle))
    }

    /// Moves a subscription's cursor.
    pub fn set_cursor(&mut self, sub: &Subscription, next: u64) {
        if let Some(c) = self.channels.get_mut(sub.channel.0) {
            c.set_next(sub.handle, next);
        }
    }

    /// Readers of the channels that got events since the last [`Hub::take_touched`]: how many
    /// connections the coming fan-out will write to, at most (a reader of several counts for
    /// each).
    pub fn touched_readers(&self) -> usize {
        self.touched
            .iter()
            .filter_map(|id| self.channels.get(id.0))
            .map(Channel::reader_count)
            .sum()
    }

    /// Moves the channels touched since the last call into `into`, trimming each log of what
    /// every reader has passed. The loop marks those channels' readers for writing.
    pub fn take_touched(&mut self, into: &mut Vec<ChannelId>) {
        self.take_touched_in(into, false);
    }

    /// [`Hub::take_touched`] in the middle of a round of writes: the new entries extend the
    /// round's joined batch (`Channel::build_batch`), so readers the round has not reached yet
    /// still write everything they have not taken as one slice.
    pub fn take_touched_midround(&mut self, into: &mut Vec<ChannelId>) {
        self.take_touched_in(into, true);
    }

    fn take_touched_in(&mut self, into: &mut Vec<ChannelId>, midround: bool) {
        std::mem::swap(&mut self.touched, into);
        for id in into.iter() {
            if let Some(ch) = self.channels.get_mut(id.0) {
                ch.touched = false;
                ch.trim();
                if ch.reader_count() > 1 {
                    ch.build_batch(midround);
                }
            }
        }
        for &id in into.iter() {
            self.remove_if_vacant(id);
        }
    }

    /// Slab keys of the connections reading `id`.
    pub fn readers(&self, id: ChannelId) -> impl Iterator<Item = usize> + '_ {
        self.channels
            .get(id.0)
            .into_iter()
            .flat_map(|c| c.reader_conns())
    }

    /// Events recorded since the last call (the `published` counter).
    pub fn take_recorded(&mut self) -> u64 {
        std::mem::take(&mut self.recorded)
    }

    // ----- resume ----------------------------------------------------------------------------

    /// Interprets a client's `Last-Event-ID`.
    pub fn parse_resume(&self, last_event_id: &str) -> Resume {
        let seq = last_event_id
            .strip_prefix(&*self.run)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|digits| {
                // Plain decimal only, so that one seq has exactly one spelling.
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    digits.parse::<u64>().ok()
                }
            });
        let head = self.backlog.back().map_or(self.last_seq, |e| e.seq);
        match seq {
            Some(seq) if seq <= head => Resume::After(seq),
            Some(seq) if self.ahead_ok && seq - head <= AHEAD_MAX => Resume::After(seq),
            _ => Resume::Foreign,
        }
    }

    /// Places the cursors of `subs` (one stream's subscriptions, just made) for `resume`: after
    /// the resume point within each log's history, and says whether the client missed events.
    pub fn start_stream(&mut self, subs: &mut [Subscription], resume: Resume) -> StreamStart {
        let (after, mut reset) = match resume {
            Resume::After(seq) => (seq, None),
            Resume::Foreign => (0, Some(ResetReason::Unknown)),
        };
        let mut first_replayed = u64::MAX;
        for sub in subs.iter_mut() {
            sub.start_seq = after;
            let Some(ch) = self.channels.get_mut(sub.channel.0) else {
                continue;
            };
            if reset.is_none() && ch.evicted_through > after {
                reset = Some(ResetReason::Expired);
            }
            let start = ch.start_after(after);
            if let Some(e) = ch.entry(start) {
                first_replayed = first_replayed.min(e.ev.seq);
            }
            ch.set_next(sub.handle, start);
            if after > self.last_seq {
                self.skips.push(Skip {
                    channel: sub.channel,
                    handle: sub.handle,
                    through: after,
                });
            }
        }
        let before_first = if first_replayed == u64::MAX {
            self.last_seq
        } else {
            first_replayed - 1
        };
        StreamStart {
            after,
            reset,
            reset_id: self.id_for(before_first),
        }
    }

    /// The seq after which the logs of `subs` hold every event (what history evicted is at or
    /// below it).
    pub fn cache_floor(&self, subs: &[Subscription]) -> u64 {
        subs.iter()
            .filter_map(|s| self.channels.get(s.channel.0))
            .map(|c| c.evicted_through)
            .max()
            .unwrap_or(0)
    }

    /// Retained events of `names` after `after`, merged in id order without duplicates (a
    /// SUBSCRIBE frame's replay on a live connection).
    pub fn replay(&self, names: &[&str], after: u64) -> (Vec<SharedEvent>, bool) {
        let mut events: Vec<SharedEvent> = Vec::new();
        let mut expired = false;
        for name in names {
            let Some(&id) = self.by_name.get(*name) else {
                continue;
            };
            let ch = &self.channels[id.0];
            expired |= ch.evicted_through > after;
            let start = ch.start_after(after);
            let mut idx = start;
            while let Some(e) = ch.entry(idx) {
                events.push(Rc::clone(&e.ev));
                idx += 1;
            }
        }
        events.sort_unstable_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        (events, expired)
    }

    // ----- gauges ----------------------------------------------------------------------------

    /// Subscriptions held.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    /// Channels that exist (topics with readers or history, and patterns with readers).
    pub fn topic_count(&self) -> usize {
        self.channels.len()
    }

    /// Replayable events, summed over topics.
    pub fn history_events(&self) -> usize {
        self.history_events
    }

    /// Bytes of retained history (each event once, encodings included).
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }
}

#[cfg(test)]
mod tests;
