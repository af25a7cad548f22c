//! A connection's lifecycle and deadlines: applying `Life` transitions, the graceful close at
//! shutdown, the one deadline armed for the current state (header, body, write stall, idle,
//! grace) and what happens when it passes.

use std::time::Instant;

use super::state::{Life, LifeEvent};
use super::{Closing, Connection, Flow, Stage};
use crate::loop_state::LoopState;
use crate::metrics::CloseCause;
use crate::timer::{TimerKey, TimerKind};

/// Which lifecycle deadline is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deadline {
    Header,
    Body,
    WriteStall,
    Idle,
    Grace,
}

impl Connection {
    /// A keep-alive exchange finished (response written, nothing buffered): the connection goes
    /// idle, or closes if the server is shutting down.
    pub(super) fn exchange_done(&mut self, sh: &mut LoopState) -> Flow {
        match self.transition(LifeEvent::Exchanged { keep_alive: true }, sh) {
            Flow::Keep if sh.shutting_down => self.transition(LifeEvent::Drain, sh),
            flow => flow,
        }
    }

    /// Applies a lifecycle event. An illegal one is a bug: asserted in debug builds, and the
    /// connection is forced closed rather than left in a state nobody expects.
    pub(super) fn transition(&mut self, event: LifeEvent, sh: &LoopState) -> Flow {
        match self.life.next(event) {
            Ok(next) => {
                if next != self.life {
                    self.state_since = sh.now;
                    if next == Life::Graceful {
                        // Callers with a reason for another period (shutdown, refusal) set it
                        // after the transition.
                        self.grace = sh.linger();
                    }
                    self.life = next;
                }
                if next == Life::Idle {
                    if let Stage::Http(http) = &mut self.stage {
                        // An idle keep-alive connection holds no read buffer.
                        http.rbuf = Vec::new();
                        http.request_started = None;
                    }
                }
                match next {
                    Life::Closed => Flow::Close(Closing::Done),
                    _ => Flow::Keep,
                }
            }
            Err(invalid) => {
                debug_assert!(false, "invalid lifecycle transition {invalid:?}");
                log::error!("invalid lifecycle transition {invalid:?}; forcing close");
                Flow::Close(Closing::Forced {
                    cause: CloseCause::Internal,
                    linger0: true,
                })
            }
        }
    }

    /// Moves the connection to graceful close (server shutdown): streams get a jittered `retry:`
    /// so that clients do not all reconnect at once; idle keep-alive connections close now.
    pub fn begin_shutdown(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        match (self.life, &self.stage) {
            (Life::Graceful | Life::Closed, _) => return Flow::Keep,
            (Life::Active, Stage::Http(http))
                if http.rbuf.is_empty()
                    && http.body.is_none()
                    && http.pending.is_empty()
                    && self.out.private.is_empty() =>
            {
                // Accepted but no request yet: nothing to finish.
                return Flow::Close(Closing::Done);
            }
            // A request in progress finishes (its response says Connection: close), and
            // publishes waiting for the backplane get their answers (within its timeout).
            (Life::Active, Stage::Http(_)) => return Flow::Keep,
            (Life::Active, Stage::Sse | Stage::Frames(_)) => self.queue_farewell(key, sh),
            (Life::Idle, _) => {}
        }
        self.drain_gracefully(key, sh)
    }

    /// Moves to graceful close: what is queued goes out within `--grace-ms`, then the FIN.
    pub(super) fn drain_gracefully(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        let flow = self.transition(LifeEvent::Drain, sh);
        if flow == Flow::Keep {
            self.grace = sh.grace();
            self.mark_dirty(key, sh);
            self.sync_deadline(key, sh);
        }
        flow
    }

    /// The deadline this connection should have armed now, if any.
    pub(super) fn wanted_deadline(&self, sh: &LoopState) -> Option<(Deadline, Instant)> {
        match self.life {
            Life::Closed => None,
            Life::Idle => Some((Deadline::Idle, self.state_since + sh.idle_timeout())),
            Life::Graceful => Some((Deadline::Grace, self.state_since + self.grace)),
            Life::Active if self.write_blocked => {
                Some((Deadline::WriteStall, self.last_write + sh.write_stall()))
            }
            Life::Active => match &self.stage {
                Stage::Sse | Stage::Frames(_) => None,
                Stage::Http(http) if http.body.is_some() => {
                    Some((Deadline::Body, self.last_read + sh.header_timeout()))
                }
                Stage::Http(http) => http
                    .request_started
                    .map(|started| (Deadline::Header, started + self.header_timeout(sh))),
            },
        }
    }

    /// Makes the armed deadline match [`Self::wanted_deadline`]. A deadline that only moved later
    /// stays armed at its earlier time and is re-armed when it fires (one timer operation per
    /// period instead of one per byte).
    pub(super) fn sync_deadline(&mut self, key: usize, sh: &mut LoopState) {
        let wanted = self.wanted_deadline(sh);
        match (self.deadline, wanted) {
            (Some((armed, kind)), Some((want_kind, at)))
                if kind == want_kind && armed.at() <= at => {}
            (current, wanted) => {
                if let Some((armed, _)) = current {
                    sh.timers.cancel(armed);
                }
                self.deadline =
                    wanted.map(|(kind, at)| (sh.timers.arm(at, key, TimerKind::Deadline), kind));
            }
        }
    }

    /// A timer of this connection fired.
    pub fn on_timer(
        &mut self,
        key: usize,
        timer: TimerKey,
        kind: TimerKind,
        sh: &mut LoopState,
    ) -> Flow {
        match kind {
            TimerKind::Heartbeat if self.heartbeat == Some(timer) => {
                self.heartbeat = None;
                self.on_heartbeat(key, sh)
            }
            TimerKind::TokenExpiry => self.on_token_expiry_timer(key, timer, sh),
            TimerKind::Deadline if self.deadline.is_some_and(|(t, _)| t == timer) => {
                self.deadline = None;
                match self.wanted_deadline(sh) {
                    Some((kind, at)) if at <= sh.now => self.expire(key, kind, sh),
                    _ => {
                        self.sync_deadline(key, sh);
                        Flow::Keep
                    }
                }
            }
            _ => Flow::Keep,
        }
    }

    pub(super) fn expire(&mut self, key: usize, deadline: Deadline, sh: &mut LoopState) -> Flow {
        let (cause, linger0) = match deadline {
            Deadline::Header | Deadline::Body if self.refused => (CloseCause::OverCapacity, true),
            Deadline::Header | Deadline::Body => (CloseCause::HeaderTimeout, true),
            Deadline::Idle => (CloseCause::IdleTimeout, false),
            Deadline::WriteStall => (CloseCause::WriteStall, true),
            Deadline::Grace => (CloseCause::GraceExpired, true),
        };
        if deadline == Deadline::Header {
            self.note_handshake_timeout(sh);
        }
        log::debug!(
            "conn {key}: {deadline:?} deadline passed in {:?}",
            self.life
        );
        match self.transition(LifeEvent::Expired, sh) {
            Flow::Close(_) => Flow::Close(Closing::Forced { cause, linger0 }),
            keep => keep,
        }
    }
}
