//! Command line: options, their defaults, and the checks that turn them into a [`Plan`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::error::{Error, Result};
use crate::payload::HEADER_LEN;
use crate::tally::{PatternTracker, SubTracker, Tracker};
use crate::transport::{PublishTransport, Transport};
use crate::url::UrlTemplate;

/// Descriptors kept free for the poller, publishers, /proc reads and stdio.
pub const FD_RESERVE: u64 = 64;

/// Largest --window with --subscribe-pattern: each subscriber keeps a bitmap as wide as the
/// window (8 KiB per subscriber here).
pub const PATTERN_MAX_WINDOW: usize = 1 << 16;

/// Publish rate: a fixed number of events per second, or as fast as the window allows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Events per second, over all topics.
    PerSec(f64),
    /// As fast as possible, bounded by `--window`.
    Max,
}

fn parse_rate(s: &str) -> std::result::Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSec(r)),
        _ => Err(format!("{s}: expected events per second (> 0) or `max`")),
    }
}

fn parse_secs(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s}: expected a number of seconds")),
    }
}

/// Load generator for Server-Sent Events servers (sseloop or any other, by URL template).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "sseloop-load",
    version,
    about = "Load generator for SSE servers: N subscribers, M published events, latency, loss, \
             server CPU and RSS",
    after_help = "Exit status: 0 when every acknowledged event reached every subscriber \
                  exactly once and in order; 1 on loss, duplicates, disconnects, publish errors, \
                  subscribers that could not connect, stall or timeout; 2 on a usage error or \
                  when the run could not start."
)]
pub struct Args {
    /// Subscriber URL; `{topic}` is replaced by each topic name.
    #[arg(long, default_value = "http://127.0.0.1:8080/events?topic={topic}")]
    pub url_template: String,

    /// Publish URL (POST, body = event data); `{topic}` is replaced by the topic name.
    #[arg(long, default_value = "http://127.0.0.1:8080/publish?topic={topic}")]
    pub publish_url: String,

    /// Subscriber connections to open.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub subscribers: usize,

    /// Events to publish after the warm-up (all topics together); with --duration-secs,
    /// whichever limit is reached first ends publishing.
    #[arg(long, short = 'm', default_value_t = 10_000)]
    pub events: u64,

    /// Event body size in bytes (at least 32: timestamp and event number).
    #[arg(long, default_value_t = 64)]
    pub size: usize,

    /// Events per second over all topics, or `max`.
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,

    /// Most events in flight (published but not yet received by every subscriber of their topic).
    #[arg(long, default_value_t = 1024)]
    pub window: usize,

    /// Topics; subscriber i listens to topic i % K, event g goes to topic g % K.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,

    /// Topic names are this prefix followed by the topic index.
    #[arg(long, default_value = "load")]
    pub topic_prefix: String,

    /// Every subscriber subscribes to the one pattern `<topic-prefix>*` (`{topic}` in
    /// --url-template becomes it) and so receives every event of every topic; events still go
    /// to topic g % K. Order is checked per topic and lane, loss against every topic's
    /// acknowledged events. The prefix must not match topics other processes publish to.
    #[arg(long)]
    pub subscribe_pattern: bool,

    /// Keep-alive publisher connections (topic t is always published on connection t % P, which
    /// keeps each topic's events in order) [default: min(topics, 4)].
    #[arg(long)]
    pub publishers: Option<usize>,

    /// Publish each topic round-robin over all --publishers connections instead of one
    /// connection per topic (many publishers on one topic). The server may interleave the
    /// connections in any order, so order is checked per connection ("lane") of a topic.
    #[arg(long)]
    pub spread_publishers: bool,

    /// Server process to sample for CPU seconds and RSS (/proc/PID); repeatable: the figures
    /// are then the sum over the processes (a TLS-terminating proxy and the server behind it).
    #[arg(long)]
    pub server_pid: Vec<u32>,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Free-form label stored in the report (bench.sh groups repeats by it).
    #[arg(long)]
    pub label: Option<String>,

    /// Seconds of publishing before measurement starts (events then are checked, not timed).
    #[arg(long, default_value = "0", value_parser = parse_secs)]
    pub warmup_secs: f64,

    /// Stop publishing after this many measured seconds even if --events are not all sent; in
    /// --idle mode, how long to hold the connections open [idle default: 2].
    #[arg(long, value_parser = parse_secs)]
    pub duration_secs: Option<f64>,

    /// Hard limit on the whole run; when reached the tool stops and reports what it has.
    #[arg(long, default_value = "120", value_parser = parse_secs)]
    pub timeout_secs: f64,

    /// Give up when nothing (connect, acknowledgement, delivery) happens for this long.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub stall_secs: f64,

    /// Open the subscribers, hold them, measure server RSS per connection; publish nothing.
    #[arg(long)]
    pub idle: bool,

    /// After the run (every event delivered, or the idle hold), keep every subscriber connected
    /// and idle this long, then sample the server's RSS again (`rss_settled_kib`); 0 = off.
    /// Not counted in --timeout-secs.
    #[arg(long, default_value = "0", value_parser = parse_secs)]
    pub settle_secs: f64,

    /// Bind subscriber i to 127.0.0.(1 + i % K) before connecting (loopback targets only)
    /// [default: 1 up to 1000 subscribers, else 16].
    #[arg(long)]
    pub source_addrs: Option<u8>,

    /// Most subscriber handshakes in progress at once (keeps the server's accept queue sane).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Subscriber transport.
    #[arg(long, value_enum, default_value_t = Transport::Sse)]
    pub transport: Transport,

    /// How events are published: HTTP POSTs to --publish-url, or (sseloop only) PUBLISH frames
    /// on a `GET /frames` connection upgraded at --publish-url's host, each answered by a
    /// PUBLISH_ACK.
    #[arg(long, value_enum, default_value_t = PublishTransport::Http)]
    pub publish_transport: PublishTransport,

    /// Handshake-rate mode instead of a publish run: --connect-concurrency subscribers at a
    /// time each connect, handshake, send the subscribe request, read the response head and
    /// close, and a new one takes its place; after --warmup-secs, subscribers completed in
    /// --duration-secs (5) are counted, per second and per server CPU-second. --subscribers is
    /// unused; nothing is published.
    #[arg(long)]
    pub churn: bool,

    /// With https:// URLs, no TLS session resumption: the client keeps no session cache (no
    /// tickets, no session ids), so every handshake is a full one.
    #[arg(long)]
    pub no_tls_resumption: bool,

    /// PEM CA certificates trusted for https:// URLs (the server's name is verified); without
    /// it, the system's CAs.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Instead of a run: read JSON reports and print the median of each figure per label.
    #[arg(long, num_args = 1.., value_name = "REPORT.json")]
    pub summarize: Option<Vec<PathBuf>>,
}

/// A checked run description.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Subscriber URL.
    pub sub_url: UrlTemplate,
    /// Publish URL (unused in idle mode).
    pub pub_url: UrlTemplate,
    /// Subscribers.
    pub subscribers: usize,
    /// Measured events.
    pub events: u64,
    /// Body size.
    pub size: usize,
    /// Publish rate.
    pub rate: Rate,
    /// In-flight window.
    pub window: usize,
    /// Topic names.
    pub topic_names: Vec<String>,
    /// `Some(<prefix>*)`: every subscriber subscribes to this pattern instead of its topic.
    pub pattern: Option<String>,
    /// Publisher connections.
    pub publishers: usize,
    /// Each topic goes over every publisher connection, round-robin.
    pub spread_publishers: bool,
    /// Server processes to sample (their figures are summed).
    pub server_pids: Vec<u32>,
    /// Warm-up.
    pub warmup: Duration,
    /// Measured publishing time limit (publish mode) or hold time (idle mode).
    pub duration: Option<Duration>,
    /// Hard limit.
    pub timeout: Duration,
    /// Stall limit.
    pub stall: Duration,
    /// Idle mode.
    pub idle: bool,
    /// Idle time after the run before the settled RSS sample (zero: none).
    pub settle: Duration,
    /// Source addresses to spread over (1 = let the kernel choose).
    pub source_addrs: u8,
    /// Concurrent handshakes.
    pub connect_concurrency: usize,
    /// Transport.
    pub transport: Transport,
    /// Publishing transport.
    pub publish_transport: PublishTransport,
    /// Report label.
    pub label: Option<String>,
    /// Handshake-rate mode.
    pub churn: bool,
    /// TLS clients keep a session cache and offer resumption.
    pub tls_resumption: bool,
}

impl Plan {
    /// What subscriber `i` subscribes to (a topic name or the pattern) and its topic index.
    pub fn subscription(&self, i: usize) -> (&str, u32) {
        let topic = i % self.topic_names.len();
        match &self.pattern {
            Some(p) => (p, 0),
            None => (&self.topic_names[topic], topic as u32),
        }
    }

    /// Subscriber `n`'s topic index, source address (`--source-addrs` round-robin, `None`: the
    /// kernel's choice) and subscribe request.
    pub fn subscriber_start(&self, n: usize) -> (u32, Option<Ipv4Addr>, Vec<u8>) {
        let (subscription, topic) = self.subscription(n);
        let source = (self.source_addrs > 1)
            .then(|| Ipv4Addr::new(127, 0, 0, 1 + (n % usize::from(self.source_addrs)) as u8));
        let mut request = Vec::with_capacity(256);
        let target = self.sub_url.target(subscription);
        self.transport
            .subscribe_request(&mut request, &self.sub_url.authority, &target);
        (topic, source, request)
    }

    /// A fresh tracker for one subscriber.
    pub fn tracker(&self) -> SubTracker {
        match self.pattern {
            Some(_) => SubTracker::Pattern(PatternTracker::new(
                self.topic_names.len(),
                self.lanes(),
                self.window,
            )),
            None => SubTracker::Topic(Tracker::new(self.lanes())),
        }
    }

    /// Publisher connections each topic is spread over: the order-checking lanes per topic.
    pub fn lanes(&self) -> usize {
        if self.spread_publishers {
            self.publishers
        } else {
            1
        }
    }

    /// The publisher connection of event `g` (topic `g % topics`, per-topic sequence
    /// `g / topics`); spread, the connection is the lane [`crate::tally::Tracker`] checks.
    pub fn publisher_for(&self, g: u64, topics: u64) -> usize {
        let topic = g % topics;
        if self.spread_publishers {
            ((g / topics) % self.publishers as u64) as usize
        } else {
            (topic % self.publishers as u64) as usize
        }
    }
}

impl Args {
    /// Checks the options against each other and against the descriptor limit `nofile`.
    pub fn plan(&self, nofile: u64) -> Result<Plan> {
        let bad = |m: String| Err(Error::msg(m));
        if self.subscribers == 0 {
            return bad("--subscribers must be at least 1".into());
        }
        if self.size < HEADER_LEN {
            return bad(format!("--size must be at least {HEADER_LEN} bytes"));
        }
        if self.topics == 0 || self.window == 0 || self.connect_concurrency == 0 {
            return bad("--topics, --window and --connect-concurrency must be at least 1".into());
        }
        let publishers = self.publishers.unwrap_or(self.topics.min(4)).max(1);
        let open_at_once = if self.churn {
            self.connect_concurrency
        } else {
            self.subscribers + publishers
        };
        let needed = open_at_once as u64 + FD_RESERVE;
        if needed > nofile {
            return bad(format!(
                "{} subscribers + {publishers} publishers need about {needed} descriptors; the \
                 limit is {nofile}",
                self.subscribers
            ));
        }
        let mut sub_url = UrlTemplate::parse(&self.url_template)?;
        let mut pub_url = UrlTemplate::parse(&self.publish_url)?;
        if sub_url.https || pub_url.https {
            let mut config = sseloop::tls::load_client(self.tls_ca.as_deref())
                .map_err(|e| Error::msg(format!("--tls-ca: {e}")))?;
            if self.no_tls_resumption {
                let mut c = (*config).clone();
                c.resumption = rustls::client::Resumption::disabled();
                config = std::sync::Arc::new(c);
            }
            for url in [&mut sub_url, &mut pub_url] {
                if url.https {
                    url.tls = Some(config.clone());
                }
            }
        }
        // A pattern subscriber needs {topic} only to place its pattern; without it the URL is
        // taken as written (a subscription of one's own, e.g. to check that loss is caught).
        if self.topics > 1
            && !(pub_url.has_topic() && (sub_url.has_topic() || self.subscribe_pattern))
        {
            return bad(
                "--topics > 1 needs {topic} in both --url-template and --publish-url".into(),
            );
        }
        if self.subscribe_pattern && self.window > PATTERN_MAX_WINDOW {
            return bad(format!(
                "--subscribe-pattern keeps a bitmap of the window per subscriber: --window must \
                 be at most {PATTERN_MAX_WINDOW}"
            ));
        }
        let loopback_v4 = matches!(sub_url.addr.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback());
        let source_addrs = match self.source_addrs {
            Some(0) => return bad("--source-addrs must be at least 1".into()),
            Some(k) if k > 1 && !loopback_v4 => {
                return bad("--source-addrs > 1 needs a 127.x.x.x subscriber URL".into())
            }
            Some(k) => k,
            // Churn closes connections by the thousand: TIME_WAIT ports spread over 16 sources.
            None if loopback_v4 && (self.subscribers > 1000 || self.churn) => 16,
            None => 1,
        };
        let duration = match (self.idle, self.duration_secs) {
            (_, Some(d)) => Some(Duration::from_secs_f64(d)),
            (true, None) => Some(Duration::from_secs(2)),
            (false, None) => None,
        };
        Ok(Plan {
            sub_url,
            pub_url,
            subscribers: self.subscribers,
            events: self.events,
            size: self.size,
            rate: self.rate,
            window: self.window,
            topic_names: (0..self.topics)
                .map(|t| format!("{}{t}", self.topic_prefix))
                .collect(),
            pattern: self
                .subscribe_pattern
                .then(|| format!("{}*", self.topic_prefix)),
            publishers,
            spread_publishers: self.spread_publishers,
            server_pids: self.server_pid.clone(),
            warmup: Duration::from_secs_f64(self.warmup_secs),
            duration,
            timeout: Duration::from_secs_f64(self.timeout_secs),
            stall: Duration::from_secs_f64(self.stall_secs.max(0.1)),
            idle: self.idle,
            settle: Duration::from_secs_f64(self.settle_secs),
            source_addrs,
            connect_concurrency: self.connect_concurrency,
            transport: self.transport,
            publish_transport: self.publish_transport,
            label: self.label.clone(),
            churn: self.churn,
            tls_resumption: !self.no_tls_resumption,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("sseloop-load").chain(extra.iter().copied()))
    }

    #[test]
    fn defaults_and_checks() {
        let p = args(&[]).plan(20_000).unwrap();
        assert_eq!((p.subscribers, p.publishers, p.source_addrs), (100, 1, 1));
        assert_eq!(p.rate, Rate::Max);
        assert_eq!(p.topic_names, vec!["load0".to_string()]);

        let p = args(&["-n", "5000", "--topics", "8", "--rate", "200"])
            .plan(20_000)
            .unwrap();
        assert_eq!((p.publishers, p.source_addrs), (4, 16));
        assert_eq!(p.rate, Rate::PerSec(200.0));

        assert!(args(&["-n", "19990"]).plan(20_000).is_err());
        assert!(args(&["--size", "31"]).plan(20_000).is_err());
        assert!(Args::try_parse_from(["x", "--rate", "0"]).is_err());
        assert!(args(&[
            "--topics",
            "2",
            "--url-template",
            "http://127.0.0.1:1/events"
        ])
        .plan(20_000)
        .is_err());
        let p = args(&["--publishers", "8", "--spread-publishers"])
            .plan(20_000)
            .unwrap();
        assert_eq!((p.publishers, p.lanes()), (8, 8));
        let conns: Vec<usize> = (0..10).map(|g| p.publisher_for(g, 1)).collect();
        assert_eq!(conns, [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]);
        let p = args(&["--publishers", "8", "--topics", "3"])
            .plan(20_000)
            .unwrap();
        assert_eq!(p.lanes(), 1);
        assert_eq!(p.publisher_for(4, 3), 1);

        let p = args(&["--idle"]).plan(20_000).unwrap();
        assert_eq!(p.duration, Some(Duration::from_secs(2)));
        assert_eq!(p.settle, Duration::ZERO);
    }

    #[test]
    fn pattern_subscribers_share_one_pattern() {
        let p = args(&[
            "--subscribe-pattern",
            "--topics",
            "100",
            "--topic-prefix",
            "load/",
            "--publishers",
            "8",
            "--spread-publishers",
            "--window",
            "32",
            "--settle-secs",
            "1.5",
        ])
        .plan(20_000)
        .unwrap();
        assert_eq!(p.pattern.as_deref(), Some("load/*"));
        assert_eq!(p.topic_names[99], "load/99");
        for i in [0, 1, 57, 99, 100] {
            assert_eq!(p.subscription(i), ("load/*", 0));
        }
        assert_eq!(
            p.sub_url.target(p.subscription(3).0),
            "/events?topic=load/*"
        );
        assert_eq!(p.settle, Duration::from_millis(1500));
        let SubTracker::Pattern(t) = p.tracker() else {
            panic!("pattern mode gives pattern trackers");
        };
        // Window 32 still gets the 128-event minimum: 16 bytes per subscriber.
        assert_eq!((t.span(), t.heap_bytes()), (128, 16));

        // Exact mode: subscriber i on topic i % K, one lane tracker per topic lane.
        let p = args(&["--topics", "3"]).plan(20_000).unwrap();
        assert_eq!(p.pattern, None);
        assert_eq!(p.subscription(4), ("load1", 1));
        assert!(matches!(p.tracker(), SubTracker::Topic(_)));

        // A pattern of one's own (no {topic}) is allowed; a window past the bitmap limit is not.
        assert!(args(&[
            "--subscribe-pattern",
            "--topics",
            "20",
            "--url-template",
            "http://127.0.0.1:1/events?topic=load1*"
        ])
        .plan(20_000)
        .is_ok());
        assert!(args(&["--subscribe-pattern", "--window", "65537"])
            .plan(20_000)
            .is_err());
        assert!(Args::try_parse_from(["x", "--settle-secs", "-1"]).is_err());
    }
}
