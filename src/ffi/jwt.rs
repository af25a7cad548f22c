//! Setters for the JWT authorization options of `sseloop_config_t` (`--jwt-*`). Like the other
//! setters they check one value; the combination (JWT and static tokens are exclusive, a cookie
//! needs a specific CORS origin) and the key itself are checked by `sseloop_new`.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;

use super::config::{apply, opt_str, sseloop_config_t};
use super::error::{Error, SSELOOP_EINTERNAL, SSELOOP_EINVAL};
use crate::config::MAX_LEEWAY_SECS;

ffi_fn! {
    /// `--jwt-secret`: the HMAC secret (at least 32 bytes) of HS256/384/512 tokens; NULL removes
    /// it. Turns JWT authorization on. The string is copied.
    fn sseloop_config_set_jwt_secret(config: *mut sseloop_config_t, secret: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.jwt_secret = unsafe { opt_str(secret, "secret") }?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--jwt-public-key`: path of a PEM public key (RSA, EC P-256/P-384 or Ed25519); NULL
    /// removes it. The file is read by `sseloop_new`. Turns JWT authorization on.
    fn sseloop_config_set_jwt_public_key(config: *mut sseloop_config_t, path: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.jwt_public_key = unsafe { opt_str(path, "path") }?.map(PathBuf::from);
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--jwt-issuer`: the required `iss` claim; NULL removes the check.
    fn sseloop_config_set_jwt_issuer(config: *mut sseloop_config_t, issuer: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.jwt_issuer = unsafe { opt_str(issuer, "issuer") }?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--jwt-audience`: the required member of the `aud` claim; NULL removes the check (tokens
    /// carrying an `aud` are then refused).
    fn sseloop_config_set_jwt_audience(
        config: *mut sseloop_config_t,
        audience: *const c_char,
    ) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.jwt_audience = unsafe { opt_str(audience, "audience") }?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--jwt-leeway`: seconds of clock skew tolerated on `exp` and `nbf` (default 5, at most
    /// 86400). SSELOOP_EINVAL above the limit.
    fn sseloop_config_set_jwt_leeway(config: *mut sseloop_config_t, seconds: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            if seconds > MAX_LEEWAY_SECS {
                return Err(Error::new(
                    SSELOOP_EINVAL,
                    format!("jwt leeway must be at most {MAX_LEEWAY_SECS} seconds"),
                ));
            }
            c.jwt_leeway = seconds;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--jwt-cookie`: also read the subscribe token from this cookie; NULL removes it.
    fn sseloop_config_set_jwt_cookie(config: *mut sseloop_config_t, name: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.jwt_cookie = unsafe { opt_str(name, "name") }?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}
