//! Frame mode: encoding an EVENT frame and decoding a stream of frames (outer codec plus payload
//! parse) from one buffer, as the server and the load tool do.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sseloop::frame::{encode_event_frame, encode_publish_frame, parse, FrameDecoder, Payload};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_codec");
    for size in [64usize, 1024, 64 * 1024] {
        let data = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode_event", size), &data, |b, data| {
            let mut out = Vec::with_capacity(size + 64);
            b.iter(|| {
                out.clear();
                encode_event_frame(&mut out, "mwudyvxt1a2b-123456", &["news"], "update", data)
                    .unwrap();
                out.len()
            })
        });
        // 64 PUBLISH frames back to back, decoded and parsed in place.
        let mut stream = Vec::new();
        for i in 0..64u32 {
            encode_publish_frame(&mut stream, &i.to_be_bytes(), &["news"], "update", &data)
                .unwrap();
        }
        group.throughput(Throughput::Elements(64));
        group.bench_with_input(
            BenchmarkId::new("decode_parse_64_publish", size),
            &stream,
            |b, stream| {
                let decoder = FrameDecoder::new(1 << 20);
                b.iter(|| {
                    let mut start = 0;
                    let mut total = 0;
                    while let Ok(Some(frame)) = decoder.decode(&stream[start..]) {
                        if let Ok(Payload::Publish { data, .. }) =
                            parse(&stream[start..][frame.payload_range()])
                        {
                            total += data.len();
                        }
                        start += frame.frame_len();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
