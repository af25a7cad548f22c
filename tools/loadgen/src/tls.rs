//! The TLS client mode (`https://` URLs, `--tls-ca`): a rustls session per connection, driven by
//! the same non-blocking reads and writes as plaintext. Reads and writes keep the plaintext
//! semantics the connections rely on: a read shorter than the buffer means the socket is
//! drained (edge-triggered epoll reports new data), and a write reports what was taken.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::conn::Io;

/// One connection's TLS session.
pub struct Session(ClientConnection);

impl Session {
    /// A session verifying the server's certificate for `host`.
    pub fn new(config: &Arc<ClientConfig>, host: &str) -> io::Result<Session> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        ClientConnection::new(config.clone(), name)
            .map(Session)
            .map_err(io::Error::other)
    }

    /// Whether the handshake resumed an earlier session (`None` while it is in progress).
    pub fn resumed(&self) -> Option<bool> {
        self.0
            .handshake_kind()
            .map(|k| k == rustls::HandshakeKind::Resumed)
    }

    /// Takes `buf` (encrypted once the handshake is done) and writes what it can.
    pub fn write(&mut self, stream: &mut TcpStream, buf: &[u8]) -> Io {
        let taken = match self.0.writer().write(buf) {
            Ok(n) => n,
            Err(e) => return Io::Failed(e),
        };
        match self.push(stream) {
            Io::Failed(e) => Io::Failed(e),
            Io::Closed => Io::Closed,
            _ if taken == 0 => Io::WouldBlock,
            _ => Io::Done(taken),
        }
    }

    /// Writes pending records until none is left or the socket is full.
    pub fn push(&mut self, stream: &mut TcpStream) -> Io {
        let mut written = 0;
        while self.0.wants_write() {
            match self.0.write_tls(stream) {
                Ok(0) => return Io::Closed,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Io::WouldBlock,
                Err(e) => return Io::Failed(e),
            }
        }
        Io::Done(written)
    }

    /// Fills `buf` with plaintext: `Done(n < buf.len())` only once the socket has nothing more.
    pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> Io {
        let mut filled = 0;
        loop {
            match self.0.reader().read(&mut buf[filled..]) {
                Ok(0) if filled == buf.len() => return Io::Done(filled),
                Ok(0) => {
                    return if filled > 0 {
                        Io::Done(filled)
                    } else {
                        Io::Closed
                    }
                }
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && filled > 0 => {
                    return Io::Done(filled)
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Io::Closed,
                Err(e) => return Io::Failed(e),
            }
            match self.0.read_tls(stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The handshake's next flight (and the request it held) goes out now.
                    if let Io::Failed(e) = self.push(stream) {
                        return Io::Failed(e);
                    }
                    return if filled > 0 {
                        Io::Done(filled)
                    } else {
                        Io::WouldBlock
                    };
                }
                Err(e) => return Io::Failed(e),
            }
            if let Err(e) = self.0.process_new_packets() {
                let _ = self.push(stream);
                return Io::Failed(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}
