//! Setters for the TLS options of `sseloop_config_t` (`--tls-cert`, `--tls-key`,
//! `--tls-client-ca`, `--backplane-ca`): paths, copied. The files are read (and the key checked
//! against the certificate) by `sseloop_new`, which answers SSELOOP_ECONFIG when they cannot be
//! used; `sseloop_reload` reads them again.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;

use super::config::{apply, opt_str, sseloop_config_t};
use super::error::SSELOOP_EINTERNAL;

ffi_fn! {
    /// `--tls-cert`: path of the PEM certificate chain (leaf first); NULL removes it. With
    /// `--tls-key` the listener speaks TLS.
    fn sseloop_config_set_tls_cert(config: *mut sseloop_config_t, path: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.tls_cert = unsafe { opt_str(path, "path") }?.map(PathBuf::from);
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--tls-key`: path of the PEM private key (PKCS#8, RSA or EC); NULL removes it.
    fn sseloop_config_set_tls_key(config: *mut sseloop_config_t, path: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.tls_key = unsafe { opt_str(path, "path") }?.map(PathBuf::from);
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--tls-client-ca`: path of the PEM CA certificates that issue client certificates (mTLS);
    /// NULL removes it.
    fn sseloop_config_set_tls_client_ca(config: *mut sseloop_config_t, path: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.tls_client_ca = unsafe { opt_str(path, "path") }?.map(PathBuf::from);
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--backplane-ca`: path of the PEM CA certificates trusted for a `rediss://` backplane;
    /// NULL removes it (the system's CAs are trusted).
    fn sseloop_config_set_backplane_ca(config: *mut sseloop_config_t, path: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.backplane_ca = unsafe { opt_str(path, "path") }?.map(PathBuf::from);
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}
