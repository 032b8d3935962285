//! Cross-site request forgery defence of logout: a request may end sessions only when it
//! proves it comes from the gateway's own origin. Browsers say where a request comes from
//! in `Sec-Fetch-Site` (fetch metadata) and `Origin`; the confirmation form also carries a
//! token bound to the session, for browsers that send neither. Go's `CrossOriginProtection`
//! and Pomerium's sign-out make the same checks.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Where a request says it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// The gateway's own origin, or the person themselves (typed URL, bookmark).
    SameOrigin,
    /// Another origin, a same-site sibling included, or an opaque (`null`) one.
    CrossOrigin,
    /// Neither header: not a browser, or an old one; only the form's token can tell.
    Unknown,
}

/// `Sec-Fetch-Site` decides when present (a page cannot set it); else `Origin`, compared
/// with `public_origin` (`scheme://host[:port]`, as browsers serialize it).
pub fn provenance(headers: &HeaderMap, public_origin: &str) -> Provenance {
    let mut fetch_site = headers.get_all("sec-fetch-site").iter();
    if let Some(site) = fetch_site.next() {
        let same = matches!(site.as_bytes(), b"same-origin" | b"none");
        return if same && fetch_site.next().is_none() {
            Provenance::SameOrigin
        } else {
            Provenance::CrossOrigin
        };
    }
    let mut origins = headers.get_all(http::header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (None, _) => Provenance::Unknown,
        (Some(origin), None)
            if !public_origin.is_empty()
                && origin
                    .as_bytes()
                    .eq_ignore_ascii_case(public_origin.as_bytes()) =>
        {
            Provenance::SameOrigin
        }
        _ => Provenance::CrossOrigin,
    }
}

/// The origin of a URL as browsers write it in `Origin` (empty when it has none).
pub fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .ok()
        .filter(|o| o != "null")
        .unwrap_or_default()
}

/// The confirmation form's token for the session with cookie value `session_id`: only a
/// page of the gateway's origin (or the cookie's holder) can know it. Domain-separated from
/// the store's key, which is the plain SHA-256 of the id.
pub fn logout_token(session_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"gatehouse logout confirmation\0");
    hash.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// Whether `presented` is the token of `session_id`, in constant time.
pub fn token_matches(session_id: &str, presented: &str) -> bool {
    bool::from(
        logout_token(session_id)
            .as_bytes()
            .ct_eq(presented.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fetch_metadata_wins_then_origin() {
        let public = "https://app.example.com";
        let cases: &[(&[(&str, &str)], Provenance)] = &[
            (&[("sec-fetch-site", "same-origin")], Provenance::SameOrigin),
            (&[("sec-fetch-site", "none")], Provenance::SameOrigin),
            (&[("sec-fetch-site", "same-site")], Provenance::CrossOrigin),
            (&[("sec-fetch-site", "cross-site")], Provenance::CrossOrigin),
            (
                &[("sec-fetch-site", "Same-Origin")],
                Provenance::CrossOrigin,
            ),
            (
                &[
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-site", "cross-site"),
                ],
                Provenance::CrossOrigin,
            ),
            (
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://app.example.com"),
                ],
                Provenance::CrossOrigin,
            ),
            (
                &[("origin", "https://app.example.com")],
                Provenance::SameOrigin,
            ),
            (
                &[("origin", "HTTPS://APP.EXAMPLE.COM")],
                Provenance::SameOrigin,
            ),
            (
                &[("origin", "https://app.example.com:443")],
                Provenance::CrossOrigin,
            ),
            (
                &[("origin", "http://app.example.com")],
                Provenance::CrossOrigin,
            ),
            (
                &[("origin", "https://evil.example")],
                Provenance::CrossOrigin,
            ),
            (
                &[("origin", "https://app.example.com.evil.example")],
                Provenance::CrossOrigin,
            ),
            (&[("origin", "null")], Provenance::CrossOrigin),
            (
                &[
                    ("origin", "https://app.example.com"),
                    ("origin", "https://evil.example"),
                ],
                Provenance::CrossOrigin,
            ),
            (&[], Provenance::Unknown),
        ];
        for (list, want) in cases {
            assert_eq!(provenance(&headers(list), public), *want, "{list:?}");
        }
        // No public URL: no Origin can match.
        assert_eq!(
            provenance(&headers(&[("origin", "null")]), ""),
            Provenance::CrossOrigin
        );
    }

    #[test]
    fn origins_as_browsers_write_them() {
        assert_eq!(
            origin_of("https://App.Example.com:443/x?y"),
            "https://app.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(origin_of(""), "");
        assert_eq!(origin_of("data:text/plain,x"), "");
    }

    #[test]
    fn tokens_are_bound_to_their_session() {
        let t = logout_token("session-a");
        assert!(token_matches("session-a", &t));
        assert!(!token_matches("session-b", &t));
        assert!(!token_matches("session-a", ""));
        assert_ne!(t, hex::encode(Sha256::digest(b"session-a")));
    }
}
