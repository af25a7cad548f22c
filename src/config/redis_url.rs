//! The `--backplane` URL: `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, `rediss://` for TLS, or
//! `redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]` for a Redis service
//! that Sentinel fails over (the addresses are the sentinels'; the credentials are the data
//! nodes'). Parsing, and a display form without the password (the only form that reaches logs
//! and pages).

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
    /// `redis+sentinel://`: the sentinels to ask and the master's name; `host`/`port` are then
    /// the first sentinel's.
    pub sentinel: Option<Sentinels>,
}

/// Most sentinels a `redis+sentinel://` URL names (the node listens to each).
pub const MAX_SENTINELS: usize = 16;

/// Where the sentinels are and which master they watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentinels {
    /// Each sentinel's host and port, in the order given (asked in turn).
    pub addrs: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under (`sentinel monitor NAME ...`).
    pub master: String,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RedisUrl {
    /// `redis://user:***@host:port/db`: the password is masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (&self.sentinel, self.tls) {
            (Some(_), _) => "redis+sentinel://",
            (None, true) => "rediss://",
            (None, false) => "redis://",
        })?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        match &self.sentinel {
            Some(s) => {
                for (i, (host, port)) in s.addrs.iter().enumerate() {
                    f.write_str(if i == 0 { "" } else { "," })?;
                    write_host(f, host, *port)?;
                }
                write!(f, "/{}", s.master)?;
            }
            None => write_host(f, &self.host, self.port)?,
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

fn write_host(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

impl RedisUrl {
    /// Parses a backplane URL; the error says what is wrong without repeating the password.
    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        let (rest, tls, sentinel) = if let Some(rest) = s.strip_prefix("redis://") {
            (rest, false, false)
        } else if let Some(rest) = s.strip_prefix("rediss://") {
            (rest, true, false)
        } else if let Some(rest) = s.strip_prefix("redis+sentinel://") {
            (rest, false, true)
        } else if s.starts_with("rediss+sentinel://") {
            return Err(
                "TLS with Sentinel (rediss+sentinel://) is not supported: use \
                        redis+sentinel:// on a private network, or rediss:// to one Redis"
                    .into(),
            );
        } else {
            return Err(
                "the backplane URL must start with redis://, rediss:// or redis+sentinel://".into(),
            );
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
        let (path, sentinel) = if sentinel {
            let (master, db) = path.split_once('/').unwrap_or((path, ""));
            if master.is_empty() {
                return Err(
                    "redis+sentinel:// needs the master's name: redis+sentinel://HOST:PORT/NAME"
                        .into(),
                );
            }
            let addrs = hostport
                .split(',')
                .map(host_port)
                .collect::<Result<Vec<_>, _>>()?;
            if addrs.len() > MAX_SENTINELS {
                return Err(format!("at most {MAX_SENTINELS} sentinels"));
            }
            let master = master.to_string();
            (db, Some(Sentinels { addrs, master }))
        } else {
            (path, None)
        };
        let (host, port) = match &sentinel {
            Some(s) => s.addrs[0].clone(),
            None => host_port(hostport)?,
        };
        let db = if path.is_empty() {
            0
        } else {
            path.parse()
                .map_err(|_| "the backplane database must be a number (redis://HOST:PORT/DB)")?
        };
        Ok(RedisUrl {
            host,
            port,
            user,
            password,
            db,
            tls,
            sentinel,
        })
    }
}

/// `HOST:PORT` or `[V6]:PORT`.
fn host_port(hostport: &str) -> Result<(String, u16), String> {
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
    Ok((host.to_string(), port))
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
        let u = RedisUrl::parse("redis+sentinel://:pw@10.0.0.1:26379,[::1]:26380/main/2").unwrap();
        let s = u.sentinel.as_ref().unwrap();
        assert_eq!(s.master, "main");
        assert_eq!(
            s.addrs,
            [("10.0.0.1".to_string(), 26379), ("::1".to_string(), 26380)]
        );
        assert_eq!((u.db, u.password.as_deref()), (2, Some("pw")));
        assert_eq!(
            u.to_string(),
            "redis+sentinel://:***@10.0.0.1:26379,[::1]:26380/main/2"
        );
        let u = RedisUrl::parse("redis+sentinel://s:26379/m").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("s", 26379, 0));
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
            "redis+sentinel://s:26379",
            "redis+sentinel://s:26379/",
            "redis+sentinel://s:26379,t/m",
            "redis+sentinel://s:26379/m/x",
            "rediss+sentinel://s:26379/m",
        ] {
            let err = RedisUrl::parse(bad).unwrap_err();
            assert!(!err.contains("zz"), "{bad}: {err}");
        }
    }
}
