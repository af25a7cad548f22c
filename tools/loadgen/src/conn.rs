//! Client connections: the socket edge (the only place that knows `WouldBlock` and `EINTR`),
//! subscribers (connect → request → response head → stream) and pipelining publishers.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::http;
use crate::payload;
use crate::sys;
use crate::tally::{SubTracker, Tally};
use crate::tls::Session;
use crate::transport::{Flow, StreamDecoder, Transport};

/// Outcome of one read or write, classified once.
pub enum Io {
    Done(usize),
    WouldBlock,
    Closed,
    Failed(io::Error),
}

fn read(stream: &mut TcpStream, buf: &mut [u8]) -> Io {
    loop {
        return match stream.read(buf) {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Io::Failed(e),
        };
    }
}

/// Reads through the TLS session when there is one.
fn read_via(stream: &mut TcpStream, tls: Option<&mut Session>, buf: &mut [u8]) -> Io {
    match tls {
        Some(t) => t.read(stream, buf),
        None => read(stream, buf),
    }
}

/// Writes through the TLS session when there is one.
fn write_via(stream: &mut TcpStream, tls: Option<&mut Session>, buf: &[u8]) -> Io {
    match tls {
        Some(t) => t.write(stream, buf),
        None => write(stream, buf),
    }
}

fn write(stream: &mut TcpStream, buf: &[u8]) -> Io {
    loop {
        return match stream.write(buf) {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Io::Failed(e),
        };
    }
}

/// Starts a non-blocking connect, optionally from a chosen source address.
pub fn connect(addr: SocketAddr, source: Option<Ipv4Addr>, nodelay: bool) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    if let Some(ip) = source {
        sys::set_bind_address_no_port(socket.as_raw_fd())?;
        socket.bind(&SockAddr::from(SocketAddrV4::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(socket)))
}

/// `Ok(true)` once a non-blocking connect has completed, `Ok(false)` while it is pending.
fn connect_finished(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Readiness reported for one connection.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// Readable, read-closed or error: try reading.
    pub read: bool,
    /// Writable: try connecting/writing.
    pub write: bool,
}

/// Where a subscriber is in its life.
#[derive(Debug)]
pub enum SubStage {
    /// Waiting for the TCP handshake; the request is ready.
    Connecting(Vec<u8>),
    /// Writing the request (`written` bytes are out).
    Sending(Vec<u8>, usize),
    /// Collecting the response head.
    Head(Vec<u8>),
    /// Receiving events.
    Streaming(StreamDecoder),
    /// Closed (by the server, an error, or a refused subscription).
    Closed,
}

/// One subscriber connection.
pub struct Subscriber {
    /// The socket, until closed.
    pub stream: Option<TcpStream>,
    /// Topic index (unused by a pattern subscriber, which receives every topic).
    pub topic: u32,
    /// Lifecycle.
    pub stage: SubStage,
    /// Which events arrived.
    pub tracker: SubTracker,
    /// Reached `Streaming` at some point (its losses count even after it is closed).
    pub streamed: bool,
    /// The TLS session of an `https://` URL.
    tls: Option<Box<Session>>,
}

/// What a subscriber needs from the driver while handling readiness.
pub struct SubCx<'a> {
    /// Shared read buffer.
    pub rbuf: &'a mut [u8],
    /// Accounting.
    pub tally: &'a mut Tally,
    /// Tool start, the zero of event timestamps.
    pub clock: Instant,
    /// Subscriber transport.
    pub transport: Transport,
    /// For switching interest after the request is out.
    pub registry: &'a Registry,
    /// This subscriber's token.
    pub token: Token,
}

impl Subscriber {
    /// A subscriber whose connect has been started.
    pub fn new(
        stream: TcpStream,
        topic: u32,
        request: Vec<u8>,
        tracker: SubTracker,
        tls: Option<Session>,
    ) -> Self {
        Subscriber {
            stream: Some(stream),
            topic,
            stage: SubStage::Connecting(request),
            tracker,
            streamed: false,
            tls: tls.map(Box::new),
        }
    }

    /// A subscriber that could not even start connecting.
    pub fn failed(topic: u32, tracker: SubTracker) -> Self {
        Subscriber {
            stream: None,
            topic,
            stage: SubStage::Closed,
            tracker,
            streamed: false,
            tls: None,
        }
    }

    /// With TLS, whether the handshake resumed a session (`None` in plaintext or before it ends).
    pub fn tls_resumed(&self) -> Option<bool> {
        self.tls.as_ref().and_then(|t| t.resumed())
    }

    /// Handshake finished or not yet started: still counts as "connecting".
    pub fn is_handshaking(&self) -> bool {
        matches!(
            self.stage,
            SubStage::Connecting(_) | SubStage::Sending(..) | SubStage::Head(_)
        )
    }

    /// Handles readiness; returns why the subscriber closed, if it did. The caller compares
    /// `streamed` and `is_handshaking()` before and after to account for the transition.
    pub fn on_ready(&mut self, ready: Ready, cx: &mut SubCx<'_>) -> Option<String> {
        let reason = self.step(ready, cx)?;
        self.stream = None;
        self.stage = SubStage::Closed;
        Some(reason)
    }

    fn step(&mut self, ready: Ready, cx: &mut SubCx<'_>) -> Option<String> {
        let stream = self.stream.as_mut()?;
        if let SubStage::Connecting(request) = &mut self.stage {
            match connect_finished(stream) {
                Ok(true) => self.stage = SubStage::Sending(std::mem::take(request), 0),
                Ok(false) => return None,
                Err(e) => return Some(format!("connect: {e}")),
            }
        }
        if let SubStage::Sending(request, written) = &mut self.stage {
            while *written < request.len() {
                match write_via(stream, self.tls.as_deref_mut(), &request[*written..]) {
                    Io::Done(n) => *written += n,
                    Io::WouldBlock => return None,
                    Io::Closed => return Some("closed while sending the request".into()),
                    Io::Failed(e) => return Some(format!("send request: {e}")),
                }
            }
            // Only reads matter from now on; dropping WRITABLE avoids needless wake-ups.
            if let Err(e) = cx.registry.reregister(stream, cx.token, Interest::READABLE) {
                return Some(format!("reregister: {e}"));
            }
            self.stage = SubStage::Head(Vec::with_capacity(512));
        }
        if !ready.read {
            return None;
        }
        loop {
            match read_via(stream, self.tls.as_deref_mut(), cx.rbuf) {
                Io::Done(n) => {
                    let now_ns = cx.clock.elapsed().as_nanos() as u64;
                    if let Some(reason) = Self::absorb(
                        &mut self.stage,
                        &mut self.tracker,
                        &mut self.streamed,
                        self.topic,
                        &cx.rbuf[..n],
                        cx.tally,
                        cx.transport,
                        now_ns,
                    ) {
                        return Some(reason);
                    }
                    // A short read emptied the socket; edge-triggered epoll reports new data.
                    if n < cx.rbuf.len() {
                        return None;
                    }
                }
                Io::WouldBlock => return None,
                Io::Closed => return Some("server closed the connection".into()),
                Io::Failed(e) => return Some(format!("read: {e}")),
            }
        }
    }

    /// Consumes received bytes: the response head first, then the event stream.
    #[allow(clippy::too_many_arguments)]
    fn absorb(
        stage: &mut SubStage,
        tracker: &mut SubTracker,
        streamed: &mut bool,
        topic: u32,
        bytes: &[u8],
        tally: &mut Tally,
        transport: Transport,
        now_ns: u64,
    ) -> Option<String> {
        let mut on_event = |body: &[u8]| tally.on_event(tracker, u64::from(topic), body, now_ns);
        match stage {
            SubStage::Head(head) => {
                head.extend_from_slice(bytes);
                let (h, len) = match http::parse_head(head) {
                    Ok(Some(parsed)) => parsed,
                    Ok(None) => return None,
                    Err(e) => return Some(format!("subscribe response: {e}")),
                };
                if h.status != transport.expected_status() {
                    return Some(format!("subscribe refused: HTTP {}", h.status));
                }
                let head = std::mem::take(head);
                let mut decoder = transport.decoder(&h);
                *streamed = true;
                let result = decoder.feed(&head[len..], &mut on_event);
                *stage = SubStage::Streaming(decoder);
                match result {
                    Ok(Flow::Open) => None,
                    Ok(Flow::Ended) => Some("server ended the stream".into()),
                    Err(e) => Some(format!("stream: {e}")),
                }
            }
            SubStage::Streaming(decoder) => match decoder.feed(bytes, &mut on_event) {
                Ok(Flow::Open) => None,
                Ok(Flow::Ended) => Some("server ended the stream".into()),
                Err(e) => Some(format!("stream: {e}")),
            },
            _ => None,
        }
    }
}

/// A keep-alive publisher connection with pipelined POSTs.
pub struct Publisher {
    stream: TcpStream,
    connected: bool,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    /// Event numbers sent and not yet answered, oldest first (responses come in order).
    pub inflight: VecDeque<u64>,
    /// PUBLISH frames instead of POSTs: `Some(upgraded)` once the handshake is queued.
    frames: Option<bool>,
    /// Scratch for one event body before it is framed.
    body: Vec<u8>,
    /// The TLS session of an `https://` URL.
    tls: Option<Box<Session>>,
}

/// What a publisher reports back.
#[derive(Default, Debug)]
pub struct PubCounters {
    /// Responses read.
    pub responses: u64,
    /// Non-200 responses.
    pub errors: u64,
    /// The first non-200 response, for the report.
    pub first_error: Option<String>,
}

impl Publisher {
    /// Starts connecting.
    ///
    /// With `frames_authority`, the connection is first upgraded to sseloop frames
    /// (`GET /frames?topic=loadgen-publisher`, a topic never published to) and events go as PUBLISH frames.
    pub fn connect(
        addr: SocketAddr,
        window: usize,
        frames_authority: Option<&str>,
        tls: Option<Session>,
    ) -> io::Result<Self> {
        let mut out = Vec::with_capacity(64 * 1024);
        if let Some(authority) = frames_authority {
            // The server requires a topic; one nobody publishes to keeps this connection silent.
            Transport::Frames.subscribe_request(
                &mut out,
                authority,
                "/frames?topic=loadgen-publisher",
            );
        }
        Ok(Publisher {
            stream: connect(addr, None, true)?,
            connected: false,
            out,
            out_pos: 0,
            inbuf: Vec::with_capacity(64 * 1024),
            inflight: VecDeque::with_capacity(window),
            frames: frames_authority.map(|_| false),
            body: Vec::new(),
            tls: tls.map(Box::new),
        })
    }

    /// The socket, for registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The TCP handshake is done.
    pub fn is_connected(&self) -> bool {
        self.connected && self.frames != Some(false)
    }

    /// Queues one POST of event `g` (flushed by [`Publisher::flush`]); for PUBLISH frames,
    /// `head` is the topic name and `g` (8 bytes, big-endian) the correlation id.
    pub fn queue(&mut self, head: &[u8], ts_ns: u64, g: u64, size: usize) {
        if self.frames.is_some() {
            self.body.clear();
            payload::encode(&mut self.body, ts_ns, g, size);
            let topic = std::str::from_utf8(head).unwrap_or("");
            // Topic and size were accepted by the CLI; an encode error would show as no ACK.
            let _ = sseloop::frame::payload::encode_publish_frame(
                &mut self.out,
                &g.to_be_bytes(),
                &[topic],
                "",
                &self.body,
            );
        } else {
            self.out.extend_from_slice(head);
            payload::encode(&mut self.out, ts_ns, g, size);
        }
        self.inflight.push_back(g);
    }

    /// Writes queued requests until done or the socket is full.
    pub fn flush(&mut self) -> Result<(), String> {
        if !self.connected {
            return Ok(());
        }
        while self.out_pos < self.out.len() {
            let tls = self.tls.as_deref_mut();
            match write_via(&mut self.stream, tls, &self.out[self.out_pos..]) {
                Io::Done(n) => self.out_pos += n,
                Io::WouldBlock => return Ok(()),
                Io::Closed => return Err("publisher connection closed".into()),
                Io::Failed(e) => return Err(format!("publish write: {e}")),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Handles readiness: completes the connect, writes, reads responses.
    pub fn on_ready(
        &mut self,
        ready: Ready,
        rbuf: &mut [u8],
        tally: &mut Tally,
        counters: &mut PubCounters,
    ) -> Result<(), String> {
        if !self.connected {
            match connect_finished(&self.stream) {
                Ok(true) => self.connected = true,
                Ok(false) => return Ok(()),
                Err(e) => return Err(format!("publisher connect: {e}")),
            }
        }
        if ready.write {
            self.flush()?;
        }
        if !ready.read {
            return Ok(());
        }
        loop {
            match read_via(&mut self.stream, self.tls.as_deref_mut(), rbuf) {
                Io::Done(n) => {
                    self.inbuf.extend_from_slice(&rbuf[..n]);
                    self.take_responses(tally, counters)?;
                    if n < rbuf.len() {
                        return Ok(());
                    }
                }
                Io::WouldBlock => return Ok(()),
                Io::Closed => return Err("server closed a publisher connection".into()),
                Io::Failed(e) => return Err(format!("publish read: {e}")),
            }
        }
    }

    fn take_responses(
        &mut self,
        tally: &mut Tally,
        counters: &mut PubCounters,
    ) -> Result<(), String> {
        if self.frames.is_some() {
            return self.take_acks(tally, counters);
        }
        let mut pos = 0;
        while let Some((head, head_len)) =
            http::parse_head(&self.inbuf[pos..]).map_err(|e| format!("publish response: {e}"))?
        {
            let body_len = head.content_length.ok_or(
                "publish response without Content-Length (chunked replies are not supported)",
            )?;
            if self.inbuf.len() - pos < head_len + body_len {
                break;
            }
            let g = self
                .inflight
                .pop_front()
                .ok_or("publish response with no request outstanding")?;
            counters.responses += 1;
            // Any 2xx: nchan answers 201/202 (channel info) where sseloop answers 200.
            if (200..300).contains(&head.status) {
                tally.acked[(g % tally.topics) as usize] += 1;
            } else {
                counters.errors += 1;
                if counters.first_error.is_none() {
                    let body = &self.inbuf[pos + head_len..pos + head_len + body_len];
                    counters.first_error = Some(format!(
                        "publish of event {g}: HTTP {} {}",
                        head.status,
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ));
                }
                tally.window.cancel(g);
            }
            pos += head_len + body_len;
        }
        self.inbuf.drain(..pos);
        Ok(())
    }

    /// Frame mode: the `101` head, then PUBLISH_ACK (or ERROR) per PUBLISH, in order.
    fn take_acks(&mut self, tally: &mut Tally, counters: &mut PubCounters) -> Result<(), String> {
        use sseloop::frame::payload::{parse, Payload};
        let mut pos = 0;
        if self.frames == Some(false) {
            let Some((head, head_len)) =
                http::parse_head(&self.inbuf).map_err(|e| format!("publisher handshake: {e}"))?
            else {
                return Ok(());
            };
            if head.status != 101 {
                return Err(format!("publisher handshake: HTTP {}", head.status));
            }
            self.frames = Some(true);
            pos = head_len;
        }
        let decoder = sseloop::frame::FrameDecoder::new(crate::transport::FRAME_MAX_PAYLOAD);
        while let Some(frame) = decoder
            .decode(&self.inbuf[pos..])
            .map_err(|e| format!("publisher frames: {e}"))?
        {
            let payload = &self.inbuf[pos..][frame.payload_range()];
            let (ok, correlation) = match parse(payload) {
                Ok(Payload::PublishAck { correlation, .. }) => (true, correlation),
                Ok(Payload::Error {
                    correlation,
                    message,
                    code,
                    ..
                }) => {
                    if counters.first_error.is_none() {
                        counters.first_error =
                            Some(format!("PUBLISH refused: {:#06x} {message}", code.0));
                    }
                    if correlation.is_empty() {
                        return Err(format!("publisher got ERROR {:#06x}: {message}", code.0));
                    }
                    (false, correlation)
                }
                Ok(_) => {
                    pos += frame.frame_len();
                    continue;
                }
                Err(e) => return Err(format!("publisher frame payload: {e:?}")),
            };
            let g = self
                .inflight
                .pop_front()
                .ok_or("PUBLISH_ACK with no PUBLISH outstanding")?;
            if correlation != g.to_be_bytes() {
                return Err(format!("PUBLISH_ACK out of order (expected event {g})"));
            }
            counters.responses += 1;
            if ok {
                tally.acked[(g % tally.topics) as usize] += 1;
            } else {
                counters.errors += 1;
                tally.window.cancel(g);
            }
            pos += frame.frame_len();
        }
        self.inbuf.drain(..pos);
        Ok(())
    }
}
