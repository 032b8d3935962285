//! Header names the gateway treats specially (those a claim mapping may not write, the
//! request overrides a route may let through), and header edits made straight on an
//! `http::HeaderMap`. A leaf: config and the request stages both use it.
//!
//! Pingora's setters parse and copy every name they are given. While a header keeps its
//! wire case they do it twice, once for the value map and once for the case map. Those
//! copies were the largest part of the gateway's own cost per proxied request. So the
//! request sent upstream and the response sent back are edited as plain maps under static
//! names instead. They leave without Pingora's case map, so names go out in lower case
//! (Pingora title-cases a dozen framing names such as `Host` and `Content-Length`). Envoy
//! sends headers in lower case too, and header names are case-insensitive (RFC 9110 §5.1).

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

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


/// Headers that make an app perform another method than the request line's.
pub const METHOD_OVERRIDES: [&str; 4] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
];

/// Headers that make an app serve another path than the request target's.
pub const PATH_OVERRIDES: [&str; 4] = [
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-override-url",
];

/// The query parameter Symfony, Laravel and Rails take as the method of a POST.
pub const METHOD_PARAMETER: &str = "_method";

/// One override a route lets through (`request_overrides`); the policy judges its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// A header naming the method.
    Method(HeaderName),
    /// A header naming the path (and query).
    Path(HeaderName),
    /// `_method` in the query of a POST.
    MethodParameter,
}

impl Override {
    /// The override a `request_overrides` entry names, if it is one the gateway knows.
    pub fn parse(name: &str) -> Option<Override> {
        let lower = name.to_ascii_lowercase();
        if lower == METHOD_PARAMETER {
            return Some(Override::MethodParameter);
        }
        let header = HeaderName::from_bytes(lower.as_bytes()).ok()?;
        if METHOD_OVERRIDES.contains(&lower.as_str()) {
            Some(Override::Method(header))
        } else if PATH_OVERRIDES.contains(&lower.as_str()) {
            Some(Override::Path(header))
        } else {
            None
        }
    }

    /// The name as `request_overrides` spells it.
    pub fn name(&self) -> &str {
        match self {
            Override::Method(h) | Override::Path(h) => h.as_str(),
            Override::MethodParameter => METHOD_PARAMETER,
        }
    }

    pub(crate) fn header(&self) -> Option<&HeaderName> {
        match self {
            Override::Method(h) | Override::Path(h) => Some(h),
            Override::MethodParameter => None,
        }
    }
}

/// About as many headers as the gateway adds to a request or a response (forwarding,
/// identity, request id, security).
const ADDED: usize = 12;

/// Runs `edit` on the request's headers; the method, target and version stay as they were.
pub fn edit_request<R>(
    req: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> R,
) -> Result<R> {
    // A target the URI does not reproduce (absolute form, non-UTF-8) is kept verbatim.
    let uri_target = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
    let verbatim = (uri_target != Some(req.raw_path())).then(|| req.raw_path().to_vec());
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, placeholder).into();
    // Room for what the gateway adds, so the map grows once, not header by header.
    parts.headers.reserve(ADDED);
    let out = edit(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(raw) = verbatim {
        req.set_raw_path(&raw)?;
    }
    if let Some(end_stream) = end_stream {
        req.set_send_end_stream(end_stream);
    }
    Ok(out)
}

/// Runs `edit` on the response's headers; the status, version and reason phrase stay.
pub fn edit_response<R>(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> R,
) -> Result<R> {
    let reason = resp.get_reason_phrase().map(str::to_string);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    parts.headers.reserve(ADDED);
    let out = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(out)
}

/// A header value from text the gateway made; `None` for text no header can carry.
pub fn value(text: impl Into<String>) -> Option<HeaderValue> {
    HeaderValue::try_from(text.into()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(req: &RequestHeader) -> String {
        let mut buf = Vec::new();
        req.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn requests_keep_their_target_and_values() {
        let mut req = RequestHeader::build("POST", b"http://h.example/a%20b?x=1", None).unwrap();
        req.append_header("X-Custom", "1").unwrap();
        req.append_header("Accept", "a").unwrap();
        req.append_header("accept", "b").unwrap();
        edit_request(&mut req, |h| {
            h.insert(
                http::HeaderName::from_static("x-auth-request-user"),
                HeaderValue::from_static("alice"),
            );
        })
        .unwrap();
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(req.raw_path(), b"http://h.example/a%20b?x=1");
        let accept: Vec<_> = req.headers.get_all("accept").iter().collect();
        assert_eq!(accept, ["a", "b"]);
        let sent = wire(&req);
        assert!(sent.contains("x-custom: 1\r\n"), "{sent}");
        assert!(sent.contains("accept: a\r\naccept: b\r\n"), "{sent}");
        assert!(sent.contains("x-auth-request-user: alice\r\n"), "{sent}");
    }

    #[test]
    fn origin_form_targets_come_from_the_uri() {
        let mut req = RequestHeader::build("GET", b"/p?q=%41", None).unwrap();
        edit_request(&mut req, |_| ()).unwrap();
        assert_eq!(req.raw_path(), b"/p?q=%41");
    }

    #[test]
    fn responses_keep_status_and_reason() {
        let mut resp = ResponseHeader::build(299, None).unwrap();
        resp.set_reason_phrase(Some("Fine")).unwrap();
        resp.append_header("Set-Cookie", "a=1").unwrap();
        edit_response(&mut resp, |h| {
            h.insert(http::header::VARY, HeaderValue::from_static("Origin"));
        })
        .unwrap();
        assert_eq!(resp.status.as_u16(), 299);
        assert_eq!(resp.get_reason_phrase(), Some("Fine"));
        assert_eq!(resp.headers["set-cookie"], "a=1");
        assert_eq!(resp.headers["vary"], "Origin");
    }
}
