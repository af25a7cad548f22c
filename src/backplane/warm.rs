//! Warm-up: on first contact with a dataset the reader fills the node's history cache with the
//! newest events of the shared log (`XREVRANGE`, page by page, newest first), before streams may
//! start. It keeps only what history will keep: an event while one of its topics holds fewer
//! than `--history` newer ones, and it stops once the kept events fill `--history-bytes` (or
//! after `warm_events` entries, or at the start of the epoch). So a late node holds what a node
//! that ran throughout holds, and its peak is that plus one page, not the whole log.
//!
//! What it left out is told to the hub ([`Notice::Floor`]): nothing at or below the oldest entry
//! it looked at, and, for each topic whose history was full, nothing at or below the newest
//! event left out. A resume from before either is served from Redis, or told "expired", exactly
//! as for events evicted normally: never a silent gap.

use std::collections::HashMap;
use std::time::Instant;

use redis_protocol::resp2::types::OwnedFrame;

use super::link::{Expect, Link, Phase};
use super::read::{entry_id, parse_entry};
use super::{Backplane, Notice, RemoteEvent, READ_COUNT};

#[derive(Default)]
pub(super) struct Warm {
    /// Kept, newest first.
    events: Vec<RemoteEvent>,
    /// Their footprint once recorded (estimated).
    bytes: usize,
    /// Entries looked at, and the newest and oldest of their seqs.
    scanned: usize,
    newest: u64,
    oldest: u64,
    /// The id of the oldest entry of the last page (the next page starts below it).
    below: (u64, u64),
    /// Per topic: events kept, and the newest seq left out because its history was full.
    topics: HashMap<Box<str>, (usize, u64)>,
}

impl Backplane {
    pub(super) fn on_warm(&mut self, frame: &OwnedFrame, now: Instant) -> Result<(), String> {
        let OwnedFrame::Array(entries) = frame else {
            return Err("XREVRANGE: unexpected reply".into());
        };
        let Phase::Up(link) = &mut self.reader else {
            return Ok(());
        };
        let Some(warm) = link.warming.as_mut() else {
            return Ok(());
        };
        let history = self.cfg.history;
        let mut more = entries.len() == READ_COUNT;
        // With no history nothing is kept: one entry says where the log ends.
        let full = |w: &Warm| {
            w.bytes >= self.cfg.warm_bytes
                || w.scanned >= self.cfg.warm_events
                || (history == 0 && w.scanned > 0)
        };
        let gated = self.cfg.min_replicas > 0;
        for entry in entries {
            let Some(id) = entry_id(entry) else {
                continue;
            };
            warm.below = id;
            if id.1 != 0 {
                continue; // a commit mark: HELLO told where commits stand
            }
            let seq = id.0;
            if seq <= self.since || full(warm) {
                // Full, or at the start of the epoch (older entries belong to an older one).
                more = false;
                break;
            }
            if gated && seq > self.committed {
                // Not yet held by enough replicas: the reader reads it, and holds it until
                // it is.
                continue;
            }
            warm.scanned += 1;
            warm.newest = warm.newest.max(seq);
            warm.oldest = seq;
            let Some(ev) = parse_entry(entry) else {
                continue;
            };
            let room = ev
                .topics
                .iter()
                .any(|t| warm.topics.get(t).map_or(0, |c| c.0) < history);
            if room {
                for t in &ev.topics {
                    warm.topics.entry(t.clone()).or_default().0 += 1;
                }
                warm.bytes += footprint(&ev);
                warm.events.push(ev);
            } else {
                // Newest first: the first one left out is the topic's floor.
                for t in &ev.topics {
                    let floor = &mut warm.topics.entry(t.clone()).or_default().1;
                    if *floor == 0 {
                        *floor = seq;
                    }
                }
            }
        }
        if more && !full(warm) && warm.below.0 > 1 {
            // Older entries may exist: fetch the next page, below the oldest so far.
            let below = Some(warm.below);
            request_page(link, &self.keys.log, below, now + self.cfg.timeout);
            return Ok(());
        }
        let warm = link.warming.take().unwrap_or_default();
        self.warmed(warm);
        Ok(())
    }

    /// Hands the kept events to the hub, oldest first, then the floor of what it holds.
    fn warmed(&mut self, warm: Warm) {
        log::info!(
            "backplane: history cache filled with {} of the newest {} events in Redis",
            warm.events.len(),
            warm.scanned
        );
        for ev in warm.events.into_iter().rev() {
            if ev.seq > self.last_read {
                self.take(ev);
            }
        }
        // Events left out are read past too (the reader goes on after the newest).
        self.last_read = self.last_read.max(warm.newest);
        let through = if warm.scanned == 0 {
            self.since
        } else {
            (warm.oldest - 1).max(self.since)
        };
        let topics = warm
            .topics
            .into_iter()
            .filter(|(_, (_, floor))| *floor > through)
            .map(|(topic, (_, floor))| (topic, floor))
            .collect();
        self.out
            .notices
            .push((self.out.events.len(), Notice::Floor { through, topics }));
        self.started = true;
    }
}

/// About what an event costs history once recorded (`Event::footprint`: its fields and both wire
/// forms, with an id of [`ID_LEN`] bytes), on the high side: warm-up then stops a little early
/// rather than load what the hub evicts at once.
fn footprint(ev: &RemoteEvent) -> usize {
    const ID_LEN: usize = 32;
    let topics: Vec<&str> = ev.topics.iter().map(|t| &**t).collect();
    let ty = ev.event_type.as_deref();
    let wire = crate::buf::encoded_len_bound(ID_LEN, &topics, ty, &ev.data);
    std::mem::size_of::<crate::buf::Event>()
        + ID_LEN
        + topics.iter().map(|t| t.len() + 16).sum::<usize>()
        + ty.map_or(0, str::len)
        + ev.data.len()
        + 2 * wire
}

/// Asks for the next page of the newest events: from the log's end, or below the entry id
/// `below`.
pub(super) fn request_page(
    link: &mut Link,
    log_key: &str,
    below: Option<(u64, u64)>,
    deadline: Instant,
) {
    let start = below.map_or_else(|| "+".to_owned(), |(seq, n)| format!("({seq}-{n}"));
    let count = READ_COUNT.to_string();
    link.conn.command(&[
        b"XREVRANGE",
        log_key.as_bytes(),
        start.as_bytes(),
        b"-",
        b"COUNT",
        count.as_bytes(),
    ]);
    link.expect.push_back(Expect::Warm);
    link.deadlines.push_back(deadline);
}
