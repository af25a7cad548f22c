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
fn patterns_see_topics_created_later_and_replay_their_history() {
    let mut hub = hub(8, usize::MAX, 100);
    hub.publish(&["news/a"], None, "1").unwrap();
    hub.publish(&["sport"], None, "2").unwrap();
    let mut subs = vec![hub.subscribe("news/*", 1).unwrap()];
    let start = hub.start_stream(&mut subs, Resume::After(0));
    assert!(start.reset.is_none());
    assert_eq!(seqs(&start.replay), vec![1], "retained news/a replays");
    assert!(
        pending(&hub, &subs[0]).is_empty(),
        "the pattern's cursor starts live"
    );
    hub.publish(&["news/b/c"], None, "3").unwrap();
    hub.publish(&["news/a", "news/b"], None, "4").unwrap();
    hub.publish(&["newsy"], None, "5").unwrap();
    assert_eq!(pending(&hub, &subs[0]), vec![3, 4], "once per event");
    assert!(hub.covers(&subs[0], "news/x"));
    assert!(!hub.covers(&subs[0], "newsy"));
    hub.unsubscribe(subs.pop().unwrap());
    assert!(
        hub.channel_id("news/*").is_none(),
        "pattern log dropped with its readers"
    );
}

/// Moves every reader of `subs` to the end of its log, as a caught-up write does.
fn catch_up(hub: &mut Hub, subs: &[Subscription]) {
    for sub in subs {
        let end = hub.channel(sub.channel()).unwrap().end();
        hub.set_cursor(sub, end);
    }
}

fn round(hub: &mut Hub) {
    let mut touched = Vec::new();
    hub.take_touched(&mut touched);
}

fn footprint(topic: &str, data: &str) -> usize {
    Event::new(
        1,
        "r-1".into(),
        vec![topic.into()].into(),
        None,
        data.into(),
    )
    .footprint()
}

#[test]
fn a_pattern_log_holds_no_history_and_its_resume_follows_the_topics_bytes_bound() {
    // Issue 21, defect 1: a caught-up reader on `*`, one large event to each of 30 topics.
    let big = "x".repeat(16 << 10);
    let limit = footprint("t00", &big) * 3 + 64;
    let mut hub = hub(1024, limit, 1000);
    let all = vec![hub.subscribe("*", 1).unwrap()];
    for i in 0..30 {
        hub.publish(&[&format!("t{i:02}")], None, &big).unwrap();
        round(&mut hub);
        catch_up(&mut hub, &all);
        hub.end_round();
        assert!(
            hub.history_bytes() <= limit,
            "history within --history-bytes"
        );
        assert_eq!(hub.transient_bytes(), 0, "nothing held beyond history");
    }
    let pattern = hub.channel(all[0].channel()).unwrap();
    assert!(
        pattern.entry(pattern.end() - 1).is_none(),
        "passed entries released"
    );
    // A resume on the pattern replays what the same resume on its topics does.
    let names: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (exact, expired) = hub.replay(&names, 0);
    assert!(expired);
    assert_eq!(seqs(&exact), vec![28, 29, 30]);
    let mut subs = vec![hub.subscribe("*", 2).unwrap()];
    let start = hub.start_stream(&mut subs, Resume::After(0));
    assert_eq!(start.reset, Some(ResetReason::Expired));
    assert_eq!(seqs(&start.replay), seqs(&exact));
    assert_eq!(start.reset_id, "r-27");
    let start = hub.start_stream(&mut subs, Resume::After(28));
    assert_eq!((start.reset, seqs(&start.replay)), (None, vec![29, 30]));
    assert_eq!(
        hub.replay(&["*"], 0).0.len(),
        3,
        "a SUBSCRIBE frame's replay too"
    );
}

#[test]
fn a_resume_on_a_pattern_replays_what_its_topics_retain() {
    // Issue 21, defect 3: --history 4, four events to each of two topics.
    let mut hub = hub(4, usize::MAX, 100);
    for i in 0..4 {
        hub.publish(&["news/a"], None, &i.to_string()).unwrap();
        hub.publish(&["news/b"], None, &i.to_string()).unwrap();
    }
    let mut pattern = vec![hub.subscribe("news/*", 1).unwrap()];
    let start = hub.start_stream(&mut pattern, Resume::After(1));
    assert_eq!(start.reset, None);
    assert_eq!(seqs(&start.replay), (2..=8).collect::<Vec<_>>());
    // One more to news/a evicts its oldest: now the topics themselves say "expired".
    hub.publish(&["news/a"], None, "4").unwrap();
    let (exact, expired) = hub.replay(&["news/a", "news/b"], 0);
    let start = hub.start_stream(&mut pattern, Resume::After(0));
    assert!(expired);
    assert_eq!(start.reset, Some(ResetReason::Expired));
    assert_eq!(seqs(&start.replay), seqs(&exact));
    assert_eq!(start.replay.len(), 8);
    // With a topic subscription in the same stream, its events go once, through its cursor.
    let mut both = vec![
        hub.subscribe("news/b", 2).unwrap(),
        hub.subscribe("news/*", 2).unwrap(),
    ];
    let start = hub.start_stream(&mut both, Resume::After(0));
    assert_eq!(pending(&hub, &both[0]), vec![2, 4, 6, 8]);
    assert_eq!(seqs(&start.replay), vec![3, 5, 7, 9]);
    assert_eq!(start.reset_id, "r-1");
}

#[test]
fn a_forgotten_topic_marks_its_patterns() {
    let mut hub = hub(1, usize::MAX, 100);
    let mut subs = vec![hub.subscribe("news/*", 1).unwrap()];
    hub.publish(&["news/a"], None, "1").unwrap();
    hub.publish(&["news/a"], None, "2").unwrap();
    // news/a forgets event 1, then is forgotten itself (all history gone, nobody reading).
    hub.forget_history();
    round(&mut hub);
    assert!(hub.channel_id("news/a").is_none());
    let start = hub.start_stream(&mut subs, Resume::After(0));
    assert_eq!(start.reset, Some(ResetReason::Expired));
    let start = hub.start_stream(&mut subs, Resume::After(2));
    assert_eq!(start.reset, None);
}

#[test]
fn a_caught_up_channel_keeps_only_its_history_once_the_round_ends() {
    // Issue 21, defect 2: --history 1, two readers per topic, a burst of four large events.
    let big = "y".repeat(48 << 10);
    let mut hub = hub(1, usize::MAX, 100);
    let mut subs = Vec::new();
    for t in ["a", "b"] {
        subs.push(hub.subscribe(t, 1).unwrap());
        subs.push(hub.subscribe(t, 2).unwrap());
    }
    for _ in 0..4 {
        hub.publish(&["a"], None, &big).unwrap();
        hub.publish(&["b"], None, &big).unwrap();
    }
    round(&mut hub);
    let batch = |hub: &Hub, sub: &Subscription| {
        let ch = hub.channel(sub.channel()).unwrap();
        ch.batch_bytes()
    };
    assert!(batch(&hub, &subs[0]) > 0, "the round's events joined");
    assert!(hub.transient_bytes() >= 3 * footprint("a", &big));
    // Every reader of a has taken the round; one reader of b is still behind.
    catch_up(&mut hub, &subs[..3]);
    hub.end_round();
    assert_eq!(batch(&hub, &subs[0]), 0, "passed by every reader: released");
    let a = hub.channel(subs[0].channel()).unwrap();
    assert!(
        a.entry(a.end() - 2).is_none(),
        "only its one event of history is left"
    );
    assert!(
        batch(&hub, &subs[3]) > 0,
        "kept while a reader can still use it"
    );
    catch_up(&mut hub, &subs[3..]);
    hub.end_round();
    assert_eq!(batch(&hub, &subs[3]), 0);
    assert_eq!(hub.transient_bytes(), 0);
    assert_eq!(hub.history_bytes(), 2 * footprint("a", &big));
}

#[test]
fn a_joined_batch_is_capped() {
    let mut hub = hub(64, usize::MAX, 100);
    let a = hub.subscribe("a", 1).unwrap();
    let _b = hub.subscribe("a", 2).unwrap();
    let start = hub.cursor(&a);
    for _ in 0..40 {
        hub.publish(&["a"], None, &"z".repeat(16 << 10)).unwrap();
    }
    round(&mut hub);
    let ch = hub.channel(a.channel()).unwrap();
    let (end, bytes) = ch.batch_at(start).unwrap();
    assert!(bytes.len() <= 256 << 10 && end - start >= 2);
    let joined: Vec<u8> = (start..end)
        .flat_map(|i| ch.entry(i).unwrap().ev.sse().to_vec())
        .collect();
    assert_eq!(bytes, &joined[..], "the first entries of the round, joined");
}

#[test]
fn events_evicted_out_of_order_count_against_history_bytes_until_dropped() {
    // Per-topic --history evicts a large event from the middle of the retained list.
    let big = "w".repeat(32 << 10);
    let limit = footprint("a", &big) * 4;
    let mut hub = hub(1, limit, 100);
    hub.publish(&["a"], None, &big).unwrap();
    for i in 0..3 {
        hub.publish(&[&format!("b{i}")], None, &big).unwrap();
    }
    hub.publish(&["a"], None, "small").unwrap();
    assert_eq!(
        hub.transient_bytes(),
        0,
        "the evicted event is not kept alive by the list"
    );
    assert!(hub.history_bytes() <= limit);
    assert_eq!(hub.history_events(), 4);
}

#[test]
fn a_resume_from_below_the_raised_floor_is_told_it_may_have_missed_events() {
    let mut hub = hub(8, 1 << 20, 64);
    for data in ["1", "2", "3"] {
        hub.publish(&["a"], None, data).unwrap();
    }
    hub.publish(&["b"], None, "4").unwrap();
    // A warm-up that looked at seqs 2 and above, and left out b's events up to 3.
    hub.raise_floor(1, &[("b".into(), 3), ("gone".into(), 2)]);
    let mut subs = vec![hub.subscribe("a", 1).unwrap()];
    let start = hub.start_stream(&mut subs, Resume::After(0));
    assert_eq!(start.reset, Some(ResetReason::Expired), "below the floor");
    let mut subs = vec![hub.subscribe("a", 2).unwrap()];
    assert_eq!(hub.start_stream(&mut subs, Resume::After(1)).reset, None);
    let mut subs = vec![hub.subscribe("b", 3).unwrap()];
    let start = hub.start_stream(&mut subs, Resume::After(2));
    assert_eq!(
        start.reset,
        Some(ResetReason::Expired),
        "below b's own floor"
    );
    assert_eq!(hub.cache_floor(&subs), 3);
    // A topic created later starts above what a forgotten one may have had.
    let mut subs = vec![hub.subscribe("c", 4).unwrap()];
    let start = hub.start_stream(&mut subs, Resume::After(1));
    assert_eq!(start.reset, Some(ResetReason::Expired));
}

#[test]
fn ids_just_past_the_floor_of_a_node_that_recorded_nothing_are_this_runs() {
    // A backplane node fresh on a dataset whose seqs start near 1e15: its warm-up raised the
    // floor, it has recorded nothing yet, and a client brings the id of an event it has not read.
    let mut hub = Hub::new("local", 8);
    hub.set_epoch("e");
    hub.raise_floor(1_796_000_000_000_000, &[]);
    assert_eq!(
        hub.parse_resume("e-1796000000000003"),
        Resume::After(1_796_000_000_000_003)
    );
    assert_eq!(hub.parse_resume("e-0"), Resume::After(0));
    assert_eq!(hub.parse_resume("other-5"), Resume::Foreign);
}

#[test]
fn history_by_name_answers_as_a_resume_would_without_a_channel() {
    // The server API asks by name: a pattern nobody subscribes to here has no channel, and a
    // topic forgotten to make room has none any more.
    let mut hub = hub(4, usize::MAX, 3);
    for i in 0..4 {
        hub.publish(&["news/a"], None, &i.to_string()).unwrap();
        hub.publish(&["news/b"], None, &i.to_string()).unwrap();
    }
    let (events, expired) = hub.replay(&["news/*"], 1);
    assert_eq!(
        (seqs(&events), expired),
        ((2..=8).collect::<Vec<_>>(), false)
    );
    assert_eq!(hub.cache_floor_of(&["news/*"]), 0);
    // A third and a fourth topic under --max-topics 3 make room by forgetting news/a.
    hub.publish(&["other"], None, "x").unwrap();
    hub.publish(&["more"], None, "y").unwrap();
    assert!(hub.channel_id("news/a").is_none());
    let (events, expired) = hub.replay(&["news/a"], 1);
    assert!(
        events.is_empty() && expired,
        "a resume on news/a would hear 'expired'"
    );
    assert!(hub.cache_floor_of(&["news/a"]) >= 7);
    let (_, expired) = hub.replay(&["news/*"], 1);
    assert!(expired);
    // Nothing forgotten after the floor: nothing to report.
    let floor = hub.cache_floor_of(&["news/a"]);
    let (events, expired) = hub.replay(&["news/a"], floor);
    assert!(events.is_empty() && !expired);
}
