//! The two small systemd protocols the binary speaks, with no dependency on systemd itself:
//! readiness notification (`sd_notify`: `READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=…` as
//! datagrams to `$NOTIFY_SOCKET`) and socket activation (`sd_listen_fds`: listening sockets
//! inherited from the parent from descriptor 3 on, announced by `$LISTEN_PID`/`$LISTEN_FDS`).
//!
//! Both are inert when their variables are absent, so the same binary runs under systemd, under
//! another supervisor that speaks the protocols, or by hand. The variables are read once, at
//! start-up: a [`Notifier`] keeps the socket address, and [`take_listen_fds`] takes the
//! descriptors so that a child process started later does not believe it was activated.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// Most descriptors accepted from `$LISTEN_FDS` (a unit with more sockets is a mistake).
const LISTEN_FDS_MAX: usize = 64;

/// Sends state changes to the service manager, when there is one (`$NOTIFY_SOCKET`).
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, UnixAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and the watchdog
    /// interval (`$WATCHDOG_USEC`, honoured when `$WATCHDOG_PID` is absent or this process).
    /// Never fails: a socket that cannot be used is logged and notification is off.
    pub fn from_env() -> Notifier {
        Notifier::from_values(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }

    fn from_values(
        socket: Option<&std::ffi::OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let target = socket.and_then(|s| match open_target(s) {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {s:?} unusable, not notifying the service manager: {e}");
                None
            }
        });
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// True when a service manager listens.
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the manager's interval (`None`: no watchdog).
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.target.as_ref()?;
        self.watchdog.map(|w| w / 2)
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments). Errors are logged at debug
    /// level: a manager that went away must not disturb the server.
    pub fn notify(&self, state: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
            log::debug!("sd_notify {state:?} failed: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!(
            "READY=1\nSTATUS={}\nMAINPID={}",
            one_line(status),
            std::process::id()
        ));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` before a configuration reload, with the monotonic time the protocol asks.
    pub fn reloading(&self) {
        let usec = monotonic_usec();
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// `WATCHDOG=1`: the loop is alive.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn monotonic_usec() -> u64 {
    // CLOCK_MONOTONIC read through std: Instant has no epoch, so use the raw clock.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we own and pass by pointer.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0;
    if !ok {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000) + (ts.tv_nsec as u64) / 1_000
}

fn open_target(socket: &std::ffi::OsStr) -> io::Result<(UnixDatagram, UnixAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    let addr = match bytes.split_first() {
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty")),
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(name)?
        }
        Some((b'/', _)) => UnixAddr::from_pathname(std::path::Path::new(socket))?,
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor @abstract",
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    Ok((sock, addr))
}

/// Listening sockets handed over by the parent (socket activation), in order; empty when
/// `$LISTEN_PID` is not this process. The variables are removed so that children do not inherit
/// the claim. Each descriptor must be a listening TCP socket: anything else is an error naming
/// it, not a silent fallback to binding.
pub fn take_listen_fds() -> io::Result<Vec<TcpListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let count = listen_fd_count(pid.as_deref(), fds.as_deref(), std::process::id())?;
    if pid.is_some() || fds.is_some() {
        // Single-threaded at this point (the binary calls this before starting anything).
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    (0..count)
        .map(|i| adopt_listener(LISTEN_FDS_START + i as RawFd))
        .collect()
}

/// How many descriptors `$LISTEN_PID`/`$LISTEN_FDS` hand to process `pid`.
fn listen_fd_count(pid: Option<&str>, fds: Option<&str>, me: u32) -> io::Result<usize> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(0);
    };
    if pid.trim().parse::<u32>().ok() != Some(me) {
        return Ok(0); // meant for another process (e.g. our parent)
    }
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let n: usize = fds
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_FDS={fds:?} is not a number")))?;
    if n > LISTEN_FDS_MAX {
        return Err(invalid(format!(
            "LISTEN_FDS={n}: at most {LISTEN_FDS_MAX} sockets are accepted"
        )));
    }
    Ok(n)
}

/// Checks that descriptor `fd` is an open, listening stream socket; the error names it.
fn check_listener(fd: RawFd) -> io::Result<()> {
    let listening = sockopt(fd, libc::SO_ACCEPTCONN)
        .map_err(|e| io::Error::new(e.kind(), format!("inherited descriptor {fd}: {e}")))?;
    let kind = sockopt(fd, libc::SO_TYPE)?;
    if listening != 1 || kind != libc::SOCK_STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited descriptor {fd} is not a listening stream socket"),
        ));
    }
    Ok(())
}

/// Takes ownership of inherited descriptor `fd`, which must be a listening stream socket.
fn adopt_listener(fd: RawFd) -> io::Result<TcpListener> {
    check_listener(fd)?;
    // SAFETY: `fd` was handed to this process by its parent under the listen-fds protocol
    // ($LISTEN_PID is ours), it is an open socket (getsockopt succeeded), and nothing else in
    // the process owns it: the variables naming it were just removed, and this runs once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = TcpListener::from(owned);
    set_cloexec(&listener)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn sockopt(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which we own; a bad fd is
    // reported as EBADF/ENOTSOCK, not undefined behaviour.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_cloexec(listener: &TcpListener) -> io::Result<()> {
    let sock = socket2::SockRef::from(listener);
    sock.set_cloexec(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn listen_fds_are_for_the_named_process_only() {
        assert_eq!(listen_fd_count(None, None, 7).unwrap(), 0);
        assert_eq!(listen_fd_count(Some("8"), Some("2"), 7).unwrap(), 0);
        assert_eq!(listen_fd_count(Some("7"), Some("2"), 7).unwrap(), 2);
        assert_eq!(listen_fd_count(Some("7"), Some("0"), 7).unwrap(), 0);
        assert!(listen_fd_count(Some("7"), Some("x"), 7).is_err());
        assert!(listen_fd_count(Some("7"), Some("65"), 7).is_err());
    }

    #[test]
    fn a_descriptor_that_is_not_a_listener_is_refused_by_name() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let err = check_listener(a.as_raw_fd()).unwrap_err();
        assert!(
            err.to_string().contains("not a listening stream socket"),
            "{err}"
        );
        let err = check_listener(987_654).unwrap_err();
        assert!(
            err.to_string().contains("inherited descriptor 987654"),
            "{err}"
        );
    }

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("sseloop-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_values(Some(path.as_os_str()), Some("4000000"), None, 1);
        assert!(n.active());
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(2)));
        n.ready("listening on 127.0.0.1:1\nsecond line");
        n.stopping("SIGTERM");
        n.watchdog();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..3 {
            let len = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert!(
            got[0].starts_with("READY=1\nSTATUS=listening on 127.0.0.1:1 second line\nMAINPID=")
        );
        assert_eq!(got[1], "STOPPING=1\nSTATUS=SIGTERM");
        assert_eq!(got[2], "WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("sseloop-test-{}", std::process::id());
        let abstract_addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        let n = Notifier::from_values(Some(OsStr::new(&format!("@{name}"))), None, None, 1);
        n.notify("STATUS=x");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=x");
        assert_eq!(n.watchdog_every(), None);
    }

    #[test]
    fn no_socket_means_silence_and_a_watchdog_for_another_pid_is_ignored() {
        let n = Notifier::from_values(None, Some("1000000"), None, 1);
        assert!(!n.active());
        n.ready("x"); // nothing to send to, nothing fails
        assert_eq!(n.watchdog_every(), None);
        let n = Notifier::from_values(Some(OsStr::new("relative")), None, None, 1);
        assert!(!n.active());
        let dir = std::env::temp_dir();
        let n = Notifier::from_values(Some(dir.as_os_str()), Some("1000000"), Some("2"), 1);
        assert_eq!(n.watchdog, None, "WATCHDOG_PID names another process");
    }
}
