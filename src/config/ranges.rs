//! The range of every numeric option ([`OptionRange`]): the one place a range is written down,
//! read by the CLI's value parsers, the C API's setters and [`Config::validate`]. The values are
//! also in README.md and docs/SECURITY.md.
//!
//! [`Config::validate`]: super::Config::validate

use super::ConfigError;

/// The inclusive range of one numeric option, named by its command-line flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionRange {
    /// The flag, e.g. `--retry-ms`.
    pub flag: &'static str,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
}

impl OptionRange {
    /// `value` if it is within the range, else the error naming the option and its range.
    pub fn check(&self, value: u64) -> Result<u64, ConfigError> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::OutOfRange {
                range: *self,
                value,
            })
        }
    }

    /// Like [`OptionRange::check`] for a `usize` option.
    pub fn check_usize(&self, value: usize) -> Result<usize, ConfigError> {
        self.check(value as u64).map(|_| value)
    }
}

/// Largest `--jwt-leeway`: a day. More would make `exp` meaningless (and the time arithmetic of
/// the JWT crate is unchecked near the epoch).
pub const MAX_LEEWAY_SECS: u64 = 86_400;

const KIB: u64 = 1 << 10;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
/// One day: longer timers are a mistake, and `Instant + Duration` must not overflow.
const DAY_MS: u64 = 86_400_000;

/// `--heartbeat-ms`.
pub const HEARTBEAT_MS: OptionRange = OptionRange {
    flag: "--heartbeat-ms",
    min: 1,
    max: DAY_MS,
};
/// `--retry-ms`: at most a day, so the shutdown jitter (up to twice the value) stays well
/// inside the 2^31 - 1 that EventSource implementations and the GOAWAY `u32` accept.
pub const RETRY_MS: OptionRange = OptionRange {
    flag: "--retry-ms",
    min: 0,
    max: DAY_MS,
};
/// `--history` (events per topic).
pub const HISTORY: OptionRange = OptionRange {
    flag: "--history",
    min: 0,
    max: 1 << 20,
};
/// `--history-bytes` (all topics, encodings included).
pub const HISTORY_BYTES: OptionRange = OptionRange {
    flag: "--history-bytes",
    min: 0,
    max: TIB,
};
/// `--max-topics`.
pub const MAX_TOPICS: OptionRange = OptionRange {
    flag: "--max-topics",
    min: 1,
    max: 1 << 24,
};
/// `--publish-queue-bytes`.
pub const PUBLISH_QUEUE_BYTES: OptionRange = OptionRange {
    flag: "--publish-queue-bytes",
    min: 64 * KIB,
    max: TIB,
};
/// `--max-body`: an EVENT frame's data length is a `u32`; 1 GiB leaves room for the rest.
pub const MAX_BODY: OptionRange = OptionRange {
    flag: "--max-body",
    min: 0,
    max: GIB,
};
/// `--max-connections`.
pub const MAX_CONNECTIONS: OptionRange = OptionRange {
    flag: "--max-connections",
    min: 1,
    max: 1 << 24,
};
/// `--grace-ms` (0: force every connection closed at once).
pub const GRACE_MS: OptionRange = OptionRange {
    flag: "--grace-ms",
    min: 0,
    max: DAY_MS,
};
/// `--header-timeout-ms`.
pub const HEADER_TIMEOUT_MS: OptionRange = OptionRange {
    flag: "--header-timeout-ms",
    min: 1,
    max: DAY_MS,
};
/// `--idle-timeout-ms`.
pub const IDLE_TIMEOUT_MS: OptionRange = OptionRange {
    flag: "--idle-timeout-ms",
    min: 1,
    max: DAY_MS,
};
/// `--write-stall-ms`.
pub const WRITE_STALL_MS: OptionRange = OptionRange {
    flag: "--write-stall-ms",
    min: 1,
    max: DAY_MS,
};
/// `--round-input-us`.
pub const ROUND_INPUT_US: OptionRange = OptionRange {
    flag: "--round-input-us",
    min: 0,
    max: 1_000_000,
};
/// `--max-queue-bytes` (also at least `--max-body` + 64 KiB, checked by `validate`).
pub const MAX_QUEUE_BYTES: OptionRange = OptionRange {
    flag: "--max-queue-bytes",
    min: 64 * KIB,
    max: TIB,
};
/// `--max-frame`: at least room for any control frame naming one topic.
pub const MAX_FRAME: OptionRange = OptionRange {
    flag: "--max-frame",
    min: 256,
    max: GIB,
};
/// `--backplane-timeout-ms`: how long a publish waits for Redis before it is refused.
pub const BACKPLANE_TIMEOUT_MS: OptionRange = OptionRange {
    flag: "--backplane-timeout-ms",
    min: 10,
    max: 60_000,
};
/// `--backplane-min-replicas`: replicas that must hold an append before it counts.
pub const BACKPLANE_MIN_REPLICAS: OptionRange = OptionRange {
    flag: "--backplane-min-replicas",
    min: 0,
    max: 16,
};
/// `--backplane-presence-ttl-secs`: how long a node's presence part outlives its last write.
pub const BACKPLANE_PRESENCE_TTL_SECS: OptionRange = OptionRange {
    flag: "--backplane-presence-ttl-secs",
    min: 3,
    max: 3600,
};
/// `--backplane-retention` (events kept in the Redis stream).
pub const BACKPLANE_RETENTION: OptionRange = OptionRange {
    flag: "--backplane-retention",
    min: 1,
    max: 1 << 32,
};
/// `--idempotency-window-secs`.
pub const IDEMPOTENCY_WINDOW_SECS: OptionRange = OptionRange {
    flag: "--idempotency-window-secs",
    min: 1,
    max: 86_400,
};

/// `--max-connections-per-ip` (0: off).
pub const MAX_CONNECTIONS_PER_IP: OptionRange = OptionRange {
    flag: "--max-connections-per-ip",
    min: 0,
    max: 1 << 24,
};
/// `--ipv6-prefix`: the bits of an IPv6 address that name one client.
pub const IPV6_PREFIX: OptionRange = OptionRange {
    flag: "--ipv6-prefix",
    min: 1,
    max: 128,
};
/// `--publish-rate` (per second; 0: off).
pub const PUBLISH_RATE: OptionRange = OptionRange {
    flag: "--publish-rate",
    min: 0,
    max: 1_000_000,
};
/// `--publish-burst` (0: one second's worth of the rate).
pub const PUBLISH_BURST: OptionRange = OptionRange {
    flag: "--publish-burst",
    min: 0,
    max: 1_000_000,
};
/// `--max-subscriptions-per-conn` (0: off): at most the 64 topics a request may name
/// (`http::request::MAX_TOPICS_PER_REQUEST`), which already bound a connection.
pub const MAX_SUBSCRIPTIONS_PER_CONN: OptionRange = OptionRange {
    flag: "--max-subscriptions-per-conn",
    min: 0,
    max: 64,
};
/// `--max-new-connections-rate` (per second and address; 0: off).
pub const MAX_NEW_CONNECTIONS_RATE: OptionRange = OptionRange {
    flag: "--max-new-connections-rate",
    min: 0,
    max: 1_000_000,
};

/// Every range, in `--help` order.
pub const ALL: [OptionRange; 26] = [
    HEARTBEAT_MS,
    RETRY_MS,
    HISTORY,
    HISTORY_BYTES,
    MAX_TOPICS,
    MAX_BODY,
    MAX_CONNECTIONS,
    GRACE_MS,
    HEADER_TIMEOUT_MS,
    IDLE_TIMEOUT_MS,
    WRITE_STALL_MS,
    ROUND_INPUT_US,
    MAX_QUEUE_BYTES,
    PUBLISH_QUEUE_BYTES,
    MAX_FRAME,
    BACKPLANE_TIMEOUT_MS,
    BACKPLANE_RETENTION,
    BACKPLANE_MIN_REPLICAS,
    BACKPLANE_PRESENCE_TTL_SECS,
    IDEMPOTENCY_WINDOW_SECS,
    MAX_CONNECTIONS_PER_IP,
    IPV6_PREFIX,
    PUBLISH_RATE,
    PUBLISH_BURST,
    MAX_SUBSCRIPTIONS_PER_CONN,
    MAX_NEW_CONNECTIONS_RATE,
];
