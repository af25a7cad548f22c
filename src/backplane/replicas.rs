//! Replicated acknowledgements (`--backplane-min-replicas N`, N ≥ 1): an append counts only once
//! N replicas hold it, so that a failover to a replica loses nothing acknowledged and shows
//! nothing it erases.
//!
//! - Writer: the APPEND calls of one flush are followed by one `WAIT N timeout` (one per flush,
//!   not per event), and the next flush waits for it: a WAIT may hold the link for the timeout.
//!   The publishers are answered when the WAIT says N replicas hold the writes; fewer in time
//!   refuses them ("unavailable", as any backplane failure: they may still appear). Then a
//!   COMMIT call (`scripts::COMMIT`) raises the `committed` key and adds a commit mark to the log.
//! - Reader: events above the highest mark seen (`committed`) are held, in order, and handed to
//!   the hub when a mark passes them. Redis replicates one ordered stream, so a WAIT covering
//!   seq S covers every seq below it: marks are maxima. The writer's own WAIT raises `committed`
//!   at once, so a node does not wait for its own mark to come back.
//! - Sweep: a mark can be lost (its node died between WAIT and COMMIT, or a failover dropped it).
//!   A reader holding events for [`SWEEP_AFTER`] asks its writer for `scripts::SWEEP` (a write
//!   that returns the counter) and a WAIT, and commits the counter: held events never wait for
//!   the next publish.

use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;

use super::append::Sent;
use super::link::{Expect, Link, Phase};
use super::redis::integer;
use super::{scripts, Backplane, BackplaneConfig, Notice, Origin};

/// How long a reader holds an event without a commit mark before it asks for a sweep.
const SWEEP_AFTER: Duration = Duration::from_millis(200);

/// One event of an APPEND call, waiting for the call's WAIT.
pub(crate) enum Replicating {
    /// Appended: answered and committed when the WAIT confirms.
    Event {
        origin: Origin,
        sent: Sent,
        seq: u64,
        new: bool,
    },
    /// Refused already (the script's error); settles nothing.
    Refused,
    /// A sweep's counter: committed when the WAIT confirms.
    Mark(u64),
}

/// Queues the `WAIT` that settles the `n` entries before it (an APPEND call's events, or a
/// sweep). Redis bounds it by the timeout; the reply's deadline leaves room for the commands
/// pipelined before it.
pub(super) fn send_wait(link: &mut Link, cfg: &BackplaneConfig, n: usize, now: Instant) {
    let replicas = cfg.min_replicas.to_string();
    let ms = cfg.timeout.as_millis().to_string();
    link.conn
        .command(&[b"WAIT", replicas.as_bytes(), ms.as_bytes()]);
    link.expect.push_back(Expect::Wait(n, now));
    link.deadlines.push_back(now + cfg.timeout * 2);
}

/// Tells Redis this node's `--backplane-min-replicas` (its writer, at every connection); the
/// reply is the last other writer's ([`Backplane::on_setting`]).
pub(super) fn say_setting(link: &mut Link, keys: &scripts::Keys, min_replicas: u32) {
    let value = min_replicas.to_string();
    link.conn.command(&[
        b"EVAL",
        scripts::SETTING.as_bytes(),
        b"1",
        keys.replicas.as_bytes(),
        value.as_bytes(),
    ]);
    link.expect.push_back(Expect::Setting);
}

impl Backplane {
    /// The `--backplane-min-replicas` of the writer that connected before this one: a different
    /// value is a misconfiguration (docs/SCALING.md) that nothing else would show.
    pub(super) fn on_setting(&mut self, frame: &OwnedFrame) -> Result<(), String> {
        let theirs = super::redis::text(frame).and_then(|t| t.parse::<u32>().ok());
        match theirs {
            Some(n) if n != self.cfg.min_replicas => {
                log::warn!(
                    "backplane: another node of this deployment runs with --backplane-min-replicas \
                     {n}, this one with {}: use the same value on every node (with different \
                     values, events of the nodes without a WAIT are delivered before they are \
                     replicated, and the others hold them until a sweep commits them)",
                    self.cfg.min_replicas
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// The reply to a `WAIT`: how many replicas hold the writes before it.
    pub(super) fn on_wait(
        &mut self,
        n: usize,
        sent_at: Instant,
        frame: &OwnedFrame,
        now: Instant,
    ) -> Result<(), String> {
        let acked = integer(frame).ok_or("WAIT: unexpected reply")?;
        self.stats
            .observe_wait(now.saturating_duration_since(sent_at).as_secs_f64());
        let enough = acked >= i64::from(self.cfg.min_replicas);
        if !enough {
            log::warn!(
                "backplane {}: {acked} of {} replicas acknowledged within {} ms: publishes refused",
                self.cfg.url,
                self.cfg.min_replicas,
                self.cfg.timeout.as_millis()
            );
        }
        let epoch = match &self.writer {
            Phase::Up(link) => link.epoch.clone().unwrap_or_default(),
            Phase::Down { .. } => String::new(),
        };
        let before = self.committed;
        for _ in 0..n {
            match self.replicating.pop_front() {
                Some(Replicating::Event {
                    origin,
                    sent,
                    seq,
                    new,
                }) => {
                    self.inflight_bytes -= sent.cost();
                    if enough {
                        self.committed = self.committed.max(seq);
                        self.release();
                        self.acknowledge(origin, sent, seq, new, &epoch);
                    } else {
                        self.fail(origin);
                    }
                }
                Some(Replicating::Mark(seq)) => {
                    self.sweeping = false;
                    if enough {
                        self.committed = self.committed.max(seq);
                    } else if !self.held.is_empty() {
                        // The next sweep one period from now, not at once.
                        self.held_since = Some(now);
                    }
                }
                Some(Replicating::Refused) => {}
                None => return Err("WAIT reply without an append".into()),
            }
        }
        self.release();
        if self.committed > before {
            self.send_commit(now);
        }
        Ok(())
    }

    /// The reply to a sweep: the counter, committed once the WAIT after it confirms.
    pub(super) fn on_sweep(&mut self, frame: &OwnedFrame, _now: Instant) -> Result<(), String> {
        let seq = integer(frame)
            .and_then(|s| u64::try_from(s).ok())
            .ok_or("SWEEP: unexpected reply")?;
        self.replicating.push_back(Replicating::Mark(seq));
        Ok(())
    }

    /// Tells the other nodes (COMMIT: the key and a mark in the log) what this node's WAITs
    /// confirmed.
    fn send_commit(&mut self, now: Instant) {
        let Phase::Up(link) = &mut self.writer else {
            return;
        };
        let seq = self.committed.to_string();
        let retention = self.cfg.retention.to_string();
        link.conn.command(&[
            b"EVALSHA",
            link.commit_sha.as_bytes(),
            b"2",
            self.keys.committed.as_bytes(),
            self.keys.log.as_bytes(),
            seq.as_bytes(),
            retention.as_bytes(),
        ]);
        link.expect.push_back(Expect::Commit);
        link.deadlines.push_back(now + self.cfg.timeout);
    }

    /// Hands the held events that the commit mark passed to the hub, in order.
    pub(super) fn release(&mut self) {
        while let Some((ev, _)) = self.held.front() {
            if ev.seq > self.committed {
                break;
            }
            let Some((ev, gap)) = self.held.pop_front() else {
                break;
            };
            self.stats.held_bytes -= super::read::size(&ev) as u64;
            if ev.seq <= self.last_read {
                continue; // this node's own event, recorded when its WAIT answered
            }
            if gap {
                self.out.notices.push((self.out.events.len(), Notice::Gap));
            }
            self.take(ev);
        }
        if self.held.is_empty() {
            self.held_since = None;
        }
    }

    /// Forgets the held events (the reader reads them again, or they belong to a lost epoch).
    pub(super) fn drop_held(&mut self) {
        self.held.clear();
        self.held_since = None;
        self.stats.held_bytes = 0;
    }

    /// Keeps an event read above the commit mark until a mark passes it.
    pub(super) fn hold(&mut self, ev: super::RemoteEvent, gap: bool, now: Instant) {
        if self.held.is_empty() {
            self.held_since = Some(now);
        }
        self.stats.held_bytes += super::read::size(&ev) as u64;
        self.held.push_back((ev, gap));
    }

    /// Asks for a sweep when events have been held too long (see the module's doc).
    pub(super) fn sweep(&mut self, now: Instant) {
        let due = self
            .held_since
            .is_some_and(|t| now.saturating_duration_since(t) >= SWEEP_AFTER);
        if !due || self.sweeping {
            return;
        }
        let Phase::Up(link) = &mut self.writer else {
            return;
        };
        if link.epoch.is_none() || link.waits_for_replicas() {
            return;
        }
        link.conn.command(&[
            b"EVAL",
            scripts::SWEEP.as_bytes(),
            b"2",
            self.keys.seq.as_bytes(),
            self.keys.sweep.as_bytes(),
        ]);
        link.expect.push_back(Expect::Sweep);
        link.deadlines.push_back(now + self.cfg.timeout);
        send_wait(link, &self.cfg, 1, now);
        self.sweeping = true;
        // Held on: the next sweep comes one period after this one.
        self.held_since = Some(now);
    }
}
