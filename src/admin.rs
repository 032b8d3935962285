//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/config`. It binds a separate
//! address (loopback by default) so none of this is reachable through the public listener.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::gateway::Gateway;

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

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
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
