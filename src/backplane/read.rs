//! Reading the shared log on the reader link: each `XREAD` reply's entries become
//! [`RemoteEvent`]s in stream order (a hole in the seqs is a [`Notice::Gap`], an epoch boundary a
//! [`Notice::Epoch`]), and the parsing of one stream entry, shared by reads, warm-up and
//! backfills.

use redis_protocol::resp2::types::OwnedFrame;

use super::redis::{integer, text};
use super::{Backplane, Notice, RemoteEvent};

impl Backplane {
    pub(super) fn on_read(&mut self, frame: &OwnedFrame) -> Result<(), String> {
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
            if let Some((seq, epoch)) = parse_boundary(entry) {
                // A node found Redis behind what it had seen and started a new epoch: what
                // follows belongs to it.
                if seq > self.last_read {
                    self.new_epoch(epoch, seq);
                }
                continue;
            }
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
                self.out.notices.push((self.out.events.len(), Notice::Gap));
            }
            self.take(ev);
        }
        Ok(())
    }

    pub(super) fn take(&mut self, ev: RemoteEvent) {
        self.last_read = ev.seq;
        self.stats.events_read += 1;
        self.stats.read_bytes += (ev.data.len()
            + ev.topics.iter().map(|t| t.len() + 1).sum::<usize>()
            + ev.event_type.as_ref().map_or(0, |t| t.len()))
            as u64;
        self.out.events.push(ev);
    }
}

/// The seq of a stream entry (`<seq>-0`).
pub(super) fn entry_seq(entry: &OwnedFrame) -> Option<u64> {
    let OwnedFrame::Array(parts) = entry else {
        return None;
    };
    text(parts.first()?)?.strip_suffix("-0")?.parse().ok()
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
