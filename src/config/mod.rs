//! Options, their defaults, their ranges and their validation; the CLI (`--help`) is generated
//! from this struct.
//!
//! Every numeric option has one [`OptionRange`] in [`ranges`]. That table is the only place a
//! range is written down: the command-line parser (clap value parsers), the C API setters
//! (`src/ffi/config.rs`) and [`Config::validate`] (run by `Server::bind` for every configuration,
//! however it was built) all check against it, so no value outside a range reaches the loop.
//! Validation that protects operators lives here too, not in the loop: the server refuses to
//! publish openly on a non-loopback address unless told so explicitly.

//!
//! Files: [`ranges`] (every numeric option's range, and the JWT leeway ceiling), `parse.rs`
//! (the value parsers the CLI uses), `validate.rs` ([`ConfigError`] and the combinations refused),
//! [`redis_url`] (the `--backplane` URL). Options are plain values: this module imports nothing
//! else from the crate, and everything above it reads it.

pub mod cidr;
mod parse;
pub mod ranges;
pub mod redis_url;
pub mod sources;
mod validate;

use std::fmt;
use std::net::SocketAddr;

use clap::Parser;

pub use self::cidr::Cidr;
pub use self::parse::parse_size;
use self::parse::{count_in, number_in, parse_backplane, parse_listen, rate_in, size_in};
pub use self::ranges::{OptionRange, MAX_LEEWAY_SECS};
pub use self::redis_url::RedisUrl;
pub use self::validate::ConfigError;

/// Room for everything an encoded event adds to its data (id, topics, event type, framing), so
/// that the largest event fits in a connection's queue: `--max-queue-bytes` must be at least
/// `--max-body` plus this.
pub const EVENT_OVERHEAD_MAX: usize = 64 * 1024;

/// Every option of the server. `Config::default()` is what the binary runs with no flag.
#[derive(Parser, Clone)]
#[command(
    name = "sseloop",
    version = VERSION,
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

    /// Bearer token of the server API's admin calls (`/api/v1/`, docs/API.md) and of `/stats`.
    /// Under JWT a token with `"sseloop":{"admin":true}` is accepted too.
    #[arg(long)]
    pub admin_token: Option<String>,

    /// File whose first line is the admin token: the recommended form (re-read on reload).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,

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
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(..=MAX_LEEWAY_SECS))]
    pub jwt_leeway: u64,

    /// Also read the subscribe JWT from this cookie (EventSource with withCredentials). Needs a
    /// specific --cors-origin; responses then allow credentials.
    #[arg(long, value_name = "NAME")]
    pub jwt_cookie: Option<String>,

    /// PEM certificate chain (leaf first) for --listen: with --tls-key, the listener speaks TLS
    /// 1.2/1.3 only (HTTPS, and frames inside TLS). A reload re-reads the files for new
    /// handshakes; open connections keep theirs. See docs/SECURITY.md.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA certificates: clients must present a certificate they issued (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Share one hub with other nodes through Redis Streams:
    /// redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss:// for TLS, or
    /// redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB] to follow the
    /// master that Sentinel names through failovers (the credentials are the data nodes'). Also
    /// read from SSELOOP_BACKPLANE; the password is never logged. Ids then come from Redis and
    /// every node delivers every event. See docs/SCALING.md.
    #[arg(long, value_name = "URL",
          value_parser = parse_backplane)]
    pub backplane: Option<RedisUrl>,

    /// PEM CA certificates trusted for a rediss:// backplane instead of the system's
    /// (/etc/ssl/certs/ca-certificates.crt). The server's name is always verified.
    #[arg(long, value_name = "FILE")]
    pub backplane_ca: Option<std::path::PathBuf>,

    /// Password of the sentinels of a redis+sentinel:// backplane (`requirepass` in their
    /// configuration), kept apart from the data nodes' credentials in the URL.
    #[arg(long, value_name = "PASSWORD")]
    pub backplane_sentinel_password: Option<String>,

    /// File whose first line is the sentinels' password: the recommended form.
    #[arg(long, value_name = "FILE")]
    pub backplane_sentinel_password_file: Option<std::path::PathBuf>,

    /// Acknowledge a publish only once this many Redis replicas hold it (`WAIT`), and deliver
    /// an event only once they do, so that a failover to a replica loses nothing acknowledged
    /// and shows nothing it erases. 0: Redis's own reply is the acknowledgement. With no replica
    /// left, publishes are refused until one returns. Every node must use the same value
    /// (0..=16; docs/SCALING.md).
    #[arg(long, default_value = "0", value_parser = number_in(ranges::BACKPLANE_MIN_REPLICAS))]
    pub backplane_min_replicas: u64,

    /// Presence across nodes: each node's part in Redis expires this many seconds after its
    /// last write (refreshed every third of it), so a node that died without a word stops
    /// counting within it; shorter costs more refresh writes (3..=3600; docs/API.md).
    #[arg(long, default_value = "10", value_parser = number_in(ranges::BACKPLANE_PRESENCE_TTL_SECS))]
    pub backplane_presence_ttl_secs: u64,

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
    #[arg(long, value_name = "LEVEL", value_parser = parse::parse_level)]
    pub log_level: Option<log::LevelFilter>,

    /// Write one line per finished request or stream (target `sseloop::access`, at INFO): peer,
    /// method, path without the query, topics, status, bytes, duration, JWT subject, and the close
    /// reason of streams. A reload applies a change to connections accepted from then on.
    #[arg(long)]
    pub access_log: bool,

    /// Also serve /metrics, /healthz and /readyz (only those) on this internal address
    /// (HOST:PORT), never subject to --max-connections or authorization; at most 64 connections
    /// at once there. A restart applies a change.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Set SO_REUSEPORT on the listener so several nodes (one per core) share the address; the
    /// kernel spreads connections among them. With --backplane they form one hub.
    #[arg(long)]
    pub reuse_port: bool,

    /// Most connections (streams and requests) one client address may hold open; past it a
    /// connection gets 429 with Retry-After (a GOAWAY CONNECTION_LIMITED in frame mode) and is
    /// closed. IPv6 addresses are grouped by --ipv6-prefix (0 = off; 0..=16777216).
    #[arg(long, default_value = "0", value_parser = count_in(ranges::MAX_CONNECTIONS_PER_IP))]
    pub max_connections_per_ip: usize,

    /// Prefix length grouping IPv6 clients into one address for the per-address limits (a
    /// host usually holds a whole /64; 1..=128).
    #[arg(long, default_value = "64", value_parser = number_in(ranges::IPV6_PREFIX))]
    pub ipv6_prefix: u64,

    /// A proxy (CIDR block or address; repeatable or comma-separated) whose X-Forwarded-For and
    /// Forwarded headers name the client for the per-address limits. Without it those headers
    /// are ignored: anyone can forge them.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = Cidr::parse)]
    pub trusted_proxy: Vec<Cidr>,

    /// Publishes per second allowed to one publisher (the JWT subject, else the client
    /// address), as R or R/s; past it a publish gets 429 with Retry-After (ERROR RATE_LIMITED in
    /// frame mode) and nothing is published (0 = off; 0..=1000000).
    #[arg(long, default_value = "0", value_name = "R[/s]",
          value_parser = rate_in(ranges::PUBLISH_RATE))]
    pub publish_rate: u64,

    /// Publishes one publisher may make at once before --publish-rate applies (the token
    /// bucket's size; 0 = one second's worth of --publish-rate; 0..=1000000).
    #[arg(long, default_value = "0", value_parser = number_in(ranges::PUBLISH_BURST))]
    pub publish_burst: u64,

    /// Most topics and patterns one stream may subscribe to, SUBSCRIBE frames included; past it
    /// the request gets 400 (ERROR TOO_MANY_SUBSCRIPTIONS in frame mode) and nothing of it is
    /// subscribed (0 = off, which leaves the built-in 64 per request; 0..=64).
    #[arg(long, default_value = "0",
          value_parser = count_in(ranges::MAX_SUBSCRIPTIONS_PER_CONN))]
    pub max_subscriptions_per_conn: usize,

    /// New connections per second allowed from one client address (bursts of as many); past
    /// it a connection is accepted, answered 429 with Retry-After and closed (0 = off;
    /// 0..=1000000).
    #[arg(long, default_value = "0", value_name = "R[/s]",
          value_parser = rate_in(ranges::MAX_NEW_CONNECTIONS_RATE))]
    pub max_new_connections_rate: u64,
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

/// The version and the git commit the crate was built from, e.g. `0.1.0 (commit 004d731a2b3c)`
/// (`--version`, the start-up line).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SSELOOP_COMMIT"),
    ")"
);
/// The git commit alone (`unknown` when built outside a checkout).
pub const COMMIT: &str = env!("SSELOOP_COMMIT");

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
            .field("admin_token", &redact(&self.admin_token))
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
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("backplane", &self.backplane)
            .field("backplane_ca", &self.backplane_ca)
            .field(
                "backplane_sentinel_password",
                &redact(&self.backplane_sentinel_password),
            )
            .field(
                "backplane_sentinel_password_file",
                &self.backplane_sentinel_password_file,
            )
            .field("backplane_min_replicas", &self.backplane_min_replicas)
            .field(
                "backplane_presence_ttl_secs",
                &self.backplane_presence_ttl_secs,
            )
            .field("backplane_prefix", &self.backplane_prefix)
            .field("backplane_timeout_ms", &self.backplane_timeout_ms)
            .field("backplane_retention", &self.backplane_retention)
            .field("idempotency_window_secs", &self.idempotency_window_secs)
            .field("reuse_port", &self.reuse_port)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("trusted_proxy", &self.trusted_proxy)
            .field("publish_rate", &self.publish_rate)
            .field("publish_burst", &self.publish_burst)
            .field(
                "max_subscriptions_per_conn",
                &self.max_subscriptions_per_conn,
            )
            .field("max_new_connections_rate", &self.max_new_connections_rate)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("access_log", &self.access_log)
            .field("metrics_listen", &self.metrics_listen)
            .field("config", &self.config)
            .field("publish_token_file", &self.publish_token_file)
            .field("admin_token_file", &self.admin_token_file)
            .field("subscribe_token_file", &self.subscribe_token_file)
            .field("jwt_secret_file", &self.jwt_secret_file)
            .finish()
    }
}

#[cfg(test)]
mod tests;
