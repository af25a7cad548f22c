//! A throwaway `redis-server` per test, for the backplane tests: its own free loopback port and
//! temporary directory, started with `--daemonize no` as a child of the test, killed by its PID
//! and its directory removed on drop. It can be paused (SIGSTOP), resumed (SIGCONT), stopped
//! (SIGKILL, then reaped) and started again on the same port and directory, which is how the tests
//! model a Redis that hangs, dies, restarts from its AOF or restarts empty.
//!
//! Also a minimal RESP client ([`RedisServer::command`]) for the readiness probe and for looking
//! at the keys the backplane created.
//!
//! Included by the test file with `#[path = "util/redis.rs"] mod redis;` next to `mod util;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::{print_tail, TIMEOUT};

/// The server binary: `SSELOOP_REDIS_SERVER` if set, else `redis-server` from `PATH`.
fn redis_binary() -> String {
    std::env::var("SSELOOP_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// Whether `redis-server` can be run. Without it a test returns early with a note on stderr,
/// unless `SSELOOP_REQUIRE_TOOLS=1` (CI sets it), which turns the absence into a failure.
pub fn redis_available() -> bool {
    runs(&redis_binary(), "redis-server", "the Redis backplane tests")
}

/// Whether `binary --version` runs; if not, the note (or the failure) of [`super::skipped`].
fn runs(binary: &str, package: &str, group: &str) -> bool {
    let found = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        super::skipped(package, group, &format!("apt-get install {package}"));
    }
    found
}

/// How the Redis dataset survives a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// `--save "" --appendonly no`: a restart starts from an empty dataset.
    None,
    /// `--save "" --appendonly yes --appendfsync always`: every acknowledged write survives a
    /// SIGKILL and is loaded again at restart.
    Aof,
}

/// A `redis-server` child process with its own port and directory.
pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    pub persistence: Persistence,
    pub password: Option<String>,
    /// More `redis-server` arguments (e.g. `--replicaof 127.0.0.1 PORT`).
    pub extra: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A new directory under the temporary directory, named after `kind`, this process and a counter.
fn unique_dir(kind: &str) -> PathBuf {
    let unique = format!(
        "sseloop-{kind}-{}-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let dir = std::env::temp_dir().join(unique);
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// A loopback port nobody listens on right now (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts Redis and waits until it answers `PING`.
    pub fn start(persistence: Persistence) -> RedisServer {
        let mut redis = Self::prepare(persistence, None);
        redis.launch();
        redis
    }

    /// Starts Redis with `--requirepass password`.
    pub fn start_with_password(persistence: Persistence, password: &str) -> RedisServer {
        let mut redis = Self::prepare(persistence, Some(password));
        redis.launch();
        redis
    }

    /// Picks the port and creates the directory, without starting anything: [`Self::url`] is
    /// known before Redis runs (for a node started while its Redis is down); [`Self::launch`]
    /// starts it.
    pub fn prepare(persistence: Persistence, password: Option<&str>) -> RedisServer {
        let dir = unique_dir("redis");
        RedisServer {
            port: free_port(),
            dir,
            persistence,
            password: password.map(str::to_string),
            extra: Vec::new(),
            child: None,
            paused: false,
        }
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT` with a password.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The running process's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("Redis is not running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Redis's own log (`--logfile`), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Starts `redis-server` on this port and directory and waits until it answers `PING` (an
    /// AOF restart answers `-LOADING` first). Panics if it exits or does not answer within
    /// [`TIMEOUT`].
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "Redis is already running");
        let mut cmd = Command::new(redis_binary());
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        match self.persistence {
            Persistence::None => {
                cmd.arg("--appendonly").arg("no");
            }
            Persistence::Aof => {
                cmd.arg("--appendonly")
                    .arg("yes")
                    .arg("--appendfsync")
                    .arg("always");
            }
        }
        if let Some(pw) = &self.password {
            cmd.arg("--requirepass").arg(pw);
        }
        cmd.args(&self.extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
        self.paused = false;
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                panic!(
                    "redis-server exited ({status}) on port {}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if self.try_ping() {
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "redis-server on port {} did not answer PING; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One connection: `AUTH` if there is a password, then `PING`; true on `+PONG`.
    fn try_ping(&self) -> bool {
        let Ok(mut conn) = RespConn::open(self.addr(), Duration::from_millis(500)) else {
            return false;
        };
        if let Some(pw) = &self.password {
            if !matches!(conn.command(&["AUTH", pw]), Ok(Reply::Status(_))) {
                return false;
            }
        }
        matches!(conn.command(&["PING"]), Ok(Reply::Status(s)) if s == "PONG")
    }

    /// Sends one command on a new connection (authenticated when there is a password).
    pub fn command(&self, args: &[&str]) -> Reply {
        let mut conn = RespConn::open(self.addr(), TIMEOUT).expect("connect to Redis");
        if let Some(pw) = &self.password {
            let auth = conn.command(&["AUTH", pw]).expect("AUTH");
            assert!(matches!(auth, Reply::Status(_)), "AUTH: {auth:?}");
        }
        conn.command(args)
            .unwrap_or_else(|e| panic!("Redis {args:?}: {e}"))
    }

    /// Every key in the dataset (`KEYS *`; the test datasets are tiny).
    pub fn keys(&self) -> Vec<String> {
        match self.command(&["KEYS", "*"]) {
            Reply::Array(Some(items)) => items
                .into_iter()
                .map(|item| match item {
                    Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                    other => panic!("KEYS item {other:?}"),
                })
                .collect(),
            other => panic!("KEYS *: {other:?}"),
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig}) on redis-server failed");
    }

    /// SIGSTOP: Redis keeps its sockets (connections stay open, the kernel still accepts and
    /// buffers) but answers nothing until [`Self::resume`].
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// SIGKILL, then waits for the process to be gone (its sockets are closed by then).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// [`Self::stop`] then [`Self::launch`]: same port, same directory, same persistence.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl RedisServer {
    /// Starts a replica of this server (no persistence) and waits until a write here is
    /// acknowledged by `WAIT` (its first sync done). Start the master with
    /// `--repl-diskless-sync-delay 0` in `extra` to skip Redis's 5 s wait for more replicas.
    pub fn start_replica(&self) -> RedisServer {
        let r = self.launch_replica();
        let synced = wait(TIMEOUT, || {
            let Ok(mut c) = RespConn::open(self.addr(), TIMEOUT) else {
                return false;
            };
            let _ = c.command(&["SET", "replica-probe", "1"]);
            matches!(c.command(&["WAIT", "1", "100"]), Ok(Reply::Int(n)) if n >= 1)
        });
        assert!(synced, "the replica never acknowledged a write");
        r
    }

    /// Starts a replica of this replica (chained replication) and waits until a write on `top`,
    /// the master above both, reaches it. Sentinel knows a master's direct replicas only, so
    /// with the chain the failover has one candidate, the replica whose `WAIT` acknowledgements
    /// count, and once promoted it has a replica of its own at once.
    pub fn start_replica_below(&self, top: &RedisServer) -> RedisServer {
        let r = self.launch_replica();
        let probe = format!("chain-probe-{}", r.port);
        let synced = wait(TIMEOUT, || {
            let Ok(mut c) = RespConn::open(top.addr(), TIMEOUT) else {
                return false;
            };
            let _ = c.command(&["SET", &probe, "1"]);
            let Ok(mut d) = RespConn::open(r.addr(), TIMEOUT) else {
                return false;
            };
            matches!(d.command(&["GET", &probe]), Ok(Reply::Bulk(Some(v))) if v == b"1")
        });
        assert!(
            synced,
            "a write on the master never reached the chained replica"
        );
        r
    }

    /// A replica of this server (no persistence), launched; its first sync not waited for.
    fn launch_replica(&self) -> RedisServer {
        let mut r = RedisServer::prepare(Persistence::None, None);
        // Promoted by a failover, it syncs the other replicas at once too.
        r.extra = vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            self.port.to_string(),
            "--repl-diskless-sync-delay".into(),
            "0".into(),
        ];
        r.launch();
        r
    }

    /// Starts a server with more arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut r = RedisServer::prepare(Persistence::None, None);
        r.extra = extra.iter().map(|a| a.to_string()).collect();
        r.launch();
        r
    }
}

fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A `redis-sentinel` child process watching one master under the name `m` (quorum 2, down
/// after 1 s, failover timeout 3 s), with its own port and directory (Sentinel rewrites its
/// configuration file); killed by its PID on drop.
pub struct Sentinel {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The sentinel binary: `SSELOOP_REDIS_SENTINEL` if set, else `redis-sentinel` from `PATH`.
fn sentinel_binary() -> String {
    std::env::var("SSELOOP_REDIS_SENTINEL").unwrap_or_else(|_| "redis-sentinel".to_string())
}

/// Whether `redis-sentinel` can be run (see [`redis_available`]).
pub fn sentinel_available() -> bool {
    runs(
        &sentinel_binary(),
        "redis-sentinel",
        "the Sentinel failover tests",
    )
}

impl Sentinel {
    /// Starts a sentinel monitoring `master` and waits until it answers `PING`.
    pub fn start(master: &RedisServer, password: Option<&str>) -> Sentinel {
        let dir = unique_dir("sentinel");
        let port = free_port();
        let conf = dir.join("sentinel.conf");
        // down-after 3 s, not less: at 1 s, on a busy machine, the sentinels sometimes marked
        // the master they had just promoted down about a second after the switch and failed over
        // again, which leaves the newest master without a replica for many seconds.
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
             sentinel monitor m 127.0.0.1 {} 2\n\
             sentinel down-after-milliseconds m 3000\n\
             sentinel failover-timeout m 3000\n\
             sentinel parallel-syncs m 2\n",
            dir.display(),
            dir.join("sentinel.log").display(),
            master.port
        );
        if let Some(pw) = password {
            text.push_str(&format!("requirepass {pw}\n"));
        }
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = Command::new(sentinel_binary())
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-sentinel");
        let sentinel = Sentinel {
            port,
            dir,
            child: Some(child),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while RespConn::open(addr, Duration::from_millis(200)).is_err() {
            assert!(start.elapsed() < TIMEOUT, "redis-sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        sentinel
    }

    /// Sends one command (after `AUTH` when `password` is given).
    pub fn command(&self, password: Option<&str>, args: &[&str]) -> Reply {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut conn = RespConn::open(addr, TIMEOUT).expect("connect to the sentinel");
        if let Some(pw) = password {
            conn.command(&["AUTH", pw]).expect("AUTH");
        }
        conn.command(args).expect("sentinel command")
    }

    /// The master's port as this sentinel names it now.
    pub fn master_port(&self, password: Option<&str>) -> Option<u16> {
        match self.command(password, &["SENTINEL", "get-master-addr-by-name", "m"]) {
            Reply::Array(Some(parts)) => match parts.get(1) {
                Some(Reply::Bulk(Some(p))) => String::from_utf8_lossy(p).parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // A failing test shows what the sentinels decided (+sdown, +odown, +switch-master).
            print_tail(
                &format!("sentinel :{}", self.port),
                &self.log().lines().collect::<Vec<_>>(),
                60,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        self.stop();
        if std::thread::panicking() {
            print_tail(
                &format!("redis :{}", self.port),
                &self.log().lines().collect::<Vec<_>>(),
                40,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// A blocking RESP connection.
pub struct RespConn {
    reader: BufReader<TcpStream>,
}

impl RespConn {
    pub fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<RespConn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(RespConn {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `args` as a RESP array of bulk strings and reads one reply.
    pub fn command(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out)?;
        self.reply()
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn reply(&mut self) -> std::io::Result<Reply> {
        let line = self.line()?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad RESP reply");
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0u8; len as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    buf.truncate(len as usize);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(self.reply()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad()),
        })
    }
}
