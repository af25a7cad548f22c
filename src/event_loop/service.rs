//! What the loop does for whoever supervises it: the start-up line, readiness, shutdown and
//! watchdog notifications to a service manager (`systemd::Notifier`), and reloading the
//! configuration on SIGHUP or `sseloop_reload` (which settings change: `reload.rs`).

use std::net::SocketAddr;
use std::time::Instant;

use super::{reload, Server, StartError};
use crate::auth::Auth;
use crate::config::{Config, ConfigError};

/// What SIGHUP calls for the new configuration.
pub(super) type Reloader = Box<dyn FnMut() -> Result<Config, String>>;

impl Server {
    /// Checks a configuration as [`Server::bind`] does, without binding anything: every option
    /// and combination, and the JWT key (`sseloop --check-config`).
    pub fn check_config(config: &Config) -> Result<(), StartError> {
        Self::checked_auth(config)?;
        Self::checked_backplane_tls(config)?;
        Self::checked_tls(config).map(drop)
    }

    /// The `rediss://` backplane's TLS client configuration (`--backplane-ca`, else the system's
    /// CAs), or `None` for `redis://`.
    pub(super) fn checked_backplane_tls(
        config: &Config,
    ) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, StartError> {
        if !config.backplane.as_ref().is_some_and(|b| b.tls) {
            return Ok(None);
        }
        crate::tls::load_client(config.backplane_ca.as_deref())
            .map(Some)
            .map_err(|e| StartError::Config(ConfigError::TlsFiles(format!("backplane: {e}"))))
    }

    /// The listener's TLS configuration, loaded and checked (files, key against certificate);
    /// an expired certificate is only a warning.
    pub(super) fn checked_tls(
        config: &Config,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, StartError> {
        let loaded = crate::tls::from_config(config)
            .map_err(|e| StartError::Config(ConfigError::TlsFiles(e.to_string())))?;
        Ok(loaded.map(|l| {
            for warning in &l.warnings {
                log::warn!("{warning}");
            }
            l.config
        }))
    }

    pub(super) fn checked_auth(config: &Config) -> Result<Auth, StartError> {
        config.validate().map_err(StartError::Config)?;
        Auth::from_config(config)
            .map_err(|e| StartError::Config(ConfigError::JwtKey(e.to_string())))
    }

    /// Tells the service manager about readiness, shutdown and liveness through `notifier`
    /// (the binary passes `Notifier::from_env()`; an embedding host has its own).
    pub fn set_notifier(&mut self, notifier: crate::systemd::Notifier) {
        // The first WATCHDOG=1 goes out with the first iteration.
        self.watchdog_due = notifier.watchdog_every().map(|_| Instant::now());
        self.notifier = notifier;
    }

    /// What SIGHUP runs to get the new configuration (see [`Server::reload`]).
    pub fn set_reloader(&mut self, reloader: impl FnMut() -> Result<Config, String> + 'static) {
        self.reloader = Some(Box::new(reloader));
    }

    /// Applies a new configuration between iterations (see `reload`): the settings that can
    /// change live do, the others are reported and kept; an invalid one changes nothing. Logs
    /// the outcome and counts it in `sseloop_config_reloads_total`.
    pub fn reload(&mut self, config: &Config) -> Result<reload::ReloadReport, String> {
        self.notifier.reloading();
        let result = reload::apply(&mut self.sh, config);
        match &result {
            Ok(r) => {
                self.sh.metrics.reloads[0] += 1;
                log::info!(
                    "configuration reloaded: changed [{}]; need a restart, kept [{}]",
                    r.changed.join(", "),
                    r.kept.join(", ")
                );
            }
            Err(e) => self.reload_refused(e),
        }
        self.notifier.notify("READY=1");
        result
    }

    fn reload_refused(&mut self, why: &str) {
        self.sh.metrics.reloads[1] += 1;
        log::error!("configuration reload refused, the running one stays: {why}");
    }

    pub(super) fn reload_from_source(&mut self) {
        let Some(mut reloader) = self.reloader.take() else {
            log::warn!("SIGHUP: no configuration source to reload from; ignored");
            return;
        };
        match reloader() {
            Ok(config) => {
                let _ = self.reload(&config);
            }
            Err(e) => self.reload_refused(&e),
        }
        self.reloader = Some(reloader);
    }

    /// `WATCHDOG=1` every half of the manager's interval, from the loop itself: a loop stuck in
    /// an iteration stops sending it and the manager restarts the service.
    pub(super) fn feed_watchdog(&mut self) {
        let Some(every) = self.notifier.watchdog_every() else {
            return;
        };
        if self.watchdog_due.is_none_or(|due| self.sh.now >= due) {
            self.notifier.watchdog();
            self.watchdog_due = Some(self.sh.now + every);
        }
    }
}

/// Where the server listens, for the start-up line.
pub(super) struct Addresses {
    /// `--listen` (or the socket handed over).
    pub(super) local: SocketAddr,
    /// `--metrics-listen`.
    pub(super) metrics: Option<SocketAddr>,
    /// The `--listen` socket came from a service manager.
    pub(super) activated: bool,
}

/// The start-up line: the addresses, the build, the authorization mode, the console, the
/// backplane (password masked), the access log and the main limits. Never a secret.
pub(super) fn log_start(config: &Config, addrs: &Addresses, run: &str, max_connections: usize) {
    log::info!(
        "listening on {}{}, run id {run}, {} {}; authorization {}, console {}, \
         backplane {}, metrics address {}, access log {}; max connections {max_connections}, \
         max body {}, max queue bytes {}, history {} per topic and {} bytes in all, \
         heartbeat {} ms",
        addrs.local,
        if addrs.activated {
            " (socket activation)"
        } else {
            ""
        },
        env!("CARGO_PKG_NAME"),
        crate::config::VERSION,
        auth_mode(config),
        if config.ui { "on at /ui/" } else { "off" },
        config
            .backplane
            .as_ref()
            .map_or_else(|| "off".to_string(), |u| u.to_string()),
        addrs
            .metrics
            .map_or_else(|| "off".to_string(), |a| a.to_string()),
        if config.access_log { "on" } else { "off" },
        config.max_body,
        config.max_queue_bytes,
        config.history,
        config.history_bytes,
        config.heartbeat_ms
    );
}

/// How clients are authorized, for the start-up line (never a secret).
fn auth_mode(config: &Config) -> String {
    if let Some(path) = &config.jwt_public_key {
        format!("JWT (public key {})", path.display())
    } else if config.jwt_secret.is_some() {
        "JWT (HMAC secret)".to_string()
    } else {
        match (&config.publish_token, &config.subscribe_token) {
            (None, None) if config.open_publish => "none (open publishing)".to_string(),
            (None, None) => "none".to_string(),
            (p, s) => format!(
                "static tokens (publish {}, subscribe {})",
                if p.is_some() { "yes" } else { "no" },
                if s.is_some() { "yes" } else { "no" }
            ),
        }
    }
}
