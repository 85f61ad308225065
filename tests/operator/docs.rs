//! The repository explains itself: every relative link in its Markdown resolves to a file in it, and no
//! file points at documents that live outside it.

use crate::harness::ROOT;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name == "target" || name.starts_with('.') || name == "corpus" {
                continue;
            }
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// `[text](target)` targets of a Markdown text, outside code spans and fences.
fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop inline code so `[a](b)` inside backticks is not taken for a link.
        let mut text = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                text.push_str(part);
            }
        }
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_markdown_link_resolves_inside_the_repository() {
    let root = Path::new(ROOT);
    let mut all = Vec::new();
    files(root, &mut all);
    let mut broken = Vec::new();
    let mut checked = 0;
    for f in all
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(f).unwrap();
        for link in links(&text) {
            let target = link.split('#').next().unwrap_or_default().trim();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let resolved = f.parent().unwrap().join(target);
            let inside = resolved
                .canonicalize()
                .is_ok_and(|p| p.starts_with(root.canonicalize().unwrap()));
            if !inside {
                broken.push(format!(
                    "{}: {link}",
                    f.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(checked > 0, "no relative links found: the walk is broken");
    assert!(
        broken.is_empty(),
        "links to missing files:\n{}",
        broken.join("\n")
    );
}

#[test]
fn nothing_refers_to_documents_outside_the_repository() {
    let root = Path::new(ROOT);
    let mut all = Vec::new();
    files(root, &mut all);
    // Spelled in pieces so this file does not match itself.
    let outside = [
        ["PRODUCT", ".md"].concat(),
        ["ASC-WEBHOOK", "-API.md"].concat(),
        ["shared", "/docs"].concat(),
        ["shared", "/fixtures"].concat(),
        ["../", "seeds"].concat(),
    ];
    let mut found = Vec::new();
    for f in &all {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for needle in &outside {
            if text.contains(needle.as_str()) {
                found.push(format!(
                    "{} mentions {needle}",
                    f.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_link_reader_skips_code_and_finds_links() {
    let md = "see [a](docs/A.md) and `[b](nope.md)`\n```\n[c](nope.md)\n```\n[d](https://x.y) [e](#top)\n";
    assert_eq!(links(md), vec!["docs/A.md", "https://x.y", "#top"]);
}
