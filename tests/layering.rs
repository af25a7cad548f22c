//! The crate's dependency direction, checked on the source: every `crate::…` reference between
//! top-level modules of `src/` must point to a lower layer of [`LAYERS`], so the module graph has
//! no cycle. A new module must be placed in a layer here (docs/ARCHITECTURE.md, "Layers").
//!
//! The scan reads `src/**/*.rs` as text: comments, string and character literals are skipped,
//! then each `crate::` (or `$crate::`) path names the module it enters (`crate::{a, b::c}`
//! names several; `crate::Name` is resolved through the re-exports of `src/lib.rs`). Test
//! modules count too: a test may not reach upward either.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom first. A module may use modules of lower layers only, never its own layer or above.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "options and leaf values (import nothing from the crate)",
        &[
            "config",
            "ids",
            "idempotency",
            "timer",
            "sse",
            "frame",
            "hooks",
            "json",
            "procstat",
            "ratelimit",
            "systemd",
        ],
    ),
    (
        "encodings, request parsing, logging, TLS configuration",
        &["buf", "http", "limits", "logging", "tls"],
    ),
    (
        "authorization and the Redis backplane",
        &["api", "auth", "backplane"],
    ),
    (
        "counters and cross-thread publishing",
        &["metrics", "handle"],
    ),
    ("the hub: channels, logs, cursors, ids in order", &["hub"]),
    ("what connections may touch", &["loop_state", "console"]),
    ("connections", &["conn"]),
    ("the loop", &["event_loop"]),
    ("outside: the C API", &["ffi"]),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root and the binary).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src_dir()).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_owned()),
        None => Some(first),
    }
}

/// The code of a Rust file with comments, strings and character literals blanked out.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if b[i] == b'r'
            && (rest.starts_with(b"r\"") || rest.starts_with(b"r#"))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // A raw string: r"…", r#"…"#, …
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let end = format!("\"{}", "#".repeat(hashes)).into_bytes();
            i += 2 + hashes;
            while i < b.len() && !b[i..].starts_with(&end) {
                i += 1;
            }
            i += end.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\u{..}', 'é') or a lifetime ('a).
            let next = text[i + 1..].chars().next().map_or(0, char::len_utf8);
            if rest.get(1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if next > 0 && rest.get(1 + next) == Some(&b'\'') {
                i += 2 + next;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item in `{a, b::c, d::{e, f}}` (`s` starts after `{`).
fn group_heads(s: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_item = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item = true,
            c if at_item && (c.is_ascii_alphanumeric() || c == '_') => {
                heads.push(ident_at(&s[i..]));
                at_item = false;
            }
            _ => {}
        }
    }
    heads
}

/// `Name` → module, from `pub use module::{…Name…};` lines of `src/lib.rs`.
fn root_reexports(modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let lib = code_only(&fs::read_to_string(src_dir().join("lib.rs")).expect("lib.rs"));
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(path);
        if !modules.contains(module) {
            continue;
        }
        let after = &path[module.len()..];
        let names = match after.strip_prefix("::{") {
            Some(group) => group_heads(group),
            None => vec![ident_at(after.trim_start_matches(':'))],
        };
        for name in names {
            map.insert(name.to_owned(), module.to_owned());
        }
    }
    map
}

/// Every edge `from → to` between top-level modules, with one place it occurs.
fn module_edges() -> BTreeMap<(String, String), String> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let reexports = root_reexports(&modules);
    let mut edges = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        let text = fs::read_to_string(file).expect("read source");
        let code = code_only(&text);
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let heads = match rest.strip_prefix('{') {
                Some(group) => group_heads(group),
                None => vec![ident_at(rest)],
            };
            for head in heads {
                let to = if modules.contains(head) {
                    head.to_owned()
                } else if let Some(m) = reexports.get(head) {
                    m.clone()
                } else {
                    panic!(
                        "{}: `crate::{head}` names no module of src/ and no re-export of lib.rs",
                        file.display()
                    );
                };
                if to != from {
                    let line = code[..at].matches('\n').count() + 1;
                    let rel = file.strip_prefix(src_dir()).unwrap_or(file);
                    edges
                        .entry((from.clone(), to))
                        .or_insert_with(|| format!("src/{}:{line}", rel.display()));
                }
            }
        }
    }
    edges
}

/// One cycle of the graph, if there is any (depth-first search, the path on the stack).
fn find_cycle(edges: &BTreeMap<(String, String), String>) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    // 0 unseen, 1 on the stack, 2 done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(node, 1);
        stack.push(node);
        for &to in next.get(node).into_iter().flatten() {
            match state.get(to).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|&n| n == to).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(to.to_owned());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(to, next, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node, 2);
        None
    }
    let nodes: Vec<&str> = next.keys().copied().collect();
    for node in nodes {
        if state.get(node).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, &next, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = module_edges();
    if let Some(cycle) = find_cycle(&edges) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                let at = &edges[&(w[0].clone(), w[1].clone())];
                format!("  {} -> {}   ({at})", w[0], w[1])
            })
            .collect();
        panic!(
            "import cycle between modules of src/:\n{}",
            steps.join("\n")
        );
    }
}

#[test]
fn every_module_imports_only_from_lower_layers() {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (*m, i)))
        .collect();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let unplaced: Vec<&String> = modules
        .iter()
        .filter(|m| !layer_of.contains_key(m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules of src/ not placed in a layer of tests/layering.rs: {unplaced:?}"
    );
    let stale: Vec<&&str> = layer_of.keys().filter(|m| !modules.contains(**m)).collect();
    assert!(
        stale.is_empty(),
        "layers name modules src/ no longer has: {stale:?}"
    );

    let mut wrong = Vec::new();
    for ((from, to), at) in module_edges() {
        let (lf, lt) = (layer_of[from.as_str()], layer_of[to.as_str()]);
        if lt >= lf {
            wrong.push(format!(
                "  {from} (layer {lf}: {}) -> {to} (layer {lt}: {})   ({at})",
                LAYERS[lf].0, LAYERS[lt].0
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not point to a lower layer:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_sees_through_comments_strings_and_groups() {
    let code = code_only(
        "use crate::{a, b::{c, d}, e}; // crate::x\n/* crate::y */ let s = \"crate::z\"; \
         let c = '\"'; let r = r#\"crate::w\"#; fn f<'a>(x: &'a u8) {} crate::v::f();",
    );
    let found: Vec<&str> = code
        .match_indices("crate::")
        .flat_map(|(at, _)| {
            let rest = &code[at + 7..];
            match rest.strip_prefix('{') {
                Some(g) => group_heads(g),
                None => vec![ident_at(rest)],
            }
        })
        .collect();
    assert_eq!(found, ["a", "b", "e", "v"]);
}
