//! The method and the host: a method spelled oddly or a host the gateway does not serve
//! ends the request before its path is read.

use super::{Answer, Front, Pipeline, Request};

/// Admits the request's method and host (into `judged.host`); returns where its
/// path-and-query starts in the target.
pub(super) fn admit(p: &Pipeline<'_>, r: &mut Request<'_>) -> Result<usize, Answer> {
    let facts = r.facts;
    // `delete` is not judged as another method than the `DELETE` a framework performs.
    if !crate::hygiene::is_canonical_method(facts.method.as_str()) {
        return Err(p.refuse_early(r, 400, "bad_method", "forward_auth_bad_target"));
    }
    let (host, path_start) = match facts.front {
        Front::Proxy => {
            target_parts(facts.target, facts.authority).map_err(|(status, reason)| {
                p.refuse_early(r, status, reason, "forward_auth_bad_target")
            })?
        }
        // The forwarded target is the path-and-query the proxy received.
        Front::ForwardAuth { .. } | Front::ExtAuthz => {
            match facts.authority.and_then(super::host_without_port) {
                Some(host) => (host, 0),
                None => return Err(p.refuse_early(r, 400, "bad_host", "forward_auth_bad_target")),
            }
        }
    };
    let allowed = &p.rt.config.server.allowed_hosts;
    if !allowed.is_empty() && !allowed.contains(&host) && !question_from_trusted_proxy(p, r) {
        return Err(p.refuse_early(r, 421, "host_not_allowed", "host_not_allowed"));
    }
    r.judged.host = host;
    Ok(path_start)
}

/// A trusted proxy's forward-auth or ext_authz question, which may name the gateway's own
/// service in `Host` (ingress-nginx sends the auth URL's host): the host judged is the one
/// the question names, checked when that front runs the pipeline for it. Only the exact
/// question paths pass; anything else under another host is still refused.
fn question_from_trusted_proxy(p: &Pipeline<'_>, r: &Request<'_>) -> bool {
    let facts = r.facts;
    if !r.judged.peer_trusted || !matches!(facts.front, Front::Proxy) {
        return false;
    }
    let prefix = p.rt.config.server.reserved_prefix.as_str();
    let forward_auth = facts
        .target
        .strip_prefix(prefix.as_bytes())
        .is_some_and(|rest| rest == b"/auth" || rest.starts_with(b"/auth?"));
    forward_auth || super::endpoint::ext_authz_target(facts.target, prefix).is_some()
}

/// The host (lower-case, no port) of a request in origin or absolute form, and where its
/// path-and-query starts in the raw target.
fn target_parts(
    raw: &[u8],
    authority: Option<&str>,
) -> Result<(String, usize), (u16, &'static str)> {
    let (authority, path_start) = if raw.first() == Some(&b'/') {
        (authority, 0)
    } else if let Some(rest) = strip_scheme(raw) {
        // Absolute form: its authority replaces the Host header (RFC 9112 §3.2.2).
        let split = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let authority = std::str::from_utf8(&rest[..split]).map_err(|_| (400, "bad_target"))?;
        if rest.get(split) == Some(&b'?') {
            return Err((400, "bad_target"));
        }
        // Without a path the target means `/` (supplied by the route stage); the rewrite sends it.
        (Some(authority), raw.len() - rest.len() + split)
    } else {
        return Err((400, "bad_target"));
    };
    let host_value = authority.ok_or((400, "missing_host"))?;
    let host = super::host_without_port(host_value).ok_or((400, "bad_host"))?;
    Ok((host, path_start))
}

fn strip_scheme(raw: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], &b"https://"[..]] {
        if raw.len() > scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&raw[scheme.len()..]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_targets() {
        let raw = b"http://Evil.example:81/admin?x=1";
        let (host, start) = target_parts(raw, Some("other.example")).unwrap();
        assert_eq!(host, "evil.example");
        assert_eq!(&raw[start..], b"/admin?x=1");
        let raw = b"https://h.example";
        let (_, start) = target_parts(raw, None).unwrap();
        assert_eq!(&raw[start..], b"");
    }
}
