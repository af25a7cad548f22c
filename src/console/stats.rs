//! The `/stats` document: what the console charts and tables show, as JSON for scripts too.
//!
//! Counters are totals since start; a reader computes rates from two documents' deltas over
//! their `uptime_ms` difference (the server's monotonic clock, immune to poll jitter). The schema
//! is documented in docs/CONSOLE.md; fields are only ever added.

use std::fmt::Write as _;
use std::time::Duration;

use super::push_json_str;
use crate::config::Config;
use crate::hub::TopicSummary;
use crate::metrics::{CloseCause, ConnKind, Gauges, Metrics, ResetReason, CLOSE_CAUSES};

/// Busiest topics listed when the request does not say (`/stats?topics=N`).
pub const DEFAULT_TOPICS: usize = 10;
/// Most busiest topics one request may ask for.
pub const MAX_TOPICS: usize = 100;

/// Everything the document shows, gathered by the caller from the loop's state.
pub struct StatsInput<'a> {
    /// The effective configuration (tokens are never written, only whether they are set).
    pub config: &'a Config,
    /// The authorization mode in force (`crate::auth::Auth::mode`).
    pub auth_mode: &'a str,
    /// The connection limit in force (the configured one, or the one derived from the rlimit).
    pub max_connections: usize,
    /// The run prefix of event ids.
    pub run: &'a str,
    /// Time since the server started.
    pub uptime: Duration,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Gauges read from the hub, timers and pool.
    pub gauges: Gauges,
    /// The busiest topics, most subscribers first.
    pub topics: &'a [TopicSummary],
    /// The last minutes of samples (`/stats?samples=1`), oldest first; `None` leaves them out.
    pub samples: Option<&'a std::collections::VecDeque<crate::metrics::Sample>>,
}

/// Renders the document (one line, then `\n`).
pub fn render_stats(input: &StatsInput<'_>) -> String {
    let mut o = String::with_capacity(2048 + input.topics.len() * 96);
    let m = input.metrics;
    o.push_str("{\"version\":");
    push_json_str(&mut o, env!("CARGO_PKG_VERSION"));
    o.push_str(",\"run\":");
    push_json_str(&mut o, input.run);
    let _ = write!(o, ",\"uptime_ms\":{}", input.uptime.as_millis());

    o.push_str(",\"config\":");
    render_config(&mut o, input.config, input.auth_mode, input.max_connections);

    let open = |kind: ConnKind| m.open[kind as usize];
    let _ = write!(
        o,
        ",\"connections\":{{\"http\":{},\"sse\":{},\"frames\":{}}}",
        open(ConnKind::Http),
        open(ConnKind::Sse),
        open(ConnKind::Frames)
    );

    let _ = write!(
        o,
        ",\"counters\":{{\"accepted\":{},\"published\":{},\"deliveries\":{},\"replayed\":{},\
         \"bytes_written\":{},\"heartbeats\":{},\"slow_consumer_closes\":{},\
         \"resume_resets\":{},\"frames_received\":{},\"auth_failures\":{},\
         \"publishes_vetoed\":{},\"loop_iterations\":{}",
        m.accepted,
        m.published,
        m.deliveries,
        m.replayed,
        m.bytes_written,
        m.heartbeats,
        m.closes[CloseCause::SlowConsumer as usize],
        m.resume_resets.iter().sum::<u64>(),
        m.frames_received,
        m.auth_failures,
        m.publishes_vetoed,
        m.loop_iterations,
    );
    let _ = write!(
        o,
        ",\"resume_resets_by_reason\":{{\"expired\":{},\"unknown\":{}}}",
        m.resume_resets[ResetReason::Expired as usize],
        m.resume_resets[ResetReason::Unknown as usize]
    );
    o.push_str(",\"closes_by_cause\":{");
    for (i, (label, cause)) in CLOSE_CAUSES.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(o, "{sep}\"{label}\":{}", m.closes[*cause as usize]);
    }
    o.push_str("}}");

    let g = &input.gauges;
    let _ = write!(
        o,
        ",\"gauges\":{{\"subscriptions\":{},\"topics\":{},\"history_events\":{},\
         \"history_bytes\":{},\"hub_transient_bytes\":{},\"timers\":{},\"write_chunks_lent\":{}}}",
        g.subscriptions,
        g.topics,
        g.history_events,
        g.history_bytes,
        g.hub_transient_bytes,
        g.timers,
        g.chunks_lent
    );

    if let Some(samples) = input.samples {
        o.push_str(",\"samples\":[");
        for (i, s) in samples.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push('[');
            for (j, v) in s.iter().enumerate() {
                if j > 0 {
                    o.push(',');
                }
                let _ = write!(o, "{v}");
            }
            o.push(']');
        }
        o.push(']');
    }

    o.push_str(",\"topics\":[");
    for (i, t) in input.topics.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        push_json_str(&mut o, &t.name);
        let _ = write!(
            o,
            ",\"subscribers\":{},\"retained_events\":{},\"retained_bytes\":{}}}",
            t.subscribers, t.retained_events, t.retained_bytes
        );
    }
    o.push_str("]}\n");
    o
}

fn render_config(o: &mut String, c: &Config, auth_mode: &str, max_connections: usize) {
    // Only whether a secret is set, never its value or length.
    let secret = |t: &Option<String>| if t.is_some() { "\"<set>\"" } else { "null" };
    o.push_str("{\"listen\":");
    push_json_str(o, &c.listen.to_string());
    // The mode names the JWT key's algorithm family, never the key.
    o.push_str(",\"auth\":");
    push_json_str(o, auth_mode);
    let _ = write!(
        o,
        ",\"heartbeat_ms\":{},\"retry_ms\":{},\"history\":{},\"publish_token\":{},\
         \"subscribe_token\":{},\"open_publish\":{},\"cors_origin\":",
        c.heartbeat_ms,
        c.retry_ms,
        c.history,
        secret(&c.publish_token),
        secret(&c.subscribe_token),
        c.open_publish
    );
    push_json_str(o, &c.cors_origin);
    let _ = write!(
        o,
        ",\"max_body\":{},\"max_connections\":{max_connections},\"grace_ms\":{},\
         \"header_timeout_ms\":{},\"idle_timeout_ms\":{},\"write_stall_ms\":{},\
         \"max_queue_bytes\":{},\"max_frame\":{},\"history_bytes\":{},\"max_topics\":{},\
         \"publish_queue_bytes\":{},\"ui\":{}",
        c.max_body,
        c.grace_ms,
        c.header_timeout_ms,
        c.idle_timeout_ms,
        c.write_stall_ms,
        c.max_queue_bytes,
        c.max_frame,
        c.history_bytes,
        c.max_topics,
        c.publish_queue_bytes,
        c.ui
    );
    // The URL's `Display` masks the password.
    o.push_str(",\"backplane\":");
    match &c.backplane {
        Some(url) => push_json_str(o, &url.to_string()),
        None => o.push_str("null"),
    }
    o.push_str(",\"backplane_prefix\":");
    push_json_str(o, &c.backplane_prefix);
    let _ = write!(
        o,
        ",\"backplane_timeout_ms\":{},\"backplane_retention\":{},\
         \"idempotency_window_secs\":{},\"reuse_port\":{}}}",
        c.backplane_timeout_ms, c.backplane_retention, c.idempotency_window_secs, c.reuse_port
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn document_has_every_section_and_masks_tokens() {
        let config = Config::parse_from([
            "sseloop",
            "--publish-token",
            "pub-secret",
            "--subscribe-token",
            "sub-secret",
            "--ui",
            "--backplane",
            "redis://app:redis-secret@127.0.0.1:6390/2",
            "--reuse-port",
        ]);
        let mut metrics = Metrics::default();
        (metrics.published, metrics.deliveries, metrics.bytes_written) = (7, 70, 9000);
        metrics.open[ConnKind::Sse as usize] = 3;
        metrics.closes[CloseCause::SlowConsumer as usize] = 2;
        metrics.resume_resets[ResetReason::Unknown as usize] = 1;
        let topics = [TopicSummary {
            name: "news".into(),
            subscribers: 3,
            retained_events: 7,
            retained_bytes: 210,
        }];
        let samples: std::collections::VecDeque<crate::metrics::Sample> = [crate::metrics::sample(
            Duration::from_millis(60_000),
            &metrics,
        )]
        .into();
        let doc = render_stats(&StatsInput {
            config: &config,
            auth_mode: "static tokens",
            max_connections: 1000,
            run: "abc123",
            uptime: Duration::from_millis(61_500),
            metrics: &metrics,
            gauges: Gauges {
                subscriptions: 3,
                history_bytes: 4096,
                hub_transient_bytes: 512,
                ..Default::default()
            },
            topics: &topics,
            samples: Some(&samples),
        });
        assert!(!doc.contains("secret"), "{doc}");
        assert!(
            doc.contains(",\"samples\":[[60000,0,3,0,70,7,9000,2,1]],"),
            "{doc}"
        );
        for part in [
            "\"version\":\"0.1.0\"",
            "\"run\":\"abc123\"",
            "\"uptime_ms\":61500",
            "\"publish_token\":\"<set>\"",
            "\"subscribe_token\":\"<set>\"",
            "\"max_connections\":1000",
            "\"ui\":true",
            "\"auth\":\"static tokens\"",
            "\"backplane\":\"redis://app:***@127.0.0.1:6390/2\"",
            "\"backplane_prefix\":\"sseloop:\"",
            "\"idempotency_window_secs\":300,\"reuse_port\":true}",
            "\"connections\":{\"http\":0,\"sse\":3,\"frames\":0}",
            "\"published\":7,\"deliveries\":70",
            "\"bytes_written\":9000",
            "\"slow_consumer_closes\":2",
            "\"resume_resets\":1",
            "\"resume_resets_by_reason\":{\"expired\":0,\"unknown\":1}",
            "\"slow_consumer\":2",
            "\"subscriptions\":3",
            "\"history_bytes\":4096,\"hub_transient_bytes\":512,",
            "\"topics\":[{\"name\":\"news\",\"subscribers\":3,\"retained_events\":7,\"retained_bytes\":210}]",
        ] {
            assert!(doc.contains(part), "missing {part} in {doc}");
        }
        assert!(doc.starts_with('{') && doc.ends_with("}\n"));
        let open = doc.matches(['{', '[']).count();
        let close = doc.matches(['}', ']']).count();
        assert_eq!(open, close, "balanced: {doc}");
    }

    #[test]
    fn unset_tokens_are_null() {
        let config = Config::default();
        let doc = render_stats(&StatsInput {
            config: &config,
            auth_mode: "none",
            max_connections: 1,
            run: "r",
            uptime: Duration::ZERO,
            metrics: &Metrics::default(),
            gauges: Gauges::default(),
            topics: &[],
            samples: None,
        });
        assert!(doc.contains("\"publish_token\":null,\"subscribe_token\":null"));
        assert!(doc.contains("\"auth\":\"none\""));
        assert!(doc.contains("\"backplane\":null"));
        assert!(doc.contains("\"topics\":[]}"));
    }
}
