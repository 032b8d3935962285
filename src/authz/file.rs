//! The policy file format (`policies/*.toml`), parsed with spans and lowered into a
//! [`Policy`]; every problem is reported with its line.

use std::collections::HashMap;

use serde::Deserialize;
use toml::Spanned;

use super::cel::Condition;
use super::pattern::Pattern;
use super::{Action, Binding, Policy, PolicyTest, Rule};
use crate::diag::Reporter;

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default: Option<S<String>>,
    mode: Option<S<String>>,
    #[serde(default)]
    roles: HashMap<String, Vec<S<String>>>,
    #[serde(default)]
    binding: Vec<S<BindingFile>>,
    #[serde(default)]
    rule: Vec<S<RuleFile>>,
    #[serde(default)]
    test: Vec<S<TestFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingFile {
    role: S<String>,
    groups: Option<Vec<String>>,
    subjects: Option<Vec<String>>,
    email_domains: Option<Vec<String>>,
    /// Whose identities the binding is for (token issuers); absent: any issuer's.
    issuers: Option<S<Vec<String>>>,
    when: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: S<String>,
    paths: S<Vec<S<String>>>,
    methods: Option<Vec<S<String>>>,
    hosts: Option<Vec<String>>,
    when: Option<S<String>>,
    allow: Option<S<bool>>,
    deny: Option<S<bool>>,
    require: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    name: String,
    request: S<TestRequest>,
    identity: Option<toml::Table>,
    expect: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    method: String,
    path: String,
    host: Option<String>,
    time: Option<S<String>>,
}

fn condition(r: &mut Reporter, when: &Option<S<String>>) -> Option<Condition> {
    let w = when.as_ref()?;
    match Condition::compile(w.get_ref()) {
        Ok(c) => Some(c),
        Err(e) => {
            r.error(w.span(), format!("condition: {e}"));
            None
        }
    }
}

pub(super) fn lower(r: &mut Reporter, text: &str) -> Option<Policy> {
    let f: File = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            r.error(e.span().unwrap_or(0..0), e.message().trim().to_string());
            return None;
        }
    };
    let default_allow = match &f.default {
        None => false,
        Some(d) => match d.get_ref().as_str() {
            "deny" => false,
            "allow" => true,
            other => {
                r.error(
                    d.span(),
                    format!("default must be \"deny\" or \"allow\", not {other:?}"),
                );
                false
            }
        },
    };
    let report_only = match &f.mode {
        None => false,
        Some(m) => match m.get_ref().as_str() {
            "enforce" => false,
            "report-only" => true,
            other => {
                r.error(
                    m.span(),
                    format!("mode must be \"enforce\" or \"report-only\", not {other:?}"),
                );
                false
            }
        },
    };
    let roles: HashMap<String, Vec<String>> = f
        .roles
        .iter()
        .map(|(name, perms)| {
            (
                name.clone(),
                perms.iter().map(|p| p.get_ref().clone()).collect(),
            )
        })
        .collect();
    let mut bindings = Vec::new();
    for b in &f.binding {
        let c = b.get_ref();
        if !roles.contains_key(c.role.get_ref()) {
            r.error(
                c.role.span(),
                format!("binding names unknown role {:?}", c.role.get_ref()),
            );
        }
        let when = condition(r, &c.when);
        if c.groups.is_none()
            && c.subjects.is_none()
            && c.email_domains.is_none()
            && c.when.is_none()
        {
            r.error(
                b.span(),
                "a binding needs groups, subjects, email_domains or when",
            );
        }
        let issuers = c
            .issuers
            .as_ref()
            .map_or_else(Vec::new, |i| i.get_ref().clone());
        if let Some(list) = &c.issuers {
            if list.get_ref().is_empty() || list.get_ref().iter().any(String::is_empty) {
                r.error(
                    list.span(),
                    "issuers lists token issuers, exactly as their `iss` says; leave it out to mean any",
                );
            }
        }
        bindings.push(Binding {
            role: c.role.get_ref().clone(),
            groups: c.groups.clone().unwrap_or_default(),
            subjects: c.subjects.clone().unwrap_or_default(),
            email_domains: c.email_domains.clone().unwrap_or_default(),
            issuers,
            when,
            at: crate::diag::line_col(text, b.span().start),
        });
    }
    let mut rules = Vec::new();
    let mut names = HashMap::new();
    for rule in &f.rule {
        let c = rule.get_ref();
        if names.insert(c.name.get_ref().clone(), ()).is_some() {
            r.error(
                c.name.span(),
                format!("a rule named {:?} is defined twice", c.name.get_ref()),
            );
        }
        let patterns: Vec<Pattern> = c
            .paths
            .get_ref()
            .iter()
            .filter_map(|p| match Pattern::parse(p.get_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    r.error(p.span(), e);
                    None
                }
            })
            .collect();
        if c.paths.get_ref().is_empty() {
            r.error(c.paths.span(), "a rule needs at least one path pattern");
        }
        let methods = c.methods.as_ref().map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    match http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                        Ok(m) => Some(m),
                        Err(_) => {
                            r.error(m.span(), format!("invalid method {:?}", m.get_ref()));
                            None
                        }
                    }
                })
                .collect()
        });
        let action = match (&c.allow, &c.deny, &c.require) {
            (Some(a), None, None) if *a.get_ref() => Action::Allow,
            (None, Some(d), None) if *d.get_ref() => Action::Deny,
            (None, None, Some(p)) => {
                if p.get_ref().is_empty() || p.get_ref().ends_with('*') {
                    r.error(
                        p.span(),
                        "require names one concrete permission, such as \"crm:write\"",
                    );
                }
                Action::Require(p.get_ref().clone())
            }
            _ => {
                r.error(rule.span(), format!("rule {:?} needs exactly one of allow = true, deny = true or require = \"perm\"", c.name.get_ref()));
                Action::Deny
            }
        };
        rules.push(Rule {
            name: c.name.get_ref().as_str().into(),
            patterns,
            methods,
            hosts: c
                .hosts
                .as_ref()
                .map(|h| h.iter().map(|x| x.to_ascii_lowercase()).collect()),
            when: condition(r, &c.when),
            action,
        });
    }
    let mut tests = Vec::new();
    for t in &f.test {
        let c = t.get_ref();
        let req = c.request.get_ref();
        let expect_allow = match c.expect.get_ref().as_str() {
            "allow" => true,
            "deny" => false,
            other => {
                r.error(
                    c.expect.span(),
                    format!("expect must be \"allow\" or \"deny\", not {other:?}"),
                );
                false
            }
        };
        let time = match &req.time {
            None => None,
            Some(t) => match chrono::DateTime::parse_from_rfc3339(t.get_ref()) {
                Ok(t) => Some(t),
                Err(_) => {
                    r.error(t.span(), "time must be an RFC 3339 timestamp with offset");
                    None
                }
            },
        };
        let identity = c
            .identity
            .as_ref()
            .and_then(|t| match serde_json::to_value(t) {
                Ok(serde_json::Value::Object(m)) => Some(m),
                _ => None,
            });
        tests.push(PolicyTest {
            name: c.name.clone(),
            method: req.method.to_ascii_uppercase(),
            path: req.path.clone(),
            host: req.host.clone().unwrap_or_default(),
            time,
            identity,
            expect_allow,
        });
    }
    Some(Policy {
        source: Default::default(),
        text: String::new(),
        default_allow,
        report_only,
        roles,
        bindings,
        rules,
        by_first_segment: HashMap::new(),
        any_first_segment: Vec::new(),
        tests,
    })
}
