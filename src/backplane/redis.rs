//! One non-blocking Redis connection in the node's own `mio` loop: commands are encoded and
//! replies decoded with the `redis-protocol` RESP2 codec; the socket, buffering and pipelining
//! are ours. Replies come back in command order (Redis guarantees it on one connection), so the
//! caller keeps its own FIFO of what each reply answers.
//!
//! With `rediss://` a rustls client session sits between the buffers and the socket: commands
//! are encrypted on their way out, replies decrypted on their way in, and the handshake's own
//! messages are written whenever the socket is read or flushed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};

/// Largest reply accepted: XREAD/XRANGE replies are bounded by their COUNT times the largest
/// event (`--max-body`); this catches a wrong server, not a legitimate reply.
const MAX_REPLY: usize = 1 << 30;

/// A Redis connection: socket, unsent command bytes, undecoded reply bytes.
pub struct RedisConn {
    stream: TcpStream,
    /// True once the non-blocking connect finished.
    pub established: bool,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    /// The TLS session of a `rediss://` backplane.
    tls: Option<Box<rustls::ClientConnection>>,
}

impl RedisConn {
    /// Starts connecting (non-blocking) and registers for both readiness kinds (edge-triggered:
    /// writes are attempted whenever there is something to send, and resumed on WRITABLE).
    /// With `tls`, the session verifies the server's certificate for `host`.
    pub fn connect(
        addr: SocketAddr,
        registry: &Registry,
        token: Token,
        tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
    ) -> io::Result<RedisConn> {
        let tls = match tls {
            Some((config, host)) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(io::Error::other)?;
                Some(Box::new(conn))
            }
            None => None,
        };
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let _ = stream.set_nodelay(true);
        Ok(RedisConn {
            stream,
            established: false,
            wbuf: Vec::new(),
            wpos: 0,
            rbuf: Vec::new(),
            tls,
        })
    }

    /// Removes the socket from the poll before it is dropped.
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Appends one command (an array of bulk strings) to the output.
    pub fn command(&mut self, args: &[&[u8]]) {
        let parts: Vec<BorrowedFrame<'_>> =
            args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
        let frame = BorrowedFrame::Array(&parts);
        let start = self.wbuf.len();
        self.wbuf.resize(start + frame.encode_len(false), 0);
        match encode_borrowed(&mut self.wbuf[start..], &frame, false) {
            Ok(n) => self.wbuf.truncate(start + n),
            // Cannot happen: the buffer was sized by the codec itself.
            Err(e) => {
                log::error!("backplane: RESP encoding failed: {e:?}");
                self.wbuf.truncate(start);
            }
        }
    }

    /// Blocks at most `timeout` until reply bytes (or an error or hang-up) are readable: a
    /// `ppoll` on this one socket, for a loop that would rather wait briefly than let an
    /// imminent answer miss the work it is about to do. True when readable.
    pub fn wait_readable(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        loop {
            // SAFETY: one valid pollfd and a valid timespec, both alive across the call; a null
            // signal mask keeps the current one.
            let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            if n >= 0 {
                return n > 0 && pfd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return false;
            }
        }
    }

    /// True when command bytes wait to be sent.
    pub fn has_output(&self) -> bool {
        self.wpos < self.wbuf.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// A readiness event's work: finish a pending connect, send what is queued, decode what
    /// arrived into `frames` (replies decoded before an error are kept).
    pub fn on_ready(&mut self, frames: &mut Vec<OwnedFrame>, scratch: &mut [u8]) -> io::Result<()> {
        if self.check_connected()? {
            self.flush()?;
        }
        self.read(frames, scratch)
    }

    /// Checks a pending connect; `Ok(true)` once established.
    pub fn check_connected(&mut self) -> io::Result<bool> {
        if self.established {
            return Ok(true);
        }
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.established = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends what it can; `Ok` also when the socket is full (the rest goes on WRITABLE).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.established {
            return Ok(());
        }
        if self.tls.is_some() {
            self.flush_tls()?;
        }
        while self.wpos < self.wbuf.len() && self.tls.is_none() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 1 << 20 {
                self.wbuf = Vec::new();
            }
        }
        Ok(())
    }

    /// Reads everything available and decodes the complete replies into `out`. An error (or
    /// EOF) means the connection is gone; replies decoded before it are still in `out`.
    pub fn read(&mut self, out: &mut Vec<OwnedFrame>, scratch: &mut [u8]) -> io::Result<()> {
        if !self.established {
            return Ok(());
        }
        let mut end = Ok(());
        loop {
            if let Some(tls) = self.tls.as_deref_mut() {
                match read_tls(tls, &mut self.stream, &mut self.rbuf, scratch) {
                    Ok(true) => continue,
                    Ok(false) => {
                        // The handshake's replies (and commands it held) go out now.
                        end = self.flush_tls();
                    }
                    Err(e) => end = Err(e),
                }
                break;
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    end = Err(io::ErrorKind::UnexpectedEof.into());
                    break;
                }
                Ok(n) => self.rbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    end = Err(e);
                    break;
                }
            }
        }
        let mut pos = 0;
        while pos < self.rbuf.len() {
            match decode(&self.rbuf[pos..]) {
                Ok(Some((frame, used))) => {
                    out.push(frame);
                    pos += used;
                }
                Ok(None) => break,
                Err(e) => {
                    self.rbuf.clear();
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad RESP from Redis: {e:?}"),
                    ));
                }
            }
        }
        self.rbuf.drain(..pos);
        if self.rbuf.len() > MAX_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "Redis reply larger than 1 GiB",
            ));
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 1 << 20 {
            self.rbuf = Vec::new();
        }
        end
    }
}

impl RedisConn {
    /// Moves unsent commands into the TLS session (as much as it takes) and writes its records.
    fn flush_tls(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        loop {
            if self.wpos < self.wbuf.len() {
                let n = tls.writer().write(&self.wbuf[self.wpos..])?;
                self.wpos += n;
            }
            if !tls.wants_write() {
                return Ok(());
            }
            match tls.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// One read of TLS records from the socket, their plaintext appended to `rbuf`. `Ok(true)`
/// when more may be readable, `Ok(false)` when the socket has nothing more; EOF is an error
/// (the connection is gone).
fn read_tls(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    scratch: &mut [u8],
) -> io::Result<bool> {
    let n = match tls.read_tls(stream) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
        Err(e) => return Err(e),
    };
    tls.process_new_packets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
    loop {
        match tls.reader().read(scratch) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(got) => rbuf.extend_from_slice(&scratch[..got]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(true)
}

/// The text of a bulk or simple string reply.
pub fn text(frame: &OwnedFrame) -> Option<&str> {
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// The integer of an integer reply, or of a string reply holding digits.
pub fn integer(frame: &OwnedFrame) -> Option<i64> {
    match frame {
        OwnedFrame::Integer(i) => Some(*i),
        other => text(other).and_then(|t| t.parse().ok()),
    }
}
