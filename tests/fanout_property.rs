//! The fan-out invariant, checked on random interleavings against the real server, stepped in
//! process (`Server::poll_once`) over real loopback sockets: every event acknowledged while a
//! connection subscribes to one of its topics reaches that connection exactly once, in id order,
//! whichever path published it (HTTP, PUBLISH frame, `PublishHandle` from another thread) and
//! however publishes, subscribes, unsubscribes and resumes interleave.

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sseloop::frame::{self, FrameDecoder, Payload};
use sseloop::{Config, PublishHandle, Server};

const TOPICS: [&str; 3] = ["a", "b", "c"];

fn names(mask: u8) -> Vec<&'static str> {
    (0..3)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| TOPICS[i])
        .collect()
}

#[derive(Clone, Debug)]
enum Resume {
    None,
    /// Resume after the last id another SSE client received.
    FromClient(usize),
    /// An id this run never issued.
    Bogus,
}

#[derive(Clone, Debug)]
enum Op {
    PublishHttp(u8),
    PublishFrame(usize, u8),
    /// Several cross-thread publishes with no loop step between them, then a frame publish in
    /// the same iteration (the shape of the lost-event defect).
    PublishThreadBurst(u8, u8, usize),
    OpenSse(u8, Resume),
    OpenFrames(u8),
    Subscribe(usize, u8),
    Unsubscribe(usize, u8),
    CloseSse(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let mask = 1u8..8;
    prop_oneof![
        3 => mask.clone().prop_map(Op::PublishHttp),
        3 => (0usize..4, mask.clone()).prop_map(|(c, m)| Op::PublishFrame(c, m)),
        2 => (mask.clone(), 1u8..6, 0usize..4).prop_map(|(m, n, c)| Op::PublishThreadBurst(m, n, c)),
        2 => (mask.clone(), prop_oneof![
            Just(Resume::None),
            (0usize..4).prop_map(Resume::FromClient),
            Just(Resume::Bogus)
        ]).prop_map(|(m, r)| Op::OpenSse(m, r)),
        1 => mask.clone().prop_map(Op::OpenFrames),
        2 => (0usize..4, mask.clone()).prop_map(|(c, m)| Op::Subscribe(c, m)),
        2 => (0usize..4, mask.clone()).prop_map(|(c, m)| Op::Unsubscribe(c, m)),
        1 => (0usize..4).prop_map(Op::CloseSse),
    ]
}

/// An SSE subscriber as the test sees it.
struct Sse {
    sock: TcpStream,
    buf: Vec<u8>,
    topics: u8,
    /// Acks counted when the stream's head arrived: later acks of its topics must arrive.
    since_ack: usize,
    /// Resumed after this seq: every retained event above it must arrive (history is large).
    resumed_after: Option<u64>,
    got: Vec<u64>,
    /// Opened with `topic_line=1` (every other stream).
    topic_line: bool,
    /// Each event's `data:` lines but the last (the body, `x` or `t`): the topic line when
    /// `topic_line` is set, nothing otherwise.
    lines: Vec<(u64, Vec<String>)>,
    resets: usize,
    /// The response head and `retry:` arrived.
    head: bool,
    open: bool,
}

/// A frame connection as the test sees it.
struct Frames {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Per topic, the ack counts between which it was subscribed (end open while subscribed).
    windows: [Vec<(usize, Option<usize>)>; 3],
    got: Vec<u64>,
    /// PUBLISH_ACK ids, whole (the run prefix is learnt from them).
    acks: Vec<String>,
    pongs: usize,
}

struct World {
    server: Server,
    handle: PublishHandle,
    publisher: TcpStream,
    pub_buf: Vec<u8>,
    /// seq -> topic mask, in ack order.
    acked: Vec<(u64, u8)>,
    topics_of: HashMap<u64, u8>,
    sse: Vec<Sse>,
    frames: Vec<Frames>,
    run: String,
}

fn seq_of(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn connect(world: &World) -> TcpStream {
    let sock = TcpStream::connect(world.server.local_addr()).expect("connect");
    sock.set_nonblocking(true).expect("nonblocking");
    sock.set_nodelay(true).expect("nodelay");
    sock
}

fn read_some(sock: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    loop {
        match sock.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl World {
    /// A server taking input in the middle of its rounds of writes every `round_input_us` (0:
    /// after every write, so that every publish path meets rounds cut short by new events).
    fn new(round_input_us: u64) -> World {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            history: 100_000,
            heartbeat_ms: 60_000,
            round_input_us,
            ..Config::default()
        };
        let server = Server::bind(config).expect("bind");
        let handle = server.handle();
        let publisher = TcpStream::connect(server.local_addr()).expect("connect");
        publisher.set_nonblocking(true).expect("nonblocking");
        World {
            server,
            handle,
            publisher,
            pub_buf: Vec::new(),
            acked: Vec::new(),
            topics_of: HashMap::new(),
            sse: Vec::new(),
            frames: Vec::new(),
            run: String::new(),
        }
    }

    fn step(&mut self) {
        self.server
            .poll_once(Some(Duration::from_millis(1)))
            .expect("poll");
        for s in self.sse.iter_mut().filter(|s| s.open) {
            read_some(&mut s.sock, &mut s.buf);
            parse_sse(s);
        }
        for f in self.frames.iter_mut() {
            read_some(&mut f.sock, &mut f.buf);
            parse_frames(f);
        }
        read_some(&mut self.publisher, &mut self.pub_buf);
    }

    /// Steps until `done` holds (bounded).
    fn until(&mut self, what: &str, mut done: impl FnMut(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.step();
        }
    }

    fn ack(&mut self, id: &str, mask: u8) {
        if self.run.is_empty() {
            if let Some((run, _)) = id.rsplit_once('-') {
                self.run = run.to_string();
            }
        }
        let seq = seq_of(id);
        self.acked.push((seq, mask));
        self.topics_of.insert(seq, mask);
    }

    fn publish_http(&mut self, mask: u8) {
        let query: Vec<String> = names(mask).iter().map(|t| format!("topic={t}")).collect();
        let req = format!(
            "POST /publish?{} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
            query.join("&")
        );
        self.publisher.write_all(req.as_bytes()).expect("publish");
        self.until("publish response", |w| {
            find(&w.pub_buf, b"\n}\n").is_some() || find(&w.pub_buf, b"}\n").is_some()
        });
        let text = String::from_utf8_lossy(&self.pub_buf).into_owned();
        let id = text
            .split("\"id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("id in response")
            .to_string();
        self.pub_buf.clear();
        self.ack(&id, mask);
    }

    fn publish_frame(&mut self, client: usize, mask: u8) {
        let Some(f) = self.frames.get_mut(client) else {
            return self.publish_http(mask);
        };
        let mut out = Vec::new();
        frame::encode_publish_frame(&mut out, b"c", &names(mask), "", b"x").expect("encode");
        f.sock.write_all(&out).expect("write");
        let before = f.acks.len();
        self.until("PUBLISH_ACK", |w| w.frames[client].acks.len() > before);
        let id = self.frames[client].acks[before].clone();
        self.ack(&id, mask);
    }

    fn thread_burst(&mut self, mask: u8, n: u8, client: usize) {
        let ids: Vec<String> = (0..n)
            .map(|_| {
                self.handle
                    .publish(&names(mask), None, "t")
                    .expect("handle publish")
            })
            .collect();
        // The frame publish lands in the same loop iteration as the queued events.
        if self.frames.get(client).is_some() {
            self.publish_frame(client, mask);
        }
        for id in ids {
            self.ack(&id, mask);
        }
        // Acknowledged once the loop has recorded them.
        let want = self.acked.len() as u64;
        self.until("recorded", |w| w.server.metrics().published >= want);
    }

    fn open_sse(&mut self, mask: u8, resume: Resume) {
        let resume_id = match resume {
            Resume::None => None,
            Resume::Bogus => Some("nope-42".to_string()),
            Resume::FromClient(c) => self
                .sse
                .get(c)
                .and_then(|s| s.got.last().copied())
                .map(|seq| format!("{}-{seq}", self.run)),
        };
        let mut query: Vec<String> = names(mask).iter().map(|t| format!("topic={t}")).collect();
        let topic_line = self.sse.len() % 2 == 1;
        if topic_line {
            query.push("topic_line=1".into());
        }
        let mut req = format!("GET /events?{} HTTP/1.1\r\nHost: x\r\n", query.join("&"));
        if let Some(id) = &resume_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        let mut sock = connect(self);
        sock.write_all(req.as_bytes()).expect("subscribe");
        let i = self.sse.len();
        self.sse.push(Sse {
            sock,
            buf: Vec::new(),
            topics: mask,
            since_ack: usize::MAX,
            resumed_after: resume_id
                .as_deref()
                .map(seq_of)
                .filter(|_| !matches!(resume, Resume::Bogus)),
            got: Vec::new(),
            topic_line,
            lines: Vec::new(),
            resets: 0,
            head: false,
            open: true,
        });
        self.until("stream head", |w| w.sse[i].head);
        self.sse[i].since_ack = self.acked.len();
    }

    fn open_frames(&mut self, mask: u8) {
        let query: Vec<String> = names(mask).iter().map(|t| format!("topic={t}")).collect();
        let req = format!(
            "GET /frames?{} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: cafe\r\n\r\n",
            query.join("&")
        );
        let mut sock = connect(self);
        sock.write_all(req.as_bytes()).expect("upgrade");
        let i = self.frames.len();
        self.frames.push(Frames {
            sock,
            buf: Vec::new(),
            windows: Default::default(),
            got: Vec::new(),
            acks: Vec::new(),
            pongs: 0,
        });
        self.until("101", |w| find(&w.frames[i].buf, b"\r\n\r\n").is_some());
        // Strip the 101 head; frames follow.
        let f = &mut self.frames[i];
        if let Some(end) = find(&f.buf, b"\r\n\r\n") {
            f.buf.drain(..end + 4);
        }
        self.barrier(i);
        let now = self.acked.len();
        for t in 0..3 {
            if mask & (1 << t) != 0 {
                self.frames[i].windows[t].push((now, None));
            }
        }
    }

    /// PING/PONG round trip: every frame sent before has been handled.
    fn barrier(&mut self, client: usize) {
        let mut out = Vec::new();
        frame::encode_ping_frame(&mut out, b"b").expect("ping");
        self.frames[client].sock.write_all(&out).expect("ping");
        let before = self.frames[client].pongs;
        self.until("PONG", |w| w.frames[client].pongs > before);
    }

    fn subscribe(&mut self, client: usize, mask: u8) {
        if client >= self.frames.len() {
            return;
        }
        let mut out = Vec::new();
        frame::encode_subscribe_frame(&mut out, &names(mask), "").expect("subscribe");
        self.frames[client].sock.write_all(&out).expect("write");
        self.barrier(client);
        let now = self.acked.len();
        for t in 0..3 {
            let w = &mut self.frames[client].windows[t];
            if mask & (1 << t) != 0 && !w.last().is_some_and(|(_, end)| end.is_none()) {
                w.push((now, None));
            }
        }
    }

    fn unsubscribe(&mut self, client: usize, mask: u8) {
        if client >= self.frames.len() {
            return;
        }
        let mut out = Vec::new();
        frame::encode_unsubscribe_frame(&mut out, &names(mask)).expect("unsubscribe");
        self.frames[client].sock.write_all(&out).expect("write");
        self.barrier(client);
        let now = self.acked.len();
        for t in 0..3 {
            if mask & (1 << t) != 0 {
                if let Some((_, end)) = self.frames[client].windows[t].last_mut() {
                    if end.is_none() {
                        *end = Some(now);
                    }
                }
            }
        }
    }

    fn run(&mut self, op: &Op) {
        match op.clone() {
            Op::PublishHttp(m) => self.publish_http(m),
            Op::PublishFrame(c, m) => self.publish_frame(c, m),
            Op::PublishThreadBurst(m, n, c) => self.thread_burst(m, n, c),
            Op::OpenSse(m, r) => self.open_sse(m, r),
            Op::OpenFrames(m) => self.open_frames(m),
            Op::Subscribe(c, m) => self.subscribe(c, m),
            Op::Unsubscribe(c, m) => self.unsubscribe(c, m),
            Op::CloseSse(c) => {
                if let Some(s) = self.sse.get_mut(c) {
                    s.open = false;
                    let _ = s.sock.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }

    /// Lets everything drain: a PING barrier on each frame connection, then quiet steps.
    fn settle(&mut self) {
        for c in 0..self.frames.len() {
            self.barrier(c);
        }
        for _ in 0..20 {
            self.step();
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let all: BTreeSet<u64> = self.acked.iter().map(|&(s, _)| s).collect();
        for (i, s) in self.sse.iter().enumerate().filter(|(_, s)| s.open) {
            let matching = |seq: &u64| self.topics_of.get(seq).is_some_and(|m| m & s.topics != 0);
            prop_assert!(
                s.got.windows(2).all(|w| w[0] < w[1]),
                "sse {i}: not strictly increasing: {:?}",
                s.got
            );
            for seq in &s.got {
                prop_assert!(
                    all.contains(seq) && matching(seq),
                    "sse {i}: stray event {seq}"
                );
                if let Some(after) = s.resumed_after {
                    prop_assert!(
                        *seq > after,
                        "sse {i}: replayed {seq} <= resume point {after}"
                    );
                }
            }
            // The topic line names the event's topics as published, on topic_line streams only.
            for (seq, lines) in &s.lines {
                let want: Vec<String> = match self.topics_of.get(seq) {
                    Some(&mask) if s.topic_line => vec![names(mask).join(" ")],
                    _ => Vec::new(),
                };
                prop_assert_eq!(lines, &want, "sse {}: data lines of {}", i, seq);
            }
            let got: BTreeSet<u64> = s.got.iter().copied().collect();
            for &(seq, mask) in &self.acked[s.since_ack.min(self.acked.len())..] {
                if mask & s.topics != 0 {
                    prop_assert!(
                        got.contains(&seq),
                        "sse {i}: missed live {seq}: {:?}",
                        s.got
                    );
                }
            }
            let floor = match s.resumed_after {
                Some(after) => Some(after),
                None if s.resets > 0 => Some(0),
                None => None,
            };
            if let Some(after) = floor {
                for &(seq, mask) in &self.acked {
                    if seq > after && mask & s.topics != 0 {
                        prop_assert!(got.contains(&seq), "sse {i}: missed replay {seq}");
                    }
                }
            }
        }
        for (i, f) in self.frames.iter().enumerate() {
            let unique: BTreeSet<u64> = f.got.iter().copied().collect();
            prop_assert_eq!(
                unique.len(),
                f.got.len(),
                "frames {}: duplicates {:?}",
                i,
                f.got
            );
            prop_assert!(
                f.got.windows(2).all(|w| w[0] < w[1]),
                "frames {i}: out of order: {:?}",
                f.got
            );
            for (t, windows) in f.windows.iter().enumerate() {
                for &(from, to) in windows {
                    let to = to.unwrap_or(self.acked.len());
                    for &(seq, mask) in &self.acked[from..to] {
                        if mask & (1 << t) != 0 {
                            prop_assert!(
                                unique.contains(&seq),
                                "frames {i}: missed {seq} of {} (window {from}..{to}): {:?}",
                                TOPICS[t],
                                f.got
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_sse(s: &mut Sse) {
    while let Some(end) = find(&s.buf, b"\n\n") {
        let block: Vec<u8> = s.buf.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&block);
        let mut id = None;
        let mut reset = false;
        let mut data = Vec::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(seq_of(v));
            }
            if let Some(v) = line.strip_prefix("data: ") {
                data.push(v.to_string());
            }
            if line == "event: sseloop-reset" {
                reset = true;
            }
        }
        if text.contains("retry: ") {
            s.head = true;
        }
        match (id, reset) {
            (_, true) => s.resets += 1,
            (Some(seq), false) => {
                s.got.push(seq);
                data.pop();
                s.lines.push((seq, data));
            }
            _ => {}
        }
    }
}

fn parse_frames(f: &mut Frames) {
    if f.buf.starts_with(b"HTTP/") {
        return;
    }
    let decoder = FrameDecoder::new(1 << 20);
    loop {
        let found = match decoder.decode(&f.buf) {
            Ok(Some(found)) => found,
            _ => return,
        };
        let payload = f.buf[found.payload_range()].to_vec();
        f.buf.drain(..found.frame_len());
        match frame::parse(&payload) {
            Ok(Payload::Event { id, event_type, .. }) if event_type != "sseloop-reset" => {
                f.got.push(seq_of(id))
            }
            Ok(Payload::PublishAck { id, .. }) => f.acks.push(id.to_string()),
            Ok(Payload::Pong { .. }) => f.pongs += 1,
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_acknowledged_event_reaches_every_subscriber_once_in_order(
        ops in proptest::collection::vec(op(), 1..40),
        round_input_us in prop_oneof![Just(0u64), Just(250u64)],
    ) {
        let mut world = World::new(round_input_us);
        // Two of each kind exist from the start so that publishes have somewhere to go.
        world.open_sse(1, Resume::None);
        world.open_frames(6);
        for op in &ops {
            world.run(op);
        }
        world.settle();
        world.check()?;
    }
}
