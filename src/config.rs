//! Options, their defaults and their validation; the CLI (`--help`) is generated from this struct.
//!
//! Validation that protects operators lives here, not in the loop: the server refuses to publish
//! openly on a non-loopback address unless told so explicitly.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use clap::Parser;

/// Every option of the server. `Config::default()` is what the binary runs with no flag.
#[derive(Parser, Clone)]
#[command(
    name = "sseloop",
    version,
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
    /// Address to listen on (HOST:PORT; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Milliseconds of silence after which a stream gets a heartbeat comment.
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: u64,

    /// Reconnection delay sent to clients in the `retry:` field, in milliseconds.
    #[arg(long, default_value_t = 3_000)]
    pub retry_ms: u64,

    /// Events retained per topic for Last-Event-ID resume (0 disables history).
    #[arg(long, default_value_t = 1024)]
    pub history: usize,

    /// Bearer token required to publish (also read from SSELOOP_PUBLISH_TOKEN).
    #[arg(long, env = "SSELOOP_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Bearer token (or access_token query parameter) required to subscribe
    /// (also read from SSELOOP_SUBSCRIBE_TOKEN).
    #[arg(long, env = "SSELOOP_SUBSCRIBE_TOKEN", hide_env_values = true)]
    pub subscribe_token: Option<String>,

    /// Allow publishing without a token on a non-loopback listen address.
    #[arg(long)]
    pub open_publish: bool,

    /// Value of Access-Control-Allow-Origin on every response.
    #[arg(long, default_value = "*")]
    pub cors_origin: String,

    /// Largest accepted publish body (bytes; k/M/G suffixes are binary multiples).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub max_body: usize,

    /// Most simultaneous client connections [default: RLIMIT_NOFILE minus a reserve].
    #[arg(long)]
    pub max_connections: Option<usize>,

    /// Time given to connections to finish when shutting down, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub grace_ms: u64,

    /// A request head must be complete this many milliseconds after its first byte (or after
    /// accept); a request body may not stall longer than this between reads.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// A keep-alive connection with no request in progress is closed after this many milliseconds.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// A connection whose socket accepts no byte of pending output for this many milliseconds is
    /// closed.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_stall_ms: u64,

    /// Most output bytes queued for one connection; a subscriber past it is a slow consumer and is
    /// disconnected (it can resume with Last-Event-ID).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub max_queue_bytes: usize,

    /// Largest frame payload accepted in frame mode (bytes; k/M/G suffixes).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub max_frame: usize,

    /// HMAC secret (at least 32 bytes) for HS256/384/512 JWTs: turns on per-topic JWT
    /// authorization (also read from SSELOOP_JWT_SECRET). Not with the static tokens.
    #[arg(long, env = "SSELOOP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

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
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("max_frame", &self.max_frame)
            .field("jwt_secret", &redact(&self.jwt_secret))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("jwt_cookie", &self.jwt_cookie)
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
    /// A JWT option the combination refuses (see the message).
    Jwt(&'static str),
    /// The JWT key cannot be read or used.
    JwtKey(String),
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
            ConfigError::Jwt(why) => f.write_str(why),
            ConfigError::JwtKey(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks the combination of options.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
}
