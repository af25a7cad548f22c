//! Option ranges (issue 10, item 11) against the real binary: every numeric option has one range,
//! a value outside it stops the server at start with a message naming the option and the range,
//! combinations that cannot work are refused, and the largest accepted `--retry-ms` survives a
//! shutdown (the farewell `retry:` stays within 2^31 - 1).

mod util;

use sseloop::config::ranges;
use util::*;

fn refused(args: &[&str]) -> String {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (code, output) = run_binary(&all);
    assert!(
        code.is_some_and(|c| c != 0),
        "sseloop {args:?} started (exit {code:?}):\n{output}"
    );
    output
}

#[test]
fn retry_ms_of_u64_max_is_refused_at_start_instead_of_panicking_on_shutdown() {
    let output = refused(&["--retry-ms", "18446744073709551615"]);
    assert!(
        output.contains("--retry-ms must be between 0 and 86400000"),
        "{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
}

#[test]
fn every_numeric_option_refuses_values_past_its_range_with_the_range_in_the_message() {
    for range in ranges::ALL {
        let over = (range.max + 1).to_string();
        let output = refused(&[range.flag, &over]);
        let want = format!(
            "{} must be between {} and {}",
            range.flag, range.min, range.max
        );
        assert!(output.contains(&want), "{}: {output}", range.flag);
        if range.min > 0 {
            let under = (range.min - 1).to_string();
            let output = refused(&[range.flag, &under]);
            assert!(output.contains(&want), "{}: {output}", range.flag);
        }
    }
}

#[test]
fn a_queue_cap_below_the_largest_event_is_refused_naming_both_options() {
    // The old default pair (1M body, 1M queue) can no longer be configured.
    let output = refused(&["--max-queue-bytes", "1M"]);
    assert!(
        output.contains("--max-queue-bytes (1048576) must be at least --max-body (1048576)"),
        "{output}"
    );
    let output = refused(&["--max-body", "4M"]);
    assert!(output.contains("--max-queue-bytes (2097152)"), "{output}");
    let output = refused(&["--publish-queue-bytes", "64k", "--max-body", "128k"]);
    assert!(output.contains("--publish-queue-bytes (65536)"), "{output}");
}

#[test]
fn help_lists_the_new_options_with_their_ranges() {
    let (code, output) = run_binary(&["--help"]);
    assert_eq!(code, Some(0), "{output}");
    for flag in [
        "--history-bytes",
        "--max-topics",
        "--publish-queue-bytes",
        "--max-queue-bytes",
        "--max-frame",
    ] {
        assert!(
            output.contains(flag),
            "--help does not list {flag}:\n{output}"
        );
    }
    assert!(output.contains("0..=86400000"), "{output}");
}

#[test]
fn the_largest_retry_ms_gives_a_farewell_retry_within_2_pow_31_and_a_clean_exit() {
    let mut server = TestServer::start(&["--retry-ms", "86400000", "--grace-ms", "5000"]);
    let mut sub = server.subscribe("topic=t", &[]);
    let retries = |raw: &[u8]| raw.windows(7).filter(|w| w == b"retry: ").count();
    assert!(sub.read_raw_until(|raw| retries(raw) == 1));
    server.signal(SIGTERM);
    assert!(sub.ended_within(TIMEOUT), "stream not ended");
    let text = sub.raw_text();
    let values: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("retry: "))
        .map(|v| v.parse().expect("retry value"))
        .collect();
    assert_eq!(values.len(), 2, "{text}");
    assert_eq!(values[0], 86_400_000);
    assert!(
        (86_400_000..=i32::MAX as u64).contains(&values[1]),
        "farewell retry {}",
        values[1]
    );
    assert_eq!(server.wait_exit(TIMEOUT), Some(0));
}
