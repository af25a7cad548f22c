//! A round of writes: every dirty connection flushed once, within its budget, and the input the
//! round takes in its middle (every `--round-input-us`) so that a publish arriving during a long
//! round is answered and reaches the readers not yet written in this round.

use std::time::{Duration, Instant};

use mio::Events;

use super::Server;

/// A round of subscriber writes takes new input when `--round-input-us` (default 250 µs: every
/// ~40 writes on this machine) has passed since it started or last took input; the clock is read
/// every this many writes to decide that (every write when the option is 0). A publish arriving
/// mid-round then waits that long, not the rest of the round; an empty poll costs ~1 µs.
const MIDROUND_CHECK: usize = 8;

impl Server {
    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.sh.dirty);
        // A long round of writes stops now and then to take new input: a publish arriving
        // during it is answered and reaches the readers the round has not written yet (with a
        // backplane, it goes to Redis at once and is sequenced while the round goes on), instead
        // of waiting for the whole round. Under a trickle the publishers are held back by their
        // slowest readers; they get going again sooner, so each round carries more events. The
        // events recorded mid-round extend the channel's joined batch, so a reader the round has
        // not reached yet still writes everything it has not taken as one slice.
        let every = self.sh.round_input();
        let check = if every.is_zero() { 1 } else { MIDROUND_CHECK };
        let mut last_input = self.sh.now;
        for (i, key) in dirty.drain(..).enumerate() {
            if let Some(conn) = self.conns.get_mut(key) {
                let flow = conn.flush(key, &mut self.sh);
                self.settle(key, flow);
            }
            if i % check == check - 1 {
                let now = Instant::now();
                if now.saturating_duration_since(last_input) >= every {
                    self.take_input_midround();
                    last_input = now;
                }
            }
        }
        // Keep the allocation; connections that still have work pushed themselves again.
        if self.sh.dirty.is_empty() {
            self.sh.dirty = dirty;
        }
    }

    /// Mid-round input (see [`Self::flush_dirty`]): what is ready now is read and dispatched;
    /// publishes are taken (with a backplane: sent to Redis, and the events Redis sent are
    /// recorded); publishers get their answers at once; readers still waiting in this round take
    /// the new events in it, the others in the next (as readers of any new event do).
    pub(super) fn take_input_midround(&mut self) {
        let answers_from = self.sh.dirty.len();
        let mut events = std::mem::replace(&mut self.midround_events, Events::with_capacity(0));
        if self.poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            self.sh.refresh_clock();
            self.dispatch(&events);
        }
        self.midround_events = events;
        self.sh.metrics.midround_polls += 1;
        self.take_publishes();
        self.flush_answers(answers_from);
        self.fan_out(true);
    }

    /// Publishes become events: other threads' are taken, and with a backplane the appends
    /// staged so far go to Redis and the events it sent are recorded; the backlog is recorded.
    pub(super) fn take_publishes(&mut self) {
        if self.sh.backplane.is_some() {
            self.pump_backplane();
            if let Some(bp) = self.sh.backplane.as_mut() {
                bp.flush_output(self.poll.registry(), self.sh.now);
            }
        } else {
            self.sh.hub.drain_queued();
        }
        let slice = self.backlog_slice();
        self.sh.hub.record_backlog(slice);
    }

    /// Writes now what connections that read no channel queued since `dirty[from]`: publish
    /// answers and other responses do not wait for the rest of a round of subscriber writes.
    pub(super) fn flush_answers(&mut self, from: usize) {
        if self.sh.dirty.len() <= from {
            return;
        }
        let mut marked = std::mem::take(&mut self.midround_dirty);
        marked.extend(self.sh.dirty.drain(from..));
        for key in marked.drain(..) {
            match self.conns.get_mut(key) {
                Some(conn) if !conn.reads_channels() => {
                    let flow = conn.flush(key, &mut self.sh);
                    self.settle(key, flow);
                }
                Some(_) => self.sh.dirty.push(key),
                None => {}
            }
        }
        self.midround_dirty = marked;
    }
}
