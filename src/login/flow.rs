//! Starting a login: the redirect to the IdP with PKCE, `state` and `nonce`, the login state
//! stored under `state`, and the browser-binding cookie.

use super::*;

impl Login {
    /// Where a login may return to: see [`redirect::safe_return_target`].
    pub fn return_target(&self, rd: Option<&str>) -> String {
        redirect::safe_return_target(rd, &self.allowed_hosts)
    }

    /// Starts a login: the IdP URL to redirect to, and the binding cookie to set (when the
    /// browser has none yet).
    pub async fn start(
        &self,
        provider: &Provider,
        rd: &str,
        binding_cookie: Option<&str>,
        route: Option<&RouteConfig>,
        hints: &Hints,
    ) -> Result<(String, Option<String>), LoginFailure> {
        let idp = &provider.config.name;
        let metadata = provider.ensure_discovered().await.ok_or_else(|| {
            LoginFailure::new(
                idp,
                "idp_unavailable",
                503,
                "the provider is not discovered",
            )
        })?;
        let valid_binding = binding_cookie.filter(|b| {
            (32..=64).contains(&b.len())
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
        let (binding, set_cookie) = match valid_binding {
            Some(b) => (b.to_string(), None),
            None => {
                let b = random_token(32);
                let cookie = self.cookies.set_binding(&b);
                (b, Some(cookie))
            }
        };
        let state = random_token(32);
        let nonce = random_token(32);
        let verifier = random_token(48);
        let acr_values = route.map(|r| r.acr_values.clone()).unwrap_or_default();
        let max_age = route.and_then(|r| r.max_auth_age);
        let login = LoginState {
            idp: idp.clone(),
            binding: sha256_hex(&binding),
            nonce: nonce.clone(),
            verifier: verifier.clone(),
            rd: rd.to_string(),
            acr_values: acr_values.clone(),
            max_age: max_age.map(|a| a.as_secs()),
        };
        let json = serde_json::to_vec(&login).unwrap_or_default();
        self.store
            .put_once(&format!("login:{}", sha256_hex(&state)), &json, LOGIN_TTL)
            .await
            .map_err(|e| self.store_failure(idp, e))?;
        let url = provider
            .authorization_request(
                &metadata,
                &self.redirect_uri,
                &state,
                &nonce,
                &verifier,
                &acr_values,
                max_age,
                hints,
            )
            .await
            .map_err(|e| LoginFailure::new(idp, e.label, 502, e.detail))?;
        Ok((url, set_cookie))
    }

    pub(super) fn store_failure(&self, idp: &str, e: StoreError) -> LoginFailure {
        self.metrics.session_store_errors_total.inc();
        LoginFailure::new(idp, "session_store_unavailable", 503, e.to_string())
    }
}
