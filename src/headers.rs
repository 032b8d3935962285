//! Header names the gateway treats specially: those a claim mapping may not write, and the
//! request overrides a route may let through. A leaf: config and the request stages both
//! use it.

use http::{HeaderName, HeaderValue};

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

/// A header value from text the gateway made; `None` for text no header can carry.
pub fn value(text: impl Into<String>) -> Option<HeaderValue> {
    HeaderValue::try_from(text.into()).ok()
}
