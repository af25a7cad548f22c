//! Warm-up: on first contact with a dataset the reader fills the node's history cache with the
//! newest events of the shared log (`XREVRANGE`, page by page, newest first), at most
//! `warm_events` / `warm_bytes`, before streams may start.

use std::time::Instant;

use redis_protocol::resp2::types::OwnedFrame;

use super::link::{Expect, Link, Phase};
use super::read::parse_entry;
use super::{Backplane, RemoteEvent, READ_COUNT};

pub(super) struct Warm {
    /// Gathered newest first.
    pub(super) events: Vec<RemoteEvent>,
    pub(super) bytes: usize,
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
                request_page(link, &self.keys.log, Some(oldest), now + self.cfg.timeout);
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
}

/// Asks for the next page of the newest events: from the log's end, or below seq `below`.
pub(super) fn request_page(link: &mut Link, log_key: &str, below: Option<u64>, deadline: Instant) {
    let start = below.map_or_else(|| "+".to_owned(), |seq| format!("({seq}-0"));
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
