//! Banned JWT subjects (`POST /api/v1/disconnect` with `ban_secs`): refused new streams and
//! publishes until their ban expires. Bounded: at [`MAX_BANS`] the ban that ends soonest makes
//! room, and expired bans are dropped as they are met, so memory never grows with the number of
//! subjects an operator bans.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Most bans held at once.
pub const MAX_BANS: usize = 10_000;

/// The banned subjects and when each ban ends.
#[derive(Default)]
pub struct Bans {
    until: HashMap<String, Instant>,
    /// The same bans ordered by expiry, soonest first (eviction and sweeping in O(log n)).
    by_expiry: BTreeSet<(Instant, String)>,
}

impl Bans {
    /// Bans `sub` until `now + secs` (a later end replaces an earlier one, never the reverse).
    pub fn ban(&mut self, sub: &str, secs: u64, now: Instant) {
        self.sweep(now);
        let end = now + Duration::from_secs(secs);
        if let Some(&old) = self.until.get(sub) {
            if old >= end {
                return;
            }
            self.by_expiry.remove(&(old, sub.to_string()));
        } else if self.until.len() >= MAX_BANS {
            if let Some((_, soonest)) = self.by_expiry.pop_first() {
                self.until.remove(&soonest);
            }
        }
        self.until.insert(sub.to_string(), end);
        self.by_expiry.insert((end, sub.to_string()));
    }

    /// How long `sub` stays banned, if it is.
    pub fn remaining(&self, sub: &str, now: Instant) -> Option<Duration> {
        let end = *self.until.get(sub)?;
        (end > now).then(|| end - now)
    }

    /// Drops the bans that have ended.
    pub fn sweep(&mut self, now: Instant) {
        while let Some((end, _)) = self.by_expiry.first() {
            if *end > now {
                break;
            }
            if let Some((_, sub)) = self.by_expiry.pop_first() {
                self.until.remove(&sub);
            }
        }
    }

    /// The bans in force, soonest end first, with the seconds left (rounded up).
    pub fn list(&self, now: Instant) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.by_expiry
            .iter()
            .filter(move |(end, _)| *end > now)
            .map(move |(end, sub)| {
                let left = *end - now;
                (
                    sub.as_str(),
                    left.as_secs() + u64::from(left.subsec_nanos() > 0),
                )
            })
    }

    /// Bans held (in force or not yet swept).
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// No ban held.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

/// `{"bans":[{"sub":…,"expires_in_secs":N},…]}`.
pub fn render_bans(bans: &Bans, now: Instant) -> String {
    let mut o = String::from("{\"bans\":[");
    for (i, (sub, left)) in bans.list(now).enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"sub\":");
        crate::json::push_json_str(&mut o, sub);
        o.push_str(&format!(",\"expires_in_secs\":{left}}}"));
    }
    o.push_str("]}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire_extend_and_stay_bounded() {
        let t0 = Instant::now();
        let mut bans = Bans::default();
        bans.ban("alice", 10, t0);
        assert!(bans.remaining("alice", t0).is_some());
        assert!(bans.remaining("bob", t0).is_none());
        // A shorter ban does not shorten a longer one; a longer one extends it.
        bans.ban("alice", 5, t0);
        assert_eq!(bans.remaining("alice", t0), Some(Duration::from_secs(10)));
        bans.ban("alice", 20, t0);
        assert_eq!(bans.remaining("alice", t0), Some(Duration::from_secs(20)));
        assert!(bans
            .remaining("alice", t0 + Duration::from_secs(20))
            .is_none());
        bans.sweep(t0 + Duration::from_secs(21));
        assert!(bans.is_empty());

        for i in 0..(MAX_BANS + 500) {
            bans.ban(&format!("s{i}"), 100 + i as u64, t0);
        }
        assert_eq!(bans.len(), MAX_BANS);
        assert_eq!(bans.by_expiry.len(), MAX_BANS);
        // The soonest-ending ones made room.
        assert!(bans.remaining("s0", t0).is_none());
        assert!(bans
            .remaining(&format!("s{}", MAX_BANS + 499), t0)
            .is_some());
        let json = render_bans(&bans, t0);
        assert!(json.starts_with("{\"bans\":[{\"sub\":\"s500\",\"expires_in_secs\":600}"));
    }
}
