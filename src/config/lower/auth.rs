//! `[bearer.*]`, `[api_key.*]` and policy files: the authentication methods and what they trust.

use super::*;

impl Lowerer<'_> {
    /// A route's policy file, relative to the config; its own problems carry its own path.
    pub(super) fn policy(&mut self, v: &S<String>) -> Option<std::sync::Arc<crate::authz::Policy>> {
        let text = self.string(v)?;
        let path = self.base_dir.join(&text);
        if let Some(p) = self.policies.get(&path) {
            return Some(p.clone());
        }
        if !path.is_file() {
            self.r.error(
                v.span(),
                format!("cannot read policy file {}", path.display()),
            );
            return None;
        }
        match crate::authz::Policy::load(&path) {
            Ok(p) => {
                let p = std::sync::Arc::new(p);
                self.policies.insert(path, p.clone());
                Some(p)
            }
            Err(e) => {
                self.r.error(
                    v.span(),
                    format!("policy {} is invalid (see below)", path.display()),
                );
                self.r.diagnostics.extend(e.0);
                None
            }
        }
    }

    pub(super) fn bearer(&mut self, b: &S<file::Bearer>) -> Option<BearerConfig> {
        let c = b.get_ref();
        let issuer = self.secure_url(&c.issuer, "issuer")?;
        let audiences: Vec<String> = c
            .audiences
            .get_ref()
            .iter()
            .filter_map(|a| self.string(a))
            .collect();
        if c.audiences.get_ref().is_empty() {
            self.r.error(
                c.audiences.span(),
                "audiences must name at least one audience: a token for another API must not be accepted",
            );
        }
        let jwks_uri = c
            .jwks_uri
            .as_ref()
            .and_then(|u| self.secure_url(u, "jwks_uri"));
        let algorithms = self.algorithms(c.algorithms.as_ref(), &[jsonwebtoken::Algorithm::RS256]);
        let leeway = self.leeway(c.leeway.as_ref());
        let claims = self.claim_names(
            [
                &c.subject_claim,
                &c.email_claim,
                &c.username_claim,
                &c.groups_claim,
            ],
            c.email_verified.as_ref(),
        );
        let introspection_secret = self.secret(
            c.introspection_client_secret.as_ref(),
            c.introspection_client_secret_file.as_ref(),
            "introspection_client_secret",
        );
        let secret_given =
            c.introspection_client_secret.is_some() || c.introspection_client_secret_file.is_some();
        let introspection = match (
            &c.introspection_endpoint,
            &c.introspection_client_id,
            secret_given,
        ) {
            (None, None, false) => None,
            (Some(e), Some(id), true) => {
                let endpoint = self.secure_url(e, "introspection_endpoint");
                let client_id = self.string(id);
                match (endpoint, client_id, introspection_secret) {
                    (Some(endpoint), Some(client_id), Some((client_secret, _))) => {
                        Some(IntrospectionConfig {
                            endpoint,
                            client_id,
                            client_secret,
                        })
                    }
                    _ => None,
                }
            }
            _ => {
                self.r.error(
                    b.span(),
                    "introspection_endpoint, introspection_client_id and introspection_client_secret (or introspection_client_secret_file) go together",
                );
                None
            }
        };
        let unknown_kid_refetch_interval = self.duration(
            c.unknown_kid_refetch_interval.as_ref(),
            Duration::from_secs(10),
        );
        let token_type = c.token_type.as_ref().and_then(|t| self.string(t));
        Some(BearerConfig {
            issuer,
            audiences,
            jwks_uri,
            algorithms,
            leeway,
            token_type,
            claims,
            introspection,
            unknown_kid_refetch_interval,
            qualify_subject: false,
        })
    }

    pub(super) fn algorithms(
        &mut self,
        list: Option<&S<Vec<S<String>>>>,
        default: &[jsonwebtoken::Algorithm],
    ) -> Vec<jsonwebtoken::Algorithm> {
        let Some(list) = list else {
            return default.to_vec();
        };
        if list.get_ref().is_empty() {
            self.r.error(list.span(), "algorithms must not be empty");
        }
        list.get_ref()
            .iter()
            .filter_map(|a| {
                let text = a.get_ref().as_str();
                let alg = match text {
                    "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256"
                    | "ES384" | "EdDSA" => text.parse::<jsonwebtoken::Algorithm>().ok(),
                    _ => None,
                };
                if alg.is_none() {
                    self.r.error(
                        a.span(),
                        format!("algorithm {text:?} is not allowed (use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA; HMAC and none never are)"),
                    );
                }
                alg
            })
            .collect()
    }

    /// Where identity claims are found: subject, email, username, groups (defaults: `sub`,
    /// `email`, `preferred_username`, `groups`); and when the email counts (`email_verified`).
    pub(super) fn claim_names(
        &mut self,
        names: [&Option<S<String>>; 4],
        email_verified: Option<&S<String>>,
    ) -> ClaimNames {
        let defaults = ["sub", "email", "preferred_username", "groups"];
        let [subject, email, username, groups] = std::array::from_fn(|i| {
            names[i]
                .as_ref()
                .and_then(|v| self.string(v))
                .unwrap_or_else(|| defaults[i].to_string())
        });
        let email_verified = match email_verified.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "required")) => EmailVerified::Required,
            Some((_, "if_present")) => EmailVerified::IfPresent,
            Some((_, "ignore")) => EmailVerified::Ignore,
            Some((v, other)) => {
                self.r.error(
                    v.span(),
                    format!("email_verified must be \"required\", \"if_present\" or \"ignore\", not {other:?}"),
                );
                EmailVerified::Required
            }
        };
        ClaimNames {
            subject,
            email,
            username,
            groups,
            email_verified,
        }
    }

    pub(super) fn api_key(&mut self, k: &S<file::ApiKey>) -> Option<ApiKeyConfig> {
        let c = k.get_ref();
        let Some((hash_text, at)) = self.secret(c.hash.as_ref(), c.hash_file.as_ref(), "hash")
        else {
            if c.hash.is_none() && c.hash_file.is_none() {
                self.r.error(
                    c.name.span(),
                    "api_key needs hash (or hash_file): \"sha256:\" and 64 hex digits, as printed by `gatehouse apikey hash`",
                );
            }
            return None;
        };
        let hash = hash_text
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|h| <[u8; 32]>::try_from(h).ok());
        let Some(hash) = hash else {
            self.r.error(
                at,
                "api_key hash must be \"sha256:\" and 64 hex digits, as printed by `gatehouse apikey hash`",
            );
            return None;
        };
        let expires = match &c.expires {
            None => None,
            Some(e) => {
                let text = self.string(e)?;
                let parsed = humantime::parse_rfc3339_weak(&text)
                    .or_else(|_| humantime::parse_rfc3339_weak(&format!("{text} 00:00:00")));
                match parsed {
                    Ok(t) => Some(t),
                    Err(_) => {
                        self.r.error(
                            e.span(),
                            format!("expires {text:?} must be a date (2026-12-31) or an RFC 3339 time (UTC)"),
                        );
                        return None;
                    }
                }
            }
        };
        Some(ApiKeyConfig {
            name: self.string(&c.name)?,
            hash,
            subject: self.string(&c.subject)?,
            groups: c
                .groups
                .iter()
                .flatten()
                .filter_map(|g| self.string(g))
                .collect(),
            expires,
        })
    }

    /// Clock leeway for token times: 30 s by default, at most 5 minutes.
    pub(super) fn leeway(&mut self, v: Option<&S<String>>) -> Duration {
        let leeway = self.duration(v, Duration::from_secs(30));
        if let (Some(l), true) = (v, leeway > Duration::from_secs(300)) {
            self.r.error(
                l.span(),
                "leeway above 5m is refused: it would accept expired tokens",
            );
        }
        leeway
    }
}
