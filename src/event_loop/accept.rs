//! Accepting: a bounded batch per iteration and listener (a connect storm cannot stall delivery),
//! a pause on EMFILE/ENFILE instead of a spin, admission into the slab (or a 503 past
//! `--max-connections`, or a refusal by a per-client limit: `crate::limits`; the internal
//! `--metrics-listen` address has its own small cap instead), and the listeners' socket options.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::Server;
use crate::backplane::Backplane;
use crate::buf::chunk_size_for_mss;
use crate::conn::{io as sockio, Admission, Connection, Flow};
use crate::hooks::ConnectionEvent;
use crate::metrics::ConnKind;

/// Connections accepted per iteration at most, so a connect storm cannot stall delivery.
const ACCEPT_BATCH: usize = 256;
/// Connections refused by a per-client limit taken per iteration at most, besides the batch.
/// They cost little (no slot against `--max-connections`, a canned answer), so a whole listen
/// backlog of them (4096) goes in one iteration: a flood from one address cannot push other
/// clients' accepts back by more than one iteration.
const REFUSE_BATCH: usize = 4096;
/// Pause before accepting again after EMFILE/ENFILE (the listener's backlog keeps the clients).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections open at once on `--metrics-listen` at most; more are closed as soon as accepted,
/// so the internal address, exempt from `--max-connections`, cannot exhaust descriptors.
pub const METRICS_MAX_CONNECTIONS: usize = 64;
/// Descriptors kept back from `RLIMIT_NOFILE` for the listener, epoll, waker, signals, logs, and
/// the connections being refused with 503.
const FD_RESERVE: usize = 64;

impl Server {
    /// New connections are taken once the backplane has filled the history cache (or given up
    /// waiting for Redis), so that a resume is not served from an empty cache.
    pub(super) fn accepting(&self) -> bool {
        self.sh.backplane.as_ref().is_none_or(Backplane::started)
    }

    pub(super) fn accept_batch(&mut self) {
        if let Some(until) = self.accept_paused_until {
            if self.sh.now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        if self.accept_pending && self.accepting() {
            self.accept_pending = self.accept_from(Door::Main);
        }
        if self.internal_pending {
            self.internal_pending = self.accept_from(Door::Internal);
        }
    }

    /// Accepts a bounded batch from one listener (connections a per-client limit refuses count
    /// apart, up to [`REFUSE_BATCH`]); returns whether more may be waiting (no new edge would
    /// say so).
    fn accept_from(&mut self, door: Door) -> bool {
        let (mut admitted, mut refused) = (0, 0);
        while admitted < ACCEPT_BATCH && refused < REFUSE_BATCH {
            let listener = match door {
                Door::Main => self.listener.as_ref(),
                Door::Internal => self.metrics_listener.as_ref(),
            };
            let Some(listener) = listener else {
                return false;
            };
            match listener.accept() {
                Ok((sock, peer)) => {
                    if self.admit(sock, peer, door) {
                        admitted += 1;
                    } else {
                        refused += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
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
                    return true;
                }
            }
        }
        // Batch used up: more may be waiting.
        true
    }

    /// Takes a connection into the slab; false when a per-client limit refused it (it is
    /// then only answered, and does not count against the accept batch).
    pub(super) fn admit(&mut self, sock: TcpStream, peer: SocketAddr, door: Door) -> bool {
        if door == Door::Internal && self.sh.internal >= METRICS_MAX_CONNECTIONS {
            // Closed at once: the internal address cannot be used to hold descriptors.
            log::debug!("--metrics-listen: {peer} over {METRICS_MAX_CONNECTIONS} connections");
            return false;
        }
        self.sh.metrics.accepted += 1;
        let id = self.sh.metrics.accepted;
        if let Err(e) = sockio::set_nodelay(&sock) {
            log::debug!("TCP_NODELAY failed: {e}");
        }
        let chunk = chunk_size_for_mss(sockio::mss(&sock));
        let counted = self.conns.len() - self.sh.refused - self.sh.internal;
        let over_capacity = door == Door::Main && counted >= self.sh.max_connections;
        // The internal address is never subject to the per-client limits.
        let limit = match door {
            Door::Main => self.sh.limits.on_accept(peer.ip(), self.sh.now),
            Door::Internal => None,
        };
        let admitted = limit.as_ref().is_none_or(|l| l.refusal.is_none());
        let key = self
            .conns
            .insert(Connection::new(sock, id, self.sh.now, chunk));
        self.sh.slab_len = self.conns.len();
        let conn = &mut self.conns[key];
        if self.sh.config.access_log && door == Door::Main {
            conn.log_access(peer);
        }
        conn.set_limit(limit);
        if let Err(e) = register(self.poll.registry(), conn, key) {
            log::warn!("cannot register connection: {e}");
            conn.release_limit(&mut self.sh);
            self.conns.remove(key);
            self.sh.slab_len = self.conns.len();
            return admitted;
        }
        self.sh.metrics.open[ConnKind::Http as usize] += 1;
        self.sh.hooks.connection(ConnectionEvent::Opened {
            id,
            peer: Some(peer),
        });
        let admission = match door {
            Door::Internal => Admission::Internal,
            Door::Main if over_capacity => Admission::OverCapacity,
            Door::Main => Admission::Counted,
        };
        let flow = conn.start(key, admission, &mut self.sh);
        if let Flow::Close(closing) = flow {
            self.close(key, closing);
        }
        admitted
    }
}

pub(super) fn register(registry: &Registry, conn: &mut Connection, key: usize) -> io::Result<()> {
    // Edge-triggered and registered once for both directions: a writable edge only fires after a
    // write came up short, so this costs no wake-ups, and it saves an epoll_ctl per stall.
    registry.register(
        &mut conn.sock,
        Token(key),
        Interest::READABLE | Interest::WRITABLE,
    )
}

/// Binds `--listen`; the error names the address.
pub(super) fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    bind_socket(addr, reuse_port)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// The listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Door {
    /// `--listen`: every route, counted against `--max-connections`.
    Main,
    /// `--metrics-listen`: probes and metrics only, under [`METRICS_MAX_CONNECTIONS`].
    Internal,
}

fn bind_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
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
pub(super) fn default_max_connections() -> usize {
    let soft = sockio::nofile_limit().unwrap_or(1024);
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE)
        .max(1)
}
