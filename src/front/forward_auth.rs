//! The forward-auth front (`/_gatehouse/auth`): nginx `auth_request`, Traefik ForwardAuth
//! and Caddy `forward_auth` ask about the request they received, in `X-Forwarded-Method`,
//! `-Uri` and `-Host`. A trusted proxy's question goes through the same pipeline as a
//! proxied request; yes is a 200 with the identity headers for the proxy to pass on.

use std::net::IpAddr;

use http::{HeaderMap, Method, StatusCode};

use crate::gateway::Runtime;
use crate::pipeline::{self, Answer, Front, Judged, RequestFacts, Verdict};

/// The request a proxy asks about.
#[derive(Debug)]
pub struct Forwarded<'a> {
    pub method: Method,
    pub target: &'a str,
    pub authority: Option<&'a str>,
    pub redirect: bool,
}

/// Reads the forwarded request out of the question's headers; the refusal (403) when the
/// question does not come from a trusted proxy or names no request that can be judged.
/// `asked` is what the pipeline made of the question itself.
pub fn read<'a>(
    asked: &Judged,
    peer: Option<IpAddr>,
    query: Option<&str>,
    headers: &'a HeaderMap,
) -> Result<Forwarded<'a>, Answer> {
    // `?redirect=true` (Traefik, Caddy): browser navigations get the login redirect.
    let redirect = matches!(
        crate::endpoints::query_param(query, "redirect").as_deref(),
        Some("1" | "true")
    );
    if !asked.peer_trusted {
        tracing::warn!(peer = ?peer, "forward-auth request from a peer not in server.trusted_proxies; refused");
        return Err(Answer::refused(403, "forward_auth_untrusted", false));
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Only the header set the operator named in the auth URL is read: a proxy passes the
    // client's own headers on to the question, so a client can send the other set.
    let original = match crate::endpoints::query_param(query, "headers").as_deref() {
        None => false,
        Some("x-original") => true,
        // A misspelt mode must not fall back to headers a client can send.
        Some(_) => return Err(missing("a known headers= mode")),
    };
    let (method, target, authority) = if original {
        // ingress-nginx: `X-Original-Method` and `X-Original-URL` (scheme://host/path?query),
        // both set by the controller over the client's.
        let Some((authority, target)) = text("x-original-url").and_then(split_url) else {
            return Err(missing("X-Original-URL"));
        };
        // X-Original-URL's host is the client's Host header; the auth URL's `host=$host` is
        // the host nginx routed by (an absolute-form request line can make them differ).
        let routed = crate::endpoints::query_param(query, "host");
        let same = |a: &str, b: &str| {
            crate::pipeline::host_without_port(a)
                .zip(crate::pipeline::host_without_port(b))
                .is_some_and(|(a, b)| a == b)
        };
        if !routed.as_deref().is_some_and(|h| same(h, authority)) {
            return Err(missing("host=$host naming the host of X-Original-URL"));
        }
        (text("x-original-method"), Some(target), Some(authority))
    } else if text("x-sent-from") == Some("nginx-ingress-controller") {
        // ingress-nginx passes the client's X-Forwarded-* on: only its own headers will do.
        return Err(missing("headers=x-original from ingress-nginx"));
    } else {
        let host = text("x-forwarded-host").or_else(|| text("host"));
        (text("x-forwarded-method"), text("x-forwarded-uri"), host)
    };
    // A proxy that does not say what it asks about is misconfigured: judging "/" instead
    // would let a public root open every path.
    let Some(target) = target.filter(|t| t.starts_with('/')) else {
        return Err(missing(if original {
            "X-Original-URL"
        } else {
            "X-Forwarded-Uri"
        }));
    };
    let Some(method) = method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()) else {
        return Err(missing(if original {
            "X-Original-Method"
        } else {
            "X-Forwarded-Method"
        }));
    };
    Ok(Forwarded {
        method,
        target,
        authority,
        redirect,
    })
}

/// The refusal of a question that lacks (or garbles) the header naming the request.
fn missing(header: &str) -> Answer {
    tracing::warn!(
        header,
        "forward-auth request without a usable {header}; refused (see docs/forward-auth.md)"
    );
    Answer::refused(403, "forward_auth_bad_target", false)
}

/// `http(s)://authority/path?query` as (authority, path-and-query).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    let host_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b);
    if authority.is_empty()
        || authority.ends_with(':')
        || !authority.bytes().all(host_byte)
        || !target.starts_with('/')
    {
        return None;
    }
    Some((authority, target))
}

impl Forwarded<'_> {
    /// The facts of the forwarded request: its method, target and host, the question's
    /// headers and peer, and the question's request id.
    pub fn facts<'b>(
        &'b self,
        headers: &'b HeaderMap,
        peer: Option<IpAddr>,
        request_id: &'b str,
    ) -> RequestFacts<'b> {
        RequestFacts {
            front: Front::ForwardAuth {
                redirect: self.redirect,
            },
            method: &self.method,
            target: self.target.as_bytes(),
            authority: self.authority,
            query: self.target.split_once('?').map(|(_, q)| q),
            headers,
            peer,
            // The proxy's own connection says nothing of the client's: X-Forwarded-Proto does.
            tls: false,
            request_id: Some(request_id),
        }
    }
}

/// Forward-auth's answer to the pipeline's verdict: yes is a 200 with the identity headers
/// (and the rate-limit headers) for the proxy to pass on.
pub fn answer(rt: &Runtime, judged: &mut Judged, verdict: Verdict) -> Answer {
    match verdict {
        Verdict::Allow => {
            let mut answer = Answer::content(StatusCode::OK, None);
            if let Some((policy, state)) = judged.rate_headers.take() {
                answer.headers.push(("ratelimit-policy", policy));
                answer.headers.push(("ratelimit", state));
            }
            answer.named = pipeline::upstream::identity_headers(rt, judged);
            answer
        }
        Verdict::Answer(answer) => answer,
        // The route stage refuses a forwarded target under the reserved prefix.
        Verdict::Endpoint(_) => Answer::refused(403, "no_route", false),
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn original_urls_split_into_host_and_target() {
        assert_eq!(
            split_url("https://app.example.com/a/b?c=d"),
            Some(("app.example.com", "/a/b?c=d"))
        );
        assert_eq!(
            split_url("HTTP://127.0.0.1:8080/"),
            Some(("127.0.0.1:8080", "/"))
        );
        for bad in [
            "app.example.com/a",
            "ftp://app.example.com/a",
            "https:///a",
            "https://user@app.example.com/a",
            "https://app.example.com",
            "https://app.example.com?x=1",
            "https://hosthttp://other/x",
        ] {
            assert_eq!(split_url(bad), None, "{bad}");
        }
    }
}
