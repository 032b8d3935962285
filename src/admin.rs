//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/config`, and the session admin
//! API under `/sessions`. It binds a separate address (loopback by default) so none of this
//! is reachable through the public listener.
//!
//! With `[admin] token` (or `token_file`) set, every path but those of `[admin] open` (the
//! probes and the scrape by default) needs `Authorization: Bearer <token>`, checked before
//! the path is looked at, so a refused request learns nothing of what exists. Without a
//! token the session API is off (404) and the rest stays as open as the listener's address.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::gateway::{Gateway, Runtime};

pub struct AdminApp {
    pub gateway: Arc<Gateway>,
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

fn json(status: u16, value: serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    body.push(b'\n');
    response(status, "application/json", body)
}

/// Whether the request carries the admin token: both sides hashed first, so the comparison
/// takes the same time whatever the length or the first wrong byte.
fn bearer_matches(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
    else {
        return false;
    };
    let (given, token) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    bool::from(given.ct_eq(&token))
}

/// The one answer to a request without the token, whatever it asked for.
fn unauthorized() -> Response<Vec<u8>> {
    let mut answer = json(401, serde_json::json!({"error": "unauthorized"}));
    answer.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
    );
    answer
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let rt = self.gateway.snapshot();
        let admin = &rt.config.admin;
        let req = session.req_header();
        let path = req.uri.path();
        let peer = session
            .client_addr()
            .map(ToString::to_string)
            .unwrap_or_default();
        if let Some(token) = &admin.token {
            if !admin.open.iter().any(|open| open == path) && !bearer_matches(&req.headers, token) {
                self.gateway.metrics.admin_unauthorized_total.inc();
                tracing::warn!(target: "gatehouse::audit", client_ip = %peer, method = %req.method, "admin request refused: no admin token, or not the right one");
                return unauthorized();
            }
        }
        if path == "/sessions" || path.starts_with("/sessions/") {
            if admin.token.is_none() {
                return json(404, serde_json::json!({"error": "not_found"}));
            }
            let query = req.uri.query().unwrap_or("").to_string();
            let (method, path) = (req.method.clone(), path.to_string());
            return self.sessions(&rt, &method, &path, &query, &peer).await;
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            return json(405, serde_json::json!({"error": "method_not_allowed"}));
        }
        match req.uri.path() {
            "/metrics" => response(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.gateway.metrics.render(),
            ),
            "/healthz" => json(200, serde_json::json!({"status": "alive"})),
            "/readyz" => {
                let rt = self.gateway.snapshot();
                let upstreams: serde_json::Map<String, serde_json::Value> = rt
                    .pools
                    .iter()
                    .map(|(name, pool)| {
                        (
                            name.clone(),
                            serde_json::json!({
                                "servers": pool.config.servers.len(),
                                "healthy": pool.healthy_count(),
                            }),
                        )
                    })
                    .collect();
                let issuers: serde_json::Map<String, serde_json::Value> = rt
                    .auth
                    .readiness()
                    .into_iter()
                    .map(|(issuer, has_keys)| (issuer, serde_json::json!({"keys": has_keys})))
                    .collect();
                // Every issuer needs keys. Upstream health is reported but does not make the
                // gateway unready: taking every instance out of the load balancer would not
                // bring an upstream back.
                let store_up = rt.limiter.reachable().await;
                // A store that is down only makes the instance unready when requests would be
                // refused for it (fail_closed); with fail_open the instance still serves.
                let store_ok = store_up || rt.limiter.config.fail_open;
                let mut ready = store_ok && issuers.values().all(|v| v["keys"] == true);
                let login = match &rt.login {
                    None => serde_json::Value::Null,
                    Some(login) => {
                        let reachable = login.store.ping().await.is_ok();
                        let idps: serde_json::Map<String, serde_json::Value> = login
                            .providers
                            .iter()
                            .map(|p| {
                                (
                                    p.config.name.clone(),
                                    serde_json::json!({"discovered": p.ready()}),
                                )
                            })
                            .collect();
                        ready =
                            ready && reachable && idps.values().all(|v| v["discovered"] == true);
                        serde_json::json!({
                            "session_store": {"kind": login.store.label(), "reachable": reachable},
                            "idps": idps,
                        })
                    }
                };
                let store = serde_json::json!({
                    "kind": rt.limiter.store_label(),
                    "reachable": store_up,
                    "on_error": if rt.limiter.config.fail_open { "fail_open" } else { "fail_closed" },
                });
                json(
                    if ready { 200 } else { 503 },
                    serde_json::json!({"ready": ready, "checks": {"config": "loaded", "jwks": issuers, "rate_limit_store": store, "login": login, "upstreams": upstreams}}),
                )
            }
            "/config" => json(200, self.gateway.snapshot().config.redacted_json()),
            _ => json(404, serde_json::json!({"error": "not_found"})),
        }
    }
}

/// The first value of a query parameter, when not empty.
fn param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Whose sessions: an issuer's subject (the issuer may be left out when only one is
/// configured); what a 400 says when the request does not say.
fn person<'a>(
    login: &'a crate::login::Login,
    issuer: &'a Option<String>,
    subject: &'a Option<String>,
) -> Result<(crate::session::Issuer<'a>, &'a str), serde_json::Value> {
    let subject = subject
        .as_deref()
        .ok_or_else(|| serde_json::json!({"error": "subject_required"}))?;
    let issuer = login.admin_issuer(issuer.as_deref()).ok_or_else(|| {
        serde_json::json!({"error": "issuer_required", "detail": "several issuers are configured: name one with issuer="})
    })?;
    Ok((issuer, subject))
}

impl AdminApp {
    /// The session admin API: `GET /sessions?issuer=&subject=` lists a person's sessions,
    /// `DELETE` of it ends them all, `DELETE /sessions/<id hash>` ends one, `GET
    /// /sessions/count` counts (all, or a person's).
    async fn sessions(
        &self,
        rt: &Runtime,
        method: &Method,
        path: &str,
        query: &str,
        peer: &str,
    ) -> Response<Vec<u8>> {
        let Some(login) = rt.login.as_deref() else {
            return json(
                404,
                serde_json::json!({"error": "no_sessions", "detail": "no [[idp]] is configured: there are no browser sessions"}),
            );
        };
        let metrics = &self.gateway.metrics;
        let unavailable = |e: crate::session::StoreError| {
            tracing::warn!(error = %e, "session admin API: session store unavailable");
            metrics.session_store_errors_total.inc();
            json(
                503,
                serde_json::json!({"error": "session_store_unavailable"}),
            )
        };
        let issuer_param = param(query, "issuer");
        let subject = param(query, "subject");
        let store = login.store.label();
        match (method, path) {
            (&Method::GET | &Method::HEAD, "/sessions") => {
                let (issuer, subject) = match person(login, &issuer_param, &subject) {
                    Ok(p) => p,
                    Err(refusal) => return json(400, refusal),
                };
                match login.sessions_of(issuer, subject).await {
                    Ok(listed) => {
                        tracing::info!(target: "gatehouse::audit", client_ip = %peer, issuer = %issuer.url, subject = %subject, sessions = listed.len(), "admin listed sessions");
                        json(
                            200,
                            serde_json::json!({"issuer": issuer.url, "subject": subject, "store": store, "sessions": listed}),
                        )
                    }
                    Err(e) => unavailable(e),
                }
            }
            (&Method::DELETE, "/sessions") => {
                let (issuer, subject) = match person(login, &issuer_param, &subject) {
                    Ok(p) => p,
                    Err(refusal) => return json(400, refusal),
                };
                match login.end_sessions_of(issuer, subject).await {
                    Ok(ended) => {
                        metrics
                            .admin_session_revocations_total
                            .with_label_values(&["user"])
                            .inc_by(ended as u64);
                        tracing::info!(target: "gatehouse::audit", client_ip = %peer, issuer = %issuer.url, subject = %subject, ended, scope = "user", "admin ended sessions");
                        json(
                            200,
                            serde_json::json!({"issuer": issuer.url, "subject": subject, "ended": ended}),
                        )
                    }
                    Err(e) => unavailable(e),
                }
            }
            (&Method::GET | &Method::HEAD, "/sessions/count") => {
                if subject.is_none() {
                    return match login.store.count().await {
                        Ok(n) => json(200, serde_json::json!({"store": store, "sessions": n})),
                        Err(e) => unavailable(e),
                    };
                }
                let (issuer, subject) = match person(login, &issuer_param, &subject) {
                    Ok(p) => p,
                    Err(refusal) => return json(400, refusal),
                };
                match login.sessions_of(issuer, subject).await {
                    Ok(listed) => json(
                        200,
                        serde_json::json!({"issuer": issuer.url, "subject": subject, "store": store, "sessions": listed.len()}),
                    ),
                    Err(e) => unavailable(e),
                }
            }
            (&Method::DELETE, _) if path.starts_with("/sessions/") => {
                let id_hash = &path["/sessions/".len()..];
                // Only what a listing shows goes to the store (and into the log).
                let well_formed = id_hash.len() == 64
                    && id_hash
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !well_formed {
                    return json(
                        400,
                        serde_json::json!({"error": "bad_id_hash", "detail": "an id hash is 64 lower-case hex digits, as GET /sessions lists it"}),
                    );
                }
                match login.end_session_by_hash(id_hash).await {
                    Ok(ended) => {
                        if !ended {
                            // Not the hash asked for: it may be a pasted cookie value.
                            tracing::info!(target: "gatehouse::audit", client_ip = %peer, scope = "session", "admin asked to end a session that does not exist");
                            return json(
                                404,
                                serde_json::json!({"error": "no_such_session", "ended": 0}),
                            );
                        }
                        tracing::info!(target: "gatehouse::audit", client_ip = %peer, id_hash = %id_hash, ended = 1, scope = "session", "admin ended sessions");
                        metrics
                            .admin_session_revocations_total
                            .with_label_values(&["session"])
                            .inc();
                        json(200, serde_json::json!({"id_hash": id_hash, "ended": 1}))
                    }
                    Err(e) => unavailable(e),
                }
            }
            (_, "/sessions" | "/sessions/count") => {
                json(405, serde_json::json!({"error": "method_not_allowed"}))
            }
            _ if path.starts_with("/sessions/") && path.len() == "/sessions/".len() + 64 => {
                json(405, serde_json::json!({"error": "method_not_allowed"}))
            }
            _ => json(404, serde_json::json!({"error": "not_found"})),
        }
    }
}
