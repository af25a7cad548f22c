//! Options, their defaults, their ranges and their validation; the CLI (`--help`) is generated
//! from this struct.
//!
//! Every numeric option has one [`OptionRange`] in [`ranges`]. That table is the only place a
//! range is written down: the command-line parser (clap value parsers), the C API setters
//! (`src/ffi/config.rs`) and [`Config::validate`] (run by `Server::bind` for every configuration,
//! however it was built) all check against it, so no value outside a range reaches the loop.
//! Validation that protects operators lives here too, not in the loop: the server refuses to
//! publish openly on a non-loopback address unless told so explicitly.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use clap::Parser;

/// Room for everything an encoded event adds to its data (id, topics, event type, framing), so
/// that the largest event fits in a connection's queue: `--max-queue-bytes` must be at least
/// `--max-body` plus this.
pub const EVENT_OVERHEAD_MAX: usize = 64 * 1024;

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

/// The ranges of every numeric option (the values are also in README.md and docs/SECURITY.md).
pub mod ranges {
    use super::OptionRange;

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

    /// Every range, in `--help` order.
    pub const ALL: [OptionRange; 18] = [
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
        IDEMPOTENCY_WINDOW_SECS,
    ];
}

/// A clap value parser for a millisecond or count option: a plain integer within `range`.
fn number_in(range: OptionRange) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync {
    move |s: &str| {
        let value: u64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s}: expected a whole number"))?;
        range.check(value).map_err(|e| e.to_string())
    }
}

/// A clap value parser for a count option held in a `usize`.
fn count_in(range: OptionRange) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |s: &str| {
        let value = number_in(range)(s)?;
        usize::try_from(value).map_err(|_| format!("{s}: too large for this platform"))
    }
}

/// A clap value parser for a byte size (`64k`, `1M`, ...) within `range`.
fn size_in(range: OptionRange) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |s: &str| {
        let value = parse_size(s)?;
        range.check_usize(value).map_err(|e| e.to_string())
    }
}

/// Every option of the server. `Config::default()` is what the binary runs with no flag.
#[derive(Parser, Clone)]
#[command(
    name = "sseloop",
    version = crate::VERSION,
    // Settings from the file and the environment are passed before the command line, and the
    // last occurrence of an option wins: that is the precedence flag > environment > file.
    args_override_self = true,
    about = "Single-threaded Server-Sent Events publish/subscribe server",
    long_about = "Single-threaded Server-Sent Events publish/subscribe server.\n\n\
        GET /events?topic=A[&topic=B] streams events (Last-Event-ID resumes from history);\n\
        POST /publish?topic=A[&event=TYPE] publishes the request body; GET /metrics, GET /healthz.\n\
        Logging is controlled by RUST_LOG (e.g. RUST_LOG=info, RUST_LOG=sseloop=debug).\n\n\
        Authorization is either static tokens (--publish-token, --subscribe-token: all topics) or\n\
        JWT (--jwt-secret or --jwt-public-key: per-topic grants in the token's \"sseloop\" claim),\n\
        never both: the server refuses to start with both kinds configured."
)]
pub struct Config {
    /// Read settings from this TOML file (keys are the long option names, e.g.
    /// `max-queue-bytes = "2M"`); SSELOOP_* variables and flags take precedence over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Check the configuration (flags, environment and file) and exit: 0 when it is valid, 1
    /// with the reason when not.
    #[arg(long)]
    pub check_config: bool,

    /// Print the effective configuration as TOML, with where each value came from, secrets
    /// redacted, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Print the man page (`man`), a shell completion script (`bash`, `zsh`, `fish`) or the
    /// options table of docs/OPTIONS.md (`markdown`) made from these definitions, and exit.
    #[arg(long, hide = true, value_name = "WHAT",
          value_parser = ["man", "bash", "zsh", "fish", "markdown"])]
    pub generate: Option<String>,

    /// Address to listen on (HOST:PORT; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Milliseconds of silence after which a stream gets a heartbeat comment (1..=86400000).
    #[arg(long, default_value = "15000", value_parser = number_in(ranges::HEARTBEAT_MS))]
    pub heartbeat_ms: u64,

    /// Reconnection delay sent to clients in the `retry:` field, in milliseconds (0..=86400000).
    #[arg(long, default_value = "3000", value_parser = number_in(ranges::RETRY_MS))]
    pub retry_ms: u64,

    /// Events retained per topic for Last-Event-ID resume (0 disables history; at most 1048576).
    #[arg(long, default_value = "1024", value_parser = count_in(ranges::HISTORY))]
    pub history: usize,

    /// Bytes of history retained over all topics, encodings included; the oldest events go first
    /// past it (k/M/G suffixes; 0..=1T).
    #[arg(long, default_value = "64M", value_parser = size_in(ranges::HISTORY_BYTES))]
    pub history_bytes: usize,

    /// Most topics that may exist at once (1..=16777216).
    #[arg(long, default_value = "65536", value_parser = count_in(ranges::MAX_TOPICS))]
    pub max_topics: usize,

    /// Bearer token required to publish (also read from SSELOOP_PUBLISH_TOKEN).
    #[arg(long)]
    pub publish_token: Option<String>,

    /// Bearer token (or access_token query parameter) required to subscribe
    /// (also read from SSELOOP_SUBSCRIBE_TOKEN).
    #[arg(long)]
    pub subscribe_token: Option<String>,

    /// File whose first line is the publish token: the recommended form, since a command line
    /// shows in `ps` (re-read on reload).
    #[arg(long, value_name = "FILE")]
    pub publish_token_file: Option<std::path::PathBuf>,

    /// File whose first line is the subscribe token (re-read on reload).
    #[arg(long, value_name = "FILE")]
    pub subscribe_token_file: Option<std::path::PathBuf>,

    /// Allow publishing without a token on a non-loopback listen address.
    #[arg(long)]
    pub open_publish: bool,

    /// Value of Access-Control-Allow-Origin on every response.
    #[arg(long, default_value = "*")]
    pub cors_origin: String,

    /// Largest accepted publish body on every path (bytes; k/M/G suffixes are binary multiples;
    /// 0..=1G).
    #[arg(long, default_value = "1M", value_parser = size_in(ranges::MAX_BODY))]
    pub max_body: usize,

    /// Most simultaneous client connections, 1..=16777216 [default: RLIMIT_NOFILE minus a
    /// reserve].
    #[arg(long, value_parser = count_in(ranges::MAX_CONNECTIONS))]
    pub max_connections: Option<usize>,

    /// Time given to connections to finish when shutting down, in milliseconds (0..=86400000).
    #[arg(long, default_value = "5000", value_parser = number_in(ranges::GRACE_MS))]
    pub grace_ms: u64,

    /// A request head must be complete this many milliseconds after its first byte (or after
    /// accept); a request body may not stall longer than this between reads (1..=86400000).
    #[arg(long, default_value = "10000", value_parser = number_in(ranges::HEADER_TIMEOUT_MS))]
    pub header_timeout_ms: u64,

    /// A keep-alive connection with no request in progress is closed after this many
    /// milliseconds (1..=86400000).
    #[arg(long, default_value = "60000", value_parser = number_in(ranges::IDLE_TIMEOUT_MS))]
    pub idle_timeout_ms: u64,

    /// A connection whose socket accepts no byte of pending output for this many milliseconds is
    /// closed (1..=86400000).
    #[arg(long, default_value = "30000", value_parser = number_in(ranges::WRITE_STALL_MS))]
    pub write_stall_ms: u64,

    /// While writing a long round of output to many subscribers, take new input (publishes,
    /// Redis's answers) every this many microseconds, so that it is answered and delivered
    /// without waiting for the round to end (0: after every write; 0..=1000000).
    #[arg(long, default_value = "250", value_parser = number_in(ranges::ROUND_INPUT_US))]
    pub round_input_us: u64,

    /// Most output bytes queued for one connection; a subscriber past it is a slow consumer and is
    /// disconnected (it can resume with Last-Event-ID). At least --max-body + 64k; at most 1T.
    #[arg(long, default_value = "2M", value_parser = size_in(ranges::MAX_QUEUE_BYTES))]
    pub max_queue_bytes: usize,

    /// Bytes of events other threads (PublishHandle, sseloop_publish) may have queued for the loop;
    /// past it a publish fails with "would block". At least --max-body and 64k; at most 1T.
    #[arg(long, default_value = "16M", value_parser = size_in(ranges::PUBLISH_QUEUE_BYTES))]
    pub publish_queue_bytes: usize,

    /// Largest frame payload accepted in frame mode (bytes; k/M/G suffixes; 256..=1G).
    #[arg(long, default_value = "1M", value_parser = size_in(ranges::MAX_FRAME))]
    pub max_frame: usize,

    /// Serve the web console at /ui/ and its JSON stats at /stats (off by default). When a
    /// subscribe token is set, /stats needs it as `Authorization: Bearer`.
    #[arg(long)]
    pub ui: bool,
    /// HMAC secret (at least 32 bytes) for HS256/384/512 JWTs: turns on per-topic JWT
    /// authorization (also read from SSELOOP_JWT_SECRET). Not with the static tokens.
    #[arg(long)]
    pub jwt_secret: Option<String>,

    /// File whose first line is the JWT HMAC secret (re-read on reload: key rotation).
    #[arg(long, value_name = "FILE")]
    pub jwt_secret_file: Option<std::path::PathBuf>,

    /// PEM public key file (RSA: RS256/384/512; EC P-256/P-384: ES256/384; Ed25519: EdDSA)
    /// for JWTs: turns on per-topic JWT authorization. Not with --jwt-secret or static tokens.
    #[arg(long, value_name = "FILE", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<std::path::PathBuf>,

    /// Required `iss` claim of JWTs.
    #[arg(long)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim of JWTs (without it, tokens carrying an `aud` are refused).
    #[arg(long)]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on JWT `exp` and `nbf`, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(..=crate::auth::MAX_LEEWAY_SECS))]
    pub jwt_leeway: u64,

    /// Also read the subscribe JWT from this cookie (EventSource with withCredentials). Needs a
    /// specific --cors-origin; responses then allow credentials.
    #[arg(long, value_name = "NAME")]
    pub jwt_cookie: Option<String>,

    /// Share one hub with other nodes through Redis Streams:
    /// redis://[USER:PASSWORD@]HOST:PORT[/DB] (also read from SSELOOP_BACKPLANE; the password
    /// is never logged). Ids then come from Redis and every node delivers every event. See
    /// docs/SCALING.md.
    #[arg(long, value_name = "URL",
          value_parser = parse_backplane)]
    pub backplane: Option<crate::backplane::RedisUrl>,

    /// Prefix of every Redis key (several deployments can share one Redis).
    #[arg(long, default_value = "sseloop:", value_name = "PREFIX")]
    pub backplane_prefix: String,

    /// A publish not accepted by Redis within this many milliseconds is refused (503 with
    /// Retry-After, ERROR frame BACKPLANE_UNAVAILABLE); it may still have been appended, so
    /// retry with the same Idempotency-Key (10..=60000).
    #[arg(long, default_value = "1000", value_parser = number_in(ranges::BACKPLANE_TIMEOUT_MS))]
    pub backplane_timeout_ms: u64,

    /// Events kept in the Redis stream (approximately: trimmed with MAXLEN ~), for nodes that
    /// reconnect or start and for resumes older than a node's own history (1..=4294967296).
    #[arg(long, default_value = "100000", value_parser = number_in(ranges::BACKPLANE_RETENTION))]
    pub backplane_retention: u64,

    /// How long a publish's Idempotency-Key is remembered, in seconds (1..=86400). Without a
    /// backplane the node remembers at most 65536 keys.
    #[arg(long, default_value = "300", value_parser = number_in(ranges::IDEMPOTENCY_WINDOW_SECS))]
    pub idempotency_window_secs: u64,

    /// Log line format: `text` for people, `json` for collectors (one object per line with
    /// `ts`, `level`, `target` and `msg`). A reload applies a change.
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Log level: off, error, warn, info, debug or trace [default: RUST_LOG, else info]. A
    /// reload applies a change.
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    pub log_level: Option<log::LevelFilter>,

    /// Set SO_REUSEPORT on the listener so several nodes (one per core) share the address; the
    /// kernel spreads connections among them. With --backplane they form one hub.
    #[arg(long)]
    pub reuse_port: bool,
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `[time level target] message`, for people.
    #[default]
    Text,
    /// One JSON object per line, for collectors.
    Json,
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s}: expected off, error, warn, info, debug or trace"))
}

fn parse_backplane(s: &str) -> Result<crate::backplane::RedisUrl, String> {
    crate::backplane::RedisUrl::parse(s)
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["sseloop"])
    }
}

impl fmt::Debug for Config {
    // Hand-written so that tokens never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |t: &Option<String>| t.as_ref().map(|_| "<set>");
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("retry_ms", &self.retry_ms)
            .field("history", &self.history)
            .field("history_bytes", &self.history_bytes)
            .field("max_topics", &self.max_topics)
            .field("publish_token", &redact(&self.publish_token))
            .field("subscribe_token", &redact(&self.subscribe_token))
            .field("open_publish", &self.open_publish)
            .field("cors_origin", &self.cors_origin)
            .field("max_body", &self.max_body)
            .field("max_connections", &self.max_connections)
            .field("grace_ms", &self.grace_ms)
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("write_stall_ms", &self.write_stall_ms)
            .field("round_input_us", &self.round_input_us)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("publish_queue_bytes", &self.publish_queue_bytes)
            .field("max_frame", &self.max_frame)
            .field("ui", &self.ui)
            .field("jwt_secret", &redact(&self.jwt_secret))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("jwt_cookie", &self.jwt_cookie)
            .field("backplane", &self.backplane)
            .field("backplane_prefix", &self.backplane_prefix)
            .field("backplane_timeout_ms", &self.backplane_timeout_ms)
            .field("backplane_retention", &self.backplane_retention)
            .field("idempotency_window_secs", &self.idempotency_window_secs)
            .field("reuse_port", &self.reuse_port)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("config", &self.config)
            .field("publish_token_file", &self.publish_token_file)
            .field("subscribe_token_file", &self.subscribe_token_file)
            .field("jwt_secret_file", &self.jwt_secret_file)
            .finish()
    }
}

/// A configuration the server refuses to run with.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Non-loopback listen address, no publish token, no `--open-publish`.
    OpenPublish(SocketAddr),
    /// An empty token would match an empty `Bearer` credential.
    EmptyToken(&'static str),
    /// A CORS origin with characters that cannot go in a header.
    BadCorsOrigin,
    /// A numeric option outside its range.
    OutOfRange {
        /// The option and its range.
        range: OptionRange,
        /// The value given.
        value: u64,
    },
    /// `--max-queue-bytes` cannot hold the largest event `--max-body` allows.
    QueueBelowBody {
        /// `--max-queue-bytes`.
        max_queue_bytes: usize,
        /// `--max-body`.
        max_body: usize,
    },
    /// `--publish-queue-bytes` cannot hold one event of `--max-body` bytes.
    PublishQueueBelowBody {
        /// `--publish-queue-bytes`.
        publish_queue_bytes: usize,
        /// `--max-body`.
        max_body: usize,
    },
    /// A JWT option the combination refuses (see the message).
    Jwt(&'static str),
    /// The JWT key cannot be read or used.
    JwtKey(String),
    /// A backplane option the combination refuses (see the message).
    Backplane(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::OpenPublish(addr) => write!(
                f,
                "refusing to listen on non-loopback {addr} without --publish-token: anyone could \
                 publish. Set --publish-token (or SSELOOP_PUBLISH_TOKEN), or pass --open-publish \
                 to allow it"
            ),
            ConfigError::EmptyToken(which) => write!(f, "{which} must not be empty"),
            ConfigError::BadCorsOrigin => {
                write!(f, "--cors-origin must be visible ASCII without spaces")
            }
            ConfigError::OutOfRange { range, value } => write!(
                f,
                "{} must be between {} and {} (got {value})",
                range.flag, range.min, range.max
            ),
            ConfigError::QueueBelowBody {
                max_queue_bytes,
                max_body,
            } => write!(
                f,
                "--max-queue-bytes ({max_queue_bytes}) must be at least --max-body ({max_body}) \
                 + {EVENT_OVERHEAD_MAX}, so that the largest event fits in a connection's queue"
            ),
            ConfigError::PublishQueueBelowBody {
                publish_queue_bytes,
                max_body,
            } => write!(
                f,
                "--publish-queue-bytes ({publish_queue_bytes}) must be at least --max-body \
                 ({max_body}), so that the largest event fits in the publish queue"
            ),
            ConfigError::Jwt(why) => f.write_str(why),
            ConfigError::JwtKey(why) => f.write_str(why),
            ConfigError::Backplane(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Every numeric option with its range (the table [`Config::validate`] checks).
    pub fn numeric_options(&self) -> [(OptionRange, u64); 18] {
        use ranges::*;
        let n = |v: usize| v as u64;
        [
            (HEARTBEAT_MS, self.heartbeat_ms),
            (RETRY_MS, self.retry_ms),
            (HISTORY, n(self.history)),
            (HISTORY_BYTES, n(self.history_bytes)),
            (MAX_TOPICS, n(self.max_topics)),
            (MAX_BODY, n(self.max_body)),
            // Unset means "derived from RLIMIT_NOFILE", which is always in range.
            (MAX_CONNECTIONS, n(self.max_connections.unwrap_or(1))),
            (GRACE_MS, self.grace_ms),
            (HEADER_TIMEOUT_MS, self.header_timeout_ms),
            (IDLE_TIMEOUT_MS, self.idle_timeout_ms),
            (WRITE_STALL_MS, self.write_stall_ms),
            (ROUND_INPUT_US, self.round_input_us),
            (MAX_QUEUE_BYTES, n(self.max_queue_bytes)),
            (PUBLISH_QUEUE_BYTES, n(self.publish_queue_bytes)),
            (MAX_FRAME, n(self.max_frame)),
            (BACKPLANE_TIMEOUT_MS, self.backplane_timeout_ms),
            (BACKPLANE_RETENTION, self.backplane_retention),
            (IDEMPOTENCY_WINDOW_SECS, self.idempotency_window_secs),
        ]
    }

    /// Checks every option against its range, then the combination of options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (range, value) in self.numeric_options() {
            range.check(value)?;
        }
        if self.max_queue_bytes < self.max_body.saturating_add(EVENT_OVERHEAD_MAX) {
            return Err(ConfigError::QueueBelowBody {
                max_queue_bytes: self.max_queue_bytes,
                max_body: self.max_body,
            });
        }
        if self.publish_queue_bytes < self.max_body {
            return Err(ConfigError::PublishQueueBelowBody {
                publish_queue_bytes: self.publish_queue_bytes,
                max_body: self.max_body,
            });
        }
        if self.publish_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken("--publish-token"));
        }
        if self.subscribe_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken("--subscribe-token"));
        }
        if self.cors_origin.is_empty() || !self.cors_origin.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::BadCorsOrigin);
        }
        self.validate_jwt()?;
        if self.backplane.is_some()
            && (self.backplane_prefix.is_empty()
                || self.backplane_prefix.len() > 64
                || !self.backplane_prefix.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::Backplane(
                "--backplane-prefix must be 1..=64 visible ASCII characters",
            ));
        }
        if self.backplane.is_some() && (self.backplane_retention as usize) < self.history {
            return Err(ConfigError::Backplane(
                "--backplane-retention must be at least --history: Redis must hold what a node \
                 may be asked to replay",
            ));
        }
        if !self.listen.ip().is_loopback()
            && self.publish_token.is_none()
            && !self.jwt_enabled()
            && !self.open_publish
        {
            return Err(ConfigError::OpenPublish(self.listen));
        }
        Ok(())
    }
}

impl Config {
    /// Whether JWT authorization is configured (a secret or a public key).
    pub fn jwt_enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }

    fn validate_jwt(&self) -> Result<(), ConfigError> {
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            return Err(ConfigError::Jwt(
                "--jwt-secret and --jwt-public-key are exclusive: the key fixes the algorithm family",
            ));
        }
        let jwt = self.jwt_enabled();
        if jwt && (self.publish_token.is_some() || self.subscribe_token.is_some()) {
            return Err(ConfigError::Jwt(
                "JWT authorization and static tokens (--publish-token, --subscribe-token) are \
                 exclusive: mint a JWT with the grants the static token gave",
            ));
        }
        if !jwt
            && (self.jwt_cookie.is_some()
                || self.jwt_issuer.is_some()
                || self.jwt_audience.is_some())
        {
            return Err(ConfigError::Jwt(
                "--jwt-cookie, --jwt-issuer and --jwt-audience need --jwt-secret or --jwt-public-key",
            ));
        }
        if let Some(name) = &self.jwt_cookie {
            // RFC 6265 cookie-name: an HTTP token.
            let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token_char) {
                return Err(ConfigError::Jwt(
                    "--jwt-cookie must be a cookie name (an HTTP token)",
                ));
            }
            if self.cors_origin == "*" {
                // Browsers refuse credentialed responses with a wildcard origin, and allowing any
                // origin to use the cookie would let every site read the user's streams.
                return Err(ConfigError::Jwt(
                    "--jwt-cookie needs a specific --cors-origin (not *)",
                ));
            }
        }
        Ok(())
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    // `:8080` means every IPv4 address, as in Go and nginx.
    let owned;
    let s = match s.strip_prefix(':') {
        Some(port) => {
            owned = format!("0.0.0.0:{port}");
            owned.as_str()
        }
        None => s,
    };
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

/// Parses `1048576`, `64k`, `1M`, `1MiB`, `2G` (binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s}: expected a number of bytes"))?;
    let mult: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s}: unknown unit (use k, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s}: too large"))
}

#[cfg(test)]
mod tests {
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
            Config::try_parse_from(["sseloop", "--jwt-secret", "s", "--jwt-public-key", "f"])
                .is_err()
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
        assert!(
            text.contains("--max-queue-bytes (1048576)") && text.contains("--max-body (1048576)")
        );
        let edge =
            Config::parse_from(["sseloop", "--max-body", "64k", "--max-queue-bytes", "128k"]);
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
}
