//! The `--backplane` URL: `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://` for TLS. Parsing, and a display form
//! without the password (the only form that reaches logs and pages).

use std::fmt;

/// Where the backplane's Redis is and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address (brackets removed from an IPv6 literal).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user (`AUTH user password`); `None` with a password alone is `AUTH password`.
    pub user: Option<String>,
    /// Password; never printed.
    pub password: Option<String>,
    /// Database number (`SELECT`).
    pub db: u32,
    /// `rediss://`: TLS, the server's name verified against `host`.
    pub tls: bool,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RedisUrl {
    /// `redis://user:***@host:port/db`: the password is masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl RedisUrl {
    /// Parses a backplane URL; the error says what is wrong without repeating the password.
    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        let (rest, tls) = match (s.strip_prefix("redis://"), s.strip_prefix("rediss://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => {
                return Err("the backplane URL must start with redis:// or rediss://".into())
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (u, p) = match info.find(':') {
                    Some(i) => (&info[..i], Some(&info[i + 1..])),
                    None => (info, None),
                };
                let user = (!u.is_empty()).then(|| percent_decode(u)).transpose()?;
                let password = p.map(percent_decode).transpose()?;
                (user, password)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let end = v6.find(']').ok_or("unclosed [ in the backplane host")?;
            let port = v6[end + 1..]
                .strip_prefix(':')
                .ok_or("the backplane URL needs HOST:PORT")?;
            (&v6[..end], port)
        } else {
            hostport
                .rsplit_once(':')
                .ok_or("the backplane URL needs HOST:PORT")?
        };
        if host.is_empty() {
            return Err("the backplane URL has an empty host".into());
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or("the backplane port must be 1..=65535")?;
        let db = if path.is_empty() {
            0
        } else {
            path.parse()
                .map_err(|_| "the backplane database must be a number (redis://HOST:PORT/DB)")?
        };
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            user,
            password,
            db,
            tls,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad %-escape in the backplane credentials")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the backplane credentials are not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form_and_masks_the_password() {
        let u = RedisUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6379, 0));
        assert_eq!(u.password, None);
        let u = RedisUrl::parse("redis://:s%40cret@localhost:7000/3").unwrap();
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.user, None);
        assert_eq!(u.db, 3);
        assert_eq!(u.to_string(), "redis://:***@localhost:7000/3");
        let u = RedisUrl::parse("redis://app:pw@[::1]:6380").unwrap();
        assert_eq!((u.user.as_deref(), u.host.as_str()), (Some("app"), "::1"));
        assert_eq!(u.to_string(), "redis://app:***@[::1]:6380");
        assert!(!format!("{u:?}").contains("pw"));
        let u = RedisUrl::parse("rediss://:pw@redis.example:6380").unwrap();
        assert!(u.tls);
        assert_eq!(u.to_string(), "rediss://:***@redis.example:6380");
        assert!(!RedisUrl::parse("redis://x:1").unwrap().tls);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in [
            "http://x:1",
            "redis://x",
            "redis://x:0",
            "redis://x:70000",
            "redis://:1",
            "redis://x:1/db",
            "redis://u:%zz@x:1",
            "rediss:/x:1",
        ] {
            let err = RedisUrl::parse(bad).unwrap_err();
            assert!(!err.contains("zz"), "{bad}: {err}");
        }
    }
}
