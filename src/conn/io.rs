//! The socket edge: the only code that knows errno values, and the only `unsafe` outside `ffi`.
//! Reads and writes come back as a small outcome enum; `EINTR` is retried here, `EAGAIN` becomes
//! `WouldBlock`, and a reset or broken pipe is `Closed` (never a SIGPIPE: writes use `sendmsg`
//! or `send` with `MSG_NOSIGNAL`, which matters when the loop is embedded in a host that has not ignored
//! the signal).

use std::io::{self, IoSlice, Read};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

/// Outcome of one read or write attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Transferred this many bytes (non-zero).
    Done(usize),
    /// The socket has nothing more (read) or no room (write) now.
    WouldBlock,
    /// Read side: the peer sent FIN.
    Eof,
    /// The connection is dead (reset, broken pipe, other error).
    Closed(io::ErrorKind),
}

/// Reads once into `buf`.
pub fn read(sock: &mut TcpStream, buf: &mut [u8]) -> Io {
    loop {
        match sock.read(buf) {
            Ok(0) => return Io::Eof,
            Ok(n) => return Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Io::WouldBlock,
            Err(e) => return Io::Closed(e.kind()),
        }
    }
}

/// Writes the slices with one `sendmsg(MSG_NOSIGNAL)` call, or `send` for a single slice
/// (retried on `EINTR`).
pub fn write_vectored(sock: &TcpStream, bufs: &[IoSlice<'_>]) -> Io {
    match bufs {
        [] => return Io::Done(0),
        [one] => return write(sock, one),
        _ => {}
    }
    // SAFETY: an all-zero msghdr is a valid "no name, no control data" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only reads through it.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    loop {
        // SAFETY: the fd is an open socket owned by `sock`; msg points at `bufs`, which outlives
        // the call, and the kernel does not retain the pointers.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if let Some(done) = outcome(n) {
            return done;
        }
    }
}

/// Writes one slice with `send(MSG_NOSIGNAL)` (retried on `EINTR`): the kernel takes a single
/// buffer without copying in a message header and an iovec array, which is most of the writes
/// (a caught-up reader's whole round is one joined slice).
pub fn write(sock: &TcpStream, buf: &[u8]) -> Io {
    loop {
        // SAFETY: the fd is an open socket owned by `sock`; the kernel only reads `buf.len()`
        // bytes from `buf`, which outlives the call.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if let Some(done) = outcome(n) {
            return done;
        }
    }
}

/// The socket as an `io::Write` for rustls's `write_tls`: its records go out with one
/// `sendmsg(MSG_NOSIGNAL)`, like every other write (a plain `writev` could raise SIGPIPE).
pub struct SockWriter<'a>(pub &'a TcpStream);

impl io::Write for SockWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match write_vectored(self.0, bufs) {
            Io::Done(n) => Ok(n),
            Io::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
            Io::Eof => Err(io::ErrorKind::BrokenPipe.into()),
            Io::Closed(kind) => Err(kind.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A write call's result, or `None` to retry (`EINTR`).
fn outcome(n: isize) -> Option<Io> {
    if n >= 0 {
        return Some(Io::Done(n as usize));
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => Some(Io::WouldBlock),
        kind => Some(Io::Closed(kind)),
    }
}

/// The connection's MSS (`TCP_MAXSEG`), if the kernel tells.
pub fn mss(sock: &TcpStream) -> Option<u32> {
    socket2::SockRef::from(sock).tcp_mss().ok()
}

/// Disables Nagle: events are small and latency matters more than packet count, and output is
/// already coalesced per loop iteration.
pub fn set_nodelay(sock: &TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)
}

/// Makes the next close send RST instead of FIN (for peers that misbehave).
pub fn set_linger_zero(sock: &TcpStream) {
    let _ = socket2::SockRef::from(sock).set_linger(Some(std::time::Duration::ZERO));
}

/// Shuts the write side (FIN after queued bytes).
pub fn shutdown_write(sock: &TcpStream) {
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// The soft `RLIMIT_NOFILE`: how many descriptors this process may hold.
pub fn nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own and pass by pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}
