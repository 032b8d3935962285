//! Authorization: RBAC and ABAC policies from TOML (`policies/*.toml`), compiled when the
//! config loads into an index of rules by first path segment, decided per request by the
//! first matching rule.

pub mod cel;
mod file;
pub mod pattern;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ::cel::Value;
use http::Method;

use crate::diag::{ConfigError, Diagnostic, Reporter};
use crate::identity::Identity;
use cel::{Condition, Variables};
use pattern::Pattern;

#[derive(Debug)]
pub enum Action {
    Allow,
    Deny,
    Require(String),
}

#[derive(Debug)]
pub struct Rule {
    /// Shared with every decision it makes, which only counts a reference.
    pub name: std::sync::Arc<str>,
    patterns: Vec<Pattern>,
    methods: Option<Vec<Method>>,
    hosts: Option<Vec<String>>,
    when: Option<Condition>,
    pub action: Action,
}

#[derive(Debug)]
struct Binding {
    role: String,
    groups: Vec<String>,
    subjects: Vec<String>,
    email_domains: Vec<String>,
    /// When not empty, only identities from these token issuers are bound.
    issuers: Vec<String>,
    when: Option<Condition>,
    /// Line and column in the policy file.
    at: (usize, usize),
}

/// One `[[test]]` of a policy file.
#[derive(Debug, Clone)]
pub struct PolicyTest {
    pub name: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub time: Option<chrono::DateTime<chrono::FixedOffset>>,
    pub identity: Option<serde_json::Map<String, serde_json::Value>>,
    pub expect_allow: bool,
}

/// A compiled policy file.
#[derive(Debug)]
pub struct Policy {
    pub source: PathBuf,
    text: String,
    pub default_allow: bool,
    pub report_only: bool,
    roles: HashMap<String, Vec<String>>,
    bindings: Vec<Binding>,
    pub rules: Vec<Rule>,
    /// Rule indices to try, in file order, by the request's first path segment.
    by_first_segment: HashMap<String, Vec<usize>>,
    /// Rules whose patterns do not start with a literal segment.
    any_first_segment: Vec<usize>,
    pub tests: Vec<PolicyTest>,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.text == other.text
    }
}

/// What a request looks like to a policy.
pub struct PolicyRequest<'a> {
    pub method: &'a Method,
    /// The normalized path, the one the upstream receives.
    pub path: &'a str,
    pub host: &'a str,
    pub query: &'a str,
    pub headers: &'a http::HeaderMap,
    pub client_ip: Option<IpAddr>,
    /// The time conditions see; None: the clock when a condition first needs it (most
    /// policies never read it).
    pub now: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// The outcome, with the rule that made it (`None` = the policy's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub rule: Option<std::sync::Arc<str>>,
}

impl Decision {
    pub fn reason(&self) -> &str {
        self.rule.as_deref().unwrap_or("default")
    }
}

impl Policy {
    /// Loads and compiles a policy file; every problem is reported with its `file:line:col`.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(vec![Diagnostic {
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                message: format!("cannot read policy: {e}"),
            }])
        })?;
        Self::from_str(path, &text)
    }

    pub fn from_str(path: &Path, text: &str) -> Result<Policy, ConfigError> {
        let mut r = Reporter::new(path, text);
        let policy = file::lower(&mut r, text);
        match policy {
            Some(mut p) if r.diagnostics.is_empty() => {
                p.source = path.to_path_buf();
                p.text = text.to_string();
                p.build_index();
                Ok(p)
            }
            _ => Err(ConfigError(r.diagnostics)),
        }
    }

    fn build_index(&mut self) {
        let mut literal_firsts: HashSet<String> = HashSet::new();
        let mut any = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for p in &rule.patterns {
                match p.first_literal() {
                    Some(l) => {
                        literal_firsts.insert(l.to_string());
                    }
                    None => {
                        if any.last() != Some(&i) {
                            any.push(i);
                        }
                    }
                }
            }
        }
        let mut by_first: HashMap<String, Vec<usize>> = HashMap::new();
        for first in literal_firsts {
            let list: Vec<usize> = self
                .rules
                .iter()
                .enumerate()
                .filter(|(i, r)| {
                    any.contains(i)
                        || r.patterns
                            .iter()
                            .any(|p| p.first_literal() == Some(first.as_str()))
                })
                .map(|(i, _)| i)
                .collect();
            by_first.insert(first, list);
        }
        self.by_first_segment = by_first;
        self.any_first_segment = any;
    }

    fn candidates(&self, path: &str) -> &[usize] {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        self.by_first_segment
            .get(first)
            .map_or(&self.any_first_segment, Vec::as_slice)
    }

    /// The first matching rule decides; nothing matches → the default.
    pub fn decide(&self, req: &PolicyRequest, identity: Option<&Identity>) -> Decision {
        self.evaluate(req, identity, None)
    }

    /// Like `decide`, and says why each earlier rule did not match.
    pub fn explain(
        &self,
        req: &PolicyRequest,
        identity: Option<&Identity>,
    ) -> (Decision, Vec<String>) {
        let mut trace = Vec::new();
        let d = self.evaluate(req, identity, Some(&mut trace));
        (d, trace)
    }

    fn evaluate(
        &self,
        req: &PolicyRequest,
        identity: Option<&Identity>,
        mut trace: Option<&mut Vec<String>>,
    ) -> Decision {
        let mut vars: Option<Variables> = None;
        let mut permissions: Option<Vec<&str>> = None;
        let candidates: &[usize] = if trace.is_some() {
            // explain walks every rule, so it can say why each did not match
            &(0..self.rules.len()).collect::<Vec<_>>()
        } else {
            self.candidates(req.path)
        };
        for &i in candidates {
            let rule = &self.rules[i];
            let mut params = Vec::new();
            let why_not = if !rule.patterns.iter().any(|p| {
                params.clear();
                p.matches(req.path, &mut params)
            }) {
                Some("path does not match".to_string())
            } else if rule
                .methods
                .as_ref()
                .is_some_and(|m| !m.contains(req.method))
            {
                Some(format!("method {} not in its methods", req.method))
            } else if rule
                .hosts
                .as_ref()
                .is_some_and(|h| !h.iter().any(|h| h == req.host))
            {
                Some(format!("host {} not in its hosts", req.host))
            } else if let Some(cond) = &rule.when {
                let v = vars.get_or_insert_with(|| variables(req, identity, &[]));
                let mut with_params = v.clone();
                with_params.path_params = path_params_value(&params);
                (!cond.holds(&with_params)).then(|| format!("`when` is false: {}", cond.source))
            } else {
                None
            };
            if let Some(why) = why_not {
                if let Some(t) = trace.as_deref_mut() {
                    t.push(format!("rule {:?}: {why}", rule.name));
                }
                continue;
            }
            let allow = match &rule.action {
                Action::Allow => true,
                Action::Deny => false,
                Action::Require(perm) => {
                    let held = permissions
                        .get_or_insert_with(|| self.permissions(req, identity, &mut vars));
                    grants(held, perm)
                }
            };
            return Decision {
                allow,
                rule: Some(rule.name.clone()),
            };
        }
        Decision {
            allow: self.default_allow,
            rule: None,
        }
    }

    /// Every permission the identity's roles give it.
    fn permissions(
        &self,
        req: &PolicyRequest,
        identity: Option<&Identity>,
        vars: &mut Option<Variables>,
    ) -> Vec<&str> {
        let Some(id) = identity else {
            return Vec::new();
        };
        let mut held = Vec::new();
        for b in &self.bindings {
            // Named issuers bind their people only: another issuer may use the same subject,
            // group or email domain for someone else.
            if !b.issuers.is_empty()
                && !id
                    .token_issuer()
                    .is_some_and(|i| b.issuers.iter().any(|x| x == i))
            {
                continue;
            }
            let by_group = b.groups.iter().any(|g| id.groups.contains(g));
            let by_subject = b.subjects.contains(&id.subject);
            let by_domain = id.email.as_deref().is_some_and(|e| {
                e.rsplit_once('@')
                    .is_some_and(|(_, d)| b.email_domains.iter().any(|x| x.eq_ignore_ascii_case(d)))
            });
            let by_condition = b.when.as_ref().is_some_and(|c| {
                let v = vars.get_or_insert_with(|| variables(req, identity, &[]));
                c.holds(v)
            });
            if by_group || by_subject || by_domain || by_condition {
                if let Some(perms) = self.roles.get(&b.role) {
                    held.extend(perms.iter().map(String::as_str));
                }
            }
        }
        held
    }
}

impl Policy {
    /// Where bindings give roles by subject without naming `issuers` (line, column, role):
    /// with several issuers configured, another issuer's equal subject gets the role too.
    pub fn subject_bindings_without_issuers(&self) -> Vec<(usize, usize, &str)> {
        self.bindings
            .iter()
            .filter(|b| !b.subjects.is_empty() && b.issuers.is_empty())
            .map(|b| (b.at.0, b.at.1, b.role.as_str()))
            .collect()
    }
}

/// A held permission grants a required one when equal, or when it is `prefix:*`.
pub fn grants(held: &[impl AsRef<str>], required: &str) -> bool {
    held.iter().map(AsRef::as_ref).any(|h| {
        h == required
            || h == "*"
            || h.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with(':') && required.starts_with(prefix))
    })
}

fn path_params_value(params: &[(String, String)]) -> Value {
    let map: HashMap<String, String> = params.iter().cloned().collect();
    ::cel::to_value(&map).unwrap_or(Value::Null)
}

/// The CEL variables of a request (spec §6).
fn variables(
    req: &PolicyRequest,
    identity: Option<&Identity>,
    params: &[(String, String)],
) -> Variables {
    let claims = identity.map_or(serde_json::Value::Object(Default::default()), |i| {
        serde_json::Value::Object(i.claims.clone())
    });
    let ident = match identity {
        Some(i) => serde_json::json!({
            "sub": i.subject, "email": i.email, "groups": i.groups, "scopes": i.scopes,
            "method": i.method.as_str(), "iss": i.token_issuer(),
        }),
        None => serde_json::json!({}),
    };
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_string(),
                serde_json::Value::from(v.to_str().ok()?),
            ))
        })
        .collect();
    let request = serde_json::json!({
        "method": req.method.as_str(), "path": req.path, "host": req.host, "query": req.query,
        "headers": headers, "client_ip": req.client_ip.map(|i| i.to_string()).unwrap_or_default(),
    });
    Variables {
        claims: cel::from_json(&claims),
        identity: cel::from_json(&ident),
        request: cel::from_json(&request),
        path_params: path_params_value(params),
        now: Value::Timestamp(req.now.unwrap_or_else(|| chrono::Utc::now().fixed_offset())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_wildcards() {
        let held = vec!["crm:*".to_string(), "billing:read".to_string()];
        assert!(grants(&held, "crm:admin"));
        assert!(grants(&held, "crm:read"));
        assert!(grants(&held, "billing:read"));
        assert!(!grants(&held, "billing:write"));
        assert!(!grants(&held, "crmx:read"));
        assert!(!grants(&["crm:read".to_string()], "crm:admin"));
    }
}

/// The identity a `[[test]]` describes: `sub`, `email`, `groups`, and every key as a claim.
pub fn test_identity(map: &serde_json::Map<String, serde_json::Value>) -> Identity {
    let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Identity {
        method: crate::identity::AuthMethod::Bearer,
        subject: text("sub").unwrap_or_default(),
        email: text("email"),
        username: text("preferred_username"),
        groups: crate::identity::string_list(map.get("groups")),
        scopes: crate::identity::string_list(map.get("scope")),
        issuer: text("iss"),
        qualified: false,
        claims: map.clone(),
        expires_at: None,
        header_values: Default::default(),
    }
}

/// One `[[test]]` run: its decision and whether it was the expected one.
pub struct TestOutcome {
    pub name: String,
    pub passed: bool,
    pub decision: Decision,
}

impl Policy {
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        let headers = http::HeaderMap::new();
        self.tests
            .iter()
            .map(|t| {
                let method =
                    http::Method::from_bytes(t.method.as_bytes()).unwrap_or(http::Method::GET);
                let now = t.time.unwrap_or_else(|| chrono::Utc::now().fixed_offset());
                let req = PolicyRequest {
                    method: &method,
                    path: &t.path,
                    host: &t.host,
                    query: "",
                    headers: &headers,
                    client_ip: None,
                    now: Some(now),
                };
                let identity = t.identity.as_ref().map(test_identity);
                let decision = self.decide(&req, identity.as_ref());
                TestOutcome {
                    name: t.name.clone(),
                    passed: decision.allow == t.expect_allow,
                    decision,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../policies/crm.toml");

    fn policy(text: &str) -> Policy {
        Policy::from_str(Path::new("p.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn decide(
        p: &Policy,
        method: &str,
        path: &str,
        identity: Option<serde_json::Value>,
        hour_utc: u32,
    ) -> Decision {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let headers = http::HeaderMap::new();
        let now =
            chrono::DateTime::parse_from_rfc3339(&format!("2026-03-02T{hour_utc:02}:00:00+00:00"))
                .unwrap();
        let id = identity.map(|v| test_identity(v.as_object().unwrap()));
        p.decide(
            &PolicyRequest {
                method: &method,
                path,
                host: "crm.example.com",
                query: "",
                headers: &headers,
                client_ip: None,
                now: Some(now),
            },
            id.as_ref(),
        )
    }

    #[test]
    fn the_spec_example_passes_its_own_tests() {
        let p = policy(EXAMPLE);
        for outcome in p.run_tests() {
            assert!(outcome.passed, "{} -> {:?}", outcome.name, outcome.decision);
        }
        assert!(p.tests.len() >= 2);
    }

    #[test]
    fn first_match_default_roles_and_conditions() {
        let p = policy(EXAMPLE);
        let bob =
            serde_json::json!({"sub": "bob", "groups": ["sales"], "email": "bob@example.com"});
        let admin = serde_json::json!({"sub": "root", "groups": ["crm-admins"]});
        let carol = serde_json::json!({"sub": "carol", "email": "carol@example.com"});
        let outsider = serde_json::json!({"sub": "eve", "email": "eve@elsewhere.org"});
        let d = |m, path, who: &serde_json::Value, h| decide(&p, m, path, Some(who.clone()), h);
        assert_eq!(
            d("GET", "/health", &outsider, 9).rule.as_deref(),
            Some("health is public")
        );
        assert!(
            decide(&p, "GET", "/health", None, 9).allow,
            "allow outright needs no identity"
        );
        assert!(
            d("GET", "/admin/users", &admin, 9).allow,
            "crm:* grants crm:admin"
        );
        assert!(
            !d("GET", "/admin/users", &bob, 9).allow,
            "crm:read/write do not"
        );
        assert!(d("PUT", "/users/bob/profile", &bob, 9).allow, "own profile");
        assert_eq!(
            d("PUT", "/users/alice/profile", &bob, 9).rule.as_deref(),
            None,
            "not own: no rule for PUT -> default"
        );
        assert!(
            d("POST", "/customers/7", &bob, 9).allow,
            "office hours (10:00 Berlin)"
        );
        assert!(
            !d("POST", "/customers/7", &bob, 20).allow,
            "21:00 Berlin: the rule does not match, default deny"
        );
        assert!(
            d("GET", "/customers/7", &carol, 9).allow,
            "viewer by email domain reads"
        );
        assert!(!d("GET", "/customers/7", &outsider, 9).allow);
        assert!(
            !decide(&p, "DELETE", "/nothing", None, 9).allow,
            "default deny"
        );
    }

    #[test]
    fn bindings_that_name_issuers_bind_only_their_people() {
        let p = policy(
            r#"[roles]
admin = ["app:admin"]
[[binding]]
role = "admin"
subjects = ["alice"]
groups = ["admins"]
issuers = ["https://corp.example"]
[[binding]]
role = "admin"
subjects = ["root"]
[[rule]]
name = "admins"
paths = ["/admin/**"]
require = "app:admin"
"#,
        );
        let allowed = |who: serde_json::Value| decide(&p, "GET", "/admin/x", Some(who), 9).allow;
        assert!(allowed(
            serde_json::json!({"sub": "alice", "iss": "https://corp.example"})
        ));
        assert!(allowed(
            serde_json::json!({"sub": "bob", "groups": ["admins"], "iss": "https://corp.example"})
        ));
        for iss in [Some("https://partner.example"), None] {
            let mut alice = serde_json::json!({"sub": "alice", "groups": ["admins"]});
            if let Some(iss) = iss {
                alice["iss"] = iss.into();
            }
            assert!(!allowed(alice), "another issuer's alice ({iss:?})");
        }
        // No issuers named: any issuer's root (what `gatehouse check` warns of).
        assert!(allowed(
            serde_json::json!({"sub": "root", "iss": "https://partner.example"})
        ));
        let unscoped = p.subject_bindings_without_issuers();
        assert_eq!(unscoped, vec![(8, 1, "admin")]);
        let err = Policy::from_str(
            Path::new("p.toml"),
            "[roles]\na = []\n[[binding]]\nrole = \"a\"\nsubjects = [\"x\"]\nissuers = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p.toml:6:11: issuers lists token issuers"),
            "{err}"
        );
    }

    #[test]
    fn report_only_and_default_allow_are_read() {
        let p = policy("default = \"allow\"\nmode = \"report-only\"\n[[rule]]\nname = \"no admin\"\npaths = [\"/admin/**\"]\ndeny = true\n");
        assert!(p.report_only && p.default_allow);
        assert!(!decide(&p, "GET", "/admin", None, 9).allow);
        assert!(decide(&p, "GET", "/other", None, 9).allow);
    }

    #[test]
    fn the_index_keeps_file_order() {
        let p = policy("[[rule]]\nname = \"any\"\npaths = [\"/{x}/secret\"]\ndeny = true\n[[rule]]\nname = \"a\"\npaths = [\"/a/**\"]\nallow = true\n");
        assert_eq!(
            decide(&p, "GET", "/a/secret", None, 9).rule.as_deref(),
            Some("any")
        );
        assert_eq!(
            decide(&p, "GET", "/a/open", None, 9).rule.as_deref(),
            Some("a")
        );
        assert_eq!(decide(&p, "GET", "/b/open", None, 9).rule, None);
    }

    #[test]
    fn load_errors_name_the_line() {
        let cases = [
            (
                "[[rule]]\nname = \"r\"\npaths = [\"/a\"]\nwhen = 'claims.x =='\nallow = true\n",
                "p.toml:4:8: condition: invalid CEL",
            ),
            (
                "[[rule]]\nname = \"r\"\npaths = [\"/a\"]\nwhen = 'secret.x'\nallow = true\n",
                "p.toml:4:8: condition: unknown variable `secret`",
            ),
            (
                "[[rule]]\nname = \"r\"\npaths = [\"a\"]\nallow = true\n",
                "p.toml:3:10: path pattern \"a\" must start with '/'",
            ),
            (
                "[[rule]]\nname = \"r\"\npaths = [\"/a\"]\nallow = true\ndeny = true\n",
                "p.toml:1:1: rule \"r\" needs exactly one of",
            ),
            (
                "[[binding]]\nrole = \"ghost\"\ngroups = [\"g\"]\n",
                "p.toml:2:8: binding names unknown role \"ghost\"",
            ),
            ("default = \"maybe\"\n", "p.toml:1:11: default must be"),
            (
                "[[rule]]\nname = \"r\"\npaths = [\"/a\"]\nrequire = \"crm:*\"\n",
                "p.toml:4:11: require names one concrete permission",
            ),
            ("bogus = 1\n", "p.toml:1:1: unknown field `bogus`"),
        ];
        for (text, want) in cases {
            let err = Policy::from_str(Path::new("p.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
