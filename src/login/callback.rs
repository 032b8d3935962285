//! The end of a login: the IdP's answer checked against the stored state and binding, the
//! code exchanged, the ID token verified, and the session stored.

use super::*;

impl Login {
    /// The callback: checks the authorization response, redeems the code, validates the ID
    /// token and creates a fresh session (a new id: no fixation).
    pub async fn finish(
        &self,
        query: &str,
        binding_cookie: Option<&str>,
        client: &session::LoginClient,
    ) -> Result<LoggedIn, LoginFailure> {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| {
            let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            match (values.next(), values.next()) {
                (Some(v), None) => Some(v.as_str()),
                _ => None,
            }
        };
        let state = param("state")
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| {
                LoginFailure::new(
                    "-",
                    "missing_state",
                    400,
                    "callback without a (single) state",
                )
            })?;
        let stored = self
            .store
            .take_once(&format!("login:{}", sha256_hex(state)))
            .await
            .map_err(|e| self.store_failure("-", e))?
            .ok_or_else(|| {
                LoginFailure::new(
                    "-",
                    "unknown_state",
                    400,
                    "state unknown, expired or already used",
                )
            })?;
        let login: LoginState = serde_json::from_slice(&stored).map_err(|e| {
            LoginFailure::new(
                "-",
                "unknown_state",
                400,
                format!("stored login unreadable: {e}"),
            )
        })?;
        let idp = login.idp.as_str();
        let provider = self.provider(idp).ok_or_else(|| {
            LoginFailure::new(
                "-",
                "unknown_idp",
                400,
                format!("login started for idp {idp:?}, which is no longer configured"),
            )
        })?;
        let binding = binding_cookie.map(sha256_hex).unwrap_or_default();
        if !bool::from(binding.as_bytes().ct_eq(login.binding.as_bytes())) {
            return Err(LoginFailure::new(
                idp,
                "browser_mismatch",
                400,
                "the callback came without the cookie of the browser that started the login",
            ));
        }
        if let Some(error) = param("error") {
            let label = match error {
                "access_denied" => "access_denied",
                "login_required" | "interaction_required" | "consent_required" => "login_required",
                _ => "idp_error",
            };
            return Err(LoginFailure::new(
                idp,
                label,
                400,
                format!("the IdP answered error={error:?}"),
            ));
        }
        let metadata = provider
            .metadata()
            .ok_or_else(|| LoginFailure::new(idp, "idp_unavailable", 503, "not discovered"))?;
        // RFC 9207: a mix-up attack shows as a foreign `iss`.
        match param("iss") {
            Some(iss) if iss != provider.config.issuer => {
                return Err(LoginFailure::new(
                    idp,
                    "wrong_iss",
                    400,
                    format!("authorization response iss {iss:?}"),
                ))
            }
            None if metadata.iss_parameter_supported => {
                return Err(LoginFailure::new(
                    idp,
                    "missing_iss",
                    400,
                    "the IdP announces iss in authorization responses but sent none",
                ))
            }
            _ => {}
        }
        let code = param("code")
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| {
                LoginFailure::new(idp, "missing_code", 400, "callback without a code")
            })?;
        let tokens = provider
            .exchange_code(&metadata, code, &self.redirect_uri, &login.verifier)
            .await
            .map_err(|e| LoginFailure::new(idp, e.label, 502, e.detail))?;
        let id_token = tokens.id_token.as_deref().ok_or_else(|| {
            LoginFailure::new(
                idp,
                "missing_id_token",
                502,
                "the token endpoint sent no id_token",
            )
        })?;
        let identity = provider
            .validate_id_token(id_token, Some(&login.nonce))
            .await
            .map_err(|f| {
                LoginFailure::new(
                    idp,
                    f.reason(),
                    502,
                    format!("ID token refused: {}", f.reason()),
                )
            })?;
        let claims = &identity.claims;
        let acr = claims
            .get("acr")
            .and_then(Value::as_str)
            .map(str::to_string);
        if !login.acr_values.is_empty()
            && !acr.as_ref().is_some_and(|a| login.acr_values.contains(a))
        {
            return Err(LoginFailure::new(
                idp,
                "acr_not_satisfied",
                403,
                format!(
                    "asked for acr {:?}, the IdP returned {acr:?}",
                    login.acr_values
                ),
            ));
        }
        let auth_time = claims
            .get("auth_time")
            .and_then(Value::as_f64)
            .map(|t| t as u64);
        if let Some(max_age) = login.max_age {
            // OIDC Core §2: asked with max_age, the provider must say when the person
            // authenticated; without it the login proves nothing about its age.
            let at = auth_time.ok_or_else(|| {
                LoginFailure::new(
                    idp,
                    "missing_auth_time",
                    502,
                    "max_age was sent and the ID token has no auth_time",
                )
            })?;
            let leeway = provider.config.leeway.as_secs();
            if unix_now().saturating_sub(at) > max_age + leeway {
                return Err(LoginFailure::new(
                    idp,
                    "auth_too_old",
                    403,
                    "auth_time older than the max_age asked for",
                ));
            }
        }
        let extra = self
            .extra_claims(
                provider,
                &metadata,
                tokens.access_token.as_deref(),
                &identity.subject,
                claims,
            )
            .await?;
        let now = unix_now();
        let names = session::Names {
            idp,
            issuer: &provider.config.issuer,
            subject: &identity.subject,
            sid: claims.get("sid").and_then(Value::as_str),
            acr: acr.as_deref(),
        };
        let kept = self.kept_tokens(session::Tokens::default(), &tokens);
        let mut times = Times::starting(now, now + self.session.max_lifetime.as_secs());
        // Unknown stays unknown (never "now"): max_auth_age then asks the IdP again. 0 is
        // how a session stores "none": an IdP's auth_time of 0 counts as 1, long ago.
        times.auth_time = auth_time.map(|t| t.max(1));
        self.set_token_times(&mut times, &kept, &tokens, now);
        let mut session = Session::from_login(names, &kept, client, &self.cipher, times);
        if extra.is_some() {
            session = session.with_userinfo(extra.as_deref(), &self.cipher);
        }
        let session_id = session::new_session_id();
        self.store
            .put(&session_id, &session, self.ttl(&session, now))
            .await
            .map_err(|e| self.store_failure(idp, e))?;
        Ok(LoggedIn {
            session_id,
            return_to: login.rd,
            subject: identity.subject,
            idp: idp.to_string(),
        })
    }

    /// Claims the ID token lacks, fetched now and kept in the session (JSON): the userinfo
    /// endpoint's (OIDC Core §5.3) as the IdP's `userinfo` says, and with `groups_source =
    /// "graph"` the groups Graph lists when the token had no room for them. `None`: nothing
    /// to keep.
    pub(super) async fn extra_claims(
        &self,
        provider: &Provider,
        metadata: &oidc::Metadata,
        access_token: Option<&str>,
        subject: &str,
        id_claims: &serde_json::Map<String, Value>,
    ) -> Result<Option<Vec<u8>>, LoginFailure> {
        let names = &provider.config.claims;
        let wanted = match provider.config.userinfo {
            Userinfo::Never => false,
            Userinfo::Always => true,
            // Only from an IdP that has the endpoint; an unverified email counts as missing.
            Userinfo::Auto => {
                metadata.userinfo_endpoint.is_some()
                    && (claim_at(id_claims, &names.groups).is_none()
                        || claim_at(id_claims, &names.email).is_none())
            }
        };
        // OIDC Core §5.3.2: userinfo's `sub` is the ID token's `sub` (not the subject claim
        // this IdP's config reads, which may be `oid`).
        let sub = id_claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or(subject);
        let mut extra = match wanted {
            true => {
                self.fetch_userinfo(provider, metadata, access_token, sub)
                    .await?
            }
            false => None,
        };
        if let Some(extra) = &mut extra {
            // Only claims about the person: nothing that says how, when or for whom the
            // tokens were issued, and no `email_verified` for another source's email.
            for protocol in [
                "iss",
                "aud",
                "azp",
                "exp",
                "iat",
                "nbf",
                "nonce",
                "jti",
                "auth_time",
                "acr",
                "amr",
                "sid",
                "cnf",
                "at_hash",
                "c_hash",
                "_claim_names",
                "_claim_sources",
            ] {
                extra.remove(protocol);
            }
            if id_claims.contains_key("email") {
                extra.remove("email_verified");
            }
        }
        if let Some(base) = provider
            .config
            .graph
            .as_deref()
            .filter(|_| graph::overage(id_claims))
        {
            let idp = provider.config.name.as_str();
            let call = graph::transitive_groups(provider.http(), base, access_token);
            let bounded = async {
                // Within the refresh lock's 10 s, whatever the pages and retries.
                tokio::time::timeout(graph::DEADLINE, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(("timeout", format!("Graph took over {:?}", graph::DEADLINE)))
                    })
            };
            let groups = crate::otel::outbound("graph", base, bounded)
                .await
                .map_err(|(label, detail)| {
                    self.metrics.userinfo_requests_total.with_label_values(&[idp, "graph_failed"]).inc();
                    tracing::warn!(target: "gatehouse::audit", idp, subject, reason = label, error = %detail, "Microsoft Graph groups failed; login refused");
                    LoginFailure::new(idp, "graph_failed", 502, format!("Graph groups: {detail}"))
                })?;
            tracing::debug!(
                idp,
                subject,
                groups = groups.len(),
                "groups from Microsoft Graph"
            );
            // Under the name this IdP's groups are read by (a dotted path: its first part).
            let name = names.groups.split('.').next().unwrap_or("groups");
            extra
                .get_or_insert_with(serde_json::Map::new)
                .insert(name.to_string(), Value::from(groups));
        }
        Ok(extra.and_then(|claims| serde_json::to_vec(&claims).ok()))
    }

    /// The userinfo claims (without `sub`), fetched now; by the IdP's `userinfo_on_error`,
    /// a failure ends the login or leaves the claims out (logged and counted either way).
    async fn fetch_userinfo(
        &self,
        provider: &Provider,
        metadata: &oidc::Metadata,
        access_token: Option<&str>,
        subject: &str,
    ) -> Result<Option<serde_json::Map<String, Value>>, LoginFailure> {
        let idp = provider.config.name.as_str();
        let count = |result: &str| {
            self.metrics
                .userinfo_requests_total
                .with_label_values(&[idp, result])
                .inc()
        };
        let endpoint = metadata.userinfo_endpoint.as_deref().unwrap_or_default();
        let call = provider.userinfo(metadata, access_token, subject);
        match crate::otel::outbound("userinfo", endpoint, call).await {
            Ok(mut claims) => {
                count("success");
                claims.remove("sub");
                Ok(Some(claims))
            }
            Err((label, detail)) => {
                count(label);
                match provider.config.userinfo_on_error {
                    UserinfoOnError::Fail => Err(LoginFailure::new(
                        idp,
                        "userinfo_failed",
                        502,
                        format!("userinfo: {detail}"),
                    )),
                    UserinfoOnError::Continue => {
                        tracing::warn!(target: "gatehouse::audit", idp, subject, reason = label, error = %detail, "userinfo failed; the session goes on with the ID token's claims");
                        Ok(None)
                    }
                }
            }
        }
    }

    /// What a session keeps of a token response, over what it kept before: the access token
    /// only when a route passes it on; a refresh without a new ID or refresh token keeps the old.
    pub(super) fn kept_tokens(
        &self,
        before: session::Tokens,
        tokens: &oidc::Tokens,
    ) -> session::Tokens {
        session::Tokens {
            id_token: tokens.id_token.clone().or(before.id_token),
            access_token: tokens
                .access_token
                .clone()
                .filter(|_| self.keep_access_token),
            refresh_token: tokens.refresh_token.clone().or(before.refresh_token),
        }
    }

    pub(super) fn set_token_times(
        &self,
        times: &mut Times,
        kept: &session::Tokens,
        tokens: &oidc::Tokens,
        now: u64,
    ) {
        times.access_expires_at = tokens.expires_in.map(|s| now.saturating_add(s));
        // Ahead of expiry by `refresh_before`, but never more than a fifth of the lifetime.
        times.refresh_at = match (tokens.expires_in, &kept.refresh_token) {
            (Some(life), Some(_)) => {
                let ahead = self.session.refresh_before.as_secs().min(life / 5);
                Some(now.saturating_add(life - ahead))
            }
            _ => None,
        };
    }
}
