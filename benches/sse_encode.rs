//! SSE encoding: short, multi-line and 64 KiB bodies.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sseloop::sse::encode_event;

fn bench(c: &mut Criterion) {
    let bodies = [
        ("short-64B", "x".repeat(64)),
        ("multiline-10x20B", "0123456789abcdefghi\n".repeat(10)),
        ("64KiB", "y".repeat(64 * 1024)),
        ("64KiB-lines", format!("{}\n", "z".repeat(63)).repeat(1024)),
    ];
    let mut group = c.benchmark_group("sse_encode");
    for (name, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            let mut out = Vec::with_capacity(body.len() * 2);
            b.iter(|| {
                out.clear();
                encode_event(
                    &mut out,
                    "mwudyvxt-123456",
                    Some("update"),
                    std::hint::black_box(body),
                );
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
