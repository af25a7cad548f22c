//! The C API, exercised from C: each test compiles a C program against `include/sseloop.h` and
//! the cdylib cargo just built (`target/<profile>/deps/libsseloop.so`) with the system `cc`,
//! runs it (under valgrind, when installed: zero errors, zero definite or indirect leaks), and
//! the programs talk to real loopback sockets.
//!
//! - `header_matches_the_rust_exports`: the drift check. Names, constants and `#[repr(C)]`
//!   layouts are compared with `src/ffi/*.rs`, the library's dynamic symbols with the header,
//!   and a generated C file assigns every export to a function pointer of the exact type derived
//!   from the Rust signature, compiled with `-Wall -Wextra -Werror -pedantic`.
//! - `errors.c`, `step_hooks.c`, `run_threads.c` (in `tests/c/`): error paths; drive mode 2 with
//!   hooks, re-entrancy and stats; drive mode 1 with four publishing threads.
//! - `examples/c/host.c`: drive mode 3 (the host's own `poll()`), read by a Rust SSE client, and
//!   built a second time through the generated pkg-config file.
//!
//! Set `SSELOOP_TEST_VALGRIND=0` to run the programs natively even when valgrind is installed, and
//! `SSELOOP_REQUIRE_TOOLS=1` (CI does) to fail instead of skipping when valgrind, pkg-config or
//! nm is missing.

#[path = "ffi/abi.rs"]
mod abi;
mod util;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use util::skipped;

/// Slow under valgrind on a loaded 2-core machine; the programs finish in seconds natively.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(300);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>`: the test executable lives in `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// The directory holding `libsseloop.so`. `deps/` first: cargo writes the cdylib there in the
/// same rustc run as the rlib this test links, while the copy in `target/<profile>/` is only
/// refreshed when the library itself is a requested target (so `cargo test --test ffi` could
/// leave a stale one there).
fn libdir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile = profile_dir();
        let candidates = [profile.join("deps"), profile.clone()];
        candidates
            .iter()
            .find(|d| d.join("libsseloop.so").is_file())
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "libsseloop.so not found in {candidates:?}; is crate-type cdylib set in \
                     Cargo.toml?"
                )
            })
    })
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ffi");
    std::fs::create_dir_all(&dir).expect("create out dir");
    dir
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

fn tool_available(tool: &str, arg: &str) -> bool {
    let found = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && ["valgrind", "pkg-config", "nm", "make"].contains(&tool) {
        skipped(
            tool,
            "the C API tests that need it",
            "apt-get install valgrind pkg-config binutils make",
        );
    }
    found
}

/// Compiles `source` (plus `tests/c/` on the include path) into an executable named `name`.
fn compile(source: &Path, name: &str) -> PathBuf {
    let exe = out_dir().join(name);
    let lib = libdir();
    let output = Command::new(cc())
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(format!("-I{}", root().join("tests/c").display()))
        .arg(source)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lsseloop", "-lpthread"])
        .output()
        .expect("run cc");
    assert!(
        output.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// Whether programs run under valgrind (printed once when they do not).
fn valgrind() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        if std::env::var("SSELOOP_TEST_VALGRIND").as_deref() == Ok("0") {
            eprintln!("note: SSELOOP_TEST_VALGRIND=0: C programs run natively, without valgrind");
            return false;
        }
        let found = tool_available("valgrind", "--version");
        if !found {
            eprintln!(
                "note: valgrind is not installed: C programs run natively, without memory \
                 checking (CI installs it: apt-get install valgrind)"
            );
        }
        found
    })
}

/// The command that runs `exe` with `args`, under valgrind when available.
fn program(exe: &Path, args: &[&str]) -> Command {
    let mut cmd = if valgrind() {
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect",
        ])
        .arg(exe);
        cmd
    } else {
        Command::new(exe)
    };
    // cargo points LD_LIBRARY_PATH at target/<profile>, which would win over the rpath
    // (DT_RUNPATH) and could load a stale copy of the library.
    cmd.env("LD_LIBRARY_PATH", libdir())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A running C program: its stdout lines arrive on a channel, stderr is collected.
struct Running {
    name: String,
    /// Started through [`program`] with valgrind on.
    valgrind: bool,
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(mut cmd: Command, name: &str) -> Running {
        let valgrind = cmd.get_program() == "valgrind";
        let mut child = cmd.spawn().expect("spawn C program");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running {
            name: name.to_string(),
            valgrind,
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// The next stdout line, within `timeout`.
    fn line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.stdout.push(line.clone());
        Some(line)
    }

    /// Waits for exit (killing the program after `timeout`); asserts exit status 0, which under
    /// valgrind also means no memory error and no definite or indirect leak.
    fn finish(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let status: Option<ExitStatus> = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(line);
        }
        let stderr = self.stderr.join().unwrap_or_default();
        let stdout = self.stdout.join("\n");
        let report = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
        let Some(status) = status else {
            panic!("{} timed out after {timeout:?}\n{report}", self.name);
        };
        match status.code() {
            Some(0) => {}
            Some(99) => panic!("{}: valgrind found errors or leaks\n{report}", self.name),
            _ => panic!("{} failed: {status}\n{report}", self.name),
        }
        if self.valgrind {
            let summary = stderr
                .lines()
                .filter(|l| l.contains("ERROR SUMMARY") || l.contains("definitely lost"))
                .collect::<Vec<_>>()
                .join("; ");
            eprintln!("{}: valgrind: {summary}", self.name);
            assert!(
                stderr.contains("ERROR SUMMARY: 0 errors"),
                "{}: valgrind reported errors\n{report}",
                self.name
            );
        }
        stdout
    }
}

/// Compiles and runs one self-checking program from `tests/c/`.
fn run_c_test(file: &str) -> String {
    let exe = compile(
        &root().join("tests/c").join(file),
        file.trim_end_matches(".c"),
    );
    let stdout = Running::start(program(&exe, &[]), file).finish(PROGRAM_TIMEOUT);
    assert!(
        stdout.contains(": ok"),
        "{file} did not report ok: {stdout}"
    );
    stdout
}

#[test]
fn c_error_paths_return_codes_and_messages() {
    run_c_test("errors.c");
}

#[test]
fn c_step_mode_with_hooks_reentrancy_and_stats() {
    run_c_test("step_hooks.c");
}

#[test]
fn c_run_mode_with_four_publishing_threads_and_a_stopping_thread() {
    run_c_test("run_threads.c");
}

/// Starts the example host (fd mode) and returns it with its address.
fn start_host(exe: &Path, args: &[&str], valgrind_ok: bool) -> (Running, SocketAddr) {
    let cmd = if valgrind_ok {
        program(exe, args)
    } else {
        // Only the rpath the pkg-config flags put in the executable finds the library.
        let mut cmd = Command::new(exe);
        cmd.env_remove("LD_LIBRARY_PATH")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    start_host_with(cmd, "examples/c/host")
}

/// Starts a prepared host command and reads its address line.
fn start_host_with(cmd: Command, name: &str) -> (Running, SocketAddr) {
    let mut host = Running::start(cmd, name);
    let line = host
        .line(Duration::from_secs(120))
        .expect("host printed no address");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    (host, addr)
}

#[test]
fn c_host_example_nests_the_loop_in_its_own_poll() {
    // About 10 s of ticks: the host may run under valgrind, whose first pass over the accept and
    // HTTP paths is slow on a busy machine; the stream must open well before the last tick.
    const TICKS: u64 = 200;
    let exe = compile(&root().join("examples/c/host.c"), "host");
    let (host, addr) = start_host(&exe, &["0", &TICKS.to_string(), "50"], true);

    let mut sub = util::SseClient::open(addr, "/events?topic=ticks&topic=chat", &[]);
    assert_eq!(sub.status, 200, "{}", sub.head);
    // The host's loop serves HTTP too: publish from here, read it back from the stream.
    let resp = util::request(
        addr,
        "POST /publish?topic=chat HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Length: 15\r\n\r\nhello from rust",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());

    let mut ticks = Vec::new();
    let mut chat = Vec::new();
    while let Some(ev) = sub.next_event_within(Duration::from_secs(60)) {
        match ev.event.as_str() {
            "tick" => {
                let n: u64 = ev
                    .data
                    .strip_prefix("tick ")
                    .expect("tick data")
                    .parse()
                    .unwrap();
                ticks.push(n);
            }
            _ => chat.push(ev.data),
        }
    }
    assert!(
        sub.ended_within(Duration::from_secs(5)),
        "stream did not end"
    );
    assert_eq!(chat, ["hello from rust"]);
    // Subscribed a little after the ticker started: every tick from then on, in order, up to
    // the last one, after which the ticker thread stopped the loop.
    assert!(ticks.len() >= 5, "too few ticks: {ticks:?}");
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    assert_eq!(ticks.last(), Some(&TICKS));
    let stdout = host.finish(PROGRAM_TIMEOUT);
    assert!(stdout.contains("stopped: published="), "{stdout}");
}

/// Fills in `sseloop.pc.in` as `make -C examples/c pc` does, into this test's own directory (so a
/// `.pc` the developer generated in `target/<profile>/` is left alone); returns that directory.
fn write_pc_file() -> PathBuf {
    let template = std::fs::read_to_string(root().join("sseloop.pc.in")).expect("sseloop.pc.in");
    let version = env!("CARGO_PKG_VERSION");
    let text = template
        .replace("@PREFIX@", &root().display().to_string())
        .replace("@LIBDIR@", &libdir().display().to_string())
        .replace(
            "@INCLUDEDIR@",
            &root().join("include").display().to_string(),
        )
        .replace("@VERSION@", version)
        .replace("@RPATH@", "-Wl,-rpath,${libdir} ");
    assert!(
        !text.contains('@'),
        "unreplaced placeholder in sseloop.pc.in"
    );
    let dir = out_dir().join("pkgconfig");
    std::fs::create_dir_all(&dir).expect("create pkgconfig dir");
    std::fs::write(dir.join("sseloop.pc"), text).expect("write pc");
    dir
}

#[test]
fn pkg_config_file_builds_and_runs_the_host() {
    let pc_dir = write_pc_file();
    if !tool_available("pkg-config", "--version") {
        eprintln!("note: pkg-config is not installed: sseloop.pc written but not exercised");
        return;
    }
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "sseloop"])
        .env("PKG_CONFIG_PATH", &pc_dir)
        .output()
        .expect("run pkg-config");
    assert!(
        out.status.success(),
        "pkg-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flags = String::from_utf8(out.stdout).unwrap();
    assert!(flags.contains("-lsseloop"), "{flags}");
    let modversion = Command::new("pkg-config")
        .args(["--modversion", "sseloop"])
        .env("PKG_CONFIG_PATH", &pc_dir)
        .output()
        .expect("run pkg-config");
    assert_eq!(
        String::from_utf8_lossy(&modversion.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );
    // cc host.c $(pkg-config --cflags --libs sseloop) -lpthread
    let exe = out_dir().join("host-pkg-config");
    let status = Command::new(cc())
        .arg(root().join("examples/c/host.c"))
        .args(flags.split_whitespace())
        .arg("-lpthread")
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc with pkg-config flags failed");
    // Runs in place (the .pc carries the rpath): three quick ticks, then it stops itself.
    let (host, _) = start_host(&exe, &["0", "3", "10"], false);
    let stdout = host.finish(Duration::from_secs(60));
    assert!(stdout.contains("stopped: published="), "{stdout}");
}

/// `make install-lib PREFIX=<tmp>` (the top-level Makefile), then the example host built against the
/// installed files through pkg-config twice: with the shared library (found through
/// LD_LIBRARY_PATH, as an installed library is) and with the static one (no libsseloop.so needed
/// at run time).
#[test]
fn make_install_into_a_prefix_then_build_the_host_shared_and_static_with_pkg_config() {
    let have_tools =
        tool_available("make", "--version") && tool_available("pkg-config", "--version");
    if !have_tools {
        eprintln!("note: make or pkg-config is not installed: make install not exercised");
        return;
    }
    let prefix = out_dir().join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    let lib = libdir();
    assert!(
        lib.join("libsseloop.a").is_file(),
        "libsseloop.a not built next to the cdylib in {}: is staticlib in crate-type?",
        lib.display()
    );
    let out = Command::new("make")
        .arg("-C")
        .arg(root())
        .arg("install-lib")
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("BUILD_DIR={}", lib.display()))
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "lib/libsseloop.so",
        "lib/libsseloop.a",
        "include/sseloop.h",
        "lib/pkgconfig/sseloop.pc",
        "lib/pkgconfig/sseloop-static.pc",
    ] {
        assert!(prefix.join(file).is_file(), "{file} not installed");
    }
    let pc_path = prefix.join("lib/pkgconfig");
    let pkg_config = |args: &[&str]| {
        let out = Command::new("pkg-config")
            .args(args)
            .env("PKG_CONFIG_PATH", &pc_path)
            .output()
            .expect("run pkg-config");
        assert!(
            out.status.success(),
            "pkg-config {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // The version comes from Cargo.toml.
    assert_eq!(
        pkg_config(&["--modversion", "sseloop"]),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        pkg_config(&["--modversion", "sseloop-static"]),
        env!("CARGO_PKG_VERSION")
    );
    let installed_header = std::fs::read_to_string(prefix.join("include/sseloop.h")).unwrap();
    assert_eq!(
        installed_header,
        std::fs::read_to_string(root().join("include/sseloop.h")).unwrap()
    );

    let empty = out_dir().join("no-libs");
    std::fs::create_dir_all(&empty).unwrap();
    for (package, name) in [
        ("sseloop", "host-installed-shared"),
        ("sseloop-static", "host-installed-static"),
    ] {
        let flags = pkg_config(&["--cflags", "--libs", package]);
        assert!(
            flags.contains(&prefix.display().to_string()),
            "{package}: {flags}"
        );
        let exe = out_dir().join(name);
        let out = Command::new(cc())
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .arg(root().join("examples/c/host.c"))
            .args(flags.split_whitespace())
            .arg("-lpthread")
            .arg("-o")
            .arg(&exe)
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cc with {package} flags failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shared = package == "sseloop";
        // The installed .pc carries no rpath: the shared build finds the library only through
        // the loader's path, the static one needs none.
        let mut cmd = Command::new(&exe);
        cmd.args(["0", "3", "10"])
            .env(
                "LD_LIBRARY_PATH",
                if shared {
                    prefix.join("lib")
                } else {
                    empty.clone()
                },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (host, _) = start_host_with(cmd, name);
        let stdout = host.finish(Duration::from_secs(60));
        assert!(stdout.contains("stopped: published="), "{stdout}");
        if shared {
            // Proof that it is linked dynamically: without the loader path it cannot start.
            let status = Command::new(&exe)
                .args(["0", "3", "10"])
                .env("LD_LIBRARY_PATH", &empty)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run host");
            assert!(
                !status.success(),
                "the shared build ran without libsseloop.so"
            );
        }
    }
}

// ---- Header drift check (parsing and generation in tests/ffi/abi.rs) ----------------------

#[test]
fn header_matches_the_rust_exports() {
    use abi::{abi_check_source, parse_header, parse_rust_abi};
    let abi = parse_rust_abi();
    let header = std::fs::read_to_string(root().join("include/sseloop.h")).unwrap();
    let (declared, header_consts) = parse_header(&header);

    let exported: BTreeSet<String> = abi.functions.iter().map(|f| f.name.clone()).collect();
    assert!(exported.len() >= 30, "parsed too few exports: {exported:?}");
    assert_eq!(
        exported.difference(&declared).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "exported in src/ffi but not declared in include/sseloop.h"
    );
    assert_eq!(
        declared.difference(&exported).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "declared in include/sseloop.h but not exported by src/ffi"
    );
    assert_eq!(
        abi.consts, header_consts,
        "constants differ (Rust left, header right)"
    );
    assert_eq!(
        abi.structs.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        [
            "sseloop_publish_attempt_t",
            "sseloop_connection_event_t",
            "sseloop_stats_t"
        ]
    );
    assert_eq!(abi.callbacks.len(), 2);

    // The built library exports exactly these symbols.
    if tool_available("nm", "--version") {
        let out = Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(libdir().join("libsseloop.so"))
            .output()
            .expect("nm");
        let symbols: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|s| s.starts_with("sseloop_"))
            .map(str::to_string)
            .collect();
        assert_eq!(symbols, declared, "libsseloop.so symbols vs header");
    } else {
        eprintln!("note: nm not installed: library symbols not compared");
    }

    // Types: every declaration must accept the exact Rust signature.
    let check = out_dir().join("abi_check.c");
    std::fs::write(&check, abi_check_source(&abi)).unwrap();
    let include = format!("-I{}", root().join("include").display());
    for (compiler, lang) in [(cc(), "c"), ("c++".to_string(), "c++")] {
        if lang == "c++" && !tool_available("c++", "--version") {
            eprintln!("note: no C++ compiler: header not checked as C++");
            continue;
        }
        let mut cmd = Command::new(&compiler);
        if lang == "c" {
            cmd.args(["-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror", "-c"])
                .arg(&check)
                .arg("-o")
                .arg(out_dir().join("abi_check.o"));
        } else {
            // The header alone, as C++ (extern "C" guard, no C-only syntax).
            let cpp = out_dir().join("header_check.cpp");
            std::fs::write(
                &cpp,
                "#include \"sseloop.h\"\nint main() { return SSELOOP_OK; }\n",
            )
            .unwrap();
            cmd.args([
                "-std=c++11",
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-fsyntax-only",
            ])
            .arg(&cpp);
        }
        let out = cmd.arg(&include).output().expect("run compiler");
        assert!(
            out.status.success(),
            "include/sseloop.h disagrees with src/ffi ({lang}):\n{}\n(generated: {})",
            String::from_utf8_lossy(&out.stderr),
            check.display()
        );
    }
}

#[test]
fn the_drift_check_notices_a_wrong_parameter_type() {
    // Guards the guard: the generated check must fail on a header that lies.
    let mut abi = abi::parse_rust_abi();
    let f = abi
        .functions
        .iter_mut()
        .find(|f| f.name == "sseloop_poll")
        .unwrap();
    f.params[1].1 = "u64".to_string();
    let check = out_dir().join("abi_check_wrong.c");
    std::fs::write(&check, abi::abi_check_source(&abi)).unwrap();
    let out = Command::new(cc())
        .args(["-std=c11", "-Wall", "-Werror", "-c"])
        .arg(&check)
        .arg(format!("-I{}", root().join("include").display()))
        .arg("-o")
        .arg(out_dir().join("abi_check_wrong.o"))
        .output()
        .expect("run cc");
    assert!(!out.status.success(), "a mismatched signature compiled");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sseloop_poll"));
}
