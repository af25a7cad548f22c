//! Reading the shared log on the reader link: each `XREAD` reply's entries become
//! [`RemoteEvent`]s in stream order (a hole in the seqs is a [`Notice::Gap`], an epoch boundary a
//! [`Notice::Epoch`]; with `--backplane-min-replicas` they wait for a commit mark, see
//! `replicas.rs`), and the parsing of one stream entry, shared by reads, warm-up and backfills.

use redis_protocol::resp2::types::OwnedFrame;

use std::time::Instant;

use super::redis::{integer, text};
use super::{Backplane, Notice, RemoteEvent};

impl Backplane {
    pub(super) fn on_read(&mut self, frame: &OwnedFrame, now: Instant) -> Result<(), String> {
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
        let gated = self.cfg.min_replicas > 0;
        for entry in entries {
            let Some(id) = entry_id(entry) else {
                log::warn!("backplane: skipping a stream entry without an id");
                continue;
            };
            self.read_pos = self.read_pos.max(id);
            if let Some((seq, epoch)) = parse_boundary(entry) {
                // A node found Redis behind what it had seen and started a new epoch: what
                // follows belongs to it.
                if seq > self.last_read {
                    self.new_epoch(epoch, seq);
                }
                continue;
            }
            if let Some(seq) = parse_commit(entry) {
                self.committed = self.committed.max(seq);
                continue;
            }
            let Some(ev) = parse_entry(entry) else {
                log::warn!("backplane: skipping a malformed stream entry");
                continue;
            };
            let before = self.held.back().map_or(self.last_read, |(h, _)| h.seq);
            let before = before.max(self.last_read);
            if ev.seq <= before {
                continue;
            }
            let gap = before != 0 && ev.seq != before + 1;
            if gap {
                log::warn!(
                    "backplane: events {}..{} were trimmed from Redis before this node read them",
                    before + 1,
                    ev.seq - 1
                );
            }
            if gated {
                self.hold(ev, gap, now);
                continue;
            }
            if gap {
                self.out.notices.push((self.out.events.len(), Notice::Gap));
            }
            self.take(ev);
        }
        if gated {
            self.release();
        }
        Ok(())
    }

    pub(super) fn take(&mut self, ev: RemoteEvent) {
        self.last_read = ev.seq;
        self.last_event = Some(super::verify::Fingerprint::of(&ev));
        self.stats.events_read += 1;
        self.stats.read_bytes += size(&ev) as u64;
        self.out.events.push(ev);
    }
}

/// An event's bytes as read (data, topics, type).
pub(super) fn size(ev: &RemoteEvent) -> usize {
    ev.data.len()
        + ev.topics.iter().map(|t| t.len() + 1).sum::<usize>()
        + ev.event_type.as_ref().map_or(0, |t| t.len())
}

/// The seq of an event's or boundary's stream entry (`<seq>-0`).
pub(super) fn entry_seq(entry: &OwnedFrame) -> Option<u64> {
    match entry_id(entry)? {
        (seq, 0) => Some(seq),
        _ => None,
    }
}

/// The id of any log entry: `<seq>-0` for events and boundaries, `<seq>-<n>` for commit marks.
pub(super) fn entry_id(entry: &OwnedFrame) -> Option<(u64, u64)> {
    let OwnedFrame::Array(parts) = entry else {
        return None;
    };
    let (seq, n) = text(parts.first()?)?.split_once('-')?;
    Some((seq.parse().ok()?, n.parse().ok()?))
}

/// A commit mark (field `c`, see `scripts::COMMIT`): the seq it commits.
pub(super) fn parse_commit(entry: &OwnedFrame) -> Option<u64> {
    let OwnedFrame::Array(parts) = entry else {
        return None;
    };
    let OwnedFrame::Array(fields) = parts.get(1)? else {
        return None;
    };
    match fields.as_slice() {
        [k, v] if text(k)? == "c" => integer(v).and_then(|s| u64::try_from(s).ok()),
        _ => None,
    }
}

/// An epoch boundary (`<seq>-0`, field `x`: the new epoch; see `scripts::HELLO`): its seq and
/// epoch.
pub(super) fn parse_boundary(entry: &OwnedFrame) -> Option<(u64, String)> {
    let OwnedFrame::Array(parts) = entry else {
        return None;
    };
    let OwnedFrame::Array(fields) = parts.get(1)? else {
        return None;
    };
    match fields.as_slice() {
        [k, v] if text(k)? == "x" => Some((entry_seq(entry)?, text(v)?.to_string())),
        _ => None,
    }
}

/// One stream entry: `[id, [field, value, ...]]`.
pub(super) fn parse_entry(entry: &OwnedFrame) -> Option<RemoteEvent> {
    let OwnedFrame::Array(parts) = entry else {
        return None;
    };
    let seq = entry_seq(entry)?;
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
