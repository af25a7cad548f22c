//! What the server refuses to run with: [`ConfigError`], each option against its range, and the
//! combinations that would be unsafe or meaningless (open publishing on a public address, mixed
//! authorization modes, a queue smaller than the largest event).

use std::fmt;
use std::net::SocketAddr;

use super::{ranges, Config, OptionRange, EVENT_OVERHEAD_MAX};

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
    /// A TLS option the combination refuses (see the message).
    Tls(&'static str),
    /// The TLS certificate, key or CA files cannot be used (see the message).
    TlsFiles(String),
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
            ConfigError::JwtKey(why) | ConfigError::TlsFiles(why) => f.write_str(why),
            ConfigError::Backplane(why) | ConfigError::Tls(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Every numeric option with its range (the table [`Config::validate`] checks).
    pub fn numeric_options(&self) -> [(OptionRange, u64); 26] {
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
            (BACKPLANE_MIN_REPLICAS, self.backplane_min_replicas),
            (
                BACKPLANE_PRESENCE_TTL_SECS,
                self.backplane_presence_ttl_secs,
            ),
            (IDEMPOTENCY_WINDOW_SECS, self.idempotency_window_secs),
            (MAX_CONNECTIONS_PER_IP, n(self.max_connections_per_ip)),
            (IPV6_PREFIX, self.ipv6_prefix),
            (PUBLISH_RATE, self.publish_rate),
            (PUBLISH_BURST, self.publish_burst),
            (
                MAX_SUBSCRIPTIONS_PER_CONN,
                n(self.max_subscriptions_per_conn),
            ),
            (MAX_NEW_CONNECTIONS_RATE, self.max_new_connections_rate),
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
        if self.admin_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken("--admin-token"));
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
        let sentinel = self
            .backplane
            .as_ref()
            .is_some_and(|b| b.sentinel.is_some());
        if self.backplane_sentinel_password.is_some() && !sentinel {
            return Err(ConfigError::Backplane(
                "--backplane-sentinel-password needs a redis+sentinel:// --backplane",
            ));
        }
        if self.backplane_min_replicas > 0 && self.backplane.is_none() {
            return Err(ConfigError::Backplane(
                "--backplane-min-replicas needs --backplane",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Tls("--tls-cert and --tls-key go together"));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError::Tls(
                "--tls-client-ca needs --tls-cert and --tls-key",
            ));
        }
        if self.backplane_ca.is_some() && !self.backplane.as_ref().is_some_and(|b| b.tls) {
            return Err(ConfigError::Tls(
                "--backplane-ca needs a rediss:// --backplane",
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
