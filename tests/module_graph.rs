//! The module import graph of `src/` has no cycle. Nodes are the top-level
//! modules, with the submodules of `config/` and `token/` as nodes of their
//! own (deeper files fold into them, e.g. `token/store/backend.rs` is
//! `token::store`); an edge is any `crate::…` or `super::…` path in a
//! file's non-test code, resolved to the node that defines the item (a name
//! re-exported by `config/mod.rs` counts for the file that defines it).
//! With no cycle the nodes fall into layers, and an "upward import" (a
//! module importing one that, directly or not, imports it back) cannot
//! exist: the test names every cycle it finds with the file and line of
//! each edge. Declaring a child (`mod x;`) is not an edge. Checked twice:
//! between top-level modules (`config` -> `token` as soon as any file of
//! one names the other), and with the split nodes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Directories whose submodules are nodes of their own.
const SPLIT: [&str; 2] = ["config", "token"];

/// Where an edge was seen: file and line.
type Evidence = (String, usize);

struct Source {
    node: String,
    /// The file's own module path (`["config", "validate"]`).
    module: Vec<String>,
    rel: String,
    code: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `config/validate.rs` -> ["config", "validate"]; `token/store/mod.rs`
/// -> ["token", "store"]; `lib.rs` -> [].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

fn node_of(module: &[String]) -> String {
    match module {
        [] => "lib".into(),
        [top, sub, ..] if SPLIT.contains(&top.as_str()) => format!("{top}::{sub}"),
        [top, ..] => top.clone(),
    }
}

/// The file's code without comments and without its `#[cfg(test)]` part
/// (tests may reach anywhere; they are not a dependency of the server).
fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Absolute paths (segments after `crate`) named at each line of `code`.
fn paths(code: &str, module: &[String]) -> Vec<(Vec<String>, usize)> {
    let mut out = Vec::new();
    for (i, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(['c', 's']) {
            let tail = &rest[at..];
            let boundary = at == 0
                || !rest[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            let (mut base, mut after) = (None, "");
            if boundary {
                if let Some(t) = tail.strip_prefix("crate::") {
                    base = Some(Vec::new());
                    after = t;
                } else if tail.starts_with("super::") {
                    let mut m = module.to_vec();
                    let mut t = tail;
                    while let Some(u) = t.strip_prefix("super::") {
                        m.pop();
                        t = u;
                    }
                    base = Some(m);
                    after = t;
                }
            }
            let Some(mut segs) = base else {
                rest = &tail[1..];
                continue;
            };
            let mut t = after;
            loop {
                let id = ident_at(t);
                if id.is_empty() {
                    break;
                }
                segs.push(id.to_string());
                t = &t[id.len()..];
                match t.strip_prefix("::") {
                    Some(u) => t = u,
                    None => break,
                }
            }
            if let Some(group) = t.strip_prefix('{') {
                // `crate::config::{A, b::C}`: each name is a path of its own.
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for name in group.split(',') {
                    let mut p = segs.clone();
                    p.extend(
                        name.trim()
                            .split("::")
                            .map(ident_at)
                            .filter(|s| !s.is_empty() && *s != "self")
                            .map(str::to_string),
                    );
                    out.push((p, i + 1));
                }
            }
            out.push((segs, i + 1));
            rest = &tail[1..];
        }
    }
    out
}

/// Item names each node defines (`struct X`, `fn x`, ...), to resolve a
/// name its parent re-exports.
fn definitions(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let kinds = [
        "struct ", "enum ", "fn ", "type ", "trait ", "const ", "static ",
    ];
    let mut defs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        for line in s.code.lines() {
            let mut t = line.trim_start();
            for prefix in ["pub(crate) ", "pub(super) ", "pub ", "async "] {
                t = t.strip_prefix(prefix).unwrap_or(t);
            }
            for k in kinds {
                if let Some(rest) = t.strip_prefix(k) {
                    let id = ident_at(rest);
                    if !id.is_empty() {
                        defs.entry(s.node.clone())
                            .or_default()
                            .insert(id.to_string());
                    }
                }
            }
        }
    }
    defs
}

fn resolve(
    segs: &[String],
    nodes: &BTreeSet<String>,
    defs: &BTreeMap<String, BTreeSet<String>>,
) -> Option<String> {
    let top = segs.first()?;
    if !SPLIT.contains(&top.as_str()) {
        let n = if nodes.contains(top) { top } else { "lib" };
        return Some(n.to_string());
    }
    let Some(second) = segs.get(1) else {
        return Some(top.clone());
    };
    let sub = format!("{top}::{second}");
    if nodes.contains(&sub) {
        return Some(sub);
    }
    // A name `top/mod.rs` re-exports: the child that defines it.
    let owner = defs
        .iter()
        .find(|(n, names)| n.starts_with(&format!("{top}::")) && names.contains(second.as_str()));
    Some(owner.map_or_else(|| top.clone(), |(n, _)| n.clone()))
}

type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut sources = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        // main.rs is the binary, a crate of its own; tests.rs files are tests.
        if rel == Path::new("main.rs") || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let module = module_path(rel);
        sources.push(Source {
            node: node_of(&module),
            module,
            rel: format!("src/{}", rel.display()),
            code: non_test_code(&std::fs::read_to_string(&f).unwrap()),
        });
    }
    let nodes: BTreeSet<String> = sources.iter().map(|s| s.node.clone()).collect();
    let defs = definitions(&sources);
    let mut g = Graph::new();
    for s in &sources {
        for (segs, line) in paths(&s.code, &s.module) {
            let Some(to) = resolve(&segs, &nodes, &defs) else {
                continue;
            };
            // Within a node, and a parent naming its own children's items
            // (declaring and re-exporting them), are not imports.
            let parent_of_target = to.starts_with(&format!("{}::", s.node));
            if to != s.node && !parent_of_target {
                g.entry(s.node.clone())
                    .or_default()
                    .entry(to)
                    .or_insert((s.rel.clone(), line));
            }
        }
    }
    g
}

/// One cycle through `start`, if any: a depth-first search back to it.
fn cycle_from(g: &Graph, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((n, path)) = stack.pop() {
        for next in g.get(&n).into_iter().flat_map(|e| e.keys()) {
            if next == start {
                let mut p = path.clone();
                p.push(next.clone());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

/// The same graph between top-level modules only: `config::store ->
/// token::store` becomes `config -> token`.
fn top_level(g: &Graph) -> Graph {
    let top = |n: &str| n.split("::").next().unwrap_or(n).to_string();
    let mut out = Graph::new();
    for (from, edges) in g {
        for (to, evidence) in edges {
            if top(from) != top(to) {
                out.entry(top(from))
                    .or_default()
                    .entry(top(to))
                    .or_insert_with(|| evidence.clone());
            }
        }
    }
    out
}

fn cycles(g: &Graph) -> String {
    let mut found = BTreeSet::new();
    let mut report = String::new();
    for start in g.keys() {
        let Some(cycle) = cycle_from(g, start) else {
            continue;
        };
        // The same cycle seen from another of its nodes.
        let key: BTreeSet<String> = cycle.iter().cloned().collect();
        if !found.insert(key) {
            continue;
        }
        report.push_str(&format!("cycle: {}\n", cycle.join(" -> ")));
        for pair in cycle.windows(2) {
            let (file, line) = &g[&pair[0]][&pair[1]];
            report.push_str(&format!("  {} -> {}  ({file}:{line})\n", pair[0], pair[1]));
        }
    }
    report
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    assert!(
        g.contains_key("proxy") && g.contains_key("config::validate"),
        "the graph was not read: {:?}",
        g.keys().collect::<Vec<_>>()
    );
    let report = cycles(&top_level(&g)) + &cycles(&g);
    assert!(report.is_empty(), "import cycles in src/:\n{report}");
}
