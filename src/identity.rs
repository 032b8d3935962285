//! Identity headers: the names a claim mapping may write. (That no client may send them, in
//! any spelling, is [`crate::hygiene`]'s rule.)

use http::HeaderName;

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
