//! Output memory: the shared encoded event, the per-connection output queue and the pool of
//! MSS-sized write chunks.
//!
//! An event is encoded once (lazily, per wire format) and every queue and the history ring hold an
//! `Rc` to it: the loop is single-threaded, so a plain reference count is enough. An event that
//! finds its subscriber's queue empty is queued by reference (no copy, no allocation: the common
//! case of one event per flush). Small outputs queued behind others (events up to
//! [`COPY_THRESHOLD`], headers, heartbeats) are copied into a pooled chunk sized to the connection's
//! MSS so that a burst leaves in a few `writev` entries; large events always go by reference.
//! A connection holds chunks only while it has bytes pending: a drained queue gives its chunks
//! back to the pool.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

/// Events whose encoding is at most this long are copied into the connection's write chunk;
/// longer ones are queued by reference. Copying 1 KiB costs less than an extra iovec plus the
/// reference-count traffic (see `benches/` and docs/BENCHMARKS.md).
pub const COPY_THRESHOLD: usize = 1024;
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

/// One published event, shared by the history ring and every queue it sits in.
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
    sse: OnceCell<Box<[u8]>>,
    frame: OnceCell<Box<[u8]>>,
}

/// Which encoding of an event a connection receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// `text/event-stream`.
    Sse,
    /// An EVENT frame of the binary protocol.
    Frame,
}

/// The shared handle every queue holds.
pub type SharedEvent = Rc<Event>;

impl Event {
    /// Builds an event; its encodings are computed on first use.
    pub fn new(
        seq: u64,
        id: Box<str>,
        topics: Box<[Box<str>]>,
        event_type: Option<Box<str>>,
        data: Box<str>,
    ) -> Event {
        Event {
            seq,
            id,
            topics,
            event_type,
            data,
            sse: OnceCell::new(),
            frame: OnceCell::new(),
        }
    }

    /// The encoding for `wire`, computed once.
    pub fn encoded(&self, wire: Wire) -> &[u8] {
        match wire {
            Wire::Sse => self.sse(),
            Wire::Frame => self.frame(),
        }
    }

    /// The EVENT frame (topics listed, so one encoding serves every subscriber), computed once.
    pub fn frame(&self) -> &[u8] {
        self.frame.get_or_init(|| {
            let mut out = Vec::new();
            let event_type = self.event_type.as_deref().unwrap_or("");
            if let Err(e) = crate::frame::encode_event_frame(
                &mut out,
                &self.id,
                &self.topics,
                event_type,
                self.data.as_bytes(),
            ) {
                // Unreachable within the server's limits (64 topics, 128-byte types, max body).
                log::error!("event {} cannot be framed: {e:?}", self.id);
            }
            out.into_boxed_slice()
        })
    }

    /// The `text/event-stream` encoding, computed once.
    pub fn sse(&self) -> &[u8] {
        self.sse.get_or_init(|| {
            let mut out = Vec::new();
            crate::sse::encode_event(&mut out, &self.id, self.event_type.as_deref(), &self.data);
            out.into_boxed_slice()
        })
    }
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
    /// An event's encoding, by reference.
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

/// A connection's pending output, in order.
#[derive(Default)]
pub struct OutQueue {
    segs: VecDeque<Segment>,
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

    /// Appends bytes, coalescing them into the tail chunk when it has room.
    pub fn push_bytes(&mut self, bytes: &[u8], pool: &mut BufPool, chunk_cap: usize) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some(Segment::Chunk(tail)) = self.segs.back_mut() {
            if tail.len() + bytes.len() <= tail.capacity().max(chunk_cap) {
                tail.extend_from_slice(bytes);
                return;
            }
        }
        if bytes.len() > chunk_cap {
            self.segs.push_back(Segment::Owned(bytes.to_vec()));
            return;
        }
        let mut chunk = pool.take(chunk_cap);
        chunk.extend_from_slice(bytes);
        self.segs.push_back(Segment::Chunk(chunk));
    }

    /// Appends an event's SSE encoding (see [`OutQueue::push_event`]).
    pub fn push_sse(&mut self, event: &SharedEvent, pool: &mut BufPool, chunk_cap: usize) {
        self.push_event(event, Wire::Sse, pool, chunk_cap);
    }

    /// Appends an event's encoding for `wire`: by reference when the queue is empty or the event
    /// is large, otherwise copied into the tail chunk to coalesce with what is queued.
    pub fn push_event(
        &mut self,
        event: &SharedEvent,
        wire: Wire,
        pool: &mut BufPool,
        chunk_cap: usize,
    ) {
        let bytes = event.encoded(wire);
        if bytes.len() <= COPY_THRESHOLD && !self.segs.is_empty() {
            self.push_bytes(bytes, pool, chunk_cap);
        } else {
            self.len += bytes.len();
            self.segs.push_back(Segment::Event(Rc::clone(event), wire));
        }
    }

    /// Fills `iov` with the pending bytes, at most `budget` of them; returns (iovecs, bytes).
    pub fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>], budget: usize) -> (usize, usize) {
        let mut count = 0;
        let mut total = 0;
        for (i, seg) in self.segs.iter().enumerate() {
            if count == iov.len() || total >= budget {
                break;
            }
            let mut bytes = seg.bytes();
            if i == 0 {
                bytes = &bytes[self.head_off..];
            }
            let take = bytes.len().min(budget - total);
            iov[count] = IoSlice::new(&bytes[..take]);
            count += 1;
            total += take;
        }
        (count, total)
    }

    /// Drops `written` bytes from the front, returning finished chunks to the pool.
    pub fn consume(&mut self, mut written: usize, pool: &mut BufPool) {
        self.len -= written.min(self.len);
        while written > 0 {
            let Some(front) = self.segs.front() else {
                break;
            };
            let left = front.bytes().len() - self.head_off;
            if written < left {
                self.head_off += written;
                return;
            }
            written -= left;
            self.head_off = 0;
            if let Some(Segment::Chunk(chunk)) = self.segs.pop_front() {
                pool.give(chunk);
            }
        }
        if self.segs.is_empty() && self.segs.capacity() > KEPT_SEGMENT_SLOTS {
            // After a burst, give back the long segment list; a short one is kept to avoid an
            // allocation per event on a steady stream.
            self.segs = VecDeque::new();
        }
    }

    /// Drops everything (forced close), returning chunks to the pool.
    pub fn clear(&mut self, pool: &mut BufPool) {
        for seg in self.segs.drain(..) {
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
            .filter(|s| matches!(s, Segment::Chunk(_)))
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
    fn small_outputs_coalesce_into_one_chunk_and_large_go_by_reference() {
        let mut pool = BufPool::default();
        let mut q = OutQueue::default();
        let first = event(0, "first");
        q.push_sse(&first, &mut pool, 1500);
        assert_eq!(Rc::strong_count(&first), 2, "empty queue: by reference");
        q.push_bytes(b"head", &mut pool, 1500);
        q.push_sse(&event(1, "small"), &mut pool, 1500);
        let big = event(2, &"x".repeat(COPY_THRESHOLD * 2));
        q.push_sse(&big, &mut pool, 1500);
        q.push_sse(&event(3, "after"), &mut pool, 1500);
        assert_eq!(
            q.chunk_count(),
            2,
            "head+small share one chunk, 'after' starts another"
        );
        assert_eq!(
            Rc::strong_count(&big),
            2,
            "large event is referenced, not copied"
        );
        let mut want = first.sse().to_vec();
        want.extend_from_slice(b"head");
        want.extend_from_slice(event(1, "small").sse());
        want.extend_from_slice(big.sse());
        want.extend_from_slice(event(3, "after").sse());
        assert_eq!(drain(&q), want);
        assert_eq!(q.len(), want.len());
    }

    #[test]
    fn partial_consume_keeps_order_and_returns_chunks() {
        let mut pool = BufPool::default();
        let mut q = OutQueue::default();
        for i in 0..50 {
            q.push_bytes(format!("line {i}\n").as_bytes(), &mut pool, 64);
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
        q.push_bytes(b"abc", &mut pool, 64);
        q.push_sse(&event(1, &"y".repeat(5000)), &mut pool, 64);
        q.clear(&mut pool);
        assert!(q.is_empty());
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn chunk_size_is_clamped() {
        assert_eq!(chunk_size_for_mss(Some(65483)), MAX_CHUNK);
        assert_eq!(chunk_size_for_mss(Some(1448)), 1448);
        assert_eq!(chunk_size_for_mss(Some(100)), MIN_CHUNK);
    }
}
