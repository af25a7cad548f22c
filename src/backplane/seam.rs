//! The backplane's seam toward the loop, as the hub's seam toward local publishing: what goes in
//! (an [`AppendRequest`] from a publisher, a [`FetchRequest`] from a resuming stream) and what the
//! loop pumps out each iteration and records ([`Output`]): the events read from the shared log,
//! in order, to record through `Hub::record_remote` as `Hub::publish` records a local one; the
//! notices in their place among them; the answers to publishers ([`Completion`], as `Published`
//! answers a local publish); the backfills for resumed streams. Plain values: no Redis here.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Who waits for an append's answer.
pub enum Origin {
    /// An HTTP `POST /publish` (slab key and connection id, to find it again).
    Http {
        /// Slab key.
        key: usize,
        /// Connection id (a reused slab key is another connection).
        conn: u64,
        /// The publish's number on its connection (answers may come out of order: a refusal
        /// is immediate, an acknowledgement waits for Redis).
        n: u64,
    },
    /// A PUBLISH frame.
    Frame {
        /// Slab key.
        key: usize,
        /// Connection id.
        conn: u64,
        /// Echoed in the PUBLISH_ACK or ERROR.
        correlation: Vec<u8>,
    },
    /// A thread blocked in `PublishHandle::publish`.
    Handle(Arc<ReplySlot>),
}

/// A resume older than a node's cache: the events a stream missed, asked of Redis.
pub struct FetchRequest {
    /// Slab key of the stream.
    pub key: usize,
    /// Connection id.
    pub conn: u64,
    /// Exact topics subscribed.
    pub topics: Vec<String>,
    /// Pattern prefixes subscribed (read from the log, filtered).
    pub prefixes: Vec<String>,
    /// The client's last seq.
    pub after: u64,
    /// The node's cache holds everything after this seq.
    pub upto: u64,
    /// The server API's history query this answers (`GET /api/v1/history`), or `None` for a
    /// stream's backfill.
    pub query: Option<u64>,
}

impl FetchRequest {
    /// The request for `names` (topics, and patterns ending in `*`, read from the log).
    pub fn new(key: usize, conn: u64, names: &[String], after: u64, upto: u64) -> FetchRequest {
        let (mut topics, mut prefixes) = (Vec::new(), Vec::new());
        for t in names {
            match t.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_string()),
                None => topics.push(t.clone()),
            }
        }
        FetchRequest {
            key,
            conn,
            topics,
            prefixes,
            after,
            upto,
            query: None,
        }
    }
}

/// The answer to a [`FetchRequest`].
pub struct Backfill {
    /// Slab key of the stream.
    pub key: usize,
    /// Connection id.
    pub conn: u64,
    /// The stream's events in `(after, upto]`, in order, once each; `None` when Redis no longer
    /// holds all of them (or did not answer): the stream is told "expired".
    pub events: Option<Vec<RemoteEvent>>,
}

/// Where a foreign thread waits for its publish's answer.
#[derive(Default)]
pub struct ReplySlot {
    answer: Mutex<Option<Result<String, AppendError>>>,
    ready: Condvar,
}

impl ReplySlot {
    /// Gives the answer and wakes the waiting thread.
    pub fn set(&self, answer: Result<String, AppendError>) {
        let mut slot = self.answer.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(answer);
        self.ready.notify_all();
    }

    /// Waits at most `timeout` for the answer.
    pub fn wait(&self, timeout: Duration) -> Option<Result<String, AppendError>> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.answer.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(answer) = slot.take() {
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            slot = self
                .ready
                .wait_timeout(slot, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// An event to append.
pub struct AppendRequest {
    /// Who is answered.
    pub origin: Origin,
    /// Distinct, validated topics.
    pub topics: Vec<String>,
    /// Event type, if any.
    pub event_type: Option<String>,
    /// The body.
    pub data: String,
    /// `Idempotency-Key`, if given.
    pub idempotency_key: Option<String>,
}

/// Why an append was not acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// Redis is unreachable, or did not answer within the append timeout. The event may still
    /// have been appended: retry with the same idempotency key.
    Unavailable,
}

/// The answer to one append.
pub struct Completion {
    /// Who waits.
    pub origin: Origin,
    /// The id (`<epoch>-<seq>`) and seq, or why not.
    pub outcome: Result<(String, u64), AppendError>,
}

/// An event read from the shared stream, in stream order.
pub struct RemoteEvent {
    /// Sequence number (the stream entry id's first part).
    pub seq: u64,
    /// Its topics.
    pub topics: Vec<Box<str>>,
    /// Event type.
    pub event_type: Option<Box<str>>,
    /// The body.
    pub data: Box<str>,
    /// Redis's clock when it was appended (ms since the epoch), for the read-lag histogram.
    pub appended_ms: u64,
}

/// Something every stream must hear about, in stream order with the events.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// The dataset's epoch is known (first contact) or changed; `lost` when it changed: Redis
    /// came back without the data, or from a point older than what the cluster had issued or
    /// read (a node found it so and started a new epoch), so ids before this point name nothing
    /// any more.
    Epoch {
        /// The new epoch.
        epoch: String,
        /// An earlier epoch was known.
        lost: bool,
        /// The epoch's events have seqs above this one (the reset notice's id).
        since: u64,
    },
    /// Warm-up is done: history holds no event at or below `through`, nor, for each listed
    /// topic, at or below its seq (older events warm-up left out because the topic's history
    /// was full). A resume from before that is served from Redis, or told "expired", exactly
    /// as for events evicted normally.
    Floor {
        /// Everything above it that history keeps was loaded.
        through: u64,
        /// Topics whose history starts later: the newest seq left out of each.
        topics: Vec<(Box<str>, u64)>,
    },
    /// Events between the last one read and the next were trimmed from Redis while this node
    /// was away (an outage longer than the retention holds).
    Gap,
}

/// What the loop takes out of the backplane after each call, in this order: the events with the
/// notices in their place, then the completions, then the backfills.
#[derive(Default)]
pub struct Output {
    /// Events to record, in stream order.
    pub events: Vec<RemoteEvent>,
    /// Notices, each placed before the `events` from its index on (taken first).
    pub notices: Vec<(usize, Notice)>,
    /// Answers to deliver to publishers.
    pub completions: Vec<Completion>,
    /// Answered backfills, for their streams.
    pub backfills: Vec<Backfill>,
}

impl Output {
    /// Answers or events are waiting for the loop (it must not sleep).
    pub fn has_work(&self) -> bool {
        !self.completions.is_empty() || !self.backfills.is_empty() || !self.events.is_empty()
    }
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BackplaneStats {
    /// Connections (re)established after a loss.
    pub reconnects: u64,
    /// Appends acknowledged by Redis.
    pub appends: u64,
    /// APPEND script calls sent (appends / calls is the batching factor).
    pub append_calls: u64,
    /// Appends refused (unreachable, timeout, error reply).
    pub append_failures: u64,
    /// Events read from the stream.
    pub events_read: u64,
    /// Reply bytes of those events (data, topics, type).
    pub read_bytes: u64,
    /// Times a `redis+sentinel://` backplane found the master at another address than before.
    pub failovers: u64,
    /// Bytes of events read but held until enough replicas have them (a gauge; at most 8,448
    /// events: the reader stops reading past [`MAX_UNRECORDED`](super::MAX_UNRECORDED)).
    pub held_bytes: u64,
    /// `WAIT` round trips (`--backplane-min-replicas`) at most each bound of [`WAIT_BUCKETS`]
    /// (cumulative, as Prometheus counts them).
    pub wait_buckets: [u64; WAIT_BUCKETS.len()],
    /// How many `WAIT`s were timed.
    pub wait_count: u64,
    /// Their total time, in seconds.
    pub wait_sum: f64,
}

/// Upper bounds (seconds) of the replica-wait histogram's buckets.
pub const WAIT_BUCKETS: [f64; 10] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 2.0,
];

impl BackplaneStats {
    /// One `WAIT`'s round trip.
    pub(super) fn observe_wait(&mut self, secs: f64) {
        for (bucket, bound) in self.wait_buckets.iter_mut().zip(WAIT_BUCKETS) {
            *bucket += u64::from(secs <= bound);
        }
        self.wait_count += 1;
        self.wait_sum += secs;
    }
}
