//! Presence across nodes (docs/API.md, "Presence"): each node keeps its *part* in Redis, one hash
//! `<prefix>{hub}:presence:<node>` (field: topic; value: the node's stream count on it and their
//! distinct subjects, at most [`MAX_SUBJECTS`] and [`MAX_PART_BYTES`], `cut` past that) with a
//! TTL of `--backplane-presence-ttl-secs` (10 s by default), and its id in the zset `<prefix>{hub}:nodes` scored by when that
//! TTL ends. A node killed without a word leaves nothing once its TTL passes.
//!
//! The loop (`event_loop/presence.rs`) hands in the parts of the topics whose readers changed,
//! at most once per [`PRESENCE_PERIOD`]; they go out on the writer link as one `EVAL` of
//! [`PUT`] per [`MAX_TOPICS_PER_CALL`] topics, which also refreshes the TTL (alone, every third
//! of the TTL, when nothing changed). Nothing is done per event. After the writer (re)connects,
//! or when Redis answers that the part was lost (the TTL passed while the node was stalled), the
//! loop is asked to rewrite the whole part ([`Backplane::presence_reset_wanted`]) and the next
//! call clears it first.
//!
//! A query ([`GET`], one `EVAL` on the writer link) returns every live node's value for a topic;
//! the loop adds its own part from its connections (fresher than Redis) and merges.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;

use super::link::{Expect, Phase};
use super::redis::{integer, text};
use super::Backplane;
use crate::json::push_json_str;

/// Changes are written at most once per period (churn on a topic costs one write per period).
pub const PRESENCE_PERIOD: Duration = Duration::from_secs(1);
/// Most subjects one node writes for one topic; past it the part says `cut`.
pub const MAX_SUBJECTS: usize = 1000;
/// Most bytes of subjects one node writes for one topic (past it, `cut` as well).
pub const MAX_PART_BYTES: usize = 64 * 1024;
/// Most topics in one write call, so that one call holds Redis briefly.
const MAX_TOPICS_PER_CALL: usize = 256;

/// PUT: KEYS the node's hash, the nodes zset; ARGV node id, TTL (ms), '1' to clear the hash
/// first, then pairs topic, value ('' deletes the topic). Sets the TTL of the hash and the
/// node's score (now + TTL), drops nodes whose score passed, and returns 1 when the node's part
/// had expired (or was never written): the caller must rewrite it all.
pub const PUT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local lost = 0
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
else
  local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if not s or tonumber(s) < now then lost = 1 end
end
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
redis.call('ZADD', KEYS[2], string.format('%.0f', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return lost
"#;

/// GET: KEYS the nodes zset; ARGV the hash key prefix (`<prefix>{hub}:presence:`), topic.
/// Returns `{node, value, node, value, …}` for every node whose TTL has not passed and that
/// has the topic. Read-only. The hashes are named from the zset, not passed as KEYS: they share
/// the `{hub}` hash tag, so they live in the zset's slot.
pub const GET: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now), '+inf')) do
  local v = redis.call('HGET', ARGV[1] .. n, ARGV[2])
  if v then
    out[#out + 1] = n
    out[#out + 1] = v
  end
end
return out
"#;

/// One topic's part of a node: its streams on the topic and their distinct subjects.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Part {
    /// Streams subscribed to the topic on that node.
    #[serde(rename = "n")]
    pub count: u64,
    /// The subjects were cut at [`MAX_SUBJECTS`] or [`MAX_PART_BYTES`].
    pub cut: bool,
    /// Distinct subjects (JWT `sub`).
    #[serde(rename = "subs")]
    pub subjects: Vec<String>,
}

impl Part {
    /// The hash value: `{"n":…,"cut":…,"subs":[…]}`; empty (the field is deleted) for no stream.
    pub fn encode(&self) -> String {
        if self.count == 0 {
            return String::new();
        }
        let mut o = format!("{{\"n\":{},\"cut\":{},\"subs\":[", self.count, self.cut);
        for (i, s) in self.subjects.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            push_json_str(&mut o, s);
        }
        o.push_str("]}");
        o
    }
}

/// A query's answer: the other live nodes' parts, or `Err` when Redis did not answer.
pub type Answer = Result<Vec<Part>, ()>;

/// The presence state of a node's backplane.
#[derive(Default)]
pub struct Presence {
    node: String,
    hash: String,
    hash_prefix: String,
    nodes: String,
    /// Topics whose part is to be gathered (taken from the hub once per period).
    pub queue: Vec<Box<str>>,
    /// The part being gathered.
    pub walk: Option<Walk>,
    /// The slot from which the loop goes on noting every topic (a rewrite of the whole part).
    pub rescan: Option<usize>,
    /// Parts gathered, waiting to go out: (topic, value).
    ready: Vec<(Box<str>, String)>,
    /// The next write clears the part first.
    clear: bool,
    /// The part must be rewritten whole (the loop notes every topic again).
    reset: bool,
    /// Writer state last seen: writable, and the reconnection count.
    seen: (bool, u64),
    last_write: Option<Instant>,
    next_take: Option<Instant>,
    /// Queries in flight: id → answer once it came, and the reconnection count when sent.
    waiting: HashMap<u64, (Option<Answer>, u64)>,
    next_id: u64,
    /// Write calls sent (`sseloop_presence_writes_total`).
    pub writes: u64,
}

impl Backplane {
    /// Starts keeping this node's part (the loop calls it once, with the node's id).
    pub fn presence_start(&mut self, node: &str) {
        let p = &mut self.presence;
        p.node = node.to_owned();
        p.hash_prefix = format!("{}{{hub}}:presence:", self.cfg.prefix);
        p.hash = format!("{}{node}", p.hash_prefix);
        p.nodes = format!("{}{{hub}}:nodes", self.cfg.prefix);
    }

    /// Whether the loop must note every topic again (the part is rewritten whole): the writer
    /// (re)connected, or Redis lost the part. Asked once per iteration; true once per event.
    pub fn presence_reset_wanted(&mut self) -> bool {
        let now = (self.writable(), self.stats.reconnects);
        let p = &mut self.presence;
        if now.0 && (!p.seen.0 || now.1 != p.seen.1) {
            p.reset = true;
        }
        p.seen = now;
        if p.reset && now.0 {
            p.reset = false;
            p.clear = true;
            p.ready.clear();
            p.queue.clear();
            p.walk = None;
            p.rescan = Some(0);
            return true;
        }
        false
    }

    /// Whether the topics changed since the last period are to be taken now (the writer is
    /// up and a period has passed); the next period starts.
    pub fn presence_take_due(&mut self, now: Instant) -> bool {
        if !self.writable() || self.presence.next_take.is_some_and(|t| now < t) {
            return false;
        }
        self.presence.next_take = Some(now + PRESENCE_PERIOD);
        true
    }

    /// A topic's part is ready to go out (`count` 0: the node has no stream on it any more).
    pub fn presence_part(&mut self, topic: Box<str>, part: &Part) {
        self.presence.ready.push((topic, part.encode()));
    }

    /// The earliest moment the loop has presence work: now while a rewrite or a gathering is
    /// under way, else the end of the period when the hub noted `changes`, or the TTL refresh.
    pub fn presence_due(&self, changes: bool, now: Instant) -> Option<Instant> {
        let p = &self.presence;
        if p.node.is_empty() || !self.writable() {
            return None;
        }
        if p.rescan.is_some() || p.walk.is_some() || !p.queue.is_empty() {
            return Some(now);
        }
        let refresh = p.last_write.map_or(now, |t| t + self.refresh_every());
        let take = p.next_take.unwrap_or(now).max(now);
        Some(if changes { refresh.min(take) } else { refresh })
    }

    /// The TTL is refreshed this often when nothing changed: a third of it, so that one late
    /// or lost refresh does not let the part expire.
    fn refresh_every(&self) -> Duration {
        self.cfg.presence_ttl / 3
    }

    /// Sends the ready parts (a call per [`MAX_TOPICS_PER_CALL`] topics), or a TTL refresh when
    /// nothing was written for a while.
    pub fn presence_flush(&mut self, now: Instant) {
        let every = self.refresh_every();
        let refresh = self.presence.last_write.is_none_or(|t| now >= t + every);
        let p = &mut self.presence;
        let Phase::Up(link) = &mut self.writer else {
            return;
        };
        if p.node.is_empty() || link.epoch.is_none() {
            return;
        }
        if p.ready.is_empty() && !p.clear && !refresh {
            return;
        }
        let ttl = self.cfg.presence_ttl.as_millis().to_string();
        loop {
            let n = p.ready.len().min(MAX_TOPICS_PER_CALL);
            let batch: Vec<(Box<str>, String)> = p.ready.drain(..n).collect();
            let clear: &[u8] = if std::mem::take(&mut p.clear) {
                b"1"
            } else {
                b"0"
            };
            let mut args: Vec<&[u8]> = vec![
                b"EVAL",
                PUT.as_bytes(),
                b"2",
                p.hash.as_bytes(),
                p.nodes.as_bytes(),
                p.node.as_bytes(),
                ttl.as_bytes(),
                clear,
            ];
            for (topic, value) in &batch {
                args.push(topic.as_bytes());
                args.push(value.as_bytes());
            }
            link.conn.command(&args);
            link.expect.push_back(Expect::Presence(0));
            link.deadlines.push_back(now + self.cfg.timeout);
            p.writes += 1;
            if p.ready.is_empty() {
                break;
            }
        }
        p.last_write = Some(now);
    }

    /// Asks Redis for every other live node's part of `topic`; the id to ask
    /// [`Backplane::presence_answer`] with, or `None` when the writer is down.
    pub fn presence_query(&mut self, topic: &str, now: Instant) -> Option<u64> {
        let Phase::Up(link) = &mut self.writer else {
            return None;
        };
        let p = &mut self.presence;
        if link.epoch.is_none() || p.node.is_empty() {
            return None;
        }
        p.next_id += 1;
        let id = p.next_id;
        link.conn.command(&[
            b"EVAL",
            GET.as_bytes(),
            b"1",
            p.nodes.as_bytes(),
            p.hash_prefix.as_bytes(),
            topic.as_bytes(),
        ]);
        link.expect.push_back(Expect::Presence(id));
        link.deadlines.push_back(now + self.cfg.timeout);
        p.waiting.insert(id, (None, self.stats.reconnects));
        Some(id)
    }

    /// The answer to query `id` once it came; `Some(Err)` when it cannot come any more (the
    /// writer was lost since). An answer is given once.
    pub fn presence_answer(&mut self, id: u64) -> Option<Answer> {
        let lost = !self.writable();
        let reconnects = self.stats.reconnects;
        let waiting = &mut self.presence.waiting;
        match waiting.get(&id) {
            None => return Some(Err(())),
            Some((None, since)) if !lost && *since == reconnects => return None,
            Some(_) => {}
        }
        waiting.remove(&id).map(|(a, _)| a.unwrap_or(Err(())))
    }

    /// An answer came that its caller has not taken yet (the loop must not sleep).
    pub(super) fn presence_answered(&self) -> bool {
        self.presence.waiting.values().any(|(a, _)| a.is_some())
    }

    /// Drops query `id` (its caller gave up); a late answer is then ignored.
    pub fn presence_forget(&mut self, id: u64) {
        self.presence.waiting.remove(&id);
    }

    /// Topics taken from the hub whose part is not sent yet (a gauge, with the hub's noted
    /// topics).
    pub fn presence_pending(&self) -> usize {
        let p = &self.presence;
        p.queue.len() + usize::from(p.walk.is_some()) + p.ready.len()
    }

    /// Redis answered a presence call (`id` 0: a write).
    pub(super) fn on_presence(&mut self, id: u64, frame: &OwnedFrame) -> Result<(), String> {
        let p = &mut self.presence;
        if id == 0 {
            if integer(frame) == Some(1) {
                log::info!("backplane: this node's presence had expired in Redis; rewriting it");
                p.reset = true;
            }
            return Ok(());
        }
        let Some((slot, _)) = p.waiting.get_mut(&id) else {
            return Ok(()); // its caller gave up
        };
        let OwnedFrame::Array(items) = frame else {
            *slot = Some(Err(()));
            return Ok(());
        };
        let mut parts = Vec::with_capacity(items.len() / 2);
        for pair in items.chunks_exact(2) {
            if text(&pair[0]) == Some(p.node.as_str()) {
                continue; // this node's own part comes from its connections
            }
            match text(&pair[1]).map(serde_json::from_str::<Part>) {
                Some(Ok(part)) => parts.push(part),
                _ => log::debug!("backplane: ignored a presence part this version cannot read"),
            }
        }
        *slot = Some(Ok(parts));
        Ok(())
    }

    /// Redis refused a presence call: a write is retried whole (next period), a query fails.
    pub(super) fn on_presence_error(&mut self, id: u64, e: &str) {
        log::warn!(
            "backplane presence refused by Redis: {}",
            super::link::first_word(e)
        );
        let p = &mut self.presence;
        if id == 0 {
            p.reset = true;
        } else if let Some((slot, _)) = p.waiting.get_mut(&id) {
            *slot = Some(Err(()));
        }
    }
}

/// Merges the subjects of `parts` into `into` (distinct, sorted), with the total count and
/// whether any part was cut.
pub fn merge(parts: Vec<Part>, into: &mut BTreeSet<String>) -> (u64, bool) {
    let mut count = 0u64;
    let mut cut = false;
    for part in parts {
        count = count.saturating_add(part.count);
        cut |= part.cut;
        into.extend(part.subjects);
    }
    (count, cut)
}

/// A topic's part being gathered by the loop, a bounded slice of its readers per iteration.
#[derive(Default)]
pub struct Walk {
    /// The topic.
    pub topic: Box<str>,
    /// Readers visited so far.
    pub next: usize,
    /// Distinct subjects so far, at most [`MAX_SUBJECTS`] and [`MAX_PART_BYTES`].
    pub subjects: BTreeSet<String>,
    bytes: usize,
    /// Subjects were left out.
    pub cut: bool,
}

impl Walk {
    /// A walk over `topic`'s readers.
    pub fn new(topic: Box<str>) -> Walk {
        Walk {
            topic,
            ..Walk::default()
        }
    }

    /// Adds `sub` unless it is known or the part is full (then `cut`).
    pub fn add(&mut self, sub: &str) {
        if self.cut || self.subjects.contains(sub) {
            return;
        }
        if self.subjects.len() >= MAX_SUBJECTS || self.bytes + sub.len() > MAX_PART_BYTES {
            self.cut = true;
            return;
        }
        self.bytes += sub.len();
        self.subjects.insert(sub.to_owned());
    }

    /// The part, with the topic's stream count now.
    pub fn finish(self, count: usize) -> (Box<str>, Part) {
        let part = Part {
            count: count as u64,
            cut: self.cut,
            subjects: self.subjects.into_iter().collect(),
        };
        (self.topic, part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_encodes_as_its_reader_parses_it() {
        let part = Part {
            count: 3,
            cut: false,
            subjects: vec!["alice".into(), "b\"ob".into()],
        };
        let back: Part = serde_json::from_str(&part.encode()).unwrap();
        assert_eq!(back, part);
        assert_eq!(Part::default().encode(), "");
    }

    #[test]
    fn subjects_are_distinct_and_bounded() {
        let mut walk = Walk::new("t".into());
        walk.add("a");
        walk.add("a");
        assert_eq!(walk.subjects.len(), 1);
        for i in 0..MAX_SUBJECTS + 5 {
            walk.add(&format!("s{i}"));
        }
        assert_eq!((walk.subjects.len(), walk.cut), (MAX_SUBJECTS, true));
        let (topic, part) = walk.finish(2000);
        assert_eq!((&*topic, part.count, part.cut), ("t", 2000, true));
        let mut big = Walk::new("t".into());
        let long = "x".repeat(MAX_PART_BYTES / 2 + 1);
        big.add(&long);
        big.add(&format!("{long}y"));
        assert_eq!((big.subjects.len(), big.cut), (1, true));
    }

    #[test]
    fn merging_adds_counts_and_unions_subjects() {
        let parts = vec![
            Part {
                count: 2,
                cut: false,
                subjects: vec!["b".into(), "a".into()],
            },
            Part {
                count: 5,
                cut: true,
                subjects: vec!["a".into(), "c".into()],
            },
        ];
        let mut set = BTreeSet::from(["z".to_string()]);
        assert_eq!(merge(parts, &mut set), (7, true));
        assert_eq!(set.into_iter().collect::<Vec<_>>(), ["a", "b", "c", "z"]);
    }
}
