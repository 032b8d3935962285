//! The Envoy `ext_authz` front, HTTP mode: Envoy's HTTP ext_authz filter asks about the
//! request it received at `{reserved_prefix}/ext-authz` + the original path and query (its
//! `path_prefix`), with the original method and the headers its `allowed_headers` lets
//! through (`Host` among them). A trusted proxy's question goes through the same pipeline
//! as a proxied request. Envoy allows on 200 and copies the headers its
//! `allowed_upstream_headers` names onto the request; any other answer goes to the client
//! with its body and the headers `allowed_client_headers` names.
//!
//! What the proxy front would do to the upstream request is said as edits Envoy applies:
//! the identity headers to set, and in `x-envoy-auth-headers-to-remove` the client headers
//! hygiene drops, the consumed credential, and every identity header name gatehouse did not
//! set this time (a forged one gatehouse never saw must not survive either).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method, StatusCode};

use crate::gateway::Runtime;
use crate::pipeline::{self, Answer, Front, Judged, RequestFacts, Verdict};

/// The header Envoy reads the names to remove from (HTTP mode's `headers_to_remove`).
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// The facts of the request Envoy asks about: its method, original target and host, its
/// headers, the peer (Envoy) and the question's request id. The refusal (403) when the
/// peer is not a trusted proxy, or (400) when the question's target is not one Envoy sends.
pub fn facts<'a>(
    asked: &'a Judged,
    method: &'a Method,
    raw_target: &'a [u8],
    headers: &'a HeaderMap,
    peer: Option<IpAddr>,
    prefix: &str,
) -> Result<RequestFacts<'a>, Answer> {
    if !asked.peer_trusted {
        tracing::warn!(peer = ?peer, "ext_authz request from a peer not in server.trusted_proxies; refused");
        return Err(Answer::refused(403, "ext_authz_untrusted", false));
    }
    // `/_gatehouse/ext%2Dauthz/...` reaches the endpoint too, once normalized: only the
    // prefix Envoy writes names an original target.
    let Some(target) = pipeline::ext_authz_target(raw_target, prefix) else {
        return Err(Answer::refused(400, "ext_authz_bad_target", false));
    };
    let query = target
        .iter()
        .position(|&b| b == b'?')
        .and_then(|i| std::str::from_utf8(&target[i + 1..]).ok());
    Ok(RequestFacts {
        front: Front::ExtAuthz,
        method,
        target,
        authority: headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok()),
        query,
        headers,
        peer,
        // Envoy's connection says nothing of the client's: X-Forwarded-Proto does.
        tls: false,
        request_id: Some(&asked.request_id),
    })
}

/// What Envoy is told, in either protocol: allow with edits, or answer the client.
#[derive(Debug)]
pub enum Decision {
    Allow(Edits),
    Deny(Answer),
}

/// What Envoy does to an allowed request before it goes upstream, and to its response.
#[derive(Debug, Default)]
pub struct Edits {
    /// Headers to set on the request, replacing the client's (identity, assertion, the
    /// `Cookie` without gatehouse's cookies, `pass_access_token`'s `Authorization`).
    pub set: Vec<(HeaderName, String)>,
    /// Header names to remove from the request (hygiene, the consumed credential, every
    /// identity name gatehouse did not set).
    pub remove: Vec<String>,
    /// `RateLimit-Policy` and `RateLimit` for the client's response.
    pub rate_headers: Option<(String, String)>,
}

/// The pipeline's verdict as Envoy's decision. `headers` are the question's: the original
/// request's, as Envoy passed them on.
pub fn decision(
    rt: &Runtime,
    judged: &mut Judged,
    verdict: Verdict,
    headers: &HeaderMap,
) -> Decision {
    match verdict {
        // Envoy forwards the target it has, not the one judged: only a normal one passes.
        Verdict::Allow if judged.rewrite.is_some() => {
            Decision::Deny(Answer::refused(400, "ext_authz_path_not_normal", false))
        }
        Verdict::Allow => {
            let (set, remove) = upstream_edits(rt, judged, headers);
            Decision::Allow(Edits {
                set,
                remove,
                rate_headers: judged.rate_headers.take(),
            })
        }
        Verdict::Answer(answer) => Decision::Deny(answer),
        // The route stage refuses an original target under the reserved prefix.
        Verdict::Endpoint(_) => Decision::Deny(Answer::refused(404, "reserved_path", false)),
    }
}

/// The answer to Envoy's HTTP question: 200 with the edits of the upstream request, or the
/// pipeline's answer for the client.
pub fn answer(rt: &Runtime, judged: &mut Judged, verdict: Verdict, headers: &HeaderMap) -> Answer {
    match decision(rt, judged, verdict, headers) {
        Decision::Allow(edits) => {
            let mut answer = Answer::content(StatusCode::OK, None);
            if let Some((policy, state)) = edits.rate_headers {
                answer.headers.push(("ratelimit-policy", policy));
                answer.headers.push(("ratelimit", state));
            }
            if !edits.remove.is_empty() {
                answer
                    .headers
                    .push((HEADERS_TO_REMOVE, edits.remove.join(", ")));
            }
            answer.named = edits.set;
            answer
        }
        Decision::Deny(answer) => answer,
    }
}

/// A question without a body (Envoy sends `Content-Length: 0` unless `with_request_body`).
pub fn bodyless(headers: &HeaderMap) -> bool {
    match headers.get(http::header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => !headers.contains_key(http::header::TRANSFER_ENCODING),
    }
}

/// What the proxy front would send upstream, as Envoy edits of the request it holds: the
/// headers to set (with their values) and the names to remove.
fn upstream_edits(
    rt: &Runtime,
    judged: &Judged,
    headers: &HeaderMap,
) -> (Vec<(HeaderName, String)>, Vec<String>) {
    let mut upstream = headers.clone();
    for name in &judged.remove_headers {
        upstream.remove(name);
    }
    let no_peer = pipeline::upstream::Connection {
        peer: None,
        tls: false,
    };
    // The proxy's own edits; Envoy sets the forwarding headers itself.
    pipeline::upstream::set_upstream_headers(&mut upstream, rt, judged, no_peer);
    let mut set = Vec::new();
    for name in upstream.keys() {
        let after = upstream.get_all(name);
        if !headers.get_all(name).iter().eq(after.iter()) {
            let values: Vec<&str> = after.iter().filter_map(|v| v.to_str().ok()).collect();
            set.push((name.clone(), values.join(", ")));
        }
    }
    let mut remove: Vec<String> = headers
        .keys()
        .filter(|name| !upstream.contains_key(*name))
        .map(|name| name.as_str().to_string())
        .collect();
    for name in owned_names(rt) {
        if !upstream.contains_key(name.as_str()) && !remove.iter().any(|r| r == name.as_str()) {
            remove.push(name.as_str().to_string());
        }
    }
    (set, remove)
}

/// Every identity header name gatehouse can set (spec §3) and oauth2-proxy's token header.
fn owned_names(rt: &Runtime) -> impl Iterator<Item = HeaderName> + '_ {
    const FIXED: [&str; 7] = [
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-preferred-username",
        "x-auth-request-groups",
        "x-auth-request-issuer",
        "x-auth-request-access-token",
        "x-gatehouse-assertion",
    ];
    FIXED.into_iter().map(HeaderName::from_static).chain(
        rt.config
            .headers
            .claims
            .iter()
            .map(|(name, _)| name.clone()),
    )
}

#[cfg(test)]
mod tests {
    use crate::pipeline::ext_authz_target as original_target;

    #[test]
    fn only_the_exact_prefix_names_an_original_target() {
        let p = "/_gatehouse";
        assert_eq!(
            original_target(b"/_gatehouse/ext-authz/a?b=1", p),
            Some(&b"/a?b=1"[..])
        );
        assert_eq!(
            original_target(b"/_gatehouse/ext-authz", p),
            Some(&b"/"[..])
        );
        assert_eq!(
            original_target(b"/_gatehouse/ext-authz/../x", p),
            Some(&b"/../x"[..])
        );
        for other in [
            &b"/_gatehouse/ext-authzx/a"[..],
            b"/_gatehouse/ext-authz?x=1",
            b"/_gatehouse/ext%2dauthz/a",
            b"/_GATEHOUSE/ext-authz/a",
            b"/_gatehouse/auth",
            b"http://h/_gatehouse/ext-authz/a",
        ] {
            assert_eq!(
                original_target(other, p),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
