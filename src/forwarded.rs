//! Who the client is: the socket peer, or what a trusted proxy says in `X-Forwarded-For`;
//! and the `X-Forwarded-*` / `X-Request-Id` headers the upstream receives.

use std::net::IpAddr;

use crate::headers::value;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) are matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address: the peer itself, unless the peer is a trusted proxy; then the
/// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (the leftmost
/// entries are whatever the client wrote and prove nothing).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut last = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return last;
        };
        for entry in text.rsplit(',') {
            let Some(ip) = parse_forwarded_entry(entry.trim()) else {
                return last;
            };
            if !is_trusted(ip, trusted) {
                return ip;
            }
            last = ip;
        }
    }
    last
}

fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // "1.2.3.4:5678" or "[::1]:5678"
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| canonical(a.ip()))
}

/// A request id a trusted proxy may hand us: short, and harmless in logs and headers.
pub fn acceptable_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 128 random bits as 32 lowercase hex digits.
pub fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 0xf)] as char);
    }
    id
}

/// What the request says about itself, as far as it can be believed.
pub struct Forwarding<'a> {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub client_ip: IpAddr,
    pub scheme: &'static str,
    pub host: &'a str,
    pub request_id: &'a str,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Sets the forwarding headers for the upstream. From an untrusted peer every client-sent
/// value is replaced; from a trusted proxy its values are kept and extended.
pub fn set_forwarding_headers(headers: &mut HeaderMap, f: &Forwarding) {
    let peer_ip = canonical(f.peer);
    let peer = ip_text(peer_ip);
    let client_ip = if f.client_ip == peer_ip {
        HeaderValue::from_str(&peer).ok()
    } else {
        value(ip_text(f.client_ip))
    };
    let proto = HeaderValue::from_static(f.scheme);
    if f.peer_trusted {
        let chain: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let xff = if chain.is_empty() {
            peer
        } else {
            format!("{}, {peer}", chain.join(", "))
        };
        insert(headers, X_FORWARDED_FOR, value(xff));
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, proto);
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            insert(headers, X_FORWARDED_HOST, value(f.host));
        }
    } else {
        headers.remove(http::header::FORWARDED);
        insert(headers, X_FORWARDED_FOR, value(peer));
        headers.insert(X_FORWARDED_PROTO, proto);
        insert(headers, X_FORWARDED_HOST, value(f.host));
    }
    insert(headers, X_REAL_IP, client_ip);
    insert(headers, X_REQUEST_ID, value(f.request_id));
}

/// A trusted proxy says the client reached it over HTTPS: the first (client-side) value of
/// its `X-Forwarded-Proto`. Only to be asked of a trusted peer's headers.
pub fn says_https(headers: &HeaderMap) -> bool {
    headers.get(&X_FORWARDED_PROTO).is_some_and(|v| {
        let first = v
            .as_bytes()
            .split(|&b| b == b',')
            .next()
            .unwrap_or_default();
        first.trim_ascii().eq_ignore_ascii_case(b"https")
    })
}

/// An address as text; IPv4 without the formatting machinery (it runs on every request).
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// Addresses, the host and the request id always make header values; if one ever did
/// not, the client's own header of that name must not stand in for it.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_says_https_in_its_first_value() {
        let says = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(X_FORWARDED_PROTO, HeaderValue::from_str(v).unwrap());
            says_https(&h)
        };
        assert!(says("https"));
        assert!(says("HTTPS"));
        assert!(says(" https , http"));
        assert!(!says("http, https"));
        assert!(!says("http"));
        assert!(!says("httpsx"));
        assert!(!says_https(&HeaderMap::new()));
    }

    fn req(xff: &[&str]) -> HeaderMap {
        let mut r = HeaderMap::new();
        for v in xff {
            r.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        r
    }

    #[test]
    fn client_ip_from_untrusted_peer_ignores_header() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = client_ip("203.0.113.9".parse().unwrap(), &req(&["1.1.1.1"]), &trusted);
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn client_ip_rightmost_untrusted() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = "10.0.0.1".parse().unwrap();
        let r = req(&["6.6.6.6, 198.51.100.7", "10.0.0.5"]);
        assert_eq!(
            client_ip(peer, &r, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // only proxies: the leftmost proxy is the best we know
        let r = req(&["10.1.1.1, 10.0.0.5"]);
        assert_eq!(
            client_ip(peer, &r, &trusted),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        // garbage stops the walk at the last good hop
        let r = req(&["198.51.100.7, garbage, 10.0.0.5"]);
        assert_eq!(
            client_ip(peer, &r, &trusted),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        // no header: the proxy itself
        assert_eq!(client_ip(peer, &req(&[]), &trusted), peer);
    }

    #[test]
    fn mapped_ipv4_is_trusted_as_ipv4() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(is_trusted("::ffff:127.0.0.1".parse().unwrap(), &trusted));
    }

    #[test]
    fn addresses_as_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "203.0.113.9",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(ip_text(ip.parse().unwrap()), ip);
        }
    }

    #[test]
    fn request_ids() {
        assert!(acceptable_request_id("abc-123_x.y:z"));
        assert!(!acceptable_request_id(""));
        assert!(!acceptable_request_id("a b"));
        assert!(!acceptable_request_id("<script>"));
        assert!(!acceptable_request_id(&"a".repeat(129)));
        assert_eq!(new_request_id().len(), 32);
    }
}
