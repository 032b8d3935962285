//! Policy decisions: a 1,000-rule policy (the index makes a decision touch a handful of
//! rules), and a typical CEL condition.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::authz::cel::{from_json, Condition, Variables};
use gatehouse::authz::{test_identity, Policy, PolicyRequest};

fn bench(c: &mut Criterion) {
    let mut text = String::from(
        "[roles]\nreader = [\"svc:read\"]\n[[binding]]\nrole = \"reader\"\ngroups = [\"staff\"]\n",
    );
    for i in 0..1000 {
        text.push_str(&format!(
            "[[rule]]\nname = \"rule {i}\"\npaths = [\"/svc{i}/items/{{id}}/**\"]\nmethods = [\"GET\"]\nrequire = \"svc:read\"\n"
        ));
    }
    let policy = Policy::from_str(Path::new("bench.toml"), &text).unwrap();
    let identity = test_identity(
        serde_json::json!({"sub": "bob", "groups": ["staff"], "email": "bob@example.com"})
            .as_object()
            .unwrap(),
    );
    let headers = http::HeaderMap::new();
    let method = http::Method::GET;
    let now = chrono::Utc::now().fixed_offset();
    for path in ["/svc0/items/7/x", "/svc999/items/7/x", "/nowhere/at/all"] {
        let request = PolicyRequest {
            method: &method,
            path,
            host: "api",
            query: "",
            headers: &headers,
            client_ip: None,
            now: Some(now),
        };
        c.bench_function(
            &format!("policy/1000_rules{}", path.replace('/', "_")),
            |b| b.iter(|| policy.decide(black_box(&request), Some(&identity))),
        );
    }

    let condition =
        Condition::compile("claims.department == 'sales' && path_params.id == claims.sub").unwrap();
    let vars = Variables {
        claims: from_json(
            &serde_json::json!({"sub": "bob", "department": "sales", "groups": ["staff"]}),
        ),
        identity: from_json(&serde_json::json!({"sub": "bob"})),
        request: from_json(&serde_json::json!({"method": "GET", "path": "/users/bob"})),
        path_params: from_json(&serde_json::json!({"id": "bob"})),
        now: cel::Value::Timestamp(now),
    };
    assert!(condition.holds(&vars));
    c.bench_function("cel/typical_condition", |b| {
        b.iter(|| condition.holds(black_box(&vars)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
