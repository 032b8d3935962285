//! A session in use: found by its cookie, kept within its lifetimes, refreshed before its
//! access token expires (once across instances), and its identity and step-up state.

use super::*;

impl Login {
    /// How long the store keeps a session from now: the idle timeout, cut at the absolute end.
    pub(super) fn ttl(&self, session: &Session, now: u64) -> Duration {
        let left = session.times().expires_at.saturating_sub(now);
        Duration::from_secs(left.min(self.session.idle_timeout.as_secs()).max(1))
    }

    /// The session behind a cookie value, kept alive and refreshed as needed; `None` when
    /// there is none (unknown, expired, ended by a failed refresh).
    pub async fn lookup(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(mut s) = self.store.get(id).await? else {
            return Ok(None);
        };
        let now = unix_now();
        let times = s.times();
        if times.expires_at <= now {
            self.store.delete(id).await?;
            return Ok(None);
        }
        if times.refresh_at.is_some_and(|at| now >= at) {
            match Box::pin(self.refresh(id, s.clone(), now)).await? {
                Some(fresh) => s = fresh,
                None => return Ok(None),
            }
        } else if now.saturating_sub(times.touched_at)
            >= (self.session.idle_timeout.as_secs() / 10).max(1)
        {
            // Push the idle timeout back, at most every tenth of it.
            let mut touched = (*s).clone();
            touched.set_times(Times {
                touched_at: now,
                ..times
            });
            if !self
                .store
                .update(id, &touched, self.ttl(&touched, now))
                .await?
            {
                return Ok(None);
            }
        }
        Ok(Some(s))
    }

    /// Refreshes once per session however many requests need it: in-process waiters share
    /// one refresh, and with Redis a short lock keeps other instances from refreshing too.
    pub(super) async fn refresh(
        &self,
        id: &str,
        current: Arc<Session>,
        now: u64,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let key = session::store_key(id);
        let gate = self
            .refreshing
            .get_with(key.clone(), || Arc::new(tokio::sync::Mutex::new(())));
        let _one = gate.lock().await;
        // Someone may have refreshed while this request waited.
        let Some(latest) = self.store.get(id).await? else {
            return Ok(None);
        };
        if latest.times().refresh_at.is_none_or(|at| now < at) {
            return Ok(Some(latest));
        }
        let lock = format!("refresh:{key}");
        if !self.store.try_lock(&lock, Duration::from_secs(10)).await? {
            // Another instance is refreshing: wait for its result (bounded).
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                match self.store.get(id).await? {
                    None => return Ok(None),
                    Some(s) if s.times().refresh_at.is_none_or(|at| unix_now() < at) => {
                        return Ok(Some(s))
                    }
                    Some(_) => {}
                }
            }
            let still_valid = current
                .times()
                .access_expires_at
                .is_some_and(|e| e > unix_now());
            return Ok(still_valid.then_some(current));
        }
        let result = self.refresh_locked(id, &latest).await;
        let _ = self.store.unlock(&lock).await;
        result
    }

    pub(super) async fn refresh_locked(
        &self,
        id: &str,
        latest: &Session,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let idp = latest.idp();
        let count = |result: &str| {
            self.metrics
                .token_refresh_total
                .with_label_values(&[idp, result])
                .inc()
        };
        let provider = self.provider(idp);
        let metadata = match provider {
            Some(p) => p.ensure_discovered().await,
            None => None,
        };
        let before = latest.tokens(&self.cipher).unwrap_or_default();
        let (Some(provider), Some(metadata), Some(refresh_token)) =
            (provider, metadata, before.refresh_token.clone())
        else {
            count("failure");
            tracing::warn!(target: "gatehouse::audit", idp, subject = %latest.subject(), reason = "refresh_unavailable", "token refresh failed; session ended");
            self.store.delete(id).await?;
            return Ok(None);
        };
        let now = unix_now();
        match provider.refresh(&metadata, &refresh_token).await {
            Ok(tokens) => {
                if let Some(id_token) = &tokens.id_token {
                    match provider.validate_id_token(id_token, None).await {
                        Ok(identity) if identity.subject == latest.subject() => {}
                        Ok(_) | Err(_) => {
                            count("failure");
                            tracing::warn!(target: "gatehouse::audit", idp, subject = %latest.subject(), reason = "refreshed_id_token_invalid", "token refresh failed; session ended");
                            self.store.delete(id).await?;
                            return Ok(None);
                        }
                    }
                }
                let kept = self.kept_tokens(before, &tokens);
                let mut fresh = latest.with_tokens(&kept, &self.cipher);
                // Claims from userinfo and Graph follow the refreshed tokens (groups change at
                // the IdP), judged by the newest ID token.
                let id_claims = fresh
                    .id_token_claims(&self.cipher)
                    .and_then(|c| serde_json::from_slice::<serde_json::Map<String, Value>>(&c).ok())
                    .unwrap_or_default();
                let access = tokens.access_token.as_deref();
                match self
                    .extra_claims(provider, &metadata, access, latest.subject(), &id_claims)
                    .await
                {
                    Ok(extra) => fresh = fresh.with_userinfo(extra.as_deref(), &self.cipher),
                    Err(failure) => {
                        count("failure");
                        tracing::warn!(target: "gatehouse::audit", idp, subject = %latest.subject(), reason = failure.reason, detail = %failure.detail, "claims after token refresh failed; session ended");
                        self.store.delete(id).await?;
                        return Ok(None);
                    }
                }
                let mut times = latest.times();
                self.set_token_times(&mut times, &kept, &tokens, now);
                times.touched_at = now;
                fresh.set_times(times);
                if !self.store.update(id, &fresh, self.ttl(&fresh, now)).await? {
                    // Logged out while the IdP was asked: it stays logged out.
                    return Ok(None);
                }
                count("success");
                tracing::debug!(idp, subject = %latest.subject(), "access token refreshed");
                Ok(Some(Arc::new(fresh)))
            }
            Err(e) => {
                count("failure");
                let still_valid = latest.times().access_expires_at.is_some_and(|e| e > now);
                if e.label != "invalid_grant" && still_valid {
                    // The IdP is unreachable: keep serving until the access token expires.
                    tracing::warn!(idp, subject = %latest.subject(), error = %e.detail, "token refresh failed; retrying on a later request");
                    return Ok(Some(Arc::new(latest.clone())));
                }
                tracing::warn!(target: "gatehouse::audit", idp, subject = %latest.subject(), reason = e.label, error = %e.detail, "token refresh failed; session ended");
                self.store.delete(id).await?;
                Ok(None)
            }
        }
    }

    /// The identity a session stands for, read from its ID token once per stored version;
    /// `None` when the tokens cannot be opened (another `session.secret`) or read.
    pub fn identity(&self, s: &Session) -> Option<Arc<Identity>> {
        if let Some(identity) = self.identities.get(s).filter(|i| i.subject == s.subject()) {
            return Some(identity);
        }
        let provider = self.provider(s.idp())?;
        // An IdP name now configured with another issuer does not vouch for the old one's people.
        if s.issuer().is_some_and(|i| i != provider.config.issuer) {
            return None;
        }
        let claims = s.id_token_claims(&self.cipher)?;
        let userinfo = s.userinfo_claims(&self.cipher);
        let mut identity = provider.session_identity(&claims, userinfo.as_deref())?;
        if identity.subject != s.subject() {
            return None;
        }
        let claims = &mut identity.claims;
        for name in BOOKKEEPING_CLAIMS {
            claims.remove(name);
        }
        claims.insert("idp".into(), Value::from(s.idp()));
        // What login decided on (and step-up checks) is what policies see too, whatever a
        // refreshed token says.
        for (name, value) in [
            ("sid", s.sid().map(Value::from)),
            ("acr", s.acr().map(Value::from)),
            ("auth_time", s.times().auth_time.map(Value::from)),
        ] {
            claims.remove(name);
            if let Some(v) = value {
                claims.insert(name.to_string(), v);
            }
        }
        identity.scopes.clear();
        identity.expires_at = Some(s.times().expires_at);
        Some(self.identities.insert(s, identity))
    }

    /// Whether a session meets the route's step-up demands (`acr_values`, `max_auth_age`).
    pub fn satisfies(&self, s: &Session, route: &RouteConfig) -> bool {
        if !route.acr_values.is_empty()
            && !s
                .acr()
                .is_some_and(|a| route.acr_values.iter().any(|v| v == a))
        {
            return false;
        }
        if let Some(max) = route.max_auth_age {
            // A login whose time the IdP never said is of unknown age: not recent enough.
            let Some(at) = s.times().auth_time else {
                return false;
            };
            if unix_now().saturating_sub(at) > max.as_secs() {
                return false;
            }
        }
        true
    }

    /// True the first time `key` is seen within `ttl`, on every instance sharing the store
    /// (DPoP proof ids).
    pub async fn remember_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.store.try_lock(key, ttl).await
    }

    /// The decrypted access token of a session (for `pass_access_token`).
    pub fn access_token(&self, s: &Session) -> Option<String> {
        s.access_token(&self.cipher)
    }
}
