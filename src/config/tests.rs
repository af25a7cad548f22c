use super::*;

#[test]
fn defaults_match_the_documented_contract() {
    let c = Config::default();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        (c.heartbeat_ms, c.retry_ms, c.history),
        (15_000, 3_000, 1024)
    );
    assert_eq!((c.max_body, c.grace_ms), (1 << 20, 5_000));
    assert_eq!(
        (c.max_queue_bytes, c.publish_queue_bytes, c.history_bytes),
        (2 << 20, 16 << 20, 64 << 20)
    );
    assert_eq!((c.max_topics, c.max_frame), (65_536, 1 << 20));
    assert_eq!(c.round_input_us, 250);
    assert_eq!(c.cors_origin, "*");
    assert!(c.validate().is_ok());
}

#[test]
fn refuses_open_publish_on_public_address() {
    let c = Config::parse_from(["sseloop", "--listen", "0.0.0.0:8080"]);
    assert_eq!(c.validate(), Err(ConfigError::OpenPublish(c.listen)));
    let c = Config::parse_from(["sseloop", "--listen", "0.0.0.0:8080", "--open-publish"]);
    assert!(c.validate().is_ok());
    let c = Config::parse_from(["sseloop", "--listen", "0.0.0.0:1", "--publish-token", "s"]);
    assert!(c.validate().is_ok());
    let c = Config::parse_from(["sseloop", "--listen", "[::1]:1"]);
    assert!(c.validate().is_ok());
}

#[test]
fn sizes_and_redaction() {
    assert_eq!(parse_size("64k"), Ok(65536));
    assert_eq!(parse_size("1MiB"), Ok(1 << 20));
    assert_eq!(parse_size("12"), Ok(12));
    assert!(parse_size("1T").is_err());
    assert!(parse_size("").is_err());
    let c = Config::parse_from(["sseloop", "--publish-token", "hunter2"]);
    assert!(!format!("{c:?}").contains("hunter2"));
    let c = Config::parse_from(["sseloop", "--jwt-secret", "hunter2"]);
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn jwt_combinations() {
    let refused = |args: &[&str]| {
        let mut all = vec!["sseloop"];
        all.extend_from_slice(args);
        matches!(Config::parse_from(all).validate(), Err(ConfigError::Jwt(_)))
    };
    let secret = ["--jwt-secret", "s"];
    assert!(refused(&[&secret[..], &["--publish-token", "p"]].concat()));
    assert!(refused(
        &[&secret[..], &["--subscribe-token", "p"]].concat()
    ));
    assert!(refused(&[&secret[..], &["--jwt-cookie", "tok"]].concat()));
    assert!(refused(
        &[
            &secret[..],
            &["--jwt-cookie", "a b", "--cors-origin", "https://x"]
        ]
        .concat()
    ));
    assert!(refused(&[
        "--jwt-cookie",
        "tok",
        "--cors-origin",
        "https://x"
    ]));
    assert!(refused(&["--jwt-issuer", "me"]));
    assert!(
        Config::try_parse_from(["sseloop", "--jwt-secret", "s", "--jwt-public-key", "f"]).is_err()
    );
    let ok = Config::parse_from([
        "sseloop",
        "--jwt-secret",
        "s",
        "--jwt-cookie",
        "tok",
        "--cors-origin",
        "https://x",
        "--listen",
        "0.0.0.0:1",
    ]);
    assert_eq!(
        ok.validate(),
        Ok(()),
        "JWT also protects publishing on a public address"
    );
    assert_eq!(Config::default().jwt_leeway, 5);
    assert!(Config::try_parse_from(["sseloop", "--jwt-leeway", "86401"]).is_err());
}

#[test]
fn the_range_table_covers_every_numeric_option_once() {
    let c = Config::default();
    let flags: Vec<&str> = c.numeric_options().iter().map(|(r, _)| r.flag).collect();
    let all: Vec<&str> = ranges::ALL.iter().map(|r| r.flag).collect();
    let mut sorted = flags.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), flags.len(), "a flag twice: {flags:?}");
    let mut all_sorted = all.clone();
    all_sorted.sort_unstable();
    assert_eq!(sorted, all_sorted);
    // Every flag in the table is a real flag, and its bounds parse.
    for r in ranges::ALL {
        assert!(r.min <= r.max, "{}", r.flag);
        for v in [r.min, r.max] {
            let args = ["sseloop", r.flag, &v.to_string()];
            assert!(Config::try_parse_from(args).is_ok(), "{} {v}", r.flag);
        }
        let over = (r.max + 1).to_string();
        let err = Config::try_parse_from(["sseloop", r.flag, &over]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(r.flag), "{text}");
        assert!(
            text.contains(&format!("between {} and {}", r.min, r.max)),
            "{text}"
        );
        if r.min > 0 {
            let under = (r.min - 1).to_string();
            assert!(Config::try_parse_from(["sseloop", r.flag, &under]).is_err());
        }
    }
}

#[test]
fn huge_retry_is_refused_by_the_parser_and_by_validate() {
    let err = Config::try_parse_from(["sseloop", "--retry-ms", "18446744073709551615"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--retry-ms must be between 0 and 86400000"),
        "{err}"
    );
    let c = Config {
        retry_ms: u64::MAX,
        ..Config::default()
    };
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "--retry-ms must be between 0 and 86400000 (got 18446744073709551615)"
    );
}

#[test]
fn queue_caps_must_hold_the_largest_event() {
    let c = Config::parse_from(["sseloop", "--max-body", "1M", "--max-queue-bytes", "1M"]);
    let err = c.validate().unwrap_err();
    assert_eq!(
        err,
        ConfigError::QueueBelowBody {
            max_queue_bytes: 1 << 20,
            max_body: 1 << 20
        }
    );
    let text = err.to_string();
    assert!(text.contains("--max-queue-bytes (1048576)") && text.contains("--max-body (1048576)"));
    let edge = Config::parse_from(["sseloop", "--max-body", "64k", "--max-queue-bytes", "128k"]);
    assert!(edge.validate().is_ok());
    let c = Config::parse_from([
        "sseloop",
        "--max-body",
        "1M",
        "--publish-queue-bytes",
        "512k",
    ]);
    assert!(matches!(
        c.validate(),
        Err(ConfigError::PublishQueueBelowBody { .. })
    ));
}

#[test]
fn debug_shows_the_new_options() {
    let text = format!("{:?}", Config::default());
    for field in ["history_bytes", "max_topics", "publish_queue_bytes"] {
        assert!(text.contains(field), "{text}");
    }
}
