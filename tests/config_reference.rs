//! `docs/configuration.md` against the parser: every key the config structs of
//! `src/config/file.rs` accept (they `deny_unknown_fields`) has a row in the reference, every
//! row names a key they accept, and every key the README, `docs/`, `deploy/` and the example
//! configs write (TOML blocks and files, commented-out keys, `[section] key` and
//! `section.key` in prose) is one the parser accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a field holds: a value, a table (or array of tables) of a struct, or a map from
/// names to tables of a struct (`[upstream.NAME]`).
#[derive(Debug, Clone)]
enum Kind {
    Leaf,
    Table(String),
    Map(String),
}

/// The structs of `src/config/file.rs`: name → fields in order, with their kinds.
struct Schema {
    structs: BTreeMap<String, Vec<(String, Kind)>>,
}

/// `Option<S<Vec<S<T>>>>` → `T`.
fn unwrap_type(mut t: &str) -> &str {
    loop {
        let inner = ["Option<", "S<", "Vec<"]
            .iter()
            .find_map(|p| t.strip_prefix(p))
            .and_then(|rest| rest.strip_suffix('>'));
        match inner {
            Some(i) => t = i.trim(),
            None => return t,
        }
    }
}

impl Schema {
    fn load() -> Schema {
        let text = read(&root().join("src/config/file.rs"));
        for attribute in ["rename", "alias", "flatten"] {
            assert!(
                !text.contains(&format!("serde({attribute}")),
                "file.rs uses serde({attribute}): teach this test about it"
            );
        }
        let mut raw: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.trim_end_matches('{').trim().to_string();
                raw.insert(name.clone(), Vec::new());
                current = Some(name);
            } else if line == "}" {
                current = None;
            } else if let (Some(s), Some(field)) = (&current, line.strip_prefix("pub ")) {
                let (name, ty) = field.split_once(':').expect("pub name: Type,");
                raw.get_mut(s).unwrap().push((
                    name.trim().to_string(),
                    ty.trim().trim_end_matches(',').to_string(),
                ));
            }
        }
        assert!(
            raw.contains_key("File") && raw.len() > 10,
            "file.rs not understood"
        );
        let names: BTreeSet<String> = raw.keys().cloned().collect();
        let kind = |ty: &str| -> Kind {
            let t = unwrap_type(ty);
            if let Some(map) = t
                .strip_prefix("BTreeMap<")
                .and_then(|m| m.strip_suffix('>'))
            {
                let value = unwrap_type(map.split_once(", ").expect("map types").1.trim());
                return match names.contains(value) {
                    true => Kind::Map(value.to_string()),
                    false => Kind::Leaf,
                };
            }
            match names.contains(t) {
                true => Kind::Table(t.to_string()),
                false => Kind::Leaf,
            }
        };
        let structs = raw
            .iter()
            .map(|(s, fields)| {
                let fields = fields.iter().map(|(n, t)| (n.clone(), kind(t))).collect();
                (s.clone(), fields)
            })
            .collect();
        Schema { structs }
    }

    fn field(&self, s: &str, key: &str) -> Option<&Kind> {
        self.structs[s]
            .iter()
            .find(|(n, _)| n == key)
            .map(|(_, k)| k)
    }

    /// Every table the file may hold, by its path (`server.tls`, `upstream.NAME`), with its
    /// struct.
    fn sections(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut todo = vec![(String::new(), "File".to_string())];
        while let Some((path, s)) = todo.pop() {
            for (name, kind) in &self.structs[&s] {
                let join = |n: &str| match path.is_empty() {
                    true => n.to_string(),
                    false => format!("{path}.{n}"),
                };
                match kind {
                    Kind::Table(t) => todo.push((join(name), t.clone())),
                    Kind::Map(t) => todo.push((join(&format!("{name}.NAME")), t.clone())),
                    Kind::Leaf => {}
                }
            }
            out.insert(path, s);
        }
        out
    }

    /// The struct of a table header such as `upstream.app` or `route.cors`; a map consumes
    /// the next segment as a name.
    fn resolve(&self, header: &str) -> Result<String, String> {
        let mut s = "File".to_string();
        let mut segments = header.split('.').map(|p| p.trim().trim_matches('"'));
        while let Some(seg) = segments.next() {
            match self.field(&s, seg) {
                Some(Kind::Table(t)) => s = t.clone(),
                Some(Kind::Map(t)) => {
                    segments.next();
                    s = t.clone();
                }
                Some(Kind::Leaf) => return Err(format!("`{seg}` of [{header}] is not a table")),
                None => return Err(format!("unknown table [{header}] (no `{seg}`)")),
            }
        }
        Ok(s)
    }

    /// A parsed TOML table checked key by key against struct `s`.
    fn check_value(&self, table: &toml::Table, s: &str, path: &str, errors: &mut Vec<String>) {
        for (key, value) in table {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match (self.field(s, key), value) {
                (None, _) => errors.push(format!("unknown key `{at}`")),
                (Some(Kind::Leaf), _) => {}
                (Some(Kind::Table(t)), toml::Value::Table(inner)) => {
                    self.check_value(inner, t, &at, errors)
                }
                (Some(Kind::Table(t)), toml::Value::Array(items)) => {
                    for item in items {
                        if let toml::Value::Table(inner) = item {
                            self.check_value(inner, t, &at, errors);
                        }
                    }
                }
                (Some(Kind::Map(t)), toml::Value::Table(named)) => {
                    for (name, inner) in named {
                        if let toml::Value::Table(inner) = inner {
                            self.check_value(inner, t, &format!("{at}.{name}"), errors);
                        }
                    }
                }
                (Some(_), _) => errors.push(format!("`{at}` must be a table")),
            }
        }
    }
}

/// The reference's sections (`## [server]`, `### [route.cors]`) with the keys of their tables'
/// rows (`` | `listen` | ``).
fn reference() -> BTreeMap<String, BTreeSet<String>> {
    let text = read(&root().join("docs/configuration.md"));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("##") {
            let heading = line.trim_start_matches('#').trim();
            section = heading
                .strip_prefix('[')
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
            if let Some(s) = &section {
                out.entry(s.clone()).or_default();
            }
        } else if let (Some(s), Some(row)) = (&section, line.strip_prefix("| `")) {
            let key = row.split('`').next().unwrap_or_default();
            out.get_mut(s).unwrap().insert(key.to_string());
        }
    }
    out
}

#[test]
fn every_key_the_parser_accepts_is_in_the_reference_and_nothing_else() {
    let schema = Schema::load();
    let documented = reference();
    let mut missing = Vec::new();
    for (path, s) in schema.sections() {
        if path.is_empty() {
            continue;
        }
        let Some(rows) = documented.get(&path) else {
            missing.push(format!("section [{path}]"));
            continue;
        };
        for (key, _) in &schema.structs[&s] {
            if !rows.contains(key) {
                missing.push(format!("[{path}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks: {missing:#?}"
    );
    let sections = schema.sections();
    let mut unknown = Vec::new();
    for (path, rows) in &documented {
        let Some(s) = sections.get(path) else {
            unknown.push(format!("section [{path}]"));
            continue;
        };
        for key in rows {
            if schema.field(s, key).is_none() {
                unknown.push(format!("[{path}] {key}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys the parser refuses: {unknown:#?}"
    );
}

/// Every `.md` and `.toml` file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md" || e == "toml") {
            out.push(path);
        }
    }
}

/// The top-level keys of a policy file (`src/authz/file.rs`), which docs show too.
const POLICY_KEYS: [&str; 6] = ["default", "mode", "roles", "binding", "rule", "test"];

/// A gateway config as TOML (a whole file or a ```toml block): parsed and checked, and its
/// commented-out `# key = ...` lines checked against the table they sit in.
fn check_toml(schema: &Schema, text: &str, errors: &mut Vec<String>) {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("not TOML: {e}"));
            return;
        }
    };
    if !table.is_empty() && table.keys().all(|k| POLICY_KEYS.contains(&k.as_str())) {
        return;
    }
    schema.check_value(&table, "File", "", errors);
    let mut s = Ok("File".to_string());
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let header = line.split(']').next().unwrap_or_default();
            s = schema.resolve(header.trim_start_matches('['));
        } else if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            let key: String = comment
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let assigns = comment[key.len()..].trim_start().starts_with('=');
            if key.is_empty() || !assigns {
                continue;
            }
            match &s {
                Ok(s) if schema.field(s, &key).is_some() => {}
                Ok(s) => errors.push(format!("commented-out key `{key}` is not a key of {s}")),
                Err(e) => errors.push(e.clone()),
            }
        }
    }
}

/// Keys named in prose: `` `[session] secret` ``, `` `[[idp]] client_id` `` and
/// `` `server.public_url` ``.
fn check_prose(schema: &Schema, text: &str, errors: &mut Vec<String>) {
    let sections: BTreeSet<&str> = schema.structs["File"]
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        if let Some(rest) = span.strip_prefix('[') {
            let Some((header, after)) = rest.split_once(']') else {
                continue;
            };
            let header = header.trim_start_matches('[');
            let key: String = after
                .trim_start_matches(']')
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let first = header.split('.').next().unwrap_or_default();
            if !sections.contains(first) {
                continue;
            }
            match schema.resolve(header) {
                Ok(s) if key.is_empty() || schema.field(&s, &key).is_some() => {}
                Ok(_) => errors.push(format!("`{span}`: no key `{key}` in [{header}]")),
                Err(e) => errors.push(format!("`{span}`: {e}")),
            }
        } else if let Some((table, key)) = span.rsplit_once('.') {
            let word = |w: &str| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            let first = table.split('.').next().unwrap_or_default();
            let extension = [
                "rs", "md", "toml", "json", "yaml", "yml", "sh", "pem", "mjs",
            ];
            if !sections.contains(first)
                || !table.split('.').all(word)
                || !word(key)
                || extension.contains(&key)
            {
                continue;
            }
            match schema.resolve(table) {
                Ok(s) if schema.field(&s, key).is_some() => {}
                Ok(_) => errors.push(format!("`{span}`: no key `{key}` in [{table}]")),
                Err(e) => errors.push(format!("`{span}`: {e}")),
            }
        }
    }
}

#[test]
fn every_key_the_docs_and_examples_write_is_one_the_parser_accepts() {
    let schema = Schema::load();
    let mut paths = vec![root().join("README.md"), root().join("gateway.toml")];
    for dir in ["docs", "deploy", "examples"] {
        files(&root().join(dir), &mut paths);
    }
    let mut problems = Vec::new();
    let mut checked_blocks = 0;
    for path in &paths {
        let text = read(path);
        let mut errors = Vec::new();
        if path.extension().is_some_and(|e| e == "toml") {
            check_toml(&schema, &text, &mut errors);
            checked_blocks += 1;
        } else {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("```toml\n") {
                let block = &rest[start + 8..];
                let end = block.find("```").unwrap_or(block.len());
                check_toml(&schema, &block[..end], &mut errors);
                checked_blocks += 1;
                rest = &block[end..];
            }
            check_prose(&schema, &text, &mut errors);
        }
        let shown = path.strip_prefix(root()).unwrap_or(path).display();
        problems.extend(errors.into_iter().map(|e| format!("{shown}: {e}")));
    }
    assert!(checked_blocks >= 10, "found only {checked_blocks} configs");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_checks_catch_a_misspelt_key() {
    let schema = Schema::load();
    let mut errors = Vec::new();
    check_toml(
        &schema,
        "[session]\nsecret_fil = \"x\"\n# cookie_nam = \"y\"\n[upstream.app]\nserver = []\n",
        &mut errors,
    );
    check_prose(
        &schema,
        "set `[[idp]] client_secrets` or `server.public_uri`, not `src/config/file.rs`",
        &mut errors,
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
}
