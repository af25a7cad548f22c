//! Connections accepted past `--max-connections`, and those of the internal `--metrics-listen`
//! address. Neither counts against the limit and either may send one request: `/healthz`,
//! `/readyz` and `/metrics` are answered as usual (a liveness probe must not restart a node that
//! is full but healthy, and monitoring must not go dark when it matters most); anything else gets
//! `503` with `Retry-After` past the limit, `404` on the internal address. Either way the
//! connection then closes. Reaching the limit is logged, at most once per
//! [`LIMIT_WARNING_EVERY`], with the number of connections refused since the last line; the
//! ones refused after it are reported on their own when the period ends ([`report_suppressed`]).

use std::time::Duration;

use super::http_stage::RETRY_SOON;
use super::Connection;
use crate::http::{HttpError, Route};
use crate::loop_state::{LoopState, LIMIT_WARNING_EVERY};
use crate::metrics::CloseCause;

/// How long a connection over the limit has to send its request head, and then to read its
/// answer: probes send theirs at once, and anything slower is not worth a descriptor.
pub(super) const REJECT_GRACE: Duration = Duration::from_secs(1);

/// The routes answered even at the connection limit.
pub(super) fn answered_at_limit(route: Route) -> bool {
    matches!(route, Route::Healthz | Route::Readyz | Route::Metrics)
}

/// The connections over the limit left out of the log in a period that has ended, when no later
/// one reported them.
pub(super) fn report_suppressed(sh: &mut LoopState) {
    if let Some(n) = sh.limit_warning.take_summary(sh.now) {
        log::warn!(
            "connection limit reached (--max-connections {}): {n} more connection(s) over it \
             in the last {}s (suppressed={n})",
            sh.max_connections,
            LIMIT_WARNING_EVERY.as_secs()
        );
    }
}

/// How a new connection was admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// On `--listen`, under `--max-connections`.
    Counted,
    /// On `--listen`, past `--max-connections`: one probe, or a 503.
    OverCapacity,
    /// On `--metrics-listen`: one probe, or a 404; never counted against `--max-connections`.
    Internal,
}

impl Connection {
    /// Marks a connection of the internal address: it may send one request, within
    /// [`REJECT_GRACE`], and only probes and metrics are served.
    pub(super) fn admit_internal(&mut self, sh: &mut LoopState) {
        self.internal = true;
        sh.internal += 1;
        self.grace = REJECT_GRACE;
    }

    /// The request of an internal connection is not a probe: `404`, then close.
    pub(super) fn refuse_internal(&mut self, key: usize, sh: &mut LoopState) {
        self.respond_error(key, &HttpError::NOT_FOUND, false, &[], sh);
    }

    /// Marks a connection accepted past the limit: it may send one request, within
    /// [`REJECT_GRACE`].
    pub(super) fn admit_over_capacity(&mut self, sh: &mut LoopState) {
        self.refused = true;
        sh.refused += 1;
        self.grace = REJECT_GRACE;
        if let Some(skipped) = sh.limit_warning.note(sh.now) {
            let count = skipped + 1;
            log::warn!(
                "connection limit reached (--max-connections {}): {count} connection(s) over it \
                 in the last {}s or less; /healthz, /readyz and /metrics are still answered, \
                 anything else gets 503",
                sh.max_connections,
                LIMIT_WARNING_EVERY.as_secs()
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
        if self.refused || self.internal {
            REJECT_GRACE.min(sh.header_timeout())
        } else {
            sh.header_timeout()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_limit_warning_is_rate_limited_and_counts_what_it_skipped() {
        let t0 = Instant::now();
        let mut w = crate::loop_state::limit_warning();
        assert_eq!(w.note(t0), Some(0));
        assert_eq!(w.note(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.note(t0 + Duration::from_secs(9)), None);
        assert_eq!(w.note(t0 + LIMIT_WARNING_EVERY), Some(2));
        assert_eq!(w.note(t0 + LIMIT_WARNING_EVERY), None);
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
