//! The state every connection handler may touch besides its own connection: configuration, the
//! hub, timers, the chunk pool, metrics, the dirty list and the clock. The loop owns it and lends
//! it to handlers; it lives apart from `event_loop` so that connections depend on it, not on the
//! loop.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::Auth;
use crate::backplane::{AppendRequest, Backplane, Origin};
use crate::buf::BufPool;
use crate::config::Config;
use crate::hooks::{Hooks, PublishAttempt};
use crate::http::response::http_date;
use crate::hub::{Hub, HubError, Published};
use crate::limits::Limits;
use crate::metrics::{Gauges, Metrics};
use crate::ratelimit::LogLimit;
use crate::timer::Timers;

/// The warning that the connection limit is reached: at most one line per this period, so a
/// flood at the limit cannot flood the log.
pub const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The rate limit of that warning.
pub fn limit_warning() -> LogLimit {
    LogLimit::new(LIMIT_WARNING_EVERY, 1)
}

/// Refused authorizations are logged at most [`AUTH_REFUSALS_BURST`] per this period; the next
/// line says how many were left out (`suppressed=N`).
pub const AUTH_REFUSALS_EVERY: Duration = Duration::from_secs(1);
/// See [`AUTH_REFUSALS_EVERY`].
pub const AUTH_REFUSALS_BURST: u32 = 10;

/// How long a `Connection: close` response lingers for the peer's FIN before a forced close.
const LINGER: Duration = Duration::from_secs(2);

/// Everything connection handlers may touch besides their own connection.
pub struct LoopState {
    /// The configuration.
    pub config: Config,
    /// Topics, subscriptions, history.
    pub hub: Hub,
    /// Every deadline.
    pub timers: Timers,
    /// Write chunks.
    pub pool: BufPool,
    /// Counters.
    pub metrics: Metrics,
    /// The time of this iteration.
    pub now: Instant,
    /// `Date` header value, refreshed once a second.
    pub date: String,
    date_secs: u64,
    /// Read scratch buffer.
    pub scratch: Box<[u8]>,
    /// Connections with output (or input) to handle before sleeping.
    pub dirty: Vec<usize>,
    /// Shutdown has begun: no new streams, responses close their connection.
    pub shutting_down: bool,
    /// Occupied slab slots (for the metrics page, which handlers render).
    pub slab_len: usize,
    /// Connection limit in force.
    pub max_connections: usize,
    /// Connections accepted over the limit, lingering only to deliver their 503 (they do not
    /// count against the limit).
    pub refused: usize,
    /// Connections open on the internal `--metrics-listen` address (they do not count against
    /// the limit either; capped on their own).
    pub internal: usize,
    /// The rate-limited "connection limit reached" log line.
    pub limit_warning: crate::ratelimit::LogLimit,
    /// The rate limit of the INFO line logged for each refused authorization.
    pub auth_refusal_log: LogLimit,
    /// Host callbacks.
    pub hooks: Hooks,
    /// JWT authorization (inert unless configured).
    pub auth: Auth,
    /// When the loop was built (uptime on the stats page).
    pub started: Instant,
    /// The Redis backplane, when configured: publishes go through it.
    pub backplane: Option<Backplane>,
    /// This node's own id (its first run id: with a backplane the hub's id prefix becomes the
    /// dataset's, shared by every node).
    pub node: Box<str>,
    /// Subjects banned through the server API.
    pub bans: crate::api::Bans,
    /// With `--ui`: one sample a second of what the console charts, the last five minutes, so
    /// that a console opened mid-incident shows them (`/stats?samples=1`).
    pub samples: std::collections::VecDeque<crate::metrics::Sample>,
    /// Streams that asked for join/leave notices (`presence=1`), by topic; empty unless one did.
    pub presence_watch: std::collections::HashMap<Box<str>, Vec<usize>>,
    /// Joins and leaves for those streams, delivered by the loop after the handlers.
    pub presence_notes: Vec<PresenceNote>,
    /// Server API calls that walk the connections, served by the loop (`event_loop/admin.rs`).
    pub api_jobs: std::collections::VecDeque<ApiJob>,
    /// Server API calls waiting for Redis's answer (presence with a backplane).
    pub api_waits: Vec<ApiJob>,
    /// The per-client limits (inert unless configured).
    pub limits: Limits,
    /// The TLS configuration new connections take (`--tls-cert`); a reload replaces it, open
    /// sessions keep theirs.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    rng: u64,
}

/// How a publish went, as far as the connection that asked can tell now.
pub enum PublishStart {
    /// Answered: the event has its id (or was refused by the hub).
    Done(Result<Published, HubError>),
    /// Sent to the backplane: the answer comes as a completion, to the origin.
    Pending,
}

impl LoopState {
    /// Loop state for `config`, around `hub`.
    pub fn new(config: Config, hub: Hub, max_connections: usize) -> LoopState {
        let rng = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        let node: Box<str> = hub.run().into();
        LoopState {
            limits: Limits::new(&config),
            config,
            hub,
            timers: Timers::default(),
            pool: BufPool::default(),
            metrics: Metrics::default(),
            now: Instant::now(),
            date: http_date(SystemTime::now()),
            date_secs: 0,
            scratch: vec![0u8; 64 * 1024].into_boxed_slice(),
            dirty: Vec::new(),
            shutting_down: false,
            slab_len: 0,
            max_connections,
            refused: 0,
            internal: 0,
            limit_warning: limit_warning(),
            auth_refusal_log: LogLimit::new(AUTH_REFUSALS_EVERY, AUTH_REFUSALS_BURST),
            hooks: Hooks::default(),
            auth: Auth::default(),
            started: Instant::now(),
            backplane: None,
            node,
            bans: crate::api::Bans::default(),
            api_jobs: std::collections::VecDeque::new(),
            api_waits: Vec::new(),
            presence_watch: std::collections::HashMap::new(),
            presence_notes: Vec::new(),
            samples: std::collections::VecDeque::new(),
            tls: None,
            rng,
        }
    }

    /// Heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.config.heartbeat_ms)
    }
    /// Header (and body-stall) timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.config.header_timeout_ms)
    }
    /// Keep-alive idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.config.idle_timeout_ms)
    }
    /// Write-stall timeout.
    pub fn write_stall(&self) -> Duration {
        Duration::from_millis(self.config.write_stall_ms)
    }
    /// How often a long round of writes takes input (`--round-input-us`).
    pub fn round_input(&self) -> Duration {
        Duration::from_micros(self.config.round_input_us)
    }
    /// Shutdown grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.config.grace_ms)
    }
    /// Linger after a `Connection: close` response.
    pub fn linger(&self) -> Duration {
        LINGER.min(self.grace().max(Duration::from_millis(100)))
    }

    /// A `retry:` value spread over [retry, 2 × retry] (at least one second wide) so that clients
    /// of a stopping server reconnect at different moments. Never above 2^31 - 1, whatever the
    /// configuration holds (browsers and the GOAWAY `u32` both take that).
    pub fn jittered_retry(&mut self) -> u64 {
        const CEILING: u64 = i32::MAX as u64;
        // xorshift64: statistical quality is irrelevant here, speed and no dependency are not.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let retry = self.config.retry_ms.min(CEILING);
        let spread = retry.max(1000);
        (retry + self.rng % (spread + 1)).min(CEILING)
    }

    /// The gauges of the metrics page.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            slab_connections: self.slab_len,
            timers: self.timers.len(),
            subscriptions: self.hub.subscription_count(),
            topics: self.hub.topic_count(),
            history_events: self.hub.history_events(),
            history_bytes: self.hub.history_bytes(),
            hub_transient_bytes: self.hub.transient_bytes(),
            chunks_lent: self.pool.lent(),
            max_connections: self.max_connections,
        }
    }

    /// Runs the publish hook for a client's event.
    pub fn allow_publish(
        &mut self,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
        connection: u64,
        subject: Option<&str>,
    ) -> bool {
        let attempt = PublishAttempt {
            topics,
            event_type,
            data,
            connection,
            subject,
        };
        let allowed = self.hooks.allow_publish(&attempt);
        if !allowed {
            self.metrics.publishes_vetoed += 1;
        }
        allowed
    }

    /// Publishes one event (validated topics, type and data) for a client: through the
    /// backplane when there is one (answered later, to `origin`), else at once in the hub. A
    /// repeated `idempotency_key` gets the original answer.
    pub fn publish(
        &mut self,
        origin: impl FnOnce() -> Origin,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
        idempotency_key: Option<&str>,
    ) -> PublishStart {
        if let Err(e) = self.hub.check_size(topics, event_type, data) {
            return PublishStart::Done(Err(e));
        }
        if let Some(bp) = self.backplane.as_mut() {
            bp.append(AppendRequest {
                origin: origin(),
                topics: topics.iter().map(|t| (*t).to_string()).collect(),
                event_type: event_type.map(str::to_string),
                data: data.to_string(),
                idempotency_key: idempotency_key.map(str::to_string),
            });
            return PublishStart::Pending;
        }
        // Without a backplane the answers live with the sequencer, shared with other threads'
        // publishes (a concurrent first use of one key on two paths could still publish twice).
        if let Some(key) = idempotency_key {
            let known = self.hub.sequencer().lock().idempotency.get(key, self.now);
            if let Some((seq, id)) = known {
                return PublishStart::Done(Ok(Published { seq, id }));
            }
        }
        let result = self.hub.publish(topics, event_type, data);
        if let (Ok(p), Some(key)) = (&result, idempotency_key) {
            let mut state = self.hub.sequencer().lock();
            state.idempotency.put(key, p.seq, &p.id, self.now);
        }
        PublishStart::Done(result)
    }

    /// When a rate-limited log line's summary of what it left out is due (see
    /// `conn::report_suppressed`).
    pub fn log_summary_due(&self) -> Option<Instant> {
        match (
            self.limit_warning.summary_due(),
            self.auth_refusal_log.summary_due(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Publishing works: not shutting down, and the backplane (if any) is up.
    pub fn ready(&self) -> bool {
        !self.shutting_down && self.backplane.as_ref().is_none_or(Backplane::up)
    }

    /// The Prometheus text.
    pub fn render_metrics(&self) -> String {
        let mut text = self.metrics.render(&self.gauges());
        if let Some(bp) = &self.backplane {
            self.metrics
                .render_backplane(&mut text, bp.up(), &bp.stats, bp.master());
            let pending = self.hub.presence_changes() + bp.presence_pending();
            crate::metrics::render_presence(&mut text, bp.presence.writes, pending);
        }
        crate::metrics::render_limits(&mut text, &self.limits);
        if self.tls.is_some() {
            self.metrics.render_tls(&mut text);
        }
        crate::metrics::render_process(&mut text, crate::procstat::ProcessStats::read().as_ref());
        text
    }

    pub(crate) fn refresh_clock(&mut self) {
        self.now = Instant::now();
        let wall = SystemTime::now();
        let secs = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.date_secs {
            self.date_secs = secs;
            self.date = http_date(wall);
            self.hub.set_clock(secs);
            if self.config.ui {
                if self.samples.len() >= crate::metrics::SAMPLES_KEPT {
                    self.samples.pop_front();
                }
                let uptime = self.now.saturating_duration_since(self.started);
                self.samples
                    .push_back(crate::metrics::sample(uptime, &self.metrics));
            }
        }
    }
}

/// A stream with a subject opened on, or left, a watched topic.
pub struct PresenceNote {
    pub topic: Box<str>,
    pub sub: String,
    /// The stream's connection id.
    pub conn: u64,
    pub join: bool,
}

/// A server API call waiting for the loop, which alone sees every connection.
pub struct ApiJob {
    /// The asking connection: slab key and id (a reused slot is not answered).
    pub key: usize,
    pub conn: u64,
    /// Its number among the connection's waiting answers.
    pub n: u64,
    pub keep_alive: bool,
    pub call: crate::api::ApiCall,
    /// The next slab key to visit (a walk takes a bounded slice per iteration).
    pub next_key: usize,
    /// Connections closed so far (revocations).
    pub closed: u64,
    /// Distinct subjects seen so far (presence), and whether the caller may see them.
    pub subjects: std::collections::BTreeSet<String>,
    pub show_subjects: bool,
    /// Presence or history with a backplane: the query sent to Redis and when its answer is
    /// due.
    pub asked: Option<(u64, Instant)>,
    /// History with a backplane: Redis was asked for the events in `(.0, .1]`; the node's cache
    /// holds those after `.1`.
    pub range: (u64, u64),
    /// Only Redis's answer is missing (the loop sets the call aside until it comes).
    pub waiting: bool,
}

impl ApiJob {
    /// A call answered to no connection (the C API's `sseloop_api`, another node's revocation):
    /// its walk starts where its page's cursor says.
    pub fn for_host(call: crate::api::ApiCall, show_subjects: bool) -> ApiJob {
        let next_key = match &call {
            crate::api::ApiCall::Connections { page, .. } => {
                usize::try_from(page.cursor).unwrap_or(usize::MAX)
            }
            _ => 0,
        };
        ApiJob {
            key: usize::MAX,
            conn: u64::MAX,
            n: 0,
            keep_alive: false,
            call,
            next_key,
            closed: 0,
            subjects: Default::default(),
            show_subjects,
            asked: None,
            range: (0, 0),
            waiting: false,
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use crate::config::Config;
    use crate::hub::Hub;

    #[test]
    fn jittered_retry_never_overflows_and_stays_under_2_pow_31() {
        for retry_ms in [
            0,
            1,
            3_000,
            86_400_000,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let config = Config {
                retry_ms,
                ..Config::default()
            };
            let mut sh = LoopState::new(config, Hub::new("t", 0), 1);
            for _ in 0..1000 {
                let r = sh.jittered_retry();
                assert!(r <= i32::MAX as u64, "{retry_ms}: {r}");
                assert!(r >= retry_ms.min(i32::MAX as u64), "{retry_ms}: {r}");
            }
        }
    }
}
