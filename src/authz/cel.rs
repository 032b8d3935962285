//! ABAC conditions in CEL: compiled when the policy is loaded, evaluated per request over
//! `claims`, `identity`, `request`, `path_params` and `now`.

use std::sync::{Arc, OnceLock};

use cel::{Context, Program, Value};

/// The variables a condition may use; anything else is a load-time error.
pub const VARIABLES: [&str; 5] = ["claims", "identity", "request", "path_params", "now"];

pub struct Condition {
    pub source: String,
    program: Program,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

impl Condition {
    pub fn compile(source: &str) -> Result<Condition, String> {
        let program = Program::compile(source).map_err(|e| format!("invalid CEL: {e}"))?;
        let references = program.references();
        for name in references.variables() {
            if !VARIABLES.contains(&name) {
                return Err(format!(
                    "unknown variable `{name}` (conditions may use {})",
                    VARIABLES.join(", ")
                ));
            }
        }
        Ok(Condition {
            source: source.to_string(),
            program,
        })
    }

    /// True only for a boolean `true`; errors (a missing claim, a type mismatch) are false.
    pub fn holds(&self, vars: &Variables) -> bool {
        let mut ctx = base_context().new_inner_scope();
        ctx.add_variable_from_value("claims", vars.claims.clone());
        ctx.add_variable_from_value("identity", vars.identity.clone());
        ctx.add_variable_from_value("request", vars.request.clone());
        ctx.add_variable_from_value("path_params", vars.path_params.clone());
        ctx.add_variable_from_value("now", vars.now.clone());
        matches!(self.program.execute(&ctx), Ok(Value::Bool(true)))
    }
}

/// The values conditions see, built once per request.
#[derive(Clone)]
pub struct Variables {
    pub claims: Value,
    pub identity: Value,
    pub request: Value,
    pub path_params: Value,
    pub now: Value,
}

/// The standard library plus gatehouse's helpers, built once.
fn base_context() -> &'static Context<'static, 'static> {
    static CONTEXT: OnceLock<Context<'static, 'static>> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let mut ctx = Context::default();
        // ip_in_cidr(request.client_ip, "10.0.0.0/8")
        let _ = ctx.add_function("ip_in_cidr", |ip: Arc<String>, cidr: Arc<String>| -> bool {
            match (ip.parse::<std::net::IpAddr>(), cidr.parse::<ipnet::IpNet>()) {
                (Ok(ip), Ok(net)) => net.contains(&ip),
                _ => false,
            }
        });
        ctx
    })
}

/// A JSON value as CEL sees it.
pub fn from_json(v: &serde_json::Value) -> Value {
    cel::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(claims: serde_json::Value, params: &[(&str, &str)], hour_utc: u32) -> Variables {
        let params: HashMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let now =
            chrono::DateTime::parse_from_rfc3339(&format!("2026-03-02T{hour_utc:02}:00:00+00:00"))
                .unwrap();
        Variables {
            claims: from_json(&claims),
            identity: from_json(
                &serde_json::json!({"sub": "bob", "groups": ["sales"], "roles": ["editor"]}),
            ),
            request: from_json(
                &serde_json::json!({"method": "GET", "path": "/users/bob", "client_ip": "10.1.2.3", "headers": {"x-tenant": "acme"}}),
            ),
            path_params: cel::to_value(&params).unwrap(),
            now: Value::Timestamp(now),
        }
    }

    #[test]
    fn conditions_over_every_variable() {
        let v = vars(
            serde_json::json!({"sub": "bob", "department": "sales"}),
            &[("id", "bob")],
            9,
        );
        for (expr, want) in [
            (
                "claims.department == 'sales' && path_params.id == claims.sub",
                true,
            ),
            ("path_params.id == 'alice'", false),
            ("'sales' in identity.groups", true),
            (
                "request.method == 'GET' && request.headers['x-tenant'] == 'acme'",
                true,
            ),
            ("ip_in_cidr(request.client_ip, '10.0.0.0/8')", true),
            ("ip_in_cidr(request.client_ip, '192.168.0.0/16')", false),
            (
                "now.getHours('Europe/Berlin') >= 8 && now.getHours('Europe/Berlin') < 18",
                true,
            ),
            ("claims.missing == 'x'", false),
            ("1", false),
        ] {
            let c = Condition::compile(expr).unwrap();
            assert_eq!(c.holds(&v), want, "{expr}");
        }
        let night = vars(serde_json::json!({}), &[], 22);
        assert!(!Condition::compile("now.getHours('Europe/Berlin') < 18")
            .unwrap()
            .holds(&night));
    }

    #[test]
    fn load_time_errors() {
        assert!(Condition::compile("claims.a ==")
            .unwrap_err()
            .contains("invalid CEL"));
        assert!(Condition::compile("secrets.key == 'x'")
            .unwrap_err()
            .contains("unknown variable `secrets`"));
    }
}
