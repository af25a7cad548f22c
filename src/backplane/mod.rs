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
//! changed is reported so that streams get a reset notice: Redis restarted without its data, or
//! a node found its counter behind the node's high-water mark (Redis came back from an older
//! point) and started a new epoch (docs/SCALING.md, "Redis behind what the cluster saw").
//!
//! This module speaks Redis and keeps the links' state; it never touches client connections or
//! the hub: the loop drains [`Backplane::out`] after each call (`seam.rs`: what crosses).
//!
//! Files: `seam.rs` (requests in, [`Output`] out), `link.rs` (the two links' state machines, the
//! handshake, reply routing, reconnection), `append.rs` (append batching and answers),
//! `read.rs` (reading the shared log, parsing entries), `warm.rs` (filling the cache on first
//! contact), `backfill.rs` (resumes older than the cache), [`redis`] (the socket and RESP),
//! [`scripts`] (the Lua scripts and key names). This file: the configuration, the state, the
//! per-iteration tick.

mod append;
mod backfill;
mod link;
pub mod presence;
mod read;
pub mod redis;
mod replicas;
pub mod scripts;
mod seam;
mod sentinel;
mod verify;
mod warm;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;

use self::append::{Replicating, Sent, Staged};
use self::link::{pick, Expect, Phase};
use self::scripts::Keys;
pub use self::seam::{
    AppendError, AppendRequest, Backfill, BackplaneStats, Completion, FetchRequest, Notice, Origin,
    Output, RemoteEvent, ReplySlot, WAIT_BUCKETS,
};
pub use self::sentinel::SENTINEL;
pub use self::watch::MAX_SENTINELS;
pub use crate::config::RedisUrl;

/// Poll token of the writer link.
pub const WRITER: Token = Token(usize::MAX - 4);
/// Poll token of the reader link.
pub const READER: Token = Token(usize::MAX - 5);

/// Whether `token` is one of the backplane's sockets (links, sentinel question, subscriptions).
pub fn owns(token: Token) -> bool {
    matches!(token, WRITER | READER | SENTINEL) || watch::is_watch(token)
}

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
    /// The TLS client configuration of a `rediss://` URL.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The sentinels' password (`--backplane-sentinel-password`).
    pub sentinel_password: Option<String>,
    /// Replicas that must hold an append before it is acknowledged and delivered
    /// (`--backplane-min-replicas`; 0: Redis's reply is enough).
    pub min_replicas: u32,
    /// How long this node's presence part outlives its last write (`presence.rs`).
    pub presence_ttl: Duration,
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
    /// The server API's history queries (`backfill.rs`).
    history: backfill::HistoryQueries,
    /// The epoch streams were told about.
    epoch: Option<String>,
    /// The last seq handed to the hub.
    last_read: u64,
    /// The id (`<seq>-<n>`) of the last log entry the reader read: events, epoch boundaries and
    /// commit marks (`<seq>-<n>` with n ≥ 1) alike.
    read_pos: (u64, u64),
    /// With `--backplane-min-replicas`: the highest seq known to be held by enough replicas;
    /// events above it are read but held back (`held`) until it passes them.
    committed: u64,
    /// Events read above `committed`, in seq order, each with whether a gap precedes it.
    /// At most [`MAX_UNRECORDED`] + one read's worth: the reader stops reading past that.
    held: VecDeque<(RemoteEvent, bool)>,
    /// Appends Redis answered, waiting for their batch's `WAIT`, oldest first.
    replicating: VecDeque<Replicating>,
    /// Since when the oldest held event has waited (or the last sweep was asked for).
    held_since: Option<Instant>,
    /// A sweep (a `WAIT` for events held too long) is in flight.
    sweeping: bool,
    /// Sentinel mode: where the master is.
    sentinel: Option<sentinel::Discovery>,
    /// The last event handed to the hub, to check after a reconnection that Redis still holds
    /// it (`verify.rs`).
    last_event: Option<verify::Fingerprint>,
    /// The next HELLO starts a new epoch: Redis's log went on differently from what this node
    /// delivered.
    force_epoch: bool,
    /// The highest seq Redis gave this node's appends (part of its high-water mark).
    issued: u64,
    /// The current epoch's events have seqs above this.
    since: u64,
    /// The first HELLO + cache fill is done (or gave up): streams may start.
    started: bool,
    started_deadline: Instant,
    /// Failures to connect repeat with every retry: one WARN line per period, DEBUG between.
    pub(super) failure_log: crate::ratelimit::LogLimit,
    rng: u64,
    /// Whether the writer / the reader has been up before (a later HELLO is a reconnect).
    ever_up: [bool; 2],
    /// What the loop takes out and records (events, notices, completions, backfills).
    pub out: Output,
    /// Counters.
    pub stats: BackplaneStats,
    frames: Vec<OwnedFrame>,
    /// This node's presence part in Redis, and presence queries (`presence.rs`).
    pub presence: presence::Presence,
}

impl Backplane {
    /// A backplane for `cfg`; resolves the host once (a name that does not resolve is a start
    /// error, not a retry loop).
    pub fn new(cfg: BackplaneConfig) -> Result<Backplane, String> {
        let addr = (cfg.url.host.as_str(), cfg.url.port)
            .to_socket_addrs()
            .map_err(|e| {
                format!(
                    "backplane {}: DNS: cannot resolve {}: {e}",
                    cfg.url, cfg.url.host
                )
            })?
            .next()
            .ok_or_else(|| format!("backplane host {} has no address", cfg.url.host))?;
        let now = Instant::now();
        let sentinel = cfg
            .url
            .sentinel
            .as_ref()
            .map(|s| sentinel::Discovery::new(s, cfg.sentinel_password.clone(), now));
        let rng = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x2545_f491, |d| d.as_nanos() as u64)
            | 1;
        Ok(Backplane {
            keys: Keys::new(&cfg.prefix),
            started_deadline: now + cfg.timeout * 2,
            failure_log: crate::ratelimit::LogLimit::new(link::FAILURE_LOG_EVERY, 1),
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
            history: backfill::HistoryQueries::default(),
            epoch: None,
            last_read: 0,
            read_pos: (0, 0),
            committed: 0,
            held: VecDeque::new(),
            replicating: VecDeque::new(),
            held_since: None,
            sweeping: false,
            sentinel,
            last_event: None,
            force_epoch: false,
            issued: 0,
            since: 0,
            started: false,
            rng,
            ever_up: [false; 2],
            out: Output::default(),
            stats: BackplaneStats::default(),
            frames: Vec::new(),
            presence: presence::Presence::default(),
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

    /// The earliest moment something is due (a reconnect, a reply deadline).
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.sentinel.as_ref().and_then(|d| d.next_deadline());
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

    /// Reconnects, expires deadlines, keeps the reader reading; called once per loop iteration.
    /// `unrecorded` is how many events the hub has not recorded yet (reader back-pressure).
    pub fn tick(&mut self, registry: &Registry, now: Instant, unrecorded: usize, floor: u64) {
        let known = self.discover(registry, now);
        for writer in [true, false] {
            let phase = pick(&mut self.writer, &mut self.reader, writer);
            match phase {
                Phase::Down { retry_at, attempt } if *retry_at <= now && known => {
                    let attempt = *attempt;
                    self.connect(writer, registry, now, attempt, floor);
                }
                Phase::Up(link) if link.deadlines.front().is_some_and(|d| *d <= now) => {
                    let what = if writer { "append" } else { "read" };
                    let why = format!("no reply within the {what} deadline");
                    self.lose(writer, &why, registry, now);
                }
                // The sentinels named another master than the one this link is on.
                Phase::Up(link) if known && link.addr != self.addr => {
                    self.lose(writer, "the master moved", registry, now);
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
                && unrecorded + self.held.len() < MAX_UNRECORDED
            {
                let pos = self.read_pos.max((self.last_read, 0));
                let from = format!("{}-{}", pos.0, pos.1);
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
        self.sweep(now);
        self.flush_output(registry, now);
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

    /// Answers or events are waiting for the loop (it must not sleep), including answers to
    /// the server API's presence and history queries not taken yet.
    pub fn has_work(&self) -> bool {
        self.out.has_work() || self.presence_answered() || self.history_answered()
    }

    /// Readiness on one of the backplane's sockets ([`owns`]): a link, the sentinel question,
    /// or a sentinel subscription.
    pub fn on_token(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        scratch: &mut [u8],
    ) {
        match token {
            SENTINEL => self.on_sentinel_ready(registry, now, scratch),
            WRITER | READER => self.on_ready(token, registry, now, scratch),
            _ => self.on_sentinel_watch(token, registry, now, scratch),
        }
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
        if let Some(d) = self.sentinel.as_mut() {
            d.close(registry);
        }
        self.fail_pending();
    }
}
