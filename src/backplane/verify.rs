//! Checking, after a reconnection, that Redis still holds what this node delivered: the entry
//! at the last seq handed to the hub must be the same event (its append time, size and edges).
//!
//! The high-water mark (`scripts::HELLO`) catches a Redis whose log ends before what a node saw.
//! It cannot catch a log that went on differently: a master that kept taking writes after a
//! replica was promoted (a manual failover, a partition) lets other nodes give the same seqs to
//! other events on the new master, and its counter can pass any node's mark. A node that
//! delivered from the old master finds its last event replaced, asks for a new epoch (HELLO's
//! `force`), and every stream is reset, as for any loss: never a silent gap or a reused id.
//! A missing entry is not a divergence: it was trimmed (`--backplane-retention`).

use redis_protocol::resp2::types::OwnedFrame;

use super::link::{Expect, Link};
use super::read::parse_entry;
use super::{Backplane, RemoteEvent};

/// What identifies the last event handed to the hub, kept in O(1) space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) seq: u64,
    /// Redis's clock at the append, in ms (0 when the node recorded its own event from its
    /// append's answer, before reading it back).
    ts: u64,
    len: usize,
    /// The data's first and last bytes (up to 16 each).
    edges: [u8; 32],
}

impl Fingerprint {
    pub(super) fn of(ev: &RemoteEvent) -> Fingerprint {
        let data = ev.data.as_bytes();
        let mut edges = [0u8; 32];
        let head = data.len().min(16);
        edges[..head].copy_from_slice(&data[..head]);
        let tail = &data[data.len().saturating_sub(16)..];
        edges[16..16 + tail.len()].copy_from_slice(tail);
        Fingerprint {
            seq: ev.seq,
            ts: ev.appended_ms,
            len: data.len(),
            edges,
        }
    }

    /// Whether `other` (read from Redis) is the same event; the time only when both know it.
    fn matches(&self, other: &Fingerprint) -> bool {
        let times = self.ts == 0 || other.ts == 0 || self.ts == other.ts;
        self.seq == other.seq && times && self.len == other.len && self.edges == other.edges
    }
}

/// Asks for the entry at `seq` (before the reader's next `XREAD`).
pub(super) fn send_verify(link: &mut Link, log_key: &str, seq: u64, deadline: std::time::Instant) {
    let id = format!("{seq}-0");
    link.conn
        .command(&[b"XRANGE", log_key.as_bytes(), id.as_bytes(), id.as_bytes()]);
    link.expect.push_back(Expect::Verify);
    link.deadlines.push_back(deadline);
}

impl Backplane {
    /// The answer to [`send_verify`]: a different event at that seq drops the reader and makes
    /// its next HELLO start a new epoch.
    pub(super) fn on_verify(&mut self, frame: &OwnedFrame) -> Result<(), String> {
        let OwnedFrame::Array(entries) = frame else {
            return Err("XRANGE: unexpected reply".into());
        };
        let (Some(mine), Some(entry)) = (self.last_event, entries.first()) else {
            return Ok(()); // trimmed, or nothing delivered
        };
        let same = parse_entry(entry).is_some_and(|ev| mine.matches(&Fingerprint::of(&ev)));
        if same {
            return Ok(());
        }
        log::warn!(
            "backplane {}: Redis holds another event at seq {} than the one this node delivered \
             (a master that took writes after a failover): starting a new epoch",
            self.cfg.url,
            mine.seq
        );
        self.force_epoch = true;
        Err("the log differs from what this node delivered".into())
    }
}
