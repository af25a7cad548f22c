//! The client behind trusted proxies: the last address of `Forwarded` (RFC 7239, its `for=`
//! parameters) or, without it, of `X-Forwarded-For`, that is not itself a trusted proxy. Each
//! proxy appends the address it received the request from, so the list reads client first,
//! nearest proxy last; walking it from the end past the trusted hops finds the first address
//! no trusted party vouches for beyond. Anything before it could be forged by that client.

use std::net::{IpAddr, SocketAddr};

use crate::config::Cidr;

/// The client address the trusted chain reports, or `None` when the headers name none (absent,
/// or a hop that is not an address, such as `unknown` or an obfuscated `_name`, comes before
/// any untrusted address: the caller then keeps the peer's own address).
pub fn client_address(
    forwarded: Option<&[u8]>,
    x_forwarded_for: Option<&[u8]>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let hops: Vec<Option<IpAddr>> = match (forwarded, x_forwarded_for) {
        (Some(f), _) => forwarded_for(&text(f)),
        (None, Some(x)) => text(x).split(',').map(node).collect(),
        (None, None) => return None,
    };
    let mut last_trusted = None;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if trusted.iter().any(|c| c.contains(ip)) => last_trusted = Some(ip),
            Some(ip) => return Some(ip),
            None => return last_trusted,
        }
    }
    // Every hop is trusted: the first of them is the client.
    last_trusted
}

/// The `for=` nodes of a `Forwarded` value, in order (one per element; an element without
/// `for` is a hop that said nothing, `None`).
fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    split_unquoted(value, ',')
        .into_iter()
        .map(|element| {
            split_unquoted(element, ';')
                .into_iter()
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| node(v))
        })
        .collect()
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// One node: `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]`, `[2001:db8::1]:80`, `2001:db8::1`,
/// quoted or not. `unknown`, `_hidden` and anything else: `None`.
fn node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"').trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    // `[v6]` without a port, or with a port that is not a number (RFC 7239 allows `_obf`).
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<Cidr> {
        vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("2001:db8::/32").unwrap(),
        ]
    }

    fn xff(v: &str) -> Option<String> {
        client_address(None, Some(v.as_bytes()), &trusted()).map(|ip| ip.to_string())
    }

    fn fwd(v: &str) -> Option<String> {
        client_address(Some(v.as_bytes()), None, &trusted()).map(|ip| ip.to_string())
    }

    #[test]
    fn x_forwarded_for_gives_the_last_untrusted_hop() {
        assert_eq!(xff("1.1.1.1").as_deref(), Some("1.1.1.1"));
        // A client forging its own list only adds hops before its real address.
        assert_eq!(
            xff("6.6.6.6, 1.1.1.1, 10.0.0.2").as_deref(),
            Some("1.1.1.1")
        );
        assert_eq!(xff("10.0.0.3, 10.0.0.2").as_deref(), Some("10.0.0.3"));
        assert_eq!(xff(" 2.2.2.2:4711 ,10.1.1.1").as_deref(), Some("2.2.2.2"));
        assert_eq!(xff("1.1.1.1, garbage").as_deref(), None);
        assert_eq!(
            xff("1.1.1.1, unknown, 10.0.0.1").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(xff("").as_deref(), None);
        assert_eq!(client_address(None, None, &trusted()), None);
    }

    #[test]
    fn forwarded_handles_quoted_ipv6_ports_and_other_parameters() {
        assert_eq!(
            fwd("for=192.0.2.60;proto=http;by=203.0.113.43").as_deref(),
            Some("192.0.2.60")
        );
        assert_eq!(
            fwd("for=\"[2001:db9::17]:4711\", for=10.0.0.1").as_deref(),
            Some("2001:db9::17")
        );
        assert_eq!(
            fwd("For=\"[2001:db9::17]\"").as_deref(),
            Some("2001:db9::17")
        );
        assert_eq!(fwd("for=\"[2001:db8::1]\"").as_deref(), Some("2001:db8::1"));
        assert_eq!(fwd("for=1.2.3.4:80").as_deref(), Some("1.2.3.4"));
        assert_eq!(
            fwd("for=_hidden, for=10.0.0.9").as_deref(),
            Some("10.0.0.9")
        );
        assert_eq!(fwd("for=unknown").as_deref(), None);
        assert_eq!(fwd("proto=https;host=\"a,b\"").as_deref(), None);
        // Forwarded wins over X-Forwarded-For when both are present.
        let both = client_address(Some(b"for=3.3.3.3"), Some(b"4.4.4.4"), &trusted());
        assert_eq!(both.map(|ip| ip.to_string()).as_deref(), Some("3.3.3.3"));
    }
}
