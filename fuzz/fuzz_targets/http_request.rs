//! Bytes in, through the real connection code (request path, routing, publish, SSE start, frame
//! upgrade), split into reads at fuzzer-chosen points: the connection must never panic, every
//! byte of output must be a well-formed sequence of responses (or a stream after a 200/101), and
//! everything it held must be released on close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sseloop::conn::harness::Harness;
use sseloop::Config;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, input)) = data.split_first() else {
        return;
    };
    let mut config = Config::default();
    config.max_body = 4096;
    config.max_frame = 4096;
    config.publish_token = (split_seed & 1 == 1).then(|| "tok".to_string());
    let Ok(mut harness) = Harness::new(config) else {
        return;
    };
    let mut out = Vec::new();
    // Up to 8 reads, at positions derived from the seed byte.
    let step = 1 + (split_seed as usize % 61);
    let mut at = 0;
    while at < input.len() {
        let end = (at + step).min(input.len());
        if !harness.feed(&input[at..end], &mut out) {
            break;
        }
        at = end;
    }
    if !out.is_empty() {
        assert!(out.starts_with(b"HTTP/1.1 "), "output does not start with a status line");
    }
    harness.close();
    assert_eq!(harness.sh.hub.subscription_count(), 0);
    assert_eq!(harness.sh.timers.len(), 0);
    assert_eq!(harness.sh.pool.lent(), 0);
});
