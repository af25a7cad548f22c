//! TLS on the listener (`--tls-cert`, `--tls-key`, `--tls-client-ca`), with real clients: curl,
//! Python's `ssl` and `httpx`, a rustls client for frames, mTLS, certificate rotation by SIGHUP,
//! plaintext sent to the TLS port, a stalled handshake, an `h2`-only client, start-up errors and
//! the `close_notify` of a graceful shutdown.
//!
//! Certificates are made for each test with the `openssl` CLI in a temporary directory (a test
//! CA, a server certificate for IP:127.0.0.1 and DNS:localhost, a client certificate); nothing
//! with a private key is committed.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sseloop::frame::payload::{encode_publish_frame, parse};
use sseloop::frame::{FrameDecoder, OwnedPayload};
use util::{parse_metrics, run_binary, skipped, wait_until, TestServer, TIMEOUT};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn have(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn openssl_available() -> bool {
    let ok = have("openssl", &["version"]);
    if !ok {
        skipped("openssl", "TLS tests", "apt-get install openssl");
    }
    ok
}

/// A temporary directory of test certificates, removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `openssl` with `line`'s words as arguments.
fn openssl(dir: &Path, line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// A CA, `server.pem`/`server.key` (CN `first`) and `client.pem`/`client.key`.
    fn new() -> Certs {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sseloop-tls-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let certs = Certs { dir };
        let d = &certs.dir;
        openssl(
            d,
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.pem -days 2 -subj /CN=sseloop-test-CA",
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        certs.issue("server", "first", "server.ext");
        certs.issue("client", "publisher", "client.ext");
        certs
    }

    /// Issues `<name>.pem` and `<name>.key` for `cn`, signed by the CA.
    fn issue(&self, name: &str, cn: &str, ext: &str) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &self.dir,
            &format!(
                "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {key} -out {csr} \
                 -subj /CN={cn}"
            ),
        );
        openssl(
            &self.dir,
            &format!(
                "x509 -req -in {csr} -CA ca.pem -CAkey ca.key -CAcreateserial -out {pem} -days 2 \
                 -extfile {ext}"
            ),
        );
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn der(&self, name: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(self.dir.join(name))
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// The server arguments for `server.pem`.
    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("server.pem"),
            "--tls-key".into(),
            self.path("server.key"),
        ]
    }

    fn start(&self, extra: &[&str]) -> TestServer {
        let mut args = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestServer::start(&args)
    }

    fn client_config(&self, alpn: &[&[u8]], client_cert: bool) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.dir.join("ca.pem")).unwrap())
            .unwrap();
        let builder = ClientConfig::builder_with_provider(sseloop::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = if client_cert {
            let chain = vec![CertificateDer::from_pem_file(self.dir.join("client.pem")).unwrap()];
            let key = PrivateKeyDer::from_pem_file(self.dir.join("client.key")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS connection to `addr` with the handshake done (or its error).
    fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
        client_cert: bool,
    ) -> std::io::Result<TlsStream> {
        let conn = ClientConnection::new(
            self.client_config(alpn, client_cert),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        // TLS 1.3: a refused client certificate is only known once the server has read it.
        stream.flush()?;
        Ok(stream)
    }
}

/// Sends `request` over TLS and returns the response until the server closes.
fn https(certs: &Certs, addr: SocketAddr, request: &str) -> String {
    let mut s = certs.connect(addr, &[b"http/1.1"], false).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn publish_request(topic: &str, body: &str) -> String {
    format!(
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn tls_metrics(certs: &Certs, addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let text = https(
        certs,
        addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    parse_metrics(text.split("\r\n\r\n").nth(1).unwrap_or(""))
}

fn failures(certs: &Certs, addr: SocketAddr, reason: &str) -> f64 {
    tls_metrics(certs, addr)
        .get(&format!(
            "sseloop_tls_handshake_failures_total{{reason=\"{reason}\"}}"
        ))
        .copied()
        .unwrap_or(-1.0)
}

/// Reads an SSE stream over TLS until `needle` has arrived.
fn read_until(s: &mut TlsStream, seen: &mut String, needle: &str) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        if start.elapsed() > TIMEOUT {
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => return false,
        }
    }
    true
}

fn open_stream(certs: &Certs, addr: SocketAddr, topic: &str) -> (TlsStream, String) {
    let mut s = certs.connect(addr, &[b"http/1.1"], false).unwrap();
    write!(s, "GET /events?topic={topic} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut s, &mut seen, "retry:"), "{seen}");
    (s, seen)
}

/// Spawns a client process and collects its standard output lines on a channel.
fn spawn_lines(cmd: &mut Command) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn client");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(needle);
                lines.push(line);
                if done {
                    return lines;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; got {lines:?}");
}

/// Publishes (retrying until the subscriber's stream is open, seen in the metrics).
fn publish_when_subscribed(certs: &Certs, server: &TestServer, topic: &str, body: &str) {
    assert!(wait_until(TIMEOUT, || {
        tls_metrics(certs, server.addr)
            .get("sseloop_subscriptions")
            .is_some_and(|&v| v >= 1.0)
    }));
    let answer = https(certs, server.addr, &publish_request(topic, body));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn curl_streams_and_publishes_over_https() {
    if !openssl_available() {
        return;
    }
    if !have("curl", &["--version"]) {
        skipped("curl", "TLS curl test", "apt-get install curl");
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&[]);
    let base = format!("https://localhost:{}", server.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", server.addr.port());
    let (mut child, rx) = spawn_lines(Command::new("curl").args([
        "-sN",
        "--cacert",
        &certs.path("ca.pem"),
        "--resolve",
        &resolve,
        &format!("{base}/events?topic=news"),
    ]));
    wait_line(&rx, "retry:");
    let out = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            &certs.path("ca.pem"),
            "--resolve",
            &resolve,
        ])
        .args([
            "-X",
            "POST",
            "--data",
            "over tls",
            &format!("{base}/publish?topic=news"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"id\""));
    let lines = wait_line(&rx, "data: over tls");
    assert!(lines.iter().any(|l| l.starts_with("id: ")), "{lines:?}");
    let _ = child.kill();
    let _ = child.wait();
    // Without the CA, curl refuses the certificate: it is really checked.
    let out = Command::new("curl")
        .args(["-s", "--resolve", &resolve, &format!("{base}/healthz")])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

const PY_SSL: &str = r#"
import socket, ssl, sys
port, ca, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
assert s.version() in ("TLSv1.2", "TLSv1.3"), s.version()
s.sendall(b"GET /events?topic=" + topic.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
buf = b""
while b"retry:" not in buf:
    buf += s.recv(4096)
print("open", s.version(), s.selected_alpn_protocol(), flush=True)
p = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
body = b"from python"
p.sendall(b"POST /publish?topic=" + topic.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: "
          + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
answer = b""
while True:
    chunk = p.recv(4096)
    if not chunk:
        break
    answer += chunk
print("published", answer.split(b"\r\n")[0].decode(), flush=True)
while b"data: from python" not in buf:
    buf += s.recv(4096)
print("received", flush=True)
"#;

#[test]
fn python_ssl_client_streams_and_publishes() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&[]);
    let (mut child, rx) = spawn_lines(Command::new("python3").args([
        "-c",
        PY_SSL,
        &server.addr.port().to_string(),
        &certs.path("ca.pem"),
        "py",
    ]));
    let lines = wait_line(&rx, "received");
    assert!(
        lines.iter().any(|l| l == "published HTTP/1.1 200 OK"),
        "{lines:?}"
    );
    let _ = child.wait();
}

const PY_HTTPX: &str = r#"
import httpx, sys, threading
port, ca = int(sys.argv[1]), sys.argv[2]
base = "https://localhost:%d" % port
with httpx.Client(verify=ca, timeout=10) as c:
    with c.stream("GET", base + "/events", params={"topic": "hx"}) as r:
        print("status", r.status_code, r.http_version, flush=True)
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("retry:"):
                break
        p = httpx.post(base + "/publish", params={"topic": "hx"}, content=b"via httpx", verify=ca)
        print("published", p.status_code, flush=True)
        for line in lines:
            # Older httpx (Debian 12's 0.23) keeps the line ending.
            if line.rstrip("\r\n") == "data: via httpx":
                print("received", flush=True)
                break
"#;

#[test]
fn httpx_client_streams_and_publishes() {
    if !openssl_available() {
        return;
    }
    // Debian's python3-httpx is for the system interpreter, which a python3 earlier in PATH
    // (pyenv, a venv) may not be.
    let Some(python) = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| have(py, &["-c", "import httpx"]))
    else {
        skipped(
            "python3-httpx",
            "TLS httpx test",
            "apt-get install python3-httpx",
        );
        return;
    };
    let certs = Certs::new();
    let server = certs.start(&[]);
    let (mut child, rx) = spawn_lines(Command::new(python).args([
        "-c",
        PY_HTTPX,
        &server.addr.port().to_string(),
        &certs.path("ca.pem"),
    ]));
    let lines = wait_line(&rx, "received");
    assert!(
        lines.iter().any(|l| l == "status 200 HTTP/1.1"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "published 200"), "{lines:?}");
    let _ = child.wait();
}

/// Reads frames over TLS until one satisfies `want`.
fn recv_frame(
    s: &mut TlsStream,
    buf: &mut Vec<u8>,
    mut want: impl FnMut(&OwnedPayload) -> bool,
) -> OwnedPayload {
    let decoder = FrameDecoder::new(1 << 20);
    let start = Instant::now();
    loop {
        while let Ok(Some(frame)) = decoder.decode(buf) {
            let payload = OwnedPayload::from(parse(&buf[frame.payload_range()]).unwrap());
            buf.drain(..frame.frame_len());
            if want(&payload) {
                return payload;
            }
        }
        assert!(start.elapsed() < TIMEOUT, "no such frame");
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn frames_upgrade_inside_tls() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&[]);
    let mut s = certs.connect(server.addr, &[b"http/1.1"], false).unwrap();
    let head = sseloop::frame::client::handshake_request("localhost", &["f"], None, None).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut s, &mut seen, "\r\n\r\n"), "{seen}");
    assert!(seen.starts_with("HTTP/1.1 101"), "{seen}");
    let mut buf = seen.split_once("\r\n\r\n").unwrap().1.as_bytes().to_vec();
    let mut frame = Vec::new();
    encode_publish_frame(&mut frame, b"c1", &["f"], "", b"framed").unwrap();
    s.write_all(&frame).unwrap();
    let ack = recv_frame(&mut s, &mut buf, |p| {
        matches!(p, OwnedPayload::PublishAck { .. })
    });
    let OwnedPayload::PublishAck { correlation, id } = ack else {
        unreachable!()
    };
    assert_eq!(correlation, b"c1");
    // The publisher subscribed to its own topic: its event comes back as an EVENT frame.
    let event = recv_frame(&mut s, &mut buf, |p| {
        matches!(p, OwnedPayload::Event { .. })
    });
    match event {
        OwnedPayload::Event { id: got, data, .. } => {
            assert_eq!((got, data.as_slice()), (id, &b"framed"[..]));
        }
        _ => unreachable!(),
    }
}

#[test]
fn mutual_tls_accepts_a_client_certificate_and_refuses_none() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let ca = certs.path("ca.pem");
    let server = certs.start(&["--tls-client-ca", &ca]);
    let mut s = certs.connect(server.addr, &[], true).unwrap();
    s.write_all(publish_request("m", "mtls").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Without a certificate: the server refuses the handshake (TLS 1.3 reports it at the first
    // read, with the alert).
    let refused = certs.connect(server.addr, &[], false).and_then(|mut s| {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")?;
        let mut b = [0u8; 64];
        s.read(&mut b)
    });
    let err = refused.expect_err("a client without a certificate must be refused");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    let ok = certs.connect(server.addr, &[], true).unwrap();
    drop(ok);
    assert!(wait_until(TIMEOUT, || {
        let mut s = certs.connect(server.addr, &[], true).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.contains("sseloop_tls_handshake_failures_total{reason=\"client_certificate\"} 1")
    }));
}

/// The DER of the certificate the server presents to a new handshake.
fn presented(certs: &Certs, addr: SocketAddr) -> Vec<u8> {
    let s = certs.connect(addr, &[b"http/1.1"], false).unwrap();
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn wait_log(server: &TestServer, needle: &str, count: usize) -> bool {
    wait_until(TIMEOUT, || {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
            >= count
    })
}

#[test]
fn rotation_by_sighup_serves_the_new_certificate_and_keeps_open_streams() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&[]);
    let first = certs.der("server.pem");
    assert_eq!(presented(&certs, server.addr), first);
    let (mut stream, mut seen) = open_stream(&certs, server.addr, "rot");

    // Renewal writes new files in place, then the operator (or certbot's hook) sends SIGHUP.
    certs.issue("server", "second", "server.ext");
    let second = certs.der("server.pem");
    assert_ne!(first, second);
    server.signal(libc::SIGHUP);
    assert!(wait_log(&server, "configuration reloaded", 1));
    assert_eq!(presented(&certs, server.addr), second);
    publish_when_subscribed(&certs, &server, "rot", "after rotation");
    assert!(
        read_until(&mut stream, &mut seen, "data: after rotation"),
        "{seen}"
    );

    // A key that is not the certificate's: the reload is refused whole, the pair in force stays.
    certs.issue("other", "other", "server.ext");
    std::fs::copy(certs.dir.join("other.key"), certs.dir.join("server.key")).unwrap();
    server.signal(libc::SIGHUP);
    assert!(wait_log(&server, "does not match the certificate", 1));
    assert_eq!(presented(&certs, server.addr), second);
    let m = tls_metrics(&certs, server.addr);
    assert_eq!(m["sseloop_config_reloads_total{result=\"error\"}"], 1.0);
    publish_when_subscribed(&certs, &server, "rot", "still open");
    assert!(
        read_until(&mut stream, &mut seen, "data: still open"),
        "{seen}"
    );
}

/// One TLS 1.3 connection of `config` (its session cache kept across calls): a request answered
/// (the session tickets come before the response), then closed. Whether it resumed a session.
fn resumed_request(config: &Arc<ClientConfig>, addr: SocketAddr) -> bool {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut s = StreamOwned::new(conn, sock);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

#[test]
fn sessions_resume_by_ticket_and_across_a_reload() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&[]);
    let config = certs.client_config(&[b"http/1.1"], false);
    assert!(
        !resumed_request(&config, server.addr),
        "the first handshake is a full one"
    );
    assert!(resumed_request(&config, server.addr), "the second resumes");
    // The ticket keys outlive a reload (a certificate rotation): returning clients still
    // resume instead of all paying a full handshake at once.
    server.signal(libc::SIGHUP);
    assert!(wait_log(&server, "configuration reloaded", 1));
    assert!(
        resumed_request(&config, server.addr),
        "resumes after a reload"
    );
    // Key exchange: X25519, the group browsers offer first, also for our own clients.
    let conn = certs.connect(server.addr, &[b"http/1.1"], false).unwrap();
    assert_eq!(
        conn.conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::X25519)
    );
}

#[test]
fn plaintext_to_the_tls_port_gets_400_tls_required() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&[]);
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nTLS required\n"), "{out}");
    assert_eq!(failures(&certs, server.addr, "plaintext"), 1.0);
}

#[test]
fn a_stalled_handshake_is_cut_at_the_header_deadline() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&["--header-timeout-ms", "300"]);
    // Before the connect: the deadline cannot start earlier.
    let start = Instant::now();
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    // The start of a ClientHello record, and then nothing.
    sock.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let mut b = [0u8; 16];
    let closed = matches!(sock.read(&mut b), Ok(0) | Err(_));
    assert!(closed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(failures(&certs, server.addr, "timeout"), 1.0);
}

#[test]
fn an_h2_only_client_gets_the_no_application_protocol_alert() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&[]);
    let err = certs
        .connect(server.addr, &[b"h2"], false)
        .expect_err("h2 alone must be refused");
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    let ok = certs
        .connect(server.addr, &[b"h2", b"http/1.1"], false)
        .unwrap();
    assert_eq!(ok.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(failures(&certs, server.addr, "no_common_protocol"), 1.0);
}

#[test]
fn graceful_shutdown_sends_close_notify_before_fin() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let mut server = certs.start(&["--grace-ms", "2000"]);
    let (mut stream, mut seen) = open_stream(&certs, server.addr, "bye");
    assert!(wait_until(TIMEOUT, || tls_metrics(&certs, server.addr)
        .get("sseloop_subscriptions")
        .is_some_and(|&v| v >= 1.0)));
    server.signal(libc::SIGTERM);
    // rustls reports a clean end (Ok(0)) only after a close_notify; a bare FIN is an error.
    let mut rest = Vec::new();
    let end = stream.read_to_end(&mut rest);
    seen.push_str(&String::from_utf8_lossy(&rest));
    assert!(end.is_ok(), "{end:?} after {seen:?}");
    assert!(seen.contains("retry:"), "{seen}");
    assert_eq!(server.wait_exit(TIMEOUT), Some(0));
}

#[test]
fn start_up_refuses_unusable_files_and_warns_about_expiry() {
    if !openssl_available() {
        return;
    }
    let certs = Certs::new();
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let (code, out) = run_binary(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", &key]);
    assert_ne!(code, Some(0));
    assert!(out.contains("cannot read /nonexistent/cert.pem"), "{out}");
    assert!(!out.contains("listening on"), "{out}");

    let (code, out) = run_binary(&["--tls-cert", &cert, "--tls-key", &certs.path("client.key")]);
    assert_ne!(code, Some(0));
    assert!(out.contains("does not match the certificate"), "{out}");

    std::fs::write(certs.dir.join("ed448.key"), b"").unwrap();
    openssl(&certs.dir, "genpkey -algorithm ed448 -out ed448.key");
    let (code, out) = run_binary(&["--tls-cert", &cert, "--tls-key", &certs.path("ed448.key")]);
    assert_ne!(code, Some(0));
    assert!(out.contains("unsupported private key"), "{out}");

    let (code, out) = run_binary(&["--tls-cert", &cert]);
    assert_ne!(code, Some(0));
    assert!(out.contains("--tls-key"), "{out}");

    // An expired certificate still serves (clients decide), with a warning.
    let d = &certs.dir;
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("serial"), "01\n").unwrap();
    std::fs::write(
        d.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    openssl(
        d,
        "ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in server.csr -out expired.pem \
         -extfile server.ext -startdate 20200101000000Z -enddate 20200102000000Z",
    );
    let expired = certs.path("expired.pem");
    let server = TestServer::start(&["--tls-cert", &expired, "--tls-key", &key]);
    assert!(wait_log(&server, "has expired", 1));
    let refused = certs.connect(server.addr, &[b"http/1.1"], false).err();
    assert!(format!("{refused:?}").contains("Expired"), "{refused:?}");
}

/// `redis-server` with only a TLS port, using the test CA's server certificate; killed on drop.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsRedis {
    fn start(certs: &Certs) -> TlsRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .args(["--tls-cert-file", &certs.path("server.pem")])
            .args(["--tls-key-file", &certs.path("server.key")])
            .args(["--tls-ca-cert-file", &certs.path("ca.pem")])
            .args(["--dir", &certs.path("")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let redis = TlsRedis { child, port };
        assert!(wait_until(TIMEOUT, || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()));
        redis
    }
}

#[test]
fn rediss_backplane_verifies_the_server_and_carries_events() {
    if !openssl_available() {
        return;
    }
    if !have("redis-server", &["--version"]) {
        skipped(
            "redis-server",
            "the rediss:// test",
            "apt-get install redis-server",
        );
        return;
    }
    let certs = Certs::new();
    let redis = TlsRedis::start(&certs);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = certs.path("ca.pem");
    let server = TestServer::start(&["--backplane", &url, "--backplane-ca", &ca]);
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_backplane_up")
        == 1.0));
    let mut sub = server.subscribe("topic=r", &[]);
    let id = server.publish("topic=r", "through rediss");
    let event = sub.next_event();
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (id.as_str(), "through rediss")
    );

    // With the system's CAs only, the test CA's certificate is refused: the name and the chain
    // are checked, so the backplane never comes up.
    let untrusted = TestServer::start(&["--backplane", &url]);
    assert!(wait_until(TIMEOUT, || untrusted
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("UnknownIssuer"))));
    assert_eq!(untrusted.metric("sseloop_backplane_up"), 0.0);
}

#[test]
fn chromium_event_source_over_https() {
    if !openssl_available() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let chromium = std::env::var("SSELOOP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() || !dir.join("node_modules/playwright-core").is_dir() {
        skipped(
            "chromium or tests/console/node_modules",
            "the TLS browser test",
            "apt-get install chromium; npm ci in tests/console",
        );
        return;
    }
    let certs = Certs::new();
    let server = certs.start(&[]);
    let pem = certs.path("server.pem");
    let spki = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {pem} -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64"
        ))
        .output()
        .unwrap();
    let spki = String::from_utf8(spki.stdout).unwrap().trim().to_string();
    assert_eq!(spki.len(), 44, "{spki}");
    let out = Command::new("node")
        .arg("tls.mjs")
        .current_dir(&dir)
        .env(
            "SSELOOP_URL",
            format!("https://localhost:{}", server.addr.port()),
        )
        .env("SSELOOP_SPKI", &spki)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("2 passed, 0 failed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
