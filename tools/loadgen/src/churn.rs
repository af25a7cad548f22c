//! The handshake-rate mode (`--churn`): a stream of new subscribers, `--connect-concurrency` at
//! a time. Each connects, completes its TLS handshake (with `https://`), sends its subscribe
//! request, reads the response head (the first bytes the server sends a subscriber) and closes;
//! its slot then opens the next one. After `--warmup-secs` the tool counts completed subscribers
//! for `--duration-secs` and samples the server's CPU at both edges: the figure is new
//! subscribers per server CPU-second (the report's deliveries, one per subscriber), and the
//! latency is connect-to-head time. With TLS the share of resumed handshakes is reported too.
//! Each slot is one returning client with a session cache of its own, as each browser has one
//! (`--no-tls-resumption`: none, every handshake full); one cache shared by every slot would
//! hold rustls's 8 tickets per server for 32 clients starting at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use rustls::client::Resumption;
use rustls::ClientConfig;

use crate::cli::Plan;
use crate::conn::{self, Ready, SubCx, Subscriber};
use crate::error::{Context, Error, Result};
use crate::report::{self, Outcome, Report};
use crate::sys::{self, Pid, ProcSample};
use crate::tally::Tally;

/// Bytes read per `read` call (a response head and the session tickets fit).
const READ_BUF: usize = 16 * 1024;
/// Longest single poll, so that the window's edges are met on time.
const MAX_POLL: Duration = Duration::from_millis(50);
/// Sessions one client remembers (rustls keeps up to 8 TLS 1.3 tickets per server).
const SESSIONS_PER_CLIENT: usize = 8;
/// Measured time when `--duration-secs` is not given.
const DEFAULT_SECS: u64 = 5;

/// Counts of one churn run.
#[derive(Default)]
struct Counts {
    completed: u64,
    resumed: u64,
    failed: u64,
}

/// Server and tool samples at one instant.
#[derive(Clone, Copy, Default)]
struct Samples {
    server: Option<ProcSample>,
    tool: ProcSample,
    machine: f64,
}

fn sample(plan: &Plan, ticks: u64) -> Samples {
    Samples {
        server: (!plan.server_pids.is_empty())
            .then(|| sys::sample_all(&plan.server_pids, ticks).ok())
            .flatten(),
        tool: sys::sample(Pid::This, ticks).unwrap_or_default(),
        machine: sys::machine_busy(ticks).map_or(0.0, |(busy, _)| busy),
    }
}

/// One subscriber in flight and when its connect started.
struct Slot {
    sub: Subscriber,
    started: Instant,
}

/// Runs the handshake-rate plan and returns its report.
pub fn run(plan: &Plan) -> Result<Report> {
    let ticks = sys::clock_ticks();
    let cores = sys::machine_busy(ticks).map_or(1, |(_, c)| c);
    let mut poll = Poll::new().context("create poll")?;
    let mut tally = Tally::new(1, plan.window).context("create latency histogram")?;
    let mut rbuf = vec![0u8; READ_BUF];
    let mut slots: Vec<Option<Slot>> = (0..plan.connect_concurrency).map(|_| None).collect();
    let clients: Vec<Option<Arc<ClientConfig>>> = (0..plan.connect_concurrency)
        .map(|_| {
            plan.sub_url.tls.as_ref().map(|base| {
                let mut c = (**base).clone();
                if plan.tls_resumption {
                    c.resumption = Resumption::in_memory_sessions(SESSIONS_PER_CLIENT);
                }
                Arc::new(c)
            })
        })
        .collect();
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let deadline = start + plan.timeout;
    let measure_start = start + plan.warmup;
    let measure_end = measure_start + plan.duration.unwrap_or(Duration::from_secs(DEFAULT_SECS));
    let before = sample(plan, ticks);
    let mut from: Option<Samples> = None;
    let (mut all, mut measured) = (Counts::default(), Counts::default());
    let mut first_error: Option<String> = None;
    let mut opened = 0usize;
    let mut last_progress = start;
    let outcome = loop {
        let now = Instant::now();
        if now >= deadline {
            break Outcome::TimedOut;
        }
        if from.is_none() && now >= measure_start {
            from = Some(sample(plan, ticks));
            tally.latency.reset();
        }
        if now >= measure_end {
            break Outcome::Complete;
        }
        if now.duration_since(last_progress) >= plan.stall {
            break Outcome::Stalled;
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.is_none() {
                match open(plan, &poll, i, opened, clients[i].as_ref()) {
                    Ok(sub) => *slot = Some(Slot { sub, started: now }),
                    Err(e) => {
                        all.failed += 1;
                        first_error.get_or_insert(format!("connect: {e}"));
                    }
                }
                opened += 1;
            }
        }
        let wake = (now + MAX_POLL).min(measure_end).min(deadline);
        if let Err(e) = poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::msg(format!("poll: {e}")));
            }
        }
        let now = Instant::now();
        let counting = from.is_some();
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(Slot { sub, started }) = slots.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let ready = Ready {
                read: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                write: ev.is_writable() || ev.is_error(),
            };
            let mut cx = SubCx {
                rbuf: &mut rbuf,
                tally: &mut tally,
                clock: start,
                transport: plan.transport,
                registry: poll.registry(),
                token: Token(i),
            };
            let closed = sub.on_ready(ready, &mut cx);
            if sub.streamed {
                let resumed = u64::from(sub.tls_resumed() == Some(true));
                let took = now.duration_since(*started).as_nanos() as u64;
                all.completed += 1;
                all.resumed += resumed;
                if counting {
                    measured.completed += 1;
                    measured.resumed += resumed;
                    let _ = tally.latency.record(took.max(1));
                }
                last_progress = now;
            } else if let Some(reason) = closed {
                all.failed += 1;
                first_error.get_or_insert(reason);
            } else {
                continue;
            }
            // Dropping the subscriber closes its socket; the slot opens the next one.
            slots[i] = None;
        }
    };
    let end = sample(plan, ticks);
    Ok(build_report(
        plan,
        outcome,
        cores,
        (before, from, end),
        &all,
        &measured,
        &tally,
        first_error,
        start,
    ))
}

/// Starts subscriber number `n` in slot `i`, a TLS client of `client` with `https://`.
fn open(
    plan: &Plan,
    poll: &Poll,
    i: usize,
    n: usize,
    client: Option<&Arc<ClientConfig>>,
) -> std::io::Result<Subscriber> {
    let (topic, source, request) = plan.subscriber_start(n);
    // TCP_NODELAY, as browsers set it: the request right after the client's Finished must not
    // wait for the server's delayed ACK.
    let mut stream = conn::connect(plan.sub_url.addr, source, true)?;
    let tls = client
        .map(|c| crate::tls::Session::new(c, plan.sub_url.host()))
        .transpose()?;
    poll.registry().register(
        &mut stream,
        Token(i),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(Subscriber::new(stream, topic, request, plan.tracker(), tls))
}

/// The run's figures; `from` is `None` when the measured window never started.
#[allow(clippy::too_many_arguments)]
fn build_report(
    plan: &Plan,
    outcome: Outcome,
    cores: usize,
    (before, from, end): (Samples, Option<Samples>, Samples),
    all: &Counts,
    measured: &Counts,
    tally: &Tally,
    error: Option<String>,
    start: Instant,
) -> Report {
    let window = plan.duration.unwrap_or(Duration::from_secs(DEFAULT_SECS));
    let secs = if from.is_some() && outcome == Outcome::Complete {
        window.as_secs_f64()
    } else {
        0.0
    };
    let from_s = from.unwrap_or(before);
    let server_cpu = match (from_s.server, end.server) {
        (Some(a), Some(b)) if from.is_some() => (b.cpu_secs - a.cpu_secs).max(0.0),
        _ => 0.0,
    };
    let per_cpu = (server_cpu > 0.0).then(|| measured.completed as f64 / server_cpu);
    let per_sec = if secs > 0.0 {
        measured.completed as f64 / secs
    } else {
        0.0
    };
    let tool_cpu = (end.tool.cpu_secs - from_s.tool.cpu_secs).max(0.0);
    let wall = if secs > 0.0 {
        secs
    } else {
        start.elapsed().as_secs_f64()
    };
    let other = (end.machine - from_s.machine - server_cpu - tool_cpu).max(0.0);
    let server = match (plan.server_pids.first(), before.server, end.server) {
        (Some(&pid), Some(b), Some(e)) => Some(report::Server {
            pid,
            pids: plan.server_pids.clone(),
            cpu_secs: server_cpu,
            deliveries_per_cpu_sec: per_cpu,
            rss_before_kib: b.rss_kib,
            rss_connected_kib: e.rss_kib,
            rss_end_kib: e.rss_kib,
            rss_per_conn_bytes: None,
            rss_settled_kib: None,
            rss_settled_over_connected_per_conn_bytes: None,
        }),
        _ => None,
    };
    Report {
        label: plan.label.clone(),
        outcome,
        ok: outcome == Outcome::Complete && all.failed == 0 && measured.completed > 0,
        error,
        setup: report::Setup::of(plan, "churn"),
        connect: report::Connect {
            connected: all.completed as usize,
            failed: all.failed as usize,
            secs: 0.0,
        },
        publish: None,
        delivery: Some(report::Delivery {
            deliveries: measured.completed,
            received: all.completed,
            elapsed_secs: secs,
            per_sec,
            ..report::Delivery::default()
        }),
        latency_us: report::Latency::from_histogram(&tally.latency),
        server,
        tool: report::Tool {
            cpu_secs: tool_cpu,
            cpu_share: tool_cpu / wall.max(f64::EPSILON),
            rss_kib: end.tool.rss_kib,
        },
        machine: report::Machine {
            cores,
            other_cpu_secs: other,
            other_cores_busy: other / wall.max(f64::EPSILON),
        },
        churn: Some(report::Churn {
            completed: measured.completed,
            resumed: measured.resumed,
            failed: all.failed,
            per_sec,
            per_server_cpu_sec: per_cpu,
            tls_resumption: plan.tls_resumption,
        }),
    }
}
