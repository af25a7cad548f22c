//! One connection's TLS state: a `rustls::ServerConnection` driven by the loop (no thread, no
//! runtime). The connection hands it the socket to read from and write to; it hands back
//! plaintext, and takes plaintext (the same merged slices the plaintext path sends) to encrypt.
//!
//! Bounds: rustls keeps at most [`BUFFER_LIMIT`] bytes of ciphertext waiting for the socket
//! (plaintext is only fed once the previous write is out, [`PLAIN_PER_WRITE`] at a time), and
//! at most its own 16 KiB of decrypted input: the socket is read only once that is drained.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

/// Most plaintext encrypted per write: full-size records (16 KiB), several per `writev`, and
/// every event of a round in them rather than a record per event.
pub const PLAIN_PER_WRITE: usize = 64 * 1024;

/// rustls's limit on the ciphertext it holds: one write's plaintext plus record overhead (about
/// 22 bytes per 16 KiB record in TLS 1.3, 29 in TLS 1.2) and handshake messages.
pub const BUFFER_LIMIT: usize = PLAIN_PER_WRITE + 4 * 1024;

/// The first byte of a TLS handshake record: anything else on a fresh connection is not TLS.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Overhead counted per record while estimating the ciphertext not yet written.
const RECORD_OVERHEAD: usize = 29;

/// What one read produced.
#[derive(Debug)]
pub enum TlsRead {
    /// This many plaintext bytes were placed at the start of the buffer.
    Plain(usize),
    /// Nothing more now.
    WouldBlock,
    /// The peer closed (`close_notify`, or a FIN).
    Eof,
    /// The first bytes are not a TLS handshake (the caller may answer in plaintext).
    NotTls,
    /// A TLS error: rustls queued the alert to send before closing.
    Failed(rustls::Error),
    /// The socket failed.
    Io(io::ErrorKind),
}

/// A connection's TLS session.
pub struct TlsSession {
    conn: ServerConnection,
    /// No byte read yet: the first one tells whether the peer speaks TLS at all.
    fresh: bool,
    /// The handshake's completion has not been reported yet.
    unreported: bool,
    close_sent: bool,
    /// Ciphertext accepted but not yet written (an estimate: rustls does not say).
    unsent: usize,
}

impl TlsSession {
    /// A session for a new connection, with the configuration in force now.
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsSession {
            conn,
            fresh: true,
            unreported: true,
            close_sent: false,
            unsent: 0,
        })
    }

    /// The handshake has not finished.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True once, when the handshake has finished (for the counter).
    pub fn take_established(&mut self) -> bool {
        let done = self.unreported && !self.conn.is_handshaking();
        if done {
            self.unreported = false;
        }
        done
    }

    /// Reads plaintext into `buf`: what rustls has already decrypted, else from `sock` until a
    /// record yields plaintext or the socket has nothing more.
    pub fn read(&mut self, sock: &mut dyn Read, buf: &mut [u8]) -> TlsRead {
        loop {
            match self.conn.reader().read(buf) {
                Ok(0) if !buf.is_empty() => return TlsRead::Eof,
                Ok(n) => return TlsRead::Plain(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return TlsRead::Eof,
                Err(e) => return TlsRead::Io(e.kind()),
            }
            let eof = if self.fresh {
                match self.first_read(sock, buf) {
                    Ok(eof) => eof,
                    Err(outcome) => return outcome,
                }
            } else {
                match self.conn.read_tls(sock) {
                    Ok(n) => n == 0,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return TlsRead::WouldBlock,
                    Err(e) => return TlsRead::Io(e.kind()),
                }
            };
            if let Err(e) = self.conn.process_new_packets() {
                return TlsRead::Failed(e);
            }
            if eof {
                // rustls reports a close_notify (0) or a bare FIN (UnexpectedEof) from the
                // reader; either way nothing more comes.
                return match self.conn.reader().read(buf) {
                    Ok(n) if n > 0 => TlsRead::Plain(n),
                    _ => TlsRead::Eof,
                };
            }
        }
    }

    /// The first read, through `buf`, so that a plaintext request is recognised before rustls
    /// sees it. `Ok(true)` at end of stream.
    fn first_read(&mut self, sock: &mut dyn Read, buf: &mut [u8]) -> Result<bool, TlsRead> {
        let n = loop {
            match sock.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(TlsRead::WouldBlock),
                Err(e) => return Err(TlsRead::Io(e.kind())),
            }
        };
        if n == 0 {
            return Err(TlsRead::Eof);
        }
        if buf[0] != HANDSHAKE_RECORD {
            return Err(TlsRead::NotTls);
        }
        self.fresh = false;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            // A ClientHello yields no plaintext, so rustls's input buffer takes all of it.
            match self.conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsRead::Io(e.kind())),
            }
            if let Err(e) = self.conn.process_new_packets() {
                return Err(TlsRead::Failed(e));
            }
        }
        Ok(false)
    }

    /// rustls has ciphertext (handshake, records, alerts) waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting ciphertext to `sock` (one `writev` of every waiting record per call) until
    /// none is left or the socket is full: `Ok((bytes written, all written))`.
    pub fn write_out(&mut self, sock: &mut dyn Write) -> Result<(usize, bool), io::ErrorKind> {
        let mut written = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => return Ok((written, false)),
                Ok(n) => {
                    written += n;
                    self.unsent = self.unsent.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((written, false)),
                Err(e) => return Err(e.kind()),
            }
        }
        self.unsent = 0;
        Ok((written, true))
    }

    /// Encrypts plaintext from `bufs` (records of up to 16 KiB over the slices, so one record
    /// carries many events): the number of bytes taken, which may be fewer than offered once
    /// [`BUFFER_LIMIT`] is reached.
    pub fn write_plain(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        let n = self.conn.writer().write_vectored(bufs).unwrap_or(0);
        self.unsent += n + n.div_ceil(16 * 1024) * RECORD_OVERHEAD;
        n
    }

    /// Ciphertext taken but not yet written (estimated), counted in the connection's backlog.
    pub fn unsent(&self) -> usize {
        if self.conn.wants_write() {
            self.unsent
        } else {
            0
        }
    }

    /// Queues a `close_notify` alert (once); [`Self::write_out`] sends it.
    pub fn close_notify(&mut self) {
        if !self.close_sent {
            self.close_sent = true;
            self.conn.send_close_notify();
        }
    }
}
