//! Hub fan-out in process: one event encoded once and queued to 10,000 subscriber queues, with
//! the copy-into-chunk path (small events) and the by-reference path (large events), then the
//! queues drained as the write path gathers them.

use std::io::IoSlice;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sseloop::buf::{chunk_size_for_mss, BufPool, OutQueue, COPY_THRESHOLD, MAX_IOVECS};
use sseloop::hub::Hub;

const SUBSCRIBERS: usize = 10_000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    let chunk = chunk_size_for_mss(Some(1448));
    for size in [64usize, 512, COPY_THRESHOLD, COPY_THRESHOLD + 1, 8192] {
        let mut hub = Hub::new("bench", 16);
        let subs: Vec<_> = (0..SUBSCRIBERS).map(|k| hub.subscribe("t", k)).collect();
        let body = "x".repeat(size);
        let mut pool = BufPool::default();
        let mut queues: Vec<OutQueue> = (0..SUBSCRIBERS).map(|_| OutQueue::default()).collect();
        let mut outbox = Vec::new();
        group.bench_with_input(
            BenchmarkId::new("publish+queue+drain", size),
            &size,
            |b, _| {
                b.iter(|| {
                    hub.publish(&["t"], None, &body);
                    hub.take_outbox(&mut outbox);
                    for (event, topics) in outbox.drain(..) {
                        for key in hub.subscribers(topics[0]) {
                            queues[key].push_sse(&event, &mut pool, chunk);
                        }
                    }
                    let mut total = 0;
                    for q in queues.iter_mut() {
                        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                        let (_, bytes) = q.gather(&mut iov, usize::MAX);
                        total += bytes;
                        q.consume(bytes, &mut pool);
                    }
                    total
                })
            },
        );
        drop(subs);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
