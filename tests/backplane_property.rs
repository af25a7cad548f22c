//! The delivery invariant across a backplane, as a property: on random interleavings of
//! publishes (HTTP and PUBLISH frames, one or several topics, through either of two nodes) and
//! of streams opened on either node from random points of the history, every stream receives
//! exactly the acknowledged events of its topics after its resume point, each once, in id order.
//!
//! Each case runs against a real `redis-server` and two real `sseloop` processes (and, for the
//! replicated-acknowledgement variant, a replica with `--backplane-min-replicas 1`). Every stream
//! resumes from a known id (or from before the first event), so what it must receive is exact
//! even though a node may not yet have read what the other node acknowledged.

#[path = "util/redis.rs"]
mod redis;
mod util;

use proptest::prelude::*;
use redis::{redis_available, Persistence, RedisServer};
use sseloop::frame::{FrameClient, OwnedPayload};
use util::*;

const TOPICS: [&str; 3] = ["pa", "pb", "pc"];

#[derive(Clone, Debug)]
enum Op {
    /// Publish through `node` to the topics in `mask` (bits over TOPICS), by frame or HTTP.
    Publish { node: usize, mask: u8, frame: bool },
    /// Open a stream on `node` for the topics in `mask`, resuming after published event `from`
    /// (modulo how many exist; none yet: from before the first).
    Open { node: usize, mask: u8, from: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 1..8u8, any::<bool>()).prop_map(|(node, mask, frame)| Op::Publish { node, mask, frame }),
        1 => (0..2usize, 1..8u8, any::<usize>()).prop_map(|(node, mask, from)| Op::Open { node, mask, from }),
    ]
}

fn topics_of(mask: u8) -> Vec<&'static str> {
    TOPICS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, t)| *t)
        .collect()
}

fn query(topics: &[&str]) -> String {
    topics
        .iter()
        .map(|t| format!("topic={t}"))
        .collect::<Vec<_>>()
        .join("&")
}

struct Published {
    id: String,
    mask: u8,
    data: String,
}

struct Stream {
    client: SseClient,
    mask: u8,
    /// Index of the first published event it must receive.
    first: usize,
}

fn run(ops: &[Op], redis: &RedisServer, extra: &[&str]) {
    let url = redis.url();
    // The first node takes input after every write of a round, so that publishes, Redis's
    // answers and its events also arrive in the middle of rounds; the second uses the default.
    let nodes: Vec<TestServer> = ["0", "250"]
        .iter()
        .map(|every| {
            let mut args = vec!["--backplane", url.as_str(), "--round-input-us", every];
            args.extend_from_slice(extra);
            TestServer::start_with(&args, |cmd| {
                cmd.env_remove("SSELOOP_BACKPLANE");
            })
        })
        .collect();
    for n in &nodes {
        assert!(
            wait_until(TIMEOUT, || request(
                n.addr,
                "GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n"
            )
            .status
                == 200),
            "node not ready"
        );
    }
    let mut frames: Vec<FrameClient> = nodes
        .iter()
        .map(|n| FrameClient::connect(n.addr, &["unused"], None, None).expect("frame handshake"))
        .collect();
    let mut published: Vec<Published> = Vec::new();
    let mut streams: Vec<Stream> = Vec::new();
    // An id from before every event of this dataset: a stream resuming from it gets them all.
    let mut epoch_zero: Option<String> = None;
    for (n, op) in ops.iter().enumerate() {
        match *op {
            Op::Publish { node, mask, frame } => {
                let topics = topics_of(mask);
                let data = format!("e{n}");
                let id = if frame {
                    let c = &mut frames[node];
                    c.publish(&topics, "", data.as_bytes(), b"k")
                        .expect("PUBLISH");
                    loop {
                        match c.recv(Some(TIMEOUT)).expect("reply") {
                            OwnedPayload::PublishAck { id, .. } => break id,
                            OwnedPayload::Ping { .. } | OwnedPayload::Event { .. } => continue,
                            other => panic!("PUBLISH answered {other:?}"),
                        }
                    }
                } else {
                    nodes[node].publish(&query(&topics), &data)
                };
                if epoch_zero.is_none() {
                    let (epoch, _) = split_id(&id);
                    epoch_zero = Some(format!("{epoch}-0"));
                }
                published.push(Published { id, mask, data });
            }
            Op::Open { node, mask, from } => {
                let (last, first) = if published.is_empty() {
                    (None, 0)
                } else {
                    let i = from % (published.len() + 1);
                    if i == 0 {
                        (epoch_zero.clone(), 0)
                    } else {
                        (Some(published[i - 1].id.clone()), i)
                    }
                };
                let Some(last) = last else {
                    continue; // nothing published yet: no id to resume from
                };
                let client = nodes[node].subscribe(
                    &query(&topics_of(mask)),
                    &[("Last-Event-ID", last.as_str())],
                );
                streams.push(Stream {
                    client,
                    mask,
                    first,
                });
            }
        }
    }
    // A sentinel to every topic closes each stream's expectations.
    let sentinel = nodes[0].publish(&query(&TOPICS), "sentinel");
    for (k, s) in streams.iter_mut().enumerate() {
        let mut got: Vec<(String, String)> = Vec::new();
        loop {
            let ev = s.client.next_event();
            assert_ne!(
                ev.event,
                "sseloop-reset",
                "stream {k}: {}",
                s.client.raw_text()
            );
            if ev.id == sentinel {
                break;
            }
            got.push((ev.id, ev.data));
        }
        let want: Vec<(String, String)> = published[s.first..]
            .iter()
            .filter(|p| p.mask & s.mask != 0)
            .map(|p| (p.id.clone(), p.data.clone()))
            .collect();
        assert_eq!(
            got, want,
            "stream {k} (mask {:03b}, from {})",
            s.mask, s.first
        );
    }
    // Ids are one global order: strictly increasing in acknowledgement order within a dataset.
    let seqs: Vec<u64> = published.iter().map(|p| split_id(&p.id).1).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn every_stream_gets_each_acknowledged_event_of_its_topics_once_in_order(
        ops in proptest::collection::vec(op(), 4..24)
    ) {
        if redis_available() {
            let redis = RedisServer::start(Persistence::None);
            run(&ops, &redis, &[]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 10, ..ProptestConfig::default() })]

    /// The same with replicated acknowledgements: events are held until a replica has them
    /// (commit marks, each node's own WAIT), and the invariant holds as without.
    #[test]
    fn with_a_replica_acknowledging_every_stream_still_gets_each_event_once_in_order(
        ops in proptest::collection::vec(op(), 4..16)
    ) {
        if redis_available() {
            let redis = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
            let _replica = redis.start_replica();
            run(&ops, &redis, &["--backplane-min-replicas", "1"]);
        }
    }
}
