//! The channel registry: creating and forgetting channels (topics and patterns), subscriptions
//! and their cursors, and the per-iteration list of channels that got events.

use super::{Channel, ChannelId, Hub, HubError, Subscription};

impl Hub {
    pub(super) fn channel_or_insert(&mut self, name: &str) -> Result<ChannelId, HubError> {
        if let Some(&id) = self.by_name.get(name) {
            return Ok(id);
        }
        self.make_room()?;
        let prefix = name.strip_suffix('*');
        let mut ch = Channel::new(name, prefix);
        ch.evicted_through = self.removed_through;
        let id = ChannelId(self.channels.vacant_key());
        match prefix {
            None => {
                if !self.patterns.is_empty() {
                    for end in 0..=name.len() {
                        if let Some(p) = name.get(..end).and_then(|pre| self.patterns.get(pre)) {
                            ch.patterns.push(p.0);
                        }
                    }
                }
            }
            Some(prefix) => {
                // A pattern holds no history of its own (a resume on it replays its topics'):
                // it only registers on the topics it matches, for their future events.
                for (_, other) in self.channels.iter_mut() {
                    if other.prefix.is_none() && other.name.starts_with(prefix) {
                        other.patterns.push(id.0);
                    }
                }
                self.patterns.insert(prefix.into(), id);
            }
        }
        let key = self.channels.insert(ch);
        debug_assert_eq!(key, id.0);
        self.by_name.insert(name.into(), id);
        Ok(id)
    }

    /// Makes room for one more channel under `--max-topics` by evicting the oldest history.
    pub(super) fn make_room(&mut self) -> Result<(), HubError> {
        while self.channels.len() >= self.limits.max_topics {
            if !self.evict_oldest_retained() {
                return Err(HubError::TooManyTopics);
            }
        }
        Ok(())
    }

    /// Forgets a channel nobody reads and that holds nothing.
    pub(super) fn remove_if_vacant(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get(id.0) else {
            return;
        };
        // A removed channel may still be listed as touched; its slot then marks nobody, or the
        // readers of a channel that reused it, which costs one spare flush at most.
        if !ch.is_vacant() {
            return;
        }
        let ch = self.channels.remove(id.0);
        if ch.prefix.is_none() {
            self.removed_through = self.removed_through.max(ch.evicted_through);
            // Its patterns remember what it evicted: a resume on them is told, as a resume on
            // the topic would be.
            for &p in &ch.patterns {
                if let Some(pc) = self.channels.get_mut(p) {
                    pc.evicted_through = pc.evicted_through.max(ch.evicted_through);
                }
            }
        }
        self.by_name.remove(&ch.name);
        if let Some(prefix) = &ch.prefix {
            self.patterns.remove(prefix);
            for (_, other) in self.channels.iter_mut() {
                if other.prefix.is_none() && other.name.starts_with(&**prefix) {
                    other.patterns.retain(|&p| p != id.0);
                }
            }
        }
    }

    /// Subscribes connection `conn` to `name` (a topic, or a pattern ending in `*`); the cursor
    /// starts live, see [`Hub::start_stream`] to move it back for a resume.
    pub fn subscribe(&mut self, name: &str, conn: usize) -> Result<Subscription, HubError> {
        let channel = self.channel_or_insert(name)?;
        let handle = self.channels[channel.0].add_reader(conn);
        self.subscriptions += 1;
        self.note_presence(channel);
        Ok(Subscription {
            channel,
            handle,
            start_seq: self.last_seq,
            limit: u64::MAX,
        })
    }

    /// Makes `sub` a reader of the topic-line form (`topic_line=1`): the events its channel
    /// gets from now on have that form built as they are recorded.
    pub fn want_topic_form(&mut self, sub: &Subscription) {
        if let Some(ch) = self.channels.get_mut(sub.channel.0) {
            ch.want_topic_form(sub.handle);
        }
    }

    /// Ends a subscription; a channel left with no reader and nothing retained is forgotten.
    pub fn unsubscribe(&mut self, sub: Subscription) {
        let Some(ch) = self.channels.get_mut(sub.channel.0) else {
            debug_assert!(false, "unsubscribe from a missing channel");
            return;
        };
        if ch.remove_reader(sub.handle) {
            self.subscriptions -= 1;
        }
        if !self.skips.is_empty() {
            self.skips
                .retain(|s| !(s.channel == sub.channel && s.handle == sub.handle));
        }
        ch.trim();
        self.note_presence(sub.channel);
        self.remove_if_vacant(sub.channel);
    }

    /// Stops `sub` at the end of its log as it is now: events already recorded are still sent,
    /// later ones are not. True when nothing is left to send (the caller can unsubscribe).
    pub fn stop_at_end(&self, sub: &mut Subscription) -> bool {
        let Some(ch) = self.channels.get(sub.channel.0) else {
            return true;
        };
        sub.limit = ch.end();
        ch.next_of(sub.handle) >= sub.limit
    }

    /// True when `sub`'s channel carries events of `topic` (the topic itself, or a pattern
    /// matching it).
    pub fn covers(&self, sub: &Subscription, topic: &str) -> bool {
        self.channels
            .get(sub.channel.0)
            .is_some_and(|c| match &c.prefix {
                Some(prefix) => topic.starts_with(&**prefix),
                None => *c.name == *topic,
            })
    }

    /// The channel id of `name`, if it exists.
    pub fn channel_id(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    /// A channel.
    pub fn channel(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.get(id.0)
    }

    /// A subscription's cursor (absolute index of the next entry to send).
    pub fn cursor(&self, sub: &Subscription) -> u64 {
        self.channels
            .get(sub.channel.0)
            .map_or(0, |c| c.next_of(sub.handle))
    }

    /// Moves a subscription's cursor.
    pub fn set_cursor(&mut self, sub: &Subscription, next: u64) {
        if let Some(c) = self.channels.get_mut(sub.channel.0) {
            c.set_next(sub.handle, next);
        }
    }

    /// Readers of the channels that got events since the last [`Hub::take_touched`]: how many
    /// connections the coming fan-out will write to, at most (a reader of several counts for
    /// each).
    pub fn touched_readers(&self) -> usize {
        self.touched
            .iter()
            .filter_map(|id| self.channels.get(id.0))
            .map(Channel::reader_count)
            .sum()
    }

    /// Moves the channels touched since the last call into `into`, trimming each log of what
    /// every reader has passed. The loop marks those channels' readers for writing.
    pub fn take_touched(&mut self, into: &mut Vec<ChannelId>) {
        self.take_touched_in(into, false);
    }

    /// [`Hub::take_touched`] in the middle of a round of writes: the new entries extend the
    /// round's joined batch (`Channel::build_batch`), so readers the round has not reached yet
    /// still write everything they have not taken as one slice.
    pub fn take_touched_midround(&mut self, into: &mut Vec<ChannelId>) {
        self.take_touched_in(into, true);
    }

    fn take_touched_in(&mut self, into: &mut Vec<ChannelId>, midround: bool) {
        std::mem::swap(&mut self.touched, into);
        for &id in into.iter() {
            if let Some(ch) = self.channels.get_mut(id.0) {
                ch.touched = false;
                ch.trim();
                if ch.reader_count() > 1 {
                    ch.build_batch(midround);
                }
                if !ch.held && ch.reader_count() > 0 {
                    ch.held = true;
                    self.held.push(id);
                }
            }
        }
        for &id in into.iter() {
            self.remove_if_vacant(id);
        }
    }

    /// The end of a round of writes: the channels that got events release what every reader
    /// has passed (entries beyond history, the joined batch). Those with a reader still behind
    /// stay listed and are looked at after the next round, so a caught-up channel holds only
    /// its history whether or not more events come. Costs one walk over the readers of each
    /// listed channel, like the fan-out's marking.
    pub fn end_round(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut list = std::mem::take(&mut self.held);
        // A slot may be listed twice (a channel removed, another reusing its key): once only.
        list.retain(|id| {
            self.channels
                .get_mut(id.0)
                .is_some_and(|ch| std::mem::take(&mut ch.held))
        });
        for &id in &list {
            let Some(ch) = self.channels.get_mut(id.0) else {
                continue;
            };
            if ch.release_passed() && ch.reader_count() > 0 {
                ch.held = true;
                self.held.push(id);
            } else {
                self.remove_if_vacant(id);
            }
        }
        list.clear();
        if self.held.is_empty() {
            // Keep the larger of the two allocations for the next round.
            self.held = list;
        }
    }

    /// Slab keys of the connections reading `id`.
    pub fn readers(&self, id: ChannelId) -> impl Iterator<Item = usize> + '_ {
        self.channels
            .get(id.0)
            .into_iter()
            .flat_map(|c| c.reader_conns())
    }

    /// Events recorded since the last call (the `published` counter).
    pub fn take_recorded(&mut self) -> u64 {
        std::mem::take(&mut self.recorded)
    }
}
