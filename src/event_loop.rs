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

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::auth::Auth;
use crate::backplane::{self, Backplane, BackplaneConfig, Completion, Notice, Origin};
use crate::buf::chunk_size_for_mss;
use crate::config::{Config, ConfigError};
use crate::conn::{io as sockio, Closing, Connection, Flow};
use crate::handle::{PublishHandle, Sequencer};
use crate::hooks::{ConnectionEvent, PublishAttempt, Verdict};
use crate::hub::{ChannelId, Hub, HubLimits};
pub use crate::loop_state::LoopState;
use crate::metrics::{ConnKind, Gauges, Metrics};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Connections accepted per iteration at most, so a connect storm cannot stall delivery.
const ACCEPT_BATCH: usize = 256;
/// Pause before accepting again after EMFILE/ENFILE (the listener's backlog keeps the clients).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Descriptors kept back from `RLIMIT_NOFILE` for the listener, epoll, waker, signals, logs, and
/// the connections being refused with 503.
const FD_RESERVE: usize = 64;
/// Readiness events handled per poll.
const EVENTS_CAPACITY: usize = 1024;
/// With a backplane, a fan-out to at least this many readers first waits (at most
/// [`APPEND_WAIT`]) for Redis to answer the appends already sent, so that their events go out in
/// this round rather than one whole round later. Below it a round is short and waiting buys
/// nothing.
const APPEND_WAIT_READERS: usize = 1024;
/// Longest such wait: a local Redis answers in ~0.1 ms, a batch of 64 events in ~1 ms.
const APPEND_WAIT: Duration = Duration::from_millis(2);
/// After a wait that came back empty (Redis slow or gone), no waiting for this long.
const APPEND_WAIT_BACKOFF: Duration = Duration::from_millis(500);
/// A round of subscriber writes takes new input when `--round-input-us` (default 250 µs: every
/// ~40 writes on this machine) has passed since it started or last took input; the clock is read
/// every this many writes to decide that (every write when the option is 0). A publish arriving
/// mid-round then waits that long, not the rest of the round; an empty poll costs ~1 µs.
const MIDROUND_CHECK: usize = 8;
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

struct Shutdown {
    deadline: Instant,
    interrupts: u32,
}

/// The server: a bound listener and the loop state. Build with [`Server::bind`], then call
/// [`Server::run`] (or [`Server::poll_once`] repeatedly).
pub struct Server {
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
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
    /// No waiting for the backplane's answers before a fan-out until then (see [`APPEND_WAIT`]).
    append_wait_off_until: Option<Instant>,
    /// Readiness taken in the middle of a round of writes (see [`Self::take_input_midround`]).
    midround_events: Events,
    /// Connections marked for writing by mid-round input (reused buffer).
    midround_dirty: Vec<usize>,
}

impl Server {
    /// Validates the configuration, binds the listener and prepares the loop.
    pub fn bind(config: Config) -> Result<Server, StartError> {
        config.validate().map_err(StartError::Config)?;
        let auth = Auth::from_config(&config)
            .map_err(|e| StartError::Config(ConfigError::JwtKey(e.to_string())))?;
        let poll = Poll::new()?;
        let mut listener = bind_listener(config.listen, config.reuse_port)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let run = run_id();
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
        log::info!(
            "listening on {local_addr}, run id {run}, max connections {max_connections}, \
             history {} per topic, heartbeat {} ms",
            config.history,
            config.heartbeat_ms
        );
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
        Ok(Server {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            midround_events: Events::with_capacity(MIDROUND_EVENTS),
            midround_dirty: Vec::new(),
            listener: Some(listener),
            local_addr,
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
        })
    }

    /// Handles SIGTERM and SIGINT inside the loop: the first starts a graceful shutdown, a second
    /// SIGINT forces an immediate stop. (The binary calls this; an embedding host may not want it.)
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
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
        if !self.sh.dirty.is_empty() || self.stopped || self.sh.hub.backlog_len() > 0 {
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
        }
        if self.accept_pending && self.accepting() {
            consider(match self.accept_paused_until {
                Some(until) => until.saturating_duration_since(now),
                None => Duration::ZERO,
            });
        }
        if let Some(shutdown) = &self.shutdown {
            consider(shutdown.deadline.saturating_duration_since(now));
        }
        wait
    }

    /// Runs until shut down (signal, [`PublishHandle::stop`]).
    pub fn run(&mut self) -> io::Result<()> {
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
                WAKER => {
                    if self.seq.stop_requested() {
                        self.begin_shutdown("stop requested");
                    }
                }
                SIGNALS => self.on_signals(),
                token @ (backplane::WRITER | backplane::READER) => {
                    if let Some(bp) = self.sh.backplane.as_mut() {
                        bp.on_ready(
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
        // With a backplane, the publishes just read go to Redis before this iteration's writes
        // to subscribers: Redis sequences them while the loop writes, instead of after.
        self.take_publishes();
        if self.await_appends() {
            self.pump_backplane();
            let slice = self.backlog_slice();
            self.sh.hub.record_backlog(slice);
        }
        self.fan_out(false);
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

    /// Before a large fan-out, waits briefly for Redis to answer the appends sent so far. True
    /// when answers came (the caller pumps the backplane again to record their events).
    ///
    /// Under a trickle of publishes to many subscribers, a round of writes takes tens of
    /// milliseconds; without the wait, the events this iteration sent to Redis would come back
    /// just after the round started and wait for the whole next one, so each event would live
    /// one round longer than without a backplane and each write would carry fewer events.
    fn await_appends(&mut self) -> bool {
        let Some(bp) = self.sh.backplane.as_mut() else {
            return false;
        };
        if !bp.appends_unanswered()
            || self.append_wait_off_until.is_some_and(|t| self.sh.now < t)
            || self.sh.hub.touched_readers() < APPEND_WAIT_READERS
        {
            return false;
        }
        let answered = bp.await_writer(self.poll.registry(), APPEND_WAIT, &mut self.sh.scratch);
        if !answered {
            self.append_wait_off_until = Some(self.sh.now + APPEND_WAIT_BACKOFF);
        }
        answered
    }

    /// The backplane's turn: other threads' publishes become appends; links reconnect and read;
    /// events read are queued for recording (notices in their place); answers go to the
    /// publishers.
    fn pump_backplane(&mut self) {
        let Some(bp) = self.sh.backplane.as_mut() else {
            return;
        };
        for q in self.seq.take_queued() {
            let Some(reply) = q.reply else { continue };
            let request = backplane::AppendRequest {
                origin: Origin::Handle(reply),
                topics: q.topics,
                event_type: q.event_type,
                data: q.data,
                idempotency_key: q.idempotency_key,
            };
            bp.append(request);
        }
        let unrecorded = self.sh.hub.backlog_len();
        let floor = self.sh.hub.last_seq();
        bp.tick(self.poll.registry(), self.sh.now, unrecorded, floor);
        let events = std::mem::take(&mut bp.events);
        let notices = std::mem::take(&mut bp.notices);
        let completions = std::mem::take(&mut bp.completions);
        let mut notices = notices.into_iter().peekable();
        let wall_ms = if events.is_empty() {
            0
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        for (i, ev) in events.into_iter().enumerate() {
            while let Some((_, notice)) = notices.next_if(|(at, _)| *at <= i) {
                self.on_backplane_notice(notice, ev.seq);
            }
            if ev.appended_ms > 0 {
                let lag = wall_ms.saturating_sub(ev.appended_ms) as f64 / 1000.0;
                self.sh.metrics.observe_read_lag(lag);
            }
            self.sh
                .hub
                .record_remote(ev.seq, ev.topics, ev.event_type, ev.data);
        }
        for (_, notice) in notices {
            let next = self.sh.hub.last_seq() + 1;
            self.on_backplane_notice(notice, next);
        }
        for c in completions {
            self.complete(c);
        }
        let backfills = self
            .sh
            .backplane
            .as_mut()
            .map(|bp| std::mem::take(&mut bp.backfills))
            .unwrap_or_default();
        for b in backfills {
            if let Some(cn) = self.conns.get_mut(b.key).filter(|cn| cn.id() == b.conn) {
                cn.backfill_done(b.key, b.events, &mut self.sh);
            }
        }
    }

    /// A notice from the backplane, placed before the event with seq `next`.
    fn on_backplane_notice(&mut self, notice: Notice, next: u64) {
        match notice {
            Notice::Epoch { epoch, lost: false } => self.sh.hub.set_epoch(&epoch),
            Notice::Epoch { epoch, lost: true } => {
                // Everything of the old dataset goes out first; then each stream hears that
                // the ids before this point name nothing, and history forgets them.
                self.sh.hub.record_backlog(usize::MAX);
                self.fan_out(false);
                self.sh.hub.forget_history();
                self.sh.hub.set_epoch(&epoch);
                let reset_id = self.sh.hub.id_for(0);
                self.reset_streams(crate::metrics::ResetReason::BackplaneLost, &reset_id);
            }
            Notice::Gap => {
                self.sh.hub.record_backlog(usize::MAX);
                self.fan_out(false);
                let reset_id = self.sh.hub.id_for(next.saturating_sub(1));
                self.reset_streams(crate::metrics::ResetReason::Expired, &reset_id);
            }
        }
    }

    fn reset_streams(&mut self, reason: crate::metrics::ResetReason, reset_id: &str) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.backplane_reset(key, reason, reset_id, &mut self.sh);
            }
        }
    }

    /// Delivers the backplane's answer to a publish.
    fn complete(&mut self, c: Completion) {
        match c.origin {
            Origin::Handle(slot) => slot.set(c.outcome.map(|(id, _)| id)),
            Origin::Http { key, conn, n } => {
                if let Some(cn) = self.conns.get_mut(key).filter(|cn| cn.id() == conn) {
                    cn.http_publish_done(key, n, c.outcome, &mut self.sh);
                }
            }
            Origin::Frame {
                key,
                conn,
                correlation,
            } => {
                if let Some(cn) = self.conns.get_mut(key).filter(|cn| cn.id() == conn) {
                    cn.frame_publish_done(key, &correlation, c.outcome, &mut self.sh);
                }
            }
        }
    }

    /// New connections are taken once the backplane has filled the history cache (or given up
    /// waiting for Redis), so that a resume is not served from an empty cache.
    fn accepting(&self) -> bool {
        self.sh.backplane.as_ref().is_none_or(Backplane::started)
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

    fn accept_batch(&mut self) {
        if !self.accept_pending || !self.accepting() {
            return;
        }
        if let Some(until) = self.accept_paused_until {
            if self.sh.now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = self.listener.as_ref() else {
                self.accept_pending = false;
                return;
            };
            match listener.accept() {
                Ok((sock, peer)) => self.admit(sock, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    let fd_exhausted =
                        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if fd_exhausted {
                        self.sh.metrics.accept_fd_exhausted += 1;
                    } else {
                        self.sh.metrics.accept_errors += 1;
                    }
                    if self
                        .last_fd_warning
                        .is_none_or(|t| self.sh.now.duration_since(t) >= Duration::from_secs(1))
                    {
                        log::warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                        self.last_fd_warning = Some(self.sh.now);
                    }
                    // Leave the clients in the backlog and retry shortly; never spin.
                    self.accept_paused_until = Some(self.sh.now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        // Batch used up: more may be waiting, and no new edge will say so.
    }

    fn admit(&mut self, sock: TcpStream, peer: SocketAddr) {
        self.sh.metrics.accepted += 1;
        let id = self.sh.metrics.accepted;
        if let Err(e) = sockio::set_nodelay(&sock) {
            log::debug!("TCP_NODELAY failed: {e}");
        }
        let chunk = chunk_size_for_mss(sockio::mss(&sock));
        let over_capacity = self.conns.len() - self.sh.refused >= self.sh.max_connections;
        let key = self
            .conns
            .insert(Connection::new(sock, id, self.sh.now, chunk));
        self.sh.slab_len = self.conns.len();
        let conn = &mut self.conns[key];
        if let Err(e) = register(self.poll.registry(), conn, key) {
            log::warn!("cannot register connection: {e}");
            self.conns.remove(key);
            self.sh.slab_len = self.conns.len();
            return;
        }
        self.sh.metrics.open[ConnKind::Http as usize] += 1;
        self.sh.hooks.connection(ConnectionEvent::Opened {
            id,
            peer: Some(peer),
        });
        let flow = conn.start(key, over_capacity, &mut self.sh);
        if let Flow::Close(closing) = flow {
            self.close(key, closing);
        }
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

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.sh.dirty);
        // A long round of writes stops now and then to take new input: a publish arriving
        // during it is answered and reaches the readers the round has not written yet (with a
        // backplane, it goes to Redis at once and is sequenced while the round goes on), instead
        // of waiting for the whole round. Under a trickle the publishers are held back by their
        // slowest readers; they get going again sooner, so each round carries more events. The
        // events recorded mid-round extend the channel's joined batch, so a reader the round has
        // not reached yet still writes everything it has not taken as one slice.
        let every = self.sh.round_input();
        let check = if every.is_zero() { 1 } else { MIDROUND_CHECK };
        let mut last_input = self.sh.now;
        for (i, key) in dirty.drain(..).enumerate() {
            if let Some(conn) = self.conns.get_mut(key) {
                let flow = conn.flush(key, &mut self.sh);
                self.settle(key, flow);
            }
            if i % check == check - 1 {
                let now = Instant::now();
                if now.saturating_duration_since(last_input) >= every {
                    self.take_input_midround();
                    last_input = now;
                }
            }
        }
        // Keep the allocation; connections that still have work pushed themselves again.
        if self.sh.dirty.is_empty() {
            self.sh.dirty = dirty;
        }
    }

    /// Mid-round input (see [`Self::flush_dirty`]): what is ready now is read and dispatched;
    /// publishes are taken (with a backplane: sent to Redis, and the events Redis sent are
    /// recorded); publishers get their answers at once; readers still waiting in this round take
    /// the new events in it, the others in the next (as readers of any new event do).
    fn take_input_midround(&mut self) {
        let answers_from = self.sh.dirty.len();
        let mut events = std::mem::replace(&mut self.midround_events, Events::with_capacity(0));
        if self.poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            self.sh.refresh_clock();
            self.dispatch(&events);
        }
        self.midround_events = events;
        self.sh.metrics.midround_polls += 1;
        self.take_publishes();
        self.flush_answers(answers_from);
        self.fan_out(true);
    }

    /// Publishes become events: other threads' are taken, and with a backplane the appends
    /// staged so far go to Redis and the events it sent are recorded; the backlog is recorded.
    fn take_publishes(&mut self) {
        if self.sh.backplane.is_some() {
            self.pump_backplane();
            if let Some(bp) = self.sh.backplane.as_mut() {
                bp.flush_output(self.poll.registry(), self.sh.now);
            }
        } else {
            self.sh.hub.drain_queued();
        }
        let slice = self.backlog_slice();
        self.sh.hub.record_backlog(slice);
    }

    /// Writes now what connections that read no channel queued since `dirty[from]`: publish
    /// answers and other responses do not wait for the rest of a round of subscriber writes.
    fn flush_answers(&mut self, from: usize) {
        if self.sh.dirty.len() <= from {
            return;
        }
        let mut marked = std::mem::take(&mut self.midround_dirty);
        marked.extend(self.sh.dirty.drain(from..));
        for key in marked.drain(..) {
            match self.conns.get_mut(key) {
                Some(conn) if !conn.reads_channels() => {
                    let flow = conn.flush(key, &mut self.sh);
                    self.settle(key, flow);
                }
                Some(_) => self.sh.dirty.push(key),
                None => {}
            }
        }
        self.midround_dirty = marked;
    }

    /// Releases a connection: timers, subscriptions, buffers, registration, descriptor, slot.
    pub(crate) fn close(&mut self, key: usize, closing: Closing) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        conn.release(&mut self.sh);
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

    fn on_signals(&mut self) {
        let mut received = Vec::new();
        if let Some(signals) = self.signals.as_mut() {
            received.extend(signals.pending());
        }
        for signal in received {
            match signal {
                SIGINT if self.shutdown.as_ref().is_some_and(|s| s.interrupts > 0) => {
                    log::warn!("second SIGINT: closing everything now");
                    self.force_stop();
                }
                SIGINT => {
                    self.begin_shutdown("SIGINT");
                    if let Some(s) = self.shutdown.as_mut() {
                        s.interrupts += 1;
                    }
                }
                _ => self.begin_shutdown("SIGTERM"),
            }
        }
    }

    /// Stops accepting and winds every connection down; the loop stops once all are closed or
    /// the grace period has passed.
    pub fn begin_shutdown(&mut self, why: &str) {
        if self.shutdown.is_some() {
            return;
        }
        log::info!(
            "{why}: shutting down; {} connections get up to {} ms",
            self.conns.len(),
            self.sh.config.grace_ms
        );
        self.shutdown = Some(Shutdown {
            deadline: self.sh.now + self.sh.grace(),
            interrupts: 0,
        });
        self.sh.shutting_down = true;
        // Deliver everything published before the shutdown began, and accept nothing more from
        // other threads (it could not be delivered).
        self.seq.close_publishing();
        self.sh.hub.drain_queued();
        self.sh.hub.record_backlog(usize::MAX);
        self.fan_out(false);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_pending = false;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                let flow = conn.begin_shutdown(key, &mut self.sh);
                self.settle(key, flow);
            }
        }
    }

    fn check_shutdown(&mut self) {
        let Some(shutdown) = &self.shutdown else {
            return;
        };
        if self.conns.is_empty() {
            log::info!("all connections closed; stopped");
            self.finish();
        } else if self.sh.now >= shutdown.deadline {
            log::warn!(
                "grace period over: forcing {} connections closed",
                self.conns.len()
            );
            self.force_stop();
        }
    }

    fn force_stop(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(
                key,
                Closing::Forced {
                    cause: crate::metrics::CloseCause::GraceExpired,
                    linger0: false,
                },
            );
        }
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Some(bp) = self.sh.backplane.as_mut() {
            bp.close(self.poll.registry());
            for c in std::mem::take(&mut bp.completions) {
                if let Origin::Handle(slot) = c.origin {
                    slot.set(c.outcome.map(|(id, _)| id));
                }
            }
        }
        self.seq.mark_loop_gone();
        self.stopped = true;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.seq.mark_loop_gone();
    }
}

fn register(registry: &Registry, conn: &mut Connection, key: usize) -> io::Result<()> {
    // Edge-triggered and registered once for both directions: a writable edge only fires after a
    // write came up short, so this costs no wake-ups, and it saves an epoll_ctl per stall.
    registry.register(
        &mut conn.sock,
        Token(key),
        Interest::READABLE | Interest::WRITABLE,
    )
}

fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        // Several processes share the address; the kernel spreads connections among them.
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// `RLIMIT_NOFILE` minus a reserve.
fn default_max_connections() -> usize {
    let soft = sockio::nofile_limit().unwrap_or(1024);
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE)
        .max(1)
}

/// The run prefix of ids: the start time in milliseconds and 20 random bits, base 36. Different for
/// every run, even two starting in the same millisecond or after the clock stepped back.
pub(crate) fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // RandomState is seeded from the OS's random source: enough for a uniqueness salt.
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        & 0xf_ffff;
    format!("{}{}", base36(millis), base36(salt + 36u64.pow(3)))
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}
