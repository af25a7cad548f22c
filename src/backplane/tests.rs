use std::time::Duration;

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

#[test]
fn backoff_is_jittered_and_capped_at_two_seconds() {
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
    };
    let mut bp = Backplane::new(cfg).expect("backplane");
    for attempt in 0..40 {
        let d = bp.backoff(attempt);
        let base = FIRST_BACKOFF
            .saturating_mul(1u32 << attempt.min(6))
            .min(MAX_BACKOFF);
        assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
        assert!(d <= MAX_BACKOFF);
    }
}
