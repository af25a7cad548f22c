//! The loop: one `mio::Poll`, the listener, the waker, signals, and the slab of connections.
//!
//! It dispatches and never parses or encodes. One iteration:
//! 1. poll, with the timeout of the earliest timer (zero when work is left over);
//! 2. dispatch readiness: accept, wake-ups (cross-thread publishes, stop), signals, connections;
//!    after each connection handler, fan out what it published;
//! 3. accept (bounded batch), fire due timers, record events other threads queued;
//! 4. flush every dirty connection once (one `sendmsg` each, within a budget);
//! 5. check shutdown progress.
//!
//! Removal is the loop's: every path that ends a connection goes through [`Server::close`].
//!
//! Files: this one holds the `Server`, its construction, one iteration and its dispatch, the
//! fan-out mark and `close`; `accept.rs` accepting; `round.rs` the round of writes and its
//! mid-round input; `pump.rs` the backplane's turn; `shutdown.rs` signals and shutdown;
//! `admin.rs` the server API calls that walk the connections;
//! `service.rs` what the loop does for a service manager (readiness, watchdog, reload) and
//! `reload.rs` which settings a reload changes.

mod accept;
mod admin;
mod presence;
mod pump;
pub mod reload;
mod round;
mod service;
mod shutdown;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use self::accept::{bind_listener, default_max_connections};
use self::shutdown::Shutdown;
use crate::backplane::{self, Backplane, BackplaneConfig};
use crate::config::{Config, ConfigError};
use crate::conn::{io as sockio, Closing, Connection, Flow};
use crate::handle::{PublishHandle, Sequencer};
use crate::hooks::{ConnectionEvent, PublishAttempt, Verdict};
use crate::hub::{ChannelId, Hub, HubLimits};
pub use crate::loop_state::LoopState;
use crate::metrics::{Gauges, Metrics};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// The internal `--metrics-listen` listener (`backplane` holds `MAX - 4` and `MAX - 5`).
const METRICS_LISTENER: Token = Token(usize::MAX - 6);

/// Readiness events handled per poll.
const EVENTS_CAPACITY: usize = 1024;
/// Readiness events taken per mid-round poll (the rest wait for the next).
const MIDROUND_EVENTS: usize = 256;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is refused.
    Config(ConfigError),
    /// Binding or setting up the loop failed.
    Io(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => e.fmt(f),
            StartError::Io(e) => write!(f, "cannot start: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// Whether the loop goes on after an iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Still serving.
    Running,
    /// Shut down: every connection is closed and the listener is gone.
    Stopped,
}

/// The server: a bound listener and the loop state. Build with [`Server::bind`], then call
/// [`Server::run`] (or [`Server::poll_once`] repeatedly).
pub struct Server {
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// The internal `--metrics-listen` listener, and its address.
    metrics_listener: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
    /// The internal listener has connections waiting.
    internal_pending: bool,
    conns: Slab<Connection>,
    sh: LoopState,
    seq: Arc<Sequencer>,
    waker: Arc<Waker>,
    signals: Option<Signals>,
    accept_pending: bool,
    accept_paused_until: Option<Instant>,
    last_fd_warning: Option<Instant>,
    shutdown: Option<Shutdown>,
    stopped: bool,
    /// Channels with new events this iteration (reused buffer).
    touched: Vec<ChannelId>,
    /// No waiting for the backplane's answers before a fan-out until then (see `pump.rs`).
    append_wait_off_until: Option<Instant>,
    /// Readiness taken in the middle of a round of writes (see [`Self::take_input_midround`]).
    midround_events: Events,
    /// Connections marked for writing by mid-round input (reused buffer).
    midround_dirty: Vec<usize>,
    /// The service manager, when the binary runs under one (readiness, watchdog).
    notifier: crate::systemd::Notifier,
    /// When the next `WATCHDOG=1` is due.
    watchdog_due: Option<Instant>,
    /// Reads the configuration again on SIGHUP (the binary's file, environment and flags).
    reloader: Option<service::Reloader>,
}

impl Server {
    /// Validates the configuration, binds the listener and prepares the loop.
    pub fn bind(config: Config) -> Result<Server, StartError> {
        Self::bind_with(config, None)
    }

    /// Like [`Server::bind`], serving `inherited` (a listening socket handed over by a service
    /// manager, see `systemd::take_listen_fds`) instead of binding `--listen`.
    pub fn bind_with(
        mut config: Config,
        inherited: Option<std::net::TcpListener>,
    ) -> Result<Server, StartError> {
        if let Some(l) = &inherited {
            // The address checks (open publishing on a public address) apply to the real one.
            config.listen = l.local_addr()?;
        }
        let auth = Self::checked_auth(&config)?;
        let tls = Self::checked_tls(&config)?;
        let backplane_tls = Self::checked_backplane_tls(&config)?;
        let poll = Poll::new()?;
        let activated = inherited.is_some();
        let mut listener = match inherited {
            Some(l) => TcpListener::from_std(l),
            None => bind_listener(config.listen, config.reuse_port)?,
        };
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind_listener(addr, false)?),
            None => None,
        };
        let metrics_addr = match metrics_listener.as_mut() {
            Some(l) => {
                poll.registry()
                    .register(l, METRICS_LISTENER, Interest::READABLE)?;
                Some(l.local_addr()?)
            }
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let run = crate::ids::run_id();
        let seq = Arc::new(Sequencer::new(
            &run,
            config.max_body,
            config.publish_queue_bytes,
        ));
        seq.set_max_event_bytes(config.max_queue_bytes);
        let hub = Hub::with_sequencer(
            Arc::clone(&seq),
            HubLimits {
                history: config.history,
                history_bytes: config.history_bytes,
                max_topics: config.max_topics,
                max_event_bytes: config.max_queue_bytes,
            },
        );
        let max_connections = config
            .max_connections
            .unwrap_or_else(default_max_connections);
        let addrs = service::Addresses {
            local: local_addr,
            metrics: metrics_addr,
            activated,
        };
        service::log_start(&config, &addrs, &run, max_connections);
        log::debug!("{config:?}");
        let backplane = match &config.backplane {
            None => None,
            Some(url) => {
                let bp = Backplane::new(BackplaneConfig {
                    url: url.clone(),
                    prefix: config.backplane_prefix.clone(),
                    timeout: Duration::from_millis(config.backplane_timeout_ms),
                    retention: config.backplane_retention,
                    idempotency_secs: config.idempotency_window_secs,
                    history: config.history,
                    max_inflight_bytes: config.publish_queue_bytes,
                    warm_events: config.backplane_retention.min(1 << 20) as usize,
                    warm_bytes: config.history_bytes,
                    tls: backplane_tls.clone(),
                    sentinel_password: config.backplane_sentinel_password.clone(),
                    min_replicas: config.backplane_min_replicas as u32,
                    presence_ttl: Duration::from_secs(config.backplane_presence_ttl_secs),
                })
                .map_err(|e| StartError::Io(io::Error::other(e)))?;
                seq.use_backplane(bp.timeout());
                log::info!(
                    "backplane {} (prefix {:?}, append timeout {} ms, retention {} events)",
                    bp.describe(),
                    config.backplane_prefix,
                    config.backplane_timeout_ms,
                    config.backplane_retention
                );
                Some(bp)
            }
        };
        seq.set_idempotency_window(Duration::from_secs(config.idempotency_window_secs));
        let mut sh = LoopState::new(config, hub, max_connections);
        sh.auth = auth;
        sh.backplane = backplane;
        if let Some(bp) = sh.backplane.as_mut() {
            bp.presence_start(&sh.node);
            sh.hub.track_presence();
        }
        sh.tls = tls;
        Ok(Server {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            midround_events: Events::with_capacity(MIDROUND_EVENTS),
            midround_dirty: Vec::new(),
            listener: Some(listener),
            local_addr,
            metrics_listener,
            metrics_addr,
            internal_pending: false,
            conns: Slab::new(),
            sh,
            seq,
            waker,
            signals: None,
            accept_pending: false,
            accept_paused_until: None,
            last_fd_warning: None,
            shutdown: None,
            stopped: false,
            touched: Vec::new(),
            append_wait_off_until: None,
            notifier: crate::systemd::Notifier::default(),
            watchdog_due: None,
            reloader: None,
        })
    }

    /// Handles SIGTERM and SIGINT inside the loop: the first starts a graceful shutdown, a second
    /// SIGINT forces an immediate stop; SIGHUP reloads the configuration (see
    /// [`Server::set_reloader`]) and never ends the process. (The binary calls this; an embedding
    /// host may not want it.)
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Installs the publish hook: called on the loop thread for every event a client publishes
    /// (HTTP or frames) before it gets an id; `Verdict::Deny` refuses it.
    pub fn set_publish_hook(&mut self, hook: impl FnMut(&PublishAttempt<'_>) -> Verdict + 'static) {
        self.sh.hooks.publish = Some(Box::new(hook));
    }

    /// Installs the connection hook: called on the loop thread when a connection opens and when it
    /// has closed.
    pub fn set_connection_hook(&mut self, hook: impl FnMut(ConnectionEvent) + 'static) {
        self.sh.hooks.connection = Some(Box::new(hook));
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The internal `--metrics-listen` address, when there is one (useful with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// A handle to publish and stop from other threads.
    pub fn handle(&self) -> PublishHandle {
        PublishHandle::new(Arc::clone(&self.seq), Arc::clone(&self.waker))
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.sh.metrics
    }

    /// The gauges (slab, timers, subscriptions, history...).
    pub fn gauges(&self) -> Gauges {
        self.sh.gauges()
    }

    /// The epoll descriptor, for hosts that nest the loop in their own poller: when it is
    /// readable, call [`Server::poll_once`] with a zero timeout.
    pub fn raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// How long the loop may sleep before it has work (timers, left-over writes, accepts).
    pub fn next_timeout(&self) -> Option<Duration> {
        if !self.sh.dirty.is_empty()
            || self.stopped
            || self.sh.hub.backlog_len() > 0
            || !self.sh.api_jobs.is_empty()
            || !self.sh.presence_notes.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut wait = self.sh.timers.next_timeout(now);
        let mut consider = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
        if let Some(bp) = &self.sh.backplane {
            if bp.has_work() {
                return Some(Duration::ZERO);
            }
            if let Some(at) = bp.next_deadline() {
                consider(at.saturating_duration_since(now));
            }
            if let Some(at) = bp.presence_due(self.sh.hub.presence_changes() > 0, now) {
                consider(at.saturating_duration_since(now));
            }
        }
        if (self.accept_pending && self.accepting()) || self.internal_pending {
            consider(match self.accept_paused_until {
                Some(until) => until.saturating_duration_since(now),
                None => Duration::ZERO,
            });
        }
        if let Some(shutdown) = &self.shutdown {
            consider(shutdown.deadline.saturating_duration_since(now));
        }
        if let Some(due) = self.watchdog_due {
            consider(due.saturating_duration_since(now));
        }
        if let Some(due) = self.sh.log_summary_due() {
            consider(due.saturating_duration_since(now));
        }
        wait
    }

    /// Runs until shut down (signal, [`PublishHandle::stop`]).
    pub fn run(&mut self) -> io::Result<()> {
        self.notifier
            .ready(&format!("listening on {}", self.local_addr));
        while self.poll_once(None)? == Status::Running {}
        Ok(())
    }

    /// One iteration, sleeping at most `max_wait` (or until the next timer when `None`).
    pub fn poll_once(&mut self, max_wait: Option<Duration>) -> io::Result<Status> {
        if self.stopped {
            return Ok(Status::Stopped);
        }
        let timeout = match (self.next_timeout(), max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        if self.sh.backplane.is_some() {
            // Only a backplane makes a handle wait for the loop (and refuse on its thread).
            self.seq.note_loop_thread();
        }
        let polled = self.poll.poll(&mut events, timeout);
        self.sh.refresh_clock();
        self.sh.metrics.loop_iterations += 1;
        let result = match polled {
            Ok(()) => {
                self.dispatch(&events);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        };
        self.events = events;
        result?;
        self.after_dispatch();
        self.feed_watchdog();
        Ok(if self.stopped {
            Status::Stopped
        } else {
            Status::Running
        })
    }

    fn dispatch(&mut self, events: &Events) {
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept_pending = true,
                METRICS_LISTENER => self.internal_pending = true,
                WAKER => {
                    if self.seq.stop_requested() {
                        self.begin_shutdown("stop requested");
                    }
                }
                SIGNALS => self.on_signals(),
                token if backplane::owns(token) => {
                    if let Some(bp) = self.sh.backplane.as_mut() {
                        bp.on_token(
                            token,
                            self.poll.registry(),
                            self.sh.now,
                            &mut self.sh.scratch,
                        );
                    }
                }
                Token(key) => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    let readable =
                        event.is_readable() || event.is_read_closed() || event.is_error();
                    let writable = event.is_writable() || event.is_write_closed();
                    let flow = conn.on_ready(key, readable, writable, &mut self.sh);
                    self.settle(key, flow);
                }
            }
        }
    }

    fn after_dispatch(&mut self) {
        self.accept_batch();
        self.fire_timers();
        if self
            .sh
            .log_summary_due()
            .is_some_and(|due| due <= self.sh.now)
        {
            crate::conn::report_suppressed(&mut self.sh);
        }
        // With a backplane, the publishes just read go to Redis before this iteration's writes
        // to subscribers: Redis sequences them while the loop writes, instead of after.
        self.take_publishes();
        if self.await_appends() {
            self.pump_backplane();
            let slice = self.backlog_slice();
            self.sh.hub.record_backlog(slice);
        }
        self.fan_out(false);
        if !self.sh.api_jobs.is_empty() || !self.sh.api_waits.is_empty() {
            self.serve_api_jobs();
        }
        self.presence_turn();
        if !self.sh.presence_notes.is_empty() {
            self.deliver_presence();
        }
        self.flush_dirty();
        self.sh.hub.end_round();
        if let Some(bp) = self.sh.backplane.as_mut() {
            // Flushing connections read pipelined requests: their appends go out now, not at
            // the next wake-up.
            bp.flush_output(self.poll.registry(), self.sh.now);
        }
        self.check_shutdown();
    }

    /// A backlog goes out in slices small enough for a healthy reader to take in one round.
    fn backlog_slice(&self) -> usize {
        (self.sh.config.max_queue_bytes / 2).max(64 * 1024)
    }

    /// Applies a handler's verdict.
    fn settle(&mut self, key: usize, flow: Flow) {
        if let Flow::Close(closing) = flow {
            self.close(key, closing);
        }
    }

    /// Marks for writing every reader of a channel that got events since the last fan-out. The
    /// events themselves stay in the channel logs: each reader's flush sends what is past its
    /// cursor, so this costs one mark per reader per iteration, however many events arrived.
    fn fan_out(&mut self, midround: bool) {
        let recorded = self.sh.hub.take_recorded();
        self.sh.metrics.published += recorded;
        let mut touched = std::mem::take(&mut self.touched);
        if midround {
            self.sh.hub.take_touched_midround(&mut touched);
        } else {
            self.sh.hub.take_touched(&mut touched);
        }
        for &channel in &touched {
            for key in self.sh.hub.readers(channel) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.mark_dirty_in(key, &mut self.sh.dirty);
                }
            }
        }
        touched.clear();
        self.touched = touched;
    }

    fn fire_timers(&mut self) {
        while let Some((timer, key, kind)) = self.sh.timers.pop_due(self.sh.now) {
            let Some(conn) = self.conns.get_mut(key) else {
                debug_assert!(false, "timer for a missing connection {key}");
                continue;
            };
            let flow = conn.on_timer(key, timer, kind, &mut self.sh);
            self.settle(key, flow);
        }
    }

    /// Releases a connection: timers, subscriptions, buffers, registration, descriptor, slot.
    pub(crate) fn close(&mut self, key: usize, closing: Closing) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        conn.access_closed(closing, &self.sh);
        conn.release(key, &mut self.sh);
        if let Closing::Forced { cause, linger0 } = closing {
            self.sh.metrics.closes[cause as usize] += 1;
            if linger0 {
                sockio::set_linger_zero(&conn.sock);
            }
        }
        let _ = self.poll.registry().deregister(&mut conn.sock);
        self.sh.slab_len = self.conns.len();
        self.sh
            .hooks
            .connection(ConnectionEvent::Closed { id: conn.id() });
        log::trace!("conn {key} closed: {closing:?}");
    }
}
