//! The cookies the gateway sets (session and browser binding), with the attributes the config
//! asks for, and reading a cookie from the request.

use super::*;

/// Names and flags of the cookies the gateway sets.
#[derive(Debug, Clone)]
pub struct Cookies {
    pub session: String,
    pub binding: String,
    /// The provider last chosen on the sign-in page (not a secret: it orders the page).
    pub choice: String,
    pub secure: bool,
    same_site: &'static str,
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
                SameSite::Lax => "Lax",
                SameSite::Strict => "Strict",
            },
        }
    }

    fn attributes(&self, same_site: &str, max_age: Option<u64>) -> String {
        let mut a = format!("; Path=/; HttpOnly; SameSite={same_site}");
        if self.secure {
            a.push_str("; Secure");
        }
        if let Some(age) = max_age {
            a.push_str(&format!("; Max-Age={age}"));
        }
        a
    }

    /// The session cookie: a session cookie in the browser's sense (no Max-Age); the
    /// server-side timeouts decide how long it is worth anything.
    pub fn set_session(&self, id: &str) -> String {
        format!(
            "{}={id}{}",
            self.session,
            self.attributes(self.same_site, None)
        )
    }

    pub fn clear_session(&self) -> String {
        format!(
            "{}={}",
            self.session,
            self.attributes(self.same_site, Some(0))
        )
    }

    /// Always Lax: the callback is a top-level navigation coming from the IdP's site.
    pub(super) fn set_binding(&self, value: &str) -> String {
        format!(
            "{}={value}{}",
            self.binding,
            self.attributes("Lax", Some(LOGIN_TTL.as_secs()))
        )
    }

    /// The remembered choice of provider: a year, Lax (it is read on top-level navigations).
    pub fn set_choice(&self, idp: &str) -> String {
        format!(
            "{}={idp}{}",
            self.choice,
            self.attributes("Lax", Some(CHOICE_TTL.as_secs()))
        )
    }

    /// Whether a cookie name (as the request's bytes) is one of the gateway's.
    pub fn is_ours(&self, name: &[u8]) -> bool {
        name == self.session.as_bytes()
            || name == self.binding.as_bytes()
            || name == self.choice.as_bytes()
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one).
pub fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    // Runs on every request of a session route: byte scans, no iterator adaptors.
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let value = pair
                .trim()
                .strip_prefix(name)
                .and_then(|v| v.strip_prefix('='));
            if let Some(value) = value {
                return Some(value.trim_matches('"'));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_config() -> SessionConfig {
        SessionConfig {
            store: StoreKind::Memory,
            cookie_name: "gatehouse".into(),
            secret: None,
            secret_previous: None,
            max_lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
            same_site: SameSite::Lax,
            fallback_memory: false,
            timeout: Duration::from_millis(500),
            max_sessions: 10,
            refresh_before: Duration::from_secs(60),
        }
    }

    #[test]
    fn cookies_are_host_only_and_secure_on_tls() {
        let tls = Cookies::new(&session_config(), true);
        let set = tls.set_session("abc");
        assert!(set.starts_with("__Host-gatehouse=abc; Path=/; HttpOnly; SameSite=Lax; Secure"));
        assert!(!set.contains("Domain") && !set.contains("Max-Age"));
        assert!(tls
            .set_binding("b")
            .starts_with("__Host-gatehouse_login=b;"));
        assert!(tls.set_binding("b").contains("Max-Age=600"));
        assert!(tls.clear_session().contains("Max-Age=0"));
        let choice = tls.set_choice("partners");
        assert!(choice
            .starts_with("__Host-gatehouse_idp=partners; Path=/; HttpOnly; SameSite=Lax; Secure"));
        assert!(choice.contains("Max-Age=31536000"));
        let plain = Cookies::new(&session_config(), false);
        assert!(plain.set_session("abc").starts_with("gatehouse=abc;"));
        assert!(!plain.set_session("abc").contains("Secure"));
        assert!(plain.is_ours(b"gatehouse") && plain.is_ours(b"gatehouse_login"));
        assert!(plain.is_ours(b"gatehouse_idp") && !plain.is_ours(b"gatehouse2"));
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; gatehouse=xyz".parse().unwrap());
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, "gatehouse"), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "gate"), None);
    }
}
