//! One client connection: its socket, protocol stage, input, output queue and flush (lifecycle
//! transitions and deadlines are in `lifecycle.rs`).
//!
//! Handlers never remove a connection: they return [`Flow::Close`] and the loop releases
//! everything in one place ([`Connection::release`] via `Server::close`). Output is queued here and
//! written by [`Connection::flush`], which the loop calls once per iteration for each connection
//! marked dirty: at most one `sendmsg` per connection per iteration, within a byte budget.

mod access;
pub mod api;
mod authz;
pub use capacity::Admission;
pub(crate) mod capacity;
mod console;
mod frame_stage;
#[cfg(any(test, fuzzing))]
pub mod harness;
mod http_stage;
pub mod io;
mod lifecycle;
mod limits;
pub mod output;
mod presence;
mod secure;
pub mod state;
mod stream;

use std::io::IoSlice;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::buf::MAX_IOVECS;
use crate::hub::Hub;
use crate::loop_state::LoopState;
use crate::metrics::{CloseCause, ConnKind};
use crate::timer::TimerKey;
use io::Io;
use lifecycle::Deadline;
use output::Output;
use state::{Life, LifeEvent};

/// Most bytes one connection may write per loop iteration, so one fast reader with a large backlog
/// cannot starve the others.
pub const WRITE_BUDGET: usize = 256 * 1024;
/// Most bytes read from one connection per iteration (fairness on the read side).
pub const READ_BUDGET: usize = 256 * 1024;
/// Pipelined requests stop being read while this much output is queued (backpressure: a client
/// that sends requests without reading responses cannot grow our memory).
pub const PIPELINE_OUTPUT_LIMIT: usize = 256 * 1024;

/// Logs, once their period has ended, the counts of rate-limited lines left out (refused
/// authorizations, connections over the limit) that no later line reported. The loop calls it
/// when [`LoopState::log_summary_due`] has passed.
pub fn report_suppressed(sh: &mut LoopState) {
    authz::report_suppressed(sh);
    capacity::report_suppressed(sh);
}

/// What the loop should do with a connection after a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep it.
    Keep,
    /// Release it now.
    Close(Closing),
}

/// How a connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Orderly: the exchange or the graceful close finished, or the peer left.
    Done,
    /// The socket failed (reset, broken pipe).
    Broken,
    /// The server gives up on it; `linger0` sends RST instead of FIN (misbehaving peer).
    Forced {
        /// The cause, counted in metrics.
        cause: CloseCause,
        /// Close with RST.
        linger0: bool,
    },
}

/// The protocol the connection speaks.
enum Stage {
    /// HTTP/1.1 requests and responses.
    Http(http_stage::HttpConn),
    /// A Server-Sent Events stream (response head sent; only events from now on).
    Sse,
    /// The binary frame protocol, after a `101` upgrade.
    Frames(Box<frame_stage::FrameConn>),
}

/// A client connection.
pub struct Connection {
    /// The socket.
    pub sock: TcpStream,
    /// Unique id (the connection hook's), unlike the slab key.
    id: u64,
    life: Life,
    stage: Stage,
    /// Private bytes and, for streams, the cursors into the shared logs.
    out: Output,
    chunk_cap: usize,
    deadline: Option<(TimerKey, Deadline)>,
    heartbeat: Option<TimerKey>,
    opened_at: Instant,
    /// Last time the socket accepted bytes (write-stall deadline).
    last_write: Instant,
    /// Bytes the socket has accepted from us (the server API's listing, a stream's access line).
    written: u64,
    /// Registered in `LoopState::presence_watch` for its topics (`presence=1`).
    watching_presence: Vec<String>,
    /// Its leave notices went out when its drain began.
    presence_left: bool,
    /// Last time bytes were read (body deadline).
    last_read: Instant,
    /// Last time output was queued on a stream (heartbeat).
    last_queued: Instant,
    /// Entered Idle or Graceful at.
    state_since: Instant,
    grace: Duration,
    /// In the loop's dirty list.
    dirty: bool,
    /// The last write came up short: wait for a writable edge.
    write_blocked: bool,
    /// Stopped reading (pipelined output over the limit); resume once the queue drains.
    read_paused: bool,
    /// The peer has sent FIN.
    peer_eof: bool,
    /// Our FIN has been sent.
    shut_write: bool,
    /// Stopped reading at the per-iteration budget with bytes left: read again from the dirty
    /// list.
    read_pending: bool,
    /// Accepted over `--max-connections`: only here to answer one probe or deliver its 503.
    refused: bool,
    /// Accepted on `--metrics-listen`: only here to answer one probe (or a 404).
    internal: bool,
    /// A JWT-authorized stream's grants and expiry timer.
    auth: Option<Box<authz::StreamAuth>>,
    /// A resume older than this node's cache waits for Redis: output and input are held until
    /// the missed events arrive (they go first).
    backfill: Option<Box<stream::BackfillWait>>,
    /// The access log's state (`--access-log` on at accept), else nothing.
    access: Option<Box<access::Access>>,
    /// What the per-client limits know of this connection (`None` when they are off).
    limit: Option<Box<crate::limits::ConnLimit>>,
    /// The TLS session when the listener speaks TLS (`secure.rs`); `None` is plaintext.
    tls: Option<Box<crate::tls::TlsSession>>,
}

impl Connection {
    /// A connection just accepted, with write chunks sized for `chunk_cap`.
    pub fn new(sock: TcpStream, id: u64, now: Instant, chunk_cap: usize) -> Connection {
        Connection {
            sock,
            id,
            life: Life::Active,
            stage: Stage::Http(http_stage::HttpConn {
                request_started: Some(now),
                ..http_stage::HttpConn::default()
            }),
            out: Output::default(),
            chunk_cap,
            deadline: None,
            heartbeat: None,
            opened_at: now,
            last_write: now,
            last_read: now,
            last_queued: now,
            state_since: now,
            grace: Duration::ZERO,
            dirty: false,
            write_blocked: false,
            read_paused: false,
            peer_eof: false,
            shut_write: false,
            read_pending: false,
            refused: false,
            internal: false,
            auth: None,
            backfill: None,
            written: 0,
            watching_presence: Vec::new(),
            presence_left: false,
            access: None,
            limit: None,
            tls: None,
        }
    }

    /// The unique id given to the connection hook.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connection's lifecycle state.
    pub fn life(&self) -> Life {
        self.life
    }

    /// The kind counted in `sseloop_connections_open`.
    pub fn kind(&self) -> ConnKind {
        match self.stage {
            Stage::Http(_) => ConnKind::Http,
            Stage::Sse => ConnKind::Sse,
            Stage::Frames(_) => ConnKind::Frames,
        }
    }

    /// Arms the first deadline; a connection over the limit or on the internal address may send
    /// one request, answered only if it is a probe (`conn/capacity.rs`); one refused by a
    /// per-client limit only gets its refusal (`conn/limits.rs`). A connection to `--listen`
    /// with TLS starts its session first (`secure.rs`); the internal `--metrics-listen`
    /// address stays plaintext, for scrapers on an internal network.
    pub fn start(&mut self, key: usize, admission: Admission, sh: &mut LoopState) -> Flow {
        if admission != Admission::Internal {
            if let Flow::Close(c) = self.start_tls(sh) {
                return Flow::Close(c);
            }
        }
        if self.limit.as_ref().is_some_and(|l| l.refusal.is_some()) {
            self.admit_limited(sh);
        } else {
            match admission {
                Admission::Counted => {}
                Admission::OverCapacity => self.admit_over_capacity(sh),
                Admission::Internal => self.admit_internal(sh),
            }
        }
        self.sync_deadline(key, sh);
        Flow::Keep
    }

    // ----- readiness ---------------------------------------------------------------------------

    /// Handles a readiness event.
    pub fn on_ready(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        sh: &mut LoopState,
    ) -> Flow {
        if writable && self.write_blocked {
            self.write_blocked = false;
            self.mark_dirty(key, sh);
        }
        if !readable || self.read_paused {
            return Flow::Keep;
        }
        let flow = match (&self.stage, self.life) {
            (_, Life::Graceful) => self.read_discard(key, sh),
            (Stage::Sse, _) => self.read_discard(key, sh),
            (Stage::Http(_) | Stage::Frames(_), _) => self.read_input(key, sh),
        };
        if flow == Flow::Keep {
            self.sync_deadline(key, sh);
        }
        flow
    }

    /// Reads request or frame input until the socket is drained, the per-iteration budget is
    /// spent, or output backs up, handling what is buffered before each read. One loop serves
    /// both stages, so a connection upgraded in the middle of a read carries on with frames (no
    /// new readiness edge would come for bytes already read).
    fn read_input(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        let mut budget = READ_BUDGET;
        loop {
            let was_http = matches!(self.stage, Stage::Http(_));
            let flow = match self.stage {
                Stage::Http(_) => self.process_http(key, sh),
                Stage::Frames(_) => self.process_frames(key, sh),
                Stage::Sse => Flow::Keep,
            };
            if let Flow::Close(c) = flow {
                return Flow::Close(c);
            }
            if was_http && matches!(self.stage, Stage::Frames(_)) {
                // The request was an upgrade: the bytes after its head are frames, already read.
                continue;
            }
            if matches!(self.stage, Stage::Sse) || self.life == Life::Graceful {
                // Streaming SSE, or answering with Connection: close: input is over.
                return Flow::Keep;
            }
            let waiting = match &self.stage {
                Stage::Http(h) => h.holds_input(),
                Stage::Frames(f) => f.awaiting >= frame_stage::MAX_AWAITING,
                Stage::Sse => false,
            };
            if self.backfill.is_some() || waiting {
                // A publish is with the backplane: read on once it is answered.
                self.read_paused = true;
                return Flow::Keep;
            }
            if self.out.private.len() >= PIPELINE_OUTPUT_LIMIT {
                // Resumed by on_drained once the client has read its responses.
                self.read_paused = true;
                return Flow::Keep;
            }
            if budget == 0 {
                self.read_pending = true;
                self.mark_dirty(key, sh);
                return Flow::Keep;
            }
            let n = match self.read_some(sh) {
                Io::Done(n) => n,
                Io::WouldBlock => return Flow::Keep,
                Io::Eof => {
                    self.peer_eof = true;
                    let output_pending = self.owes_output(&sh.hub);
                    return self.transition(LifeEvent::PeerClosed { output_pending }, sh);
                }
                Io::Closed(_) => return Flow::Close(Closing::Broken),
            };
            budget = budget.saturating_sub(n);
            self.last_read = sh.now;
            if let Flow::Close(c) = self.take_input(&sh.scratch[..n], sh) {
                return Flow::Close(c);
            }
        }
    }

    /// Appends bytes read from the peer to the stage's input buffer; the first byte of a request
    /// on an idle connection makes it active again.
    fn take_input(&mut self, bytes: &[u8], sh: &LoopState) -> Flow {
        if self.life == Life::Idle {
            if let Flow::Close(c) = self.transition(LifeEvent::RequestStarted, sh) {
                return Flow::Close(c);
            }
        }
        match &mut self.stage {
            Stage::Http(http) => {
                if http.rbuf.is_empty() && http.body.is_none() {
                    http.request_started = Some(sh.now);
                }
                http.rbuf.extend_from_slice(bytes);
            }
            Stage::Frames(frames) => frames.push_input(bytes),
            Stage::Sse => {}
        }
        Flow::Keep
    }

    /// Reads and drops whatever the peer sends (SSE streams, winding-down connections); notices
    /// the peer's FIN.
    fn read_discard(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        let mut budget = READ_BUDGET;
        loop {
            match self.read_some(sh) {
                Io::Done(n) => {
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        // Serve the others first; edge-triggered readiness will not fire again
                        // for bytes already waiting, so come back through the dirty list.
                        self.read_pending = true;
                        self.mark_dirty(key, sh);
                        return Flow::Keep;
                    }
                }
                Io::WouldBlock => return Flow::Keep,
                Io::Eof => {
                    self.peer_eof = true;
                    return match self.life {
                        // Our FIN is out and theirs arrived: done. Otherwise keep flushing.
                        Life::Graceful if self.shut_write || !self.owes_output(&sh.hub) => {
                            Flow::Close(Closing::Done)
                        }
                        Life::Graceful => Flow::Keep,
                        _ => self.transition(
                            LifeEvent::PeerClosed {
                                output_pending: false,
                            },
                            sh,
                        ),
                    };
                }
                Io::Closed(_) => return Flow::Close(Closing::Broken),
            }
        }
    }

    // ----- writing -----------------------------------------------------------------------------

    fn mark_dirty(&mut self, key: usize, sh: &mut LoopState) {
        self.mark_dirty_in(key, &mut sh.dirty);
    }

    /// Puts the connection on the loop's dirty list (once).
    pub fn mark_dirty_in(&mut self, key: usize, dirty: &mut Vec<usize>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(key);
        }
    }

    /// Reads at least one channel (a stream, or frames with subscriptions).
    pub fn reads_channels(&self) -> bool {
        !self.out.subs.is_empty()
    }

    /// Queues private bytes to go out after the events up to `barrier` (see `output`).
    fn push_private(&mut self, key: usize, bytes: &[u8], barrier: u64, sh: &mut LoopState) {
        self.out
            .private
            .push_bytes(bytes, barrier, &mut sh.pool, self.chunk_cap);
        self.mark_dirty(key, sh);
    }

    /// Writes what is pending (one `sendmsg`, within the budget): private bytes and the shared
    /// events past the cursors, merged. Called by the loop for dirty connections once per
    /// iteration.
    pub fn flush(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        if !self.dirty {
            return Flow::Keep;
        }
        self.dirty = false;
        if self.read_pending {
            self.read_pending = false;
            if let Flow::Close(c) = self.on_ready(key, true, false, sh) {
                return Flow::Close(c);
            }
        }
        if self.backfill.is_some() {
            // Marked dirty again when the backfill arrives.
            return Flow::Keep;
        }
        if self.write_blocked {
            // The socket refused bytes last time; more may have been published since.
            return self.judge(key, sh);
        }
        if self.tls.is_some() {
            return self.flush_tls(key, sh);
        }
        // Most writes are one contiguous slice (no iovec array, no walk to apply them).
        let sent = match self.out.contiguous(&sh.hub, WRITE_BUDGET) {
            Some((bytes, step)) => Some((io::write(&self.sock, bytes), bytes.len(), step)),
            None if self.out.has_output(&sh.hub) => {
                let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                let (count, offered) = self.out.gather(&sh.hub, &mut iov, WRITE_BUDGET);
                Some((io::write_vectored(&self.sock, &iov[..count]), offered, None))
            }
            None => None,
        };
        let mut pending = sent.is_some();
        if let Some((sent, offered, step)) = sent {
            match sent {
                Io::Done(written) => {
                    let done = self.out.consume_contiguous(
                        written,
                        offered,
                        step,
                        &mut sh.hub,
                        &mut sh.pool,
                    );
                    sh.metrics.deliveries += done.events;
                    sh.metrics.bytes_written += written as u64;
                    self.written += written as u64;
                    self.last_write = sh.now;
                    self.last_queued = sh.now;
                    pending = done.more;
                    if pending {
                        if written < offered {
                            self.write_blocked = true;
                            if let Flow::Close(c) = self.judge(key, sh) {
                                return Flow::Close(c);
                            }
                        } else {
                            // Budget used up: continue next iteration, after the others.
                            self.mark_dirty(key, sh);
                        }
                    }
                }
                Io::WouldBlock => {
                    self.write_blocked = true;
                    if let Flow::Close(c) = self.judge(key, sh) {
                        return Flow::Close(c);
                    }
                }
                Io::Eof | Io::Closed(_) => return Flow::Close(Closing::Broken),
            }
        }
        let flow = if pending {
            Flow::Keep
        } else {
            self.on_drained(key, sh)
        };
        if flow == Flow::Keep {
            self.sync_deadline(key, sh);
        }
        flow
    }

    /// The slow-consumer rule, for a connection whose socket refused bytes: cut it when what it
    /// has not taken, beyond the item being written, exceeds `--max-queue-bytes`. It can resume
    /// with `Last-Event-ID`.
    fn judge(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        if self.out.subs.is_empty() || self.life != Life::Active {
            return Flow::Keep;
        }
        let judged = self.out.judged_backlog(&sh.hub) + self.tls_unsent();
        if judged > sh.config.max_queue_bytes as u64 {
            log::info!("conn {key}: slow consumer, {judged} bytes not taken; disconnecting");
            return Flow::Close(Closing::Forced {
                cause: CloseCause::SlowConsumer,
                linger0: true,
            });
        }
        Flow::Keep
    }

    /// Responses this connection must still send that are not queued yet: HTTP publishes
    /// waiting for the backplane, and responses ready behind them.
    fn responses_owed(&self) -> bool {
        matches!(&self.stage, Stage::Http(h) if !h.pending.is_empty())
    }

    /// Output queued (TLS records included), or owed and still to come.
    fn owes_output(&self, hub: &Hub) -> bool {
        self.out.has_output(hub) || self.responses_owed() || self.tls_owes()
    }

    /// Everything queued has been written.
    fn on_drained(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        match self.life {
            Life::Graceful => {
                if self.responses_owed() {
                    // Publishes still with the backplane: their answers come (or are refused)
                    // within the append timeout, and the grace deadline bounds the wait.
                    return Flow::Keep;
                }
                if !self.shut_write {
                    if let Some(flow) = self.close_notify(sh) {
                        return flow;
                    }
                    io::shutdown_write(&self.sock);
                    self.shut_write = true;
                }
                if self.peer_eof {
                    return Flow::Close(Closing::Done);
                }
                // The FIN may already be waiting: edge-triggered readiness fired before we shut.
                self.read_discard(key, sh)
            }
            Life::Active if self.read_paused => {
                self.read_paused = false;
                match self.stage {
                    Stage::Http(_) | Stage::Frames(_) => self.read_input(key, sh),
                    Stage::Sse => self.read_discard(key, sh),
                }
            }
            Life::Active => match &self.stage {
                Stage::Http(http)
                    if http.body.is_none()
                        && http.request_started.is_none()
                        && http.pending.is_empty() =>
                {
                    self.exchange_done(sh)
                }
                _ => Flow::Keep,
            },
            Life::Idle | Life::Closed => Flow::Keep,
        }
    }

    /// Releases every resource this connection holds except the socket and the slab slot (the
    /// loop owns those): timers, subscriptions, queued output. Records metrics.
    pub fn release(&mut self, key: usize, sh: &mut LoopState) {
        if let Some((timer, _)) = self.deadline.take() {
            sh.timers.cancel(timer);
        }
        if let Some(timer) = self.heartbeat.take() {
            sh.timers.cancel(timer);
        }
        if !self.watching_presence.is_empty() || !sh.presence_watch.is_empty() {
            self.presence_closed(key, sh);
        }
        self.release_auth(sh);
        for sub in self.out.subs.drain(..) {
            sh.hub.unsubscribe(sub);
        }
        self.out.subs = output::Subs::new();
        self.out.clear(&mut sh.pool);
        if let Stage::Http(http) = &mut self.stage {
            http.rbuf = Vec::new();
            http.body = None;
        }
        self.life = Life::Closed;
        if self.refused {
            sh.refused -= 1;
        }
        if self.internal {
            sh.internal -= 1;
        }
        self.release_limit(sh);
        sh.metrics.open[self.kind() as usize] -= 1;
        sh.metrics.observe_lifetime(
            self.kind(),
            sh.now.saturating_duration_since(self.opened_at),
        );
    }
}
