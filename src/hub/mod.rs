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
//! first). Resume starts a cursor inside it. A pattern's log keeps no history: a resume on it
//! replays its topics' (`resume`). A topic with no reader and nothing retained does not exist,
//! and `--max-topics` bounds how many channels exist at once. When a round of writes ends,
//! channels release what every reader has passed (`Hub::end_round`), so with readers that keep
//! up the hub holds its history and one iteration's working set (docs/ARCHITECTURE.md, "Memory
//! model").
//!
//! This file holds the types and the hub's state; `record` the way in of every event,
//! `history` its accounting and eviction, `registry` channels and subscriptions, `resume`
//! where a new stream starts and what it replays, `channel` one log and its readers.
//!
//! `record` is the one entry point of every event. Without a backplane, `publish` assigns the id
//! and records; with one (see `backplane`), ids come from Redis and the events read back from the
//! shared stream enter through `record_remote`, then the same backlog and `record`: fan-out,
//! history, replay and the slow-consumer rules are one code path either way.

mod channel;
mod history;
mod presence;
mod record;
mod registry;
mod resume;
mod summary;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use slab::Slab;

pub use channel::Channel;
pub use summary::TopicSummary;

use crate::buf::{Event, SharedEvent};
use crate::handle::Sequencer;
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
#[derive(Debug)]
pub struct StreamStart {
    /// Cursors start after this seq (within each log's history).
    pub after: u64,
    /// Set when events were missed; the client is told before the replay.
    pub reset: Option<ResetReason>,
    /// The id to put on the reset notice: just before the first replayed event, so a client that
    /// reconnects right after the notice resumes without a gap.
    pub reset_id: String,
    /// What the stream's pattern subscriptions replay, in id order: their matching topics'
    /// retained events after `after`, less those a topic subscription of the same stream
    /// replays through its cursor. A pattern's log holds no history, so these are not behind
    /// its cursor: the caller queues them by reference, each after the events before it.
    pub replay: Vec<SharedEvent>,
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
    /// Channels that may hold entries or a joined batch beyond their history, released at the
    /// end of a round once every reader has passed them (`end_round`).
    held: Vec<ChannelId>,
    subscriptions: usize,
    /// Every retained event once, oldest first (history-bytes eviction order); may hold events
    /// already evicted everywhere (`holders == 0`), removed lazily.
    retained: VecDeque<SharedEvent>,
    retained_gone: usize,
    /// Bytes of those events: they count against `--history-bytes` until they leave the list.
    retained_gone_bytes: usize,
    history_events: usize,
    history_bytes: usize,
    recorded: u64,
    /// Unix seconds now, set by the loop once a second (stamps a topic's last event).
    clock_secs: u64,
    /// The highest seq evicted from a channel that was then forgotten: a channel created later
    /// may have had events up to it, so a resume from before it is told it may have missed some
    /// (never silence).
    removed_through: u64,
    /// Topics whose readers changed (`presence.rs`); `None` unless a backplane asked.
    presence_changed: Option<std::collections::HashSet<Box<str>>>,
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
            held: Vec::new(),
            subscriptions: 0,
            retained: VecDeque::new(),
            retained_gone: 0,
            retained_gone_bytes: 0,
            history_events: 0,
            history_bytes: 0,
            recorded: 0,
            clock_secs: 0,
            removed_through: 0,
            presence_changed: None,
        }
    }

    /// Sets the wall clock (Unix seconds) that stamps each topic's last event.
    pub fn set_clock(&mut self, unix_secs: u64) {
        self.clock_secs = unix_secs;
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

    /// Highest sequence number recorded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
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

    /// Bytes history keeps alive (each event once, encodings included): the replayable events,
    /// and those evicted out of order that its list still holds. At most `--history-bytes`.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes + self.retained_gone_bytes
    }
}

#[cfg(test)]
mod tests;
