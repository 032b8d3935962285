//! CORS per route: preflights are answered here, without authentication, and only for the
//! configured origins; actual responses get the matching `Access-Control-*` headers.

use http::{HeaderMap, HeaderValue, Method};

use crate::config::CorsConfig;

/// A browser preflight: OPTIONS with an Origin and the method it wants to use.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key("origin")
        && headers.contains_key("access-control-request-method")
}

fn allowed_origin<'a>(cors: &CorsConfig, origin: &'a str) -> Option<&'a str> {
    let lower = origin.to_ascii_lowercase();
    if cors.allowed_origins.contains(&lower) {
        Some(origin)
    } else if cors.allowed_origins.iter().any(|o| o == "*") {
        Some("*")
    } else {
        None
    }
}

/// The headers of a 204 answer to a preflight, or None when it must be refused.
pub fn preflight(cors: &CorsConfig, headers: &HeaderMap) -> Option<Vec<(&'static str, String)>> {
    let origin = headers.get("origin")?.to_str().ok()?;
    let allow_origin = allowed_origin(cors, origin)?;
    let method = headers
        .get("access-control-request-method")?
        .to_str()
        .ok()?;
    let method_ok = cors
        .allowed_methods
        .split(", ")
        .any(|m| m == "*" || m.eq_ignore_ascii_case(method));
    if !method_ok {
        return None;
    }
    if let Some(requested) = headers
        .get("access-control-request-headers")
        .and_then(|v| v.to_str().ok())
    {
        let allowed = cors.allowed_headers.as_deref().unwrap_or("");
        let all_ok = requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| allowed == "*" || allowed.split(", ").any(|a| a.eq_ignore_ascii_case(h)));
        if !all_ok {
            return None;
        }
    }
    let mut headers = vec![
        ("access-control-allow-origin", allow_origin.to_string()),
        ("access-control-allow-methods", cors.allowed_methods.clone()),
        ("access-control-max-age", cors.max_age.as_secs().to_string()),
        (
            "vary",
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".into(),
        ),
    ];
    if let Some(h) = &cors.allowed_headers {
        headers.push(("access-control-allow-headers", h.clone()));
    }
    if cors.allow_credentials {
        headers.push(("access-control-allow-credentials", "true".into()));
    }
    Some(headers)
}

/// Adds the CORS headers of an actual (non-preflight) response for an allowed origin.
pub fn decorate_response(cors: &CorsConfig, origin: Option<&str>, headers: &mut HeaderMap) {
    use http::header::{
        ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_EXPOSE_HEADERS, VARY,
    };
    headers.append(VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else { return };
    let Some(allow) = allowed_origin(cors, origin).and_then(crate::headers::value) else {
        return;
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if cors.allow_credentials {
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(expose) = cors
        .expose_headers
        .as_deref()
        .and_then(crate::headers::value)
    {
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cors() -> CorsConfig {
        CorsConfig {
            allowed_origins: vec!["https://app.example.com".into()],
            allowed_methods: "GET, POST".into(),
            allowed_headers: Some("content-type, x-csrf".into()),
            expose_headers: None,
            allow_credentials: true,
            max_age: Duration::from_secs(600),
        }
    }

    fn preflight_req(origin: &str, method: &str, headers: Option<&str>) -> HeaderMap {
        let mut r = HeaderMap::new();
        r.append("origin", origin.parse().unwrap());
        r.append("access-control-request-method", method.parse().unwrap());
        if let Some(h) = headers {
            r.append("access-control-request-headers", h.parse().unwrap());
        }
        assert!(is_preflight(&Method::OPTIONS, &r));
        r
    }

    #[test]
    fn allowed_preflight() {
        let h = preflight(
            &cors(),
            &preflight_req("https://app.example.com", "POST", Some("Content-Type")),
        )
        .unwrap();
        assert!(h.contains(&(
            "access-control-allow-origin",
            "https://app.example.com".into()
        )));
        assert!(h.contains(&("access-control-allow-credentials", "true".into())));
    }

    #[test]
    fn refused_preflights() {
        let c = cors();
        assert!(preflight(&c, &preflight_req("https://evil.example.com", "GET", None)).is_none());
        assert!(preflight(
            &c,
            &preflight_req("https://app.example.com", "DELETE", None)
        )
        .is_none());
        assert!(preflight(
            &c,
            &preflight_req("https://app.example.com", "GET", Some("x-other"))
        )
        .is_none());
        assert!(preflight(
            &c,
            &preflight_req("https://app.example.com.evil.com", "GET", None)
        )
        .is_none());
    }
}
