use std::time::{Duration, Instant};

use proptest::prelude::*;

use redis_protocol::resp2::types::OwnedFrame;

use super::read::parse_entry;
use super::*;

fn bulk(s: &str) -> OwnedFrame {
    OwnedFrame::BulkString(s.as_bytes().to_vec())
}

fn entry(id: &str, fields: &[(&str, &str)]) -> OwnedFrame {
    let mut kv = Vec::new();
    for (k, v) in fields {
        kv.push(bulk(k));
        kv.push(bulk(v));
    }
    OwnedFrame::Array(vec![bulk(id), OwnedFrame::Array(kv)])
}

#[test]
fn stream_entries_parse_or_are_refused() {
    let ok = entry("42-0", &[("t", "a b"), ("e", ""), ("d", "hi"), ("ts", "7")]);
    let ev = parse_entry(&ok).expect("valid entry");
    assert_eq!(ev.seq, 42);
    assert_eq!(ev.topics, vec![Box::from("a"), Box::from("b")]);
    assert_eq!(ev.event_type, None);
    assert_eq!(&*ev.data, "hi");
    assert_eq!(ev.appended_ms, 7);
    let typed = entry("43-0", &[("t", "a"), ("e", "tick"), ("d", "")]);
    assert_eq!(
        parse_entry(&typed).and_then(|e| e.event_type).as_deref(),
        Some("tick")
    );
    // Not ours: a foreign id shape, no topics, no data, not an entry at all.
    for bad in [
        entry("42-1", &[("t", "a"), ("d", "x")]),
        entry("x-0", &[("t", "a"), ("d", "x")]),
        entry("44-0", &[("t", ""), ("d", "x")]),
        entry("45-0", &[("t", "a")]),
        bulk("46-0"),
    ] {
        assert!(parse_entry(&bad).is_none(), "{bad:?}");
    }
}

/// A backplane that never connects (nothing listens on port 1).
fn backplane() -> Backplane {
    backplane_with(0)
}

/// The same with `--backplane-min-replicas`.
fn backplane_with(min_replicas: u32) -> Backplane {
    let cfg = BackplaneConfig {
        url: RedisUrl::parse("redis://127.0.0.1:1").expect("url"),
        prefix: "p:".into(),
        timeout: Duration::from_millis(100),
        retention: 10,
        idempotency_secs: 1,
        history: 1,
        warm_events: 1,
        warm_bytes: 1,
        max_inflight_bytes: 1 << 20,
        tls: None,
        sentinel_password: None,
        min_replicas,
        presence_ttl: Duration::from_secs(10),
    };
    Backplane::new(cfg).expect("backplane")
}

#[test]
fn backoff_is_jittered_and_capped_at_two_seconds() {
    let mut bp = backplane();
    for attempt in 0..40 {
        let d = bp.backoff(attempt);
        let base = FIRST_BACKOFF
            .saturating_mul(1u32 << attempt.min(6))
            .min(MAX_BACKOFF);
        assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
        assert!(d <= MAX_BACKOFF);
    }
}

fn xread_reply(entries: Vec<OwnedFrame>) -> OwnedFrame {
    OwnedFrame::Array(vec![OwnedFrame::Array(vec![
        bulk("p:{hub}:log"),
        OwnedFrame::Array(entries),
    ])])
}

#[test]
fn an_epoch_boundary_in_the_log_is_a_lost_notice_before_the_new_epochs_events() {
    let mut bp = backplane();
    bp.epoch = Some("e1".into());
    bp.last_read = 5;
    let boundary = entry("90-0", &[("x", "e2")]);
    assert!(parse_entry(&boundary).is_none(), "a boundary is no event");
    let reply = xread_reply(vec![
        entry("6-0", &[("t", "a"), ("d", "old")]),
        boundary,
        entry("91-0", &[("t", "a"), ("d", "new")]),
    ]);
    bp.on_read(&reply, Instant::now()).expect("read");
    let seqs: Vec<u64> = bp.out.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![6, 91], "no gap notice: the epoch starts at 90");
    let expected = Notice::Epoch {
        epoch: "e2".into(),
        lost: true,
        since: 90,
    };
    assert_eq!(bp.out.notices, vec![(1, expected)]);
    assert_eq!((bp.last_read, bp.since), (91, 90));
    // Read again (a repeated XREAD): nothing twice, no second notice.
    bp.out = Output::default();
    bp.on_read(&reply, Instant::now()).expect("read");
    assert!(bp.out.events.is_empty() && bp.out.notices.is_empty());
}

fn event(seq: u64) -> OwnedFrame {
    entry(&format!("{seq}-0"), &[("t", "a"), ("d", "x")])
}

fn mark(after: u64, n: u64, seq: u64) -> OwnedFrame {
    entry(&format!("{after}-{n}"), &[("c", &seq.to_string())])
}

#[test]
fn without_replica_acknowledgements_commit_marks_are_skipped_silently() {
    let mut bp = backplane();
    bp.last_read = 5;
    bp.read_pos = (5, 0);
    let reply = xread_reply(vec![event(6), mark(6, 1, 6), event(7)]);
    bp.on_read(&reply, Instant::now()).expect("read");
    let seqs: Vec<u64> = bp.out.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![6, 7]);
    assert!(bp.out.notices.is_empty());
    // The next XREAD starts after the last entry read, marks included.
    assert_eq!(bp.read_pos, (7, 0));
}

#[test]
fn with_replica_acknowledgements_events_wait_for_a_mark_and_gaps_keep_their_place() {
    let mut bp = backplane_with(1);
    bp.last_read = 5;
    bp.committed = 5;
    bp.read_pos = (5, 0);
    let now = Instant::now();
    bp.on_read(&xread_reply(vec![event(6), event(7)]), now)
        .expect("read");
    assert!(bp.out.events.is_empty(), "shown before any replica held it");
    assert_eq!(
        bp.stats.held_bytes,
        2 * 3,
        "two events of data \"x\" and topic \"a\""
    );
    bp.on_read(&xread_reply(vec![mark(7, 1, 6), event(9)]), now)
        .expect("read");
    let seqs: Vec<u64> = bp.out.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![6]);
    assert_eq!(bp.read_pos, (9, 0));
    bp.on_read(&xread_reply(vec![mark(9, 1, 9)]), now)
        .expect("read");
    let seqs: Vec<u64> = bp.out.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![6, 7, 9]);
    // The gap (8 was trimmed) is told where it is: before 9.
    assert_eq!(bp.out.notices, vec![(2, Notice::Gap)]);
    assert!(bp.held.is_empty() && bp.held_since.is_none());
    assert_eq!(bp.stats.held_bytes, 0);
}

proptest! {
    /// However reads, marks in the log and this node's own WAIT confirmations interleave, the
    /// reader hands over every event once, in seq order, and never one above what was committed.
    #[test]
    fn held_events_are_released_once_in_order_and_never_early(
        steps in proptest::collection::vec((0u8..3, 1u64..6), 1..60),
    ) {
        let mut bp = backplane_with(1);
        let now = Instant::now();
        bp.last_read = 100;
        bp.committed = 100;
        bp.read_pos = (100, 0);
        let (mut appended, mut marks, mut committed) = (100u64, 0u64, 100u64);
        for (kind, n) in steps {
            match kind {
                // Redis appends n events; the reader reads them (with any pending mark).
                0 => {
                    let entries: Vec<OwnedFrame> = (1..=n).map(|i| event(appended + i)).collect();
                    appended += n;
                    bp.on_read(&xread_reply(entries), now).expect("read");
                }
                // Some node's COMMIT: a mark for what its WAIT confirmed (at most what Redis has).
                1 => {
                    committed = (committed + n).min(appended);
                    marks += 1;
                    let reply = xread_reply(vec![mark(appended, marks, committed)]);
                    bp.on_read(&reply, now).expect("read");
                }
                // This node's own WAIT confirmed up to a seq: it commits without a mark.
                _ => {
                    committed = (committed + n).min(appended);
                    bp.committed = bp.committed.max(committed);
                    bp.release();
                }
            }
            let seqs: Vec<u64> = bp.out.events.iter().map(|e| e.seq).collect();
            let expected: Vec<u64> = (101..=committed.min(appended)).collect();
            prop_assert_eq!(&seqs, &expected);
        }
    }
}
