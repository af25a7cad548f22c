//! [`FrameClient`]: a small blocking frame-mode client over `std::net::TcpStream`, for the
//! integration tests and tools. It is the reference for the client side of docs/PROTOCOL.md:
//! the handshake, then frames both ways.
//!
//! Reads tolerate any split: the response head is read until complete, bytes after it are kept
//! as the start of the frame stream, and a frame that spans reads (or a `recv` that timed out
//! half-way through a frame) stays buffered for the next call. The client does not answer the
//! server's PINGs on its own; callers see every frame and reply with [`FrameClient::pong`].

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::codec::FrameDecoder;
use super::owned::OwnedPayload;
use super::payload::{
    encode_ping_frame, encode_pong_frame, encode_publish_frame, encode_publish_frame_idempotent,
    encode_subscribe_frame, encode_unsubscribe_frame, parse, EncodeError,
};

/// Connect, read and write timeout until the caller sets others: a test against a hung server
/// fails instead of hanging.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest response head accepted; the server's 101 is about 80 bytes.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Default limit on a received payload. Larger than the server's default `--max-frame`, because
/// an EVENT frame carries a body of up to that size plus its id, topics and type.
pub const DEFAULT_CLIENT_MAX_PAYLOAD: usize = 16 << 20;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// The server answered the handshake with something other than `101 Switching Protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeError {
    /// The response status (400, 401, 426, ...).
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handshake refused: {} {}", self.status, self.reason)
    }
}

impl std::error::Error for HandshakeError {}

/// The status of a refused handshake, if `err` came from [`FrameClient::connect`] for that
/// reason.
pub fn handshake_status(err: &io::Error) -> Option<u16> {
    err.get_ref()?
        .downcast_ref::<HandshakeError>()
        .map(|h| h.status)
}

/// Appends `s` percent-encoded for a query value: every byte outside `[A-Za-z0-9._~-]` becomes
/// `%XX` (so `/` is `%2F` and `:` is `%3A`).
pub fn percent_encode(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0F));
        }
    }
}

/// The uppercase hex digit of a nibble.
fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).map_or('0', |c| c.to_ascii_uppercase())
}

/// The handshake request head for `host` (as it goes in the `Host` header).
pub fn handshake_request(
    host: &str,
    topics: &[&str],
    last_event_id: Option<&str>,
    token: Option<&str>,
) -> io::Result<String> {
    for value in [Some(host), last_event_id, token].into_iter().flatten() {
        // A CR or LF would end the header early and let the value inject others.
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "header value contains CR or LF",
            ));
        }
    }
    let mut head = String::from("GET /frames");
    for (i, topic) in topics.iter().enumerate() {
        head.push_str(if i == 0 { "?topic=" } else { "&topic=" });
        percent_encode(topic, &mut head);
    }
    head.push_str(" HTTP/1.1\r\nHost: ");
    head.push_str(host);
    head.push_str("\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n");
    if let Some(token) = token {
        head.push_str("Authorization: Bearer ");
        head.push_str(token);
        head.push_str("\r\n");
    }
    if let Some(id) = last_event_id {
        head.push_str("Last-Event-ID: ");
        head.push_str(id);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    Ok(head)
}

/// A blocking frame-mode connection.
pub struct FrameClient {
    stream: TcpStream,
    /// Received bytes; those before `start` are consumed.
    buf: Vec<u8>,
    start: usize,
    decoder: FrameDecoder,
    /// The per-read timeout restored after each `recv` with a deadline.
    read_timeout: Option<Duration>,
}

impl FrameClient {
    /// Connects to `addr`, performs the upgrade handshake for `topics`, and returns the client
    /// once the server has answered `101`. A refusal is an error for which
    /// [`handshake_status`] gives the status.
    pub fn connect(
        addr: SocketAddr,
        topics: &[&str],
        last_event_id: Option<&str>,
        token: Option<&str>,
    ) -> io::Result<FrameClient> {
        let request = handshake_request(&addr.to_string(), topics, last_event_id, token)?;
        let mut stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        stream.write_all(request.as_bytes())?;
        let mut client = FrameClient {
            stream,
            buf: Vec::new(),
            start: 0,
            decoder: FrameDecoder::new(DEFAULT_CLIENT_MAX_PAYLOAD),
            read_timeout: Some(DEFAULT_TIMEOUT),
        };
        client.read_response_head()?;
        Ok(client)
    }

    /// Reads until the response head is complete, checks it, and leaves any bytes after it in
    /// the buffer as the first frame bytes.
    fn read_response_head(&mut self) -> io::Result<()> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    check_upgrade(&response)?;
                    self.start = head_len;
                    return Ok(());
                }
                Ok(httparse::Status::Partial) if self.buf.len() < MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(invalid_data("response head too long"));
                }
                Err(e) => return Err(invalid_data(format!("bad response head: {e}"))),
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection during the handshake",
                ));
            }
        }
    }

    /// Publishes one event to `topics`; an empty `event_type` or `correlation` means none. The
    /// answer (PUBLISH_ACK or ERROR) arrives through [`FrameClient::recv`].
    pub fn publish(
        &mut self,
        topics: &[&str],
        event_type: &str,
        data: &[u8],
        correlation: &[u8],
    ) -> io::Result<()> {
        self.send_with(|out| encode_publish_frame(out, correlation, topics, event_type, data))
    }

    /// Sends a PUBLISH with an idempotency key: a repeat with the same key (within the server's
    /// window) is answered with the first one's id instead of publishing again.
    pub fn publish_idempotent(
        &mut self,
        topics: &[&str],
        event_type: &str,
        data: &[u8],
        correlation: &[u8],
        idempotency_key: &str,
    ) -> io::Result<()> {
        self.send_with(|out| {
            encode_publish_frame_idempotent(
                out,
                correlation,
                topics,
                event_type,
                data,
                idempotency_key,
            )
        })
    }

    /// Adds `topics`, replaying retained events after `last_event_id` if given.
    pub fn subscribe(&mut self, topics: &[&str], last_event_id: Option<&str>) -> io::Result<()> {
        let last = last_event_id.unwrap_or("");
        self.send_with(|out| encode_subscribe_frame(out, topics, last))
    }

    /// Removes `topics`.
    pub fn unsubscribe(&mut self, topics: &[&str]) -> io::Result<()> {
        self.send_with(|out| encode_unsubscribe_frame(out, topics))
    }

    /// Sends a PING; the server answers with a PONG carrying `opaque`.
    pub fn ping(&mut self, opaque: &[u8]) -> io::Result<()> {
        self.send_with(|out| encode_ping_frame(out, opaque))
    }

    /// Answers a server PING.
    pub fn pong(&mut self, opaque: &[u8]) -> io::Result<()> {
        self.send_with(|out| encode_pong_frame(out, opaque))
    }

    /// Sends any payload, including kinds the server does not accept from clients (for tests).
    pub fn send(&mut self, payload: &OwnedPayload) -> io::Result<()> {
        self.send_with(|out| payload.encode_frame(out))
    }

    /// Writes raw bytes, e.g. a broken frame (for tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn send_with(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> io::Result<()> {
        let mut out = Vec::new();
        encode(&mut out).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.stream.write_all(&out)
    }

    /// Returns the next frame's payload.
    ///
    /// With `Some(timeout)`, waits at most that long in total and fails with `TimedOut`; with
    /// `None`, each read waits as long as [`FrameClient::set_read_timeout`] says. Bytes of a
    /// frame that had not fully arrived stay buffered, so the next call picks up where this one
    /// stopped. A frame whose payload does not parse is consumed and reported as `InvalidData`
    /// (the next call reads on); a broken frame stream is `InvalidData` for good, and the server
    /// closing the connection is `UnexpectedEof`.
    pub fn recv(&mut self, timeout: Option<Duration>) -> io::Result<OwnedPayload> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let result = self.recv_until(deadline);
        if deadline.is_some() {
            self.stream.set_read_timeout(self.read_timeout)?;
        }
        result
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> io::Result<OwnedPayload> {
        loop {
            if let Some(payload) = self.next_buffered()? {
                return Ok(payload);
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                self.stream.set_read_timeout(Some(left))?;
            }
            match self.fill() {
                Ok(0) => {
                    let detail = if self.pending().is_empty() {
                        "server closed the connection"
                    } else {
                        "server closed the connection inside a frame"
                    };
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, detail));
                }
                Ok(_) => {}
                // Platforms report an expired read timeout as either kind.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes one complete frame out of the buffer, if there is one.
    fn next_buffered(&mut self) -> io::Result<Option<OwnedPayload>> {
        let pending = self.pending();
        let frame = match self.decoder.decode(pending) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let parsed = pending
            .get(frame.payload_range())
            .map(|payload| parse(payload).map(OwnedPayload::from));
        self.start += frame.frame_len();
        match parsed {
            Some(Ok(payload)) => Ok(Some(payload)),
            Some(Err(e)) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Err(invalid_data("decoder returned a range outside the buffer")),
        }
    }

    /// Received bytes not yet consumed.
    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// One read from the socket into the buffer, dropping consumed bytes first.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    if let Some(got) = chunk.get(..n) {
                        self.buf.extend_from_slice(got);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets the per-read timeout used by [`FrameClient::recv`] with no timeout of its own
    /// (`None` blocks indefinitely). The default is [`DEFAULT_TIMEOUT`].
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// Sets the largest payload accepted from the server (default
    /// [`DEFAULT_CLIENT_MAX_PAYLOAD`]).
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.decoder = FrameDecoder::new(max_payload);
    }

    /// The socket, e.g. to shut down its write side or read its local address.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// Accepts only `101` with `Upgrade: cafe` and `Connection: Upgrade`.
fn check_upgrade(response: &httparse::Response<'_, '_>) -> io::Result<()> {
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(io::Error::other(HandshakeError {
            status,
            reason: response.reason.unwrap_or("").to_owned(),
        }));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .unwrap_or("")
    };
    let connection_upgrade = header("Connection")
        .split(',')
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !header("Upgrade").trim().eq_ignore_ascii_case("cafe") || !connection_upgrade {
        return Err(invalid_data(
            "101 response without Upgrade: cafe and Connection: Upgrade",
        ));
    }
    Ok(())
}

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no complete frame before the timeout",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::code::ErrorCode;
    use crate::frame::payload::{encode_error_frame, encode_event_frame, encode_publish_ack_frame};
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn percent_encoding_table() {
        let cases = [
            ("abc", "abc"),
            ("a/b:c", "a%2Fb%3Ac"),
            ("A-Z_0.9~", "A-Z_0.9~"),
            ("sp ace&=?#%", "sp%20ace%26%3D%3F%23%25"),
            ("é", "%C3%A9"),
            ("", ""),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            percent_encode(input, &mut out);
            assert_eq!(out, want, "{input:?}");
        }
    }

    #[test]
    fn request_head_exact_bytes() {
        let head =
            handshake_request("127.0.0.1:9", &["a/b", "c"], Some("r-4"), Some("s3cret")).unwrap();
        assert_eq!(
            head,
            "GET /frames?topic=a%2Fb&topic=c HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\
             Connection: Upgrade\r\nUpgrade: cafe\r\nAuthorization: Bearer s3cret\r\n\
             Last-Event-ID: r-4\r\n\r\n"
        );
        let bare = handshake_request("h", &[], None, None).unwrap();
        assert_eq!(
            bare,
            "GET /frames HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n\r\n"
        );
        let err = handshake_request("h", &["t"], Some("x\r\nEvil: 1"), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// A one-connection server: reads the request head, then writes `reply` one byte at a time
    /// (the worst split), then reads whatever the client sends until it closes.
    fn serve(reply: Vec<u8>) -> (SocketAddr, thread::JoinHandle<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_nodelay(true).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                sock.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            for b in &reply {
                sock.write_all(std::slice::from_ref(b)).unwrap();
            }
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
            (String::from_utf8(head).unwrap(), rest)
        });
        (addr, handle)
    }

    const SWITCH: &[u8] =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: cafe\r\nConnection: Upgrade\r\n\r\n";

    #[test]
    fn handshake_then_frames_split_bytewise() {
        let mut reply = SWITCH.to_vec();
        encode_event_frame(&mut reply, "r-1", &["a/b"], "", b"x").unwrap();
        encode_publish_ack_frame(&mut reply, b"c1", "r-2").unwrap();
        encode_error_frame(&mut reply, ErrorCode::BAD_TOPIC, 4, b"", "no").unwrap();
        let (addr, server) = serve(reply);

        let mut client = FrameClient::connect(addr, &["a/b"], Some("r-0"), None).unwrap();
        let got: Vec<OwnedPayload> = (0..3)
            .map(|_| client.recv(Some(Duration::from_secs(5))).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                OwnedPayload::Event {
                    id: "r-1".into(),
                    topics: vec!["a/b".into()],
                    event_type: String::new(),
                    data: b"x".to_vec()
                },
                OwnedPayload::PublishAck {
                    correlation: b"c1".to_vec(),
                    id: "r-2".into()
                },
                OwnedPayload::Error {
                    code: ErrorCode::BAD_TOPIC,
                    about: 4,
                    correlation: Vec::new(),
                    message: "no".into()
                },
            ]
        );
        client.publish(&["t"], "", b"d", b"k").unwrap();
        client.ping(b"p").unwrap();
        client.stream().shutdown(std::net::Shutdown::Write).unwrap();
        let (head, sent) = server.join().unwrap();
        assert!(head.starts_with("GET /frames?topic=a%2Fb HTTP/1.1\r\n"));
        assert!(head.contains("\r\nLast-Event-ID: r-0\r\n"));
        let mut want = Vec::new();
        encode_publish_frame(&mut want, b"k", &["t"], "", b"d").unwrap();
        encode_ping_frame(&mut want, b"p").unwrap();
        assert_eq!(sent, want);
    }

    #[test]
    fn refused_handshake_reports_status() {
        let (addr, server) =
            serve(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec());
        let err = match FrameClient::connect(addr, &["t"], None, Some("wrong")) {
            Ok(_) => panic!("connected"),
            Err(e) => e,
        };
        assert_eq!(handshake_status(&err), Some(401), "{err}");
        drop(server.join());
    }

    #[test]
    fn wrong_upgrade_is_refused() {
        let (addr, server) =
            serve(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec());
        let err = FrameClient::connect(addr, &["t"], None, None)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(handshake_status(&err), None);
        drop(server.join());
    }

    #[test]
    fn timeout_keeps_a_partial_frame() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let server = thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut frame = Vec::new();
            encode_ping_frame(&mut frame, b"half and half").unwrap();
            let mut first = SWITCH.to_vec();
            first.extend_from_slice(&frame[..8]);
            sock.write_all(&first).unwrap();
            go_rx.recv().unwrap();
            sock.write_all(&frame[8..]).unwrap();
            let _ = sock.read_to_end(&mut Vec::new());
        });
        let mut client = FrameClient::connect(addr, &["t"], None, None).unwrap();
        let err = client.recv(Some(Duration::from_millis(50))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        go_tx.send(()).unwrap();
        let got = client.recv(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            got,
            OwnedPayload::Ping {
                opaque: b"half and half".to_vec()
            }
        );
        client.stream().shutdown(std::net::Shutdown::Both).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn bad_payload_is_skipped_and_eof_reported() {
        let mut reply = SWITCH.to_vec();
        reply.extend_from_slice(b"\xCA\xFE\0\0\0\x01\x77");
        encode_pong_frame(&mut reply, b"ok").unwrap();
        let (addr, server) = serve(reply);
        let mut client = FrameClient::connect(addr, &["t"], None, None).unwrap();
        let timeout = Some(Duration::from_secs(5));
        let err = client.recv(timeout).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let pong = client.recv(timeout).unwrap();
        assert_eq!(
            pong,
            OwnedPayload::Pong {
                opaque: b"ok".to_vec()
            }
        );
        client.stream().shutdown(std::net::Shutdown::Write).unwrap();
        server.join().unwrap();
        let err = client.recv(timeout).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
