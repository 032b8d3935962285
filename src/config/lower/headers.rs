//! `[headers]` and `[security_headers]`: what the upstream is told and what the browser is sent.

use super::*;

impl Lowerer<'_> {
    pub(super) fn headers(&mut self, h: Option<&file::Headers>) -> HeadersConfig {
        let Some(h) = h else {
            return HeadersConfig {
                assertion_ttl: Duration::from_secs(60),
                ..HeadersConfig::default()
            };
        };
        let assertion_key = h.assertion_key.as_ref().and_then(|k| {
            let path = self.readable_file(k, "assertion key")?;
            let pem = std::fs::read(&path).unwrap_or_default();
            let p256 = pingora::tls::pkey::PKey::private_key_from_pem(&pem)
                .ok()
                .and_then(|key| key.ec_key().ok())
                .and_then(|ec| ec.group().curve_name())
                == Some(pingora::tls::nid::Nid::X9_62_PRIME256V1);
            if !p256 {
                self.r.error(
                    k.span(),
                    format!(
                        "assertion key {} must be a PEM P-256 (ES256) private key",
                        path.display()
                    ),
                );
                return None;
            }
            Some(path)
        });
        let assertion_ttl = self.duration(h.assertion_ttl.as_ref(), Duration::from_secs(60));
        if let Some(v) = &h.assertion_ttl {
            if assertion_ttl < Duration::from_secs(10) || assertion_ttl > Duration::from_secs(600) {
                self.r
                    .error(v.span(), "assertion_ttl must be between 10s and 10m");
            }
        }
        let mut claims = Vec::new();
        for (name, claim) in &h.claims {
            match HeaderName::from_bytes(name.get_ref().as_bytes()) {
                Ok(header) => {
                    if crate::headers::is_reserved_hop_header(&header) {
                        self.r.error(
                            name.span(),
                            format!("{:?} cannot carry a claim", name.get_ref()),
                        );
                    }
                    claims.push((header, claim.get_ref().clone()));
                }
                Err(_) => self.r.error(
                    name.span(),
                    format!("invalid header name {:?}", name.get_ref()),
                ),
            }
        }
        HeadersConfig {
            assertion: h.assertion.unwrap_or(false),
            assertion_key,
            assertion_ttl,
            claims,
            qualify_user: false,
            qualify_user_set: h.qualify_user.is_some(),
        }
    }

    pub(super) fn security_headers(
        &mut self,
        s: Option<&file::SecurityHeaders>,
    ) -> SecurityHeadersConfig {
        let mut opt = |v: Option<&S<String>>, default: &str| -> Option<String> {
            match v {
                None => Some(default.to_string()),
                Some(v) => {
                    let text = self.string(v)?;
                    if text.is_empty() {
                        return None; // "" switches the header off
                    }
                    if http::HeaderValue::from_str(&text).is_err() {
                        self.r.error(v.span(), "not a valid header value");
                        return None;
                    }
                    Some(text)
                }
            }
        };
        SecurityHeadersConfig {
            hsts: opt(s.and_then(|s| s.hsts.as_ref()), "max-age=31536000; includeSubDomains"),
            frame_options: opt(s.and_then(|s| s.frame_options.as_ref()), "DENY"),
            referrer_policy: opt(
                s.and_then(|s| s.referrer_policy.as_ref()),
                "strict-origin-when-cross-origin",
            ),
            content_security_policy: opt(
                s.and_then(|s| s.content_security_policy.as_ref()),
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            )
            .unwrap_or_else(|| "default-src 'none'".to_string()),
            content_type_options: s.and_then(|s| s.content_type_options).unwrap_or(true),
        }
    }
}
