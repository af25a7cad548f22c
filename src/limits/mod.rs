//! Per-client limits (docs/SECURITY.md, "Per-client limits"): connections per address, new
//! connections per second per address, publishes per second per publisher, subscriptions per
//! stream. This module decides; connections and the loop answer (`conn/limits.rs`).
//!
//! The client's address is the peer's, or, when the peer is a `--trusted-proxy`, the one its
//! `Forwarded` / `X-Forwarded-For` headers report ([`forwarded`]). A direct connection is counted
//! at accept; a proxied one only once its request head names the client, and it is charged to
//! the client of its latest request.
//!
//! Memory: the connection counts hold an entry per address with an open connection (at most
//! one per connection, removed at zero); the rate tables hold at most [`TABLE_CAP`] entries
//! each, idle ones expire and the least recently used goes at the cap ([`table`]). Nothing here
//! runs when every limit is off: [`Limits::on_accept`] returns `None` and the connection carries
//! no [`ConnLimit`].

pub mod forwarded;
pub mod key;
pub mod table;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{Cidr, Config};
use crate::ratelimit::LogLimit;
pub use key::AddrKey;
use table::Table;

/// Most entries of each rate table (new connections by address, publishes by publisher): a
/// fixed cap, about 64 bytes an entry, so at most some 4 MiB each however many addresses a
/// botnet has. Past it the least recently used entry is forgotten (it gets a full bucket back).
pub const TABLE_CAP: usize = 65_536;

/// Refusal log lines: at most this many per second, the next one counting those left out.
const LOG_BURST: u32 = 10;

/// The limits, as counted in `sseloop_limited_total{limit}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// `--max-connections-per-ip`.
    ConnectionsPerIp = 0,
    /// `--max-new-connections-rate`.
    NewConnectionsRate = 1,
    /// `--publish-rate`.
    PublishRate = 2,
    /// `--max-subscriptions-per-conn`.
    SubscriptionsPerConn = 3,
}

impl LimitKind {
    /// Every limit, in index order.
    pub const ALL: [LimitKind; 4] = [
        LimitKind::ConnectionsPerIp,
        LimitKind::NewConnectionsRate,
        LimitKind::PublishRate,
        LimitKind::SubscriptionsPerConn,
    ];

    /// The `limit` label.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::ConnectionsPerIp => "connections_per_ip",
            LimitKind::NewConnectionsRate => "new_connections_rate",
            LimitKind::PublishRate => "publish_rate",
            LimitKind::SubscriptionsPerConn => "subscriptions_per_conn",
        }
    }

    /// The option that set it.
    pub fn flag(self) -> &'static str {
        match self {
            LimitKind::ConnectionsPerIp => "--max-connections-per-ip",
            LimitKind::NewConnectionsRate => "--max-new-connections-rate",
            LimitKind::PublishRate => "--publish-rate",
            LimitKind::SubscriptionsPerConn => "--max-subscriptions-per-conn",
        }
    }
}

/// A refusal: which limit, and when to retry (whole seconds, for `Retry-After`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The limit reached.
    pub kind: LimitKind,
    /// Seconds until the client may succeed (at least 1).
    pub retry_after: u64,
}

/// What the limits remember of one connection (only when some per-address limit is on).
#[derive(Debug)]
pub struct ConnLimit {
    /// The peer's address.
    peer: IpAddr,
    /// The peer is a trusted proxy: the client comes from each request's headers.
    proxied: bool,
    /// The client of the latest request (the peer itself for a direct connection).
    client: Option<AddrKey>,
    /// The address whose connection count holds this connection.
    charged: Option<AddrKey>,
    /// Refused at accept: answer the request with this, then close.
    pub refusal: Option<Refusal>,
}

impl ConnLimit {
    /// Whether the peer is a trusted proxy.
    pub fn proxied(&self) -> bool {
        self.proxied
    }

    /// The client address, when known.
    pub fn client(&self) -> Option<AddrKey> {
        self.client
    }
}

/// Who a publish is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Publisher {
    /// A JWT subject (hashed: the table's entries stay small whatever the subject's length).
    Subject(u64),
    /// A client address.
    Addr(AddrKey),
}

/// The limit settings in force (a reload replaces them).
#[derive(Clone, Debug, Default)]
struct Settings {
    per_ip: usize,
    v6_prefix: u8,
    proxies: Vec<Cidr>,
    publish_rate: u64,
    publish_burst: u64,
    max_subscriptions: usize,
    new_connections_rate: u64,
}

/// The per-client limits' state: settings, counts, tables.
pub struct Limits {
    s: Settings,
    connections: HashMap<AddrKey, u32>,
    new_connections: Table<AddrKey>,
    publishers: Table<Publisher>,
    hasher: RandomState,
    log: LogLimit,
    /// Refusals by [`LimitKind`].
    pub refused: [u64; 4],
}

impl Limits {
    /// The limits `config` asks for.
    pub fn new(config: &Config) -> Limits {
        let mut limits = Limits {
            s: Settings::default(),
            connections: HashMap::new(),
            new_connections: Table::new(TABLE_CAP),
            publishers: Table::new(TABLE_CAP),
            hasher: RandomState::new(),
            log: LogLimit::new(Duration::from_secs(1), LOG_BURST),
            refused: [0; 4],
        };
        limits.configure(config);
        limits
    }

    /// Takes the settings of `config` (at start and on reload). Connections already open keep
    /// what they were counted as; the new values apply from the next accept, request or
    /// publish.
    pub fn configure(&mut self, config: &Config) {
        self.s = Settings {
            per_ip: config.max_connections_per_ip,
            v6_prefix: u8::try_from(config.ipv6_prefix).unwrap_or(128),
            proxies: config.trusted_proxy.clone(),
            publish_rate: config.publish_rate,
            publish_burst: match config.publish_burst {
                0 => config.publish_rate.max(1),
                b => b,
            },
            max_subscriptions: config.max_subscriptions_per_conn,
            new_connections_rate: config.max_new_connections_rate,
        };
    }

    /// Some limit needs the client's address.
    fn by_address(&self) -> bool {
        self.s.per_ip > 0 || self.s.new_connections_rate > 0 || self.s.publish_rate > 0
    }

    /// `--max-subscriptions-per-conn` (0: off).
    pub fn max_subscriptions(&self) -> usize {
        self.s.max_subscriptions
    }

    /// A connection accepted from `peer`: what to remember of it (`None` when no per-address
    /// limit is on), with a refusal when it is over a limit. A trusted proxy is not counted
    /// here: its requests name the clients.
    pub fn on_accept(&mut self, peer: IpAddr, now: Instant) -> Option<Box<ConnLimit>> {
        if !self.by_address() {
            return None;
        }
        if self.s.proxies.iter().any(|c| c.contains(peer)) {
            return Some(Box::new(ConnLimit {
                peer,
                proxied: true,
                client: None,
                charged: None,
                refusal: None,
            }));
        }
        let key = AddrKey::of(peer, self.s.v6_prefix);
        let refusal = self.admit(key, now).err();
        Some(Box::new(ConnLimit {
            peer,
            proxied: false,
            client: Some(key),
            charged: refusal.is_none().then_some(key),
            refusal,
        }))
    }

    /// A request head on a proxied connection: its client is the address the headers report
    /// (else the proxy itself), and the connection is charged to it. A refusal means the
    /// request is answered with it and the connection closed.
    pub fn on_request(
        &mut self,
        conn: &mut ConnLimit,
        forwarded: Option<&[u8]>,
        x_forwarded_for: Option<&[u8]>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if !conn.proxied {
            return Ok(());
        }
        let ip = forwarded::client_address(forwarded, x_forwarded_for, &self.s.proxies)
            .unwrap_or(conn.peer);
        let key = AddrKey::of(ip, self.s.v6_prefix);
        conn.client = Some(key);
        if conn.charged == Some(key) {
            return Ok(());
        }
        if let Some(old) = conn.charged.take() {
            self.uncount(old);
        }
        self.admit(key, now)?;
        conn.charged = Some(key);
        Ok(())
    }

    /// Counts a new connection of `key`, or refuses it.
    fn admit(&mut self, key: AddrKey, now: Instant) -> Result<(), Refusal> {
        let open = self.connections.get(&key).copied().unwrap_or(0);
        if self.s.per_ip > 0 && open as usize >= self.s.per_ip {
            return Err(Refusal {
                kind: LimitKind::ConnectionsPerIp,
                retry_after: 1,
            });
        }
        let rate = self.s.new_connections_rate;
        if rate > 0 {
            if let Err(wait) = self.new_connections.take(key, rate, rate, now) {
                return Err(Refusal {
                    kind: LimitKind::NewConnectionsRate,
                    retry_after: wait,
                });
            }
        }
        // Counted even with the cap off, so that turning it on by reload sees these.
        *self.connections.entry(key).or_insert(0) += 1;
        Ok(())
    }

    fn uncount(&mut self, key: AddrKey) {
        if let Some(n) = self.connections.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.connections.remove(&key);
            }
        }
    }

    /// A connection closes: its count goes.
    pub fn release(&mut self, conn: Option<Box<ConnLimit>>) {
        if let Some(key) = conn.and_then(|c| c.charged) {
            self.uncount(key);
        }
    }

    /// A publish of the JWT `subject`, else of the connection's client: a token from its
    /// bucket, or a refusal saying when to retry.
    pub fn take_publish(
        &mut self,
        conn: Option<&ConnLimit>,
        subject: Option<&str>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let rate = self.s.publish_rate;
        if rate == 0 {
            return Ok(());
        }
        let who = match (subject, conn.and_then(ConnLimit::client)) {
            (Some(sub), _) => Publisher::Subject(self.hasher.hash_one(sub)),
            (None, Some(addr)) => Publisher::Addr(addr),
            // Accepted before a reload turned the limit on: not known, not limited.
            (None, None) => return Ok(()),
        };
        self.publishers
            .take(who, rate, self.s.publish_burst, now)
            .map_err(|wait| Refusal {
                kind: LimitKind::PublishRate,
                retry_after: wait,
            })
    }

    /// Counts a refusal and logs it, rate-limited; `who` names the client.
    pub fn note(&mut self, kind: LimitKind, who: &dyn std::fmt::Display, now: Instant) {
        self.refused[kind as usize] += 1;
        if let Some(skipped) = self.log.note(now) {
            let more = if skipped > 0 {
                format!(" ({skipped} similar refusals not logged)")
            } else {
                String::new()
            };
            log::info!("{who}: refused by {}{more}", kind.flag());
        }
    }

    /// Entries of the tables: connection counts, new-connection buckets, publish buckets.
    pub fn table_entries(&self) -> [usize; 3] {
        [
            self.connections.len(),
            self.new_connections.len(),
            self.publishers.len(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn limits(args: &[&str]) -> Limits {
        let mut argv = vec!["sseloop"];
        argv.extend_from_slice(args);
        Limits::new(&Config::parse_from(argv))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn off_by_default_nothing_is_remembered() {
        let mut l = limits(&[]);
        assert!(l.on_accept(ip("1.2.3.4"), Instant::now()).is_none());
        assert_eq!(l.take_publish(None, Some("a"), Instant::now()), Ok(()));
        assert_eq!(l.table_entries(), [0, 0, 0]);
    }

    #[test]
    fn the_per_address_cap_counts_open_connections_and_frees_on_release() {
        let mut l = limits(&["--max-connections-per-ip", "2"]);
        let now = Instant::now();
        let a = l.on_accept(ip("1.1.1.1"), now).unwrap();
        let b = l.on_accept(ip("1.1.1.1"), now).unwrap();
        let c = l.on_accept(ip("1.1.1.1"), now).unwrap();
        assert_eq!(a.refusal, None);
        assert_eq!(b.refusal, None);
        assert_eq!(c.refusal.map(|r| r.kind), Some(LimitKind::ConnectionsPerIp));
        let other = l.on_accept(ip("2.2.2.2"), now).unwrap();
        assert_eq!(other.refusal, None);
        l.release(Some(c));
        assert_eq!(l.table_entries()[0], 2);
        l.release(Some(a));
        let d = l.on_accept(ip("1.1.1.1"), now).unwrap();
        assert_eq!(d.refusal, None);
        l.release(Some(b));
        l.release(Some(d));
        l.release(Some(other));
        assert_eq!(l.table_entries()[0], 0, "no entry outlives its connections");
    }

    #[test]
    fn a_proxied_connection_is_charged_to_the_client_its_headers_name() {
        let mut l = limits(&[
            "--max-connections-per-ip",
            "1",
            "--trusted-proxy",
            "127.0.0.0/8",
        ]);
        let now = Instant::now();
        let proxy = ip("127.0.0.1");
        let mut a = l.on_accept(proxy, now).unwrap();
        let mut b = l.on_accept(proxy, now).unwrap();
        assert_eq!(l.table_entries()[0], 0, "a proxy is not counted");
        let xff = Some(&b"9.9.9.9"[..]);
        assert_eq!(l.on_request(&mut a, None, xff, now), Ok(()));
        assert_eq!(l.on_request(&mut a, None, xff, now), Ok(()), "same client");
        let refused = l.on_request(&mut b, None, xff, now);
        assert_eq!(
            refused.map_err(|r| r.kind),
            Err(LimitKind::ConnectionsPerIp)
        );
        assert_eq!(l.on_request(&mut b, None, Some(b"8.8.8.8"), now), Ok(()));
        // The next request of `a` comes from another client: the charge moves.
        assert_eq!(
            l.on_request(&mut a, Some(b"for=7.7.7.7"), None, now),
            Ok(())
        );
        let mut c = l.on_accept(proxy, now).unwrap();
        assert_eq!(l.on_request(&mut c, None, xff, now), Ok(()));
        for conn in [a, b, c] {
            l.release(Some(conn));
        }
        assert_eq!(l.table_entries()[0], 0);
    }

    #[test]
    fn new_connections_and_publishes_have_their_token_buckets() {
        let mut l = limits(&[
            "--max-new-connections-rate",
            "2/s",
            "--publish-rate",
            "1",
            "--publish-burst",
            "2",
        ]);
        let t0 = Instant::now();
        let a = l.on_accept(ip("1.1.1.1"), t0).unwrap();
        let b = l.on_accept(ip("1.1.1.1"), t0).unwrap();
        let c = l.on_accept(ip("1.1.1.1"), t0).unwrap();
        assert_eq!(
            c.refusal,
            Some(Refusal {
                kind: LimitKind::NewConnectionsRate,
                retry_after: 1
            })
        );
        let later = t0 + Duration::from_millis(500);
        assert_eq!(l.on_accept(ip("1.1.1.1"), later).unwrap().refusal, None);
        assert_eq!(l.take_publish(Some(&a), None, t0), Ok(()));
        assert_eq!(
            l.take_publish(Some(&b), None, t0),
            Ok(()),
            "one address, one bucket"
        );
        let over = l.take_publish(Some(&a), None, t0);
        assert_eq!(over.map_err(|r| r.retry_after), Err(1));
        // A subject has its own bucket, wherever it connects from.
        assert_eq!(l.take_publish(Some(&a), Some("alice"), t0), Ok(()));
        assert_eq!(l.take_publish(Some(&a), Some("alice"), t0), Ok(()));
        assert!(l.take_publish(Some(&c), Some("alice"), t0).is_err());
        assert_eq!(
            l.take_publish(Some(&a), None, t0 + Duration::from_secs(1)),
            Ok(())
        );
    }
}
