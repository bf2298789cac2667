//! The engine's shape, checked: its modules form no import loop (a layered crate: the leaf
//! vocabulary, the specs and rules, `Conversation` and `Turn`, the chat-turn machine, the
//! faces), the leaves import nothing, and the hosts reach the engine only through its
//! public faces — never the rule modules the machine sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Engine modules a host must not import: what the chat-turn machine sequences, and the
/// wire formats (the hosts get all of it through `chat`, `api` and the crate root).
const NOT_FOR_HOSTS: &[&str] = &[
    "dialogue",
    "rules",
    "hours",
    "offline",
    "turn",
    "handoff",
    "provider",
    "wire",
    "openai",
    "anthropic",
    "gemini",
    "sse",
    "conversation",
    "sim",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without its inline test module (tests do not count).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable source");
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every identifier that follows `prefix` (`crate::` or `kefu_engine::`), including the
/// first segment of each item in a `prefix{a, b::c}` group.
fn first_segments(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => items.push(core::mem::take(&mut item)),
                    _ if depth == 1 => item.push(c),
                    _ => {}
                }
                if depth == 0 {
                    items.push(core::mem::take(&mut item));
                    break;
                }
            }
            out.extend(
                items
                    .iter()
                    .map(|s| ident(s.trim()))
                    .filter(|s| !s.is_empty()),
            );
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn engine_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && !rel.ends_with("tests.rs")).then(|| name.to_owned())
}

/// The engine's modules and whom each imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = engine_src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        if let Some(m) = module_of(&src, file) {
            edges.entry(m).or_default();
        }
    }
    let modules: BTreeSet<String> = edges.keys().cloned().collect();
    for file in &files {
        let Some(m) = module_of(&src, file) else {
            continue;
        };
        let code = code(file);
        let mut found = first_segments(&code, "crate::");
        // A top-level module's `super::x` is the crate's `x`.
        let depth = file
            .strip_prefix(&src)
            .map_or(0, |r| r.components().count());
        if depth == 1 || (depth == 2 && file.ends_with("mod.rs")) {
            found.extend(first_segments(&code, "super::"));
        }
        for target in found {
            if modules.contains(&target) && target != m {
                edges.get_mut(&m).expect("known").insert(target);
            }
        }
    }
    edges
}

/// The strongly connected groups of more than one module (Tarjan's algorithm).
fn loops(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let i = w.index.len();
        w.index.insert(v, i);
        w.low.insert(v, i);
        w.stack.push(v);
        w.on_stack.insert(v);
        for t in &w.edges[v] {
            let t = t.as_str();
            if !w.index.contains_key(t) {
                visit(w, t);
                let low = w.low[v].min(w.low[t]);
                w.low.insert(v, low);
            } else if w.on_stack.contains(t) {
                let low = w.low[v].min(w.index[t]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut group = BTreeSet::new();
            while let Some(t) = w.stack.pop() {
                w.on_stack.remove(t);
                group.insert(t.to_owned());
                if t == v {
                    break;
                }
            }
            if group.len() > 1 {
                w.out.push(group);
            }
        }
    }
    let mut w = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.out
}

#[test]
fn the_engine_has_no_import_loop() {
    let edges = graph();
    assert!(
        edges.contains_key("chat") && edges.contains_key("vocab") && edges.len() > 25,
        "the graph was read: {edges:?}"
    );
    assert_eq!(
        loops(&edges),
        Vec::<BTreeSet<String>>::new(),
        "import loops"
    );
    // The leaves import no other module of the engine.
    for leaf in ["vocab", "error", "time"] {
        let deps: Vec<_> = edges[leaf]
            .iter()
            .filter(|m| m.as_str() != "time")
            .collect();
        assert!(deps.is_empty(), "{leaf} imports {deps:?}");
    }
}

#[test]
fn the_loop_finder_finds_loops() {
    // The check above can fail: a two-module loop and a three-module loop are found, a
    // chain is not.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [
        ("a", "b"),
        ("b", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "c"),
        ("f", "a"),
    ] {
        edges.entry(a.into()).or_default().insert(b.into());
        edges.entry(b.into()).or_default();
    }
    let mut found: Vec<Vec<String>> = loops(&edges)
        .into_iter()
        .map(|g| g.into_iter().collect())
        .collect();
    found.sort();
    assert_eq!(found, [vec!["a", "b"], vec!["c", "d", "e"]]);
    assert_eq!(
        first_segments("use crate::{a::B, c, d::{e, f}}; crate::g::h()", "crate::"),
        ["a", "c", "d", "g"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    );
}

#[test]
fn hosts_use_only_the_engines_faces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for host in ["workers/src", "components/spin/src"] {
        let mut files = Vec::new();
        rust_files(&root.join(host), &mut files);
        for file in files {
            let code = code(&file);
            for module in first_segments(&code, "kefu_engine::") {
                assert!(
                    !NOT_FOR_HOSTS.contains(&module.as_str()),
                    "{} imports kefu_engine::{module}, which the chat-turn machine owns",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "the hosts' sources were read ({checked} files)"
    );
}
