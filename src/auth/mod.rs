//! Authorization: who may subscribe to and publish on which topics.
//!
//! Two modes, never both (the configuration refuses the mix): the static `--subscribe-token` /
//! `--publish-token` (all or nothing, checked in `conn`), or JWT ([`Auth`], built once from the
//! configuration). With JWT, every stream and every publish needs a token whose `sseloop` claim
//! covers what is asked ([`pattern::Pattern::covers`]); a stream ends when its token expires.
//!
//! Owns: [`pattern`] (topic patterns as a pure concept), [`jwt`] (verification), the token
//! sources of a request, the failure reasons (one metric label and one `error_description`
//! each) and the 401 challenge. The connection code only asks and answers.

pub mod jwt;
pub mod pattern;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use jwt::{Grants, KeyError, Verifier, VerifyOptions};
pub use pattern::{Pattern, PatternError};

use crate::config::Config;

/// The event that ends an SSE stream whose token expired. It has no `id:`, so the browser keeps
/// the id of the last real event and a reconnect (with a fresh token) resumes from there.
pub const REAUTH_EVENT: &[u8] = b"event: sseloop-reauth\ndata: {\"reason\":\"token_expired\"}\n\n";

/// Why a request was refused authorization. Each reason is one label of
/// `sseloop_auth_failures_total` and one `error_description`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token was presented.
    Missing,
    /// A static token that does not match (static-token mode).
    WrongToken,
    /// Not a JWT at all (not three base64url parts, bad JSON header, ...).
    Malformed,
    /// The signature does not verify with the configured key.
    InvalidSignature,
    /// `alg` is `none`, unknown, or of another family than the configured key.
    WrongAlgorithm,
    /// `exp` (plus leeway) has passed.
    Expired,
    /// `nbf` (minus leeway) is still ahead.
    NotYetValid,
    /// `iss` missing or not `--jwt-issuer`.
    WrongIssuer,
    /// `aud` missing or without `--jwt-audience` (or present when none is configured).
    WrongAudience,
    /// `exp` missing, or the `sseloop` claim is not lists of valid patterns.
    BadClaims,
    /// A valid token that does not cover a requested topic (403).
    ForbiddenTopic,
    /// A valid token without `"sseloop":{"admin":true}`, asking for the server's figures (403).
    NotAdmin,
    /// A valid token whose subject an operator banned (`POST /api/v1/disconnect`, 403).
    Banned,
}

impl AuthFailure {
    /// Every reason, in metric order.
    pub const ALL: [AuthFailure; 13] = [
        AuthFailure::Missing,
        AuthFailure::WrongToken,
        AuthFailure::Malformed,
        AuthFailure::InvalidSignature,
        AuthFailure::WrongAlgorithm,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::WrongIssuer,
        AuthFailure::WrongAudience,
        AuthFailure::BadClaims,
        AuthFailure::ForbiddenTopic,
        AuthFailure::NotAdmin,
        AuthFailure::Banned,
    ];

    /// The `reason` label of `sseloop_auth_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::WrongToken => "wrong_token",
            AuthFailure::Malformed => "malformed",
            AuthFailure::InvalidSignature => "invalid_signature",
            AuthFailure::WrongAlgorithm => "wrong_algorithm",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::BadClaims => "bad_claims",
            AuthFailure::ForbiddenTopic => "forbidden_topic",
            AuthFailure::NotAdmin => "not_admin",
            AuthFailure::Banned => "banned",
        }
    }

    /// Index into [`AuthFailure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `error_description` of the challenge: short, fixed text (never the token).
    pub fn description(self) -> &'static str {
        match self {
            AuthFailure::Missing => "no token",
            AuthFailure::WrongToken => "token not accepted",
            AuthFailure::Malformed => "malformed token",
            AuthFailure::InvalidSignature => "invalid signature",
            AuthFailure::WrongAlgorithm => "algorithm not accepted",
            AuthFailure::Expired => "token expired",
            AuthFailure::NotYetValid => "token not yet valid",
            AuthFailure::WrongIssuer => "wrong issuer",
            AuthFailure::WrongAudience => "wrong audience",
            AuthFailure::BadClaims => "invalid claims",
            AuthFailure::ForbiddenTopic => "token does not cover the topic",
            AuthFailure::NotAdmin => "token does not grant admin",
            AuthFailure::Banned => "subject banned",
        }
    }

    /// The `WWW-Authenticate` value of a 401 for this reason (RFC 6750 §3).
    pub fn challenge(self) -> &'static str {
        match self {
            AuthFailure::Missing => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", error_description=\"no token\""
            }
            AuthFailure::WrongToken => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"token not accepted\""
            }
            AuthFailure::Malformed => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"malformed token\""
            }
            AuthFailure::InvalidSignature => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"invalid signature\""
            }
            AuthFailure::WrongAlgorithm => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"algorithm not accepted\""
            }
            AuthFailure::Expired => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"token expired\""
            }
            AuthFailure::NotYetValid => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"token not yet valid\""
            }
            AuthFailure::WrongIssuer => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"wrong issuer\""
            }
            AuthFailure::WrongAudience => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"wrong audience\""
            }
            AuthFailure::BadClaims => {
                "Bearer realm=\"sseloop\", error=\"invalid_token\", \
                 error_description=\"invalid claims\""
            }
            AuthFailure::ForbiddenTopic => {
                "Bearer realm=\"sseloop\", error=\"insufficient_scope\", \
                 error_description=\"token does not cover the topic\""
            }
            AuthFailure::NotAdmin => {
                "Bearer realm=\"sseloop\", error=\"insufficient_scope\", \
                 error_description=\"token does not grant admin\""
            }
            AuthFailure::Banned => {
                "Bearer realm=\"sseloop\", error=\"insufficient_scope\", \
                 error_description=\"subject banned\""
            }
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// A start-up failure of the JWT configuration.
#[derive(Debug)]
pub enum AuthSetupError {
    /// The key file could not be read.
    KeyFile(String),
    /// The key is unusable.
    Key(KeyError),
}

impl fmt::Display for AuthSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthSetupError::KeyFile(msg) => write!(f, "--jwt-public-key: {msg}"),
            AuthSetupError::Key(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AuthSetupError {}

/// The JWT side of the server, built once from the configuration. Without a key it is inert.
#[derive(Debug, Default)]
pub struct Auth {
    verifier: Option<Verifier>,
    cookie: Option<String>,
    leeway: Duration,
}

/// Where the token of a request was found, in order of precedence.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenSources<'a> {
    /// The `Authorization` header value.
    pub authorization: Option<&'a [u8]>,
    /// The `access_token` query parameter.
    pub query: Option<&'a str>,
    /// The `Cookie` header value(s).
    pub cookie: Option<&'a [u8]>,
}

impl Auth {
    /// Builds the verifier from `--jwt-secret` or `--jwt-public-key` (reads the key file).
    pub fn from_config(config: &Config) -> Result<Auth, AuthSetupError> {
        let options = VerifyOptions {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_secs: config.jwt_leeway,
        };
        let verifier = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(secret), _) => Some(
                Verifier::from_secret(secret.as_bytes(), &options).map_err(AuthSetupError::Key)?,
            ),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| AuthSetupError::KeyFile(format!("{}: {e}", path.display())))?;
                Some(Verifier::from_public_key_pem(&pem, &options).map_err(AuthSetupError::Key)?)
            }
            (None, None) => None,
        };
        Ok(Auth {
            verifier,
            cookie: config.jwt_cookie.clone(),
            leeway: Duration::from_secs(config.jwt_leeway),
        })
    }

    /// Whether JWT authorization is on.
    pub fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// The authorization mode in force, as the console shows it: `none`, `static tokens`, or
    /// `JWT (<family>)` with the key's algorithm family. Never anything secret.
    pub fn mode(&self, config: &Config) -> &'static str {
        match self.verifier.as_ref().map(Verifier::family) {
            Some("HMAC") => "JWT (HMAC)",
            Some("EC") => "JWT (EC)",
            Some("EdDSA") => "JWT (EdDSA)",
            Some(_) => "JWT (RSA)",
            None if config.publish_token.is_some() || config.subscribe_token.is_some() => {
                "static tokens"
            }
            None => "none",
        }
    }

    /// The token of a subscribe request: `Authorization: Bearer`, else `access_token`, else the
    /// configured cookie.
    pub fn subscribe_token<'a>(&self, sources: TokenSources<'a>) -> Option<&'a [u8]> {
        sources
            .authorization
            .and_then(crate::http::bearer_token)
            .or(sources.query.map(str::as_bytes))
            .or_else(|| {
                let name = self.cookie.as_deref()?;
                cookie_value(sources.cookie?, name)
            })
    }

    /// Verifies a token (`None`: none was presented).
    pub fn verify(&self, token: Option<&[u8]>) -> Result<Grants, AuthFailure> {
        let verifier = self.verifier.as_ref().ok_or(AuthFailure::Malformed)?;
        let token = token.ok_or(AuthFailure::Missing)?;
        verifier.verify(token)
    }

    /// When a stream opened with `grants` must end: `exp` plus the leeway, the same instant from
    /// which a reconnect with that token is refused. `now_wall` is the wall clock.
    pub fn time_left(&self, grants: &Grants, now_wall: SystemTime) -> Duration {
        let now = now_wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(grants.expires_at)
            .saturating_add(self.leeway)
            .saturating_sub(now)
    }
}

/// Checks that `grants` allows subscribing to every one of `wanted` (patterns or topics).
pub fn check_subscribe<S: AsRef<str>>(grants: &Grants, wanted: &[S]) -> Result<(), AuthFailure> {
    let all = wanted.iter().all(|w| {
        Pattern::parse(w.as_ref()).is_ok_and(|p| pattern::any_covers(&grants.subscribe, &p))
    });
    if all {
        Ok(())
    } else {
        Err(AuthFailure::ForbiddenTopic)
    }
}

/// Checks that `grants` allows publishing to every one of `topics`.
pub fn check_publish<S: AsRef<str>>(grants: &Grants, topics: &[S]) -> Result<(), AuthFailure> {
    if topics
        .iter()
        .all(|t| pattern::any_matches(&grants.publish, t.as_ref()))
    {
        Ok(())
    } else {
        Err(AuthFailure::ForbiddenTopic)
    }
}

/// The value of cookie `name` in `Cookie` header value(s) (`a=1; b=2`, RFC 6265 §5.4); double
/// quotes around the value are removed.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header
        .split(|&b| b == b';')
        .map(|pair| pair.trim_ascii())
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = (&pair[..eq], &pair[eq + 1..]);
            (key.trim_ascii() == name.as_bytes()).then(|| {
                let value = value.trim_ascii();
                value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value)
            })
        })
        .filter(|v| !v.is_empty())
}

/// Adds a subscription (topic or pattern) to a request's list: validated, deduplicated, capped at
/// `limit` entries. `Ok(false)` when the list already has it. The query parser and SUBSCRIBE frames use this, so
/// wildcards reach the authorization check (and, later, the hub) the same way from both.
pub fn push_subscription(
    list: &mut Vec<String>,
    wanted: &str,
    limit: usize,
) -> Result<bool, SubscriptionError> {
    if Pattern::parse(wanted).is_err() {
        return Err(SubscriptionError::Invalid);
    }
    if list.iter().any(|t| t == wanted) {
        return Ok(false);
    }
    if list.len() >= limit {
        return Err(SubscriptionError::TooMany);
    }
    list.push(wanted.to_string());
    Ok(true)
}

/// Why a subscription cannot join a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionError {
    /// Neither a topic nor a pattern.
    Invalid,
    /// The list is full.
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(subscribe: &[&str], publish: &[&str]) -> Grants {
        let parse = |v: &[&str]| v.iter().map(|s| Pattern::parse(s).unwrap()).collect();
        Grants {
            subscribe: parse(subscribe),
            publish: parse(publish),
            ..Grants::default()
        }
    }

    #[test]
    fn coverage_of_requests() {
        let g = grants(&["news/*"], &["chat/*", "alerts"]);
        assert_eq!(check_subscribe(&g, &["news/a"]), Ok(()));
        assert_eq!(check_subscribe(&g, &["news/*"]), Ok(()));
        assert_eq!(
            check_subscribe(&g, &["news/a", "sport"]),
            Err(AuthFailure::ForbiddenTopic)
        );
        assert_eq!(
            check_subscribe(&g, &["*"]),
            Err(AuthFailure::ForbiddenTopic)
        );
        assert_eq!(check_publish(&g, &["chat/x", "alerts"]), Ok(()));
        assert_eq!(
            check_publish(&g, &["chat/x", "news/a"]),
            Err(AuthFailure::ForbiddenTopic)
        );
        assert_eq!(
            check_publish(&grants(&[], &[]), &["a"]),
            Err(AuthFailure::ForbiddenTopic)
        );
    }

    #[test]
    fn time_left_saturates() {
        let auth = Auth {
            leeway: Duration::from_secs(5),
            ..Auth::default()
        };
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let g = |exp| Grants {
            expires_at: exp,
            ..Grants::default()
        };
        assert_eq!(auth.time_left(&g(100), at(90)), Duration::from_secs(15));
        assert_eq!(auth.time_left(&g(100), at(200)), Duration::ZERO);
        assert!(auth.time_left(&g(u64::MAX), at(0)) > Duration::from_secs(1 << 62));
    }

    #[test]
    fn cookies() {
        let h = b"a=1; tok=\"abc\"; other=x=y";
        assert_eq!(cookie_value(h, "tok"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(h, "other"), Some(&b"x=y"[..]));
        assert_eq!(cookie_value(h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie_value(h, "to"), None);
        assert_eq!(cookie_value(b"tok=", "tok"), None);
        assert_eq!(cookie_value(b"", "tok"), None);
    }

    #[test]
    fn token_precedence() {
        let auth = Auth {
            cookie: Some("c".into()),
            ..Auth::default()
        };
        let all = TokenSources {
            authorization: Some(b"Bearer h"),
            query: Some("q"),
            cookie: Some(b"c=k"),
        };
        assert_eq!(auth.subscribe_token(all), Some(&b"h"[..]));
        let no_header = TokenSources {
            authorization: None,
            ..all
        };
        assert_eq!(auth.subscribe_token(no_header), Some(&b"q"[..]));
        let cookie_only = TokenSources {
            query: None,
            ..no_header
        };
        assert_eq!(auth.subscribe_token(cookie_only), Some(&b"k"[..]));
        assert_eq!(Auth::default().subscribe_token(cookie_only), None);
    }

    #[test]
    fn subscription_lists() {
        let mut list = Vec::new();
        assert_eq!(push_subscription(&mut list, "news/*", 2), Ok(true));
        assert_eq!(push_subscription(&mut list, "news/*", 2), Ok(false));
        assert_eq!(
            push_subscription(&mut list, "a*b", 2),
            Err(SubscriptionError::Invalid)
        );
    }

    #[test]
    fn labels_are_distinct_and_indexed() {
        for (i, f) in AuthFailure::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
            assert!(f.challenge().contains(f.description()));
        }
        let mut labels: Vec<_> = AuthFailure::ALL.iter().map(|f| f.label()).collect();
        labels.dedup();
        assert_eq!(labels.len(), AuthFailure::ALL.len());
    }
}
