//! Connections accepted past `--max-connections`. Such a connection does not count against the
//! limit and may send one request: `/healthz`, `/readyz` and `/metrics` are answered as usual
//! (a liveness probe must not restart a node that is full but healthy, and monitoring must not
//! go dark when it matters most), anything else gets `503` with `Retry-After`. Either way the
//! connection then closes. Reaching the limit is logged, at most once per
//! [`LimitWarning::EVERY`], with the number of connections refused since the last line.

use std::time::{Duration, Instant};

use super::http_stage::RETRY_SOON;
use super::Connection;
use crate::http::{HttpError, Route};
use crate::loop_state::LoopState;
use crate::metrics::CloseCause;

/// How long a connection over the limit has to send its request head, and then to read its
/// answer: probes send theirs at once, and anything slower is not worth a descriptor.
pub(super) const REJECT_GRACE: Duration = Duration::from_secs(1);

/// The routes answered even at the connection limit.
pub(super) fn answered_at_limit(route: Route) -> bool {
    matches!(route, Route::Healthz | Route::Readyz | Route::Metrics)
}

/// The rate-limited warning that the connection limit is reached.
#[derive(Clone, Debug, Default)]
pub struct LimitWarning {
    last: Option<Instant>,
    unlogged: u64,
}

impl LimitWarning {
    /// At most one line per this period, so a flood at the limit cannot flood the log.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// Counts a connection accepted at the limit. Returns how many were accepted since the last
    /// line (this one included) when a line is due now.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

impl Connection {
    /// Marks a connection accepted past the limit: it may send one request, within
    /// [`REJECT_GRACE`].
    pub(super) fn admit_over_capacity(&mut self, sh: &mut LoopState) {
        self.refused = true;
        sh.refused += 1;
        self.grace = REJECT_GRACE;
        if let Some(count) = sh.limit_warning.note(sh.now) {
            log::warn!(
                "connection limit reached (--max-connections {}): {count} connection(s) over it \
                 in the last {}s or less; /healthz, /readyz and /metrics are still answered, \
                 anything else gets 503",
                sh.max_connections,
                LimitWarning::EVERY.as_secs()
            );
        }
    }

    /// The request of a connection over the limit is not a probe: `503` with `Retry-After`,
    /// then close.
    pub(super) fn refuse_over_capacity(&mut self, key: usize, sh: &mut LoopState) {
        sh.metrics.closes[CloseCause::OverCapacity as usize] += 1;
        self.respond_error(key, &HttpError::OVER_CAPACITY, false, RETRY_SOON, sh);
    }

    /// The header deadline: shorter for a connection over the limit.
    pub(super) fn header_timeout(&self, sh: &LoopState) -> Duration {
        if self.refused {
            REJECT_GRACE.min(sh.header_timeout())
        } else {
            sh.header_timeout()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_warning_is_rate_limited_and_counts_what_it_skipped() {
        let t0 = Instant::now();
        let mut w = LimitWarning::default();
        assert_eq!(w.note(t0), Some(1));
        assert_eq!(w.note(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.note(t0 + Duration::from_secs(9)), None);
        assert_eq!(w.note(t0 + LimitWarning::EVERY), Some(3));
        assert_eq!(w.note(t0 + LimitWarning::EVERY), None);
    }

    #[test]
    fn only_probes_are_answered_at_the_limit() {
        for route in [Route::Healthz, Route::Readyz, Route::Metrics] {
            assert!(answered_at_limit(route), "{route:?}");
        }
        for route in [
            Route::Events,
            Route::Frames,
            Route::Publish,
            Route::Preflight,
            Route::Stats,
            Route::Console,
        ] {
            assert!(!answered_at_limit(route), "{route:?}");
        }
    }
}
