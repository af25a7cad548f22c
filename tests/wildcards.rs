//! Wildcard subscriptions (`prefix*`): topics created after the subscription, overlap with exact
//! subscriptions delivered once, resume across every matching topic in id order, and the same
//! over frames.

mod util;

use sseloop::frame::{FrameClient, OwnedPayload};
use util::*;

fn seqs(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|e| split_id(&e.id).1).collect()
}

#[test]
fn a_pattern_receives_topics_created_after_it_subscribed() {
    let server = TestServer::start(&[]);
    let mut sub = server.subscribe("topic=news/*", &[]);
    assert_eq!(
        server.metric("sseloop_topics"),
        1.0,
        "only the pattern exists"
    );
    server.publish("topic=news/a", "1");
    server.publish("topic=sport", "not for it");
    server.publish("topic=news/b/deep", "2");
    server.publish("topic=newsroom", "no: the prefix is news/");
    server.publish("topic=news/c&topic=news/a", "3");
    let got = sub.events(3);
    let data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(
        data,
        ["1", "2", "3"],
        "a multi-topic event matching twice arrives once"
    );
    assert!(sub
        .next_event_within(std::time::Duration::from_millis(300))
        .is_none());
}

#[test]
fn exact_and_overlapping_patterns_deliver_each_event_once_in_order() {
    let server = TestServer::start(&[]);
    let mut sub = server.subscribe("topic=news/a&topic=news/*&topic=*", &[]);
    for i in 0..50 {
        let topic = ["news/a", "news/b", "other"][i % 3];
        server.publish(&format!("topic={topic}"), &i.to_string());
    }
    let got = sub.events(50);
    let data: Vec<String> = got.iter().map(|e| e.data.clone()).collect();
    let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(data, want);
    assert!(seqs(&got).windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn resume_on_a_pattern_replays_every_matching_topic_in_id_order() {
    let server = TestServer::start(&[]);
    let first = server.publish("topic=news/a", "a1");
    server.publish("topic=news/b", "b1");
    server.publish("topic=sport", "s1");
    server.publish("topic=news/a", "a2");
    server.publish("topic=news/c", "c1");
    let mut sub = server.subscribe("topic=news/*", &[("Last-Event-ID", &first)]);
    let got = sub.events(3);
    let data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["b1", "a2", "c1"]);
    // A bogus id: a reset notice, then everything retained for the pattern.
    let mut sub = server.subscribe("topic=news/*", &[("Last-Event-ID", "bogus")]);
    let notice = sub.next_event();
    assert_eq!(notice.event, "sseloop-reset");
    let got = sub.events(4);
    let data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["a1", "b1", "a2", "c1"]);
}

#[test]
fn frames_subscribe_to_a_pattern_and_unsubscribe_from_it() {
    let server = TestServer::start(&[]);
    let mut c = FrameClient::connect(server.addr, &["none"], None, None).expect("connect");
    c.subscribe(&["metrics/*"], None).expect("subscribe");
    c.ping(b"sync").expect("ping");
    loop {
        if let OwnedPayload::Pong { .. } = c.recv(None).expect("pong") {
            break;
        }
    }
    server.publish("topic=metrics/cpu", "42");
    match c.recv(None).expect("event") {
        OwnedPayload::Event { data, topics, .. } => {
            assert_eq!(data, b"42");
            assert_eq!(topics, vec!["metrics/cpu".to_string()]);
        }
        other => panic!("expected an EVENT, got {other:?}"),
    }
    c.unsubscribe(&["metrics/*"]).expect("unsubscribe");
    c.ping(b"sync2").expect("ping");
    loop {
        if let OwnedPayload::Pong { .. } = c.recv(None).expect("pong") {
            break;
        }
    }
    server.publish("topic=metrics/cpu", "43");
    c.ping(b"end").expect("ping");
    match c.recv(None).expect("pong") {
        OwnedPayload::Pong { .. } => {}
        other => panic!("nothing after UNSUBSCRIBE, got {other:?}"),
    }
    assert_eq!(
        server.metric("sseloop_subscriptions"),
        1.0,
        "only the handshake topic is left"
    );
}
