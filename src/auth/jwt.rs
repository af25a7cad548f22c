//! JWT verification: one key, configured at start, fixes the accepted algorithm family; a token
//! that passes becomes [`Grants`] (who, what it may subscribe to and publish, until when).
//!
//! The `jsonwebtoken` crate (RustCrypto backend, pure Rust) checks signature, `exp`, `nbf`, `iss`
//! and `aud`. What this module adds: the algorithm list comes from the key, never from the token
//! (so `alg: none` and an HS256 token signed with an RSA public key as its secret are refused as
//! wrong algorithms), `exp` is required, and the `sseloop` claim must hold valid patterns.

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::pattern::Pattern;
use super::AuthFailure;

/// Shortest HMAC secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash
/// (256 bits for HS256); a shorter one can be brute-forced from any token.
pub const MIN_SECRET_BYTES: usize = 32;

/// Most patterns per list in a token's `sseloop` claim: bounds the per-request coverage check.
pub const MAX_GRANT_PATTERNS: usize = 256;

/// The checks besides the signature.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required member of `aud`, if any. Without it, a token that carries an `aud` is refused
    /// (it was meant for someone else).
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
}

/// A key the server cannot use.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    ShortSecret,
    /// Not a PEM RSA, EC (P-256 / P-384) or Ed25519 public key.
    UnknownPem,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::ShortSecret => write!(
                f,
                "--jwt-secret must be at least {MIN_SECRET_BYTES} bytes (e.g. openssl rand -hex 32)"
            ),
            KeyError::UnknownPem => f.write_str(
                "--jwt-public-key: not a PEM RSA, EC (P-256/P-384) or Ed25519 public key",
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// What a verified token allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// The `sub` claim, handed to the publish hook.
    pub subject: Option<String>,
    /// Patterns the holder may subscribe to.
    pub subscribe: Vec<Pattern>,
    /// Patterns covering every topic the holder may publish to.
    pub publish: Vec<Pattern>,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// `"sseloop":{"admin":true}`: the holder may read the server's figures (`/stats`), which
    /// name every topic.
    pub admin: bool,
    /// `"sseloop":{"presence":[…]}`: topics whose subscribers' subjects the holder may see
    /// (the server API's presence, join/leave notices).
    pub presence: Vec<Pattern>,
}

/// The claims read from a token; unknown ones are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    sseloop: SseloopClaim,
}

#[derive(Deserialize, Default)]
struct SseloopClaim {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    presence: Vec<String>,
}

/// Verifies tokens against one key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    // Hand-written: the key (a secret, for HS) never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for HS256/384/512 tokens signed with `secret`.
    pub fn from_secret(secret: &[u8], options: &VerifyOptions) -> Result<Verifier, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret);
        }
        let algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        Ok(Verifier::new(
            DecodingKey::from_secret(secret),
            algorithms,
            options,
        ))
    }

    /// A verifier for a PEM public key: RSA (RS256/384/512), EC P-256 or P-384 (ES256/384) or
    /// Ed25519 (EdDSA).
    pub fn from_public_key_pem(pem: &[u8], options: &VerifyOptions) -> Result<Verifier, KeyError> {
        let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            let rs = vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
            (key, rs)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // The curve decides which of the two verifies; a mismatch fails as a bad signature.
            (key, vec![Algorithm::ES256, Algorithm::ES384])
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, vec![Algorithm::EdDSA])
        } else {
            return Err(KeyError::UnknownPem);
        };
        Ok(Verifier::new(key, algorithms, options))
    }

    fn new(key: DecodingKey, algorithms: Vec<Algorithm>, options: &VerifyOptions) -> Verifier {
        // Pin the backend: with another crate enabling a second one, jsonwebtoken would otherwise
        // panic at the first verification. Already installed (by us, earlier) is fine.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = algorithms;
        validation.leeway = options.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &options.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &options.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => {
                validation.aud = None;
            }
        }
        validation.set_required_spec_claims(&required);
        Verifier { key, validation }
    }

    /// The algorithms this key accepts.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.validation.algorithms
    }

    /// The family of the key's algorithms, as the console shows it: `HMAC`, `RSA`, `EC` or
    /// `EdDSA` (never anything about the key itself).
    pub fn family(&self) -> &'static str {
        match self.validation.algorithms.first() {
            Some(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => "HMAC",
            Some(Algorithm::ES256 | Algorithm::ES384) => "EC",
            Some(Algorithm::EdDSA) => "EdDSA",
            _ => "RSA",
        }
    }

    /// Verifies `token` (the compact serialization) and reads its grants.
    pub fn verify(&self, token: &[u8]) -> Result<Grants, AuthFailure> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        // RFC 7519 §4.1.4: the token is expired from `exp` on (the crate still accepts it
        // during that second). This is also the instant the stream timer uses, so a stream
        // ended for expiry cannot reconnect with the same token.
        let now = jsonwebtoken::get_current_timestamp();
        if now >= claims.exp.saturating_add(self.validation.leeway) {
            return Err(AuthFailure::Expired);
        }
        let parse_all = |list: Vec<String>| -> Result<Vec<Pattern>, AuthFailure> {
            if list.len() > MAX_GRANT_PATTERNS {
                return Err(AuthFailure::BadClaims);
            }
            list.iter()
                .map(|s| Pattern::parse(s).map_err(|_| AuthFailure::BadClaims))
                .collect()
        };
        Ok(Grants {
            subject: claims.sub,
            subscribe: parse_all(claims.sseloop.subscribe)?,
            publish: parse_all(claims.sseloop.publish)?,
            expires_at: claims.exp,
            admin: claims.sseloop.admin,
            presence: parse_all(claims.sseloop.presence)?,
        })
    }
}

/// Maps the crate's error to a failure reason (the metric label and the `error_description`).
fn classify(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::InvalidSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthFailure::WrongAlgorithm
        }
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => AuthFailure::WrongIssuer,
            "aud" => AuthFailure::WrongAudience,
            _ => AuthFailure::BadClaims,
        },
        ErrorKind::InvalidClaimFormat(_) => AuthFailure::BadClaims,
        // A header whose `alg` is no algorithm at all (`none`, say) fails to deserialize: say so
        // rather than "malformed", since that is the attack it usually is.
        ErrorKind::Json(e) if e.to_string().contains("unknown variant") => {
            AuthFailure::WrongAlgorithm
        }
        ErrorKind::Json(_) => AuthFailure::BadClaims,
        _ => AuthFailure::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn verifier(options: VerifyOptions) -> Verifier {
        Verifier::from_secret(SECRET, &options).unwrap()
    }

    #[test]
    fn grants_are_read() {
        let token = hs(&json!({
            "sub": "alice", "exp": now() + 60,
            "sseloop": {"subscribe": ["news/*", "a"], "publish": ["chat/alice"]}
        }));
        let g = verifier(VerifyOptions::default())
            .verify(token.as_bytes())
            .unwrap();
        assert_eq!(g.subject.as_deref(), Some("alice"));
        let names = |v: &[Pattern]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&g.subscribe), ["news/*", "a"]);
        assert_eq!(names(&g.publish), ["chat/alice"]);
        assert_eq!(g.expires_at, now() + 60);
        assert!(!g.admin, "admin only when the claim says so");
        let admin = hs(&json!({"exp": now() + 60, "sseloop": {"admin": true}}));
        let g = verifier(VerifyOptions::default())
            .verify(admin.as_bytes())
            .unwrap();
        assert!(g.admin && g.subscribe.is_empty());
        let not_bool = hs(&json!({"exp": now() + 60, "sseloop": {"admin": "yes"}}));
        assert_eq!(
            verifier(VerifyOptions::default()).verify(not_bool.as_bytes()),
            Err(AuthFailure::BadClaims)
        );
        assert_eq!(verifier(VerifyOptions::default()).family(), "HMAC");
    }

    #[test]
    fn refusals_are_classified() {
        let v = verifier(VerifyOptions {
            issuer: Some("me".into()),
            audience: Some("sseloop".into()),
            leeway_secs: 0,
        });
        let base = || json!({"exp": now() + 60, "iss": "me", "aud": "sseloop"});
        assert!(v.verify(hs(&base()).as_bytes()).is_ok());
        let with = |k: &str, val: serde_json::Value| {
            let mut c = base();
            c[k] = val;
            hs(&c)
        };
        let cases = [
            (with("exp", json!(now() - 10)), AuthFailure::Expired),
            (with("nbf", json!(now() + 100)), AuthFailure::NotYetValid),
            (with("iss", json!("you")), AuthFailure::WrongIssuer),
            (with("aud", json!("other")), AuthFailure::WrongAudience),
            (
                with("sseloop", json!({"subscribe": ["a*b"]})),
                AuthFailure::BadClaims,
            ),
            (
                with("sseloop", json!({"publish": "notalist"})),
                AuthFailure::BadClaims,
            ),
            (
                hs(&json!({"iss": "me", "aud": "sseloop"})),
                AuthFailure::BadClaims,
            ),
            (
                hs(&json!({"exp": now() + 60, "aud": "sseloop"})),
                AuthFailure::WrongIssuer,
            ),
            ("not a token".to_string(), AuthFailure::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(token.as_bytes()), Err(want), "{token}");
        }
    }

    #[test]
    fn audience_is_refused_when_none_is_configured() {
        let v = verifier(VerifyOptions::default());
        let token = hs(&json!({"exp": now() + 60, "aud": "elsewhere"}));
        assert_eq!(v.verify(token.as_bytes()), Err(AuthFailure::WrongAudience));
    }

    #[test]
    fn alg_none_and_wrong_key_are_refused() {
        let v = verifier(VerifyOptions::default());
        let claims = json!({"exp": now() + 60});
        let body = hs(&claims);
        let payload = body.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(v.verify(none.as_bytes()), Err(AuthFailure::WrongAlgorithm));
        let other = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
        )
        .unwrap();
        assert_eq!(
            v.verify(other.as_bytes()),
            Err(AuthFailure::InvalidSignature)
        );
    }

    #[test]
    fn short_secrets_and_junk_pem_are_refused() {
        let o = VerifyOptions::default();
        assert_eq!(
            Verifier::from_secret(b"short", &o).err(),
            Some(KeyError::ShortSecret)
        );
        assert_eq!(
            Verifier::from_public_key_pem(b"-----BEGIN NOTHING-----\n", &o).err(),
            Some(KeyError::UnknownPem)
        );
        assert!(!format!("{:?}", verifier(o)).contains("0123"));
    }
}
