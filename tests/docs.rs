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

/// Every file below `dir`, at any depth.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// README.md, every Markdown file under docs/, tools/README.md and every campaign README.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![root.join("README.md"), root.join("tools/README.md")];
    docs.extend(
        files_below(&root.join("docs"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
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

/// What `finding` reports for each document, prefixed with the document's path.
fn findings(root: &Path, docs: &[PathBuf], finding: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut found = Vec::new();
    for doc in docs {
        let text = fs::read_to_string(doc).expect("read document");
        for what in finding(&text) {
            found.push(format!("{}:{what}", relative(root, doc)));
        }
    }
    found
}

fn assert_none(bad: &[String], why: &str) {
    assert!(bad.is_empty(), "{why}:\n{}", bad.join("\n"));
}

#[test]
fn no_document_names_a_work_period() {
    let root = root();
    let bad = findings(&root, &documents(&root), |text| {
        work_periods(text)
            .into_iter()
            .map(|(line, words)| format!("{line}: {words:?}"))
            .collect()
    });
    assert_none(&bad, "name a date, a version or a commit instead");
}

#[test]
fn every_cited_campaign_exists() {
    let root = root();
    let dirs = dir_names(&root);
    let bad = findings(&root, &documents(&root), |text| {
        citations(text)
            .into_iter()
            .filter(|(_, name, glob)| !cited_exists(name, *glob, &dirs))
            .map(|(line, name, _)| format!("{line}: tools/results/{name}"))
            .collect()
    });
    assert_none(&bad, "cited but not in tools/results/");
}

/// tools/results holds only what README.md and docs/ cite, each campaign as a README and small
/// text summaries: no raw reports, perf data or scripts.
#[test]
fn tools_results_holds_only_cited_summaries() {
    let root = root();
    let mut cited = Vec::new();
    for doc in documents(&root) {
        if doc == root.join("README.md") || doc.starts_with(root.join("docs")) {
            cited.extend(citations(&fs::read_to_string(&doc).expect("read document")));
        }
    }
    let mut bad = Vec::new();
    for dir in campaigns(&root) {
        let name = relative(&root, &dir);
        let short = [name.trim_start_matches("tools/results/").to_string()];
        if !cited
            .iter()
            .any(|(_, n, glob)| cited_exists(n, *glob, &short))
        {
            bad.push(format!("{name}: cited by no document"));
        }
        if !dir.join("README.md").is_file() {
            bad.push(format!("{name}: no README.md"));
        }
        for path in files_below(&dir) {
            let text_file = path.extension().is_some_and(|e| e == "md" || e == "txt");
            let size = fs::metadata(&path).expect("stat").len();
            if !text_file || size > MAX_SUMMARY_BYTES {
                bad.push(format!("{}: {size} B", relative(&root, &path)));
            }
        }
    }
    assert_none(
        &bad,
        "tools/results/ keeps one compact summary per cited campaign (tools/README.md)",
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
