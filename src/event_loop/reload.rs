//! Applying a new configuration to a running loop (SIGHUP, `sseloop_reload`): between two
//! iterations the loop swaps in the settings that can change without closing any connection and
//! reports the others, which keep their values until a restart.
//!
//! A new configuration is checked whole first (every range and combination, the JWT key): an
//! invalid one changes nothing. What changes live:
//! - authorization: the static tokens, the JWT secret or key and its issuer, audience, leeway
//!   and cookie (streams opened before keep running until their own token expires);
//! - `--cors-origin`, `--heartbeat-ms`, `--retry-ms`;
//! - the timeouts (`--header-timeout-ms`, `--idle-timeout-ms`, `--write-stall-ms`,
//!   `--grace-ms`) and `--max-connections` (for connections accepted from then on);
//! - `--log-format`, `--log-level` and `--access-log` (for connections accepted from then on);
//! - the per-client limits (`--max-connections-per-ip`, `--ipv6-prefix`, `--trusted-proxy`,
//!   `--publish-rate`, `--publish-burst`, `--max-subscriptions-per-conn`,
//!   `--max-new-connections-rate`), from the next accept, request or publish on;
//! - the TLS certificate, key and client CA (`--tls-*`): the files are read again and new
//!   handshakes use them, open sessions keep theirs; a pair that does not load refuses the
//!   whole reload (turning TLS on or off needs a restart).
//!
//! Everything else sizes structures built at start (history, queues, the listener, the
//! backplane) and needs a restart.

use crate::auth::Auth;
use crate::config::Config;
use crate::loop_state::LoopState;

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings that changed and are in force now (field names; never values of secrets).
    pub changed: Vec<String>,
    /// Settings that differ but cannot change live: their old value stays.
    pub kept: Vec<String>,
}

/// Applies `new` to the loop state, or refuses it whole with the reason.
pub fn apply(sh: &mut LoopState, new: &Config) -> Result<ReloadReport, String> {
    new.validate().map_err(|e| e.to_string())?;
    let auth = Auth::from_config(new).map_err(|e| e.to_string())?;
    let mut next = sh.config.clone();
    copy_live(&mut next, new);
    // TLS stays on or off as it started; its files are read again.
    let tls_live = sh.tls.is_some() && new.tls_cert.is_some();
    if tls_live {
        next.tls_cert.clone_from(&new.tls_cert);
        next.tls_key.clone_from(&new.tls_key);
        next.tls_client_ca.clone_from(&new.tls_client_ca);
    }
    next.validate().map_err(|e| e.to_string())?;
    let tls = if tls_live {
        crate::tls::from_config(&next).map_err(|e| format!("TLS: {e}"))?
    } else {
        None
    };
    let mut report = ReloadReport {
        changed: changed_fields(&sh.config, &next),
        kept: changed_fields(&next, new),
    };
    if let Some(loaded) = tls {
        for warning in &loaded.warnings {
            log::warn!("{warning}");
        }
        sh.tls = Some(loaded.config);
        report.changed.push("tls (files read again)".into());
    }
    if let Some(level) = next.log_level {
        crate::logging::set_level(level);
    }
    crate::logging::set_format(next.log_format);
    sh.max_connections = next.max_connections.unwrap_or(sh.max_connections.max(1));
    sh.auth = auth;
    sh.limits.configure(&next);
    sh.config = next;
    Ok(report)
}

/// Copies the settings that can change live from `new` into `into`.
fn copy_live(into: &mut Config, new: &Config) {
    into.publish_token.clone_from(&new.publish_token);
    into.admin_token.clone_from(&new.admin_token);
    into.subscribe_token.clone_from(&new.subscribe_token);
    into.jwt_secret.clone_from(&new.jwt_secret);
    into.jwt_public_key.clone_from(&new.jwt_public_key);
    into.jwt_issuer.clone_from(&new.jwt_issuer);
    into.jwt_audience.clone_from(&new.jwt_audience);
    into.jwt_leeway = new.jwt_leeway;
    into.jwt_cookie.clone_from(&new.jwt_cookie);
    into.cors_origin.clone_from(&new.cors_origin);
    into.heartbeat_ms = new.heartbeat_ms;
    into.retry_ms = new.retry_ms;
    into.header_timeout_ms = new.header_timeout_ms;
    into.idle_timeout_ms = new.idle_timeout_ms;
    into.write_stall_ms = new.write_stall_ms;
    into.grace_ms = new.grace_ms;
    into.max_connections = new.max_connections;
    into.log_format = new.log_format;
    into.log_level = new.log_level;
    into.access_log = new.access_log;
    // The per-client limits apply from the next accept, request or publish; connections
    // already open keep what they were counted as.
    into.max_connections_per_ip = new.max_connections_per_ip;
    into.ipv6_prefix = new.ipv6_prefix;
    into.trusted_proxy.clone_from(&new.trusted_proxy);
    into.publish_rate = new.publish_rate;
    into.publish_burst = new.publish_burst;
    into.max_subscriptions_per_conn = new.max_subscriptions_per_conn;
    into.max_new_connections_rate = new.max_new_connections_rate;
}

/// Names of the settings whose values differ. Secrets are compared directly (their `Debug` is
/// redacted); every other field through `Config`'s `Debug`, which lists each one.
fn changed_fields(a: &Config, b: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let secrets = [
        ("publish_token", a.publish_token != b.publish_token),
        ("admin_token", a.admin_token != b.admin_token),
        ("subscribe_token", a.subscribe_token != b.subscribe_token),
        ("jwt_secret", a.jwt_secret != b.jwt_secret),
    ];
    let (fa, fb) = (fields(&format!("{a:#?}")), fields(&format!("{b:#?}")));
    for (name, value) in &fa {
        if fb.get(name) != Some(value) && !secrets.iter().any(|(s, _)| s == name) {
            out.push(name.clone());
        }
    }
    out.extend(
        secrets
            .iter()
            .filter(|(_, differ)| *differ)
            .map(|(s, _)| s.to_string()),
    );
    out.sort_unstable();
    out
}

/// Field name → value text of a pretty-printed struct (a field's value may span lines).
fn fields(pretty: &str) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in pretty.lines().skip(1) {
        let top = line.strip_prefix("    ").filter(|l| !l.starts_with(' '));
        match top.and_then(|l| l.split_once(": ")) {
            Some((name, value)) => {
                map.insert(name.to_string(), value.to_string());
                current = Some(name.to_string());
            }
            None => {
                if let Some(v) = current.as_ref().and_then(|c| map.get_mut(c)) {
                    v.push_str(line.trim());
                }
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;

    fn state(config: Config) -> LoopState {
        LoopState::new(config, Hub::new("t", 0), 10)
    }

    #[test]
    fn live_settings_change_and_the_others_are_reported_and_kept() {
        let mut sh = state(Config::default());
        let new = Config {
            heartbeat_ms: 5,
            publish_token: Some("rotated".into()),
            history: 7,
            listen: "127.0.0.1:9".parse().unwrap(),
            access_log: true,
            metrics_listen: Some("127.0.0.1:10".parse().unwrap()),
            ..Config::default()
        };
        let report = apply(&mut sh, &new).unwrap();
        assert_eq!(
            report.changed,
            ["access_log", "heartbeat_ms", "publish_token"]
        );
        assert_eq!(report.kept, ["history", "listen", "metrics_listen"]);
        assert!(sh.config.access_log);
        assert_eq!(sh.config.metrics_listen, None);
        assert_eq!(sh.config.heartbeat_ms, 5);
        assert_eq!(sh.config.publish_token.as_deref(), Some("rotated"));
        assert_eq!(sh.config.history, Config::default().history);
        assert_eq!(sh.config.listen, Config::default().listen);
    }

    #[test]
    fn an_invalid_configuration_changes_nothing() {
        let mut sh = state(Config::default());
        let bad = Config {
            heartbeat_ms: 5,
            publish_token: Some(String::new()),
            ..Config::default()
        };
        assert!(apply(&mut sh, &bad)
            .unwrap_err()
            .contains("must not be empty"));
        assert_eq!(sh.config.heartbeat_ms, 15_000);
        let bad_key = Config {
            jwt_public_key: Some("/nonexistent/key.pem".into()),
            ..Config::default()
        };
        assert!(apply(&mut sh, &bad_key).is_err());
        assert!(!sh.auth.enabled());
    }
}
