//! Identity headers: the names the upstream trusts, and the rule that no client may send them.

use http::HeaderName;
use pingora::http::RequestHeader;

/// Every header with this prefix is the gateway's to set (spec §3).
const IDENTITY_PREFIX: &str = "x-auth-request-";
/// The signed assertion and any future gateway-owned header.
const GATEWAY_PREFIX: &str = "x-gatehouse-";

/// Headers a claim mapping may not write to: framing, routing and the client's own credentials.
pub fn is_reserved_hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "content-length"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "keep-alive"
            | "proxy-connection"
            | "cookie"
            | "authorization"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-real-ip"
            | "x-request-id"
    )
}

/// Removes every identity header the client sent, on every route, before anything else reads
/// the request; `extra` are the claim-mapped names from `[headers]`.
pub fn strip_spoofed_identity_headers(req: &mut RequestHeader, extra: &[HeaderName]) {
    let spoofed: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            n.starts_with(IDENTITY_PREFIX) || n.starts_with(GATEWAY_PREFIX) || extra.contains(name)
        })
        .cloned()
        .collect();
    for name in spoofed {
        req.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_identity_headers_in_any_case() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in [
            ("X-Auth-Request-User", "admin"),
            ("x-auth-request-email", "a@b"),
            ("X-AUTH-REQUEST-GROUPS", "admins"),
            ("X-Gatehouse-Assertion", "forged"),
            ("X-Department", "it"),
            ("X-Other", "keep"),
        ] {
            req.append_header(k, v).unwrap();
        }
        req.append_header("x-auth-request-user", "twice").unwrap();
        strip_spoofed_identity_headers(&mut req, &[HeaderName::from_static("x-department")]);
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-other"]);
    }
}
