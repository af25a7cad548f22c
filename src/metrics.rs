//! Counters of the loop and their Prometheus text exposition (format 0.0.4).
//!
//! Plain integers: only the loop thread touches them. Every metric name is written in this file
//! and nowhere else. Gauges that other structures already know exactly (slab occupancy, armed
//! timers, subscriptions, history) are read from them at render time rather than mirrored here.

use std::fmt::Write as _;
use std::time::Duration;

use crate::auth::AuthFailure;
use crate::backplane::BackplaneStats;
use crate::tls::HandshakeFailure;

/// Upper bounds (seconds) of the backplane read-lag histogram buckets.
const LAG_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// Upper bounds (seconds) of the connection-lifetime histogram buckets.
const LIFETIME_BUCKETS: [f64; 10] = [0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];

/// HTTP statuses counted individually in `sseloop_http_responses_total`.
const COUNTED_STATUSES: [u16; 20] = [
    101, 200, 204, 304, 308, 400, 401, 403, 404, 405, 408, 413, 417, 426, 429, 431, 500, 501, 503,
    0,
];

/// The connection kinds of the `sseloop_connections_open` gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// Plain HTTP (reading a request, responding, keep-alive).
    Http = 0,
    /// An SSE stream.
    Sse = 1,
    /// A binary frame stream.
    Frames = 2,
}

/// The `kind` label of each [`ConnKind`], by index.
const CONN_KINDS: [&str; 3] = ["http", "sse", "frames"];

/// Why a resume could not be served in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// History no longer holds every event after the client's id.
    Expired = 0,
    /// The id is not from this run (an earlier run, or not an id of ours at all).
    Unknown = 1,
    /// The backplane's Redis came back without its data: ids before the notice name nothing.
    BackplaneLost = 2,
}

impl ResetReason {
    /// The label value and the reason clients see in the reset event.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Expired => "expired",
            ResetReason::Unknown => "unknown",
            ResetReason::BackplaneLost => "backplane_lost",
        }
    }
}

/// Why the server closed a connection on its own initiative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// Request head not complete within `--header-timeout-ms`.
    HeaderTimeout = 0,
    /// Keep-alive connection idle past `--idle-timeout-ms`.
    IdleTimeout = 1,
    /// The socket accepted no byte for `--write-stall-ms` while output was pending.
    WriteStall = 2,
    /// Output queue would have exceeded `--max-queue-bytes`.
    SlowConsumer = 3,
    /// Graceful close did not finish within the grace period.
    GraceExpired = 4,
    /// Over `--max-connections`: answered 503.
    OverCapacity = 5,
    /// A bug caught by the lifecycle state machine (invalid transition).
    Internal = 6,
}

/// Label of each [`CloseCause`], in index order.
pub const CLOSE_CAUSES: [(&str, CloseCause); 7] = [
    ("header_timeout", CloseCause::HeaderTimeout),
    ("idle_timeout", CloseCause::IdleTimeout),
    ("write_stall", CloseCause::WriteStall),
    ("slow_consumer", CloseCause::SlowConsumer),
    ("grace_expired", CloseCause::GraceExpired),
    ("over_capacity", CloseCause::OverCapacity),
    ("internal", CloseCause::Internal),
];

/// All counters.
#[derive(Default, Clone, Debug)]
pub struct Metrics {
    /// Configuration reloads: applied, refused.
    pub reloads: [u64; 2],
    /// Connections accepted.
    pub accepted: u64,
    /// Open connections by [`ConnKind`].
    pub open: [u64; 3],
    /// Events published (one per publish, whatever the number of topics).
    pub published: u64,
    /// Events queued to a subscriber (live and replayed).
    pub deliveries: u64,
    /// Bytes written to sockets.
    pub bytes_written: u64,
    /// Heartbeat comments sent.
    pub heartbeats: u64,
    /// Loop iterations (poll returns).
    pub loop_iterations: u64,
    /// Non-blocking polls taken in the middle of a round of writes.
    pub midround_polls: u64,
    /// Resumes that could not be served in full, by [`ResetReason`].
    pub resume_resets: [u64; 3],
    /// Events replayed from history.
    pub replayed: u64,
    /// Server-initiated closes by [`CloseCause`].
    pub closes: [u64; 7],
    /// `accept` failures for lack of descriptors (EMFILE/ENFILE).
    pub accept_fd_exhausted: u64,
    /// Other `accept` failures.
    pub accept_errors: u64,
    /// Requests rejected for authentication or authorization (the sum of the next field).
    pub auth_failures: u64,
    /// The same by [`AuthFailure`] (index [`AuthFailure::index`]).
    pub auth_failures_by_reason: [u64; AuthFailure::ALL.len()],
    /// Frames received in frame mode.
    pub frames_received: u64,
    /// Streams ended because their JWT expired.
    pub streams_token_expired: u64,
    /// Client publishes refused by the host's publish hook.
    pub publishes_vetoed: u64,
    /// Server API requests answered, by operation and status (a short list: few of either).
    admin_requests: Vec<(&'static str, u16, u64)>,
    /// Streams closed through the server API, by [`DisconnectCause`].
    pub disconnects: [u64; 3],
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes failed, by [`HandshakeFailure`] (index [`HandshakeFailure::index`]).
    pub tls_handshake_failures: [u64; HandshakeFailure::ALL.len()],
    /// Responses by status (index into `COUNTED_STATUSES`; the last slot counts the rest).
    responses: [u64; COUNTED_STATUSES.len()],
    /// Lifetimes of closed connections by the kind they ended as (index: `ConnKind`).
    lifetime_buckets: [[u64; LIFETIME_BUCKETS.len()]; CONN_KINDS.len()],
    lag_buckets: [u64; LAG_BUCKETS.len()],
    lag_count: u64,
    lag_sum: f64,
    lifetime_count: [u64; CONN_KINDS.len()],
    lifetime_sum: [f64; CONN_KINDS.len()],
}

/// Samples kept for a console opened mid-incident: five minutes at one a second.
pub const SAMPLES_KEPT: usize = 300;

/// One second's figures, as the console charts (`/stats?samples=1`) them: `uptime_ms`, open connections (http, sse,
/// frames), then the counters deliveries, published, bytes written, slow-consumer closes and
/// resume resets (totals since start: the page turns them into rates).
pub type Sample = [u64; 9];

/// The sample of now.
pub fn sample(uptime: Duration, m: &Metrics) -> Sample {
    [
        u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        m.open[ConnKind::Http as usize],
        m.open[ConnKind::Sse as usize],
        m.open[ConnKind::Frames as usize],
        m.deliveries,
        m.published,
        m.bytes_written,
        m.closes[CloseCause::SlowConsumer as usize],
        m.resume_resets.iter().sum::<u64>(),
    ]
}

/// Why the server API closed a stream (`sseloop_disconnects_total{cause}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectCause {
    /// `DELETE /api/v1/connections/{id}`.
    Admin = 0,
    /// `POST /api/v1/disconnect` without a ban.
    Revoke = 1,
    /// `POST /api/v1/disconnect` with `ban_secs`.
    Ban = 2,
}

impl DisconnectCause {
    /// Every cause, in index order.
    pub const ALL: [DisconnectCause; 3] = [
        DisconnectCause::Admin,
        DisconnectCause::Revoke,
        DisconnectCause::Ban,
    ];

    /// The `cause` label.
    pub fn label(self) -> &'static str {
        match self {
            DisconnectCause::Admin => "admin",
            DisconnectCause::Revoke => "revoke",
            DisconnectCause::Ban => "ban",
        }
    }
}

/// Gauges owned by other structures, read when rendering.
#[derive(Default, Clone, Copy, Debug)]
pub struct Gauges {
    /// Occupied slab slots.
    pub slab_connections: usize,
    /// Armed timers.
    pub timers: usize,
    /// Topic subscriptions held by connections.
    pub subscriptions: usize,
    /// Topics known to the hub.
    pub topics: usize,
    /// Events retained in history, summed over topics.
    pub history_events: usize,
    /// Bytes of the distinct events retained.
    pub history_bytes: usize,
    /// Bytes the hub holds beyond history: events still being written to readers that no
    /// history retains, joined batches, the backlog.
    pub hub_transient_bytes: usize,
    /// Write chunks lent to connections.
    pub chunks_lent: usize,
    /// Connection limit in force.
    pub max_connections: usize,
}

impl Metrics {
    /// Counts a refused authorization.
    pub fn count_auth_failure(&mut self, reason: AuthFailure) {
        self.auth_failures += 1;
        self.auth_failures_by_reason[reason.index()] += 1;
    }

    /// Counts an answered server API request.
    pub fn count_admin(&mut self, op: &'static str, code: u16) {
        match self
            .admin_requests
            .iter_mut()
            .find(|(o, c, _)| *o == op && *c == code)
        {
            Some((_, _, n)) => *n += 1,
            None => {
                self.admin_requests.push((op, code, 1));
                self.admin_requests.sort_unstable();
            }
        }
    }

    /// Counts a failed TLS handshake.
    pub fn count_tls_failure(&mut self, reason: HandshakeFailure) {
        self.tls_handshake_failures[reason.index()] += 1;
    }

    /// Appends the TLS families (only rendered with `--tls-cert`).
    pub fn render_tls(&self, o: &mut String) {
        let simple: [(&str, &str, &str, u64); 1] = [(
            "sseloop_tls_handshakes_total",
            "counter",
            "TLS handshakes completed.",
            self.tls_handshakes,
        )];
        unlabelled(o, &simple);
        by_reason(
            o,
            "sseloop_tls_handshake_failures_total",
            "TLS handshakes that failed, by reason (plaintext: not TLS at all; timeout: not done within --header-timeout-ms).",
            HandshakeFailure::ALL
                .iter()
                .map(|r| (r.label(), self.tls_handshake_failures[r.index()])),
        );
    }

    /// Counts a response status.
    pub fn count_response(&mut self, status: u16) {
        let slot = COUNTED_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(COUNTED_STATUSES.len() - 1);
        self.responses[slot] += 1;
    }

    /// Responses sent with `status` so far.
    pub fn responses(&self, status: u16) -> u64 {
        COUNTED_STATUSES
            .iter()
            .position(|&s| s == status)
            .map_or(0, |slot| self.responses[slot])
    }

    /// Records a closed connection's lifetime, by the kind it ended as.
    pub fn observe_lifetime(&mut self, kind: ConnKind, lifetime: Duration) {
        let k = kind as usize;
        let secs = lifetime.as_secs_f64();
        for (bucket, bound) in self.lifetime_buckets[k].iter_mut().zip(LIFETIME_BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        self.lifetime_count[k] += 1;
        self.lifetime_sum[k] += secs;
    }

    /// Records the time from an event's append in Redis to its local fan-out.
    pub fn observe_read_lag(&mut self, secs: f64) {
        for (bucket, bound) in self.lag_buckets.iter_mut().zip(LAG_BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        self.lag_count += 1;
        self.lag_sum += secs;
    }

    /// Appends the backplane's families (only rendered when one is configured); `master` is
    /// the Redis the node writes to (host:port, never a password).
    pub fn render_backplane(
        &self,
        o: &mut String,
        up: bool,
        stats: &BackplaneStats,
        master: Option<String>,
    ) {
        let simple: [(&str, &str, &str, u64); 9] = [
            (
                "sseloop_backplane_up",
                "gauge",
                "1 while publishing through the backplane works (writer and reader connected).",
                u64::from(up),
            ),
            (
                "sseloop_backplane_reconnects_total",
                "counter",
                "Backplane connections re-established after a loss.",
                stats.reconnects,
            ),
            (
                "sseloop_backplane_appends_total",
                "counter",
                "Events appended to the backplane by this node.",
                stats.appends,
            ),
            (
                "sseloop_backplane_append_calls_total",
                "counter",
                "APPEND script calls sent to Redis (each carries the appends of one loop iteration).",
                stats.append_calls,
            ),
            (
                "sseloop_backplane_append_failures_total",
                "counter",
                "Publishes refused because the backplane was unavailable or timed out.",
                stats.append_failures,
            ),
            (
                "sseloop_backplane_events_read_total",
                "counter",
                "Events read from the backplane stream (every node's, this one's included).",
                stats.events_read,
            ),
            (
                "sseloop_backplane_read_bytes_total",
                "counter",
                "Bytes of events read from the backplane (data, topics, type).",
                stats.read_bytes,
            ),
            (
                "sseloop_backplane_failovers_total",
                "counter",
                "Times Sentinel named a new master (redis+sentinel:// backplanes).",
                stats.failovers,
            ),
            (
                "sseloop_backplane_held_bytes",
                "gauge",
                "Bytes of events read but held until enough replicas have them (--backplane-min-replicas).",
                stats.held_bytes,
            ),
        ];
        unlabelled(o, &simple);
        if let Some(addr) = master {
            family(
                o,
                "sseloop_backplane_master_info",
                "gauge",
                "The Redis this node's backplane writes to (1, labelled with its address).",
            );
            // A socket address: no quote or backslash to escape.
            let _ = writeln!(o, "sseloop_backplane_master_info{{addr=\"{addr}\"}} 1");
        }
        histogram(
            o,
            "sseloop_backplane_replica_wait_seconds",
            "Time from an append batch's WAIT to the replicas' answer (--backplane-min-replicas).",
            &crate::backplane::WAIT_BUCKETS,
            &stats.wait_buckets,
            stats.wait_count,
            stats.wait_sum,
        );
        histogram(
            o,
            "sseloop_backplane_read_lag_seconds",
            "Time from an event's append in Redis (Redis's clock) to its fan-out on this node.",
            &LAG_BUCKETS,
            &self.lag_buckets,
            self.lag_count,
            self.lag_sum,
        );
    }

    /// Renders the exposition text.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(6144);
        let o = &mut out;
        family(
            o,
            "sseloop_connections_open",
            "gauge",
            "Open connections by kind.",
        );
        for (kind, v) in CONN_KINDS.iter().zip(self.open) {
            let _ = writeln!(o, "sseloop_connections_open{{kind=\"{kind}\"}} {v}");
        }
        let simple: [(&str, &str, &str, u64); 22] = [
            (
                "sseloop_connections_accepted_total",
                "counter",
                "Connections accepted.",
                self.accepted,
            ),
            (
                "sseloop_events_published_total",
                "counter",
                "Events published (one per publish).",
                self.published,
            ),
            (
                "sseloop_event_deliveries_total",
                "counter",
                "Events queued to subscribers, live and replayed.",
                self.deliveries,
            ),
            (
                "sseloop_events_replayed_total",
                "counter",
                "Events replayed from history on resume.",
                self.replayed,
            ),
            (
                "sseloop_bytes_written_total",
                "counter",
                "Bytes written to client sockets.",
                self.bytes_written,
            ),
            (
                "sseloop_heartbeats_sent_total",
                "counter",
                "Heartbeat comments sent on quiet streams.",
                self.heartbeats,
            ),
            (
                "sseloop_loop_iterations_total",
                "counter",
                "Event-loop iterations.",
                self.loop_iterations,
            ),
            (
                "sseloop_midround_polls_total",
                "counter",
                "Input taken in the middle of a long round of subscriber writes (publishes are \
                 answered and delivered without waiting for the round to end).",
                self.midround_polls,
            ),
            (
                "sseloop_accept_fd_exhausted_total",
                "counter",
                "Accepts refused for lack of file descriptors (EMFILE/ENFILE).",
                self.accept_fd_exhausted,
            ),
            (
                "sseloop_accept_errors_total",
                "counter",
                "Other accept errors.",
                self.accept_errors,
            ),
            (
                "sseloop_streams_token_expired_total",
                "counter",
                "Streams ended because their JWT expired (sseloop-reauth or GOAWAY TOKEN_EXPIRED).",
                self.streams_token_expired,
            ),
            (
                "sseloop_frames_received_total",
                "counter",
                "Frames received in frame mode.",
                self.frames_received,
            ),
            (
                "sseloop_publishes_vetoed_total",
                "counter",
                "Client publishes refused by the host's publish hook.",
                self.publishes_vetoed,
            ),
            (
                "sseloop_history_events",
                "gauge",
                "Events retained in per-topic history (summed over topics).",
                g.history_events as u64,
            ),
            (
                "sseloop_history_bytes",
                "gauge",
                "Bytes held by events retained in history.",
                g.history_bytes as u64,
            ),
            (
                "sseloop_hub_transient_bytes",
                "gauge",
                "Bytes the hub holds beyond history (events still being written that no history retains, joined batches, the backlog).",
                g.hub_transient_bytes as u64,
            ),
            (
                "sseloop_topics",
                "gauge",
                "Topics with subscribers or history.",
                g.topics as u64,
            ),
            (
                "sseloop_subscriptions",
                "gauge",
                "Topic subscriptions held by open connections.",
                g.subscriptions as u64,
            ),
            (
                "sseloop_slab_connections",
                "gauge",
                "Connection slots in use.",
                g.slab_connections as u64,
            ),
            (
                "sseloop_timers_armed",
                "gauge",
                "Armed timers (deadlines and heartbeats).",
                g.timers as u64,
            ),
            (
                "sseloop_write_chunks_lent",
                "gauge",
                "Pooled write chunks held by connections.",
                g.chunks_lent as u64,
            ),
            (
                "sseloop_max_connections",
                "gauge",
                "Connection limit in force.",
                g.max_connections as u64,
            ),
        ];
        unlabelled(o, &simple);
        by_reason(
            o,
            "sseloop_auth_failures_total",
            "Requests and frames refused authorization (401, 403, UNAUTHORIZED, FORBIDDEN), by reason.",
            AuthFailure::ALL
                .iter()
                .map(|r| (r.label(), self.auth_failures_by_reason[r.index()])),
        );
        let name = "sseloop_resume_resets_total";
        family(
            o,
            name,
            "counter",
            "Resumes told in-band that events were missed, by reason.",
        );
        for reason in [
            ResetReason::Expired,
            ResetReason::Unknown,
            ResetReason::BackplaneLost,
        ] {
            let v = self.resume_resets[reason as usize];
            let _ = writeln!(o, "{name}{{reason=\"{}\"}} {v}", reason.as_str());
        }
        let name = "sseloop_closes_total";
        family(
            o,
            name,
            "counter",
            "Connections closed by the server, by cause.",
        );
        for (label, cause) in CLOSE_CAUSES {
            let _ = writeln!(
                o,
                "{name}{{cause=\"{label}\"}} {}",
                self.closes[cause as usize]
            );
        }
        let name = "sseloop_admin_requests_total";
        family(
            o,
            name,
            "counter",
            "Server API requests (/api/v1/), by operation and status.",
        );
        for (op, code, v) in &self.admin_requests {
            let _ = writeln!(o, "{name}{{op=\"{op}\",code=\"{code}\"}} {v}");
        }
        let name = "sseloop_disconnects_total";
        family(
            o,
            name,
            "counter",
            "Streams closed through the server API, by cause (admin: one connection; revoke: by subject or topic; ban: a revocation that also banned).",
        );
        for cause in DisconnectCause::ALL {
            let _ = writeln!(
                o,
                "{name}{{cause=\"{}\"}} {}",
                cause.label(),
                self.disconnects[cause as usize]
            );
        }
        let name = "sseloop_http_responses_total";
        family(o, name, "counter", "HTTP responses by status.");
        for (status, v) in COUNTED_STATUSES.iter().zip(self.responses) {
            if *status == 0 {
                let _ = writeln!(o, "{name}{{code=\"other\"}} {v}");
            } else {
                let _ = writeln!(o, "{name}{{code=\"{status}\"}} {v}");
            }
        }
        let name = "sseloop_connection_lifetime_seconds";
        family(
            o,
            name,
            "histogram",
            "Lifetime of closed connections, by the kind they ended as.",
        );
        for (k, kind) in CONN_KINDS.iter().enumerate() {
            series(
                o,
                name,
                &format!("kind=\"{kind}\","),
                &LIFETIME_BUCKETS,
                &self.lifetime_buckets[k],
                self.lifetime_count[k],
                self.lifetime_sum[k],
            );
        }
        let name = "sseloop_config_reloads_total";
        family(
            o,
            name,
            "counter",
            "Configuration reloads (SIGHUP, sseloop_reload) by result.",
        );
        for (label, v) in ["ok", "error"].iter().zip(self.reloads) {
            let _ = writeln!(o, "{name}{{result=\"{label}\"}} {v}");
        }
        out
    }
}

/// With a backplane: presence writes, and the topics whose part is still to be written (bounded
/// by the number of topics).
pub fn render_presence(o: &mut String, writes: u64, pending: usize) {
    unlabelled(
        o,
        &[
            (
                "sseloop_presence_writes_total",
                "counter",
                "Presence write calls sent to Redis (this node's part of the topics whose streams changed, or its TTL refresh).",
                writes,
            ),
            (
                "sseloop_presence_pending_topics",
                "gauge",
                "Topics whose presence part this node has yet to write to Redis.",
                pending as u64,
            ),
        ],
    );
}

/// The per-client limits' families: refusals by limit (`sseloop_limited_total{limit}`) and the
/// entries of their tables (`sseloop_limit_table_entries{table}`), always rendered (zeros when
/// the limits are off).
pub fn render_limits(o: &mut String, limits: &crate::limits::Limits) {
    let name = "sseloop_limited_total";
    family(
        o,
        name,
        "counter",
        "Requests, connections, publishes and subscriptions refused by a per-client limit.",
    );
    for kind in crate::limits::LimitKind::ALL {
        let v = limits.refused[kind as usize];
        let _ = writeln!(o, "{name}{{limit=\"{}\"}} {v}", kind.label());
    }
    let name = "sseloop_limit_table_entries";
    family(
        o,
        name,
        "gauge",
        "Entries of the per-client limits' tables (open-connection counts by address, new-connection and publish token buckets).",
    );
    let tables = ["connections", "new_connections", "publishers"];
    for (table, v) in tables.iter().zip(limits.table_entries()) {
        let _ = writeln!(o, "{name}{{table=\"{table}\"}} {v}");
    }
}

/// The standard process figures (`process_*`, as every Prometheus client library names them)
/// and `sseloop_build_info`. Without `/proc`, only the build info.
pub fn render_process(o: &mut String, p: Option<&crate::procstat::ProcessStats>) {
    family(
        o,
        "sseloop_build_info",
        "gauge",
        "Always 1; the labels name the version and the git commit of the build.",
    );
    let _ = writeln!(
        o,
        "sseloop_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        crate::config::COMMIT
    );
    let Some(p) = p else {
        return;
    };
    let rows: [(&str, &str, &str, f64); 6] = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds as f64,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ];
    unlabelled(o, &rows);
}

/// A histogram family: cumulative buckets, +Inf, sum and count.
fn histogram(
    o: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    buckets: &[u64],
    count: u64,
    sum: f64,
) {
    family(o, name, "histogram", help);
    series(o, name, "", bounds, buckets, count, sum);
}

/// One series of a histogram; `labels` (empty, or `k="v",`) precede `le`.
fn series(
    o: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    buckets: &[u64],
    count: u64,
    sum: f64,
) {
    for (bound, v) in bounds.iter().zip(buckets) {
        let _ = writeln!(o, "{name}_bucket{{{labels}le=\"{bound}\"}} {v}");
    }
    let _ = writeln!(o, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
    let plain = labels.trim_end_matches(',');
    if plain.is_empty() {
        let _ = writeln!(o, "{name}_sum {sum}");
        let _ = writeln!(o, "{name}_count {count}");
    } else {
        let _ = writeln!(o, "{name}_sum{{{plain}}} {sum}");
        let _ = writeln!(o, "{name}_count{{{plain}}} {count}");
    }
}

/// Families of one unlabelled sample each: `(name, type, help, value)`.
fn unlabelled<V: std::fmt::Display>(o: &mut String, rows: &[(&str, &str, &str, V)]) {
    for (name, kind, help, value) in rows {
        family(o, name, kind, help);
        let _ = writeln!(o, "{name} {value}");
    }
}

/// A counter family labelled by `reason`.
fn by_reason<'a>(
    o: &mut String,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (&'a str, u64)>,
) {
    family(o, name, "counter", help);
    for (label, v) in rows {
        let _ = writeln!(o, "{name}{{reason=\"{label}\"}} {v}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_help_type_and_values() {
        let mut m = Metrics {
            accepted: 3,
            ..Default::default()
        };
        m.open[ConnKind::Sse as usize] = 2;
        m.count_response(404);
        m.count_response(299);
        m.count_auth_failure(AuthFailure::Expired);
        m.observe_lifetime(ConnKind::Sse, Duration::from_millis(50));
        let text = m.render(&Gauges {
            timers: 4,
            ..Default::default()
        });
        assert!(text.contains("# TYPE sseloop_connections_accepted_total counter\nsseloop_connections_accepted_total 3\n"));
        assert!(text.contains("sseloop_connections_open{kind=\"sse\"} 2\n"));
        assert!(text.contains("sseloop_http_responses_total{code=\"404\"} 1\n"));
        assert!(text.contains("sseloop_http_responses_total{code=\"other\"} 1\n"));
        assert!(text.contains("sseloop_timers_armed 4\n"));
        let name = "sseloop_connection_lifetime_seconds";
        assert!(text.contains(&format!("{name}_bucket{{kind=\"sse\",le=\"0.01\"}} 0\n")));
        assert!(text.contains(&format!("{name}_bucket{{kind=\"sse\",le=\"0.1\"}} 1\n")));
        assert!(text.contains(&format!("{name}_count{{kind=\"sse\"}} 1\n")));
        assert!(text.contains(&format!("{name}_count{{kind=\"http\"}} 0\n")));
        assert_eq!(m.responses(404), 1);
        assert!(text.contains("sseloop_auth_failures_total{reason=\"expired\"} 1\n"));
        assert!(text.contains("sseloop_auth_failures_total{reason=\"missing\"} 0\n"));
        assert_eq!(m.auth_failures, 1);
    }
}
