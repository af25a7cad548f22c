//! Sentinel: where the master of a `redis+sentinel://` backplane is. Before either link connects
//! (and again after any link is lost), the node asks the sentinels in turn, on one short-lived
//! non-blocking connection in its own loop, `SENTINEL get-master-addr-by-name NAME` (after `AUTH`
//! with `--backplane-sentinel-password`, never the data nodes' credentials). The links then
//! connect there and check `ROLE` before anything else; a link that meets a replica (`READONLY`,
//! `ROLE` not master) is dropped and the sentinels are asked again. The first sentinel to answer
//! is asked first next time. A round where none answers waits a jittered backoff.
//!
//! The node also listens to every sentinel's failover announcements (`watch.rs`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;

use super::redis::{integer, text, RedisConn};
use super::Backplane;
use crate::config::redis_url::Sentinels;

/// Poll token of the connection that asks a sentinel.
pub const SENTINEL: Token = Token(usize::MAX - 7);

/// An address the sentinels gave (or named in the URL): an IP costs nothing; a name is looked
/// up here, blocking (see the module's doc).
pub(super) fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}

/// While a failover is under way, how soon the sentinels are asked again.
const FENCED_RETRY: Duration = Duration::from_millis(100);

/// The sentinels of one backplane, and what they said.
pub(super) struct Discovery {
    sentinels: Vec<(String, u16)>,
    pub(super) master_name: String,
    password: Option<String>,
    /// The sentinel asked next.
    next: usize,
    /// Sentinels asked in this round without an answer.
    failed: usize,
    /// The question in flight: the connection, the sentinel's index, the replies still
    /// expected (AUTH's, then the address), and the deadline.
    asking: Option<(RedisConn, usize, usize, Instant)>,
    /// When the next round may start.
    retry_at: Instant,
    attempt: u32,
    /// The master's address as the sentinels last gave it; `None`: ask.
    pub(super) master: Option<SocketAddr>,
    /// The address given before, to count failovers.
    pub(super) previous: Option<SocketAddr>,
    /// Each sentinel's announcements (`watch.rs`), once connected.
    pub(super) watches: Vec<Option<RedisConn>>,
    /// A failover away from this address started or ended: until then, an answer naming it
    /// is stale (`watch.rs`).
    pub(super) fence: Option<(SocketAddr, Instant)>,
}

impl Discovery {
    pub(super) fn new(s: &Sentinels, password: Option<String>, now: Instant) -> Discovery {
        Discovery {
            sentinels: s.addrs.clone(),
            master_name: s.master.clone(),
            password,
            next: 0,
            failed: 0,
            asking: None,
            retry_at: now,
            attempt: 0,
            master: None,
            previous: None,
            watches: s.addrs.iter().map(|_| None).collect(),
            fence: None,
        }
    }

    /// Drops a question in flight and the subscription (shutdown).
    pub(super) fn close(&mut self, registry: &Registry) {
        if let Some((conn, ..)) = self.asking.take() {
            conn.close(registry);
        }
        for conn in self.watches.iter_mut().filter_map(Option::take) {
            conn.close(registry);
        }
        self.retry_at = Instant::now() + Duration::from_secs(3600);
    }

    /// Connects to sentinel `i` (a name resolves here; an address costs nothing) and sends
    /// `AUTH` when there is a password; returns the connection and how many replies precede
    /// the next command's (0 or 1).
    pub(super) fn open(
        &self,
        i: usize,
        registry: &Registry,
        token: Token,
    ) -> Result<(RedisConn, usize), String> {
        let (host, port) = &self.sentinels[i];
        let addr = resolve(host, *port).ok_or_else(|| format!("cannot resolve {host}"))?;
        let mut conn =
            RedisConn::connect(addr, registry, token, None).map_err(|e| e.to_string())?;
        let mut auth = 0;
        if let Some(pw) = &self.password {
            conn.command(&[b"AUTH", pw.as_bytes()]);
            auth = 1;
        }
        Ok((conn, auth))
    }

    /// The earliest moment discovery has something to do.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        match (&self.asking, self.master) {
            (Some((.., deadline)), _) => Some(*deadline),
            (None, None) => Some(self.retry_at),
            (None, Some(_)) => None,
        }
    }
}

impl Backplane {
    /// Forgets the master's address (a link was lost): the next connection asks again.
    pub(super) fn forget_master(&mut self) {
        if let Some(d) = self.sentinel.as_mut() {
            d.master = None;
        }
    }

    /// Discovery's turn in [`Backplane::tick`]: starts a question when the master is unknown,
    /// gives up on one past its deadline. True when the master's address is known.
    pub(super) fn discover(&mut self, registry: &Registry, now: Instant) -> bool {
        let timeout = self.cfg.timeout;
        let Some(d) = self.sentinel.as_mut() else {
            return true;
        };
        if d.master.is_some() {
            return true;
        }
        if let Some((_, i, _, deadline)) = &d.asking {
            if *deadline <= now {
                let i = *i;
                self.sentinel_failed(registry, i, "no answer in time", now);
            }
            return false;
        }
        if d.retry_at > now {
            return false;
        }
        let i = d.next % d.sentinels.len();
        match d.open(i, registry, SENTINEL) {
            Ok((mut conn, auth)) => {
                conn.command(&[
                    b"SENTINEL",
                    b"get-master-addr-by-name",
                    d.master_name.as_bytes(),
                ]);
                d.asking = Some((conn, i, auth + 1, now + timeout));
            }
            Err(why) => self.sentinel_failed(registry, i, &why, now),
        }
        false
    }

    /// Readiness on the connection to a sentinel.
    pub fn on_sentinel_ready(&mut self, registry: &Registry, now: Instant, scratch: &mut [u8]) {
        let Some(d) = self.sentinel.as_mut() else {
            return;
        };
        let Some((conn, i, expected, _)) = d.asking.as_mut() else {
            return;
        };
        let i = *i;
        let mut frames = Vec::new();
        let io = conn.on_ready(&mut frames, scratch);
        for frame in frames {
            *expected -= 1;
            if let OwnedFrame::Error(e) = &frame {
                let why = format!("sentinel error {}", super::link::first_word(e));
                return self.sentinel_failed(registry, i, &why, now);
            }
            if *expected > 0 {
                continue; // AUTH's OK
            }
            let addr = match &frame {
                OwnedFrame::Array(parts) if parts.len() == 2 => {
                    let host = text(&parts[0]).unwrap_or("");
                    let port = integer(&parts[1]).and_then(|p| u16::try_from(p).ok());
                    port.and_then(|p| resolve(host, p))
                }
                _ => None,
            };
            let Some(addr) = addr else {
                let why = format!("does not know a master named {:?}", d.master_name);
                return self.sentinel_failed(registry, i, &why, now);
            };
            if let Some((conn, ..)) = d.asking.take() {
                conn.close(registry);
            }
            if d.fenced(addr, now) {
                // A failover away from this master is under way: ask again (another sentinel
                // first: the one leading the failover names the promoted replica first).
                d.next = i + 1;
                d.retry_at = now + FENCED_RETRY;
                return;
            }
            d.next = i;
            d.failed = 0;
            d.attempt = 0;
            self.open_watches(registry);
            self.master_is(addr, now);
            return;
        }
        if let Err(e) = io {
            self.sentinel_failed(registry, i, &e.to_string(), now);
        }
    }

    /// Sentinel `i` did not answer: ask the next one, or wait a backoff once every one failed.
    fn sentinel_failed(&mut self, registry: &Registry, i: usize, why: &str, now: Instant) {
        let Some(d) = self.sentinel.as_mut() else {
            return;
        };
        if let Some((conn, ..)) = d.asking.take() {
            conn.close(registry);
        }
        let (host, port) = &d.sentinels[i];
        log::debug!("backplane: sentinel {host}:{port}: {why}");
        d.next = i + 1;
        d.failed += 1;
        if d.failed >= d.sentinels.len() {
            d.failed = 0;
            d.attempt += 1;
            let attempt = d.attempt;
            let summary = format!("no sentinel named the master (last: {why})");
            let wait = self.backoff(attempt);
            if let Some(d) = self.sentinel.as_mut() {
                d.retry_at = now + wait;
            }
            self.log_failure("sentinel", &summary, now);
        }
    }

    /// The sentinels named `addr` as the master.
    pub(super) fn master_is(&mut self, addr: SocketAddr, now: Instant) {
        let Some(d) = self.sentinel.as_mut() else {
            return;
        };
        match d.switched_to(addr, now) {
            Some(p) if p != addr => {
                self.stats.failovers += 1;
                log::warn!(
                    "backplane {}: Sentinel names a new master {addr} (was {p})",
                    self.cfg.url
                );
            }
            None => log::info!("backplane {}: Sentinel names master {addr}", self.cfg.url),
            Some(_) => {}
        }
        self.addr = addr;
    }

    /// The master's address, for the info gauge (`None` before the first connection).
    pub fn master(&self) -> Option<String> {
        match &self.sentinel {
            Some(d) => d.previous.map(|a| a.to_string()),
            None => Some(self.addr.to_string()),
        }
    }
}
