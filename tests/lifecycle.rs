//! Connection lifecycle under the classic failure modes: slowloris, slow consumers, stalled
//! writes, vanished clients, idle keep-alive, the connection limit and descriptor exhaustion.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use util::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn slowloris_is_closed_by_the_header_deadline_while_others_are_served() {
    let server = TestServer::start(&["--header-timeout-ms", "500"]);
    // Before the connects: the deadline cannot start earlier (a later reading could be late).
    let started = Instant::now();
    let mut silent = connect(server.addr);
    let mut dribbler = connect(server.addr);
    let mut sub = server.subscribe("topic=live", &[]);
    let mut dribble_closed = false;
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for (i, byte) in head
        .iter()
        .chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter())
        .enumerate()
    {
        if dribbler.write_all(&[*byte]).is_err() {
            dribble_closed = true;
            break;
        }
        if i % 5 == 0 {
            server.publish("topic=live", &format!("tick {i}"));
            assert_eq!(sub.next_event().data, format!("tick {i}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut reader = ResponseReader::new(dribbler.try_clone().unwrap());
    assert!(
        dribble_closed || reader.closed_within(TIMEOUT),
        "dribbling client not closed"
    );
    let mut silent_reader = ResponseReader::new(silent.try_clone().unwrap());
    assert!(
        silent_reader.closed_within(TIMEOUT),
        "silent client not closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the deadline"
    );
    assert!(server.metric("sseloop_closes_total{cause=\"header_timeout\"}") >= 2.0);
    // The subscriber is untouched by the deadline (streams arm no header timer).
    server.publish("topic=live", "after");
    assert_eq!(sub.next_event().data, "after");
    let _ = silent.write_all(b"x");
}

#[test]
fn never_reading_subscriber_is_cut_at_the_queue_cap_while_healthy_ones_get_everything() {
    // Loopback send-buffer autotuning lets the kernel absorb ~3 MiB for a client that never reads
    // before our queue grows at all, so publish well past that.
    const EVENTS: usize = 500;
    const HEALTHY: usize = 100;
    const SLOW: usize = 3;
    const CAP: u64 = 128 * 1024;
    // The cap must hold the largest event (--max-body + 64 KiB).
    let server = TestServer::start(&[
        "--max-queue-bytes",
        "128k",
        "--max-body",
        "64k",
        "--history",
        "16",
    ]);
    let body = "x".repeat(8 * 1024);
    // Warm up the allocator and the code paths so the RSS baseline is fair.
    let warm = server.subscribe("topic=warm", &[]);
    server.publish("topic=warm", &body);
    drop(warm);
    let rss_before = rss_kib(server.child.id());

    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&server.addr.into()).unwrap();
        let mut s: TcpStream = s.into();
        s.write_all(b"GET /events?topic=load HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        slow.push(s);
    }
    let progress = Progress::new(HEALTHY);
    let readers: Vec<_> = (0..HEALTHY)
        .map(|n| {
            let mut client = server.subscribe("topic=load", &[]);
            let progress = progress.clone();
            std::thread::spawn(move || {
                let mut got = Vec::with_capacity(EVENTS);
                for _ in 0..EVENTS {
                    got.push(client.next_event().data.len());
                    progress.received(n);
                }
                got
            })
        })
        .collect();
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_subscriptions")
        >= (HEALTHY + SLOW) as f64));
    let mut publisher = ResponseReader::new(connect(server.addr));
    for i in 0..EVENTS {
        // Healthy readers are at most 8 events (64 KiB, half the cap) behind: however the
        // threads are scheduled, only the never-reading clients reach the cap.
        progress.wait_all(i.saturating_sub(8));
        let raw = format!(
            "POST /publish?topic=load HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        publisher.stream.write_all(raw.as_bytes()).unwrap();
        assert_eq!(publisher.next().unwrap().status, 200, "publish {i}");
    }
    for reader in readers {
        let got = reader.join().unwrap();
        assert_eq!(got.len(), EVENTS);
        assert!(got.iter().all(|&len| len == body.len()));
    }
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_closes_total{cause=\"slow_consumer\"}")
        >= SLOW as f64));
    let rss_after = rss_kib(server.child.id());
    let bound = SLOW as u64 * CAP / 1024 + 24 * 1024;
    assert!(
        rss_after.saturating_sub(rss_before) < bound,
        "RSS grew {} KiB (bound {bound} KiB)",
        rss_after - rss_before
    );
    for mut s in slow {
        // The slow clients were cut: reading drains what was buffered, then EOF or reset.
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        assert!(
            sink.len() < EVENTS * body.len(),
            "a slow client got everything?"
        );
    }
}

#[test]
fn stalled_writer_is_closed_by_the_write_stall_deadline() {
    let server = TestServer::start(&[
        "--write-stall-ms",
        "400",
        "--max-queue-bytes",
        "256M",
        "--history",
        "1",
    ]);
    let mut stalled = server.subscribe("topic=big", &[]);
    let chunk = "y".repeat(256 * 1024);
    // Enough to fill both kernel buffers on loopback many times over.
    let mut publisher = ResponseReader::new(connect(server.addr));
    for _ in 0..64 {
        let raw = format!(
            "POST /publish?topic=big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{chunk}",
            chunk.len()
        );
        publisher.stream.write_all(raw.as_bytes()).unwrap();
        assert_eq!(publisher.next().unwrap().status, 200);
    }
    assert!(
        wait_until(TIMEOUT, || server
            .metric("sseloop_closes_total{cause=\"write_stall\"}")
            >= 1.0),
        "stalled stream not closed"
    );
    assert!(stalled.ended_within(TIMEOUT));
    assert_eq!(server.metric("sseloop_connections_open{kind=\"sse\"}"), 0.0);
}

#[test]
fn subscriber_that_vanishes_with_rst_is_cleaned_up() {
    let server = TestServer::start(&[]);
    let subs: Vec<SseClient> = (0..10)
        .map(|_| server.subscribe("topic=gone", &[]))
        .collect();
    assert_eq!(server.metric("sseloop_subscriptions"), 10.0);
    for s in subs {
        socket2::SockRef::from(&s.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    }
    // Publishing to the dead sockets must not disturb anything.
    server.publish("topic=gone", "anyone?");
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_subscriptions")
        == 0.0));
    assert_eq!(server.metric("sseloop_connections_open{kind=\"sse\"}"), 0.0);
    let mut fresh = server.subscribe("topic=gone", &[]);
    server.publish("topic=gone", "hello");
    assert_eq!(fresh.next_event().data, "hello");
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let server = TestServer::start(&["--idle-timeout-ms", "300"]);
    let mut client = ResponseReader::new(connect(server.addr));
    client
        .stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(client.next().unwrap().status, 200);
    // Still usable right away (keep-alive)... (the idle time cannot start before this request)
    let started = Instant::now();
    client
        .stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(client.next().unwrap().status, 200);
    // ...and closed once idle past the timeout.
    assert!(client.closed_within(TIMEOUT));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(server.metric("sseloop_closes_total{cause=\"idle_timeout\"}") >= 1.0);
}

#[test]
fn connection_limit_answers_503_with_retry_after() {
    let server = TestServer::start(&["--max-connections", "3"]);
    let _a = server.subscribe("topic=a", &[]);
    let _b = server.subscribe("topic=a", &[]);
    let _c = server.subscribe("topic=a", &[]);
    let mut over = ResponseReader::new(connect(server.addr));
    over.stream
        .write_all(b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let resp = over.next().expect("a response before the close");
    assert_eq!(resp.status, 503);
    assert!(resp.header("retry-after").is_some());
    assert!(over.closed_within(TIMEOUT));
    drop((_a, _b));
    // Slots free up once the server has seen the two closes (/metrics answers even at the
    // limit).
    let freed = wait_until(TIMEOUT, || {
        server.metric("sseloop_connections_open{kind=\"sse\"}") == 1.0
    });
    assert!(freed);
    let _d = server.subscribe("topic=a", &[]);
    assert!(server.metric("sseloop_closes_total{cause=\"over_capacity\"}") >= 1.0);
}

#[test]
fn descriptor_exhaustion_neither_spins_nor_kills_the_loop() {
    let mut server = TestServer::start_with(&["--max-connections", "10000"], |cmd| {
        // SAFETY: setrlimit is async-signal-safe; runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 48,
                    rlim_max: 48,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let pid = server.child.id();
    let mut clients = Vec::new();
    for _ in 0..80 {
        clients.push(connect(server.addr));
    }
    assert!(wait_until(TIMEOUT, || {
        let log = server.log.lock().unwrap();
        log.iter().any(|l| l.contains("accept failed"))
    }));
    let ticks_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu_ticks(pid) - ticks_before;
    // Clock ticks are 1/100 s: a spinning loop would burn ~100 per second.
    assert!(
        ticks < 30,
        "loop burned {ticks} ticks in 1 s while out of descriptors"
    );
    assert!(server.child.try_wait().unwrap().is_none(), "server died");
    drop(clients);
    // Once descriptors are free again, the loop serves new clients by itself.
    let healthy = wait_until(TIMEOUT, || {
        let mut s = connect(server.addr);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        ResponseReader::new(s)
            .next()
            .is_some_and(|r| r.status == 200)
    });
    assert!(
        healthy,
        "server did not recover after descriptors were released"
    );
    assert!(server.metric("sseloop_accept_fd_exhausted_total") >= 1.0);
    assert!(server.wait_exit(Duration::from_millis(10)).is_none());
}
