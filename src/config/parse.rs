//! The value parsers of the command line: numbers and sizes within their range, the listen
//! address, the backplane URL.

use std::net::{SocketAddr, ToSocketAddrs};

use super::{OptionRange, RedisUrl};

/// A clap value parser for a millisecond or count option: a plain integer within `range`.
pub(super) fn number_in(
    range: OptionRange,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync {
    move |s: &str| {
        let value: u64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s}: expected a whole number"))?;
        range.check(value).map_err(|e| e.to_string())
    }
}

/// A clap value parser for a rate per second: `R` or `R/s`, a whole number within `range`.
pub(super) fn rate_in(
    range: OptionRange,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync {
    move |s: &str| {
        let t = s.trim();
        number_in(range)(t.strip_suffix("/s").unwrap_or(t))
    }
}

/// A clap value parser for a count option held in a `usize`.
pub(super) fn count_in(
    range: OptionRange,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |s: &str| {
        let value = number_in(range)(s)?;
        usize::try_from(value).map_err(|_| format!("{s}: too large for this platform"))
    }
}

/// A clap value parser for a byte size (`64k`, `1M`, ...) within `range`.
pub(super) fn size_in(
    range: OptionRange,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |s: &str| {
        let value = parse_size(s)?;
        range.check_usize(value).map_err(|e| e.to_string())
    }
}

pub(super) fn parse_backplane(s: &str) -> Result<RedisUrl, String> {
    RedisUrl::parse(s)
}

/// `--log-level`.
pub(super) fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s}: expected off, error, warn, info, debug or trace"))
}

pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    // `:8080` means every IPv4 address, as in Go and nginx.
    let owned;
    let s = match s.strip_prefix(':') {
        Some(port) => {
            owned = format!("0.0.0.0:{port}");
            owned.as_str()
        }
        None => s,
    };
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
