//! Publishing and stopping from other threads: a queue behind a mutex plus a `mio::Waker`.
//!
//! Ids are assigned when the event is queued, under the same lock the loop takes to assign ids to
//! its own publishes, so the id returned to a foreign thread is final and the sequence stays
//! strictly increasing in the order events enter history. Wake-ups coalesce: the loop drains the
//! whole queue per wake.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mio::Waker;

use crate::http::request::{topic_is_new, valid_event_type};

/// An event queued by another thread, id already assigned.
pub(crate) struct QueuedEvent {
    pub seq: u64,
    pub topics: Vec<String>,
    pub event_type: Option<String>,
    pub data: String,
}

/// The sequence counter and the cross-thread queue, shared by the loop and every handle.
pub(crate) struct Sequencer {
    run: Box<str>,
    max_body: usize,
    state: Mutex<SeqState>,
    stop: AtomicBool,
    loop_gone: AtomicBool,
}

#[derive(Default)]
pub(crate) struct SeqState {
    pub last: u64,
    pub queued: Vec<QueuedEvent>,
}

impl Sequencer {
    pub fn new(run: &str, max_body: usize) -> Sequencer {
        Sequencer {
            run: run.into(),
            max_body,
            state: Mutex::new(SeqState::default()),
            stop: AtomicBool::new(false),
            loop_gone: AtomicBool::new(false),
        }
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
    /// No topic, or a topic outside `[A-Za-z0-9._~:/-]{1,128}`.
    BadTopic,
    /// Event type empty, over 128 bytes, or containing CR, LF or NUL.
    BadEventType,
    /// Data larger than `--max-body`.
    TooLarge,
    /// The loop has stopped.
    Stopped,
    /// The cross-thread queue holds `--publish-queue-bytes` already: try again once the loop has
    /// drained it ("would block").
    QueueFull,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishError::BadTopic => "missing or invalid topic",
            PublishError::BadEventType => "invalid event type",
            PublishError::TooLarge => "data larger than max body",
            PublishError::Stopped => "the loop has stopped",
            PublishError::QueueFull => {
                "publish queue full (would block): retry after the loop drains it"
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
        let mut distinct: Vec<String> = Vec::with_capacity(topics.len());
        for t in topics {
            // No cap here: the host is trusted with as many topics as it names.
            if topic_is_new(&distinct, t, usize::MAX).map_err(|_| PublishError::BadTopic)? {
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
        if self.seq.loop_gone.load(Ordering::Acquire) || self.seq.stop_requested() {
            return Err(PublishError::Stopped);
        }
        let (seq, first) = {
            let mut state = self.seq.lock();
            state.last += 1;
            let seq = state.last;
            state.queued.push(QueuedEvent {
                seq,
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
        Ok(self.seq.id_for(seq))
    }

    /// Asks the loop to shut down gracefully (as SIGTERM does). Idempotent.
    pub fn stop(&self) {
        self.seq.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}
