//! The host's source layout stays what ARCHITECTURE.md describes: folders
//! that are layers, imports that point one way, no circle between files,
//! and files short enough to read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::root;

/// Longest source file, in lines.
const MAX_LINES: usize = 450;
/// Longest `main.rs`, in lines.
const MAX_MAIN_LINES: usize = 200;

/// The layers, highest first: a module may import its own folder, and any
/// layer below its own. `sandbox` and `effects` share a rank and so may not
/// import each other. The files at the top of `src/` and `config/` are the
/// shared vocabulary (rank 0).
const LAYERS: [(&str, u8); 6] = [
    ("ops", 6),
    ("service", 5),
    ("delivery", 4),
    ("sandbox", 3),
    ("effects", 3),
    ("telemetry", 2),
];

fn src() -> PathBuf {
    root().join("runtime/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a library file (`sandbox::host::publish`), or `None`
/// for the binary's files.
fn module_of(file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts[0] == "bin" {
        return None;
    }
    let last = parts.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    Some(parts)
}

/// The source without comments and without its unit-test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path named after `crate::` or `super::` in `code`,
/// resolved against the modules that exist, braces expanded one level.
fn imports(
    module: &[String],
    is_mod_file: bool,
    code: &str,
    modules: &BTreeSet<Vec<String>>,
) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let parent: Vec<String> = if is_mod_file || module.is_empty() {
        module
            .iter()
            .take(module.len().saturating_sub(1))
            .cloned()
            .collect()
    } else {
        module[..module.len() - 1].to_vec()
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(ident) {
                continue;
            }
            let mut heads = Vec::new();
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                heads.extend(group[..end].split(',').map(str::trim));
            } else {
                heads.push(rest);
            }
            for head in heads {
                let path: Vec<String> = head
                    .split("::")
                    .map_while(|seg| {
                        let seg: String = seg.chars().take_while(|c| ident(*c)).collect();
                        (!seg.is_empty()).then_some(seg)
                    })
                    .collect();
                let full: Vec<String> = base.iter().cloned().chain(path).collect();
                // The longest prefix that is a module.
                if let Some(n) = (1..=full.len())
                    .rev()
                    .find(|n| modules.contains(&full[..*n]))
                {
                    let target = full[..n].to_vec();
                    if target != module {
                        found.insert(target);
                    }
                }
            }
        }
    }
    found
}

fn rank(module: &[String]) -> (u8, &str) {
    let Some(top) = module.first() else {
        return (7, "");
    };
    LAYERS
        .iter()
        .find(|(name, _)| name == top)
        .map(|(name, rank)| (*rank, *name))
        .unwrap_or((0, "vocabulary"))
}

/// Every import points to the importer's own folder or a lower layer, no
/// file imports another that imports it back (directly or around a
/// circle), every folder says in its `mod.rs` what it owns, and no file is
/// longer than 450 lines (`main.rs`: 200).
#[test]
fn the_host_is_layered_without_circles_and_in_short_files() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut modules = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let lines = text.lines().count();
        let max = if rel.ends_with("main.rs") {
            MAX_MAIN_LINES
        } else {
            MAX_LINES
        };
        if lines > max {
            problems.push(format!("{rel}: {lines} lines, more than {max}"));
        }
        if rel.ends_with("mod.rs") && !text.starts_with("//!") {
            problems.push(format!("{rel}: does not open with what the folder owns"));
        }
        if let Some(module) = module_of(file) {
            let is_mod = rel.ends_with("mod.rs") || rel == "lib.rs";
            modules.insert(module, (is_mod, code(&text)));
        }
    }
    let names: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, (is_mod, code)) in &modules {
        let to = imports(module, *is_mod, code, &names);
        for target in &to {
            let (from_rank, from_layer) = rank(module);
            let (to_rank, to_layer) = rank(target);
            let own_folder = from_layer == to_layer;
            // The crate root and a folder's own mod.rs declare their children.
            let declares = target.starts_with(module);
            if !own_folder && !declares && from_rank <= to_rank {
                problems.push(format!(
                    "{} ({from_layer}) imports {} ({to_layer}): not a lower layer",
                    module.join("::"),
                    target.join("::")
                ));
            }
        }
        edges.insert(module.clone(), to);
    }
    // A circle: a module that reaches itself. Parents declaring children is
    // not an import, so declarations are left out of the walk.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(Vec<String>, Vec<String>)> = edges[start]
            .iter()
            .filter(|t| !t.starts_with(start))
            .map(|t| (t.clone(), vec![start.join("::"), t.join("::")]))
            .collect();
        while let Some((at, path)) = stack.pop() {
            if &at == start {
                problems.push(format!("import circle: {}", path.join(" -> ")));
                break;
            }
            if !seen.insert(at.clone()) {
                continue;
            }
            for next in edges.get(&at).into_iter().flatten() {
                if !next.starts_with(&at) {
                    let mut p = path.clone();
                    p.push(next.join("::"));
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "layout problems:\n{}",
        problems.join("\n")
    );
}
