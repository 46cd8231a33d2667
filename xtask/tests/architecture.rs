//! Tidy checks over ARCHITECTURE.md: it stays a map (at most 300 lines), every path it names in
//! backticks exists in the repository, and every relative link in it and in `docs/` leads to a
//! file and, where it names one, a heading that exists.
//!
//! A backticked token names a path when it has no whitespace (a shell command has some), is not a
//! URL or an absolute path, and contains a `/` or ends in `.rs`, `.md`, `.toml`, `.sh` or `.pml`.
//! Braces expand (`runtime/{fetch,serve}.rs` names two files); a segment with `*` or `<` is a
//! pattern, so only the folder before it must exist; trailing punctuation is ignored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 300;
const EXTENSIONS: [&str; 5] = [".rs", ".md", ".toml", ".sh", ".pml"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The text without fenced code blocks (figures, examples).
fn without_fences(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The contents of the inline code spans of `text` (a span may cross a line break).
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut current: Option<String> = None;
    for c in without_fences(text).chars() {
        match (c, current.as_mut()) {
            ('`', None) => current = Some(String::new()),
            ('`', Some(_)) => spans.push(current.take().unwrap()),
            (c, Some(s)) => s.push(c),
            (_, None) => {}
        }
    }
    spans
}

/// The path a code span names, if it names one.
fn path_of(span: &str) -> Option<&str> {
    let token = span.trim_end_matches(['.', ',', ';', ':', ')']);
    let names_path = !token.is_empty()
        && !token.contains(char::is_whitespace)
        && !token.contains("://")
        && !token.starts_with('/')
        && !token.starts_with('~')
        && (token.contains('/') || EXTENSIONS.iter().any(|e| token.ends_with(e)));
    names_path.then_some(token)
}

/// Every path `a/{b,c}/d` stands for.
fn expand_braces(path: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (path.find('{'), path.find('}')) else {
        return vec![path.to_string()];
    };
    if close < open {
        return vec![path.to_string()];
    }
    let (head, tail) = (&path[..open], &path[close + 1..]);
    path[open + 1..close]
        .split(',')
        .flat_map(|alt| expand_braces(&format!("{head}{alt}{tail}")))
        .collect()
}

/// The part of a path that must exist: up to the first segment that is a pattern.
fn fixed_part(path: &str) -> String {
    path.split('/')
        .take_while(|seg| !seg.contains('*') && !seg.contains('<'))
        .collect::<Vec<_>>()
        .join("/")
}

/// The paths named in `text` that do not exist under `root`.
fn missing_paths(text: &str, root: &Path) -> Vec<String> {
    let mut missing = BTreeSet::new();
    for span in code_spans(text) {
        let Some(path) = path_of(&span) else { continue };
        for p in expand_braces(path) {
            let fixed = fixed_part(&p);
            if !fixed.is_empty() && !root.join(&fixed).exists() {
                missing.insert(p);
            }
        }
    }
    missing.into_iter().collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    without_fences(text)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// Relative link targets (`[text](target)`) in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let text = without_fences(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target.to_string());
        }
        rest = &rest[end..];
    }
    out
}

/// The relative links of the Markdown file `file` whose file or heading does not exist.
fn broken_links(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let dir = file.parent().unwrap();
    let name = file.strip_prefix(root()).unwrap_or(file).display();
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
        let dest = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !dest.exists() {
            broken.push(format!("{name}: {target} (no such file)"));
        } else if !anchor.is_empty() && dest.extension().is_some_and(|e| e == "md") {
            let headings = anchors(&std::fs::read_to_string(&dest).unwrap());
            if !headings.contains(anchor) {
                broken.push(format!("{name}: {target} (no such heading)"));
            }
        }
    }
    broken
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "md") {
            out.push(p);
        }
    }
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap()
}

#[test]
fn architecture_is_a_map_of_at_most_300_lines() {
    let lines = architecture().lines().count();
    assert!(
        lines <= MAX_LINES,
        "ARCHITECTURE.md has {lines} lines, more than {MAX_LINES}: move details to docs/"
    );
}

#[test]
fn every_path_architecture_names_exists() {
    let text = architecture();
    assert!(
        code_spans(&text).iter().filter_map(|s| path_of(s)).count() > 30,
        "the check found the paths"
    );
    let missing = missing_paths(&text, &root());
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist (relative to the repository root):\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_relative_link_of_architecture_and_docs_resolves() {
    let root = root();
    let mut files = vec![root.join("ARCHITECTURE.md"), root.join("README.md")];
    markdown_files(&root.join("docs"), &mut files);
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_path_check_sees_what_it_must() {
    let root = root();
    let text = "See `xtask/src/{main,ci}.rs`, `agent/node/` and `hw-profiles/*.toml`; \
                not `bash .ci/run`, `https://example.com/a.md` or `/lib/firmware`. \
                Missing: `xtask/src/nowhere.rs`, `agent/{node,nowhere}/`, `gone.md`.\n\
                ```\nfigure `not/checked.rs`\n```\n";
    assert_eq!(
        missing_paths(text, &root),
        ["agent/nowhere/", "gone.md", "xtask/src/nowhere.rs"]
    );
    assert_eq!(path_of("docs/testing.md."), Some("docs/testing.md"));
    assert_eq!(path_of("Store::begin"), None);
    assert_eq!(
        expand_braces("a/{b,c}/{d,e}.rs"),
        ["a/b/d.rs", "a/b/e.rs", "a/c/d.rs", "a/c/e.rs"]
    );
    assert_eq!(
        slug("`agent/cli` (`entente-cli`, binary `entente`)"),
        "agentcli-entente-cli-binary-entente"
    );
    assert_eq!(slug("A node's own lease"), "a-nodes-own-lease");
}
