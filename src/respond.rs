//! What the gateway's own answers look like: generic error pages (HTML for browsers, JSON
//! otherwise) that carry the request id and nothing else, the gateway's pages, and the
//! security headers on every response. The fronts write them.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::config::SecurityHeadersConfig;

/// A browser navigation gets HTML; scripts and API clients get JSON (spec §7).
pub fn wants_html(headers: &HeaderMap) -> bool {
    const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    if headers.contains_key(X_REQUESTED_WITH) {
        return false;
    }
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// A short machine-readable name for each status the gateway answers itself.
fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        421 => "misdirected_request",
        429 => "too_many_requests",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        s if s >= 500 => "internal_error",
        _ => "error",
    }
}

/// One sentence for a person who got an error page: what to do, never why (that is in the log).
fn hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "You need to sign in to open this page.",
        403 => "You do not have access to this page.",
        404 => "There is no page here.",
        429 => "Too many requests. Please wait a moment and try again.",
        502..=504 => "The service is not available right now. Please try again later.",
        _ => "The request could not be completed.",
    }
}

/// The look of every page the gateway writes (and of the demo's): one inline style sheet,
/// admitted by the default CSP's `style-src 'unsafe-inline'`; no scripts or fonts, and
/// images only the sign-in page's configured logos.
pub const PAGE_STYLE: &str = concat!(
    "body{margin:0;padding:0 1em;background:#f3f4f6;color:#1f2937;font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,\"DejaVu Sans\",sans-serif}",
    "main{max-width:36em;margin:3em auto;padding:1.75em 2.25em;background:#fff;border:1px solid #e5e7eb;border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.06)}",
    "main.wide{max-width:64em}",
    ".brand{margin:0 0 1.25em;font-size:.75em;font-weight:600;letter-spacing:.1em;text-transform:uppercase;color:#6b7280}",
    "h1{margin:0 0 .5em;font-size:1.5em;line-height:1.25}",
    "p{margin:.5em 0 1em}small{color:#6b7280}a{color:#1d4ed8}",
    "code{font:.875em ui-monospace,\"DejaVu Sans Mono\",monospace;background:#f3f4f6;border-radius:4px;padding:.1em .35em;word-break:break-all}",
    "form{margin:1.25em 0}",
    "button{font:inherit;font-weight:600;padding:.5em 1.25em;border:1px solid #1d4ed8;border-radius:8px;background:#1d4ed8;color:#fff;cursor:pointer}",
    "button:hover{background:#1e40af}",
    "ul.choices{list-style:none;padding:0}ul.choices li{display:flex;align-items:center;gap:1em;margin:.6em 0}ul.choices button{min-width:8em}",
    "ul.choices button{display:inline-flex;align-items:center;gap:.6em}ul.choices img{width:1.5em;height:1.5em;object-fit:contain;background:#fff;border-radius:4px}",
    "button:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}",
    "table{width:100%;border-collapse:collapse;font-size:.9em}td{text-align:left;vertical-align:top;padding:.35em .6em;border-bottom:1px solid #e5e7eb}",
    "td:first-child code{white-space:nowrap;word-break:normal}tr.identity td{background:#ecfdf5}",
);

/// A complete page in the gateway's look. `title` and `body` are HTML the caller escaped.
pub fn html_page(title: &str, body: &str) -> String {
    styled_page("", "gatehouse", title, body)
}

/// [`html_page`] with a class on the page's frame (`wide`) and another brand line.
pub fn styled_page(class: &str, brand: &str, title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title><style>{PAGE_STYLE}</style></head>\n<body><main class=\"{class}\"><p class=\"brand\">{brand}</p>\n{body}\n</main></body></html>\n"
    )
}

/// `csp` with `origin` added to its `form-action` directive (unchanged when it has none, or
/// `origin` is empty): for a form whose POST is answered with a redirect to another origin.
pub fn csp_with_form_target(csp: &str, origin: &str) -> String {
    if origin.is_empty() {
        return csp.to_string();
    }
    csp.split(';')
        .map(|directive| {
            let d = directive.trim();
            let is_form_action = d
                .split_ascii_whitespace()
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("form-action"));
            if !is_form_action {
                d.to_string()
            } else if d.contains("'none'") {
                // 'none' cannot be combined with sources: the one form gets 'self' and origin.
                format!("form-action 'self' {origin}")
            } else {
                format!("{d} {origin}")
            }
        })
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `csp` allowing images from `origins` too: added to its `img-src` directive, or (none) a
/// new `img-src` of just them (which leaves `default-src` as it was for everything else).
pub fn csp_with_image_sources(csp: &str, origins: &[String]) -> String {
    if origins.is_empty() {
        return csp.to_string();
    }
    let sources = origins.join(" ");
    let mut found = false;
    let mut directives: Vec<String> = csp
        .split(';')
        .map(|directive| {
            let d = directive.trim();
            let is_img = d
                .split_ascii_whitespace()
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("img-src"));
            if !is_img {
                d.to_string()
            } else {
                found = true;
                if d.contains("'none'") {
                    format!("img-src {sources}")
                } else {
                    format!("{d} {sources}")
                }
            }
        })
        .filter(|d| !d.is_empty())
        .collect();
    if !found {
        directives.push(format!("img-src {sources}"));
    }
    directives.join("; ")
}

/// The security headers of one config, as ready-made header values: plain and TLS lists.
pub struct SecurityHeaders {
    plain: Vec<(HeaderName, HeaderValue)>,
    tls: Vec<(HeaderName, HeaderValue)>,
}

impl SecurityHeaders {
    pub fn new(sec: &SecurityHeadersConfig) -> Self {
        let mut plain = Vec::new();
        let push = |list: &mut Vec<(HeaderName, HeaderValue)>, name: &'static str, value: &str| {
            // Values were validated when the config was loaded.
            if let Ok(v) = HeaderValue::from_str(value) {
                list.push((HeaderName::from_static(name), v));
            }
        };
        if sec.content_type_options {
            push(&mut plain, "x-content-type-options", "nosniff");
        }
        if let Some(v) = &sec.frame_options {
            push(&mut plain, "x-frame-options", v);
        }
        if let Some(v) = &sec.referrer_policy {
            push(&mut plain, "referrer-policy", v);
        }
        let mut tls = plain.clone();
        if let Some(v) = &sec.hsts {
            push(&mut tls, "strict-transport-security", v);
        }
        SecurityHeaders { plain, tls }
    }

    /// Adds each header the response does not set itself.
    pub fn apply(&self, headers: &mut http::HeaderMap, tls: bool) {
        let list = if tls { &self.tls } else { &self.plain };
        for (name, value) in list {
            headers.entry(name).or_insert_with(|| value.clone());
        }
    }
}

/// The generic error page of a status: it names the request id and nothing else.
pub struct ErrorPage<'a> {
    pub status: StatusCode,
    pub request_id: &'a str,
    pub html: bool,
}

impl ErrorPage<'_> {
    pub fn body(&self) -> String {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        if self.html {
            let code = self.status.as_u16();
            html_page(
                &format!("{code} {reason}"),
                &format!(
                    "<h1>{code} {reason}</h1>\n<p>{hint}</p>\n<p><small>Request id: <code>{id}</code></small></p>",
                    hint = hint(self.status),
                    id = html_escape(self.request_id),
                ),
            )
        } else {
            serde_json::json!({
                "error": error_code(self.status),
                "message": reason,
                "request_id": self.request_id,
            })
            .to_string()
        }
    }

    pub fn content_type(&self) -> &'static str {
        if self.html {
            "text/html; charset=utf-8"
        } else {
            "application/json"
        }
    }
}

pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_only_for_browser_navigations() {
        let mut r = HeaderMap::new();
        assert!(!wants_html(&r));
        r.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(wants_html(&r));
        r.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!wants_html(&r));
    }

    #[test]
    fn logo_origins_join_or_add_img_src() {
        let default = "default-src 'none'; style-src 'unsafe-inline'";
        let logos = vec![
            "https://cdn.example".to_string(),
            "https://x.example".to_string(),
        ];
        assert_eq!(
            csp_with_image_sources(default, &logos),
            "default-src 'none'; style-src 'unsafe-inline'; img-src https://cdn.example https://x.example"
        );
        assert_eq!(
            csp_with_image_sources("img-src 'none'; default-src 'self'", &logos[..1]),
            "img-src https://cdn.example; default-src 'self'"
        );
        assert_eq!(
            csp_with_image_sources("IMG-SRC 'self';", &logos[..1]),
            "IMG-SRC 'self' https://cdn.example"
        );
        assert_eq!(csp_with_image_sources(default, &[]), default);
    }

    #[test]
    fn form_targets_join_the_form_action_directive() {
        let default = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";
        assert_eq!(
            csp_with_form_target(default, "https://idp.example"),
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self' https://idp.example; base-uri 'none'"
        );
        assert_eq!(csp_with_form_target(default, ""), default);
        assert_eq!(
            csp_with_form_target("default-src 'none'", "https://idp.example"),
            "default-src 'none'"
        );
        assert_eq!(
            csp_with_form_target("Form-Action 'none';", "https://idp.example"),
            "form-action 'self' https://idp.example"
        );
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}
