//! `http://host:port/path?query` (or `https://`) templates with a `{topic}` placeholder.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crate::error::{Context, Error, Result};

/// The placeholder replaced by each topic name.
pub const TOPIC: &str = "{topic}";

/// A parsed URL template: where to connect, what to send as `Host`, and the request target.
#[derive(Clone, Debug)]
pub struct UrlTemplate {
    /// `host[:port]` as written, for the `Host` header.
    pub authority: String,
    /// Resolved address (IPv4 preferred, for source-address spreading over 127.0.0.x).
    pub addr: SocketAddr,
    target: String,
    /// `https://`: the TLS client configuration (`--tls-ca`), set after parsing.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `https://`.
    pub https: bool,
}

impl UrlTemplate {
    /// Parses and resolves `url` (`http://` or `https://`).
    pub fn parse(url: &str) -> Result<Self> {
        let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            _ => return Err(Error::msg(format!("{url}: only http:// and https:// URLs"))),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.is_empty() {
            return Err(Error::msg(format!("{url}: no host")));
        }
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:{}", if https { 443 } else { 80 })
        } else {
            authority.to_string()
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .context(format!("resolve {authority}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| Error::msg(format!("{authority}: no address")))?;
        Ok(UrlTemplate {
            authority: authority.to_string(),
            addr,
            target,
            tls: None,
            https,
        })
    }

    /// The host name the server's certificate must match.
    pub fn host(&self) -> &str {
        match self.authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => self.authority.split(':').next().unwrap_or(&self.authority),
        }
    }

    /// A TLS session for one connection, with `https://`.
    pub fn session(&self) -> std::io::Result<Option<crate::tls::Session>> {
        self.tls
            .as_ref()
            .map(|c| crate::tls::Session::new(c, self.host()))
            .transpose()
    }

    /// True when the template names the topic (needed to spread subscribers over topics).
    pub fn has_topic(&self) -> bool {
        self.target.contains(TOPIC)
    }

    /// The request target for one topic.
    pub fn target(&self, topic: &str) -> String {
        self.target.replace(TOPIC, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        let u = UrlTemplate::parse("http://127.0.0.1:8080/events?topic={topic}").unwrap();
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(u.has_topic());
        assert_eq!(u.target("t3"), "/events?topic=t3");

        let u = UrlTemplate::parse("http://127.0.0.1?x=1").unwrap();
        assert_eq!(u.addr.port(), 80);
        assert_eq!(u.target("t"), "/?x=1");
        assert!(!u.has_topic());

        let u = UrlTemplate::parse("https://localhost:9/x").unwrap();
        assert!(u.https);
        assert_eq!((u.addr.port(), u.host()), (9, "localhost"));
        assert!(UrlTemplate::parse("ftp://127.0.0.1/").is_err());
        assert!(UrlTemplate::parse("http:///x").is_err());
    }
}
