//! Ending sessions: the browser's logout (with the provider's end-session URL) and the
//! provider's back-channel logout token, used once across instances.

use super::*;

impl Login {
    /// Ends a session; with `everywhere`, every session of its subject. Returns where to
    /// send the browser: the IdP's end-session endpoint when it has one.
    pub async fn logout(
        &self,
        id: Option<&str>,
        everywhere: bool,
    ) -> Result<Option<String>, StoreError> {
        let Some(id) = id else { return Ok(None) };
        let Some(s) = self.store.get(id).await? else {
            // Unreadable during a Redis outage, the session may still be there: it ends with
            // Redis (the store keeps the deletion); but whose sessions "everywhere" means is
            // unknown, and claiming it would be false.
            if everywhere && self.store.degraded() {
                return Err(StoreError::Unavailable(
                    "the session to log out everywhere cannot be read during the outage"
                        .to_string(),
                ));
            }
            self.store.delete(id).await?;
            return Ok(None);
        };
        if everywhere {
            let ended = self
                .store
                .delete_by_subject(self.session_issuer(&s), s.subject())
                .await?;
            // This session, whatever the index says (one of an IdP no longer configured).
            self.store.delete(id).await?;
            self.metrics
                .logouts_total
                .with_label_values(&["everywhere"])
                .inc_by(ended as u64);
        } else {
            self.store.delete(id).await?;
            self.metrics.logouts_total.with_label_values(&["rp"]).inc();
        }
        tracing::info!(target: "gatehouse::audit", idp = %s.idp(), subject = %s.subject(), everywhere, "logout");
        let Some(provider) = self.provider(s.idp()) else {
            return Ok(None);
        };
        let Some(end_session) = provider
            .metadata()
            .and_then(|m| m.end_session_endpoint.clone())
        else {
            return Ok(None);
        };
        let Ok(mut url) = url::Url::parse(&end_session) else {
            return Ok(None);
        };
        let post_logout = provider
            .config
            .post_logout_redirect_uri
            .clone()
            .unwrap_or_else(|| format!("{}/", self.public_url));
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = s.id_token(&self.cipher) {
                q.append_pair("id_token_hint", &hint);
            }
            q.append_pair("client_id", &provider.config.client_id);
            q.append_pair("post_logout_redirect_uri", &post_logout);
        }
        Ok(Some(url.to_string()))
    }

    /// A back-channel logout request's `logout_token`: validated against the IdP that issued
    /// it; the sessions it names end on every instance sharing the store.
    pub async fn backchannel_logout(&self, logout_token: &str) -> Result<usize, AuthFailure> {
        let parsed = crate::authn::bearer::parse(logout_token)?;
        let iss = parsed
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or("");
        let provider = self
            .providers
            .iter()
            .find(|p| p.config.issuer == iss)
            .ok_or(AuthFailure::Invalid("unknown_issuer"))?;
        let token = provider.validate_logout_token(logout_token).await?;
        // One use on every instance sharing the store: the first to take the token's jti
        // (SET NX in Redis) acts on it, until the token expires.
        let used = format!(
            "logout-jti:{}",
            sha256_hex(&format!("{}\0{}", provider.config.issuer, token.jti))
        );
        let left = token
            .expires_at
            .saturating_add(provider.config.leeway.as_secs())
            .saturating_sub(unix_now());
        let remember = Duration::from_secs(left.clamp(1, LOGOUT_TOKEN_MEMORY.as_secs()));
        let unavailable = AuthFailure::Unavailable("session_store_unavailable");
        if !self
            .store
            .try_lock(&used, remember)
            .await
            .map_err(|_| unavailable)?
        {
            return Err(AuthFailure::Invalid("replayed_logout_token"));
        }
        let (sid, sub) = (token.sid, token.sub);
        // Only this issuer's: another issuer's equal `sub` or `sid` is someone else's.
        let issuer = self.issuer(&provider.config.issuer);
        let result = match (&sid, &sub) {
            (Some(sid), _) => self.store.delete_by_sid(issuer, sid).await,
            (None, Some(sub)) => self.store.delete_by_subject(issuer, sub).await,
            (None, None) => Ok(0),
        };
        let Ok(ended) = result else {
            // Nothing ended: the IdP's retry of this token must not count as a replay.
            let _ = self.store.unlock(&used).await;
            return Err(unavailable);
        };
        self.metrics
            .logouts_total
            .with_label_values(&["backchannel"])
            .inc_by(ended as u64);
        tracing::info!(target: "gatehouse::audit", idp = %provider.config.name, sid = sid.as_deref().unwrap_or(""), subject = sub.as_deref().unwrap_or(""), ended, "back-channel logout");
        Ok(ended)
    }
}
