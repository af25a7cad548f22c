//! The web console (`--ui`): its routes over real sockets, and a real browser driving the page.
//!
//! The browser test runs `tests/console/browser.mjs` with node: playwright-core (installed by
//! `npm ci` in tests/console) driving Debian's chromium, against two real servers. Without node,
//! the node modules, chromium or curl it prints a skip, unless `SSELOOP_REQUIRE_TOOLS=1` (CI sets
//! it), where a missing tool is a failure. Screenshots go to `target/console-screens/`, or to
//! `docs/` with `SSELOOP_UPDATE_SCREENSHOTS=1`.

mod util;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::{request, run_binary, skipped, TestServer};

fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> util::Response {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    request(server.addr, &raw)
}

/// The files the page loads (index.html names the rest; app.js imports the modules).
const ASSETS: [(&str, &str); 9] = [
    ("/ui/", "text/html; charset=utf-8"),
    ("/ui/console.css", "text/css; charset=utf-8"),
    ("/ui/app.js", "text/javascript; charset=utf-8"),
    ("/ui/server.js", "text/javascript; charset=utf-8"),
    ("/ui/chart.js", "text/javascript; charset=utf-8"),
    ("/ui/sse.js", "text/javascript; charset=utf-8"),
    ("/ui/streams.js", "text/javascript; charset=utf-8"),
    ("/ui/admin.js", "text/javascript; charset=utf-8"),
    ("/ui/favicon.svg", "image/svg+xml"),
];

#[test]
fn console_is_off_by_default_and_help_says_so() {
    let server = TestServer::start(&[]);
    for path in ["/ui/", "/ui", "/ui/app.js", "/stats"] {
        assert_eq!(get(&server, path, &[]).status, 404, "{path} without --ui");
    }
    let (code, help) = run_binary(&["--help"]);
    assert_eq!(code, Some(0));
    let line = help
        .lines()
        .skip_while(|l| !l.contains("--ui"))
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(line.contains("off by default"), "--help: {line}");
}

#[test]
fn assets_have_type_etag_csp_and_fit_the_budget() {
    let server = TestServer::start(&["--ui"]);
    let mut total = 0;
    for (path, content_type) in ASSETS {
        let resp = get(&server, path, &[]);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("Content-Type").as_deref(), Some(content_type));
        assert_eq!(
            resp.header("X-Content-Type-Options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(resp.header("Cache-Control").as_deref(), Some("no-cache"));
        let csp = resp.header("Content-Security-Policy").expect("CSP");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe"), "{csp}");
        let etag = resp.header("ETag").expect("ETag");
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        total += resp.body.len();

        let again = get(&server, path, &[("If-None-Match", &etag)]);
        assert_eq!(again.status, 304, "{path} revalidated");
        assert!(again.body.is_empty());
        assert_eq!(again.header("ETag").as_deref(), Some(etag.as_str()));
        let weak = format!("\"other\", W/{etag}");
        assert_eq!(get(&server, path, &[("If-None-Match", &weak)]).status, 304);
        let stale = get(&server, path, &[("If-None-Match", "\"0000\"")]);
        assert_eq!(stale.status, 200);
        assert_eq!(stale.body.len(), resp.body.len());
    }
    assert!(total < 150 * 1024, "assets total {total} bytes");

    let index = get(&server, "/ui/", &[]).text();
    assert!(
        !index.contains("<script>") && !index.contains("style="),
        "no inline script or style"
    );
    let mut sock = util::connect(server.addr);
    sock.write_all(b"HEAD /ui/app.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut reader = util::ResponseReader::new(sock);
    let head = reader.next_head_only().expect("HEAD response");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("ETag"),
        get(&server, "/ui/app.js", &[]).header("ETag")
    );
    assert!(
        reader.closed_within(util::TIMEOUT),
        "no body after a HEAD answer"
    );
    let redirect = get(&server, "/ui", &[]);
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("Location").as_deref(), Some("ui/"));
    assert_eq!(get(&server, "/ui/missing.js", &[]).status, 404);
    assert_eq!(get(&server, "/ui/../stats", &[]).status, 404);
    let post = request(
        server.addr,
        "POST /ui/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
}

#[test]
fn stats_document_reports_counters_connections_and_busiest_topics() {
    let server = TestServer::start(&["--ui", "--publish-token", "pub-secret"]);
    let _a = server.subscribe("topic=alpha", &[]);
    let _b = server.subscribe("topic=alpha&topic=beta", &[]);
    let auth = [("Authorization", "Bearer pub-secret")];
    for body in ["one", "two"] {
        assert_eq!(server.post("topic=beta", body, &auth).status, 200);
    }
    // With only a publish token, the figures need it too (every authorization mode protects
    // them; tests/access.rs).
    assert_eq!(get(&server, "/stats", &[]).status, 401);
    let resp = get(&server, "/stats", &auth);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("Content-Type").as_deref(),
        Some("application/json")
    );
    assert_eq!(resp.header("Cache-Control").as_deref(), Some("no-store"));
    let doc = resp.text();
    assert!(!doc.contains("pub-secret"), "token leaked: {doc}");
    for part in [
        "\"publish_token\":\"<set>\"",
        "\"subscribe_token\":null",
        "\"ui\":true",
        "\"sse\":2,\"frames\":0}",
        "\"published\":2,",
        "\"deliveries\":2,",
        // alpha has more subscribers; beta has the retained events ("<run>-1one", "<run>-2two").
        "\"topics\":[{\"name\":\"alpha\",\"subscribers\":2,\"retained_events\":0,\"retained_bytes\":0},\
         {\"name\":\"beta\",\"subscribers\":1,\"retained_events\":2,",
        "\"slow_consumer_closes\":0",
    ] {
        assert!(doc.contains(part), "missing {part} in {doc}");
    }
    let run = doc
        .split("\"run\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("run");
    let id = util::json_id(&server.post("topic=alpha", "x", &auth).text());
    assert!(id.starts_with(&format!("{run}-")), "{id} is of run {run}");

    let one = get(&server, "/stats?topics=1", &auth).text();
    assert!(one.contains("\"topics\":[{\"name\":\"alpha\""));
    assert!(!one.contains("\"name\":\"beta\""));
    assert!(get(&server, "/stats?topics=0", &auth)
        .text()
        .contains("\"topics\":[]"));
    assert_eq!(get(&server, "/stats?topics=101", &auth).status, 400);
    assert_eq!(get(&server, "/stats?topics=many", &auth).status, 400);
}

#[test]
fn stats_need_the_subscribe_token_but_assets_do_not() {
    let server = TestServer::start(&["--ui", "--subscribe-token", "sub-secret"]);
    let none = get(&server, "/stats", &[]);
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("WWW-Authenticate").as_deref(),
        Some("Bearer realm=\"sseloop\"")
    );
    let wrong = get(&server, "/stats", &[("Authorization", "Bearer nope")]);
    assert_eq!(wrong.status, 401);
    // Only the header: a token in the URL would end up in access logs and browser history.
    assert_eq!(
        get(&server, "/stats?access_token=sub-secret", &[]).status,
        401
    );
    let right = get(&server, "/stats", &[("Authorization", "Bearer sub-secret")]);
    assert_eq!(right.status, 200);
    assert!(right.text().contains("\"subscribe_token\":\"<set>\""));
    assert!(!right.text().contains("sub-secret"));
    for (path, _) in ASSETS {
        assert_eq!(get(&server, path, &[]).status, 200, "{path} holds no data");
    }
    let failures: f64 = server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("sseloop_auth_failures_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(failures, 3.0);
}

// ----- the browser ------------------------------------------------------------------------------

/// What the browser test needs; `Err` names what is missing.
fn browser_tools(dir: &Path) -> Result<(PathBuf, String), String> {
    let chromium = PathBuf::from(
        std::env::var("SSELOOP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if !chromium.exists() {
        return Err(format!("{} (apt-get install chromium)", chromium.display()));
    }
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Err("tests/console/node_modules (npm ci in tests/console)".into());
    }
    for tool in ["node", "curl"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("{tool} (not on PATH)"));
        }
    }
    Ok((chromium, "node".into()))
}

fn tool_missing(missing: &str) {
    skipped(
        missing,
        "the console and browser tests",
        "apt-get install chromium curl; npm ci in tests/console",
    );
}

#[test]
fn page_sse_parser_handles_every_split_and_line_ending() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let out = match Command::new("node")
        .args(["--test", "sse_parser.test.mjs"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(_) => return tool_missing("node (not on PATH)"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("# fail 0"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn browser_drives_the_console() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/console");
    let (chromium, node) = match browser_tools(&dir) {
        Ok(tools) => tools,
        Err(missing) => return tool_missing(&missing),
    };
    let screens = if std::env::var("SSELOOP_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        root.join("docs")
    } else {
        root.join("target/console-screens")
    };
    std::fs::create_dir_all(&screens).expect("screenshot dir");
    let open = TestServer::start(&["--ui", "--max-queue-bytes", "72k", "--max-body", "8k"]);
    let token = "console-test-token";
    let locked = TestServer::start(&["--ui", "--subscribe-token", token]);
    let env = [
        ("SSELOOP_URL", format!("http://{}", open.addr)),
        ("SSELOOP_TOKEN_URL", format!("http://{}", locked.addr)),
        ("SSELOOP_TOKEN", token.to_string()),
        ("SCREENSHOT_DIR", screens.display().to_string()),
    ];
    run_script(&dir, "browser.mjs", (&chromium, &node), &env, &open);
    for shot in ["console.png", "console-streams.png"] {
        let len = std::fs::metadata(screens.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
}

/// A plain browser `EventSource` on `topic_line=1` streams (a pattern, several topics, a resume,
/// a reset) reads each event's topic from the first line of `e.data`
/// (`tests/console/topic_line.mjs`).
#[test]
fn browser_event_source_reads_the_topic_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let (chromium, node) = match browser_tools(&dir) {
        Ok(tools) => tools,
        Err(missing) => return tool_missing(&missing),
    };
    let server = TestServer::start(&[]);
    let env = [("SSELOOP_URL", format!("http://{}", server.addr))];
    let stdout = run_script(&dir, "topic_line.mjs", (&chromium, &node), &env, &server);
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
}

/// A cross-origin `fetch` POST with `Idempotency-Key` from a page on another origin (preflighted),
/// a readable `Retry-After` on a 503, and the console of a JWT server taking an admin token
/// (`tests/console/access.mjs`).
#[test]
fn browser_publishes_cross_origin_and_the_console_needs_an_admin_token() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/console");
    let (chromium, node) = match browser_tools(&dir) {
        Ok(tools) => tools,
        Err(missing) => return tool_missing(&missing),
    };
    let secret = "console-jwt-secret-of-32-bytes-or-more";
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let mint = |sseloop: serde_json::Value| {
        let claims = serde_json::json!({"sub": "ops", "exp": exp, "sseloop": sseloop});
        let key = EncodingKey::from_secret(secret.as_bytes());
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    let reader = mint(serde_json::json!({"subscribe": ["*"]}));
    let admin = mint(serde_json::json!({"admin": true, "subscribe": ["*"]}));
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let open = TestServer::start(&[]);
    let down = TestServer::start(&[
        "--backplane",
        &format!("redis://127.0.0.1:{closed_port}"),
        "--backplane-timeout-ms",
        "200",
    ]);
    let jwt = TestServer::start(&["--ui", "--jwt-secret", secret]);
    let env = [
        ("SSELOOP_URL", format!("http://{}", open.addr)),
        ("SSELOOP_DOWN_URL", format!("http://{}", down.addr)),
        ("SSELOOP_JWT_URL", format!("http://{}", jwt.addr)),
        ("SSELOOP_READER", reader),
        ("SSELOOP_ADMIN", admin),
    ];
    let stdout = run_script(&dir, "access.mjs", (&chromium, &node), &env, &jwt);
    assert!(stdout.contains("5 passed, 0 failed"), "{stdout}");
}

/// The console's server-API pages (`tests/console/admin.mjs`): connections listed and one
/// disconnected, a topic's history and live presence, patterns apart, sizes in units, the last
/// minutes of samples for a page opened late.
#[test]
fn browser_manages_connections_and_topics_through_the_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/console");
    let (chromium, node) = match browser_tools(&dir) {
        Ok(tools) => tools,
        Err(missing) => return tool_missing(&missing),
    };
    let admin = "console-admin-token";
    let server = TestServer::start(&["--ui", "--admin-token", admin, "--history", "16"]);
    let env = [
        ("SSELOOP_URL", format!("http://{}", server.addr)),
        ("SSELOOP_ADMIN", admin.to_string()),
    ];
    let stdout = run_script(&dir, "admin.mjs", (&chromium, &node), &env, &server);
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
}

/// Runs a browser script of tests/console with node and `env`; asserts that every check passed
/// (the script's summary line) and returns its output. `server`'s log goes in a failure message.
fn run_script(
    dir: &Path,
    script: &str,
    (chromium, node): (&Path, &str),
    env: &[(&str, String)],
    server: &TestServer,
) -> String {
    // One browser at a time: the scripts measure rates and cuts under load, which two other
    // Chromiums on a 2-core machine would skew.
    static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(node)
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CHROMIUM", chromium)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}\nserver log: {:?}",
        out.status,
        server.log.lock().unwrap()
    );
    assert!(
        stdout.contains("passed, 0 failed"),
        "no summary line:\n{stdout}"
    );
    stdout
}
