//! Request-head parsing: a browser-like EventSource request and a publish.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sseloop::http::{parse_head, HeadParse};

const SUBSCRIBE: &[u8] =
    b"GET /events?topic=news&topic=sport%2Fscores&lastEventId=mwudyvxt-42 HTTP/1.1\r\n\
Host: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n\
Accept: text/event-stream\r\nCache-Control: no-cache\r\nAccept-Language: en-US,en;q=0.9\r\n\
Origin: https://app.example.com\r\nConnection: keep-alive\r\nLast-Event-ID: mwudyvxt-42\r\n\r\n";

const PUBLISH: &[u8] =
    b"POST /publish?topic=news&event=headline HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
Authorization: Bearer 0123456789abcdef\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("http_parse");
    for (name, raw) in [("subscribe", SUBSCRIBE), ("publish", PUBLISH)] {
        group.throughput(Throughput::Bytes(raw.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| match parse_head(std::hint::black_box(raw)) {
                Ok(HeadParse::Complete(head, len)) => (head.path.len(), len),
                other => panic!("{other:?}"),
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
