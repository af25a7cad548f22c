//! Publishing and stopping from other threads: a bounded queue behind a mutex plus a `mio::Waker`.
//!
//! Ids are assigned when the event is queued, under the same lock the loop takes to assign ids to
//! its own publishes, so the id returned to a foreign thread is final and the sequence stays
//! strictly increasing in the order events enter history. Wake-ups coalesce: the loop moves the
//! whole queue into the hub's backlog per wake and records it in slices. The queue holds at most
//! `--publish-queue-bytes`; past that, publishing answers [`PublishError::QueueFull`] ("would
//! block") until the loop has drained it.
//!
//! With a backplane, ids come from Redis: a publish is queued without an id, the loop appends it,
//! and the calling thread waits (at most the append timeout) for Redis's answer. The thread that
//! drives the loop cannot wait for itself, so it is refused ([`PublishError::OnLoopThread`]).

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Duration;

use mio::Waker;

use crate::backplane::{AppendError, ReplySlot};
use crate::http::request::{topic_is_new, valid_event_type, MAX_TOPICS_PER_REQUEST};

/// An event queued by another thread, id already assigned (0 with a backplane: Redis gives it).
pub(crate) struct QueuedEvent {
    pub seq: u64,
    /// With a backplane: where the waiting thread gets its answer.
    pub reply: Option<Arc<ReplySlot>>,
    /// With a backplane: the publish's idempotency key (checked in Redis).
    pub idempotency_key: Option<String>,
    pub topics: Vec<String>,
    pub event_type: Option<String>,
    pub data: String,
}

/// The sequence counter and the cross-thread queue, shared by the loop and every handle.
pub(crate) struct Sequencer {
    run: Box<str>,
    max_body: usize,
    /// Most bytes of queued events (data, topics, type) before publishing says "would block".
    queue_bytes: usize,
    /// Largest encoded event the loop accepts (the per-connection queue cap).
    max_event_bytes: std::sync::atomic::AtomicUsize,
    state: Mutex<SeqState>,
    stop: AtomicBool,
    loop_gone: AtomicBool,
    /// The backplane's append timeout in ms; 0 without a backplane.
    backplane_timeout_ms: AtomicU64,
    /// The thread that last ran an iteration of the loop.
    loop_thread: Mutex<Option<ThreadId>>,
}

#[derive(Default)]
pub(crate) struct SeqState {
    pub last: u64,
    pub queued: Vec<QueuedEvent>,
    /// Bytes held by `queued`.
    pub queued_bytes: usize,
    /// `Idempotency-Key` answers without a backplane, for every publish path (the loop's and
    /// other threads').
    pub idempotency: crate::idempotency::Idempotency,
}

impl Sequencer {
    pub fn new(run: &str, max_body: usize, queue_bytes: usize) -> Sequencer {
        Sequencer {
            run: run.into(),
            max_body,
            queue_bytes,
            max_event_bytes: std::sync::atomic::AtomicUsize::new(usize::MAX),
            state: Mutex::new(SeqState::default()),
            stop: AtomicBool::new(false),
            loop_gone: AtomicBool::new(false),
            backplane_timeout_ms: AtomicU64::new(0),
            loop_thread: Mutex::new(None),
        }
    }

    /// Publishes now wait for the backplane's answer, at most `timeout` (plus a margin).
    pub fn use_backplane(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.backplane_timeout_ms.store(ms, Ordering::Release);
    }

    /// Notes the thread running the loop (called once per iteration; cheap when unchanged).
    pub fn note_loop_thread(&self) {
        let me = std::thread::current().id();
        let mut t = self
            .loop_thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *t != Some(me) {
            *t = Some(me);
        }
    }

    fn on_loop_thread(&self) -> bool {
        let t = self
            .loop_thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *t == Some(std::thread::current().id())
    }

    /// Takes everything other threads queued.
    pub fn take_queued(&self) -> Vec<QueuedEvent> {
        let mut state = self.lock();
        state.queued_bytes = 0;
        std::mem::take(&mut state.queued)
    }

    /// Locks the state; a panic elsewhere while holding it cannot leave it inconsistent (every
    /// critical section is a push or an increment), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, SeqState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    /// The id clients see for sequence number `seq`: `<run>-<seq>`.
    pub fn id_for(&self, seq: u64) -> String {
        format!("{}-{}", self.run, seq)
    }

    /// How long idempotency keys are remembered (without a backplane).
    pub fn set_idempotency_window(&self, window: Duration) {
        self.lock().idempotency = crate::idempotency::Idempotency::new(window);
    }

    /// Sets the largest encoded event publishes may produce.
    pub fn set_max_event_bytes(&self, n: usize) {
        self.max_event_bytes.store(n, Ordering::Relaxed);
    }

    /// Refuses new publishes from other threads (shutdown has begun: they would not be
    /// delivered).
    pub fn close_publishing(&self) {
        self.loop_gone.store(true, Ordering::Release);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn mark_loop_gone(&self) {
        self.loop_gone.store(true, Ordering::Release);
    }
}

/// Why a publish through a [`PublishHandle`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// No topic, more than 64 distinct topics, or a topic outside `[A-Za-z0-9._~:/-]{1,128}`.
    BadTopic,
    /// Event type empty, over 128 bytes, or containing CR, LF or NUL.
    BadEventType,
    /// Data larger than `--max-body`.
    TooLarge,
    /// The loop has stopped or is shutting down.
    Stopped,
    /// The queue to the loop holds `--publish-queue-bytes` already: try again once the loop has
    /// caught up ("would block"; `SSELOOP_EAGAIN` in the C API).
    QueueFull,
    /// With a backplane: Redis did not accept the event (unreachable, or no answer within
    /// `--backplane-timeout-ms`). It may still have been appended.
    Unavailable,
    /// With a backplane: called on the thread that runs the loop, which would wait for itself.
    OnLoopThread,
    /// An idempotency key that is not 1..=128 visible ASCII characters.
    BadIdempotencyKey,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishError::BadTopic => "missing or invalid topic",
            PublishError::BadEventType => "invalid event type",
            PublishError::TooLarge => "data larger than max body",
            PublishError::Stopped => "the loop has stopped",
            PublishError::QueueFull => "publish queue full, try again later",
            PublishError::Unavailable => "backplane unavailable, try again later",
            PublishError::OnLoopThread => {
                "with a backplane, publish from another thread than the loop's"
            }
            PublishError::BadIdempotencyKey => {
                "idempotency key must be 1..=128 visible ASCII characters"
            }
        })
    }
}

impl std::error::Error for PublishError {}

/// A cloneable, `Send + Sync` handle to publish into the loop and to stop it from any thread.
#[derive(Clone)]
pub struct PublishHandle {
    seq: Arc<Sequencer>,
    waker: Arc<Waker>,
}

impl PublishHandle {
    pub(crate) fn new(seq: Arc<Sequencer>, waker: Arc<Waker>) -> PublishHandle {
        PublishHandle { seq, waker }
    }

    /// Queues one event for `topics` and wakes the loop; returns the id it will carry.
    pub fn publish(
        &self,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
    ) -> Result<String, PublishError> {
        self.publish_idempotent(topics, event_type, data, None)
    }

    /// [`PublishHandle::publish`] with an idempotency key: a repeat with the same key within the
    /// window (`--idempotency-window-secs`) returns the first publish's id and publishes nothing.
    pub fn publish_idempotent(
        &self,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
        idempotency_key: Option<&str>,
    ) -> Result<String, PublishError> {
        if idempotency_key.is_some_and(|k| !crate::idempotency::valid_key(k)) {
            return Err(PublishError::BadIdempotencyKey);
        }
        let mut distinct: Vec<String> = Vec::with_capacity(topics.len());
        for t in topics {
            // The same cap as every other publish path (a frame lists at most 255 topics).
            if topic_is_new(&distinct, t, MAX_TOPICS_PER_REQUEST)
                .map_err(|_| PublishError::BadTopic)?
            {
                distinct.push((*t).to_string());
            }
        }
        if distinct.is_empty() {
            return Err(PublishError::BadTopic);
        }
        if event_type.is_some_and(|t| !valid_event_type(t)) {
            return Err(PublishError::BadEventType);
        }
        if data.len() > self.seq.max_body {
            return Err(PublishError::TooLarge);
        }
        let names: Vec<&str> = distinct.iter().map(String::as_str).collect();
        let backplane_ms = self.seq.backplane_timeout_ms.load(Ordering::Acquire);
        if backplane_ms > 0 && self.seq.on_loop_thread() {
            return Err(PublishError::OnLoopThread);
        }
        let id_len = self.seq.run.len() + 21;
        if crate::buf::encoded_len_bound(id_len, &names, event_type, data)
            > self.seq.max_event_bytes.load(Ordering::Relaxed)
        {
            return Err(PublishError::TooLarge);
        }
        let cost = data.len() + event_type.map_or(0, str::len) + 64 + names.len() * 136;
        if self.seq.loop_gone.load(Ordering::Acquire) || self.seq.stop_requested() {
            return Err(PublishError::Stopped);
        }
        let reply = (backplane_ms > 0).then(|| Arc::new(ReplySlot::default()));
        let (seq, first) = {
            let mut state = self.seq.lock();
            if state.queued_bytes + cost > self.seq.queue_bytes && !state.queued.is_empty() {
                return Err(PublishError::QueueFull);
            }
            if reply.is_none() {
                if let Some(k) = idempotency_key {
                    if let Some((_, id)) = state.idempotency.get(k, std::time::Instant::now()) {
                        return Ok(id);
                    }
                }
            }
            state.queued_bytes += cost;
            let seq = if reply.is_some() {
                0
            } else {
                state.last += 1;
                state.last
            };
            if let (None, Some(k)) = (&reply, idempotency_key) {
                let id = self.seq.id_for(seq);
                state
                    .idempotency
                    .put(k, seq, &id, std::time::Instant::now());
            }
            state.queued.push(QueuedEvent {
                seq,
                reply: reply.clone(),
                idempotency_key: idempotency_key
                    .filter(|_| reply.is_some())
                    .map(str::to_string),
                topics: distinct,
                event_type: event_type.map(str::to_string),
                data: data.to_string(),
            });
            (seq, state.queued.len() == 1)
        };
        if first {
            // Later pushes before the loop drains ride on this wake-up.
            let _ = self.waker.wake();
        }
        let Some(reply) = reply else {
            return Ok(self.seq.id_for(seq));
        };
        // The loop answers within its append timeout; the margin covers a busy iteration.
        let wait = Duration::from_millis(backplane_ms) + Duration::from_millis(500);
        match reply.wait(wait) {
            Some(Ok(id)) => Ok(id),
            Some(Err(AppendError::Unavailable)) | None => Err(PublishError::Unavailable),
        }
    }

    /// Asks the loop to shut down gracefully (as SIGTERM does). Idempotent.
    pub fn stop(&self) {
        self.seq.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}
