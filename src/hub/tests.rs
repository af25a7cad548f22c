use super::*;

fn seqs<'a>(events: impl IntoIterator<Item = &'a SharedEvent>) -> Vec<u64> {
    events.into_iter().map(|e| e.seq).collect()
}

fn hub(history: usize, history_bytes: usize, max_topics: usize) -> Hub {
    Hub::with_sequencer(
        Arc::new(Sequencer::new("r", usize::MAX, usize::MAX)),
        HubLimits {
            history,
            history_bytes,
            max_topics,
            max_event_bytes: 1 << 20,
        },
    )
}

/// Events past a subscription's cursor, in order.
fn pending(hub: &Hub, sub: &Subscription) -> Vec<u64> {
    let ch = hub.channel(sub.channel()).unwrap();
    let mut idx = hub.cursor(sub);
    let mut out = Vec::new();
    while let Some(e) = ch.entry(idx) {
        out.push(e.ev.seq);
        idx += 1;
    }
    out
}

#[test]
fn ids_increase_across_topics_and_multi_topic_publish_is_one_event() {
    let mut hub = Hub::new("run", 8);
    let a = hub.publish(&["a"], None, "1").unwrap();
    let ab = hub.publish(&["a", "b"], Some("t"), "2").unwrap();
    assert_eq!(a.id, "run-1");
    assert_eq!(ab.id, "run-2");
    let (events, expired) = hub.replay(&["a", "b"], 0);
    assert_eq!(seqs(&events), vec![1, 2], "event in a and b replayed once");
    assert!(!expired);
    assert_eq!(hub.history_events(), 3, "a holds 2, b holds 1");
}

#[test]
fn stream_start_places_cursors_in_history_and_reports_resets() {
    let mut hub = hub(2, usize::MAX, 100);
    for i in 0..5 {
        hub.publish(&["a"], None, &i.to_string()).unwrap();
    }
    assert_eq!(hub.history_events(), 2);
    let mut subs = vec![hub.subscribe("a", 1).unwrap()];
    assert!(pending(&hub, &subs[0]).is_empty(), "live by default");
    let start = hub.start_stream(&mut subs, Resume::After(1));
    assert_eq!(start.reset, Some(ResetReason::Expired));
    assert_eq!(pending(&hub, &subs[0]), vec![4, 5]);
    assert_eq!(start.reset_id, "r-3");
    let start = hub.start_stream(&mut subs, Resume::After(3));
    assert!(
        start.reset.is_none(),
        "3 was the last evicted: nothing missed"
    );
    assert_eq!(hub.parse_resume("other-3"), Resume::Foreign);
    assert_eq!(hub.parse_resume("r-6"), Resume::Foreign, "from the future");
    assert_eq!(hub.parse_resume("r-+3"), Resume::Foreign);
    assert_eq!(hub.parse_resume("r-"), Resume::Foreign);
    assert_eq!(hub.parse_resume("r-5"), Resume::After(5));
    let start = hub.start_stream(&mut subs, Resume::Foreign);
    assert_eq!(start.reset, Some(ResetReason::Unknown));
    assert_eq!(pending(&hub, &subs[0]), vec![4, 5]);
    hub.unsubscribe(subs.pop().unwrap());
}

#[test]
fn topics_without_readers_or_history_do_not_survive_their_publish() {
    let mut hub = hub(0, usize::MAX, 100);
    let mut touched = Vec::new();
    for i in 0..1000 {
        hub.publish(&[&format!("t{i}")], None, "x").unwrap();
        hub.take_touched(&mut touched);
        touched.clear();
    }
    assert_eq!(hub.topic_count(), 0);
    let s = hub.subscribe("a", 7).unwrap();
    hub.publish(&["a"], None, "x").unwrap();
    hub.take_touched(&mut touched);
    assert_eq!(hub.readers(touched[0]).collect::<Vec<_>>(), vec![7]);
    assert_eq!(
        pending(&hub, &s),
        vec![1001],
        "held for the reader despite history 0"
    );
    hub.unsubscribe(s);
    assert_eq!(hub.topic_count(), 0);
    assert_eq!(hub.subscription_count(), 0);
}

#[test]
fn history_bytes_evict_oldest_first_across_topics() {
    let one = Event::new(
        1,
        "r-1".into(),
        vec!["a".into()].into(),
        None,
        "x".repeat(100).into(),
    )
    .footprint();
    let mut hub = hub(100, one * 3 + one / 2, 100);
    for (i, t) in ["a", "b", "a", "c", "b"].iter().enumerate() {
        hub.publish(&[t], None, &format!("{i:0>100}")).unwrap();
    }
    assert!(hub.history_bytes() <= one * 3 + one / 2);
    assert_eq!(hub.history_events(), 3);
    let (events, expired) = hub.replay(&["a", "b", "c"], 0);
    assert_eq!(seqs(&events), vec![3, 4, 5], "the two oldest went");
    assert!(expired);
    // A topic whose only event was evicted, with no reader, is gone.
    let mut touched = Vec::new();
    hub.take_touched(&mut touched);
    assert_eq!(hub.topic_count(), 3);
}

#[test]
fn max_topics_evicts_old_history_or_refuses() {
    let mut hub = hub(4, usize::MAX, 2);
    hub.publish(&["a"], None, "1").unwrap();
    hub.publish(&["b"], None, "2").unwrap();
    hub.publish(&["c"], None, "3").unwrap();
    assert_eq!(hub.topic_count(), 2, "a's history was evicted to make room");
    let (events, _) = hub.replay(&["a", "b", "c"], 0);
    assert_eq!(seqs(&events), vec![2, 3]);
    let sb = hub.subscribe("b", 1).unwrap();
    let sc = hub.subscribe("c", 2).unwrap();
    assert_eq!(hub.subscribe("d", 3), Err(HubError::TooManyTopics));
    hub.unsubscribe(sb);
    hub.unsubscribe(sc);
}

#[test]
fn readers_shrink_back_after_a_peak() {
    let mut hub = hub(4, usize::MAX, 10);
    let subs: Vec<_> = (0..10_000)
        .map(|k| hub.subscribe("t", k).unwrap())
        .collect();
    for s in subs.into_iter().skip(1) {
        hub.unsubscribe(s);
    }
    hub.publish(&["t"], None, "x").unwrap();
    let mut touched = Vec::new();
    hub.take_touched(&mut touched);
    assert_eq!(hub.readers(touched[0]).collect::<Vec<_>>(), vec![0]);
}

#[test]
fn patterns_see_topics_created_later_and_seed_from_history() {
    let mut hub = hub(8, usize::MAX, 100);
    hub.publish(&["news/a"], None, "1").unwrap();
    hub.publish(&["sport"], None, "2").unwrap();
    let mut subs = vec![hub.subscribe("news/*", 1).unwrap()];
    let start = hub.start_stream(&mut subs, Resume::After(0));
    assert!(start.reset.is_none());
    assert_eq!(pending(&hub, &subs[0]), vec![1], "retained news/a replays");
    hub.publish(&["news/b/c"], None, "3").unwrap();
    hub.publish(&["news/a", "news/b"], None, "4").unwrap();
    hub.publish(&["newsy"], None, "5").unwrap();
    assert_eq!(pending(&hub, &subs[0]), vec![1, 3, 4], "once per event");
    assert!(hub.covers(&subs[0], "news/x"));
    assert!(!hub.covers(&subs[0], "newsy"));
    hub.unsubscribe(subs.pop().unwrap());
    assert!(
        hub.channel_id("news/*").is_none(),
        "pattern log dropped with its readers"
    );
}
