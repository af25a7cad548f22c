//! Hub fan-out in process: events published into a channel log read by 10,000 subscribers, each
//! subscriber's pending slice gathered for `writev` and consumed as if the socket took it all.
//! `1ev` is one event per round (a quiet topic), `8ev` eight (a trickle of publishers: the case
//! the write path is built for, one gather per subscriber for all eight).

use std::io::IoSlice;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sseloop::buf::{BufPool, Wire, MAX_IOVECS};
use sseloop::conn::output::Output;
use sseloop::hub::Hub;

const SUBSCRIBERS: usize = 10_000;

/// Every subscriber's pending slice gathered and consumed, as if each socket took it all.
fn flush_all(outs: &mut [Output], hub: &mut Hub, pool: &mut BufPool) -> usize {
    let mut total = 0;
    for out in outs.iter_mut() {
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let (_, bytes) = out.gather(hub, &mut iov, usize::MAX);
        total += bytes;
        out.consume(bytes, hub, pool);
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_10k");
    for per_round in [1usize, 8] {
        group.throughput(Throughput::Elements((SUBSCRIBERS * per_round) as u64));
        for size in [64usize, 512, 8192] {
            let mut hub = Hub::new("bench", 16);
            let mut outs: Vec<Output> = (0..SUBSCRIBERS)
                .map(|k| {
                    let mut out = Output::default();
                    out.wire = Some(Wire::Sse);
                    out.subs.push(hub.subscribe("t", k).expect("subscribe"));
                    out
                })
                .collect();
            let body = "x".repeat(size);
            let mut pool = BufPool::default();
            let mut touched = Vec::new();
            group.bench_with_input(
                BenchmarkId::new(format!("{per_round}ev"), size),
                &size,
                |b, _| {
                    b.iter(|| {
                        for _ in 0..per_round {
                            hub.publish(&["t"], None, &body).expect("publish");
                        }
                        hub.take_touched(&mut touched);
                        touched.clear();
                        flush_all(&mut outs, &mut hub, &mut pool)
                    })
                },
            );
            for out in outs.iter_mut() {
                for sub in out.subs.drain(..) {
                    hub.unsubscribe(sub);
                }
            }
        }
    }
    group.finish();
}

/// 10,000 subscribers of `news/*`, eight events per round spread over 100 topics: the pattern
/// channel is one more log, so this should cost what the exact-topic case does.
fn bench_pattern(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_10k_pattern");
    group.throughput(Throughput::Elements((SUBSCRIBERS * 8) as u64));
    let mut hub = Hub::new("bench", 16);
    let mut outs: Vec<Output> = (0..SUBSCRIBERS)
        .map(|k| {
            let mut out = Output::default();
            out.wire = Some(Wire::Sse);
            out.subs
                .push(hub.subscribe("news/*", k).expect("subscribe"));
            out
        })
        .collect();
    let topics: Vec<String> = (0..100).map(|i| format!("news/{i}")).collect();
    let body = "x".repeat(64);
    let mut pool = BufPool::default();
    let mut touched = Vec::new();
    let mut next = 0;
    group.bench_function("8ev/64", |b| {
        b.iter(|| {
            for _ in 0..8 {
                hub.publish(&[&topics[next % 100]], None, &body)
                    .expect("publish");
                next += 1;
            }
            hub.take_touched(&mut touched);
            touched.clear();
            flush_all(&mut outs, &mut hub, &mut pool)
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_pattern);
criterion_main!(benches);
