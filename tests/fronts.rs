//! The two fronts of the real binary decide alike: a request sent through the proxy and the
//! same request asked about at `/_gatehouse/auth` (as a trusted proxy asks) get the same
//! status, and the upstream receives the identity headers that forward-auth answers.

mod common;

use common::*;

#[test]
fn the_proxy_and_forward_auth_agree_through_the_binary() {
    let rt = runtime();
    let app = rt.block_on(TestServer::echo("app"));
    let hash = gatehouse::authn::api_key::hash_key("fronts-key-0123456789");
    let config = format!(
        r#"{base}
{upstream}
[[api_key]]
name = "ci"
hash = "{hash}"
subject = "svc-ci"
groups = ["deploy"]

[[route]]
name = "open"
path = "/open"
upstream = "app"
auth = ["none"]

[[route]]
name = "keys"
path = "/keys"
upstream = "app"
auth = ["api_key"]
"#,
        base = base_config("trusted_proxies = [\"127.0.0.1/32\"]"),
        upstream = upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start(&config);
    let cases: &[(&str, &str, &str)] = &[
        ("/open/x", "", "200"),
        (
            "/keys/x",
            "X-Api-Key: fronts-key-0123456789\r\n",
            "200 svc-ci",
        ),
        ("/keys/x", "", "401"),
        ("/keys/x", "X-Api-Key: not-the-key-0123456789\r\n", "401"),
        ("/keys/x", "X-Api-Key: a\r\nX-Api-Key: b\r\n", "400"),
    ];
    for (path, extra, expected) in cases {
        let proxied = gw.get(path, extra);
        let asked = gw.get(
            "/_gatehouse/auth",
            &format!("X-Forwarded-Method: GET\r\nX-Forwarded-Uri: {path}\r\nX-Forwarded-Host: 127.0.0.1\r\n{extra}"),
        );
        let seen_upstream = (proxied.status == 200)
            .then(|| {
                proxied
                    .echoed()
                    .header("x-auth-request-user")
                    .map(str::to_string)
            })
            .flatten();
        let said = |status: u16, user: Option<&str>| match user {
            Some(user) => format!("{status} {user}"),
            None => status.to_string(),
        };
        assert_eq!(
            said(proxied.status, seen_upstream.as_deref()),
            *expected,
            "proxy {path} {extra:?}"
        );
        assert_eq!(
            said(asked.status, asked.header("x-auth-request-user")),
            *expected,
            "forward-auth {path} {extra:?}"
        );
        assert_eq!(
            proxied.header("www-authenticate"),
            asked.header("www-authenticate"),
            "{path} {extra:?}"
        );
    }
}
