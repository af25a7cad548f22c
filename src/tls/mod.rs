//! TLS configuration: loading the server's certificate chain and key (and the client CA for
//! mTLS) into an `Arc<rustls::ServerConfig>`, the backplane's client configuration (`rediss://`),
//! and the reasons a handshake fails ([`HandshakeFailure`], counted in metrics). The per-connection
//! state is [`session::TlsSession`].
//!
//! The crypto provider is rustls's `ring`: it builds with the machine's C compiler alone, while
//! aws-lc-rs (rustls's default) needs cmake and nasm. TLS 1.2 and 1.3 only; ALPN offers
//! `http/1.1`, so a client that offers only `h2` gets a `no_application_protocol` alert.
//!
//! Everything here runs before listening or during a reload: a failure is a [`TlsError`] that
//! names the file and what is wrong with it, and nothing already in force changes.

mod expiry;
pub mod session;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use session::TlsSession;

/// The system's CA bundle (Debian's `ca-certificates`), trusted by `rediss://` without
/// `--backplane-ca`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why TLS could not be set up. Each names the file concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The file cannot be read.
    Read(PathBuf, String),
    /// The file holds no item of the expected kind (certificate, private key).
    Empty(PathBuf, &'static str),
    /// The private key's type is not one the provider signs with.
    UnsupportedKey(PathBuf, String),
    /// The key is not the certificate's.
    KeyMismatch {
        /// `--tls-cert`.
        cert: PathBuf,
        /// `--tls-key`.
        key: PathBuf,
    },
    /// A certificate in the file is not valid DER, or the configuration is refused.
    Invalid(PathBuf, String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            TlsError::Empty(p, what) => write!(f, "{} holds no PEM {what}", p.display()),
            TlsError::UnsupportedKey(p, e) => write!(
                f,
                "{}: unsupported private key (PKCS#8, RSA or EC P-256/P-384 expected): {e}",
                p.display()
            ),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "the key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Invalid(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for TlsError {}

/// Key exchange groups, most preferred first: X25519, as browsers, curl and OpenSSL order them.
/// rustls 0.23.48's ring provider puts P-384 first, which costs ring several times the CPU of
/// X25519 on both ends; a server follows the client's order, so this matters for our own
/// clients (the backplane's `rediss://`, the load tool) and for the server's TLS 1.2 choice.
const KX_GROUPS: [&dyn rustls::crypto::SupportedKxGroup; 3] = [
    rustls::crypto::ring::kx_group::X25519,
    rustls::crypto::ring::kx_group::SECP256R1,
    rustls::crypto::ring::kx_group::SECP384R1,
];

/// The provider every configuration uses (see the module doc), with [`KX_GROUPS`].
pub fn provider() -> Arc<CryptoProvider> {
    // Deprecated only as a nudge towards post-quantum key exchange, which ring lacks; the
    // provider that has it (aws-lc-rs) does not build here without cmake.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = KX_GROUPS.to_vec();
    Arc::new(provider)
}

/// A loaded server configuration and the warnings found while loading it (an expired or not yet
/// valid certificate: served anyway, since clients decide).
pub struct Loaded {
    /// The configuration new handshakes use.
    pub config: Arc<ServerConfig>,
    /// Warnings to log.
    pub warnings: Vec<String>,
}

/// The listener's TLS configuration from `config`, or `None` for plaintext.
pub fn from_config(config: &crate::config::Config) -> Result<Option<Loaded>, TlsError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            load_server(cert, key, config.tls_client_ca.as_deref()).map(Some)
        }
        _ => Ok(None),
    }
}

/// TLS 1.2 sessions remembered by id, for clients that take no tickets: each entry holds a
/// session's secrets and parameters (a few hundred bytes), so at most about 1 MiB. The oldest
/// entry is forgotten first; its client then makes a full handshake.
pub const SESSION_CACHE_ENTRIES: usize = 4096;

/// The process's session-ticket keys, shared by every configuration so that a reload
/// (certificate rotation) keeps tickets valid. Tickets are stateless (the server keeps nothing
/// per client: memory stays two keys however many clients resume); rustls's ring ticketer
/// encrypts them with ChaCha20-Poly1305 and rotates its key every 6 hours, the previous key
/// still accepted, so a ticket lives at most 12 hours.
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, String> {
    static TICKETER: std::sync::OnceLock<Arc<dyn rustls::server::ProducesTickets>> =
        std::sync::OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let t =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("session ticket keys: {e}"))?;
    Ok(TICKETER.get_or_init(|| t).clone())
}

/// Builds the server configuration from `--tls-cert`, `--tls-key` and `--tls-client-ca`.
pub fn load_server(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Loaded, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = read_key(key)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::UnsupportedKey(key.to_path_buf(), e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => return Err(TlsError::Invalid(cert.to_path_buf(), e.to_string())),
    }
    let mut warnings = Vec::new();
    if let Some(leaf) = certified.cert.first() {
        match expiry::validity(leaf) {
            Some((not_before, not_after)) => {
                let now = SystemTime::now();
                if now > not_after {
                    warnings.push(format!(
                        "the certificate in {} has expired: clients will refuse it",
                        cert.display()
                    ));
                } else if now < not_before {
                    warnings.push(format!(
                        "the certificate in {} is not valid yet: clients will refuse it",
                        cert.display()
                    ));
                }
            }
            None => {
                return Err(TlsError::Invalid(
                    cert.to_path_buf(),
                    "the first certificate has no readable validity period".into(),
                ))
            }
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(cert.to_path_buf(), e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(read_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Invalid(ca.to_path_buf(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = ticketer().map_err(|e| TlsError::Invalid(cert.to_path_buf(), e))?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(Loaded {
        config: Arc::new(config),
        warnings,
    })
}

/// The backplane's client configuration: the CAs of `ca` (`--backplane-ca`), else the system
/// bundle. The server's name is verified against the URL's host.
pub fn load_client(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = read_roots(ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE)))?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(PathBuf::new(), e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e.to_string()))
}

/// Every certificate of a PEM file, in order (leaf first for `--tls-cert`).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty(path.to_path_buf(), "certificate"));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty(path.to_path_buf(), "private key")
        }
        e => TlsError::Invalid(path.to_path_buf(), e.to_string()),
    })
}

/// A root store of every certificate in a PEM file.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Invalid(path.to_path_buf(), e.to_string()))?;
    }
    Ok(roots)
}

/// Why a handshake failed (`sseloop_tls_handshake_failures_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The first bytes were not a TLS record (plaintext HTTP to a TLS port).
    Plaintext,
    /// Not finished within `--header-timeout-ms`.
    Timeout,
    /// No protocol in common (a client offering only `h2`, or only old TLS versions/ciphers).
    NoCommonProtocol,
    /// A client certificate missing or refused (mTLS).
    ClientCert,
    /// The peer sent an alert (it refused our certificate, typically).
    PeerAlert,
    /// The peer closed the connection before the handshake ended.
    Eof,
    /// Anything else (malformed messages, decryption errors).
    Protocol,
}

impl HandshakeFailure {
    /// Every reason, in label order.
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::Plaintext,
        HandshakeFailure::Timeout,
        HandshakeFailure::NoCommonProtocol,
        HandshakeFailure::ClientCert,
        HandshakeFailure::PeerAlert,
        HandshakeFailure::Eof,
        HandshakeFailure::Protocol,
    ];

    /// Index into a counter array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Plaintext => "plaintext",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NoCommonProtocol => "no_common_protocol",
            HandshakeFailure::ClientCert => "client_certificate",
            HandshakeFailure::PeerAlert => "peer_alert",
            HandshakeFailure::Eof => "eof",
            HandshakeFailure::Protocol => "protocol",
        }
    }

    /// The reason for a rustls error met during a handshake.
    pub fn of(err: &rustls::Error) -> HandshakeFailure {
        use rustls::{Error, PeerIncompatible};
        match err {
            Error::NoApplicationProtocol => HandshakeFailure::NoCommonProtocol,
            Error::PeerIncompatible(
                PeerIncompatible::NoCipherSuitesInCommon
                | PeerIncompatible::NoKxGroupsInCommon
                | PeerIncompatible::NoSignatureSchemesInCommon
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::Tls13RequiredForQuic,
            ) => HandshakeFailure::NoCommonProtocol,
            Error::InvalidCertificate(_) | Error::NoCertificatesPresented => {
                HandshakeFailure::ClientCert
            }
            Error::AlertReceived(_) => HandshakeFailure::PeerAlert,
            _ => HandshakeFailure::Protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let err = load_server(Path::new("/nonexistent/c.pem"), Path::new("/k.pem"), None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("sseloop-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "not pem\n").unwrap();
        let err = load_server(&f, &f, None).err().unwrap();
        assert_eq!(err, TlsError::Empty(f.clone(), "certificate"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn x25519_is_the_preferred_key_exchange() {
        let names: Vec<_> = provider().kx_groups.iter().map(|g| g.name()).collect();
        use rustls::NamedGroup::{secp256r1, secp384r1, X25519};
        assert_eq!(names, [X25519, secp256r1, secp384r1]);
    }

    #[test]
    fn labels_are_distinct() {
        let labels: std::collections::BTreeSet<_> =
            HandshakeFailure::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), HandshakeFailure::ALL.len());
        for (i, r) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
