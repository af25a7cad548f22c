//! Listening to the sentinels' failover announcements (`redis+sentinel://`): one subscribed
//! connection per sentinel, opened once a sentinel has named the master (and reopened at the
//! next answer if one drops). Every sentinel, because the one leading a failover is the only one
//! to announce its first steps, and the others announce the switch when they learn of it.
//!
//! - `+selected-slave` (the leader chose a replica; it promotes it about one Sentinel tick
//!   later): the node stops appending to the old master at once (its writer is dropped) and
//!   takes no answer naming the old master for [`FENCE`], so that no write lands on a master
//!   about to be replaced: a manual failover (`SENTINEL FAILOVER`), where the old master stays
//!   up and keeps taking writes until the switch is announced, then loses nothing.
//! - `+promoted-slave`, `+switch-master`: the new master; the links move there, and the old
//!   master stays fenced for [`FENCE`] from then: a sentinel that has not heard of the switch
//!   yet still names it, and a node that followed it back would write where nobody reads.
//! - the failover's end by timeout or an abort, before any switch: the fence is lifted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;

use super::redis::text;
use super::Backplane;

pub use crate::config::redis_url::MAX_SENTINELS;
/// The poll token of sentinel 0's subscription; sentinel `i`'s is this minus `i`.
const WATCH_BASE: usize = usize::MAX - 8;
/// How long an old master is refused after a failover away from it started, at most.
const FENCE: Duration = Duration::from_secs(10);

/// The announcements listened to.
const CHANNELS: [&[u8]; 7] = [
    b"+selected-slave",
    b"+promoted-slave",
    b"+switch-master",
    b"+failover-end-for-timeout",
    b"-failover-abort-not-elected",
    b"-failover-abort-no-good-slave",
    b"-failover-abort-slave-timeout",
];

/// Whether `token` is one of the subscriptions'.
pub(super) fn is_watch(token: Token) -> bool {
    token.0 <= WATCH_BASE && token.0 > WATCH_BASE - MAX_SENTINELS
}

/// What an announcement means for this node.
#[derive(Debug, PartialEq, Eq)]
enum Announcement {
    /// A failover away from the current master started.
    Starting,
    /// The sentinels name this address as the master.
    Master(SocketAddr),
    /// The failover ended without a new master.
    Ended,
}

/// Reads one announcement on `channel` about the master named `name` (others are `None`).
/// Payloads: `<type> <name> <ip> <port> @ <master> <ip> <port>` for an instance (`master <name>
/// <ip> <port>` for the master itself), `<master> <old ip> <old port> <new ip> <new port>` for
/// `+switch-master`.
fn parse(channel: &str, payload: &str, name: &str) -> Option<Announcement> {
    let words: Vec<&str> = payload.split(' ').collect();
    let addr = |ip: &str, port: &str| super::sentinel::resolve(ip, port.parse().ok()?);
    if channel == "+switch-master" {
        return match words[..] {
            [m, _, _, ip, port] if m == name => addr(ip, port).map(Announcement::Master),
            _ => None,
        };
    }
    let master = match words.iter().position(|w| *w == "@") {
        Some(at) => *words.get(at + 1)?,
        None if words.first() == Some(&"master") => *words.get(1)?,
        None => return None,
    };
    if master != name {
        return None;
    }
    match channel {
        "+selected-slave" => Some(Announcement::Starting),
        "+promoted-slave" => addr(words.get(2)?, words.get(3)?).map(Announcement::Master),
        _ => Some(Announcement::Ended),
    }
}

impl Backplane {
    /// Subscribes to each sentinel not listened to yet.
    pub(super) fn open_watches(&mut self, registry: &Registry) {
        let Some(d) = self.sentinel.as_mut() else {
            return;
        };
        for i in 0..d.watches.len() {
            if d.watches[i].is_some() {
                continue;
            }
            match d.open(i, registry, Token(WATCH_BASE - i)) {
                Ok((mut conn, _)) => {
                    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                    args.extend(CHANNELS);
                    conn.command(&args);
                    d.watches[i] = Some(conn);
                }
                Err(why) => log::debug!("backplane: cannot listen to sentinel {i}: {why}"),
            }
        }
    }

    /// Readiness on sentinel subscription `token`. One that fails is closed (the next answer
    /// from a sentinel reopens it).
    pub fn on_sentinel_watch(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        scratch: &mut [u8],
    ) {
        let Some(d) = self.sentinel.as_mut() else {
            return;
        };
        let i = WATCH_BASE - token.0;
        let Some(Some(conn)) = d.watches.get_mut(i) else {
            return;
        };
        let mut frames = Vec::new();
        let io = conn.on_ready(&mut frames, scratch);
        let mut heard = Vec::new();
        let mut failed = io.err().map(|e| e.to_string());
        for frame in &frames {
            match frame {
                OwnedFrame::Error(e) => failed = Some(super::link::first_word(e).to_string()),
                OwnedFrame::Array(parts) if parts.first().and_then(text) == Some("message") => {
                    let channel = parts.get(1).and_then(text).unwrap_or("");
                    let payload = parts.get(2).and_then(text).unwrap_or("");
                    heard.extend(parse(channel, payload, &d.master_name));
                }
                _ => {} // AUTH's OK, the subscriptions' confirmations
            }
        }
        if let Some(why) = failed {
            log::debug!("backplane: sentinel {i}'s announcements ended: {why}");
            if let Some(conn) = d.watches[i].take() {
                conn.close(registry);
            }
        }
        for a in heard {
            self.announced(a, registry, now);
        }
    }

    fn announced(&mut self, a: Announcement, registry: &Registry, now: Instant) {
        let Some(d) = self.sentinel.as_mut() else {
            return;
        };
        match a {
            Announcement::Starting => {
                // Once per failover (a fence on the current master means it was heard).
                let Some(old) = d.previous.filter(|p| d.fence.is_none_or(|(f, _)| f != *p)) else {
                    return;
                };
                d.fence = Some((old, now + FENCE));
                d.master = None;
                log::warn!(
                    "backplane {}: Sentinel is failing over from {old}: appends stop until it \
                     names the new master",
                    self.cfg.url
                );
                self.lose(true, "a failover is starting", registry, now);
            }
            Announcement::Master(addr) => self.master_is(addr, now),
            // An abandoned failover: the master stays (a late abort from a sentinel that lost
            // the election, after the switch, lifts nothing).
            Announcement::Ended => {
                if d.fence.is_some_and(|(f, _)| Some(f) == d.previous) {
                    d.fence = None;
                }
            }
        }
    }
}

impl super::sentinel::Discovery {
    /// An answer naming `addr` is stale: a failover away from it started or ended less than
    /// [`FENCE`] ago (a sentinel that has not heard of the switch yet still names it).
    pub(super) fn fenced(&self, addr: SocketAddr, now: Instant) -> bool {
        self.fence
            .is_some_and(|(old, until)| old == addr && now < until)
    }

    /// The sentinels named `addr` as the master: the one it replaces stays fenced for
    /// [`FENCE`] from now; an announcement of the fenced address itself lifts the fence.
    /// Returns the master named before.
    pub(super) fn switched_to(&mut self, addr: SocketAddr, now: Instant) -> Option<SocketAddr> {
        if self.fence.is_some_and(|(old, _)| old == addr) {
            self.fence = None;
        }
        if let Some(p) = self.previous.filter(|&p| p != addr) {
            self.fence = Some((p, now + FENCE));
        }
        self.master = Some(addr);
        self.previous.replace(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replaced_master_stays_fenced_after_the_switch() {
        let sentinels = crate::config::redis_url::Sentinels {
            addrs: vec![("127.0.0.1".into(), 26379)],
            master: "m".into(),
        };
        let now = Instant::now();
        let mut d = super::super::sentinel::Discovery::new(&sentinels, None, now);
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        assert_eq!(d.switched_to(a, now), None);
        assert!(!d.fenced(a, now), "the first master named fences nothing");
        assert_eq!(d.switched_to(b, now), Some(a));
        // A sentinel that has not heard of the switch yet still names a: stale.
        assert!(d.fenced(a, now) && !d.fenced(b, now));
        // Every sentinel announces the switch: the later ones keep the fence.
        let later = now + Duration::from_secs(1);
        assert_eq!(d.switched_to(b, later), Some(b));
        assert!(d.fenced(a, later));
        assert!(!d.fenced(a, now + FENCE), "for FENCE at most");
        // A failover back to a, announced, is followed at once.
        assert_eq!(d.switched_to(a, later), Some(b));
        assert!(!d.fenced(a, later) && d.fenced(b, later));
        assert_eq!(d.master, Some(a));
    }

    #[test]
    fn reads_the_announcements_of_its_master_only() {
        let a = |s: &str| s.parse::<SocketAddr>().ok();
        let sel = "slave 127.0.0.1:7002 127.0.0.1 7002 @ m 127.0.0.1 7001";
        assert_eq!(
            parse("+selected-slave", sel, "m"),
            Some(Announcement::Starting)
        );
        assert_eq!(parse("+selected-slave", sel, "other"), None);
        assert_eq!(
            parse("+promoted-slave", sel, "m"),
            a("127.0.0.1:7002").map(Announcement::Master)
        );
        assert_eq!(
            parse("+switch-master", "m 127.0.0.1 7001 127.0.0.1 7003", "m"),
            a("127.0.0.1:7003").map(Announcement::Master)
        );
        assert_eq!(
            parse("+switch-master", "x 127.0.0.1 7001 127.0.0.1 7003", "m"),
            None
        );
        assert_eq!(
            parse(
                "-failover-abort-no-good-slave",
                "master m 127.0.0.1 7001",
                "m"
            ),
            Some(Announcement::Ended)
        );
        assert_eq!(parse("+promoted-slave", "garbage", "m"), None);
        assert!(is_watch(Token(WATCH_BASE)) && is_watch(Token(WATCH_BASE - 15)));
        assert!(!is_watch(Token(WATCH_BASE - 16)) && !is_watch(Token(WATCH_BASE + 1)));
    }
}
