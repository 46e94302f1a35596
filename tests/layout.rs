//! The layout the README promises: every source file is named in its Layout section and every
//! file named there exists; the core crate depends on nothing that does I/O.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The README's Layout section.
fn layout_section() -> String {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let start = readme.find("\n## Layout\n").expect("the README has a Layout section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map(|i| i + 3).unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Everything the section writes in backticks.
fn named(section: &str) -> BTreeSet<String> {
    section.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// The source files (.rs, .sql) under `dir`, relative to it.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "sql") {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn roots() -> [PathBuf; 2] {
    [Path::new(ROOT).join("src"), Path::new(ROOT).join("crates/core/src")]
}

#[test]
fn every_source_file_is_named_in_the_readme_layout() {
    let named = named(&layout_section());
    let mut missing = Vec::new();
    for root in roots() {
        for file in sources(&root) {
            let parts: Vec<String> = file.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let (name, dirs) = parts.split_last().unwrap();
            let dirs_named = dirs.iter().all(|d| named.contains(&format!("{d}/")));
            // A directory's `mod.rs` is named by its directory.
            let file_named = (name == "mod.rs" && !dirs.is_empty()) || named.iter().any(|n| n.ends_with(name.as_str()));
            if !(dirs_named && file_named) {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's Layout section does not name: {missing:?}"
    );
}

#[test]
fn every_file_the_readme_layout_names_exists() {
    let files: Vec<String> = roots()
        .iter()
        .flat_map(|root| sources(root))
        .map(|p| p.display().to_string())
        .collect();
    let dirs: BTreeSet<String> = roots()
        .iter()
        .flat_map(|root| sources(root))
        .flat_map(|p| {
            p.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .map(|a| format!("{}/", a.file_name().unwrap().to_string_lossy()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut gone = Vec::new();
    for name in named(&layout_section()) {
        let is_file = name.ends_with(".rs") || name.ends_with(".sql");
        // Of the sources (by name or path), or of the repository (crds/, tests/layout.rs).
        let in_repository =
            || roots().iter().any(|root| root.join(&name).exists()) || Path::new(ROOT).join(&name).exists();
        let exists = if is_file {
            files.iter().any(|f| f == &name || f.ends_with(&format!("/{name}"))) || in_repository()
        } else if name.ends_with('/') && !name.contains(' ') {
            dirs.contains(&name) || in_repository()
        } else {
            true
        };
        if !exists {
            gone.push(name);
        }
    }
    assert!(
        gone.is_empty(),
        "README.md's Layout section names what is not there: {gone:?}"
    );
}

#[test]
fn the_core_crate_depends_on_nothing_that_does_io() {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("crates/core/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("the core has dependencies")
        .split("\n[")
        .next()
        .unwrap();
    let names: Vec<&str> = deps
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().trim())
        .collect();
    for io in [
        "tokio",
        "hyper",
        "hyper-util",
        "hyper-rustls",
        "axum",
        "sqlx",
        "reqwest",
        "rustls",
        "tokio-rustls",
        "openidconnect",
        "tower",
        "futures",
        "kube-client",
        "kube-runtime",
    ] {
        assert!(
            !names.contains(&io),
            "crates/core must not depend on {io} (it does I/O)"
        );
    }
    let kube = deps
        .lines()
        .find(|l| l.starts_with("kube "))
        .expect("the core uses kube's types");
    assert!(
        kube.contains("default-features = false") && !kube.contains("client") && !kube.contains("runtime"),
        "the core takes kube's types and derive only: {kube}"
    );
}
