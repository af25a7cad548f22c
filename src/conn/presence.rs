//! Join and leave notices (docs/API.md, "Presence"): a stream opened with `presence=1` is told
//! when a stream with a JWT subject opens on, or leaves, one of its topics. Nothing is done
//! while no stream watches: one emptiness check per stream open and close.

use super::{Connection, Stage};
use crate::frame;
use crate::json::push_json_str;
use crate::loop_state::{LoopState, PresenceNote};

impl Connection {
    /// A stream just opened: tell the watchers of its topics, then watch them if it asked.
    pub(super) fn presence_opened(&mut self, key: usize, watch: bool, sh: &mut LoopState) {
        if !sh.presence_watch.is_empty() {
            self.presence_notes(true, sh);
        }
        if watch {
            // Kept, so that the release removes exactly these entries whatever happened to the
            // subscriptions meanwhile (a drain stops them before the release).
            let topics = self.topic_names(sh);
            for topic in &topics {
                sh.presence_watch
                    .entry(topic.as_str().into())
                    .or_default()
                    .push(key);
            }
            self.watching_presence = topics;
        }
    }

    /// The stream is being released: stop watching, and tell the watchers it left.
    pub(super) fn presence_closed(&mut self, key: usize, sh: &mut LoopState) {
        for topic in std::mem::take(&mut self.watching_presence) {
            if let Some(list) = sh.presence_watch.get_mut(topic.as_str()) {
                list.retain(|&k| k != key);
                if list.is_empty() {
                    sh.presence_watch.remove(topic.as_str());
                }
            }
        }
        if !sh.presence_watch.is_empty() {
            self.presence_notes(false, sh);
        }
    }

    /// The stream starts its last words (an API disconnect, a token expiry, a shutdown): it
    /// leaves now, while its subscriptions still name its topics (a drained subscription ends
    /// before the release).
    pub(super) fn presence_leaving(&mut self, sh: &mut LoopState) {
        if !sh.presence_watch.is_empty() {
            self.presence_notes(false, sh);
        }
        self.presence_left = true;
    }

    fn presence_notes(&self, join: bool, sh: &mut LoopState) {
        if !join && self.presence_left {
            return; // told when its drain began
        }
        let Some(sub) = self.subject() else {
            return;
        };
        if !matches!(self.stage, Stage::Sse | Stage::Frames(_)) {
            return;
        }
        for topic in self.topic_names(sh) {
            if sh.presence_watch.contains_key(topic.as_str()) {
                sh.presence_notes.push(PresenceNote {
                    topic: topic.into(),
                    sub: sub.to_owned(),
                    conn: self.id,
                    join,
                });
            }
        }
    }

    /// Names of the exact topics this stream is subscribed to (patterns have no presence).
    fn topic_names(&self, sh: &LoopState) -> Vec<String> {
        self.out
            .subs
            .iter()
            .filter(|s| s.is_active())
            .filter_map(|s| sh.hub.channel(s.channel()))
            .filter(|c| c.prefix.is_none())
            .map(|c| c.name.to_string())
            .collect()
    }

    /// Queues a join or leave notice on this watching stream, after the events recorded so far:
    /// an SSE `sseloop-join`/`sseloop-leave` event, or an EVENT frame of that type with no id.
    pub fn presence_notice(&mut self, key: usize, note: &PresenceNote, sh: &mut LoopState) {
        if self.life != super::state::Life::Active {
            return;
        }
        let kind = if note.join {
            "sseloop-join"
        } else {
            "sseloop-leave"
        };
        let mut data = String::from("{\"topic\":");
        push_json_str(&mut data, &note.topic);
        data.push_str(",\"sub\":");
        push_json_str(&mut data, &note.sub);
        data.push_str(&format!(",\"conn\":{}}}", note.conn));
        let mut bytes = Vec::with_capacity(data.len() + 48);
        match self.stage {
            Stage::Sse => {
                bytes.extend_from_slice(b"event: ");
                bytes.extend_from_slice(kind.as_bytes());
                bytes.extend_from_slice(b"\ndata: ");
                bytes.extend_from_slice(data.as_bytes());
                bytes.extend_from_slice(b"\n\n");
            }
            Stage::Frames(_) => {
                let topics = [&*note.topic];
                if frame::encode_event_frame(&mut bytes, "", &topics, kind, data.as_bytes())
                    .is_err()
                {
                    return;
                }
            }
            Stage::Http(_) => return,
        }
        let barrier = sh.hub.last_seq();
        self.push_private(key, &bytes, barrier, sh);
    }
}
