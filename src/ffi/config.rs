//! `sseloop_config_t`: the options of a loop, set one by one or parsed from a command line.
//!
//! A config is a plain value owned by the host: single-threaded, copied by `sseloop_new`, freed
//! with `sseloop_config_free`. Setters check each value against the same range table the command
//! line uses (`crate::config::ranges`), and address syntax; the combination (e.g. the queue caps
//! against `max_body`) is checked by `sseloop_new`, since setters may come in any order.

use std::ffi::{c_char, c_int};
use std::net::{SocketAddr, ToSocketAddrs};

use clap::Parser;

use super::error::{Error, SSELOOP_ECONFIG, SSELOOP_EINTERNAL, SSELOOP_EINVAL, SSELOOP_OK};
use super::str_arg;
use crate::config::{ranges, OptionRange};
use crate::Config;

/// The options object behind `sseloop_config_t *`.
pub struct sseloop_config_t {
    pub(crate) config: Config,
}

/// The defaults, without the environment: the command line reads the token and JWT secret
/// variables, a library
/// caller should get the same loop whatever its process environment holds.
fn defaults() -> Result<Config, Error> {
    let mut config = Config::try_parse_from(["sseloop"])
        .map_err(|e| Error::new(SSELOOP_ECONFIG, e.to_string()))?;
    config.publish_token = None;
    config.subscribe_token = None;
    config.jwt_secret = None;
    Ok(config)
}

ffi_fn! {
    /// A new options object with the defaults of the `sseloop` binary (the `SSELOOP_*_TOKEN`
    /// environment variables are not read). Returns NULL on failure (see `sseloop_last_error`).
    /// The caller owns it and releases it with `sseloop_config_free`.
    fn sseloop_config_new() -> *mut sseloop_config_t {
        match defaults() {
            Ok(config) => Box::into_raw(Box::new(sseloop_config_t { config })),
            Err(e) => {
                e.report();
                std::ptr::null_mut()
            }
        }
    } ?= std::ptr::null_mut();
}

ffi_fn! {
    /// Releases an options object. NULL is a no-op.
    fn sseloop_config_free(config: *mut sseloop_config_t) {
        if !config.is_null() {
            // SAFETY: non-NULL pointers come from `sseloop_config_new` (Box::into_raw) and are
            // freed once, per the contract.
            drop(unsafe { Box::from_raw(config) });
        }
    } ?= ();
}

ffi_fn! {
    /// Replaces every option with the result of loading `argv` exactly like the `sseloop` binary
    /// does (`argv[0]` is the program name and is skipped; `SSELOOP_*` environment variables and
    /// a `--config` file apply, flags first). On failure the options are unchanged and the
    /// message names the bad value's source.
    fn sseloop_config_parse_args(
        config: *mut sseloop_config_t,
        argc: c_int,
        argv: *const *const c_char,
    ) -> c_int {
        let config = non_null_mut!(config);
        let Ok(count) = usize::try_from(argc) else {
            return Error::new(SSELOOP_EINVAL, format!("argc is negative ({argc})")).report();
        };
        if count > 0 && argv.is_null() {
            return Error::null("argv").report();
        }
        let mut args = Vec::with_capacity(count.max(1));
        for i in 0..count {
            // SAFETY: `argv` holds `argc` pointers (contract); `i < argc`.
            let arg = unsafe { *argv.add(i) };
            // SAFETY: each element is NULL or a NUL-terminated string (contract).
            match unsafe { str_arg(arg, "argv element") } {
                Ok(s) => args.push(s),
                Err(e) => return e.report(),
            }
        }
        if args.is_empty() {
            args.push("sseloop");
        }
        // The binary's own loading: SSELOOP_* variables and a --config file apply, with the
        // same precedence and messages.
        let sources = crate::config::sources::Sources::from_env_with_args(
            args.iter().map(std::ffi::OsString::from).collect(),
        );
        match sources.load() {
            Ok(Ok(loaded)) => {
                config.config = loaded.config;
                SSELOOP_OK
            }
            Ok(Err(e)) => Error::new(SSELOOP_ECONFIG, e.to_string()).report(),
            Err(e) => Error::new(SSELOOP_ECONFIG, e.to_string().trim_end()).report(),
        }
    } ?= SSELOOP_EINTERNAL;
}

fn parse_listen(s: &str) -> Result<SocketAddr, Error> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let bad = |why: String| {
        Error::new(
            SSELOOP_EINVAL,
            format!("invalid listen address '{s}': {why}"),
        )
    };
    s.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("no address".to_string()))
}

/// `value` if it is within `range`, else SSELOOP_EINVAL with the range's message.
fn in_range(range: OptionRange, value: u64) -> Result<u64, Error> {
    range
        .check(value)
        .map_err(|e| Error::new(SSELOOP_EINVAL, e.to_string()))
}

/// Like [`in_range`] for a `usize` option.
fn size_in_range(range: OptionRange, value: usize) -> Result<usize, Error> {
    range
        .check_usize(value)
        .map_err(|e| Error::new(SSELOOP_EINVAL, e.to_string()))
}

/// Applies `set` to the options behind `config`, mapping a refused value to its code.
pub(super) fn apply(
    config: &mut sseloop_config_t,
    set: impl FnOnce(&mut Config) -> Result<(), Error>,
) -> c_int {
    match set(&mut config.config) {
        Ok(()) => SSELOOP_OK,
        Err(e) => e.report(),
    }
}

/// An optional string option: NULL clears it.
///
/// # Safety
///
/// `value` must be NULL or a NUL-terminated string.
pub(super) unsafe fn opt_str(value: *const c_char, what: &str) -> Result<Option<String>, Error> {
    if value.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    unsafe { str_arg(value, what) }.map(|s| Some(s.to_string()))
}

ffi_fn! {
    /// `--listen`: "HOST:PORT" (IPv6 as "[::1]:PORT"; port 0 picks a free port, see
    /// `sseloop_local_port`). Host names are resolved now. SSELOOP_EINVAL when unparsable.
    fn sseloop_config_set_listen(config: *mut sseloop_config_t, addr: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        // SAFETY: NULL or NUL-terminated (contract).
        let addr = match unsafe { str_arg(addr, "addr") } {
            Ok(a) => a,
            Err(e) => return e.report(),
        };
        apply(config, |c| {
            c.listen = parse_listen(addr)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--heartbeat-ms` (1..=86400000).
    fn sseloop_config_set_heartbeat_ms(config: *mut sseloop_config_t, ms: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.heartbeat_ms = in_range(ranges::HEARTBEAT_MS, ms)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--retry-ms`: the `retry:` value sent to clients (0..=86400000).
    fn sseloop_config_set_retry_ms(config: *mut sseloop_config_t, ms: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.retry_ms = in_range(ranges::RETRY_MS, ms)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--history`: events retained per topic for resume (0 disables history; at most 1048576).
    fn sseloop_config_set_history(config: *mut sseloop_config_t, events: usize) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.history = size_in_range(ranges::HISTORY, events)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--publish-token`: NULL removes it. (An empty token is refused by `sseloop_new`.)
    fn sseloop_config_set_publish_token(
        config: *mut sseloop_config_t,
        token: *const c_char,
    ) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.publish_token = unsafe { opt_str(token, "token") }?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--subscribe-token`: NULL removes it. (An empty token is refused by `sseloop_new`.)
    fn sseloop_config_set_subscribe_token(
        config: *mut sseloop_config_t,
        token: *const c_char,
    ) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            c.subscribe_token = unsafe { opt_str(token, "token") }?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--backplane`: redis://[USER:PASSWORD@]HOST:PORT[/DB]; NULL removes it. The password is
    /// never logged. Further backplane options go through `sseloop_config_parse_args`.
    fn sseloop_config_set_backplane(config: *mut sseloop_config_t, url: *const c_char) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            let url = unsafe { opt_str(url, "url") }?;
            c.backplane = url
                .map(|u| crate::config::RedisUrl::parse(&u))
                .transpose()
                .map_err(|e| Error::new(SSELOOP_EINVAL, e))?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--open-publish`: nonzero allows publishing without a token on a non-loopback address.
    fn sseloop_config_set_open_publish(config: *mut sseloop_config_t, enabled: c_int) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.open_publish = enabled != 0;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--cors-origin`: the Access-Control-Allow-Origin value (checked by `sseloop_new`).
    fn sseloop_config_set_cors_origin(
        config: *mut sseloop_config_t,
        origin: *const c_char,
    ) -> c_int {
        let config = non_null_mut!(config);
        // SAFETY: NULL or NUL-terminated (contract).
        let origin = match unsafe { str_arg(origin, "origin") } {
            Ok(o) => o,
            Err(e) => return e.report(),
        };
        apply(config, |c| {
            c.cors_origin = origin.to_string();
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--max-body`: largest publish body, in bytes, on every path (also the limit of
    /// `sseloop_publish` data); at most 1 GiB.
    fn sseloop_config_set_max_body(config: *mut sseloop_config_t, bytes: usize) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.max_body = size_in_range(ranges::MAX_BODY, bytes)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--max-connections` (1..=16777216); 0 restores the default (RLIMIT_NOFILE minus a reserve).
    fn sseloop_config_set_max_connections(
        config: *mut sseloop_config_t,
        connections: usize,
    ) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.max_connections = match connections {
                0 => None,
                n => Some(size_in_range(ranges::MAX_CONNECTIONS, n)?),
            };
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--grace-ms`: time connections get to finish when the loop stops (0..=86400000).
    fn sseloop_config_set_grace_ms(config: *mut sseloop_config_t, ms: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.grace_ms = in_range(ranges::GRACE_MS, ms)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--header-timeout-ms` (1..=86400000).
    fn sseloop_config_set_header_timeout_ms(config: *mut sseloop_config_t, ms: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.header_timeout_ms = in_range(ranges::HEADER_TIMEOUT_MS, ms)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--idle-timeout-ms` (1..=86400000).
    fn sseloop_config_set_idle_timeout_ms(config: *mut sseloop_config_t, ms: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.idle_timeout_ms = in_range(ranges::IDLE_TIMEOUT_MS, ms)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--write-stall-ms` (1..=86400000).
    fn sseloop_config_set_write_stall_ms(config: *mut sseloop_config_t, ms: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.write_stall_ms = in_range(ranges::WRITE_STALL_MS, ms)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--round-input-us` (0..=1000000).
    fn sseloop_config_set_round_input_us(config: *mut sseloop_config_t, us: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.round_input_us = in_range(ranges::ROUND_INPUT_US, us)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--max-queue-bytes`: output queued per connection before it is cut as a slow consumer
    /// (64 KiB..=1 TiB; `sseloop_new` also wants at least `max_body` + 64 KiB).
    fn sseloop_config_set_max_queue_bytes(config: *mut sseloop_config_t, bytes: usize) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.max_queue_bytes = size_in_range(ranges::MAX_QUEUE_BYTES, bytes)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--max-frame`: largest frame payload accepted in frame mode, in bytes (256..=1 GiB).
    fn sseloop_config_set_max_frame(config: *mut sseloop_config_t, bytes: usize) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.max_frame = size_in_range(ranges::MAX_FRAME, bytes)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--history-bytes`: bytes of history retained over all topics, encodings included
    /// (0..=1 TiB).
    fn sseloop_config_set_history_bytes(config: *mut sseloop_config_t, bytes: usize) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.history_bytes = size_in_range(ranges::HISTORY_BYTES, bytes)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--max-topics`: most topics that may exist at once (1..=16777216).
    fn sseloop_config_set_max_topics(config: *mut sseloop_config_t, topics: usize) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.max_topics = size_in_range(ranges::MAX_TOPICS, topics)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--publish-queue-bytes`: bytes `sseloop_publish` may have queued for the loop before it
    /// answers SSELOOP_EAGAIN (64 KiB..=1 TiB; `sseloop_new` also wants at least `max_body`).
    fn sseloop_config_set_publish_queue_bytes(
        config: *mut sseloop_config_t,
        bytes: usize,
    ) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.publish_queue_bytes = size_in_range(ranges::PUBLISH_QUEUE_BYTES, bytes)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

// ----- per-client limits (docs/SECURITY.md, "Per-client limits"); each 0 = off ---------------

ffi_fn! {
    /// `--max-connections-per-ip`: connections one client address may hold (0 = off;
    /// 0..=16777216).
    fn sseloop_config_set_max_connections_per_ip(
        config: *mut sseloop_config_t,
        connections: usize,
    ) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.max_connections_per_ip = size_in_range(ranges::MAX_CONNECTIONS_PER_IP, connections)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--ipv6-prefix`: the bits of an IPv6 address that name one client (1..=128).
    fn sseloop_config_set_ipv6_prefix(config: *mut sseloop_config_t, bits: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.ipv6_prefix = in_range(ranges::IPV6_PREFIX, bits)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--trusted-proxy`: comma-separated CIDR blocks whose `Forwarded` / `X-Forwarded-For`
    /// headers name the client; NULL or "" removes them all. SSELOOP_EINVAL for a bad block.
    fn sseloop_config_set_trusted_proxy(
        config: *mut sseloop_config_t,
        cidrs: *const c_char,
    ) -> c_int {
        let config = non_null_mut!(config);
        apply(config, |c| {
            // SAFETY: NULL or NUL-terminated (contract).
            let text = unsafe { opt_str(cidrs, "cidrs") }?.unwrap_or_default();
            c.trusted_proxy = text
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(crate::config::Cidr::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| Error::new(SSELOOP_EINVAL, e))?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--publish-rate`: publishes per second per publisher (0 = off; 0..=1000000).
    fn sseloop_config_set_publish_rate(config: *mut sseloop_config_t, per_second: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.publish_rate = in_range(ranges::PUBLISH_RATE, per_second)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--publish-burst`: the publish token bucket's size (0 = one second of the rate;
    /// 0..=1000000).
    fn sseloop_config_set_publish_burst(config: *mut sseloop_config_t, burst: u64) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.publish_burst = in_range(ranges::PUBLISH_BURST, burst)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--max-subscriptions-per-conn`: topics and patterns per stream (0 = off; 0..=64).
    fn sseloop_config_set_max_subscriptions_per_conn(
        config: *mut sseloop_config_t,
        subscriptions: usize,
    ) -> c_int {
        apply(non_null_mut!(config), |c| {
            let range = ranges::MAX_SUBSCRIPTIONS_PER_CONN;
            c.max_subscriptions_per_conn = size_in_range(range, subscriptions)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}

ffi_fn! {
    /// `--max-new-connections-rate`: new connections per second per address (0 = off;
    /// 0..=1000000).
    fn sseloop_config_set_max_new_connections_rate(
        config: *mut sseloop_config_t,
        per_second: u64,
    ) -> c_int {
        apply(non_null_mut!(config), |c| {
            c.max_new_connections_rate = in_range(ranges::MAX_NEW_CONNECTIONS_RATE, per_second)?;
            Ok(())
        })
    } ?= SSELOOP_EINTERNAL;
}
