//! The demo upstream: a page that shows the request exactly as the gateway delivered it,
//! identity headers first.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct Whoami;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[async_trait]
impl ServeHttp for Whoami {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let target = String::from_utf8_lossy(req.raw_path()).into_owned();
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let from_gateway =
            |k: &str| k.starts_with("x-auth-request-") || k.starts_with("x-gatehouse-");
        // The person first, then the assertion, then what the browser sent.
        headers.sort_by_key(|(k, _)| {
            (!k.starts_with("x-auth-request-") as u8) + (!from_gateway(k) as u8)
        });
        let wants_json = req
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        let (content_type, body) = if wants_json {
            let value = serde_json::json!({
                "method": req.method.as_str(),
                "target": target,
                "headers": headers,
            });
            ("application/json", value.to_string().into_bytes())
        } else {
            let rows: String = headers
                .iter()
                .map(|(k, v)| {
                    let class = if from_gateway(k) {
                        " class=\"identity\""
                    } else {
                        ""
                    };
                    format!(
                        "<tr{class}><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
                        escape(k),
                        escape(v)
                    )
                })
                .collect();
            let user = req
                .headers
                .get("x-auth-request-user")
                .and_then(|v| v.to_str().ok())
                .map(escape)
                .unwrap_or_default();
            let html = crate::respond::styled_page(
                "wide",
                "gatehouse demo &middot; whoami upstream",
                "whoami",
                &format!(
                    "<h1>Hello, {who}</h1>\
                     <p>This page is the demo's upstream app. It received <code>{} {}</code> from the gateway, \
                     with these headers (the identity headers in green):</p>\
                     <table>{rows}</table>\
                     <p>Try <a href=\"/admin/\">/admin/</a> (admins only), <a href=\"/users/{user}/profile\">your profile</a>, \
                     <a href=\"/users/alice/profile\">alice's profile</a>, or <a href=\"/_gatehouse/logout\">sign out</a>.</p>",
                    escape(req.method.as_str()),
                    escape(&target),
                    who = if user.is_empty() { "anonymous" } else { &user },
                ),
            );
            ("text/html; charset=utf-8", html.into_bytes())
        };
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
