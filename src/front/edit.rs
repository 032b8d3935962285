//! Header edits made straight on an `http::HeaderMap`.
//!
//! Pingora's setters parse and copy every name they are given. While a header keeps its
//! wire case they do it twice, once for the value map and once for the case map. Those
//! copies were the largest part of the gateway's own cost per proxied request. So the
//! request sent upstream and the response sent back are edited as plain maps under static
//! names instead. They leave without Pingora's case map, so names go out in lower case
//! (Pingora title-cases a dozen framing names such as `Host` and `Content-Length`). Envoy
//! sends headers in lower case too, and header names are case-insensitive (RFC 9110 §5.1).

use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
