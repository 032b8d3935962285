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
    let method = text("x-forwarded-method").unwrap_or("GET");
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Err(Answer::refused(403, "forward_auth_bad_target", false));
    };
    Ok(Forwarded {
        method,
        target: text("x-forwarded-uri").unwrap_or("/"),
        authority: text("x-forwarded-host").or_else(|| text("host")),
        redirect,
    })
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
