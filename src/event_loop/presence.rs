//! The loop's side of presence (docs/API.md, "Presence"): `GET /api/v1/presence` counts and
//! names the streams of a topic on this node, and with a backplane adds every other live node's
//! part, read from Redis (`backplane/presence.rs`); and this node's own part in Redis, gathered
//! for the topics whose readers changed, at most once per period. Both walk a topic's readers a
//! bounded slice per iteration ([`WALK_SLICE`] slab keys), never all connections at once.

use std::time::{Duration, Instant};

use super::admin::WALK_SLICE;
use super::Server;
use crate::api::{self, ApiCall};
use crate::backplane::presence::{merge, Walk};
use crate::loop_state::ApiJob;

/// Channel slots noted per iteration while the whole part is rewritten.
const RESCAN_SLICE: usize = 4096;

impl Server {
    /// Presence's turn in an iteration, with a backplane: note every topic again after Redis
    /// may have lost this node's part, take the topics changed in the last period, gather
    /// their parts within the slice, and send them.
    pub(super) fn presence_turn(&mut self) {
        let sh = &mut self.sh;
        let Some(bp) = sh.backplane.as_mut() else {
            return;
        };
        let now = sh.now;
        bp.presence_reset_wanted();
        if let Some(from) = bp.presence.rescan {
            bp.presence.rescan = sh.hub.note_all_presence(from, RESCAN_SLICE);
        }
        let idle = bp.presence.rescan.is_none()
            && bp.presence.queue.is_empty()
            && bp.presence.walk.is_none();
        if idle && sh.hub.presence_changes() > 0 && bp.presence_take_due(now) {
            bp.presence.queue.extend(sh.hub.take_presence_changes());
        }
        let mut budget = WALK_SLICE;
        while budget > 0 {
            let mut walk = match bp.presence.walk.take() {
                Some(walk) => walk,
                None => match bp.presence.queue.pop() {
                    Some(topic) => Walk::new(topic),
                    None => break,
                },
            };
            budget -= 1;
            if let Some(channel) = sh.hub.channel_id(&walk.topic) {
                let keys: Vec<usize> = sh
                    .hub
                    .readers(channel)
                    .skip(walk.next)
                    .take(budget)
                    .collect();
                budget -= keys.len();
                walk.next += keys.len();
                for key in keys {
                    if let Some(sub) = self.conns.get(key).and_then(|c| c.api_subject()) {
                        walk.add(sub);
                    }
                }
            }
            let count = sh.hub.topic_readers(&walk.topic);
            if walk.next < count && !walk.cut {
                bp.presence.walk = Some(walk);
                break;
            }
            let (topic, part) = walk.finish(count);
            bp.presence_part(topic, &part);
        }
        bp.presence_flush(now);
    }

    /// `GET /api/v1/presence`: with a backplane, Redis is asked first (its answer comes while
    /// the loop walks); this node's readers of the topic are walked for their subjects (only
    /// when the caller may see them); then the other nodes' parts are added. `None` while the
    /// walk or the answer is not done (`job.waiting` for the latter).
    pub(super) fn advance_presence(
        &mut self,
        job: &mut ApiJob,
        budget: &mut usize,
    ) -> Option<(u16, String)> {
        let ApiCall::Presence {
            topic,
            limit,
            after,
        } = &job.call
        else {
            return Some(api::unavailable());
        };
        let now = self.sh.now;
        if job.asked.is_none() {
            if let Some(bp) = self.sh.backplane.as_mut() {
                match bp.presence_query(topic, now) {
                    Some(id) => job.asked = Some((id, now + bp.timeout())),
                    None => return Some(api::unavailable()),
                }
            }
        }
        let total = self.sh.hub.topic_readers(topic);
        if job.show_subjects && job.next_key < total {
            if let Some(channel) = self.sh.hub.channel_id(topic) {
                let keys: Vec<usize> = self
                    .sh
                    .hub
                    .readers(channel)
                    .skip(job.next_key)
                    .take(*budget)
                    .collect();
                *budget -= keys.len();
                job.next_key += keys.len();
                for key in keys {
                    if let Some(sub) = self.conns.get(key).and_then(|c| c.api_subject()) {
                        if !job.subjects.contains(sub) {
                            job.subjects.insert(sub.to_owned());
                        }
                    }
                }
            }
            if job.next_key < self.sh.hub.topic_readers(topic) {
                return None;
            }
        }
        let mut count = total as u64;
        let mut cut = false;
        if let (Some((id, deadline)), Some(bp)) = (job.asked, self.sh.backplane.as_mut()) {
            match bp.presence_answer(id) {
                None if now < deadline => {
                    job.waiting = true;
                    return None;
                }
                None | Some(Err(())) => {
                    bp.presence_forget(id);
                    return Some(api::unavailable());
                }
                Some(Ok(parts)) => {
                    let (theirs, was_cut) = merge(parts, &mut job.subjects);
                    count = count.saturating_add(theirs);
                    cut = was_cut;
                }
            }
        }
        job.waiting = false;
        let from = after.as_deref();
        let mut page: Vec<&str> = job
            .subjects
            .iter()
            .map(String::as_str)
            .filter(|s| from.is_none_or(|f| *s > f))
            .take(*limit + 1)
            .collect();
        let next = (page.len() > *limit).then(|| page[*limit - 1]);
        page.truncate(*limit);
        let subjects = job.show_subjects.then_some(&page[..]);
        Some((
            200,
            api::render_presence(topic, count, subjects, next, cut && job.show_subjects),
        ))
    }

    /// The host's synchronous call waits for Redis's answer on the writer link (at most the
    /// query's deadline).
    pub(super) fn await_redis(&mut self, job: &ApiJob) {
        let Some((_, deadline)) = job.asked else {
            return;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(bp) = self.sh.backplane.as_mut() {
            // The query is still in the link's buffer: the loop flushes at the end of an
            // iteration, and this call runs outside one.
            bp.flush_output(self.poll.registry(), Instant::now());
            let wait = left.min(Duration::from_millis(100));
            bp.await_writer(self.poll.registry(), wait, &mut self.sh.scratch);
        }
        self.sh.now = Instant::now();
    }
}
