//! The project's documents speak of the project: no document names a numbered work period
//! ("session 7"), every `tools/results/<dir>` a document cites exists, and `tools/results/`
//! holds only cited campaigns, each a README and a few small text summaries (tools/README.md).

use std::fs;
use std::path::{Path, PathBuf};

/// A campaign directory holds summaries, not raw reports: its files stay this small.
const MAX_SUMMARY_BYTES: u64 = 16 * 1024;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, every Markdown file under docs/, tools/README.md and every campaign README.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![root.join("README.md"), root.join("tools/README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read docs/") {
            let path = entry.expect("docs/ entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
        }
    }
    // A campaign without its README is reported by tools_results_holds_only_cited_summaries.
    docs.extend(
        campaigns(root)
            .into_iter()
            .map(|dir| dir.join("README.md"))
            .filter(|readme| readme.is_file()),
    );
    docs.sort();
    docs
}

fn campaigns(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join("tools/results"))
        .expect("read tools/results")
        .map(|e| e.expect("tools/results entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Each "session" followed by a number (across spaces, a line break or a dash, "sessions 5 and
/// 6" too), as the line number and the words found, case-insensitive.
fn work_periods(text: &str) -> Vec<(usize, String)> {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("session") {
        let start = from + at;
        let mut end = start + "session".len();
        if bytes.get(end) == Some(&b's') {
            end += 1;
        }
        while bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_whitespace() || *b == b'-')
        {
            end += 1;
        }
        if bytes.get(end).is_some_and(u8::is_ascii_digit) {
            let line = lower[..start].matches('\n').count() + 1;
            found.push((line, text[start..=end].replace('\n', " ")));
        }
        from = end.max(start + 1);
    }
    found
}

/// Each `tools/results/<name>` cited, as the line number and the name; a name followed by `*`
/// is a prefix (a glob over several campaigns). Placeholders such as `<run>` are not names.
fn citations(text: &str) -> Vec<(usize, String, bool)> {
    const PREFIX: &str = "tools/results/";
    let mut found = Vec::new();
    for (at, _) in text.match_indices(PREFIX) {
        let rest = &text[at + PREFIX.len()..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .unwrap_or(rest.len());
        let name = rest[..len].trim_end_matches('.');
        if name.is_empty() {
            continue;
        }
        let glob = rest[len..].starts_with('*');
        let line = text[..at].matches('\n').count() + 1;
        found.push((line, name.to_string(), glob));
    }
    found
}

/// Whether `name` (a prefix when `glob`) names at least one of `dirs`.
fn cited_exists(name: &str, glob: bool, dirs: &[String]) -> bool {
    dirs.iter()
        .any(|d| if glob { d.starts_with(name) } else { d == name })
}

fn dir_names(root: &Path) -> Vec<String> {
    campaigns(root)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect()
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn no_document_names_a_work_period() {
    let root = root();
    let mut bad = Vec::new();
    for doc in documents(&root) {
        let text = fs::read_to_string(&doc).expect("read document");
        for (line, words) in work_periods(&text) {
            bad.push(format!("{}:{line}: {words:?}", relative(&root, &doc)));
        }
    }
    assert!(
        bad.is_empty(),
        "name a date, a version or a commit instead:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_cited_campaign_exists() {
    let root = root();
    let dirs = dir_names(&root);
    let mut bad = Vec::new();
    for doc in documents(&root) {
        let text = fs::read_to_string(&doc).expect("read document");
        for (line, name, glob) in citations(&text) {
            if !cited_exists(&name, glob, &dirs) {
                bad.push(format!(
                    "{}:{line}: tools/results/{name}",
                    relative(&root, &doc)
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "cited but not in tools/results/:\n{}",
        bad.join("\n")
    );
}

/// tools/results holds only what README.md and docs/ cite, each campaign as a README and small
/// text summaries: no raw reports, perf data or scripts.
#[test]
fn tools_results_holds_only_cited_summaries() {
    let root = root();
    let mut cited = Vec::new();
    let mut sources = vec![root.join("README.md")];
    sources.extend(
        documents(&root)
            .into_iter()
            .filter(|d| d.starts_with(root.join("docs"))),
    );
    for doc in sources {
        let text = fs::read_to_string(&doc).expect("read document");
        cited.extend(citations(&text));
    }
    let mut bad = Vec::new();
    for dir in campaigns(&root) {
        let name = relative(&root, &dir);
        let short = name.trim_start_matches("tools/results/");
        if !cited
            .iter()
            .any(|(_, n, glob)| cited_exists(n, *glob, &[short.to_string()]))
        {
            bad.push(format!("{name}: cited by no document"));
        }
        if !dir.join("README.md").is_file() {
            bad.push(format!("{name}: no README.md"));
        }
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).expect("read campaign") {
                let path = entry.expect("campaign entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text_file = path.extension().is_some_and(|e| e == "md" || e == "txt");
                let size = fs::metadata(&path).expect("stat").len();
                if !text_file || size > MAX_SUMMARY_BYTES {
                    bad.push(format!("{}: {size} B", relative(&root, &path)));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "tools/results/ keeps one compact summary per cited campaign (tools/README.md):\n{}",
        bad.join("\n")
    );
}

#[test]
fn a_work_period_is_found_across_a_line_break_and_in_the_plural() {
    let text = "Intro.\nThe build is Session 7's.\nSince session\n6 a round stops; sessions 5 \
                and 6 differ; session-4 too.";
    let lines: Vec<usize> = work_periods(text).iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, vec![2, 3, 4, 4]);
}

#[test]
fn technical_sessions_are_not_work_periods() {
    let text = "kept in `sessionStorage`; a TLS session resumes; ## 7. Worked session\n";
    assert!(work_periods(text).is_empty());
}

#[test]
fn citations_are_names_globs_or_placeholders() {
    let text = "in `tools/results/final-memory/`.\nsee tools/results/final-memory.\n\
                raw data: `tools/results/backplane-r6-*`; `tools/results/<run>/`";
    assert_eq!(
        citations(text),
        vec![
            (1, "final-memory".to_string(), false),
            (2, "final-memory".to_string(), false),
            (3, "backplane-r6-".to_string(), true),
        ]
    );
    let dirs = vec!["final-memory".to_string()];
    assert!(cited_exists("final-memory", false, &dirs));
    assert!(!cited_exists("final-mem", false, &dirs));
    assert!(cited_exists("final-", true, &dirs));
    assert!(!cited_exists("backplane-r6-", true, &dirs));
}
