//! The run report: figures derived from the raw counts, printed as a table or as JSON, and the
//! `--summarize` mode that takes the median of repeated runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Context, Result};

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything published was delivered (or the idle hold ended).
    Complete,
    /// `--timeout-secs` reached.
    TimedOut,
    /// Nothing happened for `--stall-secs`.
    Stalled,
    /// Some subscribers could not connect or were refused.
    ConnectFailed,
    /// A publisher connection failed, or every subscriber was lost.
    Aborted,
}

/// The options the figures depend on, echoed for scripts.
#[derive(Debug, Serialize)]
pub struct Setup {
    /// `publish` or `idle`.
    pub mode: &'static str,
    /// Subscriber transport.
    pub transport: String,
    /// Subscribers requested.
    pub subscribers: usize,
    /// Topics.
    pub topics: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Every topic published over all publisher connections (`--spread-publishers`).
    pub spread_publishers: bool,
    /// Body size.
    pub size: usize,
    /// Events per second, `null` for max.
    pub rate: Option<f64>,
    /// In-flight window.
    pub window: usize,
    /// Measured events requested.
    pub events: u64,
    /// Warm-up seconds.
    pub warmup_secs: f64,
    /// Source addresses used.
    pub source_addrs: u8,
    /// With `--subscribe-pattern`, the request target every subscriber used (its `topic=` is
    /// the pattern), else `null`.
    pub subscribe_pattern: Option<String>,
    /// Idle seconds after the run before the settled RSS sample (0: none).
    pub settle_secs: f64,
}

/// Connection phase.
#[derive(Debug, Serialize)]
pub struct Connect {
    /// Subscribers streaming when the connect phase ended.
    pub connected: usize,
    /// Subscribers that failed to connect or were refused.
    pub failed: usize,
    /// Seconds to connect all.
    pub secs: f64,
}

/// Publishing.
#[derive(Debug, Serialize)]
pub struct Publish {
    /// Events sent (warm-up included).
    pub published: u64,
    /// Answered 200.
    pub acked: u64,
    /// Answered otherwise.
    pub errors: u64,
    /// Sent after the warm-up.
    pub measured_events: u64,
}

/// Delivery accounting; `lost`, `duplicated`, `reordered`, `wrong_topic` and `disconnected`
/// must all be zero.
#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    /// First deliveries of measured events.
    pub deliveries: u64,
    /// Acknowledged events × subscribers of their topic (warm-up included).
    pub expected: u64,
    /// First deliveries of any event (warm-up included).
    pub received: u64,
    /// Expected but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received after a newer event of the same topic.
    pub reordered: u64,
    /// Received on a subscriber of another topic.
    pub wrong_topic: u64,
    /// Events the tool did not publish (other publishers, reset notices).
    pub foreign: u64,
    /// Streaming subscribers the server closed.
    pub disconnected: u64,
    /// Measurement window: first measured publish to last measured delivery.
    pub elapsed_secs: f64,
    /// `deliveries / elapsed_secs`.
    pub per_sec: f64,
}

/// Publish→receive latency of measured deliveries, in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Samples.
    pub samples: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// Percentiles of a nanosecond histogram; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

/// The server process, from /proc.
#[derive(Debug, Serialize)]
pub struct Server {
    /// The first PID sampled.
    pub pid: u32,
    /// Every PID sampled (`--server-pid` repeated): the figures are their sum.
    pub pids: Vec<u32>,
    /// CPU seconds (user + system) during the measurement window (idle: the hold).
    pub cpu_secs: f64,
    /// Measured deliveries per server CPU second.
    pub deliveries_per_cpu_sec: Option<f64>,
    /// RSS before the tool connected.
    pub rss_before_kib: u64,
    /// RSS once every subscriber was streaming (idle: at the end of the hold).
    pub rss_connected_kib: u64,
    /// RSS at the end.
    pub rss_end_kib: u64,
    /// (connected − before) / connected subscribers.
    pub rss_per_conn_bytes: Option<f64>,
    /// RSS after `--settle-secs` of idleness following the run (absent without it).
    pub rss_settled_kib: Option<u64>,
    /// (settled − connected) / connected subscribers, in bytes: what a burst left behind.
    pub rss_settled_over_connected_per_conn_bytes: Option<f64>,
}

/// The tool itself, to show it was not the bottleneck.
#[derive(Debug, Serialize)]
pub struct Tool {
    /// CPU seconds during the measurement window.
    pub cpu_secs: f64,
    /// Fraction of one core during the measurement window.
    pub cpu_share: f64,
    /// Own RSS at the end.
    pub rss_kib: u64,
}

/// The rest of the machine: wall-clock figures mean little when other processes were busy.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Cores.
    pub cores: usize,
    /// CPU seconds used by processes other than the server and the tool during the window
    /// (without --server-pid the server's share is counted here too).
    pub other_cpu_secs: f64,
    /// `other_cpu_secs` per wall second: how many cores something else kept busy.
    pub other_cores_busy: f64,
}

/// The handshake-rate mode's figures (`--churn`).
#[derive(Debug, Serialize)]
pub struct Churn {
    /// Subscribers that completed connect, handshake, request and response head in the
    /// measured window.
    pub completed: u64,
    /// Of those, TLS handshakes that resumed a session.
    pub resumed: u64,
    /// Connections that failed or were closed before their response head, over the whole run.
    pub failed: u64,
    /// Completed per second of the window.
    pub per_sec: f64,
    /// Completed per server CPU-second.
    pub per_server_cpu_sec: Option<f64>,
    /// The client offered session resumption (its session cache was on).
    pub tls_resumption: bool,
}

impl Setup {
    /// The options of `plan`, run in `mode` (`publish`, `idle`, `churn`).
    pub fn of(plan: &crate::cli::Plan, mode: &'static str) -> Setup {
        let publishing = mode == "publish";
        Setup {
            mode,
            transport: plan.transport.to_string(),
            subscribers: plan.subscribers,
            topics: plan.topic_names.len(),
            publishers: if publishing { plan.publishers } else { 0 },
            spread_publishers: plan.spread_publishers,
            size: plan.size,
            rate: match plan.rate {
                crate::cli::Rate::PerSec(r) => Some(r),
                crate::cli::Rate::Max => None,
            },
            window: plan.window,
            events: plan.events,
            warmup_secs: plan.warmup.as_secs_f64(),
            source_addrs: plan.source_addrs,
            subscribe_pattern: plan.pattern.as_ref().map(|p| plan.sub_url.target(p)),
            settle_secs: plan.settle.as_secs_f64(),
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `--label`.
    pub label: Option<String>,
    /// How the run ended.
    pub outcome: Outcome,
    /// No loss, duplicate, reorder, disconnect, publish error, and a complete run.
    pub ok: bool,
    /// The first error seen, if any.
    pub error: Option<String>,
    /// Options.
    pub setup: Setup,
    /// Connect phase.
    pub connect: Connect,
    /// Publishing (absent in idle mode).
    pub publish: Option<Publish>,
    /// Delivery accounting (absent in idle mode).
    pub delivery: Option<Delivery>,
    /// Latency (absent when nothing was measured).
    pub latency_us: Option<Latency>,
    /// Server figures (absent without --server-pid).
    pub server: Option<Server>,
    /// Tool figures.
    pub tool: Tool,
    /// Other load on the machine.
    pub machine: Machine,
    /// The handshake-rate mode's figures (absent in the other modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<Churn>,
}

fn si(v: f64) -> String {
    match v.abs() {
        a if a >= 1e9 => format!("{:.2} G", v / 1e9),
        a if a >= 1e6 => format!("{:.2} M", v / 1e6),
        a if a >= 1e3 => format!("{:.1} k", v / 1e3),
        _ => format!("{v:.1} "),
    }
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let st = &self.setup;
        let rate = st.rate.map_or("max".to_string(), |r| format!("{r}/s"));
        let label = self
            .label
            .as_ref()
            .map_or(String::new(), |l| format!(" [{l}]"));
        let what = if st.mode == "idle" {
            String::new()
        } else {
            format!(", {} B events, rate {rate}, window {}", st.size, st.window)
        };
        let on = st
            .subscribe_pattern
            .as_ref()
            .map_or(String::new(), |p| format!(" all on {p}"));
        let _ = writeln!(
            s,
            "{} {}: {} subscribers{on}, {} topic(s){what}{label}",
            st.mode, st.transport, st.subscribers, st.topics,
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        row(
            "outcome",
            format!(
                "{:?}{}",
                self.outcome,
                if self.ok { " (ok)" } else { " (FAILED)" }
            ),
        );
        if let Some(e) = &self.error {
            row("first error", e.clone());
        }
        let c = &self.connect;
        row(
            "connected",
            format!("{} in {:.2} s ({} failed)", c.connected, c.secs, c.failed),
        );
        if let Some(p) = &self.publish {
            row(
                "published",
                format!(
                    "{} ({} measured), {} acked, {} errors",
                    p.published, p.measured_events, p.acked, p.errors
                ),
            );
        }
        if let Some(d) = &self.delivery {
            row(
                "deliveries",
                format!(
                    "{} in {:.3} s = {}/s",
                    d.deliveries,
                    d.elapsed_secs,
                    si(d.per_sec)
                ),
            );
            row(
                "lost / dup / reordered",
                format!(
                    "{} / {} / {}  (expected {}, received {})",
                    d.lost, d.duplicated, d.reordered, d.expected, d.received
                ),
            );
            row(
                "wrong topic / foreign / cut",
                format!("{} / {} / {}", d.wrong_topic, d.foreign, d.disconnected),
            );
        }
        if let Some(l) = &self.latency_us {
            row(
                "latency µs p50/p99/p999/max",
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0}  (mean {:.0}, {} samples)",
                    l.p50, l.p99, l.p999, l.max, l.mean, l.samples
                ),
            );
        }
        if let Some(c) = &self.churn {
            row(
                "new subscribers",
                format!(
                    "{} = {}/s, {} resumed ({}), {} failed",
                    c.completed,
                    si(c.per_sec),
                    c.resumed,
                    if c.tls_resumption {
                        "resumption on"
                    } else {
                        "resumption off"
                    },
                    c.failed
                ),
            );
        }
        if let Some(sv) = &self.server {
            row(
                "server cpu",
                format!("{:.3} s (pids {:?})", sv.cpu_secs, sv.pids),
            );
            if let Some(d) = sv.deliveries_per_cpu_sec {
                row("deliveries / server cpu-s", si(d));
            }
            row(
                "server rss before/conn/end",
                format!(
                    "{} / {} / {} KiB",
                    sv.rss_before_kib, sv.rss_connected_kib, sv.rss_end_kib
                ),
            );
            if let Some(b) = sv.rss_per_conn_bytes {
                row("server rss per connection", format!("{b:.0} B"));
            }
            if let Some(k) = sv.rss_settled_kib {
                let per_conn = sv
                    .rss_settled_over_connected_per_conn_bytes
                    .map_or(String::new(), |b| format!(", {b:+.0} B per connection"));
                row(
                    "server rss settled",
                    format!(
                        "{k} KiB after {} s idle ({:+} KiB over connected{per_conn})",
                        st.settle_secs,
                        k as i64 - sv.rss_connected_kib as i64
                    ),
                );
            }
        }
        let t = &self.tool;
        row(
            "tool cpu",
            format!(
                "{:.3} s = {:.0}% of a core, rss {} KiB",
                t.cpu_secs,
                t.cpu_share * 100.0,
                t.rss_kib
            ),
        );
        let m = &self.machine;
        row(
            "other load on the machine",
            format!(
                "{:.2} of {} cores busy with other processes{}",
                m.other_cores_busy,
                m.cores,
                if m.other_cores_busy > 0.1 {
                    " (figures distorted)"
                } else {
                    ""
                }
            ),
        );
        s
    }
}

/// Figures `--summarize` takes the median of, by JSON pointer.
const SUMMARY_FIELDS: &[(&str, &str)] = &[
    ("deliveries_per_sec", "/delivery/per_sec"),
    (
        "deliveries_per_server_cpu_sec",
        "/server/deliveries_per_cpu_sec",
    ),
    ("latency_p50_us", "/latency_us/p50"),
    ("latency_p99_us", "/latency_us/p99"),
    ("latency_p999_us", "/latency_us/p999"),
    ("latency_max_us", "/latency_us/max"),
    ("rss_per_conn_bytes", "/server/rss_per_conn_bytes"),
    (
        "rss_settled_over_connected_per_conn_bytes",
        "/server/rss_settled_over_connected_per_conn_bytes",
    ),
    ("server_cpu_secs", "/server/cpu_secs"),
    ("tool_cpu_share", "/tool/cpu_share"),
    ("other_cores_busy", "/machine/other_cores_busy"),
];

/// Figures `--summarize` adds up over repeats (any non-zero is a failure).
const SUMMED_FIELDS: &[(&str, &str)] = &[
    ("lost", "/delivery/lost"),
    ("duplicated", "/delivery/duplicated"),
    ("reordered", "/delivery/reordered"),
    ("disconnected", "/delivery/disconnected"),
    ("publish_errors", "/publish/errors"),
];

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// Medians per label over JSON reports; returns the summary and whether every run was ok.
pub fn summarize(paths: &[PathBuf]) -> Result<(Value, bool)> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(path).context(path.display())?;
        let v: Value = serde_json::from_str(&text).context(path.display())?;
        let label = v["label"].as_str().unwrap_or("(unlabelled)").to_string();
        groups.entry(label).or_default().push(v);
    }
    let mut all_ok = true;
    let mut out = serde_json::Map::new();
    for (label, runs) in groups {
        let mut fig = serde_json::Map::new();
        fig.insert("runs".into(), runs.len().into());
        let ok_runs = runs
            .iter()
            .filter(|r| r["ok"].as_bool() == Some(true))
            .count();
        all_ok &= ok_runs == runs.len();
        fig.insert("ok_runs".into(), ok_runs.into());
        for (name, ptr) in SUMMARY_FIELDS {
            let vals: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.pointer(ptr)?.as_f64())
                .collect();
            if let Some(m) = median(vals) {
                fig.insert(format!("median_{name}"), m.into());
            }
        }
        for (name, ptr) in SUMMED_FIELDS {
            let total: u64 = runs.iter().filter_map(|r| r.pointer(ptr)?.as_u64()).sum();
            fig.insert(format!("total_{name}"), total.into());
        }
        out.insert(label, Value::Object(fig));
    }
    Ok((Value::Object(out), all_ok))
}

/// The summary as a table.
pub fn summary_table(summary: &Value) -> String {
    let mut s = String::new();
    let Some(groups) = summary.as_object() else {
        return s;
    };
    for (label, fig) in groups {
        let _ = writeln!(s, "{label}: {} run(s), {} ok", fig["runs"], fig["ok_runs"]);
        if let Some(map) = fig.as_object() {
            for (k, v) in map
                .iter()
                .filter(|(k, _)| k.starts_with("median_") || k.starts_with("total_"))
            {
                let shown = match (v.as_u64(), v.as_f64()) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(f)) if k.contains("share") => format!("{:.0}%", f * 100.0),
                    (None, Some(f)) if k.ends_with("_sec") => format!("{}/s", si(f)),
                    (None, Some(f)) => format!("{f:.1}"),
                    _ => v.to_string(),
                };
                let _ = writeln!(s, "  {k:<42} {shown}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn summarizes_reports_by_label() {
        let dir = std::env::temp_dir().join(format!("loadgen-sum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut paths = Vec::new();
        for (i, per_sec) in [1.0e6, 3.0e6, 2.0e6].iter().enumerate() {
            let p = dir.join(format!("{i}.json"));
            let doc = serde_json::json!({
                "label": "a", "ok": true,
                "delivery": {"per_sec": per_sec, "lost": 0, "duplicated": i},
            });
            std::fs::write(&p, doc.to_string()).unwrap();
            paths.push(p);
        }
        let (sum, ok) = summarize(&paths).unwrap();
        assert!(ok);
        assert_eq!(sum["a"]["median_deliveries_per_sec"], 2.0e6);
        assert_eq!(sum["a"]["total_duplicated"], 3);
        assert!(summary_table(&sum).contains("2.00 M/s"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
