//! A TLS connection's side of reading and flushing (`--tls-cert`): the hooks `mod.rs` calls when
//! the connection has a [`TlsSession`]. Plaintext connections never come here.
//!
//! Reading hands the stage decrypted bytes through the same scratch buffer as a plain read, and
//! writes the handshake's own output at once. Flushing feeds rustls the same merged slices the
//! plaintext path sends (one channel's joined batch, or the gathered merge), at most
//! [`PLAIN_PER_WRITE`] at a time, so records are full-size and one `sendmsg` carries many events;
//! the cursors move by what rustls took. Ciphertext rustls still holds is written first on the
//! next flush; while it waits for a writable edge the connection is `write_blocked` like a
//! plaintext one, and its estimate counts in the slow-consumer backlog.

use std::io::IoSlice;

use super::io::{self, Io, SockWriter};
use super::{Closing, Connection, Flow, WRITE_BUDGET};
use crate::buf::MAX_IOVECS;
use crate::loop_state::LoopState;
use crate::metrics::CloseCause;
use crate::tls::session::{TlsRead, PLAIN_PER_WRITE};
use crate::tls::{HandshakeFailure, TlsSession};

/// The answer to a plaintext request on a TLS port, sent in plaintext before closing.
const TLS_REQUIRED: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\nConnection: close\r\n\r\nTLS required\n";

/// How draining rustls's ciphertext went.
enum Drain {
    /// Nothing left.
    Done,
    /// The socket is full: wait for the writable edge.
    Blocked,
    /// The socket failed.
    Broken,
}

impl Connection {
    /// Gives a new connection its TLS session when the listener speaks TLS.
    pub(super) fn start_tls(&mut self, sh: &LoopState) -> Flow {
        let Some(config) = &sh.tls else {
            return Flow::Keep;
        };
        match TlsSession::new(config.clone()) {
            Ok(session) => {
                self.tls = Some(Box::new(session));
                Flow::Keep
            }
            Err(e) => {
                log::error!("TLS session: {e}");
                Flow::Close(Closing::Forced {
                    cause: CloseCause::Internal,
                    linger0: true,
                })
            }
        }
    }

    /// Reads once into `sh.scratch`: decrypted bytes with TLS, the socket's bytes without.
    pub(super) fn read_some(&mut self, sh: &mut LoopState) -> Io {
        let Some(tls) = self.tls.as_deref_mut() else {
            return io::read(&mut self.sock, &mut sh.scratch);
        };
        let handshaking = tls.is_handshaking();
        let outcome = tls.read(&mut self.sock, &mut sh.scratch);
        if tls.take_established() {
            sh.metrics.tls_handshakes += 1;
        }
        let io = match outcome {
            TlsRead::Plain(n) => Io::Done(n),
            TlsRead::WouldBlock => Io::WouldBlock,
            TlsRead::Eof => {
                if handshaking {
                    sh.metrics.count_tls_failure(HandshakeFailure::Eof);
                }
                Io::Eof
            }
            TlsRead::NotTls => {
                log::debug!("conn {}: plaintext on the TLS port; answered 400", self.id);
                sh.metrics.count_tls_failure(HandshakeFailure::Plaintext);
                let _ = io::write(&self.sock, TLS_REQUIRED);
                return Io::Closed(std::io::ErrorKind::InvalidData);
            }
            TlsRead::Failed(e) => {
                if handshaking {
                    let reason = HandshakeFailure::of(&e);
                    log::debug!(
                        "conn {}: TLS handshake failed ({}): {e}",
                        self.id,
                        reason.label()
                    );
                    sh.metrics.count_tls_failure(reason);
                } else {
                    log::debug!("conn {}: TLS error: {e}", self.id);
                }
                // Send the alert rustls queued, if the socket takes it; the close follows.
                let _ = self.drain_tls(sh);
                return Io::Closed(std::io::ErrorKind::InvalidData);
            }
            TlsRead::Io(kind) => return Io::Closed(kind),
        };
        // The handshake's replies (and TLS 1.3 tickets) go out now: no stage queued them.
        match self.drain_tls(sh) {
            Drain::Done => {}
            Drain::Blocked => self.write_blocked = true,
            Drain::Broken => return Io::Closed(std::io::ErrorKind::BrokenPipe),
        }
        io
    }

    /// Writes the ciphertext rustls holds.
    fn drain_tls(&mut self, sh: &mut LoopState) -> Drain {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Drain::Done;
        };
        match tls.write_out(&mut SockWriter(&self.sock)) {
            Ok((written, all)) => {
                if written > 0 {
                    sh.metrics.bytes_written += written as u64;
                    self.written += written as u64;
                    self.last_write = sh.now;
                }
                if all {
                    Drain::Done
                } else {
                    Drain::Blocked
                }
            }
            Err(_) => Drain::Broken,
        }
    }

    /// The flush of a TLS connection (see the module doc): ciphertext held first, then up to
    /// [`WRITE_BUDGET`] of plaintext in [`PLAIN_PER_WRITE`] pieces, each written at once.
    pub(super) fn flush_tls(&mut self, key: usize, sh: &mut LoopState) -> Flow {
        let mut budget = WRITE_BUDGET;
        loop {
            match self.drain_tls(sh) {
                Drain::Done => {}
                Drain::Blocked => {
                    self.write_blocked = true;
                    let flow = self.judge(key, sh);
                    if flow == Flow::Keep {
                        self.sync_deadline(key, sh);
                    }
                    return flow;
                }
                Drain::Broken => return Flow::Close(Closing::Broken),
            }
            let Some(tls) = self.tls.as_deref_mut() else {
                break;
            };
            if tls.is_handshaking() {
                // Responses exist only after a request, and requests after the handshake.
                return Flow::Keep;
            }
            if budget == 0 {
                if self.out.has_output(&sh.hub) {
                    // Continue next iteration, after the others.
                    self.mark_dirty(key, sh);
                    return Flow::Keep;
                }
                break;
            }
            let limit = PLAIN_PER_WRITE.min(budget);
            let fed = match self.out.contiguous(&sh.hub, limit) {
                Some((bytes, step)) => {
                    Some((tls.write_plain(&[IoSlice::new(bytes)]), bytes.len(), step))
                }
                None if self.out.has_output(&sh.hub) => {
                    let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                    let (count, offered) = self.out.gather(&sh.hub, &mut iov, limit);
                    Some((tls.write_plain(&iov[..count]), offered, None))
                }
                None => None,
            };
            let Some((taken, offered, step)) = fed else {
                break;
            };
            if taken == 0 {
                // rustls holds its limit already (not expected right after a drain).
                self.mark_dirty(key, sh);
                return Flow::Keep;
            }
            let done = self
                .out
                .consume_contiguous(taken, offered, step, &mut sh.hub, &mut sh.pool);
            sh.metrics.deliveries += done.events;
            self.last_queued = sh.now;
            budget = budget.saturating_sub(taken);
        }
        let flow = self.on_drained(key, sh);
        if flow == Flow::Keep {
            self.sync_deadline(key, sh);
        }
        flow
    }

    /// Before our FIN on a graceful close: a `close_notify`, written out. `Some(Keep)` while it
    /// waits for the socket (the writable edge flushes again); `None` when the FIN may go.
    pub(super) fn close_notify(&mut self, sh: &mut LoopState) -> Option<Flow> {
        self.tls.as_deref_mut()?.close_notify();
        match self.drain_tls(sh) {
            Drain::Done => None,
            Drain::Blocked => {
                self.write_blocked = true;
                Some(Flow::Keep)
            }
            Drain::Broken => Some(Flow::Close(Closing::Broken)),
        }
    }

    /// Ciphertext taken from the queue but not yet written: part of the backlog judged.
    pub(super) fn tls_unsent(&self) -> u64 {
        self.tls.as_ref().map_or(0, |t| t.unsent() as u64)
    }

    /// rustls holds records not yet written.
    pub(super) fn tls_owes(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// A header deadline passed mid-handshake: counted as a handshake failure.
    pub(super) fn note_handshake_timeout(&self, sh: &mut LoopState) {
        if self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            sh.metrics.count_tls_failure(HandshakeFailure::Timeout);
        }
    }
}
