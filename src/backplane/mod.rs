//! The Redis Streams backplane: N nodes sharing one Redis act as one hub.
//!
//! Owns the two Redis connections of a node, both non-blocking sockets in the node's own loop:
//! - the *writer* pipelines appends. The publishes (any path) of one loop iteration go out as
//!   one `EVALSHA` of the APPEND script (at most [`MAX_BATCH`] events), which takes each event's
//!   seq from the one counter in Redis and adds it to the shared stream atomically; each
//!   publisher is answered when Redis replies (or refused with "unavailable" when it does not
//!   within `--backplane-timeout-ms`).
//! - the *reader* blocks in `XREAD` on that stream and hands every event, in stream order, to the
//!   hub, which records it exactly as it records a local publish without a backplane: same logs,
//!   cursors, history, replay and slow-consumer rules. A node's own publishes come back this way
//!   too, so every node records the same events in the same order.
//!
//! Ids are `<epoch>-<seq>`: the epoch names the Redis dataset (created by the first node that
//! finds none), the seq comes from Redis's counter. Either link reconnects with jittered backoff
//! capped at 2 s; the reader then reads on from the last seq it handed over. A dataset whose epoch
//! changed (Redis restarted without its data) is reported so that streams get a reset notice.
//!
//! This module speaks Redis and keeps the links' state; it never touches client connections or
//! the hub: the loop drains [`Backplane::completions`], [`Backplane::events`] and
//! [`Backplane::notices`] after each call.

pub mod redis;
pub mod scripts;

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;

use self::redis::{integer, text, RedisConn};
use self::scripts::Keys;
pub use crate::config::RedisUrl;

/// Poll token of the writer link.
pub const WRITER: Token = Token(usize::MAX - 4);
/// Poll token of the reader link.
pub const READER: Token = Token(usize::MAX - 5);

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(2000);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How long one `XREAD` blocks in Redis before answering "nothing" (the read deadline is this
/// plus the timeout).
const BLOCK_MS: u64 = 1000;
/// Entries per `XREAD` / `XREVRANGE` reply (a reply holds at most this many `--max-body`
/// events).
const READ_COUNT: usize = 256;
/// A topic stream in Redis expires this long after its last publish (its history goes with it).
pub const TOPIC_TTL_SECS: u64 = 7 * 24 * 3600;
/// Most log entries one backfill for a pattern reads (past it the resume is told "expired").
const FETCH_LOG_MAX: usize = 10_000;
/// The reader stops asking for more while the hub has this many events waiting to be recorded:
/// Redis holds the rest, so a slow node bounds its own memory.
pub const MAX_UNRECORDED: usize = 8192;

/// Most events in one APPEND call: enough to halve Redis's cost per event under load, few enough
/// that one call holds Redis for well under a millisecond.
pub const MAX_BATCH: usize = 64;

/// Most event bytes in one APPEND call (a bigger single event goes alone).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// What the backplane needs from the configuration.
#[derive(Clone, Debug)]
pub struct BackplaneConfig {
    /// Where Redis is (password masked in `Debug`).
    pub url: RedisUrl,
    /// Key prefix (`--backplane-prefix`).
    pub prefix: String,
    /// Append timeout (`--backplane-timeout-ms`): a publish not accepted by then is refused.
    pub timeout: Duration,
    /// Events kept in the Redis stream (`--backplane-retention`).
    pub retention: u64,
    /// Lifetime of an idempotency key, in seconds.
    pub idempotency_secs: u64,
    /// Events each topic's stream keeps (`--history`).
    pub history: usize,
    /// A starting node fills its history cache with at most this many of the newest events...
    pub warm_events: usize,
    /// ...and at most about this many bytes of them.
    pub warm_bytes: usize,
    /// Bytes of appends waiting for Redis at most (`--publish-queue-bytes`); past it a publish is
    /// refused as "unavailable" at once.
    pub max_inflight_bytes: usize,
}

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
    /// came back without the data, so ids before this point name nothing any more.
    Epoch {
        /// The new epoch.
        epoch: String,
        /// An earlier epoch was known.
        lost: bool,
    },
    /// Events between the last one read and the next were trimmed from Redis while this node
    /// was away (an outage longer than the retention holds).
    Gap,
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
}

/// What an append carried, kept until Redis answers: when every earlier seq has been read, the
/// node records its own event from this at once instead of waiting for the reader to bring it
/// back (one Redis round trip less between a publish and its local fan-out).
struct Sent {
    topics: Vec<String>,
    event_type: Option<String>,
    data: String,
}

/// An append waiting for the iteration's batch.
struct Staged {
    origin: Origin,
    cost: usize,
    sent: Sent,
    idempotency_key: Option<String>,
}

enum Expect {
    /// AUTH / SELECT / SCRIPT LOAD: anything but an error.
    Setup(&'static str),
    ScriptSha(ScriptKind),
    Hello,
    /// The oldest in-flight APPEND call, with its number of events.
    Append(usize),
    /// The oldest in-flight backfill.
    Fetch,
    Read,
    Warm,
}

#[derive(Clone, Copy)]
enum ScriptKind {
    Append,
    Fetch,
}

enum Phase {
    Down { retry_at: Instant, attempt: u32 },
    Up(Box<Link>),
}

struct Link {
    conn: RedisConn,
    expect: VecDeque<Expect>,
    /// The oldest expected reply must arrive by then.
    deadlines: VecDeque<Instant>,
    append_sha: String,
    fetch_sha: String,
    /// The dataset's epoch, once HELLO answered.
    epoch: Option<String>,
    /// Reader: fetching the newest events for the cache (first contact only).
    warming: Option<Warm>,
    attempt: u32,
}

struct Warm {
    /// Gathered newest first.
    events: Vec<RemoteEvent>,
    bytes: usize,
}

/// The backplane of one node.
pub struct Backplane {
    cfg: BackplaneConfig,
    addr: SocketAddr,
    keys: Keys,
    writer: Phase,
    reader: Phase,
    /// Appends accepted this iteration, not yet sent (one batch at the next flush).
    staged: Vec<Staged>,
    /// Appends sent, oldest first (their replies arrive in this order), with their sizes and
    /// contents.
    inflight: VecDeque<(Origin, usize, Sent)>,
    /// Bytes of the staged and in-flight appends.
    inflight_bytes: usize,
    /// Backfills sent on the writer, oldest first.
    fetches: VecDeque<FetchRequest>,
    /// Answered backfills (drained by the loop).
    pub backfills: Vec<Backfill>,
    /// The epoch streams were told about.
    epoch: Option<String>,
    /// The last seq handed to the hub.
    last_read: u64,
    /// The first HELLO + cache fill is done (or gave up): streams may start.
    started: bool,
    started_deadline: Instant,
    rng: u64,
    /// Whether the writer / the reader has been up before (a later HELLO is a reconnect).
    ever_up: [bool; 2],
    /// Answers to deliver (drained by the loop).
    pub completions: Vec<Completion>,
    /// Events to record, in order (drained by the loop).
    pub events: Vec<RemoteEvent>,
    /// Notices, each placed before `events` that follow it (drained by the loop first).
    pub notices: Vec<(usize, Notice)>,
    /// Counters.
    pub stats: BackplaneStats,
    frames: Vec<OwnedFrame>,
}

impl Backplane {
    /// A backplane for `cfg`; resolves the host once (a name that does not resolve is a start
    /// error, not a retry loop).
    pub fn new(cfg: BackplaneConfig) -> Result<Backplane, String> {
        let addr = (cfg.url.host.as_str(), cfg.url.port)
            .to_socket_addrs()
            .map_err(|e| format!("backplane host {}: {e}", cfg.url.host))?
            .next()
            .ok_or_else(|| format!("backplane host {} has no address", cfg.url.host))?;
        let now = Instant::now();
        let rng = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x2545_f491, |d| d.as_nanos() as u64)
            | 1;
        Ok(Backplane {
            keys: Keys::new(&cfg.prefix),
            started_deadline: now + cfg.timeout * 2,
            cfg,
            addr,
            writer: Phase::Down {
                retry_at: now,
                attempt: 0,
            },
            reader: Phase::Down {
                retry_at: now,
                attempt: 0,
            },
            staged: Vec::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            fetches: VecDeque::new(),
            backfills: Vec::new(),
            epoch: None,
            last_read: 0,
            started: false,
            rng,
            ever_up: [false; 2],
            completions: Vec::new(),
            events: Vec::new(),
            notices: Vec::new(),
            stats: BackplaneStats::default(),
            frames: Vec::new(),
        })
    }

    /// The URL, password masked.
    pub fn describe(&self) -> String {
        self.cfg.url.to_string()
    }

    /// The append timeout.
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    /// Publishing works: the writer is connected and knows the dataset.
    pub fn writable(&self) -> bool {
        matches!(&self.writer, Phase::Up(l) if l.epoch.is_some())
    }

    /// Both links are up and the reader is past its cache fill.
    pub fn up(&self) -> bool {
        self.writable()
            && matches!(&self.reader, Phase::Up(l) if l.epoch.is_some() && l.warming.is_none())
    }

    /// Streams may start: the cache was filled from Redis, or Redis did not answer in time (the
    /// node then serves live events only, from when Redis comes back).
    pub fn started(&self) -> bool {
        self.started
    }

    /// The last seq read from the stream.
    pub fn last_read(&self) -> u64 {
        self.last_read
    }

    /// Queues one append (sent with the iteration's batch by [`Backplane::flush_output`]);
    /// refused at once when the writer is not ready.
    pub fn append(&mut self, req: AppendRequest) {
        let ready = matches!(&self.writer, Phase::Up(link) if link.epoch.is_some());
        if !ready {
            return self.fail(req.origin);
        }
        let cost = req.data.len() + req.topics.iter().map(|t| t.len() + 1).sum::<usize>() + 64;
        let idle = self.inflight.is_empty() && self.staged.is_empty();
        if self.inflight_bytes + cost > self.cfg.max_inflight_bytes && !idle {
            log::debug!(
                "backplane: {} bytes already waiting for Redis",
                self.inflight_bytes
            );
            return self.fail(req.origin);
        }
        self.inflight_bytes += cost;
        self.staged.push(Staged {
            origin: req.origin,
            cost,
            sent: Sent {
                topics: req.topics,
                event_type: req.event_type,
                data: req.data,
            },
            idempotency_key: req.idempotency_key,
        });
    }

    /// Sends the staged appends as APPEND calls of at most [`MAX_BATCH`] events each.
    fn send_staged(&mut self, now: Instant) {
        if self.staged.is_empty() {
            return;
        }
        let link = match &mut self.writer {
            Phase::Up(link) if link.epoch.is_some() => link,
            // Not reached: `lose` refuses the staged appends when the writer goes down.
            _ => return self.fail_pending(),
        };
        let epoch = link.epoch.clone().unwrap_or_default();
        let staged = std::mem::take(&mut self.staged);
        let fixed = [
            self.cfg.retention.to_string(),
            self.cfg.idempotency_secs.to_string(),
            self.cfg.history.to_string(),
            TOPIC_TTL_SECS.to_string(),
        ];
        let mut staged = staged.into_iter().peekable();
        while staged.peek().is_some() {
            let mut batch: Vec<Staged> = Vec::new();
            let mut bytes = 0;
            while let Some(s) = staged.next_if(|s| {
                batch.is_empty() || (batch.len() < MAX_BATCH && bytes + s.cost <= MAX_BATCH_BYTES)
            }) {
                bytes += s.cost;
                batch.push(s);
            }
            // Owned arguments, referenced by `args` below: each event's idempotency key and
            // topic stream keys (in KEYS order), and its topic count and topic list.
            let mut keys: Vec<String> = Vec::new();
            let mut shapes: Vec<(String, String)> = Vec::with_capacity(batch.len());
            for s in &batch {
                keys.push(match &s.idempotency_key {
                    Some(k) => format!("{}{k}", self.keys.idem),
                    None => self.keys.idem.clone(),
                });
                let topics = &s.sent.topics;
                keys.extend(topics.iter().map(|t| format!("{}{t}", self.keys.topic)));
                shapes.push((topics.len().to_string(), topics.join(" ")));
            }
            let nkeys = (3 + keys.len()).to_string();
            let n = batch.len().to_string();
            let mut args: Vec<&[u8]> = vec![
                b"EVALSHA",
                link.append_sha.as_bytes(),
                nkeys.as_bytes(),
                self.keys.seq.as_bytes(),
                self.keys.epoch.as_bytes(),
                self.keys.log.as_bytes(),
            ];
            args.extend(keys.iter().map(|k| k.as_bytes()));
            args.push(epoch.as_bytes());
            args.extend(fixed.iter().map(|a| a.as_bytes()));
            args.push(n.as_bytes());
            for (s, (count, topics)) in batch.iter().zip(&shapes) {
                args.extend_from_slice(&[
                    count.as_bytes(),
                    topics.as_bytes(),
                    s.sent.event_type.as_deref().unwrap_or("").as_bytes(),
                    s.sent.data.as_bytes(),
                    if s.idempotency_key.is_some() {
                        b"1"
                    } else {
                        b"0"
                    },
                ]);
            }
            link.conn.command(&args);
            link.expect.push_back(Expect::Append(batch.len()));
            link.deadlines.push_back(now + self.cfg.timeout);
            self.stats.append_calls += 1;
            for s in batch {
                self.inflight.push_back((s.origin, s.cost, s.sent));
            }
        }
    }

    /// Asks Redis for the events a resumed stream missed (answered in [`Backplane::backfills`]).
    pub fn fetch(&mut self, req: FetchRequest, now: Instant) {
        let Phase::Up(link) = &mut self.writer else {
            return self.backfill_failed(req);
        };
        if link.epoch.is_none() || link.fetch_sha.is_empty() {
            return self.backfill_failed(req);
        }
        let mut keys: Vec<String> = req
            .topics
            .iter()
            .map(|t| format!("{}{t}", self.keys.topic))
            .collect();
        let patterns = !req.prefixes.is_empty();
        if patterns {
            keys.push(self.keys.log.clone());
        }
        let nkeys = keys.len().to_string();
        let after = req.after.to_string();
        let upto = req.upto.to_string();
        let count = if patterns {
            FETCH_LOG_MAX
        } else {
            self.cfg.history + 1
        }
        .to_string();
        let sha = link.fetch_sha.clone();
        let mut args: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), nkeys.as_bytes()];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        args.extend_from_slice(&[
            after.as_bytes(),
            upto.as_bytes(),
            count.as_bytes(),
            if patterns { b"1" } else { b"0" },
        ]);
        link.conn.command(&args);
        link.expect.push_back(Expect::Fetch);
        link.deadlines.push_back(now + self.cfg.timeout);
        self.fetches.push_back(req);
    }

    fn backfill_failed(&mut self, req: FetchRequest) {
        self.backfills.push(Backfill {
            key: req.key,
            conn: req.conn,
            events: None,
        });
    }

    fn on_fetch(&mut self, frame: &OwnedFrame) -> Result<(), String> {
        let Some(req) = self.fetches.pop_front() else {
            return Err("backfill reply without a backfill".into());
        };
        let OwnedFrame::Array(per_key) = frame else {
            self.backfill_failed(req);
            return Err("FETCH: unexpected reply".into());
        };
        let mut events: Vec<RemoteEvent> = Vec::new();
        let mut complete = true;
        for (i, part) in per_key.iter().enumerate() {
            let OwnedFrame::Array(pair) = part else {
                complete = false;
                continue;
            };
            complete &= pair.first().and_then(integer) == Some(1);
            let Some(OwnedFrame::Array(entries)) = pair.get(1) else {
                continue;
            };
            let from_log = i >= req.topics.len();
            for entry in entries {
                let Some(ev) = parse_entry(entry) else {
                    continue;
                };
                if from_log
                    && !ev
                        .topics
                        .iter()
                        .any(|t| req.prefixes.iter().any(|p| t.starts_with(p.as_str())))
                {
                    continue;
                }
                events.push(ev);
            }
        }
        events.sort_unstable_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        self.backfills.push(Backfill {
            key: req.key,
            conn: req.conn,
            events: complete.then_some(events),
        });
        Ok(())
    }

    fn fail(&mut self, origin: Origin) {
        self.stats.append_failures += 1;
        self.completions.push(Completion {
            origin,
            outcome: Err(AppendError::Unavailable),
        });
    }

    /// The earliest moment something is due (a reconnect, a reply deadline).
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for phase in [&self.writer, &self.reader] {
            let due = match phase {
                Phase::Down { retry_at, .. } => Some(*retry_at),
                Phase::Up(link) => link.deadlines.front().copied(),
            };
            if let Some(d) = due {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        if !self.started {
            next = Some(next.map_or(self.started_deadline, |n| n.min(self.started_deadline)));
        }
        next
    }

    /// Appends sent (or staged) that Redis has not answered yet.
    pub fn appends_unanswered(&self) -> bool {
        !self.inflight.is_empty() || !self.staged.is_empty()
    }

    /// Waits at most `timeout` for the writer's replies and handles what came (answers and the
    /// node's own events land in [`Backplane::completions`] and [`Backplane::events`]). False
    /// when nothing came in time.
    pub fn await_writer(
        &mut self,
        registry: &Registry,
        timeout: Duration,
        scratch: &mut [u8],
    ) -> bool {
        let Phase::Up(link) = &self.writer else {
            return false;
        };
        if !link.conn.wait_readable(timeout) {
            return false;
        }
        self.on_ready(WRITER, registry, Instant::now(), scratch);
        true
    }

    /// Readiness on one of the links.
    pub fn on_ready(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        scratch: &mut [u8],
    ) {
        let writer = token == WRITER;
        let result = {
            let phase = pick(&mut self.writer, &mut self.reader, writer);
            let Phase::Up(link) = phase else {
                return;
            };
            let mut frames = std::mem::take(&mut self.frames);
            let r = link
                .conn
                .check_connected()
                .and_then(|ok| if ok { link.conn.flush() } else { Ok(()) })
                .and_then(|()| link.conn.read(&mut frames, scratch));
            self.frames = frames;
            r
        };
        // Replies decoded before an error are genuine: handle them first.
        let mut frames = std::mem::take(&mut self.frames);
        let mut broken = None;
        for frame in frames.drain(..) {
            if let Err(why) = self.on_reply(writer, frame, now) {
                broken = Some(why);
                break;
            }
        }
        frames.clear();
        self.frames = frames;
        if let Some(why) = broken.or_else(|| result.err().map(|e| e.to_string())) {
            self.lose(writer, &why, registry, now);
        }
    }

    /// Reconnects, expires deadlines, keeps the reader reading; called once per loop iteration.
    /// `unrecorded` is how many events the hub has not recorded yet (reader back-pressure).
    pub fn tick(&mut self, registry: &Registry, now: Instant, unrecorded: usize, floor: u64) {
        for writer in [true, false] {
            let phase = pick(&mut self.writer, &mut self.reader, writer);
            match phase {
                Phase::Down { retry_at, attempt } if *retry_at <= now => {
                    let attempt = *attempt;
                    self.connect(writer, registry, now, attempt, floor);
                }
                Phase::Up(link) if link.deadlines.front().is_some_and(|d| *d <= now) => {
                    let what = if writer { "append" } else { "read" };
                    let why = format!("no reply within the {what} deadline");
                    self.lose(writer, &why, registry, now);
                }
                _ => {}
            }
        }
        if !self.started && now >= self.started_deadline {
            log::warn!(
                "backplane {}: no answer yet; serving streams without its history",
                self.describe()
            );
            self.started = true;
        }
        // The reader: one outstanding XREAD at a time, unless the hub is behind.
        if let Phase::Up(link) = &mut self.reader {
            if link.epoch.is_some()
                && link.warming.is_none()
                && link.expect.is_empty()
                && unrecorded < MAX_UNRECORDED
            {
                let from = format!("{}-0", self.last_read);
                let count = READ_COUNT.to_string();
                let block = BLOCK_MS.to_string();
                link.conn.command(&[
                    b"XREAD",
                    b"COUNT",
                    count.as_bytes(),
                    b"BLOCK",
                    block.as_bytes(),
                    b"STREAMS",
                    self.keys.log.as_bytes(),
                    from.as_bytes(),
                ]);
                link.expect.push_back(Expect::Read);
                link.deadlines
                    .push_back(now + Duration::from_millis(BLOCK_MS) + self.cfg.timeout);
            }
        }
        self.flush_output(registry, now);
    }

    fn connect(
        &mut self,
        writer: bool,
        registry: &Registry,
        now: Instant,
        attempt: u32,
        floor: u64,
    ) {
        let token = if writer { WRITER } else { READER };
        let conn = match RedisConn::connect(self.addr, registry, token) {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                let retry_at = now + self.backoff(attempt);
                log::debug!("backplane {}: connect: {why}", self.describe());
                let phase = pick(&mut self.writer, &mut self.reader, writer);
                *phase = Phase::Down {
                    retry_at,
                    attempt: attempt + 1,
                };
                return;
            }
        };
        let mut link = Box::new(Link {
            conn,
            expect: VecDeque::new(),
            deadlines: VecDeque::new(),
            append_sha: String::new(),
            fetch_sha: String::new(),
            epoch: None,
            warming: None,
            attempt,
        });
        // The whole handshake is pipelined: Redis answers in order, and an error in any step
        // drops the link.
        if let Some(password) = &self.cfg.url.password {
            match &self.cfg.url.user {
                Some(user) => link
                    .conn
                    .command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => link.conn.command(&[b"AUTH", password.as_bytes()]),
            }
            link.expect.push_back(Expect::Setup("AUTH"));
        }
        if self.cfg.url.db != 0 {
            let db = self.cfg.url.db.to_string();
            link.conn.command(&[b"SELECT", db.as_bytes()]);
            link.expect.push_back(Expect::Setup("SELECT"));
        }
        // HELLO runs once per connection (plain EVAL); the writer's scripts run per event.
        if writer {
            link.conn
                .command(&[b"SCRIPT", b"LOAD", scripts::APPEND.as_bytes()]);
            link.expect.push_back(Expect::ScriptSha(ScriptKind::Append));
            link.conn
                .command(&[b"SCRIPT", b"LOAD", scripts::FETCH.as_bytes()]);
            link.expect.push_back(Expect::ScriptSha(ScriptKind::Fetch));
        }
        let candidate = crate::ids::run_id();
        let floor = floor.max(self.last_read).to_string();
        link.conn.command(&[
            b"EVAL",
            scripts::HELLO.as_bytes(),
            b"2",
            self.keys.seq.as_bytes(),
            self.keys.epoch.as_bytes(),
            candidate.as_bytes(),
            floor.as_bytes(),
        ]);
        link.expect.push_back(Expect::Hello);
        // One deadline covers the handshake: the last reply (HELLO) must come by then.
        link.deadlines.push_back(now + self.cfg.timeout);
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        *phase = Phase::Up(link);
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = FIRST_BACKOFF
            .saturating_mul(1u32 << attempt.min(6))
            .min(MAX_BACKOFF);
        // Jitter over [base/2, base] so that nodes restarted together do not reconnect in step.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = base / 2;
        half + Duration::from_micros(self.rng % (half.as_micros() as u64 + 1))
    }

    /// Drops a link: its in-flight appends are refused, and it reconnects after a backoff.
    fn lose(&mut self, writer: bool, why: &str, registry: &Registry, now: Instant) {
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        let attempt = match std::mem::replace(
            phase,
            Phase::Down {
                retry_at: now,
                attempt: 0,
            },
        ) {
            Phase::Up(link) => {
                let was_ready = link.epoch.is_some();
                let attempt = if was_ready { 0 } else { link.attempt + 1 };
                link.conn.close(registry);
                if was_ready {
                    log::warn!(
                        "backplane {} {}: connection lost: {why}",
                        self.cfg.url,
                        if writer { "writer" } else { "reader" }
                    );
                } else {
                    log::debug!("backplane {}: handshake failed: {why}", self.cfg.url);
                }
                attempt
            }
            Phase::Down { attempt, .. } => attempt,
        };
        let retry_at = now
            + if attempt == 0 {
                Duration::ZERO
            } else {
                self.backoff(attempt)
            };
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        *phase = Phase::Down { retry_at, attempt };
        if writer {
            self.fail_pending();
        }
    }

    fn on_reply(&mut self, writer: bool, frame: OwnedFrame, now: Instant) -> Result<(), String> {
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        let Phase::Up(link) = phase else {
            return Ok(());
        };
        let Some(expect) = link.expect.pop_front() else {
            return Err("reply to nothing".into());
        };
        if matches!(
            expect,
            Expect::Hello | Expect::Append(_) | Expect::Fetch | Expect::Read | Expect::Warm
        ) {
            link.deadlines.pop_front();
        }
        if let OwnedFrame::Error(e) = &frame {
            return match expect {
                Expect::Append(n) => {
                    // A script error (e.g. out of memory): refuse the call's events. Writes the
                    // script made before it failed stay (Redis has no rollback) and are read
                    // back like any event: the timed-out-publish case that idempotency keys
                    // make safe to retry.
                    log::warn!("backplane append refused by Redis: {}", first_word(e));
                    for _ in 0..n {
                        if let Some((origin, _)) = self.pop_inflight() {
                            self.fail(origin);
                        }
                    }
                    Ok(())
                }
                Expect::Fetch => {
                    log::warn!("backplane backfill refused by Redis: {e}");
                    if let Some(req) = self.fetches.pop_front() {
                        self.backfill_failed(req);
                    }
                    Ok(())
                }
                Expect::Setup(step) => Err(format!("{step}: {}", first_word(e))),
                _ => Err(first_word(e).to_string()),
            };
        }
        match expect {
            Expect::Setup(_) => Ok(()),
            Expect::ScriptSha(kind) => {
                let sha = text(&frame).ok_or("SCRIPT LOAD: no sha")?.to_string();
                match kind {
                    ScriptKind::Append => link.append_sha = sha,
                    ScriptKind::Fetch => link.fetch_sha = sha,
                }
                Ok(())
            }
            Expect::Hello => self.on_hello(writer, &frame, now),
            Expect::Append(n) => self.on_append(n, &frame),
            Expect::Fetch => self.on_fetch(&frame),
            Expect::Read => self.on_read(&frame),
            Expect::Warm => self.on_warm(&frame, now),
        }
    }

    fn on_hello(&mut self, writer: bool, frame: &OwnedFrame, now: Instant) -> Result<(), String> {
        let OwnedFrame::Array(parts) = frame else {
            return Err("HELLO: unexpected reply".into());
        };
        let epoch = parts.first().and_then(text).ok_or("HELLO: no epoch")?;
        let epoch = epoch.to_string();
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        let Phase::Up(link) = phase else {
            return Ok(());
        };
        let seen = &mut self.ever_up[usize::from(!writer)];
        if std::mem::replace(seen, true) {
            self.stats.reconnects += 1;
        }
        link.epoch = Some(epoch.clone());
        link.attempt = 0;
        if writer {
            log::info!(
                "backplane {} writer: connected, epoch {epoch}",
                self.cfg.url
            );
            return Ok(());
        }
        match self.epoch.as_deref() {
            None => {
                log::info!(
                    "backplane {} reader: connected, epoch {epoch}",
                    self.cfg.url
                );
                self.epoch = Some(epoch.clone());
                self.notices.push((
                    self.events.len(),
                    Notice::Epoch {
                        epoch: epoch.clone(),
                        lost: false,
                    },
                ));
                // First contact: fill the cache with the newest retained events.
                link.warming = Some(Warm {
                    events: Vec::new(),
                    bytes: 0,
                });
                let count = READ_COUNT.to_string();
                link.conn.command(&[
                    b"XREVRANGE",
                    self.keys.log.as_bytes(),
                    b"+",
                    b"-",
                    b"COUNT",
                    count.as_bytes(),
                ]);
                link.expect.push_back(Expect::Warm);
                link.deadlines.push_back(now + self.cfg.timeout);
            }
            Some(known) if known == epoch => {
                log::info!(
                    "backplane {} reader: reconnected, reading on after seq {}",
                    self.cfg.url,
                    self.last_read
                );
            }
            Some(known) => {
                log::warn!(
                    "backplane {}: the dataset changed (epoch {known} -> {epoch}): Redis lost \
                     its data; streams get a reset notice",
                    self.cfg.url
                );
                self.epoch = Some(epoch.clone());
                self.notices
                    .push((self.events.len(), Notice::Epoch { epoch, lost: true }));
                // Everything in the new dataset is new.
                self.last_read = 0;
            }
        }
        Ok(())
    }

    /// The reply to one APPEND call of `n` events: one `{status, seq}` per event, or `{'EPOCH',
    /// epoch}` for the whole call. An error here drops the link, which refuses every append
    /// still in flight.
    fn on_append(&mut self, n: usize, frame: &OwnedFrame) -> Result<(), String> {
        let parts = match frame {
            OwnedFrame::Array(p) => p.as_slice(),
            _ => return Err("APPEND: unexpected reply".into()),
        };
        if parts.first().and_then(text) == Some("EPOCH") {
            // The dataset changed under this link: refuse, and say HELLO again.
            return Err("the dataset changed (epoch mismatch)".into());
        }
        if parts.len() != n {
            return Err(format!("APPEND: {} results for {n} events", parts.len()));
        }
        for part in parts {
            let Some((origin, sent)) = self.pop_inflight() else {
                return Err("append reply without an append".into());
            };
            self.on_appended(origin, sent, part)?;
        }
        Ok(())
    }

    /// One event's result in an APPEND reply.
    fn on_appended(&mut self, origin: Origin, sent: Sent, part: &OwnedFrame) -> Result<(), String> {
        let (status, seq) = match part {
            OwnedFrame::Array(p) if p.len() == 2 => (
                text(&p[0]).unwrap_or(""),
                integer(&p[1]).and_then(|s| u64::try_from(s).ok()),
            ),
            _ => {
                self.fail(origin);
                return Err("APPEND: unexpected result".into());
            }
        };
        let (Some(seq), "OK" | "DUP") = (seq, status) else {
            self.fail(origin);
            return Err(format!("APPEND: unexpected result {status:?}"));
        };
        let Phase::Up(link) = &mut self.writer else {
            self.fail(origin);
            return Ok(());
        };
        let epoch = link.epoch.clone().unwrap_or_default();
        self.stats.appends += u64::from(status == "OK");
        self.completions.push(Completion {
            origin,
            outcome: Ok((format!("{epoch}-{seq}"), seq)),
        });
        // Every seq before this one has been read (seqs are consecutive in a dataset): record
        // it now; the reader skips it when it comes back.
        if status == "OK"
            && self.last_read != 0
            && seq == self.last_read + 1
            && self.epoch.as_deref() == Some(epoch.as_str())
        {
            self.take(RemoteEvent {
                seq,
                topics: sent
                    .topics
                    .into_iter()
                    .map(String::into_boxed_str)
                    .collect(),
                event_type: sent.event_type.map(String::into_boxed_str),
                data: sent.data.into_boxed_str(),
                appended_ms: 0,
            });
        }
        Ok(())
    }

    fn on_read(&mut self, frame: &OwnedFrame) -> Result<(), String> {
        let entries = match frame {
            OwnedFrame::Null => return Ok(()), // BLOCK timed out: nothing new
            OwnedFrame::Array(streams) => match streams.first() {
                Some(OwnedFrame::Array(kv)) if kv.len() == 2 => match &kv[1] {
                    OwnedFrame::Array(entries) => entries,
                    _ => return Err("XREAD: unexpected reply".into()),
                },
                _ => return Ok(()),
            },
            _ => return Err("XREAD: unexpected reply".into()),
        };
        for entry in entries {
            let Some(ev) = parse_entry(entry) else {
                log::warn!("backplane: skipping a malformed stream entry");
                continue;
            };
            if ev.seq <= self.last_read {
                continue;
            }
            if self.last_read != 0 && ev.seq != self.last_read + 1 {
                log::warn!(
                    "backplane: events {}..{} were trimmed from Redis before this node read them",
                    self.last_read + 1,
                    ev.seq - 1
                );
                self.notices.push((self.events.len(), Notice::Gap));
            }
            self.take(ev);
        }
        Ok(())
    }

    fn take(&mut self, ev: RemoteEvent) {
        self.last_read = ev.seq;
        self.stats.events_read += 1;
        self.stats.read_bytes += (ev.data.len()
            + ev.topics.iter().map(|t| t.len() + 1).sum::<usize>()
            + ev.event_type.as_ref().map_or(0, |t| t.len()))
            as u64;
        self.events.push(ev);
    }

    fn on_warm(&mut self, frame: &OwnedFrame, now: Instant) -> Result<(), String> {
        let OwnedFrame::Array(entries) = frame else {
            return Err("XREVRANGE: unexpected reply".into());
        };
        let Phase::Up(link) = &mut self.reader else {
            return Ok(());
        };
        let Some(warm) = link.warming.as_mut() else {
            return Ok(());
        };
        let mut oldest = None;
        for entry in entries {
            if let Some(ev) = parse_entry(entry) {
                oldest = Some(ev.seq);
                warm.bytes += ev.data.len() + 64;
                warm.events.push(ev);
            }
        }
        let full = warm.events.len() >= self.cfg.warm_events || warm.bytes >= self.cfg.warm_bytes;
        match oldest {
            Some(oldest) if !full && entries.len() == READ_COUNT && oldest > 1 => {
                // Older entries may exist: fetch the next page, below the oldest so far.
                let below = format!("({oldest}-0");
                let count = READ_COUNT.to_string();
                link.conn.command(&[
                    b"XREVRANGE",
                    self.keys.log.as_bytes(),
                    below.as_bytes(),
                    b"-",
                    b"COUNT",
                    count.as_bytes(),
                ]);
                link.expect.push_back(Expect::Warm);
                link.deadlines.push_back(now + self.cfg.timeout);
                Ok(())
            }
            _ => {
                let mut events = link.warming.take().map(|w| w.events).unwrap_or_default();
                events.reverse();
                log::info!(
                    "backplane: history cache filled with {} events from Redis",
                    events.len()
                );
                for ev in events {
                    if ev.seq > self.last_read {
                        self.take(ev);
                    }
                }
                self.started = true;
                Ok(())
            }
        }
    }

    /// Sends the commands queued since the last tick (appends and backfills made while the loop
    /// flushed connections: a pipelined request read after its predecessor's answer).
    pub fn flush_output(&mut self, registry: &Registry, now: Instant) {
        self.send_staged(now);
        for writer in [true, false] {
            let phase = pick(&mut self.writer, &mut self.reader, writer);
            if let Phase::Up(link) = phase {
                if link.conn.has_output() {
                    if let Err(e) = link.conn.flush() {
                        let why = e.to_string();
                        self.lose(writer, &why, registry, now);
                    }
                }
            }
        }
    }

    /// Answers or events are waiting for the loop (it must not sleep).
    pub fn has_work(&self) -> bool {
        !self.completions.is_empty() || !self.backfills.is_empty() || !self.events.is_empty()
    }

    /// Closes both links (shutdown); pending appends are refused.
    pub fn close(&mut self, registry: &Registry) {
        let now = Instant::now();
        for writer in [true, false] {
            let phase = pick(&mut self.writer, &mut self.reader, writer);
            if let Phase::Up(link) = std::mem::replace(
                phase,
                Phase::Down {
                    retry_at: now + Duration::from_secs(3600),
                    attempt: 0,
                },
            ) {
                link.conn.close(registry);
            }
        }
        self.fail_pending();
    }

    /// Refuses everything the writer carries that Redis has not answered: appends sent or
    /// staged, and backfills.
    fn fail_pending(&mut self) {
        while let Some((origin, _)) = self.pop_inflight() {
            self.fail(origin);
        }
        for s in std::mem::take(&mut self.staged) {
            self.inflight_bytes -= s.cost;
            self.fail(s.origin);
        }
        while let Some(req) = self.fetches.pop_front() {
            self.backfill_failed(req);
        }
    }

    fn pop_inflight(&mut self) -> Option<(Origin, Sent)> {
        let (origin, cost, sent) = self.inflight.pop_front()?;
        self.inflight_bytes -= cost;
        Some((origin, sent))
    }
}

/// The writer's or the reader's phase (a split borrow: the rest of the backplane stays usable).
fn pick<'a>(writer: &'a mut Phase, reader: &'a mut Phase, which_writer: bool) -> &'a mut Phase {
    if which_writer {
        writer
    } else {
        reader
    }
}

fn first_word(e: &str) -> &str {
    // Redis errors start with a code word (NOAUTH, WRONGPASS, NOSCRIPT...); the rest may quote
    // arguments, which could be a password.
    e.split_whitespace().next().unwrap_or("error")
}

/// One stream entry: `[id, [field, value, ...]]`.
fn parse_entry(entry: &OwnedFrame) -> Option<RemoteEvent> {
    let OwnedFrame::Array(parts) = entry else {
        return None;
    };
    let id = text(parts.first()?)?;
    let seq: u64 = id.strip_suffix("-0")?.parse().ok()?;
    let OwnedFrame::Array(fields) = parts.get(1)? else {
        return None;
    };
    let (mut topics, mut event_type, mut data, mut ts) = (None, None, None, 0);
    for pair in fields.chunks(2) {
        let [k, v] = pair else { continue };
        match text(k)? {
            "t" => topics = Some(text(v)?),
            "e" => event_type = Some(text(v)?),
            "d" => data = Some(text(v)?),
            "ts" => ts = integer(v).and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
            _ => {}
        }
    }
    let topics: Vec<Box<str>> = topics?
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(Box::from)
        .collect();
    if topics.is_empty() {
        return None;
    }
    Some(RemoteEvent {
        seq,
        topics,
        event_type: event_type.filter(|t| !t.is_empty()).map(Box::from),
        data: data?.into(),
        appended_ms: ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> OwnedFrame {
        OwnedFrame::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> OwnedFrame {
        let mut kv = Vec::new();
        for (k, v) in fields {
            kv.push(bulk(k));
            kv.push(bulk(v));
        }
        OwnedFrame::Array(vec![bulk(id), OwnedFrame::Array(kv)])
    }

    #[test]
    fn stream_entries_parse_or_are_refused() {
        let ok = entry("42-0", &[("t", "a b"), ("e", ""), ("d", "hi"), ("ts", "7")]);
        let ev = parse_entry(&ok).expect("valid entry");
        assert_eq!(ev.seq, 42);
        assert_eq!(ev.topics, vec![Box::from("a"), Box::from("b")]);
        assert_eq!(ev.event_type, None);
        assert_eq!(&*ev.data, "hi");
        assert_eq!(ev.appended_ms, 7);
        let typed = entry("43-0", &[("t", "a"), ("e", "tick"), ("d", "")]);
        assert_eq!(
            parse_entry(&typed).and_then(|e| e.event_type).as_deref(),
            Some("tick")
        );
        // Not ours: a foreign id shape, no topics, no data, not an entry at all.
        for bad in [
            entry("42-1", &[("t", "a"), ("d", "x")]),
            entry("x-0", &[("t", "a"), ("d", "x")]),
            entry("44-0", &[("t", ""), ("d", "x")]),
            entry("45-0", &[("t", "a")]),
            bulk("46-0"),
        ] {
            assert!(parse_entry(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_is_jittered_and_capped_at_two_seconds() {
        let cfg = BackplaneConfig {
            url: RedisUrl::parse("redis://127.0.0.1:1").expect("url"),
            prefix: "p:".into(),
            timeout: Duration::from_millis(100),
            retention: 10,
            idempotency_secs: 1,
            history: 1,
            warm_events: 1,
            warm_bytes: 1,
            max_inflight_bytes: 1 << 20,
        };
        let mut bp = Backplane::new(cfg).expect("backplane");
        for attempt in 0..40 {
            let d = bp.backoff(attempt);
            let base = FIRST_BACKOFF
                .saturating_mul(1u32 << attempt.min(6))
                .min(MAX_BACKOFF);
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
            assert!(d <= MAX_BACKOFF);
        }
    }
}
