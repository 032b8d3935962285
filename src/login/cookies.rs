//! The cookies the gateway sets (session and browser binding), with the attributes the config
//! asks for, and reading a cookie from the request.

use super::*;

use cookie::time::Duration as CookieAge;
use cookie::{Cookie, CookieBuilder, SameSite as CookieSameSite};

/// Names and flags of the cookies the gateway sets.
#[derive(Debug, Clone)]
pub struct Cookies {
    pub session: String,
    pub binding: String,
    /// The provider last chosen on the sign-in page (not a secret: it orders the page).
    pub choice: String,
    pub secure: bool,
    same_site: CookieSameSite,
}

impl Cookies {
    pub(crate) fn new(config: &SessionConfig, secure: bool) -> Cookies {
        // `__Host-`: only from a secure origin, no Domain, Path=/ (cannot be planted by a
        // sibling subdomain).
        let prefix = if secure { "__Host-" } else { "" };
        Cookies {
            session: format!("{prefix}{}", config.cookie_name),
            binding: format!("{prefix}{}_login", config.cookie_name),
            choice: format!("{prefix}{}_idp", config.cookie_name),
            secure,
            same_site: match config.same_site {
                SameSite::Lax => CookieSameSite::Lax,
                SameSite::Strict => CookieSameSite::Strict,
            },
        }
    }

    /// Every cookie of the gateway's: host-only (no Domain), `Path=/`, `HttpOnly`, `Secure`
    /// on TLS (which the `__Host-` prefix demands).
    fn build<'c>(
        &self,
        name: &'c str,
        value: &'c str,
        same_site: CookieSameSite,
    ) -> CookieBuilder<'c> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .same_site(same_site)
            .secure(self.secure)
    }

    /// The session cookie: a session cookie in the browser's sense (no Max-Age); the
    /// server-side timeouts decide how long it is worth anything.
    pub fn set_session(&self, id: &str) -> String {
        self.build(&self.session, id, self.same_site).to_string()
    }

    /// The session cookie removed: empty, `Max-Age=0` and an `Expires` in the past.
    pub fn clear_session(&self) -> String {
        self.build(&self.session, "", self.same_site)
            .removal()
            .to_string()
    }

    /// Always Lax: the callback is a top-level navigation coming from the IdP's site.
    pub(super) fn set_binding(&self, value: &str) -> String {
        self.build(&self.binding, value, CookieSameSite::Lax)
            .max_age(age(LOGIN_TTL))
            .to_string()
    }

    /// The remembered choice of provider: a year, Lax (it is read on top-level navigations).
    pub fn set_choice(&self, idp: &str) -> String {
        self.build(&self.choice, idp, CookieSameSite::Lax)
            .max_age(age(CHOICE_TTL))
            .to_string()
    }

    /// Whether a cookie name (as the request's bytes) is one of the gateway's.
    pub fn is_ours(&self, name: &[u8]) -> bool {
        name == self.session.as_bytes()
            || name == self.binding.as_bytes()
            || name == self.choice.as_bytes()
    }
}

fn age(d: Duration) -> CookieAge {
    CookieAge::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one), surrounding
/// quotes removed, read by the `cookie` crate's rules: pairs split at `;`, a pair without
/// `=` or with an empty name skipped, name and value trimmed. It runs on every request of a
/// session route, where the crate's own parser (a full `Cookie` per pair) cost about 1,500
/// instructions, 1.6% of the request; this reader builds nothing, and the `cookies` fuzz
/// target checks that it always agrees with [`cookie_value_by_the_crate`].
pub fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    for value in headers.get_all(http::header::COOKIE) {
        // Visible ASCII only: then the crate's name trimming is the upstream stripper's
        // (ASCII), so the cookie read here is always one that is stripped.
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((n, v)) = pair.split_once('=') else {
                continue;
            };
            if n.trim() == name {
                return Some(v.trim().trim_matches('"'));
            }
        }
    }
    None
}

/// [`cookie_value`] by the crate's parser itself: the reference it is checked against.
#[cfg(any(test, feature = "fuzzing"))]
pub fn cookie_value_by_the_crate<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for cookie in Cookie::split_parse(text).flatten() {
            if cookie.name_raw() == Some(name) {
                return Some(cookie.value_raw().unwrap_or_default().trim_matches('"'));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attributes of a `Set-Cookie` value, as a browser reads them.
    fn attributes(set_cookie: &str) -> Vec<String> {
        let mut parts: Vec<String> = set_cookie.split("; ").map(str::to_string).collect();
        parts.sort();
        parts
    }

    #[test]
    fn cookies_are_host_only_and_secure_on_tls() {
        let tls = Cookies::new(&SessionConfig::memory_for_tests(), true);
        let set = tls.set_session("abc");
        assert!(set.starts_with("__Host-gatehouse=abc;"));
        assert_eq!(
            attributes(&set),
            [
                "HttpOnly",
                "Path=/",
                "SameSite=Lax",
                "Secure",
                "__Host-gatehouse=abc"
            ]
        );
        assert_eq!(
            attributes(&tls.set_binding("b")),
            [
                "HttpOnly",
                "Max-Age=600",
                "Path=/",
                "SameSite=Lax",
                "Secure",
                "__Host-gatehouse_login=b"
            ]
        );
        let clear = tls.clear_session();
        assert!(clear.starts_with("__Host-gatehouse=;") && clear.contains("; Max-Age=0"));
        assert!(clear.contains("; Expires=") && clear.contains("; Path=/"));
        let choice = tls.set_choice("partners");
        assert!(choice.starts_with("__Host-gatehouse_idp=partners;"));
        assert_eq!(
            attributes(&choice),
            [
                "HttpOnly",
                "Max-Age=31536000",
                "Path=/",
                "SameSite=Lax",
                "Secure",
                "__Host-gatehouse_idp=partners"
            ]
        );
        let plain = Cookies::new(&SessionConfig::memory_for_tests(), false);
        assert_eq!(
            attributes(&plain.set_session("abc")),
            ["HttpOnly", "Path=/", "SameSite=Lax", "gatehouse=abc"]
        );
        assert!(plain.is_ours(b"gatehouse") && plain.is_ours(b"gatehouse_login"));
        assert!(plain.is_ours(b"gatehouse_idp") && !plain.is_ours(b"gatehouse2"));
        let strict = SessionConfig {
            same_site: SameSite::Strict,
            ..SessionConfig::memory_for_tests()
        };
        let strict = Cookies::new(&strict, true);
        assert!(strict.set_session("x").contains("; SameSite=Strict"));
        // The binding cookie must survive the IdP's cross-site redirect back.
        assert!(strict.set_binding("b").contains("; SameSite=Lax"));
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; gatehouse=xyz".parse().unwrap());
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, "gatehouse"), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "gate"), None);
        // Quoted values, spaces, pairs that are not cookies, a name as another's prefix.
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "junk; =x; gatehouse2=no;  gatehouse = \"q1\" "
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie_value(&h, "gatehouse"), Some("q1"));
        assert_eq!(cookie_value(&h, "junk"), None);
    }

    #[test]
    fn the_reader_agrees_with_the_crate() {
        for text in [
            "gatehouse=a",
            " gatehouse = a ; b=1",
            "=x; gatehouse=\"\"; gatehouse=second",
            "gatehouse; gatehouse=v",
            "gatehouse==x=y",
            ";;; ;gatehouse\t=\tz\t;",
            "a=1;gatehouse",
            "gatehousex=1; xgatehouse=2",
            "gatehouse=\"\"\"q\"",
        ] {
            let mut h = http::HeaderMap::new();
            h.append(http::header::COOKIE, text.parse().unwrap());
            h.append(http::header::COOKIE, "gatehouse=later".parse().unwrap());
            for name in ["gatehouse", "a", "b", "x"] {
                assert_eq!(
                    cookie_value(&h, name),
                    cookie_value_by_the_crate(&h, name),
                    "{text:?} {name}"
                );
            }
        }
    }
}
