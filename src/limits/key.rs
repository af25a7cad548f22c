//! The client address as the per-address limits see it: an IPv4 address, or an IPv6 address cut
//! to `--ipv6-prefix` bits (one host usually holds a whole /64, so counting its addresses one by
//! one would let it multiply its allowance). IPv4-mapped IPv6 addresses count as IPv4.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One client for the per-address limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrKey {
    /// An IPv4 address.
    V4(u32),
    /// An IPv6 prefix: the address with the bits past the prefix cleared, and the prefix length.
    V6(u128, u8),
}

impl AddrKey {
    /// The key of `ip`, IPv6 grouped by its first `v6_prefix` bits (1..=128).
    pub fn of(ip: IpAddr, v6_prefix: u8) -> AddrKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddrKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let bits = v6_prefix.clamp(1, 128);
                let host = 128 - u32::from(bits);
                let masked = if host == 0 {
                    u128::from(v6)
                } else {
                    (u128::from(v6) >> host) << host
                };
                AddrKey::V6(masked, bits)
            }
        }
    }
}

impl fmt::Display for AddrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrKey::V4(a) => write!(f, "{}", Ipv4Addr::from(a)),
            AddrKey::V6(a, 128) => write!(f, "{}", Ipv6Addr::from(a)),
            AddrKey::V6(a, bits) => write!(f, "{}/{bits}", Ipv6Addr::from(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str, prefix: u8) -> AddrKey {
        AddrKey::of(s.parse().unwrap(), prefix)
    }

    #[test]
    fn ipv6_groups_by_prefix_and_mapped_ipv4_is_ipv4() {
        assert_eq!(key("2001:db8::1", 64), key("2001:db8::ffff:1", 64));
        assert_ne!(key("2001:db8::1", 64), key("2001:db8:0:1::1", 64));
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("::ffff:1.2.3.4", 64), key("1.2.3.4", 64));
        assert_ne!(key("1.2.3.4", 64), key("1.2.3.5", 64));
        assert_eq!(key("2001:db8::1", 64).to_string(), "2001:db8::/64");
        assert_eq!(key("2001:db8::1", 128).to_string(), "2001:db8::1");
        assert_eq!(key("10.0.0.1", 64).to_string(), "10.0.0.1");
        assert_eq!(key("2001:db8::1", 1), key("7fff::", 1));
    }
}
