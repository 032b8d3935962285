//! The Kubernetes gateway recipes in deploy/gateways/ (docs/kubernetes.md): each gatehouse
//! config passes `gatehouse check`, and what the gateway's YAML names agrees with it (the
//! identity headers it copies, the port and path it asks at). The YAML cannot be applied
//! here (no cluster); tests/forward_auth.rs runs the ingress-nginx one in nginx.

use std::path::Path;
use std::process::Command;

const ENV: &[(&str, &str)] = &[
    ("OIDC_ISSUER", "https://login.example.com/realms/corp"),
    ("OIDC_CLIENT_ID", "gatehouse"),
    ("OIDC_CLIENT_SECRET", "a-client-secret"),
    ("API_AUDIENCE", "crm-api"),
    ("REDIS_URL", "redis://gatehouse-redis:6379/0"),
    (
        "GATEHOUSE_SESSION_SECRET",
        "0123456789abcdef0123456789abcdef",
    ),
];

fn read(relative: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// `gatehouse config show` of a recipe's config: checked, with defaults filled in.
fn effective(relative: &str) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c"])
        .arg(root.join(relative))
        .envs(ENV.iter().copied())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{relative}: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let show = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["config", "show", "-c"])
        .arg(root.join(relative))
        .envs(ENV.iter().copied())
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "{relative}: {}",
        String::from_utf8_lossy(&show.stderr)
    );
    serde_json::from_slice(&show.stdout).expect("config show prints JSON")
}

/// Every identity header name the gateway can send with `config`: the fixed ones, the
/// access-token name it always clears, and the `[headers] claims` names.
fn identity_names(config: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = [
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-preferred-username",
        "x-auth-request-groups",
        "x-gatehouse-assertion",
        "x-auth-request-access-token",
    ]
    .map(String::from)
    .to_vec();
    if let Some(claims) = config["headers"]["claims"].as_object() {
        names.extend(claims.keys().map(|k| k.to_ascii_lowercase()));
    }
    names
}

#[test]
fn every_recipe_directory_has_a_checked_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/gateways");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().file_name().to_string_lossy().into_owned();
        effective(&format!("deploy/gateways/{dir}/gateway.toml"));
        seen.push(dir);
    }
    seen.sort();
    assert_eq!(seen, ["envoy-gateway", "ingress-nginx", "traefik"]);
}

#[test]
fn ingress_nginx_copies_every_identity_name_and_asks_with_x_original() {
    let config = effective("deploy/gateways/ingress-nginx/gateway.toml");
    let yaml = read("deploy/gateways/ingress-nginx/ingress.yaml");
    let annotation = |name: &str| -> String {
        let key = format!("nginx.ingress.kubernetes.io/{name}:");
        let line = yaml
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&key))
            .unwrap();
        line[key.len()..].trim().trim_matches('"').to_string()
    };
    let copied: Vec<String> = annotation("auth-response-headers")
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    for name in identity_names(&config) {
        assert!(copied.contains(&name), "auth-response-headers lacks {name}");
    }
    let url = annotation("auth-url");
    assert!(
        url.ends_with("/_gatehouse/auth?headers=x-original&host=$host"),
        "{url}"
    );
    // The public Ingress routes browser endpoints only, never the question path.
    assert!(
        !yaml.contains("path: /_gatehouse/\n"),
        "the whole prefix is public"
    );
    assert!(!yaml.contains("path: /_gatehouse/auth"));
    assert!(config["server"]["trusted_proxies"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
}

#[test]
fn traefik_asks_at_forward_auth_and_replaces_every_identity_name() {
    let config = effective("deploy/gateways/traefik/gateway.toml");
    let yaml = read("deploy/gateways/traefik/traefik.yaml");
    assert!(yaml.contains("/_gatehouse/auth?redirect=true\""));
    assert!(yaml.contains("trustForwardHeader: false"));
    // authResponseHeadersRegex "(?i)^x-(auth-request|gatehouse)-" covers every name.
    assert!(yaml.contains("authResponseHeadersRegex: \"(?i)^x-(auth-request|gatehouse)-\""));
    for name in identity_names(&config) {
        assert!(
            name.starts_with("x-auth-request-") || name.starts_with("x-gatehouse-"),
            "{name} is outside the regex Traefik replaces"
        );
    }
}

#[test]
fn envoy_gateway_asks_the_grpc_listener() {
    let config = effective("deploy/gateways/envoy-gateway/gateway.toml");
    let listen = config["ext_authz"]["grpc_listen"]
        .as_str()
        .expect("[ext_authz] grpc_listen");
    let port = listen.rsplit(':').next().unwrap();
    let yaml = read("deploy/gateways/envoy-gateway/security-policy.yaml");
    assert!(
        yaml.contains(&format!("port: {port}\n")),
        "backendRefs port {port}"
    );
    assert!(yaml.contains(&format!("port: {port}, targetPort: {port}")));
    assert!(yaml.contains("failOpen: false"));
    assert!(yaml.contains("withUnderscoresAction: RejectRequest"));
}
