//! The backplane on a Redis service that fails over: `redis+sentinel://` (the node asks the
//! sentinels where the master is and follows failovers) and `--backplane-min-replicas`
//! (acknowledge and deliver only what replicas hold). Real `redis-server` and `redis-sentinel`
//! processes on loopback ports, started and killed by the tests; nodes seen only over HTTP/SSE.
//!
//! - N = 1, the master SIGKILLed under a steady publish load on two nodes: every acknowledged
//!   event is delivered exactly once, in one order, on both nodes, with no reset; the time until
//!   publishing resumes is printed. The replicas are chained (master → r1 → r2) so that the
//!   replica promoted is the one whose WAIT acknowledgements counted.
//! - N = 0, a replica deliberately behind (SIGSTOPped while events are acknowledged) promoted:
//!   the loss is detected, every stream gets the reset notice, nothing is delivered twice.
//! - N = 1 on one Redis with one replica: with the replica stopped a publish is refused within
//!   the timeout and no subscriber sees it; once the replica is back, it appears (at most once).
//! - A manual failover (`SENTINEL FAILOVER`, the old master alive, the same chain): the nodes follow the
//!   sentinels' `+switch-master`, no reset, nothing lost.
//! - A log that went on differently from what a node delivered (here: Redis restored from a
//!   snapshot, then another node appended past the first node's mark): the node finds another
//!   event at its last seq and every stream is reset.

#[path = "util/redis.rs"]
mod redis;
mod util;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{redis_available, sentinel_available, Persistence, RedisServer, Reply, Sentinel};
use util::*;

const RESET: &str = "sseloop-reset";
const LOG_KEY: &str = "sseloop:{hub}:log";
/// A master that syncs a new replica at once (Redis waits 5 s for more by default).
const FAST_SYNC: [&str; 2] = ["--repl-diskless-sync-delay", "0"];

fn tools() -> bool {
    redis_available() && sentinel_available()
}

fn array_len(reply: Reply) -> usize {
    match reply {
        Reply::Array(Some(items)) => items.len(),
        _ => 0,
    }
}

/// Three sentinels on `master`, each knowing the other two and `replicas` replicas.
fn sentinels(master: &RedisServer, replicas: usize) -> Vec<Sentinel> {
    let all: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(master, None)).collect();
    let settled = wait_until(Duration::from_secs(30), || {
        all.iter().all(|s| {
            array_len(s.command(None, &["SENTINEL", "sentinels", "m"])) == 2
                && array_len(s.command(None, &["SENTINEL", "replicas", "m"])) == replicas
        })
    });
    assert!(
        settled,
        "the sentinels never saw each other and the replicas"
    );
    all
}

fn sentinel_url(all: &[Sentinel]) -> String {
    let hosts: Vec<String> = all
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    format!("redis+sentinel://{}/m", hosts.join(","))
}

fn node(url: &str, args: &[&str]) -> TestServer {
    let mut all = vec!["--backplane", url];
    all.extend_from_slice(args);
    TestServer::start_with(&all, |cmd| {
        cmd.env_remove("SSELOOP_BACKPLANE");
    })
}

/// Two ready nodes on `url`, each with a stream of `topic`.
fn two_nodes(url: &str, args: &[&str], topic: &str) -> (TestServer, TestServer, [SseClient; 2]) {
    let (a, b) = (node(url, args), node(url, args));
    wait_ready(&a);
    wait_ready(&b);
    let query = format!("topic={topic}");
    let subs = [a.subscribe(&query, &[]), b.subscribe(&query, &[])];
    (a, b, subs)
}

#[track_caller]
fn wait_ready(server: &TestServer) {
    let ready = wait_until(TIMEOUT, || {
        request(
            server.addr,
            "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .status
            == 200
    });
    assert!(ready, "node {} never ready: {:?}", server.addr, server.log);
}

/// One publish with an idempotency key; the id when acknowledged (200).
fn publish_keyed(addr: SocketAddr, topic: &str, data: &str, key: &str) -> Option<String> {
    let raw = format!(
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Idempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{data}",
        data.len()
    );
    let resp = request(addr, &raw);
    (resp.status == 200).then(|| json_id(&resp.text()))
}

/// Publishes until acknowledged (the same key each time, so a retry never makes a second
/// event), at most for `within`.
fn publish_until_acked(
    addr: SocketAddr,
    topic: &str,
    data: &str,
    key: &str,
    within: Duration,
) -> Option<String> {
    let start = Instant::now();
    loop {
        if let Some(id) = publish_keyed(addr, topic, data, key) {
            return Some(id);
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn epoch_seq(id: &str) -> (String, u64) {
    split_id(id)
}

/// A steady publish load through two nodes, each event retried with its own key until
/// acknowledged (so a retry never makes a second event): what was acknowledged, and when.
struct Load {
    acked: Arc<Mutex<Vec<(Instant, String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(addrs: [SocketAddr; 2], topic: &'static str) -> Load {
        let acked: Arc<Mutex<Vec<(Instant, String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let data = format!("e{i}");
                    let key = format!("k{i}");
                    let id = publish_until_acked(addrs[i % 2], topic, &data, &key, TIMEOUT * 6)
                        .unwrap_or_else(|| panic!("{data} never acknowledged"));
                    acked.lock().unwrap().push((Instant::now(), id, data));
                    i += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Load {
            acked,
            stop,
            thread,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the load; everything acknowledged.
    fn stop(self) -> Vec<(Instant, String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the load thread");
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Asserts that each stream got every acknowledged event once, in one order, the same on every
/// stream, with no reset and nothing else up to the event `last` (data "last").
#[track_caller]
fn assert_all_once_no_reset(
    subs: &mut [SseClient],
    acked: &[(Instant, String, String)],
    last: &str,
) {
    let mut sequences = Vec::new();
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = read_through(sub, "last");
        assert!(!sub.raw_text().contains(RESET), "subscriber {i}: reset");
        let pairs: Vec<(String, String)> =
            got.iter().map(|e| (e.id.clone(), e.data.clone())).collect();
        for w in pairs.windows(2) {
            let (e0, s0) = epoch_seq(&w[0].0);
            let (e1, s1) = epoch_seq(&w[1].0);
            assert!(
                e0 == e1 && s0 < s1,
                "subscriber {i}: {} then {}",
                w[0].0,
                w[1].0
            );
        }
        for (_, id, data) in acked {
            let n = pairs
                .iter()
                .filter(|(pid, d)| pid == id && d == data)
                .count();
            assert_eq!(
                n, 1,
                "subscriber {i}: acknowledged {id} {data} seen {n} times"
            );
        }
        assert_eq!(pairs.last().map(|p| p.0.as_str()), Some(last));
        // Anything else was never acknowledged: none, since every publish was retried.
        assert_eq!(pairs.len(), acked.len() + 1, "subscriber {i}: stray events");
        sequences.push(pairs);
    }
    assert!(
        sequences.windows(2).all(|w| w[0] == w[1]),
        "the nodes' orders differ"
    );
}

/// Reads events until one of type `event` (included).
fn read_through_event(client: &mut SseClient, event: &str) -> Vec<SseEvent> {
    let mut got = Vec::new();
    loop {
        let ev = client
            .next_event_within(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no {event:?} event; so far {got:?}"));
        let done = ev.event == event;
        got.push(ev);
        if done {
            return got;
        }
    }
}

/// Reads events until one whose data is `last`.
fn read_through(client: &mut SseClient, last: &str) -> Vec<SseEvent> {
    let mut got = Vec::new();
    loop {
        let ev = client
            .next_event_within(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no event {last:?}; so far {} events", got.len()));
        let done = ev.data == last;
        got.push(ev);
        if done {
            return got;
        }
    }
}

#[test]
fn with_one_replica_acknowledging_a_killed_master_loses_nothing_and_resets_nothing() {
    if !tools() {
        return;
    }
    // master → r1 → r2: WAIT counts r1, the only replica the sentinels can promote, and r2
    // is r1's replica once it is the master. (With r1 and r2 both below the master, WAIT 1 may
    // be answered by one and the sentinels may promote the other: Redis then loses
    // acknowledged writes, which the nodes report with a reset; docs/SCALING.md.)
    let mut master = RedisServer::start_with(&FAST_SYNC);
    let r1 = master.start_replica();
    let _r2 = r1.start_replica_below(&master);
    let watchers = sentinels(&master, 1);
    let url = sentinel_url(&watchers);
    let args = [
        "--backplane-min-replicas",
        "1",
        "--backplane-timeout-ms",
        "1000",
        "--heartbeat-ms",
        "500",
    ];
    let (a, b, mut subs) = two_nodes(&url, &args, "f");

    // A steady load through both nodes: each event retried with its key until acknowledged.
    let load = Load::start([a.addr, b.addr], "f");
    assert!(
        wait_until(TIMEOUT, || load.count() >= 50),
        "no steady load before the kill"
    );
    let old_port = master.port;
    master.stop();
    let killed = Instant::now();
    let acked_before = load.count();
    // First the sentinels' switch: an answer racing the kill can still come from the old master.
    assert!(
        wait_until(Duration::from_secs(60), || {
            watchers[0].master_port(None).is_some_and(|p| p != old_port)
        }),
        "the sentinels never named a new master"
    );
    let switched = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || {
            load.acked
                .lock()
                .unwrap()
                .iter()
                .any(|(t, ..)| *t > switched)
        }),
        "publishing never resumed after the failover"
    );
    let resumed = load
        .acked
        .lock()
        .unwrap()
        .iter()
        .find(|(t, ..)| *t > switched)
        .map(|(t, ..)| t.duration_since(killed));
    eprintln!(
        "publishing resumed {resumed:?} after the master was killed ({acked_before} acknowledged before)"
    );
    let new_port = watchers[0].master_port(None);
    assert!(
        new_port.is_some_and(|p| p != old_port && p == r1.port),
        "Sentinel did not promote the replica: {new_port:?}"
    );
    // Some load on the new master too, then the end marker. Generous: should the sentinels
    // fail over once more, publishing waits until they give the new master a replica.
    let settled = load.count() + 50;
    assert!(
        wait_until(Duration::from_secs(60), || load.count() >= settled),
        "no load on the new master"
    );
    let acked = load.stop();
    let last = publish_until_acked(a.addr, "f", "last", "k-last", TIMEOUT).expect("last");

    assert_all_once_no_reset(&mut subs, &acked, &last);
    for n in [&a, &b] {
        assert!(n.metric("sseloop_backplane_failovers_total") >= 1.0);
        let text = request(
            n.addr,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .text();
        let port = new_port.unwrap_or(0);
        assert!(
            text.contains(&format!(
                "sseloop_backplane_master_info{{addr=\"127.0.0.1:{port}\"}} 1"
            )),
            "master info gauge"
        );
        assert!(n.metric("sseloop_backplane_replica_wait_seconds_count") > 0.0);
    }
}

#[test]
fn without_replica_acknowledgements_a_failover_to_a_replica_behind_resets_every_stream() {
    if !tools() {
        return;
    }
    let mut master = RedisServer::start_with(&FAST_SYNC);
    let mut r1 = master.start_replica();
    let watchers = sentinels(&master, 1);
    let url = sentinel_url(&watchers);
    let args = [
        "--backplane-timeout-ms",
        "1000",
        "--max-body",
        "100000",
        "--max-queue-bytes",
        "134217728",
        "--heartbeat-ms",
        "500",
    ];
    let (a, b, mut subs) = two_nodes(&url, &args, "f");
    let first = a.publish("topic=f", "pre-a");
    b.publish("topic=f", "pre-b");
    for sub in subs.iter_mut() {
        read_through(sub, "pre-b");
    }

    // The replica stops reading; what is acknowledged meanwhile (far more than the kernel's
    // socket buffers hold) dies with the master.
    r1.pause();
    let big = "x".repeat(80_000);
    let mut acked = Vec::new();
    for i in 0..300 {
        let data = format!("big-{i}-{big}");
        acked.push((a.publish("topic=f", &data), data));
    }
    master.stop();
    r1.resume();
    assert!(
        wait_until(Duration::from_secs(60), || watchers[0].master_port(None)
            == Some(r1.port)),
        "Sentinel never promoted the replica; log:\n{}",
        watchers[0].log()
    );
    let after_a =
        publish_until_acked(a.addr, "f", "post-a", "pa", Duration::from_secs(60)).expect("post-a");
    let after_b =
        publish_until_acked(b.addr, "f", "post-b", "pb", Duration::from_secs(60)).expect("post-b");
    // The replica really was behind: the last acknowledged event is not in the new master.
    let (_, last_seq) = epoch_seq(&acked[acked.len() - 1].0);
    let id = format!("{last_seq}-0");
    assert_eq!(
        array_len(r1.command(&["XRANGE", LOG_KEY, &id, &id])),
        0,
        "the promoted replica holds every acknowledged event: no loss to detect"
    );
    let old_epoch = epoch_seq(&first).0;
    assert_ne!(epoch_seq(&after_a).0, old_epoch, "no new epoch");
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = read_through(sub, "post-b");
        let reset = got
            .iter()
            .position(|e| e.event == RESET)
            .unwrap_or_else(|| panic!("subscriber {i}: no reset notice"));
        // Before the reset: acknowledged events only, each once, in order, of the old epoch.
        let before: Vec<&SseEvent> = got[..reset].iter().collect();
        let mut seen = std::collections::HashSet::new();
        let mut prev = 0;
        for e in &before {
            assert!(
                acked.iter().any(|(id, d)| *id == e.id && *d == e.data),
                "subscriber {i}: unacknowledged event before the reset"
            );
            let (ep, s) = epoch_seq(&e.id);
            assert!(ep == old_epoch && s > prev, "subscriber {i}: order");
            prev = s;
            assert!(seen.insert(e.data.clone()), "subscriber {i}: twice");
        }
        // After it: the new epoch's events, nothing older, nothing twice.
        let after: Vec<(&str, &str)> = got[reset + 1..]
            .iter()
            .map(|e| (e.id.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(
            after,
            [(after_a.as_str(), "post-a"), (after_b.as_str(), "post-b")],
            "subscriber {i}: after the reset"
        );
    }
}

#[test]
fn with_min_replicas_a_publish_waits_for_the_replica_and_is_shown_only_once_it_holds_it() {
    if !redis_available() {
        return;
    }
    let master = RedisServer::start_with(&FAST_SYNC);
    let mut replica = master.start_replica();
    let url = master.url();
    let args = [
        "--backplane-min-replicas",
        "1",
        "--backplane-timeout-ms",
        "500",
    ];
    let (a, b, mut subs) = two_nodes(&url, &args, "w");
    // With the replica up (retried with one key: a busy machine can miss the 500 ms once).
    let one = publish_until_acked(a.addr, "w", "one", "k-one", TIMEOUT)
        .unwrap_or_else(|| panic!("never acknowledged; log {:?}", a.log));
    for sub in subs.iter_mut() {
        assert_eq!(sub.next_event().id, one);
    }

    replica.pause();
    let started = Instant::now();
    let resp = b.post("topic=w", "unconfirmed", &[]);
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(started.elapsed() < Duration::from_millis(500 + 2500));
    for (i, sub) in subs.iter_mut().enumerate() {
        assert!(
            sub.next_event_within(Duration::from_millis(1500)).is_none(),
            "subscriber {i} was shown an event no replica holds"
        );
    }
    replica.resume();
    // Redis kept the refused event; once the replica holds it, it is delivered (once).
    // (The replica may need a moment to answer WAITs again: retried with one key, one event.)
    let two = publish_until_acked(a.addr, "w", "two", "k-two", TIMEOUT).expect("two acked");
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = read_through(sub, "two");
        let datas: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(datas, ["unconfirmed", "two"], "subscriber {i}");
        assert_eq!(got[1].id, two);
    }
    assert!(a.metric("sseloop_backplane_replica_wait_seconds_count") >= 2.0);
}

#[test]
fn a_manual_failover_under_load_with_the_old_master_alive_loses_nothing_and_resets_nothing() {
    if !tools() {
        return;
    }
    // The chain of the test above: the promoted replica is the one WAIT counted.
    let master = RedisServer::start_with(&FAST_SYNC);
    let r1 = master.start_replica();
    let _r2 = r1.start_replica_below(&master);
    let watchers = sentinels(&master, 1);
    let url = sentinel_url(&watchers);
    let args = ["--backplane-min-replicas", "1", "--heartbeat-ms", "500"];
    let (a, b, mut subs) = two_nodes(&url, &args, "m");
    let load = Load::start([a.addr, b.addr], "m");
    assert!(wait_until(TIMEOUT, || load.count() >= 30), "no load");
    // The old master stays up and would take writes until the switch is announced: the nodes
    // must stop writing to it when the failover starts (+selected-slave), not when it ends.
    let reply = watchers[0].command(None, &["SENTINEL", "FAILOVER", "m"]);
    assert!(
        matches!(reply, Reply::Status(_)),
        "SENTINEL FAILOVER: {reply:?}"
    );
    for n in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(30), || n
                .metric("sseloop_backplane_failovers_total")
                == 1.0),
            "node {} did not follow the failover: {:?}",
            n.addr,
            n.log
        );
    }
    let new_port = watchers[0].master_port(None);
    assert!(new_port.is_some_and(|p| p == r1.port));
    let settled = load.count() + 30;
    assert!(
        wait_until(TIMEOUT, || load.count() >= settled),
        "no load after"
    );
    let acked = load.stop();
    let gap = acked
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .max()
        .unwrap_or_default();
    eprintln!("SENTINEL FAILOVER: longest pause between acknowledgements {gap:?}");
    let last = publish_until_acked(a.addr, "m", "last", "k-last", TIMEOUT).expect("last");
    assert_all_once_no_reset(&mut subs, &acked, &last);
    drop(master);
}

#[test]
fn a_node_that_finds_another_event_at_its_last_seq_resets_every_stream() {
    if !redis_available() {
        return;
    }
    // RDB only, saved by hand: the restart below brings back an older point.
    let mut redis = RedisServer::start(Persistence::None);
    let url = redis.url();
    let a = node(&url, &["--heartbeat-ms", "300"]);
    wait_ready(&a);
    let mut sa = a.subscribe("topic=d", &[]);
    for i in 0..10 {
        a.publish("topic=d", &format!("saved-{i}"));
    }
    assert_eq!(redis.command(&["SAVE"]), Reply::Status("OK".into()));
    for i in 0..5 {
        a.publish("topic=d", &format!("lost-{i}"));
    }
    let seen = read_through(&mut sa, "lost-4");
    assert_eq!(seen.len(), 15);
    // A sleeps across the restart; a node that never saw the lost events appends past A's mark.
    a.signal(libc::SIGSTOP);
    redis.restart();
    let c = node(&url, &[]);
    wait_ready(&c);
    let mut sc = c.subscribe("topic=d", &[]);
    for i in 0..7 {
        c.publish("topic=d", &format!("other-{i}"));
    }
    a.signal(libc::SIGCONT);
    // A's stream: the reset comes before anything of C's (under ids that named A's events).
    let got = read_through_event(&mut sa, RESET);
    assert!(
        got.iter().all(|e| !e.data.starts_with("other-")),
        "A delivered C's events under ids that named its own: {got:?}"
    );
    // Then only the new epoch's events. (A publish A's writer made before its reader found
    // the difference belongs to the old epoch: C delivers it, A's streams were reset.)
    let after = publish_until_acked(a.addr, "d", "after", "after", Duration::from_secs(30))
        .expect("A publishes again");
    let got = read_through(&mut sa, "after");
    assert_eq!(
        got.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [after.as_str()],
        "A's stream after the reset: {got:?}"
    );
    assert_ne!(split_id(&after).0, split_id(&seen[0].id).0, "no new epoch");
    // C's stream is told too, before A's new event.
    let got = read_through(&mut sc, "after");
    assert!(got.iter().any(|e| e.event == RESET), "C's stream: {got:?}");
}
