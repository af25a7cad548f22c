//! Output memory: the shared encoded event, a connection's private output queue and the pool of
//! MSS-sized write chunks.
//!
//! An event is encoded once per wire form when it is built, and the channel logs of the hub hold
//! it by `Rc` (the loop is single-threaded, so a plain reference count is enough). The SSE form
//! with a topic line (`topic_line=1` streams) is a third encoding, built only for an event that
//! such a stream will write (`Event::build_topic_form`, called by the hub, which counts its
//! bytes) and then shared by all of them. Subscribers
//! never copy events: the write path points `writev` straight at the shared encodings (see
//! `conn::output`). What a connection says privately (response heads, `retry:`, reset notices,
//! heartbeats, frame replies) is small and goes through its [`OutQueue`], coalesced into a pooled
//! chunk sized to the connection's MSS. A connection holds chunks only while such bytes are
//! pending: a drained queue gives its chunks back to the pool.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

/// Smallest write chunk, whatever the MSS says (IPv6 minimum MTU territory).
pub const MIN_CHUNK: usize = 1024;
/// Largest write chunk: loopback reports a 64 KiB MSS, and 10,000 pending connections times that
/// would be 640 MiB of chunks for a burst.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Free chunks kept for reuse (at most 4 MiB); more are released to the allocator, so a large
/// fan-out does not leave its high-water mark in the pool.
pub const POOL_MAX_FREE: usize = 256;
/// Segment-list capacity a drained queue keeps (a few pointers, no byte buffer).
const KEPT_SEGMENT_SLOTS: usize = 4;
/// Most iovecs handed to one `writev` (well under `IOV_MAX` = 1024, and on the stack).
pub const MAX_IOVECS: usize = 64;
/// Bytes of an EVENT frame besides its id, topics, type and data: magic, length, kind, and the
/// length prefixes of id, topic count, type and data.
const FRAME_OVERHEAD: usize = 6 + 1 + 1 + 1 + 1 + 4;

/// One published event, encoded once per wire form when it is built and shared (by `Rc`) by
/// every channel log that holds it. Connections never copy it: they point into the logs.
#[derive(Debug)]
pub struct Event {
    /// Position in the server-wide sequence (strictly increasing within a run).
    pub seq: u64,
    /// The opaque id clients see (`<run>-<seq>`).
    pub id: Box<str>,
    /// Topics it was published to (at least one).
    pub topics: Box<[Box<str>]>,
    /// Optional `event:` type.
    pub event_type: Option<Box<str>>,
    /// The body, as published (UTF-8).
    pub data: Box<str>,
    sse: Box<[u8]>,
    frame: Box<[u8]>,
    /// The SSE form with the topic line, once some `topic_line=1` stream needs it. A thin
    /// pointer: the event stays 120 bytes, so its `Rc` allocation stays in the malloc size
    /// class it had without this form (glibc: 144-byte chunks either way).
    #[allow(clippy::redundant_allocation)]
    sse_topic: OnceCell<Box<Box<[u8]>>>,
    /// Bytes the topic line adds to the SSE form (so logs count that form without building it).
    topic_line: u32,
    /// Exact-topic histories that still hold it (history accounting; see `hub`).
    pub(crate) holders: std::cell::Cell<u32>,
}

/// Which encoding of an event a connection receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// `text/event-stream`.
    Sse = 0,
    /// An EVENT frame of the binary protocol.
    Frame = 1,
    /// `text/event-stream` whose first `data:` line names the event's topics (`topic_line=1`).
    SseTopic = 2,
}

/// The shared handle every log holds.
pub type SharedEvent = Rc<Event>;

/// Appends one event's `wire` encoding to `out`: the one place both wire forms are made.
pub fn encode_wire<T: AsRef<str>>(
    out: &mut Vec<u8>,
    wire: Wire,
    id: &str,
    topics: &[T],
    event_type: Option<&str>,
    data: &str,
) {
    match wire {
        Wire::Sse => crate::sse::encode_event(out, id, event_type, data),
        Wire::SseTopic => crate::sse::encode_event_with_topics(out, id, event_type, topics, data),
        Wire::Frame => {
            let ty = event_type.unwrap_or("");
            if let Err(e) = crate::frame::encode_event_frame(out, id, topics, ty, data.as_bytes()) {
                // Unreachable: every publish path checks topics, type and size first.
                log::error!("event {id} cannot be framed: {e:?}");
            }
        }
    }
}

impl Event {
    /// Builds an event and its SSE and frame encodings (the topic-line form waits until a
    /// stream needs it: [`Event::build_topic_form`]).
    pub fn new(
        seq: u64,
        id: Box<str>,
        topics: Box<[Box<str>]>,
        event_type: Option<Box<str>>,
        data: Box<str>,
    ) -> Event {
        let ty = event_type.as_deref();
        let mut sse = Vec::with_capacity(sse_len_bound(&id, ty, &data));
        encode_wire(&mut sse, Wire::Sse, &id, &topics, ty, &data);
        let mut frame = Vec::new();
        encode_wire(&mut frame, Wire::Frame, &id, &topics, ty, &data);
        let topic_line = u32::try_from(crate::sse::topic_line_len(&topics)).unwrap_or(u32::MAX);
        Event {
            seq,
            id,
            topics,
            event_type,
            data,
            sse: sse.into_boxed_slice(),
            frame: frame.into_boxed_slice(),
            sse_topic: OnceCell::new(),
            topic_line,
            holders: std::cell::Cell::new(0),
        }
    }

    /// Builds the topic-line form if it is not built yet; returns the bytes it added to the
    /// event's footprint (0 when it was already there). Only the hub calls it, so that history
    /// counts those bytes (`Hub::build_topic_forms`).
    pub(crate) fn build_topic_form(&self) -> usize {
        if self.sse_topic.get().is_some() {
            return 0;
        }
        self.sse_topic
            .get_or_init(|| self.encode_topic_form())
            .len()
    }

    #[allow(clippy::redundant_allocation)]
    fn encode_topic_form(&self) -> Box<Box<[u8]>> {
        let mut out = Vec::with_capacity(self.topic_form_len());
        let ty = self.event_type.as_deref();
        encode_wire(
            &mut out,
            Wire::SseTopic,
            &self.id,
            &self.topics,
            ty,
            &self.data,
        );
        Box::new(out.into_boxed_slice())
    }

    /// Length of the topic-line form, built or not.
    pub fn topic_form_len(&self) -> usize {
        self.sse.len() + self.topic_line as usize
    }

    /// The encoding for `wire`.
    pub fn encoded(&self, wire: Wire) -> &[u8] {
        match wire {
            Wire::Sse => &self.sse,
            Wire::Frame => &self.frame,
            Wire::SseTopic => self.sse_topic.get_or_init(|| {
                // The hub builds it before any stream can write it; built here, its bytes would
                // escape the history count (which tolerates that), never the stream's bytes.
                debug_assert!(false, "topic form of {} not built by the hub", self.id);
                self.encode_topic_form()
            }),
        }
    }

    /// The EVENT frame (topics listed, so one encoding serves every subscriber).
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// The `text/event-stream` encoding.
    pub fn sse(&self) -> &[u8] {
        &self.sse
    }

    /// Bytes this event holds in memory: its fields and every encoding built.
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<Event>()
            + self.id.len()
            + self.topics.iter().map(|t| t.len() + 16).sum::<usize>()
            + self.event_type.as_deref().map_or(0, str::len)
            + self.data.len()
            + self.sse.len()
            + self.frame.len()
            + self.sse_topic.get().map_or(0, |b| b.len())
    }
}

/// An upper bound of the largest encoding of an event (the topic-line form included), computed
/// without encoding it: publish paths refuse an event whose encoding could exceed what one
/// connection may have queued.
pub fn encoded_len_bound(
    id_len: usize,
    topics: &[&str],
    event_type: Option<&str>,
    data: &str,
) -> usize {
    let sse = sse_len_bound("", event_type, data) + id_len + crate::sse::topic_line_len(topics);
    let frame = FRAME_OVERHEAD
        + id_len
        + topics.iter().map(|t| 1 + t.len()).sum::<usize>()
        + event_type.map_or(0, str::len)
        + data.len();
    sse.max(frame)
}

fn sse_len_bound(id: &str, event_type: Option<&str>, data: &str) -> usize {
    crate::sse::encoded_len_hint(id, event_type, data)
}

/// Free write chunks, shared by all connections of the loop.
#[derive(Default)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    /// Chunks currently lent to connections (for the resource-accounting tests).
    lent: usize,
}

impl BufPool {
    /// Takes an empty chunk with room for at least `cap` bytes.
    pub fn take(&mut self, cap: usize) -> Vec<u8> {
        self.lent += 1;
        match self.free.pop() {
            Some(mut chunk) => {
                chunk.reserve_exact(cap.saturating_sub(chunk.capacity()));
                chunk
            }
            None => Vec::with_capacity(cap),
        }
    }

    /// Returns a chunk taken with [`BufPool::take`].
    pub fn give(&mut self, mut chunk: Vec<u8>) {
        self.lent = self.lent.saturating_sub(1);
        if self.free.len() < POOL_MAX_FREE && chunk.capacity() <= MAX_CHUNK {
            chunk.clear();
            self.free.push(chunk);
        }
    }

    /// Chunks lent out and not yet returned.
    pub fn lent(&self) -> usize {
        self.lent
    }

    /// Chunks kept for reuse.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}

enum Segment {
    /// A pooled chunk of coalesced small outputs.
    Chunk(Vec<u8>),
    /// An output too large for a chunk (a big response body): its own allocation, not pooled.
    Owned(Vec<u8>),
    /// An event's encoding, by reference (a replay queued for a frame SUBSCRIBE).
    Event(SharedEvent, Wire),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Chunk(chunk) | Segment::Owned(chunk) => chunk,
            Segment::Event(event, wire) => event.encoded(*wire),
        }
    }
}

/// A connection's private output (response heads, notices, heartbeats, frame replies), in order.
///
/// Each segment carries a *barrier*: the sequence number of the last shared event the connection
/// must send before it. The write path merges these private bytes with the events it reads from
/// the shared logs: a segment goes out once every event with seq <= its barrier has gone out, and
/// before any later one.
#[derive(Default)]
pub struct OutQueue {
    segs: VecDeque<(u64, Segment)>,
    /// Bytes of the front segment already written.
    head_off: usize,
    /// Unwritten bytes in all segments.
    len: usize,
}

impl OutQueue {
    /// Unwritten bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes to go out after the events up to `barrier`, coalescing them into the tail
    /// chunk when it has room and the same barrier.
    pub fn push_bytes(&mut self, bytes: &[u8], barrier: u64, pool: &mut BufPool, chunk_cap: usize) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some((b, Segment::Chunk(tail))) = self.segs.back_mut() {
            if *b == barrier && tail.len() + bytes.len() <= tail.capacity().max(chunk_cap) {
                tail.extend_from_slice(bytes);
                return;
            }
        }
        if bytes.len() > chunk_cap {
            self.segs
                .push_back((barrier, Segment::Owned(bytes.to_vec())));
            return;
        }
        let mut chunk = pool.take(chunk_cap);
        chunk.extend_from_slice(bytes);
        self.segs.push_back((barrier, Segment::Chunk(chunk)));
    }

    /// Appends an event's encoding by reference, after the events up to `barrier`.
    pub fn push_event(&mut self, event: &SharedEvent, wire: Wire, barrier: u64) {
        self.len += event.encoded(wire).len();
        self.segs
            .push_back((barrier, Segment::Event(Rc::clone(event), wire)));
    }

    /// The barrier and unwritten bytes of segment `i` (0 is the front).
    pub fn segment(&self, i: usize) -> Option<(u64, &[u8])> {
        let (barrier, seg) = self.segs.get(i)?;
        let bytes = seg.bytes();
        Some((
            *barrier,
            if i == 0 {
                &bytes[self.head_off..]
            } else {
                bytes
            },
        ))
    }

    /// Fills `iov` with the pending bytes, at most `budget` of them; returns (iovecs, bytes).
    /// (Private output only: for connections without shared events, and for tests.)
    pub fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>], budget: usize) -> (usize, usize) {
        let mut count = 0;
        let mut total = 0;
        let mut i = 0;
        while let Some((_, bytes)) = self.segment(i) {
            if count == iov.len() || total >= budget {
                break;
            }
            let take = bytes.len().min(budget - total);
            iov[count] = IoSlice::new(&bytes[..take]);
            count += 1;
            total += take;
            i += 1;
        }
        (count, total)
    }

    /// Drops `written` bytes from the front, returning finished chunks to the pool.
    pub fn consume(&mut self, mut written: usize, pool: &mut BufPool) {
        self.len -= written.min(self.len);
        while written > 0 {
            let Some((_, front)) = self.segs.front() else {
                break;
            };
            let left = front.bytes().len() - self.head_off;
            if written < left {
                self.head_off += written;
                return;
            }
            written -= left;
            self.head_off = 0;
            if let Some((_, Segment::Chunk(chunk))) = self.segs.pop_front() {
                pool.give(chunk);
            }
        }
        if self.segs.is_empty() && self.segs.capacity() > KEPT_SEGMENT_SLOTS {
            // After a burst, give back the long segment list; a short one is kept to avoid an
            // allocation per response on a keep-alive connection.
            self.segs = VecDeque::new();
        }
    }

    /// Drops everything (forced close), returning chunks to the pool.
    pub fn clear(&mut self, pool: &mut BufPool) {
        for (_, seg) in self.segs.drain(..) {
            if let Segment::Chunk(chunk) = seg {
                pool.give(chunk);
            }
        }
        self.segs = VecDeque::new();
        self.head_off = 0;
        self.len = 0;
    }

    /// Chunks this queue holds (for accounting).
    pub fn chunk_count(&self) -> usize {
        self.segs
            .iter()
            .filter(|(_, s)| matches!(s, Segment::Chunk(_)))
            .count()
    }
}

/// The write-chunk size for a connection whose MSS is `mss`.
pub fn chunk_size_for_mss(mss: Option<u32>) -> usize {
    mss.map_or(MIN_CHUNK * 4, |m| m as usize)
        .clamp(MIN_CHUNK, MAX_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, data: &str) -> SharedEvent {
        Rc::new(Event::new(
            seq,
            format!("r-{seq}").into(),
            vec!["t".into()].into(),
            None,
            data.into(),
        ))
    }

    fn drain(q: &OutQueue) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let (n, _) = q.gather(&mut iov, usize::MAX);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn small_outputs_coalesce_per_barrier_and_events_go_by_reference() {
        let mut pool = BufPool::default();
        let mut q = OutQueue::default();
        q.push_bytes(b"head", 0, &mut pool, 1500);
        q.push_bytes(b"more", 0, &mut pool, 1500);
        let big = event(2, &"x".repeat(4000));
        q.push_event(&big, Wire::Sse, 0);
        q.push_bytes(b"after", 0, &mut pool, 1500);
        q.push_bytes(b"later", 5, &mut pool, 1500);
        assert_eq!(q.chunk_count(), 3, "a new barrier starts a new chunk");
        assert_eq!(Rc::strong_count(&big), 2, "event referenced, not copied");
        let mut want = b"headmore".to_vec();
        want.extend_from_slice(big.sse());
        want.extend_from_slice(b"afterlater");
        assert_eq!(drain(&q), want);
        assert_eq!(q.len(), want.len());
        assert_eq!(q.segment(3).map(|(b, _)| b), Some(5));
    }

    #[test]
    fn partial_consume_keeps_order_and_returns_chunks() {
        let mut pool = BufPool::default();
        let mut q = OutQueue::default();
        for i in 0..50 {
            q.push_bytes(format!("line {i}\n").as_bytes(), 0, &mut pool, 64);
        }
        let all = drain(&q);
        let mut got = Vec::new();
        while !q.is_empty() {
            let mut iov = [IoSlice::new(&[]); 2];
            let (n, bytes) = q.gather(&mut iov, 13);
            assert!(bytes <= 13 && n <= 2);
            let part: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
            got.extend_from_slice(&part[..bytes.min(7)]);
            q.consume(bytes.min(7), &mut pool);
        }
        assert_eq!(got, all);
        assert_eq!(pool.lent(), 0);
        assert!(pool.free_count() > 0);
    }

    #[test]
    fn clear_returns_everything() {
        let mut pool = BufPool::default();
        let mut q = OutQueue::default();
        q.push_bytes(b"abc", 0, &mut pool, 64);
        q.push_event(&event(1, &"y".repeat(5000)), Wire::Frame, 0);
        q.clear(&mut pool);
        assert!(q.is_empty());
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn encoded_len_bound_covers_every_encoding() {
        for data in ["", "a", "a\nb\r\nc\r", &"\n".repeat(100), &"x".repeat(3000)] {
            for et in [None, Some("kind")] {
                let e = Event::new(
                    7,
                    "run-7".into(),
                    vec!["t".into(), "u/v".into()].into(),
                    et.map(Into::into),
                    data.into(),
                );
                let bound = encoded_len_bound(5, &["t", "u/v"], et, data);
                let before = e.footprint();
                assert!(before >= e.sse().len() + e.frame().len());
                assert_eq!(e.build_topic_form(), e.topic_form_len());
                assert_eq!(e.build_topic_form(), 0, "built once");
                let topic = e.encoded(Wire::SseTopic);
                assert_eq!(topic.len(), e.topic_form_len());
                assert_eq!(e.footprint(), before + topic.len());
                assert!(
                    e.sse().len() <= bound && e.frame().len() <= bound && topic.len() <= bound,
                    "{data:?}"
                );
                let mut want = Vec::new();
                crate::sse::encode_event_with_topics(&mut want, "run-7", et, &["t", "u/v"], data);
                assert_eq!(topic, &want[..]);
            }
        }
    }

    #[test]
    fn chunk_size_is_clamped() {
        assert_eq!(chunk_size_for_mss(Some(65483)), MAX_CHUNK);
        assert_eq!(chunk_size_for_mss(Some(1448)), 1448);
        assert_eq!(chunk_size_for_mss(Some(100)), MIN_CHUNK);
    }
}
