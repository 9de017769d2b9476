//! The workspace's layering rule (ARCHITECTURE.md): within the store and the server
//! crates, no two top-level modules import each other, and no source file is over 900
//! lines. A cycle means two modules can only be understood (and changed) together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 900;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without an inline `mod tests { .. }`
/// (unit tests may reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each top-level module of the crate under `src` with the crate modules it names as
/// `crate::NAME`.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" || rel.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let lines = text.lines().count();
        assert!(
            lines <= MAX_LINES,
            "{} has {lines} lines (at most {MAX_LINES}): split it by concern",
            f.display()
        );
        let deps = map.entry(top.clone()).or_default();
        let code = code(&text);
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    map
}

fn cycles(src: &Path) -> Vec<String> {
    let map = imports(src);
    let mut found = Vec::new();
    for (a, deps) in &map {
        for b in deps {
            if a < b && map.get(b).is_some_and(|d| d.contains(a)) {
                found.push(format!("{a} <-> {b}"));
            }
        }
    }
    found
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

#[test]
fn store_modules_form_no_cycle() {
    assert_eq!(cycles(&crate_src("store")), Vec::<String>::new());
}

#[test]
fn server_modules_form_no_cycle() {
    assert_eq!(cycles(&crate_src("server")), Vec::<String>::new());
}

#[test]
fn the_check_sees_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::b::X;\n").unwrap();
    std::fs::write(
        dir.path().join("b.rs"),
        "// crate::c is only a comment\nuse crate::a::Y;\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("c.rs"), "use crate::a::Z;\n").unwrap();
    assert_eq!(cycles(dir.path()), vec!["a <-> b".to_string()]);
}
