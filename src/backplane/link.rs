//! The two links' state machines: a link is `Down` (waiting to reconnect, with jittered
//! backoff) or `Up` (a non-blocking Redis connection with the replies it expects, in order, and
//! their deadlines). Connecting pipelines the handshake (AUTH, SELECT, ROLE with Sentinel,
//! SCRIPT LOAD, HELLO); a reply is routed by what the link expects; an error or a missed deadline
//! drops the link, which refuses what it carried and reconnects (asking the sentinels again). HELLO carries the node's high-water mark: a Redis
//! behind it starts a new epoch (`scripts::HELLO`), which every node's reader turns into a reset
//! notice before any newer event.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;

use super::redis::{integer, text, RedisConn};
use super::warm::{request_page, Warm};
use super::{scripts, Backplane, Notice, FIRST_BACKOFF, MAX_BACKOFF, READER, WRITER};

pub(super) enum Expect {
    /// AUTH / SELECT / SCRIPT LOAD: anything but an error.
    Setup(&'static str),
    /// Sentinel mode: the server must say it is the master.
    Role,
    ScriptSha(ScriptKind),
    Hello,
    /// The oldest in-flight APPEND call, with its number of events.
    Append(usize),
    /// The `WAIT` after an APPEND call (or a sweep): how many replicating entries it settles,
    /// and when it was sent.
    Wait(usize, Instant),
    /// A sweep's counter (`scripts::SWEEP`).
    Sweep,
    /// A COMMIT call (its reply says nothing).
    Commit,
    /// The entry at the last seq delivered, after a reconnection (`verify.rs`).
    Verify,
    /// The oldest in-flight backfill.
    Fetch,
    Read,
    Warm,
    /// A presence call (`presence.rs`): 0 a write, else the query's id.
    Presence(u64),
    /// The previous node's `--backplane-min-replicas` (`replicas.rs`).
    Setting,
}

#[derive(Clone, Copy)]
pub(super) enum ScriptKind {
    Append,
    Fetch,
    Commit,
}

pub(super) enum Phase {
    Down { retry_at: Instant, attempt: u32 },
    Up(Box<Link>),
}

pub(super) struct Link {
    pub(super) conn: RedisConn,
    /// Where it is connected (with Sentinel: the master when it connected).
    pub(super) addr: std::net::SocketAddr,
    pub(super) expect: VecDeque<Expect>,
    /// The oldest expected reply must arrive by then.
    pub(super) deadlines: VecDeque<Instant>,
    pub(super) append_sha: String,
    pub(super) fetch_sha: String,
    pub(super) commit_sha: String,
    /// The dataset's epoch, once HELLO answered.
    pub(super) epoch: Option<String>,
    /// Reader: fetching the newest events for the cache (first contact only).
    pub(super) warming: Option<Warm>,
    pub(super) attempt: u32,
}

impl Link {
    /// A `WAIT` is in flight (replicated acknowledgements: one at a time).
    pub(super) fn waits_for_replicas(&self) -> bool {
        self.expect.iter().any(|e| matches!(e, Expect::Wait(..)))
    }
}

impl Backplane {
    /// Waits at most `timeout` for the writer's replies and handles what came (answers and the
    /// node's own events land in [`Backplane::completions`] and [`Backplane::events`]). False
    /// when nothing came in time.
    pub fn await_writer(
        &mut self,
        registry: &Registry,
        timeout: Duration,
        scratch: &mut [u8],
    ) -> bool {
        let Phase::Up(link) = &self.writer else {
            return false;
        };
        if !link.conn.wait_readable(timeout) {
            return false;
        }
        self.on_ready(WRITER, registry, Instant::now(), scratch);
        true
    }

    /// Readiness on one of the links.
    pub fn on_ready(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        scratch: &mut [u8],
    ) {
        let writer = token == WRITER;
        let result = {
            let phase = pick(&mut self.writer, &mut self.reader, writer);
            let Phase::Up(link) = phase else {
                return;
            };
            let mut frames = std::mem::take(&mut self.frames);
            let r = link.conn.on_ready(&mut frames, scratch);
            self.frames = frames;
            r
        };
        // Replies decoded before an error are genuine: handle them first.
        let mut frames = std::mem::take(&mut self.frames);
        let mut broken = None;
        for frame in frames.drain(..) {
            if let Err(why) = self.on_reply(writer, frame, now) {
                broken = Some(why);
                break;
            }
        }
        frames.clear();
        self.frames = frames;
        if let Some(why) = broken.or_else(|| result.err().map(|e| e.to_string())) {
            self.lose(writer, &why, registry, now);
        }
    }

    pub(super) fn connect(
        &mut self,
        writer: bool,
        registry: &Registry,
        now: Instant,
        attempt: u32,
        floor: u64,
    ) {
        let token = if writer { WRITER } else { READER };
        let tls = self
            .cfg
            .tls
            .as_ref()
            .map(|c| (c, self.cfg.url.host.as_str()));
        let conn = match RedisConn::connect(self.addr, registry, token, tls) {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                let retry_at = now + self.backoff(attempt);
                self.log_failure("cannot connect", &why, now);
                let phase = pick(&mut self.writer, &mut self.reader, writer);
                *phase = Phase::Down {
                    retry_at,
                    attempt: attempt + 1,
                };
                return;
            }
        };
        let mut link = Box::new(Link {
            conn,
            addr: self.addr,
            expect: VecDeque::new(),
            deadlines: VecDeque::new(),
            append_sha: String::new(),
            fetch_sha: String::new(),
            commit_sha: String::new(),
            epoch: None,
            warming: None,
            attempt,
        });
        // The whole handshake is pipelined: Redis answers in order, and an error in any step
        // drops the link.
        if let Some(password) = &self.cfg.url.password {
            match &self.cfg.url.user {
                Some(user) => link
                    .conn
                    .command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => link.conn.command(&[b"AUTH", password.as_bytes()]),
            }
            link.expect.push_back(Expect::Setup("AUTH"));
        }
        if self.cfg.url.db != 0 {
            let db = self.cfg.url.db.to_string();
            link.conn.command(&[b"SELECT", db.as_bytes()]);
            link.expect.push_back(Expect::Setup("SELECT"));
        }
        if self.sentinel.is_some() {
            // The address came from the sentinels a moment ago; a failover may have moved on.
            link.conn.command(&[b"ROLE"]);
            link.expect.push_back(Expect::Role);
        }
        // HELLO runs once per connection (plain EVAL); the writer's scripts run per event.
        if writer {
            link.conn
                .command(&[b"SCRIPT", b"LOAD", scripts::APPEND.as_bytes()]);
            link.expect.push_back(Expect::ScriptSha(ScriptKind::Append));
            link.conn
                .command(&[b"SCRIPT", b"LOAD", scripts::FETCH.as_bytes()]);
            link.expect.push_back(Expect::ScriptSha(ScriptKind::Fetch));
            if self.cfg.min_replicas > 0 {
                link.conn
                    .command(&[b"SCRIPT", b"LOAD", scripts::COMMIT.as_bytes()]);
                link.expect.push_back(Expect::ScriptSha(ScriptKind::Commit));
            }
            super::replicas::say_setting(&mut link, &self.keys, self.cfg.min_replicas);
        }
        let candidate = crate::ids::run_id();
        // The node's high-water mark: Redis behind it lost what the cluster issued or read.
        let mark = floor.max(self.last_read).max(self.issued).to_string();
        let gated = self.cfg.min_replicas > 0;
        let fence = self.sentinel.is_some() && !gated;
        let flag = |on: bool| if on { &b"1"[..] } else { &b"0"[..] };
        let force = std::mem::take(&mut self.force_epoch);
        link.conn.command(&[
            b"EVAL",
            scripts::HELLO.as_bytes(),
            b"6",
            self.keys.seq.as_bytes(),
            self.keys.epoch.as_bytes(),
            self.keys.log.as_bytes(),
            self.keys.since.as_bytes(),
            self.keys.master.as_bytes(),
            self.keys.committed.as_bytes(),
            candidate.as_bytes(),
            mark.as_bytes(),
            flag(fence),
            flag(gated),
            flag(force),
        ]);
        link.expect.push_back(Expect::Hello);
        // One deadline covers the handshake: the last reply (HELLO) must come by then.
        link.deadlines.push_back(now + self.cfg.timeout);
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        *phase = Phase::Up(link);
    }

    pub(super) fn backoff(&mut self, attempt: u32) -> Duration {
        let base = FIRST_BACKOFF
            .saturating_mul(1u32 << attempt.min(6))
            .min(MAX_BACKOFF);
        // Jitter over [base/2, base] so that nodes restarted together do not reconnect in step.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = base / 2;
        half + Duration::from_micros(self.rng % (half.as_micros() as u64 + 1))
    }

    /// Drops a link: its in-flight appends are refused, and it reconnects after a backoff.
    pub(super) fn lose(&mut self, writer: bool, why: &str, registry: &Registry, now: Instant) {
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        let mut on_master = true;
        let attempt = match std::mem::replace(
            phase,
            Phase::Down {
                retry_at: now,
                attempt: 0,
            },
        ) {
            Phase::Up(link) => {
                on_master = link.addr == self.addr;
                let was_ready = link.epoch.is_some();
                let attempt = if was_ready { 0 } else { link.attempt + 1 };
                link.conn.close(registry);
                if was_ready {
                    log::warn!(
                        "backplane {} {}: connection lost: {why}",
                        self.cfg.url,
                        if writer { "writer" } else { "reader" }
                    );
                } else {
                    self.log_failure("handshake failed", why, now);
                }
                attempt
            }
            Phase::Down { attempt, .. } => attempt,
        };
        let retry_at = now
            + if attempt == 0 {
                Duration::ZERO
            } else {
                self.backoff(attempt)
            };
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        *phase = Phase::Down { retry_at, attempt };
        if writer {
            self.fail_pending();
            self.sweeping = false;
        }
        // Losing a link to the master may mean a failover: ask the sentinels again before
        // reconnecting (a link left on a former master says nothing new).
        if on_master {
            self.forget_master();
        }
    }

    pub(super) fn on_reply(
        &mut self,
        writer: bool,
        frame: OwnedFrame,
        now: Instant,
    ) -> Result<(), String> {
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        let Phase::Up(link) = phase else {
            return Ok(());
        };
        let Some(expect) = link.expect.pop_front() else {
            return Err("reply to nothing".into());
        };
        if matches!(
            expect,
            Expect::Hello
                | Expect::Append(_)
                | Expect::Fetch
                | Expect::Read
                | Expect::Warm
                | Expect::Wait(..)
                | Expect::Sweep
                | Expect::Commit
                | Expect::Verify
                | Expect::Presence(_)
        ) {
            link.deadlines.pop_front();
        }
        if let OwnedFrame::Error(e) = &frame {
            if moved(e) {
                // A master that became a replica, or one still loading: its writes and reads
                // are no longer the cluster's. Drop the link; the sentinels say where to go.
                if let Expect::Append(n) = expect {
                    self.refuse_append(n);
                }
                return Err(first_word(e).to_string());
            }
            return match expect {
                Expect::Append(n) => {
                    // A script error (e.g. out of memory): refuse the call's events. Writes the
                    // script made before it failed stay (Redis has no rollback) and are read
                    // back like any event: the timed-out-publish case that idempotency keys
                    // make safe to retry.
                    log::warn!("backplane append refused by Redis: {}", first_word(e));
                    self.refuse_append(n);
                    Ok(())
                }
                Expect::Fetch => {
                    log::warn!("backplane backfill refused by Redis: {e}");
                    if let Some(req) = self.fetches.pop_front() {
                        self.backfill_failed(req);
                    }
                    Ok(())
                }
                Expect::Presence(id) => {
                    self.on_presence_error(id, e);
                    Ok(())
                }
                Expect::Setup(step) => Err(format!("{step}: {}", first_word(e))),
                _ => Err(first_word(e).to_string()),
            };
        }
        match expect {
            Expect::Setup(_) | Expect::Commit => Ok(()),
            Expect::Role => match &frame {
                OwnedFrame::Array(parts) if parts.first().and_then(text) == Some("master") => {
                    Ok(())
                }
                _ => Err("ROLE: not the master (a failover is under way)".into()),
            },
            Expect::ScriptSha(kind) => {
                let sha = text(&frame).ok_or("SCRIPT LOAD: no sha")?.to_string();
                match kind {
                    ScriptKind::Append => link.append_sha = sha,
                    ScriptKind::Fetch => link.fetch_sha = sha,
                    ScriptKind::Commit => link.commit_sha = sha,
                }
                Ok(())
            }
            Expect::Hello => self.on_hello(writer, &frame, now),
            Expect::Append(n) => self.on_append(n, &frame),
            Expect::Wait(n, sent) => self.on_wait(n, sent, &frame, now),
            Expect::Sweep => self.on_sweep(&frame, now),
            Expect::Verify => self.on_verify(&frame),
            Expect::Fetch => self.on_fetch(&frame),
            Expect::Read => self.on_read(&frame, now),
            Expect::Warm => self.on_warm(&frame, now),
            Expect::Presence(id) => self.on_presence(id, &frame),
            Expect::Setting => self.on_setting(&frame),
        }
    }

    pub(super) fn on_hello(
        &mut self,
        writer: bool,
        frame: &OwnedFrame,
        now: Instant,
    ) -> Result<(), String> {
        let OwnedFrame::Array(parts) = frame else {
            return Err("HELLO: unexpected reply".into());
        };
        let epoch = parts.first().and_then(text).ok_or("HELLO: no epoch")?;
        let epoch = epoch.to_string();
        let since = parts
            .get(2)
            .and_then(integer)
            .and_then(|s| u64::try_from(s).ok());
        let since = since.unwrap_or(0);
        let committed = parts
            .get(3)
            .and_then(integer)
            .and_then(|s| u64::try_from(s).ok());
        self.committed = self.committed.max(committed.unwrap_or(0));
        let phase = pick(&mut self.writer, &mut self.reader, writer);
        let Phase::Up(link) = phase else {
            return Ok(());
        };
        let seen = &mut self.ever_up[usize::from(!writer)];
        if std::mem::replace(seen, true) {
            self.stats.reconnects += 1;
        }
        link.epoch = Some(epoch.clone());
        link.attempt = 0;
        if writer {
            log::info!(
                "backplane {} writer: connected, epoch {epoch}",
                self.cfg.url
            );
            return Ok(());
        }
        match self.epoch.as_deref() {
            None => {
                log::info!(
                    "backplane {} reader: connected, epoch {epoch}",
                    self.cfg.url
                );
                self.epoch = Some(epoch.clone());
                self.since = since;
                self.out.notices.push((
                    self.out.events.len(),
                    Notice::Epoch {
                        epoch: epoch.clone(),
                        lost: false,
                        since,
                    },
                ));
                // First contact: fill the cache with the newest retained events.
                link.warming = Some(Warm::default());
                request_page(link, &self.keys.log, None, now + self.cfg.timeout);
            }
            Some(known) if known == epoch => {
                log::info!(
                    "backplane {} reader: reconnected, reading on after seq {}",
                    self.cfg.url,
                    self.last_read
                );
                if self.last_event.is_some_and(|e| e.seq == self.last_read) {
                    let deadline = now + self.cfg.timeout;
                    super::verify::send_verify(link, &self.keys.log, self.last_read, deadline);
                }
            }
            Some(_) => self.new_epoch(epoch, since),
        }
        // Read on after what was delivered; what was held is read again (with a failover it may
        // be gone, and its seqs given anew).
        self.drop_held();
        self.read_pos = (self.last_read, 0);
        Ok(())
    }

    /// The dataset's epoch changed (Redis came back without its data, or behind what a node
    /// had seen): streams are told, before any event of the new epoch, which the reader reads
    /// from its start.
    pub(super) fn new_epoch(&mut self, epoch: String, since: u64) {
        log::warn!(
            "backplane {}: the dataset changed (epoch {} -> {epoch}): Redis lost events the \
             cluster had issued or read; streams get a reset notice",
            self.cfg.url,
            self.epoch.as_deref().unwrap_or("")
        );
        self.epoch = Some(epoch.clone());
        self.since = since;
        self.last_read = since;
        self.read_pos = (since, 0);
        self.drop_held();
        let notice = Notice::Epoch {
            epoch,
            lost: true,
            since,
        };
        self.out.notices.push((self.out.events.len(), notice));
    }
}

/// The writer's or the reader's phase (a split borrow: the rest of the backplane stays usable).
pub(super) fn pick<'a>(
    writer: &'a mut Phase,
    reader: &'a mut Phase,
    which_writer: bool,
) -> &'a mut Phase {
    if which_writer {
        writer
    } else {
        reader
    }
}

/// Most often a failure to reach Redis is logged at WARN; the retries in between go to DEBUG.
pub(super) const FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

impl Backplane {
    /// A failure to (re)connect, named by its cause (refused, timeout, auth failed, …): at WARN
    /// once per [`FAILURE_LOG_EVERY`], at DEBUG for the retries in between.
    pub(super) fn log_failure(&mut self, what: &str, why: &str, now: Instant) {
        // `why` never holds a password: Redis's errors are cut to their code word.
        let (cause, shown) = (failure_cause(why), why);
        if self.failure_log.note(now).is_some() {
            log::warn!("backplane {}: {what}: {cause}: {shown}", self.describe());
        } else {
            log::debug!("backplane {}: {what}: {cause}: {shown}", self.describe());
        }
    }
}

/// The cause of a connection failure in an operator's words.
fn failure_cause(why: &str) -> &'static str {
    let lower = why.to_ascii_lowercase();
    if lower.contains("refused") {
        "refused"
    } else if lower.contains("wrongpass") || lower.contains("noauth") || lower.contains("auth") {
        "auth failed"
    } else if lower.contains("deadline") || lower.contains("timed out") {
        "timeout"
    } else if lower.contains("reset") || lower.contains("closed") || lower.contains("broken pipe") {
        "connection lost"
    } else {
        "error"
    }
}

/// An error that says this server is not (or no longer) a usable master.
fn moved(e: &str) -> bool {
    matches!(
        first_word(e),
        "READONLY" | "MASTERDOWN" | "LOADING" | "UNBLOCKED" | "NOREPLICAS"
    )
}

pub(super) fn first_word(e: &str) -> &str {
    // Redis errors start with a code word (NOAUTH, WRONGPASS, NOSCRIPT...); the rest may quote
    // arguments, which could be a password.
    e.split_whitespace().next().unwrap_or("error")
}

#[cfg(test)]
mod failure_tests {
    use super::failure_cause;

    #[test]
    fn causes_in_an_operators_words() {
        assert_eq!(
            failure_cause("Connection refused (os error 111)"),
            "refused"
        );
        assert_eq!(failure_cause("AUTH: WRONGPASS"), "auth failed");
        assert_eq!(failure_cause("HELLO: NOAUTH"), "auth failed");
        assert_eq!(
            failure_cause("no reply within the append deadline"),
            "timeout"
        );
        assert_eq!(
            failure_cause("Connection reset by peer (os error 104)"),
            "connection lost"
        );
        assert_eq!(failure_cause("something else"), "error");
    }
}
