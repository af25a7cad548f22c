//! Drives a real [`Connection`] without the event loop or the network: bytes are injected as if
//! read, and output is taken as if written. Used by unit tests and the HTTP fuzz target, so that
//! the code under test is the connection's own request path, not a model of it.
//!
//! The connection still owns a real socket (the state machine needs one), but it is a duplicate
//! of one loopback pair made once per thread, and nothing is ever read from or written to it.

use std::io;
use std::net::{TcpListener, TcpStream};

use super::state::Life;
use super::{Connection, Flow, Stage};
use crate::buf::MAX_IOVECS;
use crate::config::Config;
use crate::hub::Hub;
use crate::loop_state::LoopState;
use crate::metrics::ConnKind;

thread_local! {
    static PAIR: io::Result<(TcpStream, TcpStream)> = loopback_pair();
}

fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    server.set_nonblocking(true)?;
    Ok((server, client))
}

/// A connection plus the loop state it needs, with no loop around them.
pub struct Harness {
    /// The loop state (hub, metrics, timers...), inspectable by tests.
    pub sh: LoopState,
    conn: Connection,
    key: usize,
    closed: bool,
}

impl Harness {
    /// A fresh connection, as just accepted, on a server configured with `config`.
    pub fn new(config: Config) -> io::Result<Harness> {
        let sock = PAIR.with(|pair| match pair {
            Ok((server, _)) => server.try_clone(),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        })?;
        let hub = Hub::new("harness", config.history);
        let mut sh = LoopState::new(config, hub, 16);
        let key = 0;
        let mut conn = Connection::new(mio::net::TcpStream::from_std(sock), 1, sh.now, 1024);
        sh.metrics.open[ConnKind::Http as usize] += 1;
        sh.slab_len = 1;
        let flow = conn.start(key, super::Admission::Counted, &mut sh);
        Ok(Harness {
            sh,
            conn,
            key,
            closed: flow != Flow::Keep,
        })
    }

    /// Feeds `bytes` as one read, then handles everything that follows from it, taking output
    /// as a fast reader would. Returns false once the connection has closed or is winding down.
    pub fn feed(&mut self, bytes: &[u8], output: &mut Vec<u8>) -> bool {
        if self.closed {
            return false;
        }
        let mut flow = self.conn.inject(self.key, bytes, &mut self.sh);
        // Output backpressure pauses request processing; a reader that keeps up lets it resume.
        for _ in 0..1024 {
            if flow != Flow::Keep {
                break;
            }
            let before = output.len();
            self.conn.take_output(output, &mut self.sh);
            if output.len() == before {
                break;
            }
            flow = self.conn.inject(self.key, b"", &mut self.sh);
        }
        self.conn.take_output(output, &mut self.sh);
        if flow != Flow::Keep {
            self.close();
        }
        !self.closed && self.conn.life() != Life::Graceful
    }

    /// The connection's lifecycle state.
    pub fn life(&self) -> Life {
        if self.closed {
            Life::Closed
        } else {
            self.conn.life()
        }
    }

    /// Closes the connection as the loop would, releasing everything.
    pub fn close(&mut self) {
        if !self.closed {
            self.conn.release(self.key, &mut self.sh);
            self.sh.slab_len = 0;
            self.closed = true;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.close();
    }
}

impl Connection {
    /// Appends `bytes` to the read buffer as if read, and processes them.
    fn inject(&mut self, key: usize, bytes: &[u8], sh: &mut LoopState) -> Flow {
        if !bytes.is_empty() {
            if let Flow::Close(c) = self.take_input(bytes, sh) {
                return Flow::Close(c);
            }
        }
        self.read_paused = false;
        let flow = match self.stage {
            Stage::Http(_) => self.process_http(key, sh),
            Stage::Frames(_) => self.process_frames(key, sh),
            Stage::Sse => Flow::Keep,
        };
        // As `on_ready` does after reading.
        if flow == Flow::Keep {
            self.sync_deadline(key, sh);
        }
        flow
    }

    /// Moves all queued output into `into`, as a socket that accepts everything would.
    fn take_output(&mut self, into: &mut Vec<u8>, sh: &mut LoopState) {
        while self.out.has_output(&sh.hub) {
            let mut iov = [std::io::IoSlice::new(&[]); MAX_IOVECS];
            let (count, bytes) = self.out.gather(&sh.hub, &mut iov, usize::MAX);
            for slice in &iov[..count] {
                into.extend_from_slice(slice);
            }
            self.out.consume(bytes, &mut sh.hub, &mut sh.pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn harness(args: &[&str]) -> Harness {
        let mut argv = vec!["sseloop"];
        argv.extend_from_slice(args);
        Harness::new(Config::parse_from(argv)).unwrap()
    }

    #[test]
    fn pipelined_requests_split_at_every_byte_give_the_same_answers() {
        let wire = b"GET /healthz HTTP/1.1\r\n\r\nPOST /publish?topic=a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /publish?topic=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\nOPTIONS /events HTTP/1.1\r\n\r\n";
        let statuses = |out: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(out)
                .split("HTTP/1.1 ")
                .skip(1)
                .map(|r| r[..3].to_string())
                .collect()
        };
        let mut whole = Vec::new();
        harness(&[]).feed(wire, &mut whole);
        assert_eq!(statuses(&whole), vec!["200", "200", "200", "204"]);
        for split in 1..wire.len() {
            let mut h = harness(&[]);
            let mut out = Vec::new();
            assert!(h.feed(&wire[..split], &mut out));
            h.feed(&wire[split..], &mut out);
            assert_eq!(statuses(&out), statuses(&whole), "split at {split}");
            assert_eq!(h.sh.hub.last_seq(), 2, "two events published");
        }
    }

    #[test]
    fn releases_subscriptions_and_chunks_on_close() {
        let mut h = harness(&[]);
        let mut out = Vec::new();
        h.feed(b"GET /events?topic=a&topic=b HTTP/1.1\r\n\r\n", &mut out);
        assert!(String::from_utf8_lossy(&out).contains("text/event-stream"));
        assert_eq!(h.sh.hub.subscription_count(), 2);
        assert_eq!(h.sh.timers.len(), 1, "heartbeat only");
        h.close();
        assert_eq!(h.sh.hub.subscription_count(), 0);
        assert_eq!(h.sh.timers.len(), 0);
        assert_eq!(h.sh.pool.lent(), 0);
        assert_eq!(h.sh.metrics.open, [0, 0, 0]);
    }

    #[test]
    fn bad_head_is_answered_then_the_connection_winds_down() {
        let mut h = harness(&[]);
        let mut out = Vec::new();
        assert!(!h.feed(
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &mut out
        ));
        assert!(out.starts_with(b"HTTP/1.1 400 "));
        assert_eq!(h.life(), Life::Graceful);
    }
}
