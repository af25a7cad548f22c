//! The event loop: one thread, one `mio::Poll` for every subscriber and publisher socket.
//!
//! Phases: connect (subscribers at most `--connect-concurrency` handshakes at a time, then the
//! publishers, so that none sits idle past the server's header timeout), then either hold (idle
//! mode) or publish until the measured events are sent and every one of them has reached every
//! subscriber, then optionally settle (`--settle-secs`: every connection open and idle, then one
//! more server RSS sample). The loop owns all stop decisions: completion, the hard timeout, a
//! stall, or a fatal publisher error. Server and tool CPU are sampled at the edges of the
//! measurement window.

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::cli::{Plan, Rate};
use crate::conn::{self, PubCounters, Publisher, Ready, SubCx, Subscriber};
use crate::error::{Context, Error, Result};
use crate::http;
use crate::report::{self, Outcome, Report};
use crate::sys::{self, Pid, ProcSample};
use crate::tally::Tally;
use crate::transport::PublishTransport;

/// Bytes read per `read` call; large enough that a busy subscriber drains in one call.
const READ_BUF: usize = 64 * 1024;
/// Readiness events handled per poll.
const EVENTS: usize = 1024;
/// Progress line period on a terminal.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Longest single poll, so that deadlines are checked even when nothing happens.
const MAX_POLL: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Connecting,
    Holding {
        until: Instant,
    },
    Publishing,
    /// The run is over; connections stay open and idle until the settled RSS sample.
    Settling {
        until: Instant,
    },
}

/// Samples of the server (if known) and of the tool at one instant.
#[derive(Clone, Copy, Debug, Default)]
struct Samples {
    server: Option<ProcSample>,
    tool: ProcSample,
    /// CPU seconds used by the whole machine since boot.
    machine: f64,
}

struct Driver<'p> {
    plan: &'p Plan,
    poll: Poll,
    clock: Instant,
    ticks: u64,
    cores: usize,
    subs: Vec<Subscriber>,
    pubs: Vec<Publisher>,
    tally: Tally,
    /// Streaming subscribers per topic: how many receivers a new event has.
    live: Vec<u32>,
    rbuf: Vec<u8>,
    /// POST head per topic.
    post_heads: Vec<Vec<u8>>,
    pub_counters: PubCounters,
    next_connect: usize,
    handshaking: usize,
    streaming: usize,
    connect_failed: usize,
    disconnected: u64,
    first_error: Option<String>,
    fatal: Option<String>,
    connected_at: Option<Instant>,
    pub_start: Option<Instant>,
    measure_start: Option<Instant>,
    measure_end: Option<Instant>,
    pub_done: bool,
    next_due: Option<Instant>,
    before: Samples,
    connected: Samples,
    measure_from: Samples,
    /// Taken when the run completed, if it then settled (the report's end figures).
    finished: Option<Samples>,
    /// Taken after `--settle-secs` of idleness.
    settled: Option<Samples>,
}

/// Runs the plan and returns the report (loss etc. inside; `Err` only for setup failures).
pub fn run(plan: &Plan) -> Result<Report> {
    let mut d = Driver::new(plan)?;
    let outcome = d.run_loop()?;
    d.report(outcome)
}

impl<'p> Driver<'p> {
    fn new(plan: &'p Plan) -> Result<Self> {
        let ticks = sys::clock_ticks();
        let server = match plan.server_pids.as_slice() {
            [] => None,
            pids => {
                Some(sys::sample_all(pids, ticks).context(format!("sample server pids {pids:?}"))?)
            }
        };
        let tool = sys::sample(Pid::This, ticks).context("sample /proc/self")?;
        let (machine, cores) = sys::machine_busy(ticks).context("read /proc/stat")?;
        let before = Samples {
            server,
            tool,
            machine,
        };
        // Per topic: the POST head, or for PUBLISH frames the topic name itself.
        let post_heads = plan
            .topic_names
            .iter()
            .map(|t| match plan.publish_transport {
                PublishTransport::Http => {
                    http::post_head(&plan.pub_url.authority, &plan.pub_url.target(t), plan.size)
                }
                PublishTransport::Frames => t.as_bytes().to_vec(),
            })
            .collect();
        Ok(Driver {
            plan,
            poll: Poll::new().context("create poll")?,
            clock: Instant::now(),
            ticks,
            cores,
            subs: Vec::with_capacity(plan.subscribers),
            pubs: Vec::new(),
            tally: Tally::new(plan.topic_names.len(), plan.window)
                .context("create latency histogram")?,
            live: vec![0; plan.topic_names.len()],
            rbuf: vec![0; READ_BUF],
            post_heads,
            pub_counters: PubCounters::default(),
            next_connect: 0,
            handshaking: 0,
            streaming: 0,
            connect_failed: 0,
            disconnected: 0,
            first_error: None,
            fatal: None,
            connected_at: None,
            pub_start: None,
            measure_start: None,
            measure_end: None,
            pub_done: false,
            next_due: None,
            before,
            connected: before,
            measure_from: before,
            finished: None,
            settled: None,
        })
    }

    fn sample(&self) -> Samples {
        // A server that exited mid-run leaves its last figures out rather than failing the run.
        let server = (!self.plan.server_pids.is_empty())
            .then(|| sys::sample_all(&self.plan.server_pids, self.ticks).ok())
            .flatten();
        let tool = sys::sample(Pid::This, self.ticks).unwrap_or_default();
        let machine = sys::machine_busy(self.ticks).map_or(0.0, |(busy, _)| busy);
        Samples {
            server,
            tool,
            machine,
        }
    }

    fn note_error(&mut self, e: String) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// The run is complete at `now`: ends it, or starts settling when `--settle-secs` is set.
    fn complete(&mut self, now: Instant) -> Option<Phase> {
        if self.plan.settle.is_zero() {
            return None;
        }
        self.finished = Some(self.sample());
        Some(Phase::Settling {
            until: now + self.plan.settle,
        })
    }

    fn run_loop(&mut self) -> Result<Outcome> {
        let start = self.clock;
        let deadline = start + self.plan.timeout;
        let mut events = Events::with_capacity(EVENTS);
        let mut phase = Phase::Connecting;
        let progress_on = std::io::stderr().is_terminal();
        let mut next_progress = start + PROGRESS_EVERY;
        let mut last_mark = self.progress_mark();
        let mut last_progress = start;
        let outcome = loop {
            let now = Instant::now();
            // Settling is bounded by --settle-secs and not part of the run's time limit.
            if now >= deadline && !matches!(phase, Phase::Settling { .. }) {
                break Outcome::TimedOut;
            }
            if let Some(e) = self.fatal.take() {
                self.note_error(e);
                break Outcome::Aborted;
            }
            match phase {
                Phase::Connecting => {
                    self.open_subscribers();
                    let subs_done =
                        self.next_connect == self.plan.subscribers && self.handshaking == 0;
                    if subs_done && self.connect_failed > 0 {
                        break Outcome::ConnectFailed;
                    }
                    // Publishers connect once every subscriber streams: a server cuts a
                    // connection that sends no request within its header timeout (sseloop:
                    // 10 s), and 10,000 TLS subscribers take longer than that to connect.
                    if subs_done && !self.plan.idle && self.pubs.is_empty() {
                        self.open_publishers()?;
                    }
                    let pubs_ready = self.pubs.iter().all(Publisher::is_connected);
                    if subs_done && pubs_ready {
                        self.connected_at = Some(now);
                        if self.plan.idle {
                            let hold = self.plan.duration.unwrap_or_default();
                            self.measure_start = Some(now);
                            self.measure_from = self.sample();
                            phase = Phase::Holding { until: now + hold };
                        } else {
                            self.connected = self.sample();
                            self.pub_start = Some(now);
                            phase = Phase::Publishing;
                        }
                        continue;
                    }
                }
                Phase::Holding { until } => {
                    if now >= until {
                        self.connected = self.sample();
                        self.measure_end = Some(now);
                        match self.complete(now) {
                            Some(next) => {
                                phase = next;
                                continue;
                            }
                            None => break Outcome::Complete,
                        }
                    }
                }
                Phase::Publishing => {
                    self.fill(now);
                    if self.pub_done
                        && self.tally.window.in_flight() == 0
                        && self.pubs.iter().all(|p| p.inflight.is_empty())
                    {
                        self.measure_end = Some(now);
                        match self.complete(now) {
                            Some(next) => {
                                phase = next;
                                continue;
                            }
                            None => break Outcome::Complete,
                        }
                    }
                }
                Phase::Settling { until } => {
                    if now >= until {
                        self.settled = Some(self.sample());
                        break Outcome::Complete;
                    }
                }
            }
            if self.plan.subscribers > 0 && self.streaming == 0 && phase == Phase::Publishing {
                self.note_error("every subscriber was disconnected".into());
                break Outcome::Aborted;
            }
            let mark = self.progress_mark();
            // Waiting for the next scheduled publish with nothing outstanding is not a stall.
            let idle_by_schedule = self.next_due.is_some()
                && self.tally.window.in_flight() == 0
                && self.pubs.iter().all(|p| p.inflight.is_empty());
            if mark != last_mark || idle_by_schedule {
                last_mark = mark;
                last_progress = now;
            } else if !matches!(phase, Phase::Holding { .. } | Phase::Settling { .. })
                && now.duration_since(last_progress) >= self.plan.stall
            {
                break Outcome::Stalled;
            }
            if progress_on && now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                self.print_progress(now);
            }
            let mut wake = now + MAX_POLL;
            match phase {
                Phase::Holding { until } => wake = wake.min(until).min(deadline),
                Phase::Settling { until } => wake = wake.min(until),
                _ => wake = wake.min(deadline),
            }
            if let Some(due) = self.next_due {
                wake = wake.min(due);
            }
            if progress_on {
                wake = wake.min(next_progress);
            }
            let timeout = wake.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::msg(format!("poll: {e}")));
                }
            }
            for ev in events.iter() {
                let ready = Ready {
                    read: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    write: ev.is_writable() || ev.is_error(),
                };
                let i = ev.token().0;
                if i < self.subs.len() {
                    self.on_subscriber(i, ready);
                } else if let Some(j) = i.checked_sub(self.plan.subscribers) {
                    self.on_publisher(j, ready);
                }
            }
        };
        if progress_on {
            eprintln!();
        }
        Ok(outcome)
    }

    /// Changes whenever anything moves; equal marks over `--stall-secs` mean a stall.
    fn progress_mark(&self) -> (u64, u64, u64, usize, usize) {
        (
            self.tally.delivered + self.tally.duplicates,
            self.pub_counters.responses,
            self.tally.window.next(),
            self.streaming,
            self.next_connect - self.handshaking,
        )
    }

    fn open_publishers(&mut self) -> Result<()> {
        for j in 0..self.plan.publishers {
            let tls = self.plan.pub_url.session().context("TLS session")?;
            let mut p = Publisher::connect(
                self.plan.pub_url.addr,
                self.plan.window,
                (self.plan.publish_transport == PublishTransport::Frames)
                    .then_some(self.plan.pub_url.authority.as_str()),
                tls,
            )
            .context(format!("connect publisher to {}", self.plan.pub_url.addr))?;
            self.poll
                .registry()
                .register(
                    p.stream_mut(),
                    Token(self.plan.subscribers + j),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .context("register publisher")?;
            self.pubs.push(p);
        }
        Ok(())
    }

    /// Starts connects while fewer than `--connect-concurrency` handshakes are in progress.
    fn open_subscribers(&mut self) {
        let plan = self.plan;
        while self.next_connect < plan.subscribers && self.handshaking < plan.connect_concurrency {
            let i = self.next_connect;
            self.next_connect += 1;
            let (topic, source, request) = plan.subscriber_start(i);
            let opened = conn::connect(plan.sub_url.addr, source, false).and_then(|mut s| {
                let tls = plan.sub_url.session()?;
                self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok((s, tls))
            });
            match opened {
                Ok((stream, tls)) => {
                    self.subs
                        .push(Subscriber::new(stream, topic, request, plan.tracker(), tls));
                    self.handshaking += 1;
                }
                Err(e) => {
                    self.subs.push(Subscriber::failed(topic, plan.tracker()));
                    self.connect_failed += 1;
                    self.note_error(format!("subscriber {i}: connect: {e}"));
                }
            }
        }
    }

    fn on_subscriber(&mut self, i: usize, ready: Ready) {
        let Driver {
            subs,
            rbuf,
            tally,
            poll,
            clock,
            plan,
            ..
        } = self;
        let sub = &mut subs[i];
        let was_handshaking = sub.is_handshaking();
        let was_streamed = sub.streamed;
        let mut cx = SubCx {
            rbuf,
            tally,
            clock: *clock,
            transport: plan.transport,
            registry: poll.registry(),
            token: Token(i),
        };
        let closed = sub.on_ready(ready, &mut cx);
        let topic = sub.topic as usize;
        if sub.streamed && !was_streamed {
            self.live[topic] += 1;
            self.streaming += 1;
        }
        if was_handshaking && !self.subs[i].is_handshaking() {
            self.handshaking -= 1;
        }
        if let Some(reason) = closed {
            if self.subs[i].streamed {
                self.live[topic] -= 1;
                self.streaming -= 1;
                self.disconnected += 1;
                self.abandon(i);
            } else {
                self.connect_failed += 1;
            }
            self.note_error(format!("subscriber {i}: {reason}"));
        }
    }

    /// A streaming subscriber is gone: stop waiting for it on in-flight events it had not seen.
    fn abandon(&mut self, i: usize) {
        let topics = self.tally.topics;
        let topic = u64::from(self.subs[i].topic);
        let (oldest, next) = (self.tally.window.oldest(), self.tally.window.next());
        let tracker = &self.subs[i].tracker;
        for g in oldest..next {
            if tracker.expects(g, topic, topics) && !tracker.has_seen(g, topic, topics) {
                self.tally.window.delivered(g);
            }
        }
    }

    fn on_publisher(&mut self, j: usize, ready: Ready) {
        let Some(p) = self.pubs.get_mut(j) else {
            return;
        };
        if let Err(e) = p.on_ready(
            ready,
            &mut self.rbuf,
            &mut self.tally,
            &mut self.pub_counters,
        ) {
            self.fatal.get_or_insert(e);
        }
    }

    /// Publishes what the rate, the window and the event budget allow, then flushes.
    fn fill(&mut self, now: Instant) {
        self.next_due = None;
        let Some(pub_start) = self.pub_start else {
            return;
        };
        let plan = self.plan;
        let topics = self.tally.topics;
        let now_ns = now.duration_since(self.clock).as_nanos() as u64;
        let mut queued = false;
        while !self.pub_done {
            if self.measure_start.is_none() && now >= pub_start + plan.warmup {
                self.measure_start = Some(now);
                self.tally.measure_from = self.tally.window.next();
                self.measure_from = self.sample();
            }
            if let Some(ms) = self.measure_start {
                let measured = self.tally.window.next() - self.tally.measure_from;
                if measured >= plan.events || plan.duration.is_some_and(|d| now >= ms + d) {
                    self.pub_done = true;
                    break;
                }
            }
            if self.tally.window.is_full() {
                break;
            }
            // At most half the window unacknowledged: the server fans out one batch while the
            // tool reads the previous one, instead of both taking turns on the whole window.
            let unacked: usize = self.pubs.iter().map(|p| p.inflight.len()).sum();
            if unacked >= (plan.window / 2).max(1) {
                break;
            }
            if let Rate::PerSec(r) = plan.rate {
                let due = pub_start + Duration::from_secs_f64(self.tally.window.next() as f64 / r);
                if due > now {
                    self.next_due = Some(due);
                    break;
                }
            }
            let topic = (self.tally.window.next() % topics) as usize;
            // Pattern subscribers all receive every topic.
            let receivers = if plan.pattern.is_some() {
                self.streaming as u32
            } else {
                self.live[topic]
            };
            let g = self.tally.window.push(receivers);
            let p = plan.publisher_for(g, topics);
            self.pubs[p].queue(&self.post_heads[topic], now_ns, g, plan.size);
            queued = true;
        }
        if queued {
            for p in &mut self.pubs {
                if let Err(e) = p.flush() {
                    self.fatal.get_or_insert(e);
                }
            }
        }
    }

    fn print_progress(&self, now: Instant) {
        let t = now.duration_since(self.clock).as_secs_f64();
        let rate = match self.measure_start {
            Some(ms) if now > ms => {
                self.tally.measured as f64 / now.duration_since(ms).as_secs_f64()
            }
            _ => 0.0,
        };
        let p99 = self.tally.latency.value_at_quantile(0.99) as f64 / 1000.0;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{t:6.1}s] subs {}/{} | published {} in flight {} | delivered {} ({:.0}/s) | p99 {p99:.0} µs | cut {}   ",
            self.streaming,
            self.plan.subscribers,
            self.tally.window.next(),
            self.tally.window.in_flight(),
            self.tally.delivered,
            rate,
            self.disconnected,
        );
        let _ = err.flush();
    }

    fn report(&mut self, outcome: Outcome) -> Result<Report> {
        if let Some(e) = self.pub_counters.first_error.clone() {
            self.note_error(e);
        }
        let now = Instant::now();
        // With --settle-secs the run's figures end where the run did, before the idle time.
        let end = self.finished.unwrap_or_else(|| self.sample());
        let plan = self.plan;
        let measure_end = self.measure_end.unwrap_or(now);
        let window_secs = self.measure_start.map_or(0.0, |ms| {
            measure_end.saturating_duration_since(ms).as_secs_f64()
        });
        let connected_subs = self.subs.iter().filter(|s| s.streamed).count();
        let (mut expected, mut lost) = (0u64, 0u64);
        for s in self.subs.iter().filter(|s| s.streamed) {
            expected += self.tally.expected_for(u64::from(s.topic), &s.tracker);
            lost += self.tally.lost_for(u64::from(s.topic), &s.tracker);
        }
        let t = &self.tally;
        let acked: u64 = t.acked.iter().sum();
        let publish = (!plan.idle).then(|| report::Publish {
            published: t.window.next(),
            acked,
            errors: self.pub_counters.errors,
            measured_events: t
                .window
                .next()
                .saturating_sub(t.measure_from.min(t.window.next())),
        });
        let delivery = (!plan.idle).then(|| report::Delivery {
            deliveries: t.measured,
            expected,
            received: t.delivered,
            lost,
            duplicated: t.duplicates,
            reordered: t.reordered,
            wrong_topic: t.wrong_topic,
            foreign: t.foreign,
            disconnected: self.disconnected,
            elapsed_secs: window_secs,
            per_sec: if window_secs > 0.0 {
                t.measured as f64 / window_secs
            } else {
                0.0
            },
        });
        let server = match (plan.server_pids.first(), self.before.server) {
            (Some(&pid), Some(before)) => {
                let connected = self.connected.server.unwrap_or(before);
                let last = end.server.unwrap_or(connected);
                let at_measure = self.measure_from.server.unwrap_or(before);
                let settled = self.settled.and_then(|s| s.server);
                let cpu = (last.cpu_secs - at_measure.cpu_secs).max(0.0);
                let cpu = if self.measure_start.is_some() {
                    cpu
                } else {
                    0.0
                };
                Some(report::Server {
                    pid,
                    pids: plan.server_pids.clone(),
                    cpu_secs: cpu,
                    deliveries_per_cpu_sec: (!plan.idle && cpu > 0.0)
                        .then(|| t.measured as f64 / cpu),
                    rss_before_kib: before.rss_kib,
                    rss_connected_kib: connected.rss_kib,
                    rss_end_kib: last.rss_kib,
                    rss_per_conn_bytes: (connected_subs > 0).then(|| {
                        (connected.rss_kib as f64 - before.rss_kib as f64) * 1024.0
                            / connected_subs as f64
                    }),
                    rss_settled_kib: settled.map(|s| s.rss_kib),
                    rss_settled_over_connected_per_conn_bytes: settled
                        .filter(|_| connected_subs > 0)
                        .map(|s| {
                            (s.rss_kib as f64 - connected.rss_kib as f64) * 1024.0
                                / connected_subs as f64
                        }),
                })
            }
            _ => None,
        };
        let tool_cpu = if self.measure_start.is_some() {
            (end.tool.cpu_secs - self.measure_from.tool.cpu_secs).max(0.0)
        } else {
            end.tool.cpu_secs - self.before.tool.cpu_secs
        };
        let tool_wall = if self.measure_start.is_some() {
            window_secs
        } else {
            now.duration_since(self.clock).as_secs_f64()
        };
        let clean = lost == 0
            && t.duplicates == 0
            && t.reordered == 0
            && t.wrong_topic == 0
            && self.disconnected == 0
            && self.pub_counters.errors == 0
            && self.connect_failed == 0;
        let server_cpu = server.as_ref().map_or(0.0, |s| s.cpu_secs);
        let machine_cpu = if self.measure_start.is_some() {
            end.machine - self.measure_from.machine
        } else {
            end.machine - self.before.machine
        };
        let other = (machine_cpu - server_cpu - tool_cpu).max(0.0);
        Ok(Report {
            label: plan.label.clone(),
            outcome,
            ok: clean && outcome == Outcome::Complete,
            error: self.first_error.clone(),
            setup: report::Setup::of(plan, if plan.idle { "idle" } else { "publish" }),
            connect: report::Connect {
                connected: connected_subs,
                failed: self.connect_failed,
                secs: self
                    .connected_at
                    .map_or(0.0, |c| c.duration_since(self.clock).as_secs_f64()),
            },
            publish,
            delivery,
            latency_us: report::Latency::from_histogram(&t.latency),
            server,
            tool: report::Tool {
                cpu_secs: tool_cpu,
                cpu_share: if tool_wall > 0.0 {
                    tool_cpu / tool_wall
                } else {
                    0.0
                },
                rss_kib: end.tool.rss_kib,
            },
            churn: None,
            machine: report::Machine {
                cores: self.cores,
                other_cpu_secs: other,
                other_cores_busy: if tool_wall > 0.0 {
                    other / tool_wall
                } else {
                    0.0
                },
            },
        })
    }
}
