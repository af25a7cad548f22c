//! The one way in for every event: publishing (local ids), queueing (other threads, the
//! backplane), the backlog, and `record`, which appends an event to its topics' logs and the
//! matching patterns' logs and retains it as history.

use std::collections::VecDeque;
use std::rc::Rc;

use super::{Channel, ChannelId, Hub, HubError, Published, Skip};
use crate::buf::{encoded_len_bound, Event};
use crate::handle::QueuedEvent;

impl Hub {
    /// Queues an event read from the backplane, to be recorded in turn. Seqs not above the last
    /// one queued are dropped (a duplicate read cannot reach a subscriber twice).
    pub fn record_remote(
        &mut self,
        seq: u64,
        topics: Vec<Box<str>>,
        event_type: Option<Box<str>>,
        data: Box<str>,
    ) {
        let last = self.backlog.back().map_or(self.last_seq, |e| e.seq);
        if seq <= last {
            log::error!("backplane event {seq} is not after {last}: dropped");
            return;
        }
        let id = self.id_for(seq).into_boxed_str();
        self.backlog
            .push_back(Event::new(seq, id, topics.into(), event_type, data));
    }

    /// Publishes one event to `topics` (validated, at least one, no duplicates): assigns the next
    /// id and records it, or queues it behind a backlog. Never fails once it returns an id.
    pub fn publish(
        &mut self,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
    ) -> Result<Published, HubError> {
        self.check_size(topics, event_type, data)?;
        // Refuse before an id is given, rather than acknowledge an event with nowhere to go.
        for topic in topics {
            self.channel_or_insert(topic)?;
        }
        let (seq, queued) = {
            let mut state = self.seq.lock();
            state.last += 1;
            state.queued_bytes = 0;
            (state.last, std::mem::take(&mut state.queued))
        };
        self.take_queued(queued);
        let id = self.id_for(seq);
        let event = Event::new(
            seq,
            id.clone().into_boxed_str(),
            topics.iter().map(|&t| Box::<str>::from(t)).collect(),
            event_type.map(Box::from),
            data.into(),
        );
        if self.backlog.is_empty() {
            // Nothing ahead of it: the common case records at once.
            if let Err(e) = self.record(event) {
                log::warn!("event {id} not recorded: {e:?}");
            }
        } else {
            self.backlog.push_back(event);
        }
        Ok(Published { seq, id })
    }

    /// Refuses an event whose encoding could exceed the per-connection queue cap.
    pub fn check_size(
        &self,
        topics: &[&str],
        event_type: Option<&str>,
        data: &str,
    ) -> Result<(), HubError> {
        // Room for an id of this run or of a backplane epoch (same shape) and a 20-digit seq.
        let id_len = self.run.len() + 21;
        if encoded_len_bound(id_len, topics, event_type, data) > self.limits.max_event_bytes {
            return Err(HubError::TooLarge);
        }
        Ok(())
    }

    /// Moves the events other threads queued (ids already assigned) into the backlog.
    pub fn drain_queued(&mut self) {
        let queued = {
            let mut state = self.seq.lock();
            state.queued_bytes = 0;
            std::mem::take(&mut state.queued)
        };
        self.take_queued(queued);
    }

    fn take_queued(&mut self, queued: Vec<QueuedEvent>) {
        for q in queued {
            let id = self.id_for(q.seq).into_boxed_str();
            let topics = q.topics.into_iter().map(String::into_boxed_str).collect();
            let event = Event::new(
                q.seq,
                id,
                topics,
                q.event_type.map(String::into_boxed_str),
                q.data.into_boxed_str(),
            );
            self.backlog.push_back(event);
        }
    }

    /// Records backlog events, oldest first, until about `budget` bytes were recorded: a large
    /// backlog is fanned out in slices, one per loop iteration, so each slice passes the
    /// slow-consumer check before the next one is added.
    pub fn record_backlog(&mut self, budget: usize) {
        let mut done = 0;
        while done < budget {
            let Some(event) = self.backlog.pop_front() else {
                break;
            };
            done += event.footprint();
            let seq = event.seq;
            if let Err(e) = self.record(event) {
                log::warn!("event {} not recorded: {e:?}", self.id_for(seq));
            }
        }
        if self.backlog.is_empty() && self.backlog.capacity() > 64 {
            self.backlog = VecDeque::new();
        }
    }

    /// Events waiting in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Appends `event` to its topics' logs and to the matching pattern logs, and retains it as
    /// history. Channels that cannot be created (`--max-topics`) are skipped with an error.
    pub(super) fn record(&mut self, event: Event) -> Result<(), HubError> {
        debug_assert!(event.seq > self.last_seq);
        self.last_seq = event.seq;
        self.recorded += 1;
        let event = Rc::new(event);
        let mut result = Ok(());
        // Some channel it enters has a `topic_line=1` reader: its topic-line form is built now,
        // once for all of them, and counted with the rest of the event.
        let mut topic_form = false;
        for name in event.topics.iter() {
            let id = match self.channel_or_insert(name) {
                Ok(id) => id,
                Err(e) => {
                    result = Err(e);
                    continue;
                }
            };
            let ch = &mut self.channels[id.0];
            if !ch.touched {
                ch.round_start = ch.end();
            }
            ch.last_event_secs = self.clock_secs;
            ch.append(&event);
            topic_form |= ch.has_topic_readers();
            if !self.skips.is_empty() {
                Self::skip_for(&self.skips, ch, id, event.seq);
            }
            Self::touch(&mut self.touched, ch, id);
            let evicted = if self.limits.history > 0 {
                event.holders.set(event.holders.get() + 1);
                self.history_events += 1;
                if ch.replayable() > self.limits.history {
                    ch.evict_oldest()
                } else {
                    None
                }
            } else {
                ch.evict_oldest();
                None
            };
            let patterns = std::mem::take(&mut ch.patterns);
            if let Some(old) = evicted {
                self.history_events -= 1;
                self.release(&old);
            }
            for &p in &patterns {
                let Some(pc) = self.channels.get_mut(p) else {
                    continue;
                };
                if pc.last_seq() == event.seq {
                    continue; // matched through another of its topics already
                }
                if !pc.touched {
                    pc.round_start = pc.end();
                }
                pc.append(&event);
                topic_form |= pc.has_topic_readers();
                if !self.skips.is_empty() {
                    Self::skip_for(&self.skips, pc, ChannelId(p), event.seq);
                }
                // A pattern replays its topics' history, not its own: the entry stays only
                // for the readers that have not taken it.
                pc.pass_history();
                Self::touch(&mut self.touched, pc, ChannelId(p));
            }
            self.channels[id.0].patterns = patterns;
        }
        if !self.skips.is_empty() {
            self.skips.retain(|s| s.through > event.seq);
        }
        if topic_form {
            event.build_topic_form();
        }
        if event.holders.get() > 0 {
            self.history_bytes += event.footprint();
            self.retained.push_back(event);
            self.enforce_history_bytes();
        }
        // A topic nobody reads and that keeps nothing (history 0) is removed by `take_touched`
        // once the loop has seen it: it does not outlive its publish.
        result
    }

    /// Moves the cursors of readers resumed ahead past the entry just appended (seq `seq`).
    fn skip_for(skips: &[Skip], ch: &mut Channel, id: ChannelId, seq: u64) {
        let last = ch.end() - 1;
        for s in skips {
            if s.channel == id && s.through >= seq && ch.next_of(s.handle) == last {
                ch.set_next(s.handle, last + 1);
            }
        }
    }

    fn touch(touched: &mut Vec<ChannelId>, ch: &mut Channel, id: ChannelId) {
        if !ch.touched {
            ch.touched = true;
            touched.push(id);
        }
    }
}
