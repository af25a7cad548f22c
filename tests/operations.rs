//! Running the binary as operators do (docs/OPERATIONS.md): a configuration file with its
//! precedence and errors, `--check-config`, `--print-config`, SIGHUP reloads (a JWT secret rotated
//! under 100 open streams; a broken file refused), socket activation by a stand-in parent
//! (including a restart with a client waiting in the backlog), sd_notify messages read from a
//! test `NOTIFY_SOCKET`, JSON log lines, the process metrics against `/proc`, `--version`, and
//! `make install DESTDIR=…`.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use util::*;

/// A scratch directory for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sseloop-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sseloop"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_config_file_with_precedence_check_and_print() {
    let dir = Scratch::new("precedence");
    let secret = dir.file("token", "s3cr3t-from-a-file\n");
    let cfg = dir.file(
        "sseloop.toml",
        &format!(
            "heartbeat-ms = 1111\nretry-ms = 2222\nhistory = 33\nui = true\n\
             publish-token-file = {:?}\n",
            secret.display().to_string()
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    let (code, out, err) = run_with_env(
        &["--config", cfg_s, "--print-config", "--heartbeat-ms", "5"],
        &[
            ("SSELOOP_RETRY_MS", "7"),
            ("SSELOOP_LISTEN", "127.0.0.1:9999"),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("heartbeat-ms = 5  # command line"), "{out}");
    assert!(out.contains("retry-ms = 7  # SSELOOP_RETRY_MS"), "{out}");
    assert!(out.contains(&format!("history = 33  # {cfg_s}:3")), "{out}");
    assert!(
        out.contains("listen = \"127.0.0.1:9999\"  # SSELOOP_LISTEN"),
        "{out}"
    );
    assert!(out.contains("ui = true"), "{out}");
    assert!(out.contains("publish-token = \"<redacted>\""), "{out}");
    assert!(!out.contains("s3cr3t"), "a secret printed: {out}");

    let (code, out, _) = run_with_env(&["--config", cfg_s, "--check-config"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("configuration ok"));

    // A bad value names the file, the line, the key and the range, and exits 1.
    let bad = dir.file("bad.toml", "ui = true\n\nmax-queue-bytes = \"1k\"\n");
    let (code, _, err) = run_with_env(&["--config", bad.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:3: max-queue-bytes: must be between 65536 and 1099511627776 (got 1024)",
            bad.display()
        )),
        "{err}"
    );
    // A combination the server refuses: --check-config says so and exits 1.
    let combo = dir.file(
        "combo.toml",
        "max-body = \"4M\"\nmax-queue-bytes = \"1M\"\n",
    );
    let (code, _, err) = run_with_env(
        &["--config", combo.to_str().unwrap(), "--check-config"],
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--max-queue-bytes (1048576) must be at least"),
        "{err}"
    );
    // An environment error names the variable, not the flag.
    let (code, _, err) = run_with_env(&["--check-config"], &[("SSELOOP_HISTORY", "lots")]);
    assert_eq!(code, Some(1));
    // Without --check-config the same configuration is a failure to start.
    let (code, _, _) = run_with_env(&["--print-config"], &[("SSELOOP_HISTORY", "lots")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("SSELOOP_HISTORY=\"lots\""), "{err}");
    assert!(!err.contains("--history"), "{err}");
}

#[test]
fn sseloop_listen_from_the_environment_and_the_short_form() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sseloop"));
    cmd.env("SSELOOP_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_until(TIMEOUT, || std::net::TcpStream::connect(addr).is_ok()));
    let resp = request(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let _ = child.kill();
    let _ = child.wait();
    // `:PORT` is every IPv4 address (a public one needs a publish token or --open-publish).
    let server = TestServer::start_on(":0", &["--open-publish"]);
    let logged = || server.log.lock().unwrap().join("\n");
    assert!(
        wait_until(TIMEOUT, || logged().contains("listening on 0.0.0.0:")),
        "{}",
        logged()
    );
}

const SECRET_A: &str = "first-secret-of-at-least-32-bytes!!";
const SECRET_B: &str = "second-secret-of-at-least-32-bytes!";

fn token(secret: &str, exp_in: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": "ops", "exp": now + exp_in,
        "sseloop": {"subscribe": ["t"], "publish": ["t"]}});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn sighup_rotates_the_jwt_secret_under_100_open_streams_and_refuses_a_broken_file() {
    raise_open_files(4096);
    let dir = Scratch::new("sighup");
    let secret_file = dir.file("jwt", &format!("{SECRET_A}\n"));
    let cfg = dir.file(
        "sseloop.toml",
        &format!(
            "jwt-secret-file = {:?}\nheartbeat-ms = 60000\n",
            secret_file.display().to_string()
        ),
    );
    let server = TestServer::start(&["--config", cfg.to_str().unwrap()]);
    let old = token(SECRET_A, 300);
    let auth_old = format!("Bearer {old}");
    let mut streams: Vec<SseClient> = (0..100)
        .map(|_| server.subscribe("topic=t", &[("Authorization", auth_old.as_str())]))
        .collect();
    assert!(streams.iter().all(|s| s.status == 200));

    // Rotate: the file now holds a new secret; SIGHUP applies it without closing anything.
    std::fs::write(&secret_file, format!("{SECRET_B}\n")).unwrap();
    server.signal(libc::SIGHUP);
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_config_reloads_total{result=\"ok\"}")
        == 1.0));
    let new = format!("Bearer {}", token(SECRET_B, 300));
    let fresh_old = SseClient::open(
        server.addr,
        "/events?topic=t",
        &[("Authorization", auth_old.as_str())],
    );
    assert_eq!(
        fresh_old.status, 401,
        "the old secret no longer opens streams"
    );
    let r = server.post(
        "topic=t",
        "after-rotation",
        &[("Authorization", new.as_str())],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for s in streams.iter_mut() {
        let ev = s
            .next_event_within(TIMEOUT)
            .expect("stream opened before the rotation still runs");
        assert_eq!(ev.data, "after-rotation");
    }

    // A broken file is refused whole: the secret in force and every stream stay.
    std::fs::write(&cfg, "heartbeat-ms = \"soon\"\n").unwrap();
    server.signal(libc::SIGHUP);
    assert!(wait_until(TIMEOUT, || server
        .metric("sseloop_config_reloads_total{result=\"error\"}")
        == 1.0));
    let r = server.post("topic=t", "still-b", &[("Authorization", new.as_str())]);
    assert_eq!(r.status, 200);
    for s in streams.iter_mut() {
        assert_eq!(s.next_event_within(TIMEOUT).unwrap().data, "still-b");
    }
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("configuration reloaded: changed [jwt_secret]"),
        "{log}"
    );
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(
        log.contains("heartbeat-ms"),
        "the error names the key: {log}"
    );
    assert!(
        !log.contains(SECRET_A) && !log.contains(SECRET_B),
        "a secret was logged"
    );
}

/// A stand-in service manager: holds a listening socket and starts the server on it through
/// the listen-fds protocol (the socket as descriptor 3, `LISTEN_PID` set by the shell to its own
/// pid before it execs the server).
fn activate(listener: &std::net::TcpListener, notify: Option<&Path>) -> std::process::Child {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    // Let the descriptor survive exec (std sets close-on-exec); the shell moves it to 3.
    // SAFETY: fcntl on a descriptor this test owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
    }
    let moved = if fd == 3 {
        String::new()
    } else {
        format!("exec 3<&{fd}; exec {fd}<&-; ")
    };
    let script = format!("{moved}LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --listen 127.0.0.1:1");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_sseloop"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match notify {
        Some(p) => cmd.env("NOTIFY_SOCKET", p),
        None => cmd.env_remove("NOTIFY_SOCKET"),
    };
    cmd.env("WATCHDOG_USEC", "200000");
    cmd.spawn().unwrap()
}

fn stop(child: &mut std::process::Child) {
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < TIMEOUT, "server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn socket_activation_keeps_clients_waiting_across_a_restart_and_notify_reports_states() {
    let dir = Scratch::new("activation");
    let notify_path = dir.0.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(TIMEOUT)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    let mut first = activate(&listener, Some(&notify_path));
    let mut buf = [0u8; 512];
    let mut next_msg = || loop {
        // A signal to the test process (another test's child exiting) may interrupt the wait.
        match notify.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            received => {
                let n = received.expect("a notify message");
                break String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
    };
    let ready = next_msg();
    assert!(
        ready.starts_with("READY=1\nSTATUS=listening on "),
        "{ready}"
    );
    assert!(
        ready.contains(&addr.to_string()),
        "serves the inherited socket: {ready}"
    );
    // WATCHDOG_USEC=200000: WATCHDOG=1 at least every 100 ms while the loop runs.
    let watchdogs = (0..3).filter(|_| next_msg() == "WATCHDOG=1").count();
    assert_eq!(watchdogs, 3);
    let publish = "POST /publish?topic=t HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\
                   Connection: close\r\n\r\nx";
    let id = json_id(&request(addr, publish).text());
    assert!(!id.is_empty());
    stop(&mut first);
    let mut saw_stopping = false;
    while let Ok(n) = notify.recv(&mut buf) {
        if buf[..n].starts_with(b"STOPPING=1") {
            saw_stopping = true;
            break;
        }
    }
    assert!(saw_stopping, "STOPPING=1 on SIGTERM");

    // Between the two servers the socket stays open: a client connects and waits.
    let mut waiting = std::net::TcpStream::connect(addr).expect("the backlog takes the client");
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut second = activate(&listener, None);
    waiting.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stop(&mut second);
}

#[test]
fn json_log_lines_parse() {
    let mut server = TestServer::start(&["--log-format", "json", "--access-log"]);
    let _ = server.publish("topic=t", "x");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(TIMEOUT), Some(0));
    let lines = server.log.lock().unwrap().clone();
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["ts", "level", "target", "msg"] {
            assert!(v[field].is_string(), "{field} in {line}");
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("authorization none")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"target\":\"sseloop::access\"")),
        "{lines:?}"
    );
}

/// A static token's refusal leaves the same INFO line as a JWT's (it used to leave none).
#[test]
fn a_refused_static_token_is_logged() {
    let server = TestServer::start(&["--publish-token", "right-token"]);
    let resp = server.post("topic=t", "x", &[("Authorization", "Bearer WRONG-TOKEN")]);
    assert_eq!(resp.status, 401);
    assert_eq!(server.post("topic=t", "x", &[]).status, 401);
    let refused = || -> Vec<String> {
        let log = server.log.lock().unwrap();
        log.iter()
            .filter(|l| l.contains("authorization refused"))
            .cloned()
            .collect()
    };
    assert!(
        wait_until(TIMEOUT, || refused().len() == 2),
        "{:?}",
        refused()
    );
    let lines = refused();
    assert!(lines[0].contains("INFO"), "{lines:?}");
    assert!(
        lines[0].contains("path=/publish status=401 reason=wrong_token"),
        "{lines:?}"
    );
    assert!(lines[1].contains("reason=missing"), "{lines:?}");
    let log = server.log.lock().unwrap();
    assert!(log.iter().all(|l| !l.contains("WRONG-TOKEN")));
}

fn proc_status_kib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1024.0
}

#[test]
fn process_metrics_match_proc() {
    let server = TestServer::start(&[]);
    let pid = server.child.id();
    let _streams: Vec<SseClient> = (0..20).map(|_| server.subscribe("topic=t", &[])).collect();
    let m = server.metrics();
    let rss = m["process_resident_memory_bytes"];
    let vm_rss = proc_status_kib(pid, "VmRSS:");
    assert!(
        (rss - vm_rss).abs() < vm_rss * 0.2,
        "{rss} vs VmRSS {vm_rss}"
    );
    let vsz = m["process_virtual_memory_bytes"];
    assert!(
        (vsz - proc_status_kib(pid, "VmSize:")).abs() < vsz * 0.1,
        "{vsz}"
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    // 20 streams plus the metrics request itself; the listener, epoll, waker, signals, stdio.
    assert!(
        m["process_open_fds"] >= 26.0 && (m["process_open_fds"] - fds).abs() <= 2.0,
        "{} vs {fds}",
        m["process_open_fds"]
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let max: f64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(m["process_max_fds"], max);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = m["process_start_time_seconds"];
    assert!(start <= now && start > now - 60.0, "{start} vs {now}");
    let cpu = m["process_cpu_seconds_total"];
    assert!((0.0..60.0).contains(&cpu));
    assert!(
        m.keys()
            .any(|k| k.starts_with("sseloop_build_info{version=\"")),
        "build info"
    );
}

#[test]
fn version_names_the_commit() {
    let (code, out, _) = run_with_env(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with(&format!("sseloop {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

#[test]
fn make_install_and_uninstall_with_destdir() {
    if Command::new("make").arg("--version").output().is_err() {
        skipped("make", "the make install test", "apt-get install make");
        return;
    }
    let dir = Scratch::new("install");
    let build_dir = Path::new(env!("CARGO_BIN_EXE_sseloop"))
        .parent()
        .unwrap()
        .to_path_buf();
    if !build_dir.join("libsseloop.so").exists() {
        eprintln!(
            "SKIPPED make install: the C library was not built in {}",
            build_dir.display()
        );
        return;
    }
    let make = |target: &str| {
        let out = Command::new("make")
            .arg("-s")
            .arg(target)
            .arg(format!("DESTDIR={}", dir.0.display()))
            .arg("PREFIX=/usr/local")
            .arg(format!("BUILD_DIR={}", build_dir.display()))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    make("install");
    let listed: Vec<String> = make("install-files").lines().map(str::to_string).collect();
    let mut found = Vec::new();
    collect_files(&dir.0, &mut found);
    let mut found: Vec<String> = found
        .iter()
        .map(|p| p.strip_prefix(&dir.0).unwrap().display().to_string())
        .map(|p| format!("/{p}"))
        .collect();
    found.sort();
    let mut expected = listed.clone();
    expected.sort();
    assert_eq!(
        found, expected,
        "install writes exactly what install-files lists"
    );
    for want in [
        "/usr/local/bin/sseloop",
        "/usr/local/share/man/man1/sseloop.1",
        "/usr/local/share/bash-completion/completions/sseloop",
        "/usr/local/share/zsh/site-functions/_sseloop",
        "/usr/local/share/fish/vendor_completions.d/sseloop.fish",
        "/usr/local/lib/systemd/system/sseloop.service",
        "/usr/local/lib/systemd/system/sseloop.socket",
        "/usr/local/lib/libsseloop.so",
        "/usr/local/include/sseloop.h",
        "/usr/local/lib/pkgconfig/sseloop.pc",
        "/usr/local/etc/sseloop/sseloop.toml",
    ] {
        assert!(
            found.iter().any(|f| f == want),
            "{want} not installed: {found:?}"
        );
    }
    let unit = std::fs::read_to_string(dir.0.join("usr/local/lib/systemd/system/sseloop.service"))
        .unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/sseloop --config /usr/local/etc/sseloop/sseloop.toml"
        ),
        "{unit}"
    );
    let man = std::fs::read_to_string(dir.0.join("usr/local/share/man/man1/sseloop.1")).unwrap();
    assert!(
        man.contains("max\\-queue\\-bytes"),
        "the man page lists the options"
    );
    // The example configuration is a valid one.
    let (code, _, err) = run_with_env(
        &[
            "--config",
            dir.0
                .join("usr/local/etc/sseloop/sseloop.toml")
                .to_str()
                .unwrap(),
            "--check-config",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    make("uninstall");
    let mut left = Vec::new();
    collect_files(&dir.0, &mut left);
    assert!(left.is_empty(), "uninstall left {left:?}");
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED systemd_units_pass_systemd_analyze_verify: systemd-analyze is not installed (apt-get install systemd)");
        assert!(
            std::env::var_os("SSELOOP_REQUIRE_TOOLS").is_none(),
            "systemd-analyze required"
        );
        return;
    }
    let dir = Scratch::new("units");
    let bin = env!("CARGO_BIN_EXE_sseloop");
    // `Documentation=man:sseloop(1)` is checked too: give it the generated page.
    std::fs::create_dir_all(dir.0.join("man/man1")).unwrap();
    let man = Command::new(bin)
        .args(["--generate", "man"])
        .output()
        .unwrap();
    std::fs::write(dir.0.join("man/man1/sseloop.1"), man.stdout).unwrap();
    let unit = std::fs::read_to_string(format!(
        "{}/contrib/systemd/sseloop.service.in",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("@BINDIR@/sseloop", bin)
    .replace("@SYSCONFDIR@", dir.0.to_str().unwrap());
    dir.file("sseloop.service", &unit);
    std::fs::copy(
        format!(
            "{}/contrib/systemd/sseloop.socket",
            env!("CARGO_MANIFEST_DIR")
        ),
        dir.0.join("sseloop.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.0.join("sseloop.socket"))
        .arg(dir.0.join("sseloop.service"))
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .env("MANPATH", dir.0.join("man"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Only complaints about our two units count (the host's own units may be odd in a container).
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("sseloop")).collect();
    assert!(out.status.success() && ours.is_empty(), "{text}");
}

/// The options' one source of truth: every setting of `--help` appears as a flag in the man page
/// and the bash/zsh/fish completions, as a key in `--print-config`, and in docs/OPTIONS.md, whose
/// table is exactly what the binary generates.
#[test]
fn every_option_appears_in_man_page_completions_print_config_and_docs() {
    let bin = env!("CARGO_BIN_EXE_sseloop");
    let gen = |what: &str| {
        let out = Command::new(bin)
            .args(["--generate", what])
            .output()
            .unwrap();
        assert!(out.status.success(), "--generate {what}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = gen("markdown");
    let doc =
        std::fs::read_to_string(format!("{}/docs/OPTIONS.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = doc.find("-->\n").map(|i| i + 4).unwrap();
    let end = doc.find("<!-- end of options table -->").unwrap();
    assert_eq!(
        &doc[start..end],
        table,
        "docs/OPTIONS.md is stale: regenerate it with `sseloop --generate markdown`"
    );
    let (man, bash, zsh, fish) = (gen("man"), gen("bash"), gen("zsh"), gen("fish"));
    let (_, printed, _) = run_with_env(&["--print-config"], &[]);
    let mut n = 0;
    for row in table.lines().skip(2) {
        let long = row.split('`').nth(1).unwrap().split(' ').next().unwrap();
        let key = long.trim_start_matches("--");
        n += 1;
        assert!(
            man.contains(&long.replace('-', "\\-")),
            "{long} not in the man page"
        );
        assert!(bash.contains(long), "{long} not in the bash completion");
        assert!(zsh.contains(long), "{long} not in the zsh completion");
        assert!(
            fish.contains(&format!("-l {key}")),
            "{long} not in the fish completion"
        );
        assert!(
            printed.contains(&format!("{key} ")),
            "{key} not in --print-config"
        );
        let var = format!("SSELOOP_{}", key.to_uppercase().replace('-', "_"));
        assert!(row.contains(&var), "{var} not in the table");
    }
    let help = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let flags = help.matches("\n      --").count() + help.matches("\n  -").count();
    // --help also lists --config, --check-config, --print-config, --help and --version.
    assert_eq!(n + 5, flags, "every --help option is in the table:\n{help}");
}

/// The configuration example of docs/OPERATIONS.md is a valid file.
#[test]
fn the_operations_guide_example_configuration_is_valid() {
    let doc = std::fs::read_to_string(format!("{}/docs/OPERATIONS.md", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let start = doc.find("```toml\n").unwrap() + 8;
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = Scratch::new("guide");
    let token = dir.file("publish-token", "t0ken\n");
    let cfg = dir.file(
        "sseloop.toml",
        &example.replace("/etc/sseloop/publish-token", token.to_str().unwrap()),
    );
    let (code, out, err) =
        run_with_env(&["--config", cfg.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    let shipped = format!("{}/contrib/sseloop.toml", env!("CARGO_MANIFEST_DIR"));
    let (code, _, err) = run_with_env(&["--config", &shipped, "--check-config"], &[]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_flood_of_refused_tokens_logs_a_few_lines_and_a_suppressed_count_once_it_stops() {
    let secret = "ops-secret-of-at-least-32-bytes!!!";
    let server = TestServer::start(&["--jwt-secret", secret]);
    let token = "not.a-valid.TOKEN-SHOULD-NOT-BE-LOGGED";
    let flood = Instant::now();
    for i in 0..1000 {
        let raw = if i % 2 == 0 {
            format!("GET /events?topic=t&access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n")
        } else {
            format!(
                "GET /events?topic=t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
        };
        assert_eq!(request(server.addr, &raw).status, 401);
    }
    // The flood stops: no later refusal comes to carry the count, which is logged on its own
    // once the period ends.
    let refused_lines = || -> Vec<String> {
        let log = server.log.lock().unwrap();
        log.iter()
            .filter(|l| l.contains("authorization refused"))
            .cloned()
            .collect()
    };
    // Every refusal is accounted for: logged with its peer, or counted in a `suppressed=`.
    let accounted = |lines: &[String]| -> u64 {
        let suppressed: u64 = lines
            .iter()
            .filter_map(|l| l.split("suppressed=").nth(1))
            .filter_map(|s| s.trim_end_matches(')').parse::<u64>().ok())
            .sum();
        suppressed + lines.iter().filter(|l| l.contains("peer=")).count() as u64
    };
    assert!(
        wait_until(TIMEOUT, || accounted(&refused_lines()) == 1000),
        "{:?}",
        refused_lines()
    );
    let lines = refused_lines();
    assert!(
        lines.last().is_some_and(|l| l.contains("not logged")),
        "{lines:?}"
    );
    // At most 10 lines and one count per second the flood lasted (a slow machine's flood lasts
    // longer), and the count's own line at the end.
    let periods = flood.elapsed().as_secs() as usize + 2;
    assert!(
        lines.len() <= 11 * periods + 1,
        "{} lines: {lines:?}",
        lines.len()
    );
    assert!(lines.len() < 1000 / 4, "{} lines: {lines:?}", lines.len());
    let first = &lines[0];
    assert!(first.contains("INFO"), "{first}");
    assert!(first.contains("peer=127.0.0.1:"), "{first}");
    assert!(first.contains("path=/events status=401"), "{first}");
    let log = server.log.lock().unwrap();
    assert!(log.iter().all(|l| !l.contains("SHOULD-NOT-BE-LOGGED")));
}
