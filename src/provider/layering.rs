//! Keeps the provider's modules layered: no two of them may depend on each other, directly or
//! round a longer loop (a cycle is how `authorize` had become everyone's library before). The
//! router (`mod.rs`) uses every module; a module that names anything of the router's own
//! (`super::Item`) closes a loop with it, so handlers never import their router.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The provider modules a file names: `super::x` from a file at the top of `src/provider`
/// (or a folder's `mod.rs`), `super::super::x` from deeper, and `crate::provider::x`.
fn named_siblings(text: &str, depth: usize) -> BTreeSet<String> {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let prefixes = ["crate::provider::".to_string(), "super::".repeat(depth)];
    let mut found = BTreeSet::new();
    for prefix in &prefixes {
        for (at, _) in text.match_indices(prefix.as_str()) {
            // `super::super::x` also contains `super::x`: only whole paths count.
            let before = &text[..at];
            if before.ends_with("super::") || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[at + prefix.len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
                None => vec![rest],
            };
            for name in names {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "super" {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// The router's node: `src/provider/mod.rs`, which uses every module.
const ROUTER: &str = "mod.rs";

/// Each module of `src/provider` with the sibling modules it uses.
fn provider_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/provider");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut visit = |module: &str, path: &Path, depth: usize| {
        let text = std::fs::read_to_string(path).unwrap();
        graph
            .entry(module.to_string())
            .or_default()
            .extend(named_siblings(&text, depth));
    };
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                let depth = if inner.file_stem().unwrap() == "mod" { 1 } else { 2 };
                visit(&name, &inner, depth);
            }
        } else if name != "mod" && name != "layering" {
            visit(&name, &path, 1);
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (module, uses) in graph.iter_mut() {
        // What is not a module is an item of the router's.
        *uses = uses
            .iter()
            .map(|u| {
                if modules.contains(u) {
                    u.clone()
                } else {
                    ROUTER.to_string()
                }
            })
            .filter(|u| u != module)
            .collect();
    }
    // The router uses the modules its code names (`token::token`): not one such as `launch`,
    // which runs the router and stands above it.
    let router = std::fs::read_to_string(root.join("mod.rs")).unwrap();
    let used = modules
        .into_iter()
        .filter(|m| {
            router
                .match_indices(&format!("{m}::"))
                .any(|(at, _)| !router[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':'))
        })
        .collect();
    graph.insert(ROUTER.to_string(), used);
    graph
}

/// A loop of modules each using the next, if there is one.
fn a_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        let here = path.last().unwrap().clone();
        for next in &graph[&here] {
            if let Some(at) = path.iter().position(|m| m == next) {
                let mut cycle = path[at..].to_vec();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if !done.contains(next) {
                path.push(next.clone());
                if let Some(c) = walk(graph, path, done) {
                    return Some(c);
                }
                path.pop();
            }
        }
        done.insert(here);
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| walk(graph, &mut vec![start.clone()], &mut done))
}

#[test]
fn the_provider_modules_form_no_cycle() {
    let graph = provider_graph();
    assert!(graph.len() > 15, "the walk found the modules: {graph:?}");
    assert!(
        graph["signin"].contains("browser_flow"),
        "the walk reads uses: {graph:?}"
    );
    assert!(
        graph["browser_flow"].contains("browser"),
        "`use super::{{..}}` groups count: {graph:?}"
    );
    assert_eq!(a_cycle(&graph), None, "{graph:#?}");
    assert!(graph[ROUTER].contains("token"), "the router uses every module");
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec![])]
            .into_iter()
            .map(|(m, uses)| (m.to_string(), uses.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(a_cycle(&graph).unwrap().len(), 4);
    let text = "use super::{pages, browser::x};\nuse super::super::error::E;\nlet y = crate::provider::form::F;";
    assert_eq!(
        named_siblings(text, 2),
        ["error", "form"].map(String::from).into_iter().collect()
    );
    assert!(named_siblings(text, 1).contains("pages"));
}
