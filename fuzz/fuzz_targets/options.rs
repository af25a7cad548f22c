//! A command line in, split at NUL bytes into arguments (any bytes, not only UTF-8): parsing and
//! validating it must never panic, and a configuration that validates must hold only values the
//! loop can use (every numeric option inside its range, timers that fit an `Instant`, queue caps
//! that hold the largest event).
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::{Duration, Instant};

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use sseloop::config::EVENT_OVERHEAD_MAX;
use sseloop::Config;

fuzz_target!(|data: &[u8]| {
    let mut args: Vec<OsString> = vec!["sseloop".into()];
    args.extend(
        data.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec())),
    );
    // `--listen` resolves host names: keep the fuzzer off the network.
    if args
        .iter()
        .any(|a| a.as_encoded_bytes().starts_with(b"--listen"))
    {
        return;
    }
    let Ok(config) = Config::try_parse_from(args) else {
        return;
    };
    let _ = format!("{config:?}");
    if config.validate().is_err() {
        return;
    }
    let now = Instant::now();
    for (range, value) in config.numeric_options() {
        assert!(
            (range.min..=range.max).contains(&value),
            "{} = {value}",
            range.flag
        );
    }
    for ms in [
        config.heartbeat_ms,
        config.retry_ms,
        config.grace_ms,
        config.header_timeout_ms,
        config.idle_timeout_ms,
        config.write_stall_ms,
    ] {
        assert!(now.checked_add(Duration::from_millis(ms)).is_some());
    }
    // The farewell retry is at most twice --retry-ms (or retry + 1 s): within 2^31 - 1.
    assert!(config.retry_ms.max(1000) * 2 <= i32::MAX as u64);
    assert!(config.max_queue_bytes >= config.max_body + EVENT_OVERHEAD_MAX);
    assert!(config.publish_queue_bytes >= config.max_body);
});
