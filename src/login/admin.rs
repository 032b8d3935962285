//! What the session admin API (`crate::admin`) asks of sessions: a person's sessions, listed
//! by the store's hash of their ids; one ended by that hash; all of a person's ended; counts.
//! Each goes to the store, which every instance shares with Redis: an ended session is
//! refused everywhere at once, as every lookup reads the store.

use super::*;

/// One session as the admin API shows it: never its id, nor a token.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// The store's SHA-256 of the id (hex): what ends it through the API.
    pub id_hash: String,
    pub idp: String,
    /// `None` for a session stored before sessions named their issuer.
    pub issuer: Option<String>,
    pub subject: String,
    /// Unix seconds.
    pub created_at: u64,
    /// When a request last pushed the idle timeout back (it moves at most every tenth of
    /// `idle_timeout`), Unix seconds.
    pub last_seen: u64,
    /// The absolute end (`max_lifetime`), Unix seconds.
    pub expires_at: u64,
    pub auth_time: Option<u64>,
    pub acr: Option<String>,
    /// The client's address at login (as the gateway judged it, trusted proxies considered).
    pub client_ip: Option<std::net::IpAddr>,
    /// The first 256 bytes of the `User-Agent` at login.
    pub user_agent: Option<String>,
}

impl Login {
    /// The issuer an admin names, or the only one configured when none is named; `None`
    /// when several are configured and none is named.
    pub fn admin_issuer<'a>(&'a self, named: Option<&'a str>) -> Option<Issuer<'a>> {
        match (named, self.issuers.as_slice()) {
            (Some(url), _) => Some(self.issuer(url)),
            (None, [(url, _)]) => Some(self.issuer(url)),
            (None, _) => None,
        }
    }

    /// The live sessions of the issuer's subject, newest first.
    pub async fn sessions_of(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let now = unix_now();
        let mut listed: Vec<SessionSummary> = self
            .store
            .list_by_subject(issuer, subject)
            .await?
            .into_iter()
            .filter(|s| s.session.times().expires_at > now)
            .map(|s| {
                let times = s.session.times();
                // A session sealed under a secret since rotated away shows without its client.
                let client = s.session.login_client(&self.cipher).unwrap_or_default();
                SessionSummary {
                    id_hash: s.id_hash,
                    idp: s.session.idp().to_string(),
                    issuer: s.session.issuer().map(str::to_string),
                    subject: s.session.subject().to_string(),
                    created_at: times.created_at,
                    last_seen: times.touched_at,
                    expires_at: times.expires_at,
                    auth_time: times.auth_time,
                    acr: s.session.acr().map(str::to_string),
                    client_ip: client.ip,
                    user_agent: client.user_agent,
                }
            })
            .collect();
        listed.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(a.id_hash.cmp(&b.id_hash))
        });
        Ok(listed)
    }

    /// Ends one session by its hash; whether there was one.
    pub async fn end_session_by_hash(&self, id_hash: &str) -> Result<bool, StoreError> {
        self.store.delete_by_hash(id_hash).await
    }

    /// Ends every session of the issuer's subject; how many ended.
    pub async fn end_sessions_of(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<usize, StoreError> {
        self.store.delete_by_subject(issuer, subject).await
    }
}
