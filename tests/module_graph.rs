//! The crate's module graph has no loops: a module that imports another is read after it,
//! and a leaf ([`identity`], [`diag`], [`headers`], ...) can be understood on its own. Edges
//! are the `crate::<module>` paths in each top-level module's code (comments left out);
//! `cargo test --test module_graph -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules each top-level module of `src/` names in its code.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in sources(src) {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a file");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let edges = graph.entry(module.clone()).or_default();
        for used in crate_paths(&text) {
            if used != module {
                edges.insert(used);
            }
        }
    }
    graph
}

/// The first segment of every `crate::` path in `text`, outside comments.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c, d::{e, f}}`: the names at the group's own level.
                let mut depth = 0;
                let mut name = String::new();
                let mut at_start = true;
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => at_start = true,
                        c if at_start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                            name.push(c)
                        }
                        _ => {
                            if !name.is_empty() {
                                found.push(std::mem::take(&mut name));
                            }
                            if !c.is_whitespace() {
                                at_start = false;
                            }
                        }
                    }
                }
                if !name.is_empty() {
                    found.push(name);
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
    }
    found
}

/// A loop in the graph, as the modules along it, if there is one.
fn find_loop(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(graph, node, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_loops() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{module} -> {}", uses.join(", "));
    }
    assert!(graph.contains_key("pipeline"), "read the wrong tree?");
    if let Some(cycle) = find_loop(&graph) {
        panic!("import loop: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_leaves_import_nothing_of_the_crate() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for leaf in ["identity", "diag", "headers", "random_keys"] {
        let uses = graph.get(leaf).cloned().unwrap_or_default();
        assert!(uses.is_empty(), "{leaf} imports {uses:?}");
    }
}

#[test]
fn paths_are_read_from_code_not_comments() {
    let text =
        "use crate::{a, b::c, d::{e, f}};\n// crate::x\nlet v = crate::g::h(); // crate::y\n";
    assert_eq!(crate_paths(text), ["a", "b", "d", "g"]);
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".into()].into());
    graph.insert("b".into(), ["c".into()].into());
    graph.insert("c".into(), ["a".into()].into());
    assert_eq!(find_loop(&graph).unwrap(), ["a", "b", "c", "a"]);
    graph.insert("c".into(), BTreeSet::new());
    assert_eq!(find_loop(&graph), None);
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn the_pipeline_and_the_endpoints_know_no_pingora() {
    // What decides about a request must serve fronts that have no Pingora session
    // (forward-auth, ext_authz): Pingora stays in the proxy front and the server.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut read = 0;
    for dir in ["pipeline", "endpoints"] {
        for file in sources(&src.join(dir)) {
            read += 1;
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                assert!(
                    !code.contains("pingora"),
                    "{}:{} names Pingora: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
    assert!(read >= 10, "read the wrong tree? ({read} files)");
}
