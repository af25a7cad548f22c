//! Shutdown: signals (a second SIGINT forces), the graceful wind-down of every connection within
//! `--grace-ms`, the forced close past it, and the end of the loop (the backplane closed, waiting
//! threads answered).

use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT};

use super::Server;
use crate::backplane::Origin;
use crate::conn::Closing;

pub(super) struct Shutdown {
    pub(super) deadline: Instant,
    pub(super) interrupts: u32,
}

impl Server {
    pub(super) fn on_signals(&mut self) {
        let mut received = Vec::new();
        if let Some(signals) = self.signals.as_mut() {
            received.extend(signals.pending());
        }
        for signal in received {
            match signal {
                SIGINT if self.shutdown.as_ref().is_some_and(|s| s.interrupts > 0) => {
                    log::warn!("second SIGINT: closing everything now");
                    self.force_stop();
                }
                SIGINT => {
                    self.begin_shutdown("SIGINT");
                    if let Some(s) = self.shutdown.as_mut() {
                        s.interrupts += 1;
                    }
                }
                SIGHUP => self.reload_from_source(),
                _ => self.begin_shutdown("SIGTERM"),
            }
        }
    }

    /// Stops accepting and winds every connection down; the loop stops once all are closed or
    /// the grace period has passed.
    pub fn begin_shutdown(&mut self, why: &str) {
        if self.shutdown.is_some() {
            return;
        }
        log::info!(
            "{why}: shutting down; {} connections get up to {} ms",
            self.conns.len(),
            self.sh.config.grace_ms
        );
        self.notifier.stopping(why);
        self.shutdown = Some(Shutdown {
            deadline: self.sh.now + self.sh.grace(),
            interrupts: 0,
        });
        self.sh.shutting_down = true;
        // Deliver everything published before the shutdown began, and accept nothing more from
        // other threads (it could not be delivered).
        self.seq.close_publishing();
        self.sh.hub.drain_queued();
        self.sh.hub.record_backlog(usize::MAX);
        self.fan_out(false);
        self.close_listeners();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                let flow = conn.begin_shutdown(key, &mut self.sh);
                self.settle(key, flow);
            }
        }
    }

    pub(super) fn check_shutdown(&mut self) {
        let Some(shutdown) = &self.shutdown else {
            return;
        };
        if self.conns.is_empty() {
            log::info!("all connections closed; stopped");
            self.finish();
        } else if self.sh.now >= shutdown.deadline {
            log::warn!(
                "grace period over: forcing {} connections closed",
                self.conns.len()
            );
            self.force_stop();
        }
    }

    pub(super) fn force_stop(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(
                key,
                Closing::Forced {
                    cause: crate::metrics::CloseCause::GraceExpired,
                    linger0: false,
                },
            );
        }
        self.finish();
    }

    /// Closes `--listen` and `--metrics-listen`: nothing new is accepted.
    fn close_listeners(&mut self) {
        let listeners = [self.listener.take(), self.metrics_listener.take()];
        for mut listener in listeners.into_iter().flatten() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_pending = false;
        self.internal_pending = false;
    }

    pub(super) fn finish(&mut self) {
        self.close_listeners();
        if let Some(bp) = self.sh.backplane.as_mut() {
            bp.close(self.poll.registry());
            for c in std::mem::take(&mut bp.out.completions) {
                if let Origin::Handle(slot) = c.origin {
                    slot.set(c.outcome.map(|(id, _)| id));
                }
            }
        }
        self.seq.mark_loop_gone();
        self.stopped = true;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.seq.mark_loop_gone();
    }
}
