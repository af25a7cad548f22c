//! Rate limits for log lines a peer can provoke (connections over the limit, refused tokens): at
//! most a few lines per period, and the next line says how many were left out, so a flood cannot
//! fill a disk yet nothing goes unnoticed. When no line follows (the flood stopped), the count is
//! reported on its own once the period ends ([`LogLimit::take_summary`], driven by the loop).

use std::time::{Duration, Instant};

/// At most `burst` lines per `period`; the rest are counted.
#[derive(Clone, Debug)]
pub struct LogLimit {
    period: Duration,
    burst: u32,
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limit of `burst` lines per `period`.
    pub const fn new(period: Duration, burst: u32) -> LogLimit {
        LogLimit {
            period,
            burst,
            window: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// The period lines are counted over.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Counts one occurrence. Returns, when a line is due now, how many occurrences were left
    /// out since the last line (this one excluded).
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < self.period => {
                if self.logged >= self.burst {
                    self.suppressed += 1;
                    return None;
                }
            }
            _ => {
                self.window = Some(now);
                self.logged = 0;
            }
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// When the occurrences left out in this period are due to be reported on their own (the
    /// period's end); `None` when none were left out.
    pub fn summary_due(&self) -> Option<Instant> {
        if self.suppressed == 0 {
            return None;
        }
        self.window.map(|start| start + self.period)
    }

    /// Once the period in which occurrences were left out has ended: how many, reported once
    /// (the next occurrence starts a new period and is logged).
    pub fn take_summary(&mut self, now: Instant) -> Option<u64> {
        if now < self.summary_due()? {
            return None;
        }
        self.window = None;
        self.logged = 0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_burst_are_counted_and_reported_with_the_next_line() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(Duration::from_secs(1), 2);
        assert_eq!(l.note(t0), Some(0));
        assert_eq!(l.note(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(l.note(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(l.note(t0 + Duration::from_secs(1)), Some(5));
        assert_eq!(l.note(t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(l.note(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn what_was_left_out_is_summarised_once_when_the_period_ends() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(Duration::from_secs(1), 1);
        assert_eq!(l.note(t0), Some(0));
        assert_eq!(l.summary_due(), None, "nothing left out yet");
        assert_eq!(l.note(t0), None);
        assert_eq!(l.note(t0 + Duration::from_millis(10)), None);
        let due = t0 + Duration::from_secs(1);
        assert_eq!(l.summary_due(), Some(due));
        assert_eq!(l.take_summary(due - Duration::from_millis(1)), None);
        assert_eq!(l.take_summary(due), Some(2));
        assert_eq!(l.take_summary(due), None, "reported once");
        assert_eq!(l.summary_due(), None);
        // The next occurrence is logged at once, with nothing left to report.
        assert_eq!(l.note(due + Duration::from_millis(1)), Some(0));
    }
}
